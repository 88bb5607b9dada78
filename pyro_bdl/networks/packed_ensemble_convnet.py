"""S packed binary ConvNets (posterior samples) evaluated in one pass over the kernels.

:class:`PackedBinaryEnsembleConvNet` stacks the buffers of S :class:`~pyro_bdl.networks.PackedBinaryConvNet`
of one architecture (each with its own weights and folded batch norms) and runs every block
once for all of them, the sample dimension folded into the batch:

* a real first convolution: one float ``conv2d`` with the S weight stacks as S * out output
  channels (the input is shared), pooled, folded per channel, signs packed per sample;
* a binary convolution: the patch words of the S * B feature maps, then one batched
  ``xnor_gemm`` over the S weight stacks ``(S, out, patch words)`` with the per-sample folds
  and sign packing in its epilogue; max pooling on the bits, where sample ``s`` pools channel
  ``c`` by AND if its scale is >= 0 and by OR otherwise. One AND pool serves every sample:
  ``OR(x) = NOT AND(NOT x)``, so the OR channels are flipped (XOR with the sample's mask)
  before the AND and back after;
* a linear block: one batched ``xnor_gemm`` over ``(S, out, KW)``; the last writes float32
  logits (S, B, classes).

Large batches run in passes of ``SAMPLE_ROWS_PER_PASS // S`` images. Sample ``s``'s logits
equal member ``s`` run alone, bit for bit, wherever the float first
convolution rounds alike (exactly when its products are exact, e.g. inputs on a coarse grid).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pyro_bdl.kernels import conv_patch_words, pack_signs, pool_packed_signs
from pyro_bdl.layers.bayes_binary import BayesianBinaryConv2d, BayesianBinaryLinear, batched_xnor_gemm
from pyro_bdl.models.bayes_binary import BayesBinaryConvNet
from pyro_bdl.networks.packed_convnet import PackedBinaryConvNet, export_packed_convnet
from pyro_bdl.networks.packed_ensemble import posterior_mode_convnet, recalibrate_batch_norm

_STACKED = ("words", "signs", "scale", "shift", "and_words")
# Images times samples per pass: larger passes make feature maps of tens of MB, whose fresh pages
# cost more than the arithmetic (measured: 200 MNIST images x 8 samples, 1.4x slower unchunked).
SAMPLE_ROWS_PER_PASS = 256


def _architecture(member: PackedBinaryConvNet) -> tuple:
    """What members must share to be stacked: blocks, geometry, bits and every buffer's shape."""
    shapes = tuple((name, tuple(buffer.shape)) for name, buffer in member.named_buffers())
    return member.kinds, member.geometries, member.bits, member.in_channels, shapes


class PackedBinaryEnsembleConvNet(nn.Module):
    """S packed binary ConvNets in one pass (module docstring); built by :func:`stack_packed_convnets`.

    Buffers per block ``i``: the members' ``words_i`` (S, out, KW), ``scale_i``/``shift_i``
    (S, out), ``and_words_i`` (S, CW) stacked; a real first convolution's ``signs_0``
    (S * out, in, kh, kw), sample-major.

    Shapes: x (B, in_channels, H, W) real -> logits (S, B, classes) float32.
    """

    def __init__(self, members: Sequence[PackedBinaryConvNet]) -> None:
        super().__init__()
        if not members or not all(isinstance(m, PackedBinaryConvNet) for m in members):
            raise TypeError("members must be a non-empty sequence of PackedBinaryConvNet")
        first = members[0]
        for index, member in enumerate(members[1:], start=1):
            if _architecture(member) != _architecture(first):
                raise ValueError(f"members[{index}] has another architecture than members[0]")
        self.num_samples = len(members)
        self.in_channels = first.in_channels
        self.kinds, self.geometries, self.bits = list(first.kinds), list(first.geometries), list(first.bits)
        for index in range(len(self.kinds)):
            for name in _STACKED:
                parts = [getattr(m, f"{name}_{index}") for m in members if hasattr(m, f"{name}_{index}")]
                if parts:
                    stacked = torch.cat(parts) if name == "signs" else torch.stack(parts)
                    self.register_buffer(f"{name}_{index}", stacked)

    def _buffer(self, name: str, index: int) -> torch.Tensor:
        return getattr(self, f"{name}_{index}")

    def _fold(self, index: int, y: torch.Tensor) -> torch.Tensor:
        """y (S, rows, out) -> the block's ``s * y + t`` per sample."""
        return y * self._buffer("scale", index).unsqueeze(1) + self._buffer("shift", index).unsqueeze(1)

    def _real_conv(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Shared real input -> (S * B, H', W', CW) sign words: one float conv with S * out channels."""
        geometry, samples = self.geometries[index], self.num_samples
        y = F.conv2d(x, self._buffer("signs", index).to(x.dtype), None, geometry.stride, geometry.padding,
                     geometry.dilation)  # fmt: skip
        if geometry.pool > 1:
            y = F.max_pool2d(y, geometry.pool)
        batch, _, height, width = y.shape
        y = y.reshape(batch, samples, -1, height, width).permute(1, 0, 3, 4, 2)  # (S, B, H', W', out)
        scale, shift = (self._buffer(name, index).view(samples, 1, 1, 1, -1) for name in ("scale", "shift"))
        return pack_signs((y * scale + shift).float(), check_nan=False).flatten(0, 1)

    def _pool(self, index: int, words: torch.Tensor, window: int) -> torch.Tensor:
        """(S * B, H, W, CW) -> pooled, sample ``s`` by AND where ``and_words[s]`` is set, else by OR."""
        samples = self.num_samples
        flip = (~self._buffer("and_words", index)).view(samples, 1, 1, 1, -1)  # the OR channels
        flipped = (words.unflatten(0, (samples, -1)) ^ flip).flatten(0, 1)
        all_and = torch.full((words.shape[-1],), -1, dtype=torch.int32, device=words.device)
        pooled = pool_packed_signs(flipped, window, all_and)
        return (pooled.unflatten(0, (samples, -1)) ^ flip).flatten(0, 1)

    def _packed_conv(self, index: int, words: torch.Tensor) -> torch.Tensor:
        """(S * B, H, W, CW) -> (S * B, H', W', CW') sign words of the next feature maps."""
        geometry, samples = self.geometries[index], self.num_samples
        columns = conv_patch_words(words.unsqueeze(3), geometry.kernel, **geometry.conv_options()).squeeze(3)
        rows, out_h, out_w, patch = columns.shape
        out = batched_xnor_gemm(columns.reshape(samples, -1, patch), self._buffer("words", index), self.bits[index],
                                scale=self._buffer("scale", index), bias=self._buffer("shift", index),
                                pack_output=True)  # fmt: skip
        out = out.reshape(rows, out_h, out_w, -1)
        return self._pool(index, out, geometry.pool) if geometry.pool > 1 else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be (batch, {self.in_channels}, height, width), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a float tensor, got dtype {x.dtype}")
        rows = max(1, SAMPLE_ROWS_PER_PASS // self.num_samples)
        if x.shape[0] <= rows:
            return self._forward(x)
        return torch.cat([self._forward(chunk) for chunk in x.split(rows)], dim=1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        samples, last = self.num_samples, len(self.kinds) - 1
        words = None
        for index, kind in enumerate(self.kinds):
            if kind == "real_conv":
                words = self._real_conv(index, x)
            elif kind == "conv":
                if words is None:  # a binary first layer binarises the shared input once
                    words = pack_signs(x.permute(0, 2, 3, 1), check_nan=True).repeat(samples, 1, 1, 1)
                words = self._packed_conv(index, words)
            else:
                if words.dim() == 4:  # the flatten: pixel-major words, matched by the permuted weights
                    words = words.reshape(samples, x.shape[0], -1)
                options = {"out_dtype": torch.float32} if index == last else {"pack_output": True}
                words = batched_xnor_gemm(words, self._buffer("words", index), self.bits[index],
                                          scale=self._buffer("scale", index), bias=self._buffer("shift", index),
                                          **options)  # fmt: skip
        return words

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior predictive ``1/S sum_s softmax(f_{W_s}(x))``, (B, classes)."""
        return self(x).softmax(-1).mean(0)


def stack_packed_convnets(members: Sequence[PackedBinaryConvNet]) -> PackedBinaryEnsembleConvNet:
    """One :class:`PackedBinaryEnsembleConvNet` from S packed ConvNets of the same architecture."""
    return PackedBinaryEnsembleConvNet(members)


@torch.no_grad()
def export_packed_ensemble_convnet(net: BayesBinaryConvNet, weights: Sequence[torch.Tensor], *,
                                   calibration: torch.Tensor | None = None) -> PackedBinaryEnsembleConvNet:  # fmt: skip
    """S weight samples of a Bayesian binary ConvNet, packed and stacked for one pass.

    Args:
        net: the trained :class:`~pyro_bdl.models.bayes_binary.BayesBinaryConvNet`.
        weights: per Bayesian binary layer of ``net.blocks``, in order, (S, ...) +-1 draws,
            e.g. ``guide.by_layer(guide.sample_weights(S), layers)``.
        calibration: (n, C, H, W) inputs on which each sampled network's batch-norm statistics
            are re-estimated (:func:`recalibrate_batch_norm`); None keeps ``net``'s running ones.
    """
    binary = [m for m in net.blocks if isinstance(m, BayesianBinaryLinear | BayesianBinaryConv2d)]
    if len(weights) != len(binary):
        raise ValueError(f"weights must hold one (S, ...) tensor per binary layer ({len(binary)}), got {len(weights)}")
    members = []
    for s in range(weights[0].shape[0]):
        member = posterior_mode_convnet(net, [w[s] for w in weights])
        if calibration is not None:
            recalibrate_batch_norm(member, calibration)
        members.append(export_packed_convnet(member))
    return stack_packed_convnets(members)


__all__ = ["PackedBinaryEnsembleConvNet", "export_packed_ensemble_convnet", "stack_packed_convnets"]
