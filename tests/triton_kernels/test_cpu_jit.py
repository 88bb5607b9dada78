"""The compiled CPU GEMM (numba) against the reference: awkward shapes, every epilogue, threads.

The public-API tests of test_xnor_gemm.py run ``backend="cpu"`` on both CPU paths already;
these call the compiled kernel directly, where the thread split and the lane width can be
forced on shapes small enough for a test.
"""

import json
import multiprocessing
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from llvmlite import binding

from tests.triton_kernels.helpers import generator, random_channels, random_words
from triton_kernels import cpu, cpu_jit, xnor_gemm, xnor_gemm_reference

REPO = Path(__file__).resolve().parents[2]
OUT_KINDS = {"int32": cpu_jit.OUT_INT32, "float32": cpu_jit.OUT_FLOAT32, "packed": cpu_jit.OUT_PACKED}


@pytest.fixture(autouse=True)
def split_small_problems(monkeypatch):
    """Let even test-sized problems run on several threads."""
    monkeypatch.setattr(cpu_jit, "MIN_WORDS_PER_THREAD", 1)


def expected_products(a, b, k, scale, bias, out_kind):
    """The reference, product by product: a (S, M, KW), b (S, N, KW)."""
    options = {"pack_output": out_kind == "packed", "out_dtype": torch.float32 if out_kind == "float32" else None}
    return torch.stack(
        [
            xnor_gemm_reference(
                a[s],
                b[s],
                k,
                scale=None if scale is None else scale[s],
                bias=None if bias is None else bias[s],
                **options,
            )
            for s in range(a.shape[0])
        ]
    )


def run_case(s, m, n, k, out_kind, threads, seed, with_scale=True, with_bias=True):
    gen = generator(seed)
    a, b = random_words((s, m), k, gen), random_words((s, n), k, gen)
    scale = random_channels(s * n, gen).view(s, n) if with_scale and out_kind != "int32" else None
    bias = random_channels(s * n, gen).view(s, n) if with_bias and out_kind != "int32" else None
    got = cpu_jit.xnor_gemm_jit(a, b, k, scale, bias, OUT_KINDS[out_kind], threads=threads)
    assert torch.equal(got, expected_products(a, b, k, scale, bias, out_kind))


@pytest.mark.parametrize("threads", (1, 2, 3))
@pytest.mark.parametrize("out_kind", tuple(OUT_KINDS))
@pytest.mark.parametrize(
    ("s", "m", "n", "k"),
    (
        (1, 1, 1, 1),
        (1, 1, 40, 31),  # one 32-bit lane, partly padding
        (1, 3, 5, 33),  # two int32 words: one 64-bit lane
        (1, 4, 4, 64),  # exactly one 4 x 4 tile
        (1, 5, 7, 65),  # row and column remainders, 32-bit lanes (3 words)
        (1, 9, 130, 1000),  # several panels, a partial last panel
        (3, 6, 70, 100),  # a batch of products
        (2, 17, 33, 4096),
        (1, 2, 3, 100_000),  # a long reduction
    ),
    ids=lambda value: str(value),
)
def test_matches_reference(s, m, n, k, out_kind, threads):
    run_case(s, m, n, k, out_kind, threads, seed=s * 1000 + m * 100 + n + k)


@pytest.mark.parametrize("option", ("scale", "bias"))
def test_one_sided_epilogue(option):
    """Scale only (y = dot * scale) and bias only (y = dot + bias), as the reference rounds them."""
    run_case(2, 5, 70, 100, "float32", 2, seed=3, with_scale=option == "scale", with_bias=option == "bias")
    run_case(2, 5, 70, 100, "packed", 2, seed=4, with_scale=option == "scale", with_bias=option == "bias")


@pytest.mark.parametrize("k", (1, 31, 33, 63, 65, 100))
def test_padding_bits_never_count(k):
    """Words with every padding bit set give the k-column answer (the tail rule)."""
    gen = generator(k)
    a, b = random_words((1, 6), k, gen), random_words((1, 9), k, gen)
    tail = k % 32
    garbage = -(1 << tail) if tail else 0  # ones in every bit at or beyond k
    a_dirty, b_dirty = a.clone(), b.clone()
    a_dirty[..., -1] |= garbage
    b_dirty[..., -1] |= garbage
    expected = xnor_gemm_reference(a[0], b[0], k)
    assert torch.equal(cpu_jit.xnor_gemm_jit(a_dirty, b_dirty, k)[0], expected)
    assert torch.equal(cpu_jit.xnor_gemm_jit(a_dirty, b, k)[0], expected)


def test_non_contiguous_operands():
    gen = generator(7)
    a = random_words((1, 8, 2), 100, gen)[:, :, 1]  # every other row
    b = random_words((1, 40), 100, gen).transpose(-1, -2).contiguous().transpose(-1, -2)  # column-major
    assert not a.is_contiguous() and not b.is_contiguous()
    assert torch.equal(cpu_jit.xnor_gemm_jit(a, b, 100, threads=2)[0], xnor_gemm_reference(a[0], b[0], 100))


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    s=st.integers(1, 3),
    m=st.integers(1, 12),
    n=st.integers(1, 140),
    k=st.integers(1, 400),
    out_kind=st.sampled_from(tuple(OUT_KINDS)),
    threads=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_random_shapes(s, m, n, k, out_kind, threads, seed):
    run_case(s, m, n, k, out_kind, threads, seed)


def test_public_function_uses_it_for_cpu_tensors(monkeypatch):
    """backend="auto" on CPU tensors runs the compiled kernel, leading dims and all."""
    monkeypatch.delenv("TRITON_KERNELS_CPU_GEMM", raising=False)
    calls = []
    original = cpu_jit.xnor_gemm_jit

    def spy(*args, **kwargs):
        calls.append(tuple(args[0].shape))
        return original(*args, **kwargs)

    monkeypatch.setattr(cpu_jit, "xnor_gemm_jit", spy)
    gen = generator(11)
    a, b = random_words((2, 3), 70, gen), random_words((40,), 70, gen)
    scale, bias = random_channels(40, gen), random_channels(40, gen)
    got = xnor_gemm(a, b, 70, scale=scale, bias=bias, out_dtype=torch.bfloat16)
    assert calls == [(1, 6, 3)]
    assert torch.equal(got, xnor_gemm_reference(a, b, 70, scale=scale, bias=bias, out_dtype=torch.bfloat16))


def test_packed_binarynet_runs_every_product_on_it(monkeypatch):
    """The packed MLP from uint8 pixels: bit-plane first layer, hidden and output layers, all compiled."""
    from pyro_bdl.networks import BinaryNetMLP, export_packed_mlp

    monkeypatch.delenv("TRITON_KERNELS_CPU_GEMM", raising=False)
    torch.manual_seed(0)
    model = BinaryNetMLP(in_features=70, hidden=96, depth=3, classes=10).eval()
    packed = export_packed_mlp(model, input_range=(0.0, 1.0))
    pixels = torch.randint(0, 256, (1, 70), generator=generator(13), dtype=torch.uint8)
    with torch.no_grad():
        expected = model(pixels.float() / 255)
    calls = []
    original = cpu_jit.xnor_gemm_jit
    monkeypatch.setattr(cpu_jit, "xnor_gemm_jit", lambda *a, **o: calls.append(a[0].shape) or original(*a, **o))
    with torch.no_grad():
        scores = packed(pixels)
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-4)
    # first layer (8 bit planes + 1 row of ones in one product), two hidden layers, output layer
    assert calls == [(1, 9, 3), (1, 1, 3), (1, 1, 3), (1, 1, 3)]


@pytest.mark.parametrize(("value", "path"), (("", "numba"), ("auto", "numba"), ("numba", "numba"), ("numpy", "numpy")))
def test_path_choice(monkeypatch, value, path):
    monkeypatch.setenv("TRITON_KERNELS_CPU_GEMM", value)
    assert cpu.cpu_gemm_path() == path
    assert cpu.describe_cpu_gemm().startswith("compiled" if path == "numba" else "numpy fallback")


def test_path_choice_rejects_unknown_value(monkeypatch):
    monkeypatch.setenv("TRITON_KERNELS_CPU_GEMM", "avx")
    with pytest.raises(ValueError, match="TRITON_KERNELS_CPU_GEMM must be one of auto, numba, numpy; got 'avx'"):
        cpu.cpu_gemm_path()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # Python >= 3.12
def test_threads_work_in_a_forked_child():
    """A child forked after the pool started (a DataLoader worker) gets a pool of its own."""
    gen = generator(12)
    a, b = random_words((1, 8), 300, gen), random_words((1, 64), 300, gen)
    expected = cpu_jit.xnor_gemm_jit(a, b, 300, threads=2)
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        got = pool.apply_async(cpu_jit.xnor_gemm_jit, (a, b, 300), {"threads": 2}).get(timeout=120)
    assert torch.equal(got, expected)


TARGET_PROBE = """
import json, torch
from llvmlite import binding
from tests.triton_kernels.helpers import generator, random_words, random_channels
from triton_kernels import cpu_jit, xnor_gemm_reference
cases = 0
for s, m, n, k in ((1, 1, 7, 1), (1, 5, 9, 31), (2, 6, 70, 100), (1, 9, 130, 2048), (1, 3, 5, 100_000)):
    gen = generator(s + m + n + k)
    a, b = random_words((s, m), k, gen), random_words((s, n), k, gen)
    scale, bias = random_channels(n, gen), random_channels(n, gen)
    for kind, options in ((0, {}), (1, {"out_dtype": torch.float32}), (2, {"pack_output": True})):
        vectors = (scale, bias) if kind else (None, None)
        got = cpu_jit.xnor_gemm_jit(a, b, k, *vectors, kind, threads=2)
        for i in range(s):
            expected = xnor_gemm_reference(a[i], b[i], k, scale=vectors[0], bias=vectors[1], **options)
            assert torch.equal(got[i], expected), (s, m, n, k, kind)
            cases += 1
signature = cpu_jit._tile_4x4.signatures[-1]
asm = cpu_jit._tile_4x4.inspect_asm(signature)
print(json.dumps({"cases": cases, "cpu": binding.get_host_cpu_name(), "vpopcntq": "vpopcntq" in asm}))
"""


TARGET_FEATURES = {  # NUMBA_CPU_FEATURES for each CPU name (numba takes the host's features otherwise)
    "haswell": "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,+popcnt,"
    "+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave",
    "x86-64": "+64bit,+cmov,+cx8,+fxsr,+mmx,+sse,+sse2",
}


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 instruction sets")
@pytest.mark.parametrize("target", ("host", *TARGET_FEATURES))
def test_every_instruction_set_the_machine_runs(tmp_path, target):
    """The kernel compiled for AVX-512 (the host here), AVX2 (haswell) and baseline x86-64 (no popcnt
    instruction at all: LLVM's bit-trick expansion), each exact; the host's code uses VPOPCNTQ when it has it."""
    env = {
        **os.environ,
        "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"),  # fresh: compiled here, so its assembly can be inspected
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    if target != "host":
        env["NUMBA_CPU_NAME"], env["NUMBA_CPU_FEATURES"] = target, TARGET_FEATURES[target]
    done = subprocess.run(
        [sys.executable, "-c", TARGET_PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["cases"] == 6 * 3  # the 6 products of the cases, each in 3 output kinds
    host_has_it = binding.get_host_cpu_features().get("avx512vpopcntdq", False)
    assert report["vpopcntq"] == (target == "host" and host_has_it)


def test_thread_count_follows_torch_set_num_threads():
    """Read at each call (it was once cached at the first one), for both CPU paths' pools."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert cpu.thread_count() == 1
        torch.set_num_threads(2)
        assert cpu.thread_count() == min(2, os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)


CACHE_PROBE = """
import json, time
from triton_kernels import cpu_jit
seconds = cpu_jit.warm_up()
hits = sum(sum(f.stats.cache_hits.values()) for f in (cpu_jit._run_tasks, cpu_jit._panel, cpu_jit._epilogue))
print(json.dumps({"seconds": seconds, "cache_hits": hits}))
"""


def test_compiled_code_is_cached_across_processes(tmp_path):
    """A second process loads the machine code from numba's disk cache instead of compiling."""
    env = {
        **os.environ,
        "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }

    def probe() -> dict:
        done = subprocess.run(
            [sys.executable, "-c", CACHE_PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    first, second = probe(), probe()
    assert first["cache_hits"] == 0
    assert second["cache_hits"] > 0
    assert second["seconds"] < first["seconds"]
