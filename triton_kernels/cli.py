"""Command line: ``triton-kernels selfcheck | tune SHAPE... | info`` (or ``python -m triton_kernels``)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import torch

from triton_kernels import cpu
from triton_kernels._runtime import is_interpreting
from triton_kernels.pack import num_words, pack_signs, pack_signs_reference
from triton_kernels.pixel_gemm import pixel_gemm, pixel_gemm_reference
from triton_kernels.tuning import TUNED_METHODS, parse_shape, tune_xnor_gemm
from triton_kernels.tuning_cache import default_cache_path, default_tuning_cache
from triton_kernels.xnor_gemm import xnor_gemm, xnor_gemm_reference

SELFCHECK_SHAPES = ((1, 64, 1), (1, 300, 31), (5, 40, 33), (17, 96, 1000), (70, 128, 257))


def _variants(device: torch.device) -> list[tuple[str, str]]:
    """(backend, method) pairs that can run on this device."""
    if device.type == "cuda":
        return [("triton", method) for method in ("popcount", "mma", "expand", "auto")]
    variants = [("cpu", "auto")]
    if is_interpreting():
        variants += [("triton", method) for method in ("popcount", "mma", "expand")]
    return variants


def _check_pixel_gemm(device, m, n, k, b, scale, bias, generator) -> bool:
    """``pixel_gemm`` on uint8 pixels (the kernel where Triton runs) against the reference."""
    pixels = torch.randint(0, 256, (m, k), generator=generator, dtype=torch.uint8).to(device)
    backend = "triton" if device.type == "cuda" or is_interpreting() else "cpu"
    start = time.perf_counter()
    got_int = pixel_gemm(pixels, b, k, backend=backend)
    got_bits = pixel_gemm(pixels, b, k, scale=scale, bias=bias, pack_output=True, backend=backend)
    elapsed = time.perf_counter() - start
    p, w = pixels.cpu(), b.cpu()
    ok = torch.equal(got_int.cpu(), pixel_gemm_reference(p, w, k)) and torch.equal(
        got_bits.cpu(), pixel_gemm_reference(p, w, k, scale=scale.cpu(), bias=bias.cpu(), pack_output=True)
    )
    print(f"{backend:<8} {'pixel':<9} {m:>4} {n:>5} {k:>5}  {'exact' if ok else 'MISMATCH'} ({elapsed:.2f} s)")
    return ok


def selfcheck(device: torch.device, seed: int = 0) -> bool:
    """Check packing, every GEMM variant and the pixel GEMM against the references on random inputs."""
    generator = torch.Generator().manual_seed(seed)
    all_ok = True
    print(f"{'backend':<8} {'method':<9} {'M':>4} {'N':>5} {'K':>5}  result")
    for m, n, k in SELFCHECK_SHAPES:
        x = torch.randn(m, k, generator=generator).to(device)
        w = torch.randn(n, k, generator=generator).to(device)
        scale = torch.rand(n, generator=generator).to(device) + 0.5
        bias = torch.randn(n, generator=generator).to(device)
        a, b = pack_signs(x), pack_signs(w)
        ok_pack = torch.equal(a.cpu(), pack_signs_reference(x.cpu()))
        for backend, method in _variants(device):
            if method == "expand" and (m <= 16 or n % 8) and device.type == "cuda":
                continue
            start = time.perf_counter()
            got_int = xnor_gemm(a, b, k, backend=backend, method=method)
            got_bits = xnor_gemm(a, b, k, scale=scale, bias=bias, pack_output=True, backend=backend, method=method)
            elapsed = time.perf_counter() - start
            ok = (
                ok_pack
                and torch.equal(got_int.cpu(), xnor_gemm_reference(a.cpu(), b.cpu(), k))
                and torch.equal(
                    got_bits.cpu(),
                    xnor_gemm_reference(a.cpu(), b.cpu(), k, scale=scale.cpu(), bias=bias.cpu(), pack_output=True),
                )
                and got_bits.shape[-1] == num_words(n)
            )
            all_ok &= ok
            print(f"{backend:<8} {method:<9} {m:>4} {n:>5} {k:>5}  {'exact' if ok else 'MISMATCH'} ({elapsed:.2f} s)")
        all_ok &= _check_pixel_gemm(device, m, n, k, b, scale, bias, generator)
    print("selfcheck:", "all exact" if all_ok else "FAILED")
    return all_ok


def _shape(text: str) -> tuple[int, int, int]:
    """:func:`parse_shape` for argparse, which then prints its message as a usage error."""
    try:
        return parse_shape(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _build_parser() -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="triton-kernels", description="XNOR-popcount kernels: check, tune, inspect", formatter_class=formatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "selfcheck", help="compare every kernel with the reference on random inputs", formatter_class=formatter
    )
    check.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where to run")
    tune = commands.add_parser(
        "tune", help="autotune shapes now and save the configs to the cache (needs a GPU)", formatter_class=formatter
    )
    tune.add_argument("shapes", nargs="+", type=_shape, help="MxNxK, e.g. 1x8192x8192")
    tune.add_argument(
        "--methods", nargs="+", choices=TUNED_METHODS, default=None, help="kernels to tune; None: the one 'auto' picks"
    )
    commands.add_parser("info", help="versions, device and the tuning cache", formatter_class=formatter)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "selfcheck":
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: torch sees no CUDA GPU; use --device cpu")
        return 0 if selfcheck(device) else 1
    if args.command == "tune":
        for shape, methods in tune_xnor_gemm(args.shapes, methods=args.methods).items():
            print("tuned", "x".join(map(str, shape)), "for", ", ".join(methods))
        print("cache:", default_cache_path())
        return 0
    import triton

    cache = default_tuning_cache()
    entries = cache.load()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu only"
    print(f"torch {torch.__version__}, triton {triton.__version__}, device: {device}")
    print(f"interpreter: {is_interpreting()}; tuning cache: {cache.path} ({entries} configs)")
    print(f"CPU GEMM: {cpu.describe_cpu_gemm()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an expected error (no GPU to tune on, a bad value) is one line on stderr and exit 2."""
    args = _build_parser().parse_args(argv)
    try:
        return _run(args)
    except ValueError as error:
        print(f"triton-kernels {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
