"""xnor_gemm on every backend and Triton method against xnor_gemm_reference.

Integer results are compared bit-exactly (``torch.equal``), float epilogues with
``assert_close`` and per-dtype tolerances (a GPU may fuse ``dot * scale + bias`` into one
FMA, which rounds once instead of twice).
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import skip_unless_triton_runs_on
from tests.triton_kernels.helpers import generator, random_channels, random_values, random_words, record_launches
from triton_kernels import cpu, pack_signs, pack_signs_reference, xnor_gemm, xnor_gemm_reference
from triton_kernels._runtime import bucket_rows
from triton_kernels.tuning_cache import TunedConfig
from triton_kernels.xnor_gemm import (
    OUT_FLOAT,
    OUT_INT32,
    OUT_PACKED,
    SMALL_BATCH_MAX_ROWS,
    _prune_mma_configs,
    _prune_popcount_configs,
    _xnor_gemm_op,
    _xnor_mma_kernel,
    _xnor_popcount_kernel,
    choose_method,
    expand_supported,
    xnor_gemm_triton,
)

TOLERANCES = {  # (rtol, atol): one rounding step of the output dtype
    torch.float16: (2e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
    torch.float32: (1.3e-6, 1e-5),
}
FLOAT_DTYPES = tuple(TOLERANCES)

SHAPES = (  # (M, N, K): M on both sides of the CPU and GPU thresholds, K around words
    (1, 40, 100),
    (1, 1, 1),
    (3, 5, 31),
    (4, 33, 32),
    (8, 64, 33),
    (9, 40, 1000),
    (17, 70, 33),
    (24, 48, 64),
    (70, 64, 1000),
    pytest.param((33, 130, 2000), id="large"),
)


def shape_id(shape) -> str:
    return "x".join(map(str, shape))


def gemm(a, b, k, backend, method, **options) -> torch.Tensor:
    """xnor_gemm, skipping shapes that method='expand' does not take on CUDA."""
    m, n = math.prod(a.shape[:-1]), b.shape[0]
    if method == "expand" and a.is_cuda and not expand_supported(m, n):
        pytest.skip(f"method='expand' needs M > 16 and N % 8 == 0 on CUDA, got M={m}, N={n}")
    return xnor_gemm(a, b, k, backend=backend, method=method, **options)


def operands(m, n, k, seed, device, lead=None):
    gen = generator(seed)
    return random_words(lead if lead is not None else (m,), k, gen, device), random_words((n,), k, gen, device)


def assert_close_for(actual, expected):
    assert actual.dtype == expected.dtype
    rtol, atol = TOLERANCES[expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


# --- the integer product ---------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_matches_reference(device, backend, method, shape):
    m, n, k = shape
    a, b = operands(m, n, k, sum(shape), device)
    out = gemm(a, b, k, backend, method)
    assert out.shape == (m, n)
    assert out.dtype == torch.int32
    assert out.device == a.device
    assert torch.equal(out, xnor_gemm_reference(a, b, k))


def test_reference_is_the_sign_product():
    gen = generator(10)
    x, w = random_values((7, 77), gen), random_values((45, 77), gen)
    signs_x, signs_w = torch.where(x < 0, -1, 1), torch.where(w < 0, -1, 1)
    expected = (signs_x @ signs_w.T).to(torch.int32)
    assert torch.equal(xnor_gemm_reference(pack_signs(x), pack_signs(w), 77), expected)


@pytest.mark.parametrize("lead", ((), (2, 3), (2, 1, 5)), ids=lambda lead: "x".join(map(str, lead)) or "1d")
def test_leading_dims_of_a(device, backend, method, lead):
    n, k = 48, 70
    a, b = operands(None, n, k, 11, device, lead=lead)
    out = gemm(a, b, k, backend, method)
    assert out.shape == (*lead, n)
    expected = xnor_gemm_reference(a.reshape(-1, a.shape[-1]), b, k).reshape(*lead, n)
    assert torch.equal(out, expected)
    assert torch.equal(out, xnor_gemm_reference(a, b, k))


def _wide_slice(words, gen):
    """The same words as columns of a wider tensor (row stride > number of words)."""
    junk = torch.randint(-(2**31), 2**31, (words.shape[0], 5), generator=gen).to(torch.int32).to(words.device)
    return torch.cat([junk[:, :2], words, junk[:, 2:]], dim=1)[:, 2 : 2 + words.shape[1]]


def _column_major(words, gen):
    return words.t().contiguous().t()


def _every_other_row(words, gen):
    return torch.stack([words, torch.zeros_like(words)], dim=1).flatten(0, 1)[::2]


def _storage_offset(words, gen):
    flat = torch.cat([words.new_zeros(1), words.flatten()])
    return flat[1:].view(words.shape)


STRIDED = (_wide_slice, _column_major, _every_other_row, _storage_offset)


@pytest.mark.parametrize("layout", STRIDED, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("shape", ((5, 40, 100), (24, 48, 65)), ids=shape_id)
def test_strided_operands(device, backend, method, shape, layout):
    m, n, k = shape
    gen = generator(12)
    a, b = operands(m, n, k, 13, device)
    a_strided, b_strided = layout(a, gen), layout(b, gen)
    assert torch.equal(a_strided, a)
    assert torch.equal(b_strided, b)
    out = gemm(a_strided, b_strided, k, backend, method)
    assert torch.equal(out, xnor_gemm_reference(a, b, k))


def test_broadcast_and_permuted_a(device, backend, method):
    n, k = 40, 100
    a, b = operands(6, n, k, 14, device)
    broadcast = a[:1].expand(20, a.shape[1])  # row stride 0
    assert torch.equal(gemm(broadcast, b, k, backend, method), xnor_gemm_reference(broadcast.contiguous(), b, k))
    permuted = a.reshape(2, 3, -1).permute(1, 0, 2)  # (3, 2, KW), not contiguous
    expected = xnor_gemm_reference(permuted.contiguous(), b, k)
    out = gemm(permuted, b, k, backend, method)
    assert torch.equal(out, expected)


# --- the epilogue ------------------------------------------------------------------------

EPILOGUES = ("scale", "bias", "both")


def channels(option, n, seed, device, dtype=torch.float32):
    gen = generator(seed)
    scale = random_channels(n, gen, device, dtype) if option in ("scale", "both") else None
    bias = random_channels(n, gen, device, dtype) * 20 if option in ("bias", "both") else None
    return {"scale": scale, "bias": bias}


@pytest.mark.parametrize("out_dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("option", (*EPILOGUES, "none"))
@pytest.mark.parametrize("shape", ((5, 70, 100), (20, 48, 65)), ids=shape_id)
def test_float_epilogue(device, backend, method, shape, option, out_dtype):
    m, n, k = shape
    a, b = operands(m, n, k, 15, device)
    vectors = channels(option, n, 16, device) if option != "none" else {}
    out = gemm(a, b, k, backend, method, out_dtype=out_dtype, **vectors)
    assert out.shape == (m, n)
    assert_close_for(out, xnor_gemm_reference(a, b, k, out_dtype=out_dtype, **vectors))


@pytest.mark.parametrize("option", EPILOGUES)
def test_epilogue_defaults_to_float32(device, backend, method, option):
    a, b = operands(4, 40, 100, 17, device)
    vectors = channels(option, 40, 18, device)
    out = gemm(a, b, 100, backend, method, **vectors)
    assert out.dtype == torch.float32
    assert_close_for(out, xnor_gemm_reference(a, b, 100, out_dtype=torch.float32, **vectors))


def test_epilogue_vector_dtypes(device, backend, method):
    """scale and bias of any float dtype are applied in float32."""
    m, n, k = 20, 48, 70
    a, b = operands(m, n, k, 19, device)
    gen = generator(20)
    scale = random_channels(n, gen, device, torch.float16)
    bias = random_channels(n, gen, device, torch.float64)
    out = gemm(a, b, k, backend, method, scale=scale, bias=bias)
    dot = xnor_gemm_reference(a, b, k).to(torch.float32)
    expected = dot * scale.to(torch.float32) + bias.to(torch.float32)
    assert_close_for(out, expected)


def test_reference_defaults_match_xnor_gemm():
    a, b = operands(4, 40, 100, 42, "cpu")
    vectors = channels("both", 40, 43, "cpu")
    out = xnor_gemm(a, b, 100, **vectors)
    assert out.dtype == torch.float32
    assert_close_for(xnor_gemm_reference(a, b, 100, **vectors), out)


@pytest.mark.parametrize("option", ("none", *EPILOGUES))
@pytest.mark.parametrize("shape", ((1, 40, 100), (5, 32, 33), (9, 64, 64), (24, 40, 100), (33, 130, 70)), ids=shape_id)
def test_packed_output(device, backend, method, shape, option):
    m, n, k = shape
    a, b = operands(m, n, k, 21, device)
    vectors = channels(option, n, 22, device) if option != "none" else {}
    out = gemm(a, b, k, backend, method, pack_output=True, **vectors)
    assert out.shape == (m, math.ceil(n / 32))
    assert out.dtype == torch.int32
    expected = xnor_gemm_reference(a, b, k, pack_output=True, **vectors)
    assert torch.equal(out, expected)
    real = xnor_gemm_reference(a, b, k, out_dtype=torch.float32, **vectors)
    assert torch.equal(expected, pack_signs_reference(real))


def test_packed_output_zero_is_plus_one(device, backend, method):
    """dot = 0 gives y = 0 (or -0.0 with a negative scale): both pack as +1 (bit 0)."""
    k, n = 64, 40
    a = pack_signs_reference(torch.ones(3, k)).to(device)
    w = torch.ones(n, k)
    w[:, 32:] = -1.0  # every dot product is 0
    b = pack_signs_reference(w).to(device)
    assert torch.all(xnor_gemm_reference(a, b, k) == 0)
    for vectors in ({}, {"scale": -torch.ones(n, device=device)}, {"bias": torch.zeros(n, device=device)}):
        out = gemm(a, b, k, backend, method, pack_output=True, **vectors)
        assert torch.all(out == 0)


def test_packed_output_with_leading_dims(device, backend, method):
    a, b = operands(None, 70, 100, 23, device, lead=(2, 3))
    vectors = channels("both", 70, 24, device)
    out = gemm(a, b, 100, backend, method, pack_output=True, **vectors)
    assert out.shape == (2, 3, 3)
    assert torch.equal(out, xnor_gemm_reference(a, b, 100, pack_output=True, **vectors))


def test_chained_layers(device, backend, method):
    """Layer 1's packed output is layer 2's input, as in a stack of binary layers."""
    m, k0, n1, n2 = 20, 100, 70, 48
    gen = generator(25)
    a0 = random_words((m,), k0, gen, device)
    b1, b2 = random_words((n1,), k0, gen, device), random_words((n2,), n1, gen, device)
    layer1 = channels("both", n1, 26, device)
    layer2 = channels("both", n2, 27, device)
    a1 = gemm(a0, b1, k0, backend, method, pack_output=True, **layer1)
    expected_a1 = xnor_gemm_reference(a0, b1, k0, pack_output=True, **layer1)
    assert torch.equal(a1, expected_a1)
    out = gemm(a1, b2, n1, backend, method, **layer2)
    assert_close_for(out, xnor_gemm_reference(expected_a1, b2, n1, out_dtype=torch.float32, **layer2))
    counts = gemm(a1, b2, n1, backend, method)
    assert torch.equal(counts, xnor_gemm_reference(expected_a1, b2, n1))


# --- a stack of weight matrices (S networks in one call) ----------------------------------


@pytest.mark.parametrize("vectors", ("shared", "per-product"))
@pytest.mark.parametrize("output", ("int32", "float32", "packed"))
def test_weight_stack_is_each_product(device, backend, method, output, vectors):
    """b (S, N, KW) with a (S, ..., KW): product s uses weights s; scale/bias (N,) or (S, N)."""
    s, n, k = 3, 40, 70
    gen = generator(5)
    a, b = random_words((s, 2, 5), k, gen, device), random_words((s, n), k, gen, device)
    shape = (n,) if vectors == "shared" else (s, n)
    scale = random_channels(math.prod(shape), gen, device).view(shape) if output != "int32" else None
    bias = random_channels(math.prod(shape), gen, device).view(shape) if output != "int32" else None
    options = {"pack_output": output == "packed", "out_dtype": torch.float32 if output == "float32" else None}
    got = gemm(a, b, k, backend, method, scale=scale, bias=bias, **options)
    for i in range(s):
        row = (
            {"scale": scale, "bias": bias}
            if vectors == "shared" or scale is None
            else {"scale": scale[i], "bias": bias[i]}
        )
        expected = xnor_gemm_reference(a[i].reshape(10, -1), b[i], k, **row, **options).reshape(2, 5, -1)
        if output == "float32":
            assert_close_for(got[i], expected)
        else:
            assert torch.equal(got[i], expected)


def test_weight_stack_rejects_a_without_the_batch():
    gen = generator(6)
    b = random_words((3, 40), 100, gen)
    with pytest.raises(
        ValueError, match=r"a stack of 3 weight matrices b needs a as \(3, \.\.\., words\), got \(2, 4\)"
    ):
        xnor_gemm(random_words((2,), 100, gen), b, 100)
    with pytest.raises(ValueError, match=r"scale must have shape \(40,\) or \(3, 40\) \(one value per output\)"):
        xnor_gemm(random_words((3, 2), 100, gen), b, 100, scale=torch.ones(2, 40))


# --- the CPU fallback's strategies (the compiled path: test_cpu_jit.py) ---------------------


@pytest.mark.parametrize("k", (32, 64, 100, 2000))
@pytest.mark.parametrize("m", (1, cpu.POPCOUNT_MAX_ROWS, cpu.POPCOUNT_MAX_ROWS + 1, 40))
def test_cpu_strategies_around_threshold(m, k):
    """Both sides of POPCOUNT_MAX_ROWS; odd and even word counts (32- and 64-bit lanes)."""
    a, b = operands(m, 70, k, m + k, "cpu")
    expected = xnor_gemm_reference(a, b, k)
    assert torch.equal(cpu.xnor_gemm_numpy(a, b, k), expected)


@pytest.mark.parametrize("max_rows", (0, 1000))
def test_cpu_strategies_agree(monkeypatch, max_rows):
    """The same inputs through each strategy: popcount rows and the int8 GEMM."""
    monkeypatch.setattr(cpu, "POPCOUNT_MAX_ROWS", max_rows)
    a, b = operands(20, 600, 99, 28, "cpu")  # N = 600 splits over threads in chunks
    expected = xnor_gemm_reference(a, b, 99)
    assert torch.equal(cpu.xnor_gemm_numpy(a, b, 99), expected)
    assert torch.equal(cpu.xnor_gemm_numpy(a[:3], b, 99), expected[:3])
    strided = _storage_offset(a, None)  # 4-byte aligned only, viewed as 64-bit lanes
    assert torch.equal(cpu.xnor_gemm_numpy(strided, _column_major(b, None), 99), expected)


# --- every autotune config ---------------------------------------------------------------

OUTPUTS = ("int32", "float", "packed")
OUT_KIND_OF = {"int32": OUT_INT32, "float": OUT_FLOAT, "packed": OUT_PACKED}


def config_id(config) -> str:
    meta = config.kwargs
    parts = [f"{name.removeprefix('BLOCK_').lower()}{value}" for name, value in meta.items()]
    return "-".join([*parts, f"w{config.num_warps}", f"s{config.num_stages}"])


def config_valid_for(config, output: str) -> bool:
    """The pruner's rules that concern the output (BLOCK_M only matters for speed)."""
    meta = config.kwargs
    if meta.get("SPLIT_K", 1) > 1 and output != "int32":
        return False
    return not (output == "packed" and meta["BLOCK_N"] % 32)


def config_cases(kernel, method):
    return [
        pytest.param(method, config, output, id=f"{method}-{config_id(config)}-{output}")
        for config in kernel.configs
        for output in OUTPUTS
        if config_valid_for(config, output)
    ]


CONFIG_CASES = config_cases(_xnor_popcount_kernel, "popcount") + config_cases(_xnor_mma_kernel, "mma")


def run_with_config(a, b, k, method, output, config, device):
    n = b.shape[0]
    gen = generator(29)
    scale = random_channels(n, gen, device) if output == "float" else None
    bias = random_channels(n, gen, device) * 20 if output != "int32" else None
    out_dtype = torch.float32 if output == "float" else torch.int32
    pack = output == "packed"
    out = xnor_gemm_triton(a, b, k, scale, bias, out_dtype, pack, method, config=TunedConfig.from_triton(config))
    expected = xnor_gemm_reference(a, b, k, scale=scale, bias=bias, out_dtype=out_dtype, pack_output=pack)
    if output == "float":
        assert_close_for(out, expected)
    else:
        assert torch.equal(out, expected)


@pytest.mark.parametrize(("method", "config", "output"), CONFIG_CASES)
def test_every_config(device, method, config, output):
    """Each config in the autotune lists, forced, on a small problem with several tiles."""
    skip_unless_triton_runs_on(device)
    m, n, k = 3, 40, 100
    a, b = operands(m, n, k, 30, device)
    run_with_config(a, b, k, method, output, config, device)
    if output == "int32":  # many K steps (and real split-K slices)
        a, b = operands(m, n, 4200, 31, device)
        run_with_config(a, b, 4200, method, output, config, device)


def test_forced_config_is_the_one_launched(device, monkeypatch):
    skip_unless_triton_runs_on(device)
    launched = record_launches(monkeypatch)
    a, b = operands(3, 40, 100, 32, device)
    config = TunedConfig.from_triton(_xnor_popcount_kernel.configs[-1])
    out = xnor_gemm_triton(a, b, 100, None, None, torch.int32, False, "popcount", config=config)
    assert launched == [config]
    assert torch.equal(out, xnor_gemm_reference(a, b, 100))


@pytest.mark.parametrize("out_kind", (OUT_INT32, OUT_FLOAT, OUT_PACKED))
@pytest.mark.parametrize("m", (1, 2, 3, 5, 16, 17, 100, 5000, 10**6))
def test_pruning_rules(monkeypatch, m, out_kind):
    """Every batch bucket and output kind keeps at least one config, and only valid ones."""
    rows = bucket_rows(m)
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the GPU's list: every config that fits
    kept = _prune_popcount_configs(_xnor_popcount_kernel.configs, {}, M_BUCKET=rows, OUT_KIND=out_kind)
    assert kept
    for config in kept:
        meta = config.kwargs
        assert meta["BLOCK_M"] == rows if rows <= 16 else meta["BLOCK_M"] >= 32
        assert meta["SPLIT_K"] == 1 or out_kind == OUT_INT32
        assert meta["BLOCK_N"] % 32 == 0 or out_kind != OUT_PACKED
    mma_kept = _prune_mma_configs(_xnor_mma_kernel.configs, {}, M_BUCKET=rows, OUT_KIND=out_kind)
    assert mma_kept
    assert all(config.kwargs["BLOCK_M"] <= max(32, rows) for config in mma_kept)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the interpreter runs the first one only
    assert _prune_popcount_configs(_xnor_popcount_kernel.configs, {}, M_BUCKET=rows, OUT_KIND=out_kind) == kept[:1]
    assert _prune_mma_configs(_xnor_mma_kernel.configs, {}, M_BUCKET=rows, OUT_KIND=out_kind) == mma_kept[:1]


def test_split_k_configs_have_the_zeroing_hook():
    for config in _xnor_popcount_kernel.configs:
        assert (config.pre_hook is not None) == (config.kwargs["SPLIT_K"] > 1)


# --- property-based ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ("cpu", "triton"))
@pytest.mark.parametrize("device", ("cpu",))
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(m=st.integers(1, 20), n=st.integers(1, 70), k=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_random_shapes(device, backend, m, n, k, seed):
    if backend == "triton":
        skip_unless_triton_runs_on(device)
    a, b = operands(m, n, k, seed, device)
    method = "popcount" if backend == "triton" else "auto"
    assert torch.equal(xnor_gemm(a, b, k, backend=backend, method=method), xnor_gemm_reference(a, b, k))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(m=st.integers(1, 40), n=st.integers(1, 70), k=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_random_shapes_cuda(m, n, k, seed):
    a, b = operands(m, n, k, seed, "cuda")
    assert torch.equal(xnor_gemm(a, b, k), xnor_gemm_reference(a, b, k))


# --- empty problems ---------------------------------------------------------------------


@pytest.mark.parametrize(("m", "n", "k"), ((0, 40, 100), (5, 0, 100), (0, 0, 33), (5, 40, 0), (0, 40, 0)))
def test_empty(device, backend, method, m, n, k):
    a, b = operands(m, n, k, 33, device)
    out = xnor_gemm(a, b, k, backend=backend, method=method)
    assert out.shape == (m, n)
    assert out.dtype == torch.int32
    assert torch.all(out == 0)  # k = 0: an empty sum
    bias = random_channels(n, generator(34), device)
    biased = xnor_gemm(a, b, k, bias=bias, backend=backend, method=method)
    assert biased.dtype == torch.float32
    if k == 0:
        assert torch.equal(biased, bias.expand(m, n))
    packed = xnor_gemm(a, b, k, bias=bias, pack_output=True, backend=backend, method=method)
    assert packed.shape == (m, math.ceil(n / 32))
    assert torch.equal(packed, xnor_gemm_reference(a, b, k, bias=bias, pack_output=True))


def test_empty_with_leading_dims(device, backend, method):
    a, b = operands(None, 40, 100, 35, device, lead=(2, 0))
    assert gemm(a, b, 100, backend, method).shape == (2, 0, 40)
    assert gemm(a, b, 100, backend, method, pack_output=True).shape == (2, 0, 2)


# --- the custom op --------------------------------------------------------------------------


@pytest.mark.parametrize("option", ("none", "both", "packed"))
def test_opcheck(device, backend, method, option):
    a, b = operands(20, 48, 70, 36, device)
    vectors = channels("both", 48, 37, device) if option != "none" else {"scale": None, "bias": None}
    out_dtype = torch.float16 if option == "both" else torch.int32
    args = (a, b, 70, vectors["scale"], vectors["bias"], out_dtype, option == "packed", method, backend)
    if method == "expand" and device == "cuda":
        pytest.skip("covered by test_packed_output; opcheck's shapes are fixed here")
    torch.library.opcheck(_xnor_gemm_op, args)


# --- dispatch -----------------------------------------------------------------------------


def test_choose_method():
    assert SMALL_BATCH_MAX_ROWS == 16
    for m in (0, 1, 2, 15, 16):
        assert choose_method(m, 4096) == "popcount"
        assert choose_method(m, 7) == "popcount"
    for m in (17, 100, 1024, 10**6):
        assert choose_method(m, 4096) == "expand"
        assert choose_method(m, 4095) == "mma"  # torch._int_mm needs N % 8 == 0
        assert choose_method(m, 12) == "mma"


def test_expand_supported():
    assert expand_supported(17, 8)
    assert not expand_supported(16, 8)
    assert not expand_supported(1000, 12)
    assert expand_supported(1000, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the restriction is cuBLASLt's")
def test_expand_rejects_small_problems_on_cuda():
    a, b = operands(16, 40, 100, 38, "cuda")
    with pytest.raises(ValueError, match=r"method='expand' needs M > 16 and N % 8 == 0 on CUDA, got M=16, N=40"):
        xnor_gemm(a, b, 100, method="expand")
    a, b = operands(20, 44, 100, 38, "cuda")
    with pytest.raises(ValueError, match="got M=20, N=44"):
        xnor_gemm(a, b, 100, method="expand")


def test_auto_method_matches_reference_across_thresholds(device):
    skip_unless_triton_runs_on(device)
    for m in (SMALL_BATCH_MAX_ROWS, SMALL_BATCH_MAX_ROWS + 1):
        a, b = operands(m, 40, 100, 39 + m, device)
        assert torch.equal(xnor_gemm(a, b, 100, backend="triton"), xnor_gemm_reference(a, b, 100))


# --- bad input ----------------------------------------------------------------------------


def good_operands():
    return operands(4, 40, 100, 40, "cpu")


@pytest.mark.parametrize("dtype", (torch.int64, torch.uint32, torch.float32), ids=str)
def test_rejects_non_int32_words(dtype):
    a, b = good_operands()
    with pytest.raises(TypeError, match=f"a must hold int32 sign words.*{dtype}"):
        xnor_gemm(a.to(dtype), b, 100)
    with pytest.raises(TypeError, match=f"b must hold int32 sign words.*{dtype}"):
        xnor_gemm(a, b.to(dtype), 100)


def test_rejects_word_count_mismatch():
    a, b = good_operands()
    with pytest.raises(ValueError, match=r"b has 5 words .* k=100 signs need ceil\(100/32\) = 4"):
        xnor_gemm(a, torch.cat([b, b[:, :1]], dim=1), 100)
    with pytest.raises(ValueError, match=r"a has 3 words .* k=100"):
        xnor_gemm(a[:, :3], b, 100)


@pytest.mark.parametrize("k", (96, 129, 0, 1000))
def test_rejects_wrong_k(k):
    a, b = good_operands()
    with pytest.raises(ValueError, match=f"a has 4 words in its last dimension, but k={k}"):
        xnor_gemm(a, b, k)


@pytest.mark.parametrize("k", (-1, 100.0, None, True), ids=repr)
def test_rejects_bad_k_type(k):
    a, b = good_operands()
    with pytest.raises(ValueError, match=f"k must be a non-negative int.*got {k!r}"):
        xnor_gemm(a, b, k)


def test_rejects_non_tensor_and_scalar_operands():
    a, b = good_operands()
    with pytest.raises(TypeError, match=r"a must be a torch\.Tensor of int32 words, got list"):
        xnor_gemm(a.tolist(), b, 100)
    with pytest.raises(ValueError, match="b must have at least one dimension"):
        xnor_gemm(a, torch.tensor(1, dtype=torch.int32), 100)


@pytest.mark.parametrize("shape", ((4,), (2, 3, 40, 4)), ids=str)
def test_rejects_b_not_2d_or_3d(shape):
    a, _ = good_operands()
    b = torch.zeros(shape, dtype=torch.int32)
    with pytest.raises(
        ValueError, match=rf"b must be 2-D \(N, words\) or 3-D \(S, N, words\), got shape {re_tuple(shape)}"
    ):
        xnor_gemm(a, b, 100)


def re_tuple(shape) -> str:
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("name", ("scale", "bias"))
@pytest.mark.parametrize("shape", ((39,), (41,), (1,), (40, 1), ()), ids=str)
def test_rejects_channel_vector_shape(name, shape):
    a, b = good_operands()
    with pytest.raises(ValueError, match=rf"{name} must have shape \(40,\) \(one value per output\), got"):
        xnor_gemm(a, b, 100, **{name: torch.ones(shape)})


@pytest.mark.parametrize("name", ("scale", "bias"))
@pytest.mark.parametrize("value", (torch.ones(40, dtype=torch.int32), torch.ones(40, dtype=torch.bool), 2.0), ids=repr)
def test_rejects_channel_vector_type(name, value):
    a, b = good_operands()
    with pytest.raises(TypeError, match=rf"{name} must be a floating-point tensor of shape \(40,\)"):
        xnor_gemm(a, b, 100, **{name: value})


@pytest.mark.parametrize("dtype", (torch.float64, torch.int8, torch.int64, torch.bool), ids=str)
def test_rejects_out_dtype(dtype):
    a, b = good_operands()
    with pytest.raises(TypeError, match=f"out_dtype must be one of .* got {dtype}"):
        xnor_gemm(a, b, 100, out_dtype=dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_rejects_pack_output_with_float_out_dtype(dtype):
    a, b = good_operands()
    with pytest.raises(ValueError, match=f"pack_output=True returns int32 sign words; out_dtype={dtype}"):
        xnor_gemm(a, b, 100, pack_output=True, out_dtype=dtype)


@pytest.mark.parametrize("name", ("scale", "bias"))
def test_rejects_epilogue_with_int32_out(name):
    a, b = good_operands()
    with pytest.raises(ValueError, match="scale and bias give real values: choose a floating out_dtype"):
        xnor_gemm(a, b, 100, out_dtype=torch.int32, **{name: torch.ones(40)})


@pytest.mark.parametrize("method", ("tensorcore", "", "POPCOUNT"))
def test_rejects_unknown_method(method):
    a, b = good_operands()
    with pytest.raises(ValueError, match=f"method must be one of .* got {method!r}"):
        xnor_gemm(a, b, 100, method=method)


@pytest.mark.parametrize("backend", ("auto", "cpu", "reference"))
@pytest.mark.parametrize("method", ("popcount", "mma", "expand"))
def test_rejects_method_without_triton_backend(backend, method):
    a, b = good_operands()
    resolved = "cpu" if backend == "auto" else backend
    with pytest.raises(ValueError, match=f"method={method!r} selects a Triton kernel, but the backend is {resolved!r}"):
        xnor_gemm(a, b, 100, method=method, backend=backend)


def test_rejects_unknown_backend():
    a, b = good_operands()
    with pytest.raises(ValueError, match=r"backend must be one of .* got 'gpu'"):
        xnor_gemm(a, b, 100, backend="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs two devices")
def test_rejects_mixed_devices():
    a, b = good_operands()
    with pytest.raises(ValueError, match="a is on cpu but b is on cuda"):
        xnor_gemm(a, b.cuda(), 100)
    with pytest.raises(ValueError, match="scale is on cpu but the operands are on cuda"):
        xnor_gemm(a.cuda(), b.cuda(), 100, scale=torch.ones(40))
    with pytest.raises(ValueError, match="backend='cpu' needs CPU tensors"):
        xnor_gemm(a.cuda(), b.cuda(), 100, backend="cpu")
