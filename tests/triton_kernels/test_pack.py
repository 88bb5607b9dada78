"""pack_signs / unpack_signs on every backend against the plain-torch reference."""

import math

import pytest
import torch

from tests.triton_kernels.helpers import (
    generator,
    random_values,
)
from triton_kernels import pack_signs, pack_signs_reference, unpack_signs, unpack_signs_reference
from triton_kernels._runtime import resolve_backend
from triton_kernels.pack import SIGNED_DTYPES, UNPACK_DTYPES, _pack_signs_op, _unpack_signs_op, num_words

KS = (1, 31, 32, 33, 1000)
LEADS = ((), (5,), (2, 3))


def signs_of(x: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """+1 / -1 with sign(0) = sign(-0.0) = sign(NaN) = +1."""
    return torch.where(x < 0, -1, 1).to(dtype)


# --- agreement with the reference -------------------------------------------------------


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("lead", LEADS, ids=lambda lead: "x".join(map(str, lead)) or "1d")
def test_pack_matches_reference(device, backend, lead, k):
    x = random_values((*lead, k), generator(k), device)
    words = pack_signs(x, backend=backend)
    assert words.shape == (*lead, num_words(k))
    assert words.dtype == torch.int32
    assert words.device == x.device
    assert torch.equal(words, pack_signs_reference(x))


@pytest.mark.parametrize("dtype", SIGNED_DTYPES, ids=str)
def test_pack_dtypes(request, device, backend, dtype):
    x = random_values((9, 70), generator(1), device, dtype)
    expected = pack_signs_reference(x.cpu().to(torch.float64))
    assert torch.equal(pack_signs(x, backend=backend).cpu(), expected)


@pytest.mark.parametrize("dtype", (torch.int8, torch.int16, torch.int32, torch.int64), ids=str)
def test_pack_integer_extremes(device, backend, dtype):
    info = torch.iinfo(dtype)
    x = torch.tensor([info.min, -1, 0, 1, info.max] * 8, dtype=dtype, device=device)
    expected = pack_signs_reference(signs_of(x.cpu()))
    assert torch.equal(pack_signs(x, backend=backend).cpu(), expected)


def _transposed(gen, device):
    return random_values((70, 6), gen, device).t()


def _column_slice(gen, device):
    return random_values((6, 150), gen, device)[:, 3:143:2]


def _row_slice(gen, device):
    return random_values((12, 70), gen, device)[1::2]


def _broadcast(gen, device):
    return random_values((70,), gen, device).expand(6, 70)


def _storage_offset(gen, device):
    return random_values((6 * 70 + 1,), gen, device)[1:].view(6, 70)


def _permuted_3d(gen, device):
    return random_values((70, 2, 3), gen, device).permute(1, 2, 0)


def _negative_stride(gen, device):
    return random_values((6, 70), gen, device).flip(-1)


LAYOUTS = (_transposed, _column_slice, _row_slice, _broadcast, _storage_offset, _permuted_3d, _negative_stride)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda f: f.__name__.strip("_"))
def test_pack_strided_inputs(device, backend, layout):
    x = layout(generator(2), device)
    words = pack_signs(x, backend=backend)
    assert torch.equal(words, pack_signs_reference(x.contiguous()))


def test_pack_known_bit_layout(device, backend):
    # word 0: elements 0, 2 and 31 negative -> bits 0, 2, 31; word 1: element 33 -> bit 1
    x = torch.ones(34, device=device)
    x[[0, 2, 31, 33]] = -1.0
    words = pack_signs(x, backend=backend).cpu()
    assert words.tolist() == [1 + 4 - 2**31, 2]
    assert words.tolist() == [-2147483643, 2]


@pytest.mark.parametrize("k", (1, 31, 33, 63, 100))
def test_pack_padding_bits_are_zero(device, backend, k):
    x = -torch.ones(3, k, device=device)  # every real bit set
    words = pack_signs(x, backend=backend).cpu()
    full, rest = divmod(k, 32)
    assert torch.all(words[:, :full] == -1)
    if rest:
        assert torch.all(words[:, full] == (1 << rest) - 1)


def test_pack_zero_and_negative_zero_are_plus_one(device, backend):
    x = torch.tensor([0.0, -0.0, 1.0, -1.0] * 10, device=device)
    assert torch.signbit(x[1])
    words = pack_signs(x, backend=backend).cpu()
    assert torch.equal(words, pack_signs_reference(signs_of(x.cpu())))
    assert torch.equal(unpack_signs(words, 40), torch.tensor([1.0, 1.0, 1.0, -1.0] * 10))


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16, torch.float32, torch.float64), ids=str)
def test_pack_infinities_and_subnormals(request, device, backend, dtype):
    tiny = torch.finfo(dtype).smallest_normal / 4  # subnormal, still signed
    values = [float("inf"), -float("inf"), tiny, -tiny, 0.0, -0.0]
    x = torch.tensor(values * 7, dtype=dtype, device=device)
    assert bool(x[3] < 0)
    expected = torch.tensor([1, -1, 1, -1, 1, 1] * 7)
    words = pack_signs(x, backend=backend)
    assert torch.equal(unpack_signs_reference(words.cpu(), 42, torch.int64), expected)


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16, torch.float32, torch.float64), ids=str)
def test_pack_nan_raises(device, backend, dtype):
    x = random_values((4, 40), generator(3), device, dtype)
    x[2, 17] = float("nan")
    with pytest.raises(ValueError, match="check_nan"):
        pack_signs(x, backend=backend)


def test_pack_nan_unchecked_packs_plus_one(device, backend):
    x = random_values((4, 40), generator(4), device)
    x[0, 0], x[1, 5], x[3, 39] = float("nan"), -float("nan"), float("nan")
    cleaned = torch.where(torch.isnan(x), torch.ones_like(x), x)
    words = pack_signs(x, check_nan=False, backend=backend)
    assert torch.equal(words, pack_signs_reference(cleaned))


# --- unpacking --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", UNPACK_DTYPES, ids=str)
@pytest.mark.parametrize("k", KS)
def test_unpack_round_trip(request, device, backend, k, dtype):
    x = random_values((2, 3, k), generator(5 + k), device)
    words = pack_signs(x, backend=backend)
    signs = unpack_signs(words, k, dtype=dtype, backend=backend)
    assert signs.shape == x.shape
    assert signs.dtype == dtype
    assert torch.equal(signs, signs_of(x, dtype))
    assert torch.equal(signs, unpack_signs_reference(words, k, dtype))


@pytest.mark.parametrize("k", (1, 31, 33, 100))
def test_unpack_ignores_padding_bits(device, backend, k):
    # words with random padding bits (not from pack_signs): only the first k bits count
    gen = generator(6)
    words = torch.randint(-(2**31), 2**31, (5, num_words(k)), generator=gen, dtype=torch.int64)
    words = words.to(torch.int32).to(device)
    signs = unpack_signs(words, k, dtype=torch.int32, backend=backend)
    assert torch.equal(signs, unpack_signs_reference(words, k, torch.int32))
    if k % 32:
        assert not torch.equal(pack_signs_reference(signs), words)  # the padding really was set


def test_unpack_strided_words(device, backend):
    gen = generator(7)
    words = pack_signs_reference(random_values((100, 6), gen).t()).to(device)  # (6, 4)
    column_major = words.t().contiguous().t()
    column_slice = torch.cat([words, words], dim=1)[:, 4:]  # row stride 8, offset 4
    every_other_row = words[::2]
    for strided in (column_major, column_slice, every_other_row):
        assert not strided.is_contiguous()
        signs = unpack_signs(strided, 100, backend=backend)
        assert torch.equal(signs, unpack_signs_reference(strided.contiguous(), 100))


def test_unpack_default_dtype_is_float32(device, backend):
    words = pack_signs_reference(random_values((3, 40), generator(8))).to(device)
    assert unpack_signs(words, 40, backend=backend).dtype == torch.float32


# --- empty tensors ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", ((0, 40), (3, 0), (0,), (0, 0), (2, 0, 33)), ids=str)
def test_pack_empty(device, backend, shape):
    x = torch.empty(shape, device=device)
    words = pack_signs(x, backend=backend)
    assert words.shape == (*shape[:-1], num_words(shape[-1]))
    assert words.dtype == torch.int32


@pytest.mark.parametrize(("shape", "k"), (((0, 2), 40), ((3, 0), 0), ((0,), 0), ((2, 0, 2), 33)), ids=str)
def test_unpack_empty(device, backend, shape, k):
    words = torch.zeros(shape, dtype=torch.int32, device=device)
    signs = unpack_signs(words, k, dtype=torch.float16, backend=backend)
    assert signs.shape == (*shape[:-1], k)
    assert signs.dtype == torch.float16


# --- the custom ops (fake tensors, schema) ---------------------------------------------


def test_pack_ops_opcheck(device, backend):
    x = random_values((2, 3, 70), generator(9), device)
    torch.library.opcheck(_pack_signs_op, (x, backend))
    words = pack_signs_reference(x)
    torch.library.opcheck(_unpack_signs_op, (words, 70, torch.float16, backend))


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", (torch.bool, torch.uint8, torch.complex64), ids=str)
def test_pack_rejects_unsigned_dtypes(dtype):
    with pytest.raises(TypeError, match=r"x must have a floating or signed integer dtype.*" + str(dtype)):
        pack_signs(torch.zeros(3, 8, dtype=dtype))


def test_pack_rejects_non_tensor():
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor, got list"):
        pack_signs([1.0, -1.0])


def test_pack_rejects_scalar():
    with pytest.raises(ValueError, match="x must have at least one dimension"):
        pack_signs(torch.tensor(-1.0))


@pytest.mark.parametrize("backend", ("gpu", "", "Triton"))
def test_unknown_backend(backend):
    with pytest.raises(ValueError, match=f"backend must be one of .* got {backend!r}"):
        pack_signs(torch.randn(3, 8), backend=backend)
    with pytest.raises(ValueError, match="backend must be one of"):
        unpack_signs(torch.zeros(3, 1, dtype=torch.int32), 8, backend=backend)


def test_unpack_wrong_k():
    words = torch.zeros(3, 2, dtype=torch.int32)
    for k in (32, 65, 0, 1000):
        with pytest.raises(ValueError, match=rf"k={k} signs need ceil\({k}/32\) = {num_words(k)}"):
            unpack_signs(words, k)


@pytest.mark.parametrize("k", (-1, 40.0, True, None), ids=repr)
def test_unpack_bad_k_type(k):
    with pytest.raises(ValueError, match=f"k must be a non-negative int.*got {k!r}"):
        unpack_signs(torch.zeros(3, 2, dtype=torch.int32), k)


@pytest.mark.parametrize("dtype", (torch.int64, torch.uint32, torch.float32, torch.int16), ids=str)
def test_unpack_rejects_non_int32_words(dtype):
    with pytest.raises(TypeError, match=f"words must hold int32 sign words.*{dtype}"):
        unpack_signs(torch.zeros(3, 2, dtype=dtype), 40)


def test_unpack_rejects_non_tensor_and_scalar():
    with pytest.raises(TypeError, match=r"words must be a torch\.Tensor"):
        unpack_signs([0, 1], 40)
    with pytest.raises(ValueError, match="words must have at least one dimension"):
        unpack_signs(torch.tensor(3, dtype=torch.int32), 32)


@pytest.mark.parametrize("dtype", (torch.bool, torch.int64, torch.uint8, torch.int16), ids=str)
def test_unpack_rejects_output_dtype(dtype):
    with pytest.raises(TypeError, match=f"dtype must be one of .* got {dtype}"):
        unpack_signs(torch.zeros(3, 2, dtype=torch.int32), 40, dtype=dtype)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA tensors")
def test_cpu_backend_rejects_cuda_tensors():
    x = torch.randn(3, 40, device="cuda")
    with pytest.raises(ValueError, match="backend='cpu' needs CPU tensors, got device cuda"):
        pack_signs(x, backend="cpu")
    with pytest.raises(ValueError, match="backend='cpu' needs CPU tensors"):
        unpack_signs(pack_signs(x), 40, backend="cpu")


# --- backend selection -----------------------------------------------------------------


def test_resolve_backend_auto(device):
    expected = "triton" if device == "cuda" else "cpu"
    assert resolve_backend("auto", torch.device(device)) == expected
    assert resolve_backend("reference", torch.device(device)) == "reference"


@pytest.mark.parametrize("setting", ("0", "", "false", "off"))
def test_triton_backend_on_cpu_needs_interpreter(monkeypatch, setting):
    monkeypatch.setenv("TRITON_INTERPRET", setting)
    with pytest.raises(ValueError, match=r"backend='triton' needs CUDA tensors.*TRITON_INTERPRET=1"):
        resolve_backend("triton", torch.device("cpu"))
    with pytest.raises(ValueError, match="backend='triton' needs CUDA tensors"):
        pack_signs(torch.randn(3, 8), backend="triton")


@pytest.mark.parametrize("setting", ("1", "true", " ON ", "yes"))
def test_triton_backend_on_cpu_with_interpreter(monkeypatch, setting):
    monkeypatch.setenv("TRITON_INTERPRET", setting)
    assert resolve_backend("triton", torch.device("cpu")) == "triton"


def test_num_words():
    assert [num_words(k) for k in (0, 1, 31, 32, 33, 64, 65, 1000)] == [0, 1, 1, 1, 2, 2, 3, 32]
    assert all(num_words(k) == math.ceil(k / 32) for k in range(200))
