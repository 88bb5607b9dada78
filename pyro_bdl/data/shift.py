"""Out-of-distribution image sets built reproducibly from in-distribution ones (no download).

* :func:`rotate_images`: every image turned by a multiple of 90 degrees (exact, no interpolation).
* :func:`permute_pixels`: one fixed random permutation of the pixel positions, the same for every
  image, drawn from ``seed``: the pixel statistics stay, the spatial structure goes.

Shapes: images (N, H, W), any dtype (uint8 MNIST pixels); the result has the same shape and dtype.
"""

from __future__ import annotations

import torch

__all__ = ["permute_pixels", "rotate_images"]


def _check_images(images: object) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 3:
        raise ValueError(f"images must be a (N, H, W) tensor, got {getattr(images, 'shape', type(images).__name__)}")
    return images


def rotate_images(images: torch.Tensor, quarter_turns: int = 1) -> torch.Tensor:
    """Each image rotated counter-clockwise by ``quarter_turns * 90`` degrees; (N, H, W) -> (N, W, H)."""
    if isinstance(quarter_turns, bool) or not isinstance(quarter_turns, int) or quarter_turns % 4 == 0:
        raise ValueError(f"quarter_turns must be an integer not divisible by 4, got {quarter_turns!r}")
    return torch.rot90(_check_images(images), quarter_turns, dims=(1, 2)).contiguous()


def permute_pixels(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Every image's pixels reordered by one permutation drawn from ``seed`` (torch's CPU generator)."""
    images = _check_images(images)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:  # pyro_bdl.validation would load Triton
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n, h, w = images.shape
    order = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed)).to(images.device)
    return images.reshape(n, h * w)[:, order].reshape(n, h, w)
