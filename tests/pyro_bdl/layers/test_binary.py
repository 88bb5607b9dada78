"""BinaryLinear, BinaryConv2d and the sign STE against their float specifications.

Forward: a binary layer's output is a sum of +-1 products, an integer, so it must equal
the float product of the +-1 operands *exactly* (``torch.equal``), in every dtype that
holds those integers exactly (bfloat16 up to 256, float16 up to 2048). The specifications
are ``F.linear(binary_sign(x), binary_sign(W)) + bias`` and :func:`binary_conv2d_reference`
(``sign(x)`` padded with +1, then ``F.conv2d``).

Backward: the straight-through estimator, ``g * 1{|r| <= 1}`` for inputs and latent
weights. ``torch.autograd.gradcheck`` is not applicable: ``sign`` is piecewise constant,
so its finite differences are 0 (or huge at a jump) and never equal the STE. The tests
compare with the analytic STE gradients instead.
"""

import functools
import importlib
import io

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_

import pyro_bdl.layers.binary as binary_module
from pyro_bdl.layers import BinaryConv2d, BinaryLinear, SignSTE, binary_conv2d_reference, binary_sign, sign_ste
from tests.triton_kernels.helpers import generator, random_values
from triton_kernels import pack_signs_reference


@pytest.fixture(autouse=True)
def seeded():
    """Layers initialise from torch's global generator: fix it, whatever ran before."""
    torch.manual_seed(0)


# --- helpers -----------------------------------------------------------------------------


def set_random_(layer: torch.nn.Module, gen: torch.Generator, weight_scale: float = 1.0) -> torch.nn.Module:
    """Fresh normal latent weights (some exactly 0, some outside [-1, 1] when scaled) and bias."""
    with torch.no_grad():
        for param in layer.parameters():
            values = random_values(param.shape, gen, dtype=torch.float64) * weight_scale
            param.copy_(values.to(param.dtype))
    return layer


def linear_reference(x: torch.Tensor, layer: BinaryLinear) -> torch.Tensor:
    """The float specification of BinaryLinear (binarised input), in x's dtype."""
    out = F.linear(binary_sign(x), binary_sign(layer.weight.detach()))
    return out if layer.bias is None else out + layer.bias.detach()


def conv_reference(x: torch.Tensor, layer: BinaryConv2d) -> torch.Tensor:
    """The float specification of BinaryConv2d (binarised input, +1 padding), in x's dtype."""
    out = binary_conv2d_reference(x, layer.weight.detach(), layer.stride, layer.padding, layer.dilation, layer.groups)
    return out if layer.bias is None else out + layer.bias.detach().view(1, -1, 1, 1)


def assert_exact(out: torch.Tensor, expected: torch.Tensor) -> None:
    assert out.dtype == expected.dtype and out.shape == expected.shape
    assert torch.equal(out.double(), expected.double())


def ste_mask(r: torch.Tensor) -> torch.Tensor:
    return (r.abs() <= 1).to(r.dtype)


def with_backend(monkeypatch, backend: str) -> None:
    """Route the layers' kernel calls to one backend of pyro_bdl.kernels."""
    monkeypatch.setattr(binary_module, "pack_signs", functools.partial(binary_module.pack_signs, backend=backend))
    monkeypatch.setattr(binary_module, "xnor_gemm", functools.partial(binary_module.xnor_gemm, backend=backend))


# --- binary_sign and the sign STE ----------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_binary_sign_maps_zero_and_nan_to_plus_one(dtype):
    x = torch.tensor([-2.5, -1e-3, -0.0, 0.0, 1e-3, 3.0, float("nan"), float("-inf")], dtype=dtype)
    expected = torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0], dtype=dtype)
    assert torch.equal(binary_sign(x), expected)


@pytest.mark.parametrize("ste", [sign_ste, SignSTE()], ids=["function", "module"])
def test_sign_ste_gradient_is_hard_tanh_mask(ste):
    # |x| == 1 exactly passes the gradient, anything beyond is blocked.
    edges = torch.tensor([-1.5, -1.0, -1.0 - 1e-12, -0.5, 0.0, 0.5, 1.0, 1.0 + 1e-12, 2.0], dtype=torch.float64)
    x = torch.cat([edges, random_values((50,), generator(0), dtype=torch.float64) * 1.5]).requires_grad_()
    grad = random_values(x.shape, generator(1), dtype=torch.float64)
    out = ste(x)
    out.backward(grad)
    assert torch.equal(out, binary_sign(x.detach()))
    assert torch.equal(x.grad, grad * (x.detach().abs() <= 1).double())
    assert torch.equal(x.grad[:9], grad[:9] * torch.tensor([0, 1, 0, 1, 1, 1, 1, 0, 0], dtype=torch.float64))


# --- BinaryLinear forward ----------------------------------------------------------------

IN_FEATURES = (1, 31, 32, 33, 100, 300)
LEADS = ((1,), (5,), (2, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lead", LEADS, ids=str)
@pytest.mark.parametrize("in_features", IN_FEATURES)
def test_linear_equals_float_reference(in_features, lead, dtype):
    gen = generator(in_features)
    layer = set_random_(BinaryLinear(in_features, 7, dtype=dtype), gen, weight_scale=1.5)
    x = random_values((*lead, in_features), gen, dtype=dtype)
    assert_exact(layer(x), linear_reference(x, layer))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("in_features", [1, 31, 33, 100])
def test_linear_half_precision_is_exact_while_counts_fit(in_features, dtype):
    # bfloat16 holds every integer up to 256 exactly, float16 up to 2048: keep K below that.
    gen = generator(in_features)
    layer = set_random_(BinaryLinear(in_features, 9, dtype=dtype), gen)
    x = random_values((2, 3, in_features), gen, dtype=dtype)
    assert_exact(layer(x), linear_reference(x, layer))


def test_linear_without_bias():
    gen = generator(2)
    layer = set_random_(BinaryLinear(45, 6, bias=False), gen)
    x = random_values((4, 45), gen)
    assert layer.bias is None
    assert_exact(layer(x), linear_reference(x, layer))


@pytest.mark.parametrize("in_features", [1, 33, 300])
def test_linear_real_input_multiplies_binary_weights(in_features):
    gen = generator(3)
    layer = set_random_(BinaryLinear(in_features, 5, binarize_input=False), gen, weight_scale=1.5)
    x = random_values((3, in_features), gen)
    expected = F.linear(x, binary_sign(layer.weight.detach()), layer.bias.detach())
    assert_exact(layer(x), expected)
    assert_exact(layer.forward_real(x), expected)


def test_linear_on_cpu_runs_the_cpu_path(monkeypatch):
    xnor_gemm_module = importlib.import_module("triton_kernels.xnor_gemm")  # not the function of that name
    calls = []
    original = xnor_gemm_module.xnor_gemm_cpu

    def spy(*args):
        calls.append(args[0].shape)
        return original(*args)

    monkeypatch.setattr(xnor_gemm_module, "xnor_gemm_cpu", spy)
    gen = generator(4)
    layer = set_random_(BinaryLinear(70, 8), gen)
    x = random_values((3, 70), gen)
    assert_exact(layer(x), linear_reference(x, layer))
    assert calls == [torch.Size([1, 3, 3])]  # one product of 3 rows of ceil(70 / 32) = 3 words


def test_linear_on_device(device):
    # Default dispatch: the CPU path on "cpu", the Triton kernels on "cuda".
    gen = generator(5)
    layer = set_random_(BinaryLinear(100, 40), gen).to(device)
    x = random_values((2, 3, 100), gen, device=device)
    out = layer(x)
    assert out.device.type == device
    assert_exact(out.cpu(), linear_reference(x.cpu(), layer.cpu()))


@pytest.mark.parametrize("in_features", [33, 300])
def test_linear_on_every_backend(device, backend, monkeypatch, in_features):
    # backend="triton" on CPU tensors runs the kernels in the Triton interpreter.
    with_backend(monkeypatch, backend)
    gen = generator(6)
    layer = set_random_(BinaryLinear(in_features, 24), gen).to(device)
    x = random_values((5, in_features), gen, device=device)
    assert_exact(layer(x).cpu(), linear_reference(x.cpu(), layer.cpu()))


# --- BinaryConv2d forward ----------------------------------------------------------------

KERNELS = (1, 3, (3, 2))
STRIDES = (1, 2, (2, 1))
PADDINGS = (0, 1, (1, 2))
DILATIONS = (1, 2)
GROUPS = (1, 2, 4)


@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("dilation", DILATIONS)
@pytest.mark.parametrize("padding", PADDINGS, ids=str)
@pytest.mark.parametrize("stride", STRIDES, ids=str)
@pytest.mark.parametrize("kernel", KERNELS, ids=str)
def test_conv_geometry_equals_reference(kernel, stride, padding, dilation, groups):
    gen = generator(7)
    layer = set_random_(BinaryConv2d(40, 8, kernel, stride, padding, dilation, groups), gen, weight_scale=1.5)
    x = random_values((2, 40, 9, 8), gen)
    assert_exact(layer(x), conv_reference(x, layer))


CHANNEL_CASES = (  # in, out, kernel, stride, padding, dilation, groups, (H, W)
    (3, 5, 3, 1, 1, 1, 1, (7, 7)),
    (40, 12, (3, 2), (2, 1), (1, 2), 2, 4, (9, 10)),
    (64, 16, 3, 2, 1, 1, 2, (8, 8)),
    (70, 10, 3, 1, 0, (2, 1), 2, (8, 9)),
    (33, 6, 1, 1, 0, 1, 1, (4, 5)),
    (96, 32, 3, 1, 1, 1, 1, (5, 6)),
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CHANNEL_CASES, ids=lambda case: f"{case[0]}to{case[1]}-g{case[6]}")
def test_conv_channels_not_multiple_of_32(case, dtype):
    in_channels, out_channels, kernel, stride, padding, dilation, groups, size = case
    gen = generator(in_channels)
    layer = BinaryConv2d(in_channels, out_channels, kernel, stride, padding, dilation, groups, dtype=dtype)
    set_random_(layer, gen, weight_scale=1.5)
    x = random_values((3, in_channels, *size), gen, dtype=dtype)
    assert_exact(layer(x), conv_reference(x, layer))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_conv_half_precision_is_exact_while_counts_fit(dtype):
    gen = generator(8)
    layer = set_random_(BinaryConv2d(20, 6, 3, stride=2, padding=1, groups=2, dtype=dtype), gen)  # |count| <= 90
    x = random_values((2, 20, 7, 6), gen, dtype=dtype)
    assert_exact(layer(x), conv_reference(x, layer))


def test_conv_without_bias():
    gen = generator(9)
    layer = set_random_(BinaryConv2d(5, 4, 3, padding=1, bias=False), gen)
    x = random_values((2, 5, 6, 6), gen)
    assert layer.bias is None
    assert_exact(layer(x), conv_reference(x, layer))


@pytest.mark.parametrize("padding", [0, 1, (1, 2)], ids=str)
def test_conv_real_input_uses_zero_padding(padding):
    gen = generator(10)
    layer = set_random_(BinaryConv2d(6, 4, 3, stride=2, padding=padding, groups=2, binarize_input=False), gen)
    x = random_values((2, 6, 7, 8), gen)
    expected = F.conv2d(x, binary_sign(layer.weight.detach()), None, 2, padding, 1, 2) + layer.bias.view(1, -1, 1, 1)
    assert_exact(layer(x), expected.detach())


def test_conv_pads_binarised_input_with_plus_one():
    """The documented padding: +1 around sign(x), i.e. sign() of the zero-padded real input.

    A float convolution that zero-pads sign(x) adds 0 instead of +-w at the border, so it
    differs there and agrees in the interior; the +1 reference agrees everywhere.
    """
    gen = generator(11)
    layer = set_random_(BinaryConv2d(5, 4, 3, padding=1, bias=False), gen)
    x = random_values((2, 5, 6, 7), gen)
    out = layer(x)
    signs, weight_signs = binary_sign(x), binary_sign(layer.weight.detach())

    zero_padded = F.conv2d(signs, weight_signs, padding=1)
    border = torch.ones(6, 7, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert torch.equal(out[..., ~border], zero_padded[..., ~border])
    assert not torch.equal(out[..., border], zero_padded[..., border])

    assert torch.equal(out, binary_conv2d_reference(x, layer.weight, padding=1))
    assert torch.equal(out, F.conv2d(binary_sign(F.pad(x, (1, 1, 1, 1))), weight_signs))


def test_conv_on_device(device):
    gen = generator(12)
    layer = set_random_(BinaryConv2d(40, 16, 3, stride=2, padding=1, groups=2), gen).to(device)
    x = random_values((2, 40, 9, 7), gen, device=device)
    out = layer(x)
    assert out.device.type == device
    assert_exact(out.cpu(), conv_reference(x.cpu(), layer.cpu()))


def test_conv_on_every_backend(device, backend, monkeypatch):
    with_backend(monkeypatch, backend)
    gen = generator(13)
    layer = set_random_(BinaryConv2d(36, 8, (3, 2), stride=(2, 1), padding=(1, 2), dilation=2, groups=4), gen)
    layer = layer.to(device)
    x = random_values((2, 36, 8, 7), gen, device=device)
    assert_exact(layer(x).cpu(), conv_reference(x.cpu(), layer.cpu()))


# --- straight-through gradients ----------------------------------------------------------


@pytest.mark.parametrize("lead", [(6,), (2, 3)], ids=str)
def test_linear_ste_gradients(lead):
    gen = generator(14)
    layer = set_random_(BinaryLinear(37, 5, dtype=torch.float64), gen, weight_scale=1.5)
    weight = layer.weight.detach()
    assert (weight.abs() > 1).any(), "some latent weights must lie outside [-1, 1] to see the mask"
    x = (random_values((*lead, 37), gen, dtype=torch.float64) * 1.5).requires_grad_()
    grad = random_values((*lead, 5), gen, dtype=torch.float64)
    layer(x).backward(grad)

    expected_x = (grad @ binary_sign(weight)) * ste_mask(x.detach())
    flat_grad, flat_signs = grad.reshape(-1, 5), binary_sign(x.detach()).reshape(-1, 37)
    expected_w = (flat_grad.T @ flat_signs) * ste_mask(weight)
    torch.testing.assert_close(x.grad, expected_x)
    torch.testing.assert_close(layer.weight.grad, expected_w)
    torch.testing.assert_close(layer.bias.grad, flat_grad.sum(0))
    assert torch.all(layer.weight.grad[weight.abs() > 1] == 0)
    assert torch.all(x.grad[x.detach().abs() > 1] == 0)


def test_linear_real_input_gradients():
    # binarize_input=False: the input enters the float product directly, no mask on it.
    gen = generator(15)
    layer = set_random_(BinaryLinear(20, 4, binarize_input=False, dtype=torch.float64), gen, weight_scale=1.5)
    weight = layer.weight.detach()
    x = (random_values((3, 20), gen, dtype=torch.float64) * 1.5).requires_grad_()
    grad = random_values((3, 4), gen, dtype=torch.float64)
    layer(x).backward(grad)
    torch.testing.assert_close(x.grad, grad @ binary_sign(weight))
    torch.testing.assert_close(layer.weight.grad, (grad.T @ x.detach()) * ste_mask(weight))


CONV_GRAD_CASES = (  # in, out, kernel, stride, padding, dilation, groups, (H, W)
    (4, 6, 3, 1, 1, 1, 1, (6, 5)),
    (6, 4, 3, 2, 1, 1, 2, (8, 7)),  # stride 2 with an uneven output: output_padding in conv2d_input
    (8, 8, (3, 2), (2, 1), (1, 2), 2, 4, (9, 8)),
    (3, 5, 1, 1, 0, 1, 1, (4, 4)),
)


@pytest.mark.parametrize("case", CONV_GRAD_CASES, ids=lambda case: f"k{case[2]}-s{case[3]}-g{case[6]}")
def test_conv_ste_gradients_match_autograd_through_reference(case):
    in_channels, out_channels, kernel, stride, padding, dilation, groups, size = case
    gen = generator(16)
    layer = BinaryConv2d(in_channels, out_channels, kernel, stride, padding, dilation, groups, dtype=torch.float64)
    set_random_(layer, gen, weight_scale=1.5)
    x = random_values((2, in_channels, *size), gen, dtype=torch.float64) * 1.5
    x_layer, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    weight_ref = layer.weight.detach().clone().requires_grad_()

    out = layer(x_layer)
    grad = random_values(out.shape, gen, dtype=torch.float64)
    out.backward(grad)

    ph, pw = layer.padding
    signs = F.pad(sign_ste(x_ref), (pw, pw, ph, ph), value=1.0)
    ref = F.conv2d(signs, sign_ste(weight_ref), None, layer.stride, 0, layer.dilation, groups)
    ref.backward(grad)
    torch.testing.assert_close(x_layer.grad, x_ref.grad)
    torch.testing.assert_close(layer.weight.grad, weight_ref.grad)
    torch.testing.assert_close(layer.bias.grad, grad.sum((0, 2, 3)))


# --- packed weight cache -----------------------------------------------------------------


def make_layer(kind: str, gen: torch.Generator, dtype=torch.float32):
    """A small layer of ``kind`` with latent weights near 0 (a step flips many signs) and an input."""
    if kind == "linear":
        layer, x = BinaryLinear(45, 6, dtype=dtype), random_values((4, 45), gen, dtype=dtype)
    else:
        layer, x = (
            BinaryConv2d(36, 6, 3, padding=1, groups=2, dtype=dtype),
            random_values((2, 36, 5, 5), gen, dtype=dtype),
        )
    set_random_(layer, gen, weight_scale=0.01)
    return layer, x


def reference(layer, x):
    return linear_reference(x, layer) if isinstance(layer, BinaryLinear) else conv_reference(x, layer)


KINDS = ("linear", "conv")


@pytest.mark.parametrize("kind", KINDS)
def test_packed_weight_is_cached_in_eval_mode_only(kind):
    layer, _ = make_layer(kind, generator(17))
    assert layer.packed_weight() is not layer.packed_weight()  # training: weights change every step
    layer.eval()
    words = layer.packed_weight()
    assert layer.packed_weight() is words
    layer.train()
    assert layer.packed_weight() is not words  # switching modes clears the cache
    assert words.dtype == torch.int32
    if kind == "linear":
        assert torch.equal(words, pack_signs_reference(layer.weight.detach()))
    else:  # (groups, out / groups, kh * kw * ceil(Cg / 32))
        assert words.shape == (2, 3, 9)


@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.Adam])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_cache_follows_optimizer_step(kind, optimizer, mode):
    layer, x = make_layer(kind, generator(18))
    layer.train(mode == "train")  # the cache lives in eval mode
    opt = optimizer(layer.parameters(), lr=0.5)
    before = layer(x)
    old_words, old_signs = layer.packed_weight(), binary_sign(layer.weight.detach())
    before.square().sum().backward()
    opt.step()
    assert not torch.equal(binary_sign(layer.weight.detach()), old_signs), "the step must flip some signs"
    assert layer.packed_weight() is not old_words
    assert_exact(layer(x), reference(layer, x).detach())


@pytest.mark.parametrize("kind", KINDS)
def test_cache_follows_fused_optimizer_step(kind):
    # attach_weight_clipping hides this (its clamp_ bumps the version); plain fused Adam does not.
    layer, x = make_layer(kind, generator(19))
    opt = torch.optim.Adam(layer.parameters(), lr=0.5, fused=True)
    before = layer(x)
    old_signs = binary_sign(layer.weight.detach())
    before.square().sum().backward()
    opt.step()
    assert not torch.equal(binary_sign(layer.weight.detach()), old_signs)
    assert_exact(layer(x), reference(layer, x).detach())


@pytest.mark.parametrize("kind", KINDS)
def test_cache_follows_writes_through_data(kind):
    layer, x = make_layer(kind, generator(20))
    layer(x)
    layer.weight.data.mul_(-1)
    assert_exact(layer(x), reference(layer, x))


@pytest.mark.parametrize("kind", KINDS)
def test_forward_in_inference_mode(kind):
    layer, x = make_layer(kind, generator(28))
    with torch.inference_mode():
        assert_exact(layer(x), reference(layer, x))


@pytest.mark.parametrize("kind", KINDS)
def test_forward_of_layer_built_in_inference_mode(kind):
    trained, x = make_layer(kind, generator(29))
    with torch.inference_mode():  # an inference-only script: build, load, predict
        layer, _ = make_layer(kind, generator(30))
        layer.load_state_dict(trained.state_dict())
        assert_exact(layer(x), reference(trained, x))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_cache_follows_in_place_update(kind, mode):
    layer, x = make_layer(kind, generator(21))
    layer.train(mode == "train")  # the cache lives in eval mode
    before = layer(x)
    with torch.no_grad():
        layer.weight.mul_(-1)
    after = layer(x)
    assert not torch.equal(after, before)
    assert_exact(after, reference(layer, x))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_cache_follows_load_state_dict(kind, mode):
    layer, x = make_layer(kind, generator(22))
    layer.train(mode == "train")  # the cache lives in eval mode
    other, _ = make_layer(kind, generator(23))
    before = layer(x)
    layer.load_state_dict(other.state_dict())
    after = layer(x)
    assert not torch.equal(after, before)
    assert_exact(after, reference(other, x))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_cache_follows_dtype_conversion(kind, dtype, mode):
    layer, x = make_layer(kind, generator(24))
    layer.train(mode == "train")  # the cache lives in eval mode
    with torch.no_grad():  # underflows to -0.0 in float16, whose sign is +1
        layer.weight.view(-1)[0] = -1e-10
    old_words = layer.packed_weight()
    layer(x)
    layer.to(dtype)
    out = layer(x.to(dtype))
    assert out.dtype == dtype
    assert layer.packed_weight() is not old_words
    assert_exact(out, reference(layer, x.to(dtype)))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip(kind, bias):
    gen = generator(25)
    if kind == "linear":
        make = functools.partial(BinaryLinear, 45, 6, bias=bias)
        x = random_values((4, 45), gen)
    else:
        make = functools.partial(BinaryConv2d, 36, 6, 3, padding=1, groups=2, bias=bias)
        x = random_values((2, 36, 5, 5), gen)
    layer = set_random_(make(), gen)
    layer(x)  # fill the cache: it must not leak into the state dict
    state = layer.state_dict()
    assert set(state) == ({"weight", "bias"} if bias else {"weight"})

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = make()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(fresh(x), layer(x))


# --- errors ------------------------------------------------------------------------------


def test_linear_rejects_wrong_feature_count():
    layer = BinaryLinear(33, 4)
    with pytest.raises(ValueError, match="33 features"):
        layer(torch.randn(2, 32))
    with pytest.raises(ValueError, match="33 features"):
        BinaryLinear(33, 4, binarize_input=False)(torch.randn(2, 34))


def test_conv_rejects_bad_input():
    layer = BinaryConv2d(8, 4, 3)
    with pytest.raises(ValueError, match=r"\(batch, 8, height, width\)"):
        layer(torch.randn(8, 5, 5))
    with pytest.raises(ValueError, match=r"\(batch, 8, height, width\)"):
        layer(torch.randn(2, 6, 5, 5))


@pytest.mark.parametrize(("in_channels", "out_channels", "groups"), [(6, 8, 4), (8, 6, 4), (5, 5, 2)])
def test_conv_rejects_groups_that_do_not_divide(in_channels, out_channels, groups):
    with pytest.raises(ValueError, match="must divide by groups"):
        BinaryConv2d(in_channels, out_channels, 3, groups=groups)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_conv_rejects_string_padding(padding):
    with pytest.raises(ValueError, match="padding must be an int or a pair"):
        BinaryConv2d(4, 4, 3, padding=padding)


def test_extra_repr_names_the_options():
    assert "binarize_input=False" in repr(BinaryLinear(3, 2, binarize_input=False))
    text = repr(BinaryConv2d(4, 8, (3, 2), stride=2, groups=2))
    assert "kernel_size=(3, 2)" in text and "groups=2" in text and "binarize_input=True" in text


# --- Pyro and torch.compile --------------------------------------------------------------


@pytest.fixture
def param_store():
    pyro.clear_param_store()
    with pyro.validation_enabled(True):
        yield pyro.get_param_store()
    pyro.clear_param_store()


def test_svi_step_trains_binary_encoder(param_store):
    """A guide with a binary encoder: one SVI step updates the latent weights.

    ``PyroModule[nn.Sequential]`` runs its children without ``__getattr__``, so plain
    ``nn.Module`` children would be invisible to the param store; ``to_pyro_module_``
    makes them PyroModules (still ``BinaryLinear`` instances) whose parameters register.
    """
    pyro.set_rng_seed(0)
    encoder = PyroModule[torch.nn.Sequential](BinaryLinear(8, 4), torch.nn.BatchNorm1d(4))
    to_pyro_module_(encoder)
    assert isinstance(encoder[0], BinaryLinear)
    gen = generator(26)
    data, obs = random_values((16, 8), gen), random_values((16, 4), gen)

    def model(data, obs):
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([4]).to_event(1))
            pyro.sample("obs", dist.Normal(z, 1.0).to_event(1), obs=obs)

    def guide(data, obs):
        loc = encoder(data)
        with pyro.plate("data", data.shape[0]):
            pyro.sample("z", dist.Normal(loc, 0.5).to_event(1))

    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    before = encoder[0].weight.detach().clone()
    loss = svi.step(data, obs)
    assert torch.isfinite(torch.tensor(loss))
    assert "0.weight" in param_store
    assert not torch.equal(encoder[0].weight.detach(), before)
    assert_exact(encoder[0](data), linear_reference(data, encoder[0]).detach())


# Both warnings come from torch itself under filterwarnings=error: dynamo instantiates
# autograd.Function while tracing, and importing inductor touches torch.jit.script_method.
@pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:.*torch.jit.script_method. is deprecated:DeprecationWarning")
@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_linear_under_torch_compile_matches_eager(compile_backend):
    torch._dynamo.reset()
    gen = generator(27)
    layer = set_random_(BinaryLinear(40, 7), gen, weight_scale=1.5)
    x = random_values((5, 40), gen) * 1.5
    grad = random_values((5, 7), gen)

    def run(module):
        inputs = x.clone().requires_grad_()
        layer.zero_grad()
        out = module(inputs)
        out.backward(grad)
        return out.detach(), inputs.grad, layer.weight.grad.clone(), layer.bias.grad.clone()

    compiled_layer = torch.compile(layer, backend=compile_backend)
    compiled, eager = run(compiled_layer), run(layer)
    assert torch.equal(compiled[0], eager[0])  # integer products plus the same bias: exact
    for got, expected in zip(compiled[1:], eager[1:], strict=True):  # inductor may reorder sums
        torch.testing.assert_close(got, expected)

    # The packed weights are computed inside the compiled graph, never baked in as constants.
    with torch.no_grad():
        layer.weight.mul_(-1)
        assert_exact(compiled_layer(x), linear_reference(x, layer))
    torch._dynamo.reset()
