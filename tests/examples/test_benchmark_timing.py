"""The benchmarks' round-robin timer: which method runs which batch when, and what it keeps."""

import pytest

from tests.examples.helpers import load_script


def recorder(calls: list, name: str):
    def step(batch):
        calls.append((name, batch))
        return 0.0

    return step


def test_blocks_of_steps_run_back_to_back_and_the_order_rotates():
    timing = load_script("benchmarks/timing.py")
    calls: list = []
    steps = {"a": recorder(calls, "a"), "b": recorder(calls, "b")}
    times = timing.time_round_robin(steps, [0, 1, 2, 3, 4], warmup=1, device="cpu", block=2)
    assert calls == [("a", 0), ("a", 1), ("b", 0), ("b", 1),  # round 0
                     ("b", 2), ("b", 3), ("a", 2), ("a", 3),  # round 1: rotated
                     ("a", 4), ("b", 4)]  # fmt: skip
    assert {name: len(t["cpu"]) for name, t in times.items()} == {"a": 4, "b": 4}  # step 0 dropped as warm-up


def test_one_step_per_round_is_the_default_and_bad_blocks_are_refused():
    timing = load_script("benchmarks/timing.py")
    calls: list = []
    timing.time_round_robin({"a": recorder(calls, "a"), "b": recorder(calls, "b")}, [0, 1], warmup=0, device="cpu")
    assert calls == [("a", 0), ("b", 0), ("b", 1), ("a", 1)]
    with pytest.raises(ValueError, match="block must be >= 1, got 0"):
        timing.time_round_robin({"a": recorder(calls, "a")}, [0], warmup=0, device="cpu", block=0)
