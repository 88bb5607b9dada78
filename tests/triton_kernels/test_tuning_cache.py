"""The persistent autotune cache, launching through it, and the tuning entry points."""

import json
import multiprocessing
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import triton
from filelock import FileLock

from tests.conftest import skip_unless_triton_runs_on
from tests.triton_kernels.helpers import generator, random_words, record_launches
from triton_kernels import _autotune, default_cache_path, load_tuning_cache, tune_xnor_gemm, tuning_cache
from triton_kernels._autotune import launch_tuned, launch_with_config, make_config, pruned_configs, zero_output
from triton_kernels._runtime import device_label, is_interpreting
from triton_kernels.tuning import parse_shape
from triton_kernels.tuning_cache import (
    CACHE_ENV,
    FORMAT_VERSION,
    TunedConfig,
    TuningCache,
    default_tuning_cache,
    entry_key,
)
from triton_kernels.xnor_gemm import (
    OUT_INT32,
    _allocate_output,
    _kernel_args,
    _shape_key,
    _xnor_popcount_kernel,
    xnor_gemm,
    xnor_gemm_reference,
)

CONFIG = TunedConfig({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_KW": 32, "SPLIT_K": 1}, num_warps=4, num_stages=3)
OTHER = TunedConfig({"BLOCK_M": 1, "BLOCK_N": 32, "BLOCK_KW": 128, "SPLIT_K": 4}, num_warps=8, num_stages=2)
UNREADABLE = "ignoring unreadable autotune cache"


def read_json(path):
    return json.loads(path.read_text())


# --- the file ------------------------------------------------------------------------------


def test_round_trip(tmp_path):
    path = tmp_path / "cache.json"
    TuningCache(path).record("NVIDIA H200", "xnor_popcount", "M16-N64", CONFIG)
    fresh = TuningCache(path)
    assert fresh.lookup("NVIDIA H200", "xnor_popcount", "M16-N64") == CONFIG
    assert fresh.lookup("NVIDIA H200", "xnor_popcount", "M32-N64") is None
    assert fresh.lookup("NVIDIA H200", "xnor_mma", "M16-N64") is None
    data = read_json(path)
    assert data["format"] == FORMAT_VERSION
    assert data["entries"] == {entry_key("NVIDIA H200", "xnor_popcount", "M16-N64"): CONFIG.to_json()}


def test_keys_hold_device_and_triton_version(tmp_path, monkeypatch):
    key = entry_key("NVIDIA H100 80GB HBM3", "xnor_mma", "M64-N128-KW4-out1-torch.float16")
    assert key == f"NVIDIA H100 80GB HBM3|triton-{triton.__version__}|xnor_mma|M64-N128-KW4-out1-torch.float16"
    path = tmp_path / "cache.json"
    TuningCache(path).record("NVIDIA H200", "xnor_popcount", "M1", CONFIG)
    assert TuningCache(path).lookup("NVIDIA H100 80GB HBM3", "xnor_popcount", "M1") is None
    monkeypatch.setattr(triton, "__version__", "0.0.0-other")
    assert TuningCache(path).lookup("NVIDIA H200", "xnor_popcount", "M1") is None


def test_record_merges_with_other_writers(tmp_path):
    path = tmp_path / "cache.json"
    first, second = TuningCache(path), TuningCache(path)
    first.record("gpu", "xnor_popcount", "M1", CONFIG)
    second.record("gpu", "xnor_mma", "M64", OTHER)  # second never loaded the file
    fresh = TuningCache(path)
    assert fresh.load() == 2
    assert fresh.lookup("gpu", "xnor_popcount", "M1") == CONFIG
    assert fresh.lookup("gpu", "xnor_mma", "M64") == OTHER


def test_record_replaces_an_entry(tmp_path):
    path = tmp_path / "cache.json"
    cache = TuningCache(path)
    cache.record("gpu", "xnor_popcount", "M1", CONFIG)
    cache.record("gpu", "xnor_popcount", "M1", OTHER)
    assert TuningCache(path).load() == 1
    assert TuningCache(path).lookup("gpu", "xnor_popcount", "M1") == OTHER


def test_record_creates_folders(tmp_path):
    path = tmp_path / "a" / "b" / "cache.json"
    TuningCache(path).record("gpu", "k", "s", CONFIG)
    assert TuningCache(path).load() == 1


def test_writes_leave_no_temporary_files(tmp_path):
    path = tmp_path / "cache.json"
    cache = TuningCache(path)
    for shape in ("M1", "M2", "M4"):
        cache.record("gpu", "xnor_popcount", shape, CONFIG)
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["cache.json", "cache.json.lock"]


def test_failed_write_keeps_the_old_file_and_the_config_in_memory(tmp_path, monkeypatch):
    path = tmp_path / "cache.json"
    cache = TuningCache(path)
    cache.record("gpu", "xnor_popcount", "M1", CONFIG)
    before = path.read_text()

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.warns(RuntimeWarning, match="No space left.*stay in memory"):
        cache.record("gpu", "xnor_popcount", "M2", OTHER)
    monkeypatch.undo()
    assert path.read_text() == before
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["cache.json", "cache.json.lock"]
    assert cache.lookup("gpu", "xnor_popcount", "M2") == OTHER


def _unwritable(kind, tmp_path, monkeypatch):
    """A cache path that cannot be written, in one of the ways a user's machine refuses it."""
    if kind == "read-only-dir":
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        if os.access(folder, os.W_OK):  # root ignores the mode bits
            pytest.skip("file modes do not bind this user (root)")
        return folder / "cache.json"
    if kind == "parent-is-a-file":
        (tmp_path / "file").write_text("not a folder")
        return tmp_path / "file" / "cache.json"

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(tuning_cache, "FileLock" if kind == "lock-denied" else "atomic_write_text", refuse)
    return tmp_path / "cache.json"


@pytest.mark.parametrize("kind", ("read-only-dir", "parent-is-a-file", "lock-denied", "write-denied"))
def test_unwritable_cache_warns_once_and_keeps_configs_in_memory(tmp_path, monkeypatch, kind):
    path = _unwritable(kind, tmp_path, monkeypatch)
    cache = TuningCache(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache.record("gpu", "xnor_popcount", "M1", CONFIG)  # raised PermissionError before
        cache.record("gpu", "xnor_mma", "M64", OTHER)
    assert [warning.category for warning in caught] == [RuntimeWarning]
    assert "cannot write autotune cache" in str(caught[0].message)
    assert cache.lookup("gpu", "xnor_popcount", "M1") == CONFIG
    assert cache.lookup("gpu", "xnor_mma", "M64") == OTHER


def test_lock_timeout_keeps_the_config_in_memory(tmp_path, monkeypatch):
    path = tmp_path / "cache.json"
    monkeypatch.setattr(tuning_cache, "LOCK_TIMEOUT_S", 0.05)
    with FileLock(f"{path}.lock"), pytest.warns(RuntimeWarning, match="cannot write autotune cache"):
        TuningCache(path).record("gpu", "xnor_popcount", "M1", CONFIG)
    assert not path.exists()


def _entry(kwargs='{"BLOCK_M": 1}', warps="4", stages="3"):
    return f'{{"format": 1, "entries": {{"k": {{"kwargs": {kwargs}, "num_warps": {warps}, "num_stages": {stages}}}}}}}'


CORRUPT = {
    "garbage": "not json {",
    "empty": "",
    "truncated": _entry()[:-7],
    "not-utf8": b"\xff\xfe\x00\x81 cache",
    "array": "[1, 2, 3]",
    "newer-format": '{"format": 2, "entries": {}}',
    "no-format": '{"entries": {}}',
    "no-entries": '{"format": 1}',
    "entry-not-object": '{"format": 1, "entries": {"k": "BLOCK_M=1"}}',
    "kwargs-list": _entry(kwargs="[1, 2]"),
    "kwargs-text": _entry(kwargs='{"BLOCK_M": "big"}'),
    "kwargs-null": _entry(kwargs='{"BLOCK_M": null}'),
    "warps-null": _entry(warps="null"),
    "warps-list": _entry(warps="[4]"),
    "no-warps": '{"format": 1, "entries": {"k": {"kwargs": {}, "num_stages": 3}}}',
    "kwargs-fraction": _entry(kwargs='{"BLOCK_M": 1.7}'),  # loaded as 1 before
    "kwargs-float-integer": _entry(kwargs='{"BLOCK_M": 2.0}'),
    "kwargs-bool": _entry(kwargs='{"BLOCK_M": true}'),
    "warps-fraction": _entry(warps="1.7"),
    "warps-text": _entry(warps='"4"'),
    "stages-bool": _entry(stages="false"),
    "kwargs-infinity": _entry(kwargs='{"BLOCK_M": Infinity}'),  # OverflowError before
    "warps-minus-infinity": _entry(warps="-Infinity"),
    "stages-nan": _entry(stages="NaN"),
    "format-infinity": '{"format": Infinity, "entries": {}}',
    "format-true": '{"format": true, "entries": {}}',
    "deeply-nested": '{"format": 1, "entries": {"k": ' + "[" * 100_000 + "]" * 100_000 + "}}",  # RecursionError
}
ENTRIES_NOT_A_MAPPING = {
    "entries-list": '{"format": 1, "entries": [["k", {"kwargs": {}, "num_warps": 4, "num_stages": 3}]]}',
    "entries-null": '{"format": 1, "entries": null}',
    "entries-text": '{"format": 1, "entries": "none yet"}',
}


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


def _check_ignored_then_rewritten(path):
    cache = TuningCache(path)
    with pytest.warns(RuntimeWarning, match=UNREADABLE):
        assert cache.load() == 0
    assert cache.lookup("gpu", "xnor_popcount", "M1") is None  # loaded: no second read
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # record may re-read the bad file
        cache.record("gpu", "xnor_popcount", "M1", CONFIG)
    data = read_json(path)
    assert data == {"format": FORMAT_VERSION, "entries": {entry_key("gpu", "xnor_popcount", "M1"): CONFIG.to_json()}}
    assert TuningCache(path).lookup("gpu", "xnor_popcount", "M1") == CONFIG  # no warning now


@pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_file_is_ignored_with_a_warning(tmp_path, content):
    path = tmp_path / "cache.json"
    _write(path, content)
    _check_ignored_then_rewritten(path)


@pytest.mark.parametrize("content", ENTRIES_NOT_A_MAPPING.values(), ids=ENTRIES_NOT_A_MAPPING.keys())
def test_corrupt_entries_are_ignored_with_a_warning(tmp_path, content):
    path = tmp_path / "cache.json"
    _write(path, content)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        count = TuningCache(path).load()  # raises AttributeError today
    assert count == 0
    assert [warning.category for warning in caught] == [RuntimeWarning]
    _check_ignored_then_rewritten(path)


def test_unreadable_path_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "cache.json"
    path.mkdir()  # reading a folder raises IsADirectoryError
    with pytest.warns(RuntimeWarning, match=UNREADABLE):
        assert TuningCache(path).load() == 0


def test_missing_file_is_empty_without_warning(tmp_path):
    assert TuningCache(tmp_path / "absent.json").load() == 0
    assert not (tmp_path / "absent.json").exists()


def test_tuned_config_json_round_trip():
    assert TunedConfig.from_json(CONFIG.to_json()) == CONFIG
    assert TunedConfig.from_json(json.loads(json.dumps(OTHER.to_json()))) == OTHER
    triton_config = make_config(dict(OTHER.kwargs), OTHER.num_warps, OTHER.num_stages)
    assert triton_config.pre_hook is zero_output  # split-K zeroes the output first
    assert make_config(dict(CONFIG.kwargs), 4, 3).pre_hook is None
    assert TunedConfig.from_triton(triton_config) == OTHER
    with pytest.raises(ValueError, match="not a tuned config"):
        TunedConfig.from_json({"num_warps": 4})


# --- where the file lives --------------------------------------------------------------------


@pytest.mark.parametrize("setting", ("off", "OFF", " off ", "", "0", "none"))
def test_cache_switched_off(tmp_path, monkeypatch, setting):
    monkeypatch.setenv(CACHE_ENV, setting)
    monkeypatch.chdir(tmp_path)
    assert default_cache_path() is None
    cache = default_tuning_cache()
    assert cache.path is None
    assert cache.lookup("gpu", "xnor_popcount", "M1") is None
    cache.record("gpu", "xnor_popcount", "M1", CONFIG)
    assert cache.lookup("gpu", "xnor_popcount", "M1") == CONFIG  # kept in memory
    assert load_tuning_cache() == 0
    assert list(tmp_path.iterdir()) == []


def test_default_path_follows_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_path() == tmp_path / "xdg" / "pyro_bdl" / "autotune.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_path() == tmp_path / "home" / ".cache" / "pyro_bdl" / "autotune.json"


def test_env_path(isolated_tuning_cache):
    assert default_cache_path() == isolated_tuning_cache
    assert default_tuning_cache().path == isolated_tuning_cache
    assert default_tuning_cache() is default_tuning_cache()


def test_load_tuning_cache(tmp_path, isolated_tuning_cache):
    path = tmp_path / "elsewhere.json"
    writer = TuningCache(path)
    writer.record("gpu", "xnor_popcount", "M1", CONFIG)
    writer.record("gpu", "xnor_mma", "M64", OTHER)
    assert load_tuning_cache(path) == 2
    assert default_tuning_cache().path == path
    assert default_tuning_cache().lookup("gpu", "xnor_mma", "M64") == OTHER
    assert load_tuning_cache(str(path)) == 2
    assert load_tuning_cache() == 0  # back to the default path, which holds nothing yet
    assert default_tuning_cache().path == isolated_tuning_cache
    assert not isolated_tuning_cache.exists()


# --- launching ------------------------------------------------------------------------------


def popcount_launch(device, m=3, n=40, k=100, seed=50):
    """Arguments for launching the popcount kernel directly, int32 output."""
    gen = generator(seed)
    a, b = random_words((m,), k, gen, device), random_words((n,), k, gen, device)
    out = _allocate_output(m, n, OUT_INT32, torch.int32, a.device)
    out.fill_(12345)  # garbage: split-K configs must zero it first
    args = _kernel_args(a, b, out, k, None, None, OUT_INT32)

    def grid(meta):
        tiles = triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"])
        return (tiles, meta.get("SPLIT_K", 1))

    return args, grid, out, xnor_gemm_reference(a, b, k)


@pytest.mark.parametrize("config", (CONFIG, OTHER), ids=("plain", "split-k"))
def test_launch_with_config(device, config):
    skip_unless_triton_runs_on(device)
    args, grid, out, expected = popcount_launch(device)
    launch_with_config(_xnor_popcount_kernel, grid, config, args)
    assert torch.equal(out, expected)


def test_launch_tuned_with_explicit_config(device, isolated_tuning_cache):
    skip_unless_triton_runs_on(device)
    args, grid, out, expected = popcount_launch(device)
    ran = launch_tuned(_xnor_popcount_kernel, "xnor_popcount", grid, "M4", torch.device(device), args, OTHER)
    assert ran == OTHER
    assert torch.equal(out, expected)
    assert not isolated_tuning_cache.exists()  # a forced config neither reads nor writes


def test_launch_tuned_under_interpreter_runs_the_first_pruned_config(isolated_tuning_cache):
    if not is_interpreting():
        pytest.skip("interpreter behaviour")
    args, grid, out, expected = popcount_launch("cpu")
    ran = launch_tuned(_xnor_popcount_kernel, "xnor_popcount", grid, "M4", torch.device("cpu"), args)
    assert ran == TunedConfig.from_triton(pruned_configs(_xnor_popcount_kernel, args)[0])
    assert ran.kwargs["BLOCK_M"] == 4  # the batch bucket of M = 3
    assert torch.equal(out, expected)
    assert not isolated_tuning_cache.exists()


@pytest.fixture
def tuning_path(device, monkeypatch):
    """Launch through the cache as on a GPU; under the interpreter the cache is bypassed."""
    skip_unless_triton_runs_on(device)
    monkeypatch.setattr(_autotune, "is_interpreting", lambda: False)
    return record_launches(monkeypatch)


def test_cache_miss_tunes_and_records(device, tuning_path, isolated_tuning_cache):
    a, b = (random_words((n,), 100, generator(51), device) for n in (3, 40))
    assert torch.equal(xnor_gemm(a, b, 100, backend="triton", method="popcount"), xnor_gemm_reference(a, b, 100))
    assert tuning_path == []  # a miss runs the autotuner, not a stored config
    label = device_label(torch.device(device))
    key = entry_key(label, "xnor_popcount", "M4-N40-KW4-out0-torch.int32")
    entries = read_json(isolated_tuning_cache)["entries"]
    assert list(entries) == [key]
    recorded = TunedConfig.from_json(entries[key])
    assert recorded.kwargs["BLOCK_M"] == 4
    # a new process reads the file and launches the recorded config without tuning
    tuning_cache._default_cache = None
    assert torch.equal(xnor_gemm(a, b, 100, backend="triton", method="popcount"), xnor_gemm_reference(a, b, 100))
    assert tuning_path == [recorded]


def test_cache_hit_launches_the_stored_config(device, tuning_path, isolated_tuning_cache):
    gen = generator(52)
    a, b = random_words((5,), 1000, gen, device), random_words((70,), 1000, gen, device)
    out = torch.empty(5, 70, dtype=torch.int32, device=device)
    shape_key = _shape_key(_kernel_args(a, b, out, 1000, None, None, OUT_INT32), out)
    assert shape_key == "M8-N70-KW32-out0-torch.int32"
    TuningCache(isolated_tuning_cache).record(device_label(torch.device(device)), "xnor_popcount", shape_key, OTHER)
    result = xnor_gemm(a, b, 1000, backend="triton", method="popcount")
    assert tuning_path == [OTHER]
    assert torch.equal(result, xnor_gemm_reference(a, b, 1000))


def test_corrupt_default_cache_tunes_again(device, tuning_path, isolated_tuning_cache):
    isolated_tuning_cache.parent.mkdir(parents=True)
    isolated_tuning_cache.write_text("{ not json")
    a, b = (random_words((n,), 64, generator(53), device) for n in (2, 33))
    with pytest.warns(RuntimeWarning, match=UNREADABLE):
        result = xnor_gemm(a, b, 64, backend="triton", method="mma")
    assert torch.equal(result, xnor_gemm_reference(a, b, 64))
    assert len(read_json(isolated_tuning_cache)["entries"]) == 1


# --- tuning ahead of time ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shape"),
    (("1x8192x8192", (1, 8192, 8192)), ("64X4096X1000", (64, 4096, 1000)), ("3x5x7", (3, 5, 7))),
)
def test_parse_shape(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize(
    "text", ("", "1x2", "1x2x3x4", "0x2x3", "1x0x3", "-1x2x3", "ax2x3", "1.5x2x3", " 1x2x3", "1x2x", "1*2*3")
)
def test_parse_shape_rejects(text):
    message = f"shape must look like MxNxK with positive integers, got {text!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_shape(text)


@pytest.mark.parametrize("device", ("cpu", torch.device("cpu"), "meta"), ids=str)
def test_tune_needs_cuda(device):
    with pytest.raises(ValueError, match="tuning needs a CUDA device, got"):
        tune_xnor_gemm([(1, 64, 64)], device=device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tune_rejects_unknown_method():
    with pytest.raises(ValueError, match=r"methods must be among .* got \['fast'\]"):
        tune_xnor_gemm([(4, 64, 100)], methods=["fast"])


@pytest.mark.full_autotune
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tune_fills_the_cache(isolated_tuning_cache):
    shape = (3, 96, 160)  # a shape no other test tunes
    assert tune_xnor_gemm([shape]) == {shape: ["popcount"]}
    label = device_label(torch.device("cuda"))
    key = entry_key(label, "xnor_popcount", "M4-N96-KW5-out0-torch.int32")
    entries = read_json(isolated_tuning_cache)["entries"]
    assert key in entries
    tuned = TunedConfig.from_json(entries[key])
    assert tuned.kwargs["BLOCK_M"] == 4


# --- concurrent writers ---------------------------------------------------------------------

WRITERS, ENTRIES_PER_WRITER = 4, 50


def _record_many(path: str, writer: int) -> None:
    """One cache object per process, recording all of its entries."""
    cache = TuningCache(Path(path))
    for index in range(ENTRIES_PER_WRITER):
        cache.record("gpu", "xnor_popcount", f"w{writer}-{index}", CONFIG)


def _record_one(path: str, writer: int, index: int) -> None:
    """A fresh cache object for one write, as a short-lived process would have."""
    TuningCache(Path(path)).record("gpu", "xnor_popcount", f"w{writer}-{index}", CONFIG)


@pytest.fixture
def fork_context():
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the fork start method")
    return multiprocessing.get_context("fork")


def _expected_keys():
    return {
        entry_key("gpu", "xnor_popcount", f"w{writer}-{index}")
        for writer in range(WRITERS)
        for index in range(ENTRIES_PER_WRITER)
    }


def test_concurrent_writers_one_cache_per_process_lose_nothing(tmp_path, fork_context):
    path = tmp_path / "cache.json"
    processes = [fork_context.Process(target=_record_many, args=(str(path), writer)) for writer in range(WRITERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    assert set(read_json(path)["entries"]) == _expected_keys()  # lost 4-28 of 300 before


def test_concurrent_writers_one_write_per_process_lose_nothing(tmp_path, fork_context):
    path = tmp_path / "cache.json"
    tasks = [(str(path), writer, index) for index in range(ENTRIES_PER_WRITER) for writer in range(WRITERS)]
    with fork_context.Pool(WRITERS) as pool:
        pool.starmap(_record_one, tasks, chunksize=1)
    assert set(read_json(path)["entries"]) == _expected_keys()  # lost about half before


# --- the command line reads any cache file -----------------------------------------------


@pytest.mark.parametrize("case", ("kwargs-infinity", "deeply-nested", "kwargs-fraction"))
def test_info_exits_zero_on_a_foreign_cache(isolated_tuning_cache, case):
    content = CORRUPT[case]
    isolated_tuning_cache.parent.mkdir(parents=True)
    isolated_tuning_cache.write_text(content)
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    result = subprocess.run(
        [sys.executable, "-m", "triton_kernels", "info"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "(0 configs)" in result.stdout
    assert UNREADABLE in result.stderr and "Traceback" not in result.stderr
