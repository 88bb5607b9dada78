"""Posterior predictive of a Bayesian binary MLP on the XNOR kernels, and its posterior-mode export.

:class:`PackedBinaryEnsembleMLP` holds S weight samples of every layer, packed once, and the
folded batch norms (``s = gamma / sqrt(var + eps)``, ``t = beta - mean * s``, shared by the
samples or one per sample). One forward pass evaluates all S networks:

* first layer (input shared by the samples), with the S weight matrices stacked
  ``[W_1; ...; W_S]`` (S * H rows):

  - uint8 pixels ``p`` (mapped to ``x = low + (high - low) p / 255`` in training,
    ``input_range``): BinaryNet's bit planes, ``p . w = sum_j 2^j (b_j . w)``, each plane an
    AND-popcount with the packed signs, exact in integers; the map folds into the epilogue,
    ``x . w = (high - low) / 255 * (p . w) + low * sum_k w_k``. On the CPU the whole S-network
    forward is then ONE compiled call (:mod:`triton_kernels.cpu_mlp`); elsewhere (a GPU, or no
    numba) :func:`~triton_kernels.pixel_gemm` on the stacked words and the batched products below.
  - real inputs: one float product ``x @ [W_1; ...; W_S]^T`` (B, S * H), folded, signs packed.

* every later layer: one batched ``xnor_gemm`` over the S stacked packed weight matrices
  ``(S, N, KW)``, the folded batch norm and sign packing in its epilogue; the last one writes
  float32 logits ``(S, B, classes)``.

The two first-layer routes agree up to the float rounding of the first fold (a unit whose
pre-activation is within that rounding of 0 may take the other sign); uint8 inputs are never
made from floats here (``first_layer="bitplane"`` with real inputs is an error).

:meth:`PackedBinaryEnsembleMLP.predict_proba` averages the S softmaxes, ``p(y | x) ~= 1/S
sum_s softmax(f_{W_s}(x))``, the Monte Carlo posterior predictive.

:func:`posterior_mode_mlp` and :func:`posterior_mode_convnet` turn the guide's mode
``sign(logits)`` into the deterministic :class:`~pyro_bdl.networks.BinaryNetMLP` / binary
``nn.Sequential``, which :func:`~pyro_bdl.networks.export_packed_mlp` /
:func:`~pyro_bdl.networks.export_packed_convnet` pack as any trained BinaryNet.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyro_bdl.kernels import (
    cpu_gemm_path,
    make_packed_mlp_plan,
    num_words,
    pack_signs,
    packed_mlp_cpu,
    pixel_gemm,
    plan_arrays,
)
from pyro_bdl.layers.bayes_binary import BayesianBinaryConv2d, BayesianBinaryLinear, batched_xnor_gemm
from pyro_bdl.layers.binary import BinaryConv2d, BinaryLinear
from pyro_bdl.models.bayes_binary import BayesBinaryConvNet, BayesBinaryMLP
from pyro_bdl.networks.binarynet import BinaryNetMLP
from pyro_bdl.networks.packed import fold_batch_norm
from pyro_bdl.validation import check_choice

FIRST_LAYER_ROUTES = ("auto", "bitplane", "float")


def _check_signs(name: str, weights: torch.Tensor, shape: torch.Size, sample_dims: int) -> torch.Tensor:
    if not isinstance(weights, torch.Tensor) or weights.dim() != len(shape) + sample_dims or (
            tuple(weights.shape[sample_dims:]) != tuple(shape)):  # fmt: skip
        expected = ("S, " if sample_dims else "") + ", ".join(map(str, shape))
        raise ValueError(f"{name} must have shape ({expected}), got {tuple(getattr(weights, 'shape', ()))}")
    if not bool(((weights == 1) | (weights == -1)).all()):
        raise ValueError(f"{name} must hold only -1 and +1")
    return weights.detach()


class PackedBinaryEnsembleMLP(nn.Module):
    """S binary MLPs on packed weights, evaluated together (module docstring). Built by :func:`export_packed_ensemble`.

    Buffers: ``first_weight`` (S * H, in_features) float32, the first layer's stacked +-1
    weights; per later layer ``words_i`` (S, out, ceil(in / 32)) int32; per layer ``scale_i``,
    ``shift_i`` (out,) float32 shared by the samples, or (S, out), one fold per sample. Derived
    (not saved; remade by ``load_state_dict`` and :meth:`refresh`): ``first_words`` (S * H, ceil(in / 32)) int32 and
    the pixel fold ``pixel_scale``, ``pixel_shift`` (S * H,).

    Shapes: x (B, in_features) uint8 pixels or real values -> :meth:`forward` logits (S, B,
    classes) float32.

    Args:
        input_range: ``(low, high)``, the real values that pixels 0 and 255 stood for in training.
        first_layer: ``"auto"`` (bit planes for uint8 pixels, the float product for real
            inputs), ``"bitplane"`` (uint8 pixels required) or ``"float"`` (pixels mapped to
            ``input_range`` first).
    """

    def __init__(self, first_weight: torch.Tensor, layers: list[tuple[torch.Tensor, int]],
                 folds: list[tuple[torch.Tensor, torch.Tensor]], input_range=(-1.0, 1.0),
                 first_layer: str = "auto") -> None:  # fmt: skip
        super().__init__()
        self.first_layer = check_choice("first_layer", first_layer, FIRST_LAYER_ROUTES)
        self.input_range = (float(input_range[0]), float(input_range[1]))
        if not self.input_range[0] < self.input_range[1]:
            raise ValueError(f"input_range must be (low, high) with low < high, got {input_range}")
        self.in_features = first_weight.shape[-1]
        self.widths = [fold[0].shape[-1] for fold in folds]
        self.register_buffer("first_weight", first_weight.float())
        for index, (words, k) in enumerate(layers, start=1):
            if words.shape[-1] != num_words(k):
                raise ValueError(f"layer {index}: {words.shape[-1]} words cannot hold k={k} signs")
            self.register_buffer(f"words_{index}", words)
        for index, (scale, shift) in enumerate(folds):
            self.register_buffer(f"scale_{index}", scale)
            self.register_buffer(f"shift_{index}", shift)
        self.num_samples = first_weight.shape[0] // self.widths[0]
        self.depth = len(folds)
        for name in ("first_words", "pixel_scale", "pixel_shift"):
            self.register_buffer(name, torch.empty(0), persistent=False)
        self.refresh()
        self.register_load_state_dict_post_hook(lambda module, _: module.refresh())

    def refresh(self) -> None:
        """Remake the derived buffers (the first layer's sign words, the pixel fold ``s (high - low) / 255``,
        ``t + s low sum_k w_k``) and drop the compiled plan; ``load_state_dict`` calls it, call it after
        editing buffers in place."""
        samples, hidden = self.num_samples, self.widths[0]
        low, high = self.input_range
        scale = self.scale_0.float().expand(samples, hidden).reshape(-1)
        shift = self.shift_0.float().expand(samples, hidden).reshape(-1)
        self.first_words = pack_signs(self.first_weight, check_nan=False)
        self.pixel_scale = scale * ((high - low) / 255.0)
        self.pixel_shift = shift + scale * (low * self.first_weight.sum(-1))
        self._plan: tuple | None = None

    def _later_layers(self) -> list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]]:
        return [(getattr(self, f"words_{i}"), self.widths[i - 1], getattr(self, f"scale_{i}"),
                 getattr(self, f"shift_{i}")) for i in range(1, self.depth)]  # fmt: skip

    def _compiled_plan(self):
        """The compiled CPU forward's operands, made on first use and again when the buffers were replaced
        (``.to``, ``load_state_dict``: ``first_words`` and ``pixel_scale`` are then new tensors)."""
        key = (self.first_words, self.pixel_scale)
        if self._plan is None or self._plan[0][0] is not key[0] or self._plan[0][1] is not key[1]:
            plan = make_packed_mlp_plan(self.first_words, self.in_features, self.pixel_scale, self.pixel_shift,
                                        self._later_layers(), self.num_samples)  # fmt: skip
            self._plan = (key, plan_arrays(plan, self.num_samples), plan)
        return self._plan[1]

    def _route(self, x: torch.Tensor) -> str:
        """``"bitplane"`` or ``"float"`` for input ``x`` (checked)."""
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must be (batch, {self.in_features}), got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            return "float" if self.first_layer == "float" else "bitplane"
        if not x.is_floating_point():
            raise ValueError(f"x must be uint8 pixels or a float tensor, got dtype {x.dtype}")
        if self.first_layer == "bitplane":
            raise ValueError(f"first_layer='bitplane' needs x as uint8 pixels 0-255, got dtype {x.dtype}; "
                             "pass the raw pixels or use first_layer='auto'")  # fmt: skip
        return "float"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        route = self._route(x)
        batch, samples, hidden = x.shape[0], self.num_samples, self.widths[0]
        if route == "bitplane":
            if x.device.type == "cpu" and cpu_gemm_path() == "numba" and batch > 0:
                return packed_mlp_cpu(x, self._compiled_plan())
            h = pixel_gemm(x, self.first_words, self.in_features, scale=self.pixel_scale, bias=self.pixel_shift,
                           out_dtype=torch.float32)  # fmt: skip
            h = h.reshape(batch, samples, hidden).transpose(0, 1)
        else:
            if x.dtype == torch.uint8:
                low, high = self.input_range
                x = x.float() * ((high - low) / 255.0) + low
            h = (x.float() @ self.first_weight.T).reshape(batch, samples, hidden).transpose(0, 1)
            h = h * self.scale_0.unsqueeze(-2) + self.shift_0.unsqueeze(-2)  # (S, B, H); folds (H,) or (S, H)
        if self.depth == 1:
            return h.contiguous()
        signs = pack_signs(h, check_nan=False)
        for index, (words, k, scale, shift) in enumerate(self._later_layers(), start=1):
            options = {"out_dtype": torch.float32} if index == self.depth - 1 else {"pack_output": True}
            signs = batched_xnor_gemm(signs, words, k, scale=scale, bias=shift, **options)
        return signs

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior predictive ``1/S sum_s softmax(f_{W_s}(x))``, (B, classes)."""
        return self(x).softmax(-1).mean(0)


def _mlp_parts(net: BayesBinaryMLP) -> tuple[list[BayesianBinaryLinear], list[nn.BatchNorm1d]]:
    if not isinstance(net, BayesBinaryMLP):
        raise TypeError(f"net must be a BayesBinaryMLP, got {type(net).__name__}")
    return list(net.layers), list(net.norms)


@torch.no_grad()
def recalibrate_batch_norm(module: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> nn.Module:
    """Re-estimate the running mean and variance of every batch norm in ``module`` on ``x``, in place (eval mode after).

    The statistics are the exact averages over the batches of ``x`` (``momentum=None``), as
    ``torch.optim.swa_utils.update_bn`` computes them. ``x``: (n, ...) inputs of ``module``.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    module.train()
    for start in range(0, x.shape[0], batch_size):
        module(x[start : start + batch_size])
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    return module.eval()


def export_packed_ensemble(net: BayesBinaryMLP, weights: Sequence[torch.Tensor], *,
                           calibration: torch.Tensor | None = None, input_range=(-1.0, 1.0),
                           first_layer: str = "auto") -> PackedBinaryEnsembleMLP:  # fmt: skip
    """Pack S weight samples of every layer of ``net`` once and fold its batch norms.

    Args:
        net: the trained :class:`~pyro_bdl.models.bayes_binary.BayesBinaryMLP`.
        weights: per layer, in ``net.layers`` order, (S, out, in) +-1 draws, e.g.
            ``guide.by_layer(guide.sample_weights(S), net.layers)``.
        calibration: (n, in_features) inputs (training images) on which each sampled network's
            batch-norm statistics are re-estimated (:func:`recalibrate_batch_norm`), giving each
            sample its own fold ``(S, out)``; None folds ``net``'s running statistics, which
            training averaged over the changing weight samples, into one shared fold.
        input_range: ``(low, high)``, the real values uint8 pixels 0 and 255 were mapped to in
            training (for uint8 inputs; :class:`PackedBinaryEnsembleMLP`).
        first_layer: ``"auto"``, ``"bitplane"`` or ``"float"`` (:class:`PackedBinaryEnsembleMLP`).

    Returns:
        A :class:`PackedBinaryEnsembleMLP`. Without ``calibration``, sample ``s``'s logits equal
        ``net``'s in eval mode with the weights ``weights[i][s]``, up to the float rounding of the
        folded batch norms; with it, those of :func:`posterior_mode_mlp` of that sample after
        :func:`recalibrate_batch_norm` on ``calibration``.
    """
    layers, norms = _mlp_parts(net)
    if len(weights) != len(layers):
        raise ValueError(f"weights must hold one (S, out, in) tensor per layer ({len(layers)}), got {len(weights)}")
    samples = weights[0].shape[0] if isinstance(weights[0], torch.Tensor) and weights[0].dim() == 3 else None
    checked = []
    for index, (layer, w) in enumerate(zip(layers, weights, strict=True)):
        w = _check_signs(f"weights[{index}]", w, layer.weight_shape, 1)
        if w.shape[0] != samples:
            raise ValueError(f"weights[{index}] has {w.shape[0]} samples, weights[0] has {samples}")
        checked.append(w)
    if calibration is None:
        folds = [fold_batch_norm(norm, layer.bias) for layer, norm in zip(layers, norms, strict=True)]
    else:
        per_sample = []
        for s in range(samples):
            twin = recalibrate_batch_norm(posterior_mode_mlp(net, [w[s] for w in checked]), calibration)
            per_sample.append([fold_batch_norm(norm, layer.bias) for layer, norm in zip(twin.layers, twin.norms,
                                                                                          strict=True)])  # fmt: skip
        folds = [(torch.stack([sample[i][0] for sample in per_sample]), torch.stack([sample[i][1] for sample in
                 per_sample])) for i in range(len(layers))]  # fmt: skip
    first = checked[0].reshape(-1, layers[0].in_features)  # (S * H, in): sample-major rows
    packed = [(pack_signs(w, check_nan=False), layer.in_features) for layer, w in zip(layers[1:], checked[1:],
                                                                                        strict=True)]  # fmt: skip
    return PackedBinaryEnsembleMLP(first, packed, folds, input_range, first_layer)


def _copy_norm(norm: nn.modules.batchnorm._BatchNorm, kind: type) -> nn.Module:
    copy = kind(norm.num_features, eps=norm.eps, momentum=norm.momentum)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(copy, name).copy_(getattr(norm, name).detach())
    return copy.to(norm.running_mean.device)


def _binary_twin(layer: BayesianBinaryLinear | BayesianBinaryConv2d, weight: torch.Tensor) -> nn.Module:
    """The deterministic binary layer with latent weights ``weight`` (+-1) and ``layer``'s geometry and bias."""
    if isinstance(layer, BayesianBinaryLinear):
        twin = BinaryLinear(layer.in_features, layer.out_features, layer.bias is not None, layer.binarize_input)
    else:
        twin = BinaryConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                            layer.dilation, layer.groups, layer.bias is not None, layer.binarize_input)  # fmt: skip
    with torch.no_grad():
        twin.weight.copy_(_check_signs("weight", weight, layer.weight_shape, 0))
        if layer.bias is not None:
            twin.bias.copy_(layer.bias.detach())
    return twin.to(weight.device)


def posterior_mode_mlp(net: BayesBinaryMLP, weights: Sequence[torch.Tensor]) -> BinaryNetMLP:
    """``net`` with fixed +-1 weights (e.g. ``guide.by_layer(guide.mode(), net.layers)``) as a :class:`BinaryNetMLP`.

    The result has no dropout, ``net``'s batch norms, and is in eval mode; pass it to
    :func:`~pyro_bdl.networks.export_packed_mlp` for the packed single network.
    """
    layers, norms = _mlp_parts(net)
    if len(weights) != len(layers):
        raise ValueError(f"weights must hold one (out, in) tensor per layer ({len(layers)}), got {len(weights)}")
    mlp = BinaryNetMLP(net.in_features, net.hidden, net.depth, net.num_classes, 0.0, 0.0)
    mlp.layers = nn.ModuleList(_binary_twin(layer, w) for layer, w in zip(layers, weights, strict=True))
    mlp.norms = nn.ModuleList(_copy_norm(norm, nn.BatchNorm1d) for norm in norms)
    return mlp.eval()


def posterior_mode_convnet(net: BayesBinaryConvNet, weights: Sequence[torch.Tensor]) -> nn.Sequential:
    """``net`` with fixed +-1 weights as a deterministic binary ``nn.Sequential`` (eval mode).

    The blocks follow :func:`~pyro_bdl.networks.export_packed_convnet`'s pattern, so that
    function packs the result. ``weights``: one tensor per Bayesian binary layer of
    ``net.blocks``, in order.
    """
    if not isinstance(net, BayesBinaryConvNet):
        raise TypeError(f"net must be a BayesBinaryConvNet, got {type(net).__name__}")
    binary = [m for m in net.blocks if isinstance(m, BayesianBinaryLinear | BayesianBinaryConv2d)]
    if len(weights) != len(binary):
        raise ValueError(f"weights must hold one tensor per binary layer ({len(binary)}), got {len(weights)}")
    fixed = iter(weights)
    modules: list[nn.Module] = []
    for module in net.blocks:
        if isinstance(module, BayesianBinaryLinear | BayesianBinaryConv2d):
            modules.append(_binary_twin(module, next(fixed)))
        elif isinstance(module, nn.MaxPool2d):
            modules.append(nn.MaxPool2d(module.kernel_size, module.stride))
        elif isinstance(module, nn.BatchNorm2d):
            modules.append(_copy_norm(module, nn.BatchNorm2d))
        elif isinstance(module, nn.BatchNorm1d):
            modules.append(_copy_norm(module, nn.BatchNorm1d))
        elif isinstance(module, nn.Flatten):
            modules.append(nn.Flatten())
        else:
            raise TypeError(f"unexpected module {type(module).__name__} in the ConvNet")
    return nn.Sequential(*modules).eval()


__all__ = [
    "PackedBinaryEnsembleMLP",
    "export_packed_ensemble",
    "posterior_mode_convnet",
    "posterior_mode_mlp",
    "recalibrate_batch_norm",
]
