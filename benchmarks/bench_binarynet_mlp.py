"""End-to-end inference of BinaryNet's (Theano) MNIST MLP, 784 - 3 x 4096 - 10: packed vs float torch.

Four implementations of the same trained-shape network (batch norm folded, sign
activations), timed at batch 1 and 1024 on real MNIST test images:

* ``packed``: :class:`pyro_bdl.networks.PackedBinaryMLP` on uint8 pixels, every hidden
  layer one XNOR GEMM that writes sign words. Up to 64 rows the first layer is one fused
  ``pixel_gemm`` launch on a GPU and 8 bit-plane XNOR products on the CPU; above, a float
  product with the unpacked signs.
* ``packed_bitplane``: the same with the bit-plane first layer on every device.
* ``torch_fp32`` / ``torch_bf16``: the same network as dense float matmuls of the +-1
  weights, each followed by scale, shift and sign.

The network's weights are random (BinaryNet's uniform init) with random batch-norm
statistics. Latency does not depend on the values, and every implementation is checked to
give the same predictions. Reports latency (GPU: CUDA-graph replay median; CPU: median wall
time) and weight memory, and writes JSON (``runs/bench/`` unless ``--record`` or ``--out``).

    python benchmarks/bench_binarynet_mlp.py
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import torch
import triton
from timing import add_output_arguments, machine_slug, output_path, time_cpu, time_cuda

from pyro_bdl.data import load_mnist, to_float
from pyro_bdl.experiment import (
    add_common_arguments,
    data_root,
    environment,
    make_parser,
    run_main,
    setup,
    write_results,
)
from pyro_bdl.layers import binary_sign
from pyro_bdl.networks import BinaryNetMLP, PackedBinaryMLP, export_packed_mlp, fold_batch_norm


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, threads=None, seed=None)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 1024])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cpu-reps", type=int, default=15)
    add_output_arguments(parser)
    return parser.parse_args(argv)


class DenseBinaryMLP(torch.nn.Module):
    """The same network as float matmuls of the +-1 weights in ``dtype`` (the baseline)."""

    def __init__(self, model: BinaryNetMLP, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype
        self.weights = [binary_sign(layer.weight.detach()).to(dtype) for layer in model.layers]
        self.folded = [tuple(v.to(dtype) for v in fold_batch_norm(norm)) for norm in model.norms]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        h = pixels.to(self.dtype) * (2.0 / 255.0) - 1.0
        for index, (weight, (scale, shift)) in enumerate(zip(self.weights, self.folded, strict=True)):
            h = (h @ weight.T) * scale + shift
            if index < len(self.weights) - 1:
                h = torch.where(h < 0, -1.0, 1.0).to(self.dtype)
        return h.float()


def make_model(hidden: int, depth: int, device: torch.device) -> BinaryNetMLP:
    torch.manual_seed(0)
    model = BinaryNetMLP(784, hidden, depth, 10).to(device)
    for norm in model.norms:  # random but plausible batch-norm statistics
        norm.running_mean.normal_(0.0, 0.5 * norm.num_features**0.5)
        norm.running_var.uniform_(0.5, 2.0).mul_(norm.num_features)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.normal_(0.0, 0.1)
    return model.eval()


def latency_ms(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    return time_cuda(fn, rep_ms=50) if device.type == "cuda" else time_cpu(fn, reps)


def weight_bytes(module: torch.nn.Module | DenseBinaryMLP) -> int:
    if isinstance(module, PackedBinaryMLP):
        return sum(buffer.nbytes for buffer in module.buffers())
    return sum(w.nbytes for w in module.weights) + sum(v.nbytes for pair in module.folded for v in pair)


def main(args: argparse.Namespace) -> dict:
    device = setup(args)
    pixels_all = load_mnist(data_root(args, "mnist"), "test").images.reshape(-1, 784).to(device)
    model = make_model(args.hidden, args.depth, device)
    implementations = {
        "packed": export_packed_mlp(model),  # first layer: fused pixel_gemm on CUDA, bit planes on CPU
        "packed_bitplane": export_packed_mlp(model, first_layer="bitplane"),
        "torch_fp32": DenseBinaryMLP(model, torch.float32),
        "torch_bf16": DenseBinaryMLP(model, torch.bfloat16),
    }
    with torch.no_grad():
        reference = model(to_float(pixels_all[:1024].cpu(), -1.0, 1.0).to(device)).argmax(1)
    env = {**environment(device), "triton": triton.__version__}
    env["device"] = env.get("gpu", env["cpu"])
    print(f"device: {env['device']}  torch {env['torch']}  triton {env['triton']}")
    rows = []
    for name, net in implementations.items():
        with torch.no_grad():
            agreement = float((net(pixels_all[:1024]).argmax(1) == reference).float().mean())
        for batch in args.batches:
            inputs = pixels_all[:batch]

            def run(net=net, inputs=inputs):
                with torch.no_grad():
                    return net(inputs)

            ms = latency_ms(run, device, args.cpu_reps)
            rows.append({"impl": name, "batch": batch, "ms": ms, "weight_bytes": weight_bytes(net),
                         "prediction_agreement": agreement})  # fmt: skip
    fp32 = {row["batch"]: row for row in rows if row["impl"] == "torch_fp32"}
    bf16 = {row["batch"]: row for row in rows if row["impl"] == "torch_bf16"}
    print(f"{'impl':<16} {'batch':>6} {'latency':>12} {'vs bf16':>8} {'weights':>10} {'vs fp32':>8} {'agree':>6}")
    for row in rows:
        row["speedup_vs_bf16"] = bf16[row["batch"]]["ms"] / row["ms"]
        row["weights_smaller_than_fp32"] = fp32[row["batch"]]["weight_bytes"] / row["weight_bytes"]
        print(
            f"{row['impl']:<16} {row['batch']:>6} {row['ms'] * 1e3:>9.1f} us {row['speedup_vs_bf16']:>7.2f}x "
            f"{row['weight_bytes'] / 2**20:>7.2f} MiB {row['weights_smaller_than_fp32']:>7.1f}x "
            f"{row['prediction_agreement']:>6.3f}"
        )
    write_results(output_path(args, f"binarynet_mlp-{machine_slug(env['device'])}"), {"environment": env, "rows": rows})
    return {"environment": env, "rows": rows}


if __name__ == "__main__":
    run_main(main, parse_args)
