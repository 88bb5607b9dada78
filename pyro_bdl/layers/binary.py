"""Binarised layers (BinaryNet; Courbariaux et al. 2016) on the XNOR-popcount kernels.

Forward: the latent real weights, and by default the incoming activations, are binarised
with ``sign`` (``sign(0) = +1``, as the packing convention has it), and the product is
computed from packed sign words by :func:`triton_kernels.xnor_gemm` (Triton on CUDA, the
fast CPU path on CPU). The result equals the float product of the +-1 operands exactly.

Backward: the straight-through estimator of the paper, ``g_r = g_q * 1{|r| <= 1}`` (the
derivative of hard tanh), for inputs and latent weights alike, computed with float
products of the +-1 operands. With the weights clipped to [-1, 1] after every step (see
:mod:`pyro_bdl.layers.binary_training`) the weight mask is always 1, as in the paper.

Convolution padding: the binarised input is padded with **+1** (equivalently, the real
input is zero-padded before ``sign``, since ``sign(0) = +1``). A packed sign word of 0 is
32 times +1, so padding costs nothing in the packed domain (the patch words come from
:func:`triton_kernels.conv_patch_words`), and :func:`binary_conv2d_reference` states the same
semantics with ``torch.nn.functional``. An empty batch gives an empty output, as ``nn.Conv2d``
does; an input smaller than the kernel (after padding) is a ``ValueError`` naming both sizes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pyro_bdl.kernels import (
    check_conv_input_size,
    conv_output_size,
    conv_patch_words,
    conv_weight_words,
    pack_signs,
    patch_bits,
    xnor_gemm,
)
from pyro_bdl.validation import check_int, check_pair


def binary_sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where ``x >= 0`` (NaN too), -1 where ``x < 0``; same shape and dtype as ``x``."""
    return torch.where(x < 0, -1.0, 1.0).to(x.dtype)


def _ste_mask(x: torch.Tensor) -> torch.Tensor:
    return (x.abs() <= 1).to(x.dtype)


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * _ste_mask(x)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """``sign`` forward, hard-tanh straight-through gradient backward; any shape."""
    return _SignSTE.apply(x)


class SignSTE(nn.Module):
    """Binary activation: :func:`sign_ste` as a module (BinaryNet's ``binary_tanh``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sign_ste(x)


class _PackedWeightCache:
    """Packed weights of a layer in eval mode, reused until the latent weights change.

    Only eval mode caches: in training the weights change every step, and some updates
    (fused optimizers, writes through ``weight.data``) do not bump the version counter
    that the cache key relies on. Switching modes clears the cache. Inference tensors
    have no version counter and are packed on every call.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.words: torch.Tensor | None = None

    def clear(self) -> None:
        self.key, self.words = None, None

    def get(self, weight: torch.Tensor, pack, enabled: bool) -> torch.Tensor:
        if not enabled or torch.compiler.is_compiling() or weight.is_inference():
            return pack(weight.detach())
        key = (weight._version, weight.data_ptr(), weight.device, weight.dtype, weight.shape)
        if key != self.key or self.words is None:
            self.words = pack(weight.detach())
            self.key = key
        return self.words


class _BinaryLayer(nn.Module):
    """Base of the binary layers: latent weights, optional bias, and ``packed_weight()``.

    The packed weights are cached in eval mode and the cache is cleared on ``train()``/``eval()``.
    """

    def _create_parameters(self, weight_shape: tuple[int, ...], bias: bool, factory: dict) -> None:
        self.weight = nn.Parameter(torch.empty(*weight_shape, **factory))
        self.bias = nn.Parameter(torch.empty(weight_shape[0], **factory)) if bias else None
        self._weight_cache = _PackedWeightCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Latent weights uniform in [-1, 1] (BinaryNet, H = 1); bias 0."""
        nn.init.uniform_(self.weight, -1.0, 1.0)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _pack_weight(self, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def packed_weight(self) -> torch.Tensor:
        """The weights' int32 sign words, as the XNOR kernel reads them (cached in eval mode)."""
        return self._weight_cache.get(self.weight, self._pack_weight, enabled=not self.training)

    def train(self, mode: bool = True):
        self._weight_cache.clear()
        return super().train(mode)


class _BinaryLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, weight_words: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        words = pack_signs(x.detach(), check_nan=False)
        out_dtype = x.dtype if x.dtype in (torch.float16, torch.bfloat16) else torch.float32
        return xnor_gemm(words, weight_words, x.shape[-1], out_dtype=out_dtype).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ binary_sign(weight)) * _ste_mask(x)
        if ctx.needs_input_grad[1]:
            flat_grad = grad.reshape(-1, grad.shape[-1])
            flat_signs = binary_sign(x).reshape(-1, x.shape[-1])
            grad_w = (flat_grad.T @ flat_signs) * _ste_mask(weight)
        return grad_x, grad_w, None


class BinaryLinear(_BinaryLayer):
    """``nn.Linear`` with binary weights and, by default, binary inputs.

    ``in_features``, ``out_features``, ``bias``, ``device`` and ``dtype`` are as for ``nn.Linear``.

    Args:
        binarize_input: binarise the input with ``sign`` and multiply on the XNOR kernel;
            ``False`` keeps real inputs (BinaryNet's first layer): a float product with
            the binary weights.

    Shapes: input (..., in_features) -> output (..., out_features).
    Latent weights start uniform in [-1, 1] (BinaryNet, H = 1); bias starts at 0.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        binarize_input: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features = check_int("in_features", in_features)
        self.out_features = check_int("out_features", out_features)
        self.binarize_input = binarize_input
        self._create_parameters((out_features, in_features), bias, factory)

    def _pack_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """(out_features, in_features) -> (out_features, ceil(in_features / 32)) int32."""
        return pack_signs(weight, check_nan=False)

    def forward_real(self, x: torch.Tensor) -> torch.Tensor:
        """Real-valued input times the binary weights (float product, STE on the weights)."""
        return F.linear(x, sign_ste(self.weight), self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input must have {self.in_features} features in its last dimension, got {tuple(x.shape)}")
        if not self.binarize_input:
            return self.forward_real(x)
        out = _BinaryLinearFunction.apply(x, self.weight, self.packed_weight())
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, binarize_input={self.binarize_input}"
        )


def _conv_input_words(x: torch.Tensor, geometry: dict) -> torch.Tensor:
    """x (B, C, H, W) -> sign words of every patch, (B * OH * OW, groups, kh * kw * CWg).

    Channels of each group are packed per pixel, then patches gather whole words.
    """
    batch, channels, height, width = x.shape
    groups = geometry["groups"]
    per_pixel = x.detach().permute(0, 2, 3, 1).reshape(batch, height, width, groups, channels // groups)
    options = {name: geometry[name] for name in ("stride", "padding", "dilation")}
    columns = conv_patch_words(pack_signs(per_pixel, check_nan=False), geometry["kernel"], **options)
    return columns.flatten(0, 2)


class _BinaryConv2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, weight_words: torch.Tensor, geometry: dict):
        ctx.save_for_backward(x, weight)
        ctx.geometry = geometry
        batch, _, height, width = x.shape
        groups, (kh, kw) = geometry["groups"], geometry["kernel"]
        columns = _conv_input_words(x, geometry)
        # Word padding inside each tap is 0 in both operands: it agrees, adding +1 per bit.
        bits, spare = patch_bits(weight.shape[1], kh * kw)
        outputs = [xnor_gemm(columns[:, g], weight_words[g], bits) - spare for g in range(groups)]
        out_h, out_w = (
            conv_output_size(size, kernel, stride, padding, dilation)
            for size, kernel, stride, padding, dilation in zip(
                (height, width), geometry["kernel"], geometry["stride"], geometry["padding"], geometry["dilation"],
                strict=True,
            )
        )  # fmt: skip
        out = torch.cat(outputs, dim=1).reshape(batch, out_h, out_w, weight.shape[0]).permute(0, 3, 1, 2)
        return out.to(x.dtype).contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        geometry = ctx.geometry
        ph, pw = geometry["padding"]
        signs = F.pad(binary_sign(x), (pw, pw, ph, ph), value=1.0)
        conv = {
            "stride": geometry["stride"],
            "padding": 0,
            "dilation": geometry["dilation"],
            "groups": geometry["groups"],
        }
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_padded = torch.nn.grad.conv2d_input(signs.shape, binary_sign(weight), grad, **conv)
            grad_x = grad_padded[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]] * _ste_mask(x)
        if ctx.needs_input_grad[1]:
            grad_w = torch.nn.grad.conv2d_weight(signs, weight.shape, grad, **conv) * _ste_mask(weight)
        return grad_x, grad_w, None, None


def binary_conv2d_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """Float specification of the binary convolution: +1 padding of ``sign(x)``, then conv."""
    ph, pw = check_pair("padding", padding, minimum=0)
    signs = F.pad(binary_sign(x), (pw, pw, ph, ph), value=1.0)
    stride, dilation = check_pair("stride", stride), check_pair("dilation", dilation)
    return F.conv2d(signs, binary_sign(weight), None, stride, 0, dilation, groups)


class BinaryConv2d(_BinaryLayer):
    """``nn.Conv2d`` with binary weights and, by default, binary inputs (+1 padding).

    ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``, ``padding``, ``dilation``,
    ``groups``, ``bias``, ``device`` and ``dtype`` are as for ``nn.Conv2d`` (integer padding only).

    Args:
        binarize_input: binarise the input and convolve on the XNOR kernel (padding with
            +1, see the module docstring); ``False`` keeps real inputs and ordinary zero
            padding (BinaryNet's first layer).

    Shapes: input (batch, in_channels, H, W) -> output (batch, out_channels, H', W').
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        binarize_input: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels)
        check_int("out_channels", out_channels)
        check_int("groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must divide by groups ({groups})"
            )
        factory = {"device": device, "dtype": dtype}
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = check_pair("kernel_size", kernel_size), check_pair("stride", stride)
        self.padding, self.dilation = check_pair("padding", padding, minimum=0), check_pair("dilation", dilation)
        self.binarize_input = binarize_input
        self._create_parameters((out_channels, in_channels // groups, *self.kernel_size), bias, factory)

    def _geometry(self) -> dict:
        return {
            "kernel": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
        }

    def _pack_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """(O, Cg, kh, kw) -> (groups, O / groups, kh * kw * ceil(Cg / 32)) int32, tap-major."""
        return conv_weight_words(weight, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input must be (batch, {self.in_channels}, height, width), got {tuple(x.shape)}")
        check_conv_input_size(x.shape[2], x.shape[3], self.kernel_size, self.padding, self.dilation)
        if self.binarize_input:
            out = _BinaryConv2dFunction.apply(x, self.weight, self.packed_weight(), self._geometry())
        else:
            out = F.conv2d(x, sign_ste(self.weight), None, self.stride, self.padding, self.dilation, self.groups)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"bias={self.bias is not None}, binarize_input={self.binarize_input}"
        )


def glorot_lr_scale(layer: BinaryLinear | BinaryConv2d) -> float:
    """BinaryNet's per-layer learning-rate factor, 1 / sqrt(1.5 / (fan_in + fan_out)).

    The paper's code scales each binary layer's learning rate by the inverse of its Glorot
    uniform bound (with H = 1), so wide layers move their latent weights faster.
    """
    receptive = math.prod(layer.weight.shape[2:]) if layer.weight.dim() > 2 else 1
    fan_in = layer.weight.shape[1] * receptive
    fan_out = layer.weight.shape[0] * receptive
    return 1.0 / math.sqrt(1.5 / (fan_in + fan_out))
