"""Tour section: a BinaryNet MLP (Courbariaux et al. 2016) trained briefly, exported to packed sign words.

``BinaryNetMLP`` trains with latent real weights and straight-through signs; ``export_packed_mlp``
turns it into ``PackedBinaryMLP``, whose products run on the XNOR-popcount kernels (Triton on a
GPU, the compiled CPU GEMM otherwise) with batch norm folded into each layer's epilogue. Both are
scored on the test digits, and their batch-1 latency is set against the same network computed
with dense float32 products of the +-1 weights.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pyro_bdl.data import to_float
from pyro_bdl.evaluation import classification_error
from pyro_bdl.layers import attach_weight_clipping, binarynet_param_groups
from pyro_bdl.layers.binary import binary_sign
from pyro_bdl.networks import BinaryNetMLP, export_packed_mlp, fold_batch_norm, square_hinge_loss
from pyro_bdl.tour.core import Budget, Section
from pyro_bdl.tour.data import TourData

HIDDEN, DEPTH = 1024, 2


def dense_float32(model: BinaryNetMLP) -> Callable[[torch.Tensor], torch.Tensor]:
    """The trained network as dense float32 products of the +-1 weights, batch norm folded:
    ``h_0 = x``, ``a_l = (sign(h_{l-1}) W_l^T) * s_l + t_l`` (no sign on the real input), scores ``a_L``."""
    folded = [
        (binary_sign(layer.weight.detach()).float(), *fold_batch_norm(norm, layer.bias))
        for layer, norm in zip(model.layers, model.norms, strict=True)
    ]

    def forward(x: torch.Tensor) -> torch.Tensor:
        h = x
        for index, (weight, scale, shift) in enumerate(folded):
            h = (h if index == 0 else binary_sign(h)) @ weight.T * scale + shift
        return h

    return forward


def train(model: BinaryNetMLP, x: torch.Tensor, y: torch.Tensor, epochs: int, budget: Budget) -> list[float]:
    """Square hinge loss, Adam on BinaryNet's parameter groups, learning rate decayed tenfold over the epochs."""
    optimizer = torch.optim.Adam(binarynet_param_groups(model, 3e-3))
    attach_weight_clipping(optimizer, model)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, 0.1 ** (1.0 / epochs))
    generator = torch.Generator().manual_seed(budget.seed)
    losses = []
    for _ in tqdm(range(epochs), desc="BinaryNet epochs", disable=not budget.progress, leave=False):
        model.train()
        total = 0.0
        for rows in torch.randperm(len(y), generator=generator).to(x.device).split(100):
            loss = square_hinge_loss(model(x[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        scheduler.step()
        losses.append(total / len(y))
    model.eval()
    return losses


def batch1_latency(functions: dict[str, Callable[[], object]], rounds: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each function, called round-robin (the order rotating each round), so that
    a shared machine's load hits them all alike; the first tenth of the rounds is warm-up."""
    names, times = list(functions), {name: [] for name in functions}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            functions[name]()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_index >= rounds // 10:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def run(data: TourData, out: Path, budget: Budget) -> Section:
    torch.manual_seed(budget.seed)
    device = budget.device
    x = to_float(data.train.images, -1.0, 1.0, flatten=True).to(device)
    y = data.train.labels.to(device)
    test_pixels = data.test.images.flatten(1).to(device)
    test_x, test_y = to_float(data.test.images, -1.0, 1.0, flatten=True).to(device), data.test.labels.to(device)
    epochs = budget.pick(15, 2)
    model = BinaryNetMLP(784, HIDDEN, DEPTH, 10, dropout_in=0.1, dropout_hidden=0.2).to(device)
    losses = train(model, x, y, epochs, budget)
    packed = export_packed_mlp(model)
    dense = dense_float32(model)
    with torch.no_grad():
        scores = model(test_x)
        packed_scores = torch.cat([packed(chunk) for chunk in test_pixels.split(100)])
        dense_scores = dense(test_x)
        one_pixel, one_real = test_pixels[:1], test_x[:1]
        seconds = batch1_latency(
            {"packed": lambda: packed(one_pixel), "dense_float32": lambda: dense(one_real)},
            budget.pick(2000, 200),
            device,
        )
    numbers = {
        "hidden_units": HIDDEN,
        "hidden_layers": DEPTH,
        "epochs": epochs,
        "final_train_loss": losses[-1],
        "test_error": classification_error(scores.softmax(-1), test_y),
        "packed_test_error": classification_error(packed_scores.softmax(-1), test_y),
        "packed_dense_prediction_agreement": float(
            (packed_scores.argmax(-1) == dense_scores.argmax(-1)).double().mean()
        ),
        "batch1_latency_packed_us": 1e6 * seconds["packed"],
        "batch1_latency_dense_float32_us": 1e6 * seconds["dense_float32"],
        "speedup_packed_over_dense": seconds["dense_float32"] / seconds["packed"],
        "device": str(device),
    }
    text = (
        f"A BinaryNet MLP 784-{HIDDEN}x{DEPTH}-10 (binary weights and activations, batch norm, square hinge loss, "
        f"Adam with weight clipping) trained for {epochs} epochs on the 3,000 training digits, then exported by "
        f"`export_packed_mlp` to sign words packed 32 per int32, where every hidden product is an XNOR-popcount "
        f"GEMM and the uint8 pixels enter through the bit-plane (CPU) or fused (GPU) first layer. Test error of "
        f"the trained module and of the packed export on the 1,000 test digits (they should agree up to ties), "
        f"and the batch-1 latency (median of round-robin calls, so shared load hits both alike) of the packed "
        f"network against the same network as dense float32 products of the +-1 weights with batch norm "
        f"folded: here the packed network takes {numbers['batch1_latency_packed_us']:.0f} us against "
        f"{numbers['batch1_latency_dense_float32_us']:.0f} us ({numbers['speedup_packed_over_dense']:.2f}x speed-up"
        f"{'' if numbers['speedup_packed_over_dense'] >= 1 else ', i.e. slower'}). At this small width, call "
        f"overheads weigh as much as the arithmetic; "
        f"`benchmarks/bench_binarynet_mlp.py` measures the large networks. Courbariaux et al. (2016) report 0.96% "
        f"for 3 x 4096 units after 1000 epochs on all 60,000 digits."
    )
    return Section("Binary MLP on packed XNOR kernels", numbers, [], text)
