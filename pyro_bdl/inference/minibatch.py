"""Minibatch scaling: weight the sites of the data plate by N / B, and nothing else.

Training on a batch of B of N data points gives an unbiased estimate of the full-data ELBO
when every term that belongs to a data point (its likelihood, and for an amortised model its
local latents) is multiplied by N / B while the global terms (priors and guide densities of
global latents such as BNN weights) keep weight 1. This is what a subsampled ``pyro.plate``
does; :class:`DataPlateScaleMessenger` does the same from outside a model that plates its
batch with a plain ``pyro.plate(name, B)``. Scaling every site by N / B instead (plain
``poutine.scale``) would shrink the posterior of global latents to that of B data points.
"""

from __future__ import annotations

from collections.abc import Callable

from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message

from pyro_bdl.validation import check_positive


class DataPlateScaleMessenger(Messenger):
    """Multiply the ``scale`` of every sample site inside the plate ``plate`` by ``scale``.

    Args:
        plate: name of the plate over data points.
        scale: the factor, N / B for a batch of B of N points; a positive number.

    Attributes:
        scaled_sites: how many sites were scaled since the handler was created (a model with no
            site in the plate cannot be minibatched this way).
    """

    def __init__(self, plate: str, scale: float) -> None:
        super().__init__()
        self.plate, self.scale, self.scaled_sites = plate, check_positive("scale", scale), 0

    def _process_message(self, msg: Message) -> None:
        if msg["type"] == "sample" and any(frame.name == self.plate for frame in msg["cond_indep_stack"]):
            msg["scale"] = self.scale * msg["scale"]
            self.scaled_sites += 1


def scale_data_plate(fn: Callable, plate: str, scale: float) -> Callable:
    """``fn`` with the sites of the plate ``plate`` scaled by ``scale`` (a Pyro effect handler)."""
    return DataPlateScaleMessenger(plate, scale)(fn)
