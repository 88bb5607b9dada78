"""Linear maps and convolutions whose weights may carry extra leading (sample) dimensions.

Pyro draws a weight site inside outer plates (``Predictive(parallel=True)``,
``vectorize_particles=True``, importance sampling) with batch dimensions in front of its
event shape. Weights are global latents, so they sit outside the data plate, whose dim
(-1, the rightmost batch dim) has size 1 in their batch shape:

=============  =========================================  ========================================
tensor         plain                                      with sample dims ``S`` (``P`` particles)
=============  =========================================  ========================================
linear weight  ``(out, in)``                              ``(*S, 1, out, in)``
linear bias    ``(out,)``                                 ``(*S, 1, out)``
linear input   ``(*T, N, in)``                            ``(*T, N, in)``
linear output  ``(*T, N, out)``                           ``(*broadcast(S, T), N, out)``
conv weight    ``(C_out, C_in / groups, *kernel)``        ``(*S, 1, C_out, C_in / groups, *kernel)``
conv input     ``(*T, N, C_in, *spatial)``                same
conv output    ``(*T, N, C_out, *spatial_out)``           ``(*broadcast(S, T), N, C_out, *spatial_out)``
=============  =========================================  ========================================

Without sample dims these are ``F.linear`` / ``F.conv{1,2,3}d``; with them, one matmul (a
grouped convolution for conv) evaluates every sample's network at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _sample_dims(name: str, tensor: torch.Tensor, event_ndim: int) -> torch.Size:
    """The sample dims of a weight or bias (its dims left of the data-plate dim of size 1)."""
    extra = tensor.dim() - event_ndim
    if extra == 0:
        return torch.Size()
    if tensor.shape[-event_ndim - 1] != 1:
        raise ValueError(
            f"{name} of shape {tuple(tensor.shape)} has sample dims whose rightmost (the data plate's) has size "
            f"{tensor.shape[-event_ndim - 1]}, expected 1: weights are global and must be drawn outside the data plate"
        )
    return tensor.shape[: extra - 1]


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight^T + bias``, broadcasting sample dims of ``weight``/``bias`` (shapes in the module docstring)."""
    if weight.dim() == 2 and (bias is None or bias.dim() == 1):
        return F.linear(x, weight, bias)
    sample = _sample_dims("weight", weight, 2)
    out = torch.matmul(x, weight.reshape(*sample, *weight.shape[-2:]).transpose(-1, -2))
    if bias is not None:
        out = out + bias.reshape(*_sample_dims("bias", bias, 1), 1, bias.shape[-1])
    return out


def conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, stride=1, padding=0, dilation=1,
    groups: int = 1, spatial_ndim: int,
) -> torch.Tensor:  # fmt: skip
    """N-d convolution with ``F.conv{spatial_ndim}d`` semantics, broadcasting sample dims (module docstring).

    ``x`` is ``(*T, N, C_in, *spatial)`` with any number of leading dims ``T``.
    """
    fn = _CONV[spatial_ndim]
    event_ndim = spatial_ndim + 2
    sample = _sample_dims("weight", weight, event_ndim)
    bias_sample = _sample_dims("bias", bias, 1) if bias is not None else torch.Size()
    if x.dim() < spatial_ndim + 2:
        raise ValueError(
            f"input must be (*batch, N, C, *spatial) with {spatial_ndim} spatial dims, got {tuple(x.shape)}"
        )
    lead, (n, c_in), spatial = x.shape[:-event_ndim], x.shape[-event_ndim:-spatial_ndim], x.shape[-spatial_ndim:]
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation}
    if not sample and not bias_sample:
        out = fn(x.reshape(-1, c_in, *spatial), weight, bias, groups=groups, **kwargs)
        return out.reshape(*lead, n, *out.shape[1:])
    batch = torch.broadcast_shapes(lead, sample, bias_sample)
    p = batch.numel()
    kernel = weight.shape[-event_ndim:]
    w = weight.reshape(*sample, *kernel).expand(*batch, *kernel).reshape(p * kernel[0], *kernel[1:])
    b = None
    if bias is not None:
        b = bias.reshape(*bias_sample, kernel[0]).expand(*batch, kernel[0]).reshape(p * kernel[0])
    # (P, N, C, *sp) -> (N, P * C, *sp): every sample becomes its own group of channels.
    xs = x.expand(*batch, n, c_in, *spatial).reshape(p, n, c_in, *spatial).transpose(0, 1)
    out = fn(xs.reshape(n, p * c_in, *spatial), w, b, groups=p * groups, **kwargs)
    out = out.reshape(n, p, kernel[0], *out.shape[2:]).transpose(0, 1)
    return out.reshape(*batch, n, *out.shape[2:])
