"""DRAW's read and write operations (Gregor et al. 2015, sec. 3): Gaussian filterbank attention.

An ``N x N`` grid of Gaussian filters is placed on a ``B x A`` image (B rows, A columns). Five
numbers from the decoder state ``h`` set it (eqs. 19-26 of the paper)::

    (g~X, g~Y, log sigma^2, log delta~, log gamma) = W h + b                   (21)
    gX = (A + 1) / 2 (g~X + 1),  gY = (B + 1) / 2 (g~Y + 1)                     (22, 23)
    delta = (max(A, B) - 1) / (N - 1) delta~                                   (24)
    muX_i = gX + (i - N/2 - 0.5) delta,  muY_j = gY + (j - N/2 - 0.5) delta    (19, 20)  i, j = 1..N
    FX[i, a] = exp(-(a - muX_i)^2 / (2 sigma^2)) / ZX_i                        (25)      a = 1..A
    FY[j, b] = exp(-(b - muY_j)^2 / (2 sigma^2)) / ZY_j                        (26)      b = 1..B

with ``Z`` normalising each filter to sum to one over the pixels. Pixel coordinates run from 1
(``a = 1..A``), the convention under which ``g~ = 0`` puts the grid at the image centre
``(A + 1) / 2`` as eq. 22 intends. ``N = 1`` has no stride (eq. 24 divides by ``N - 1``): its
one filter sits at the centre ``g``. Then::

    read(x, x_hat, h)  = gamma [FY x FX^T, FY x_hat FX^T]          (27)  (..., 2 N^2)
    write(h)           = 1 / gamma^ FY^^T w FX^                     (28, 29)  w = W' h + b', (..., N, N)

The write's filterbank ``^`` comes from its own linear map of ``h``. Without attention (sec.
3.1) ``read(x, x_hat, h) = [x, x_hat]`` and ``write(h) = W h + b``. Every function broadcasts
over leading dimensions (particles, data).
"""

from __future__ import annotations

import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn

from pyro_bdl.validation import check_int

NORMALISER_FLOOR = 1e-8
"""Floor on each filter's normaliser ``Z``, so a filter far outside the image stays finite."""


def _pyro_linear(in_dim: int, out_dim: int) -> nn.Module:
    layer = nn.Linear(in_dim, out_dim)
    to_pyro_module_(layer)
    return layer


def attention_parameters(
    params: torch.Tensor, image_size: tuple[int, int], patch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Map the five raw outputs ``(..., 5)`` of eq. 21 to ``gX, gY, delta, sigma^2, gamma``, each ``(...)``.

    ``image_size`` is ``(B, A)`` (rows, columns); ``patch`` is N.
    """
    rows, cols = image_size
    # --8<-- [start:parameters]
    gx_raw, gy_raw, log_var, log_delta, log_gamma = params.unbind(-1)
    gx = (cols + 1) / 2 * (gx_raw + 1)
    gy = (rows + 1) / 2 * (gy_raw + 1)
    stride = (max(rows, cols) - 1) / max(patch - 1, 1) * log_delta.exp()
    return gx, gy, stride, log_var.exp(), log_gamma.exp()
    # --8<-- [end:parameters]


def filterbank(
    centre: torch.Tensor, stride: torch.Tensor, variance: torch.Tensor, patch: int, size: int
) -> torch.Tensor:
    """One axis's filterbank ``F[i, a]`` of eqs. 19-20 and 25-26: ``(..., patch, size)``, rows sum to 1.

    ``centre``, ``stride`` and ``variance`` are ``(...)``: ``g``, ``delta`` and ``sigma^2``.
    """
    # --8<-- [start:filterbank]
    offsets = torch.arange(1, patch + 1, dtype=centre.dtype, device=centre.device) - patch / 2 - 0.5
    mu = centre.unsqueeze(-1) + offsets * stride.unsqueeze(-1)  # (..., N)
    pixels = torch.arange(1, size + 1, dtype=centre.dtype, device=centre.device)  # a = 1..A
    weights = torch.exp(-(pixels - mu.unsqueeze(-1)).square() / (2 * variance[..., None, None]))
    return weights / weights.sum(-1, keepdim=True).clamp_min(NORMALISER_FLOOR)
    # --8<-- [end:filterbank]


def filterbanks(
    params: torch.Tensor, image_size: tuple[int, int], patch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``FX (..., N, A)``, ``FY (..., N, B)`` and ``gamma (...)`` from the raw outputs ``(..., 5)`` of eq. 21."""
    gx, gy, stride, variance, gamma = attention_parameters(params, image_size, patch)
    rows, cols = image_size
    return filterbank(gx, stride, variance, patch, cols), filterbank(gy, stride, variance, patch, rows), gamma


def read_patch(image: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
    """``FY image FX^T``: image ``(..., B, A)`` -> patch ``(..., N, N)`` (eq. 27 without gamma)."""
    return fy @ image @ fx.transpose(-1, -2)


def write_patch(patch: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
    """``FY^T patch FX``: patch ``(..., N, N)`` -> image ``(..., B, A)`` (eq. 29 without 1 / gamma)."""
    return fy.transpose(-1, -2) @ patch @ fx


class GaussianRead(PyroModule):
    """``read(x, x_hat, h_dec) = gamma [FY x FX^T, FY x_hat FX^T]`` (eq. 27): ``(..., 2 N^2)``.

    ``x`` and ``x_hat`` are ``(..., B * A)`` rows; ``h_dec`` is ``(..., hidden)``.
    """

    def __init__(self, image_size: tuple[int, int], patch: int, hidden: int) -> None:
        super().__init__()
        check_int("read_size", patch)
        self.image_size, self.patch = image_size, patch
        self.out_dim = 2 * patch * patch
        self.params = _pyro_linear(hidden, 5)

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor, h_dec: torch.Tensor) -> torch.Tensor:
        # --8<-- [start:read]
        fx, fy, gamma = filterbanks(self.params(h_dec), self.image_size, self.patch)
        glimpses = [read_patch(image.unflatten(-1, self.image_size), fx, fy).flatten(-2) for image in (x, x_hat)]
        shape = torch.broadcast_shapes(glimpses[0].shape, glimpses[1].shape)
        return gamma.unsqueeze(-1) * torch.cat([g.expand(shape) for g in glimpses], dim=-1)
        # --8<-- [end:read]


class GaussianWrite(PyroModule):
    """``write(h_dec) = 1 / gamma^ FY^^T w FX^`` with ``w = W' h_dec + b'`` (eqs. 28-29): ``(..., B * A)``."""

    def __init__(self, image_size: tuple[int, int], patch: int, hidden: int) -> None:
        super().__init__()
        check_int("write_size", patch)
        self.image_size, self.patch = image_size, patch
        self.params = _pyro_linear(hidden, 5)
        self.content = _pyro_linear(hidden, patch * patch)

    def forward(self, h_dec: torch.Tensor) -> torch.Tensor:
        # --8<-- [start:write]
        fx, fy, gamma = filterbanks(self.params(h_dec), self.image_size, self.patch)
        w = self.content(h_dec).unflatten(-1, (self.patch, self.patch))
        return (write_patch(w, fx, fy) / gamma[..., None, None]).flatten(-2)
        # --8<-- [end:write]


class PlainRead(PyroModule):
    """``read(x, x_hat, h_dec) = [x, x_hat]`` (sec. 3.1, no attention): ``(..., 2 D)``."""

    def __init__(self, data_dim: int) -> None:
        super().__init__()
        self.out_dim = 2 * data_dim

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor, h_dec: torch.Tensor) -> torch.Tensor:
        shape = torch.broadcast_shapes(x.shape, x_hat.shape)
        return torch.cat([x.expand(shape), x_hat.expand(shape)], dim=-1)


class PlainWrite(PyroModule):
    """``write(h_dec) = W h_dec + b`` (sec. 3.1, no attention): ``(..., D)``."""

    def __init__(self, data_dim: int, hidden: int) -> None:
        super().__init__()
        self.linear = _pyro_linear(hidden, data_dim)

    def forward(self, h_dec: torch.Tensor) -> torch.Tensor:
        return self.linear(h_dec)
