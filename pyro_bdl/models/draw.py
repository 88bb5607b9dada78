"""DRAW, the Deep Recurrent Attentive Writer (Gregor, Danihelka, Graves, Rezende & Wierstra 2015).

A picture is drawn in ``T`` glimpses on a canvas ``c`` of natural parameters. Generative model
(:class:`DRAW`, eqs. 13-16 of the paper) for images ``x`` of shape (data, B * A)::

    for n in data:                                      plate "data", dim -1
        c_0 = 0, h_dec_0 = 0
        for t in 1..T:
            z_t ~ N(0, I)                               site "z_t", (z_dim,)
            h_dec_t = LSTM_dec(h_dec_{t-1}, z_t)
            c_t = c_{t-1} + write(h_dec_t)
        x_n ~ p(x | eta = c_T)                          site "obs", Bernoulli(sigmoid(c_T)) for binary pixels

Inference network (:class:`DRAWGuide`, eqs. 3-8), for t = 1..T::

    x_hat_t = x - E[x | c_{t-1}]                        the error image, x - sigmoid(c_{t-1})
    r_t = read(x, x_hat_t, h_dec_{t-1})
    h_enc_t = LSTM_enc(h_enc_{t-1}, [r_t, h_dec_{t-1}])
    z_t ~ q(z_t | h_enc_t) = N(mu(h_enc_t), sigma(h_enc_t))
    h_dec_t = LSTM_dec(h_dec_{t-1}, z_t),  c_t = c_{t-1} + write(h_dec_t)

``read`` and ``write`` are the Gaussian filterbank attention of sec. 3.2 or the plain
``[x, x_hat]`` / linear maps of sec. 3.1 (:mod:`pyro_bdl.models.draw_attention`).

Design in Pyro: ``q(z_t | x, z_<t)`` depends on the decoder state ``h_dec_{t-1}``, a
deterministic function of the earlier draws ``z_<t`` and of the *model's* parameters. The guide
therefore holds a reference to the model and runs the model's own decoder step
(:meth:`DRAW.decode_step`) on its own draws; the model, replaying those draws (as
``Trace_ELBO``, the importance weights and ``Predictive`` do), recomputes the same recurrence.
The decoder's parameters are one set of Pyro params (the model's names), reached from both
traces, so the ELBO's gradient flows to them through ``log p(x | c_T)`` and through
``q(z_t | h_enc_t)`` exactly as in the paper's single network. The cost is a second decoder
pass per step (the encoder, with its ``2 D``-wide input, dominates anyway). The ``T`` latents
are separate sites ``z_1 .. z_T`` in the data plate; the prior ``N(0, I)`` does not depend on
earlier steps, so :class:`~pyro.infer.TraceMeanField_ELBO` computes each step's KL (the
paper's latent loss, eq. 11) analytically.

Everything broadcasts over leading dimensions (vectorised particles, ``Predictive`` with
``parallel=True``): ``z_t`` is ``(*outer, data, z_dim)``, ``obs`` ``(*outer, data, B * A)``.
Missing pixels (``obs_mask`` False) are left out of the likelihood entry by entry and fed to
the encoder as 0.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn

from pyro_bdl.conventions import DATA_PLATE, OBS_SITE
from pyro_bdl.models.dlgm import GaussianHead, expand_cat
from pyro_bdl.models.draw_attention import GaussianRead, GaussianWrite, PlainRead, PlainWrite
from pyro_bdl.observation import ObservationModel
from pyro_bdl.validation import check_guide_rows, check_int, check_model_rows

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""The decoder state ``(h_dec, cell_dec, canvas)``, shapes ``(..., hidden)``, ``(..., hidden)``, ``(..., D)``."""


def step_site(t: int) -> str:
    """The site name of the latent of glimpse ``t`` (1 .. T)."""
    return f"z_{t}"


class LSTMCell(PyroModule):
    """An LSTM cell that broadcasts over leading dimensions (``torch.nn.LSTMCell`` takes 2-D input only).

    ``i, f, o = sigmoid(.)``, ``g = tanh(.)`` of ``W [input, h] + b``; ``c' = f c + i g``,
    ``h' = o tanh(c')``. Shapes: input ``(..., in_dim)``, ``h, c`` ``(..., hidden)``. The
    forget gate's bias starts at 1.
    """

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        linear = nn.Linear(in_dim + hidden, 4 * hidden)
        with torch.no_grad():
            linear.bias[hidden : 2 * hidden].fill_(1.0)
        to_pyro_module_(linear)
        self.linear = linear

    def forward(self, inputs: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = self.linear(expand_cat(inputs, h)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


def _check_image_size(image_size) -> tuple[int, int]:
    size = tuple(image_size) if isinstance(image_size, (tuple, list)) else image_size
    if not (
        isinstance(size, tuple)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)
    ):
        raise ValueError(f"image_size must be (rows, columns), two positive ints, got {image_size!r}")
    return size


class DRAW(PyroModule):
    """DRAW's generative model (see the module docstring).

    Args:
        image_size: ``(B, A)``, rows and columns; the data rows hold ``B * A`` pixels.
        steps: T, the number of glimpses (latents ``z_1 .. z_T``).
        z_dim: size of each ``z_t``.
        hidden_dim: units of the decoder LSTM.
        attention: Gaussian filterbank write (and read, in the guide) or the plain variant.
        write_size: N of the write filterbank (attention only).
        observation: a real-``eta`` name of :data:`pyro_bdl.observation.OBSERVATION_MODELS`
            (``bernoulli_logit`` for binary pixels: ``c_T`` are the logits).
        learn_params: learn the likelihood's parameters as point estimates (else fixed).
        observation_params: initial (or fixed) likelihood parameters, passed to :class:`ObservationModel`.
        name: prefix of the parameter names in Pyro's param store.

    Call as ``model(x, *, obs_mask=None)`` with ``x`` (data, B * A) to condition, or
    ``model(None, num_data=N)`` to sample; returns the value of ``obs``.
    """

    def __init__(
        self,
        image_size: tuple[int, int] = (28, 28),
        *,
        steps: int = 10,
        z_dim: int = 100,
        hidden_dim: int = 256,
        attention: bool = True,
        write_size: int = 5,
        observation: str = "bernoulli_logit",
        learn_params: bool = True,
        observation_params: dict | None = None,
        name: str = "draw",
    ) -> None:
        super().__init__(name)
        self.image_size = _check_image_size(image_size)
        for arg, value in (("steps", steps), ("z_dim", z_dim), ("hidden_dim", hidden_dim)):
            check_int(arg, value)
        if not isinstance(attention, bool):
            raise TypeError(f"attention must be a bool, got {type(attention).__name__}")
        self.data_dim = self.image_size[0] * self.image_size[1]
        self.steps, self.z_dim, self.hidden_dim, self.attention = steps, z_dim, hidden_dim, attention
        self.likelihood = ObservationModel(
            observation, event_dim=1, plates=(), learn_params=learn_params, **(observation_params or {})
        )
        spec = self.likelihood.spec
        if spec.eta_event_ndim or spec.eta_positive:
            raise ValueError(
                f"observation must take a real eta per pixel (e.g. 'bernoulli_logit', 'gaussian'), got {observation!r}"
            )
        self.decoder = LSTMCell(z_dim, hidden_dim)
        self.writer = (
            GaussianWrite(self.image_size, write_size, hidden_dim)
            if attention
            else PlainWrite(self.data_dim, hidden_dim)
        )
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def initial_state(self, size: int, like: torch.Tensor | None = None) -> State:
        """``(h_dec_0, cell_0, c_0)``, zeros of shapes ``(size, hidden)``, ``(size, hidden)``, ``(size, D)``."""
        like = self._zero if like is None else like
        h = like.new_zeros(size, self.hidden_dim)
        return h, h, like.new_zeros(size, self.data_dim)

    def decode_step(self, z: torch.Tensor, state: State) -> State:
        """``h_dec_t = LSTM_dec(h_dec_{t-1}, z_t)``, ``c_t = c_{t-1} + write(h_dec_t)``; ``z`` ``(..., z_dim)``."""
        # --8<-- [start:decode_step]
        h, cell, canvas = state
        h, cell = self.decoder(z, h, cell)
        return h, cell, canvas + self.writer(h)
        # --8<-- [end:decode_step]

    def mean(self, canvas: torch.Tensor) -> torch.Tensor:
        """``E[x | c]``, e.g. ``sigmoid(c)`` for ``bernoulli_logit``; ``(..., D)``."""
        return self.likelihood.mean(canvas)

    @torch.no_grad()
    def canvases(self, zs: list[torch.Tensor]) -> torch.Tensor:
        """The canvas means ``E[x | c_t]``, t = 1..T, for given latents ``zs`` (T tensors (n, z_dim)): (T, n, D)."""
        if len(zs) != self.steps:
            raise ValueError(f"zs must hold {self.steps} tensors, one per glimpse, got {len(zs)}")
        state, out = self.initial_state(zs[0].shape[-2], zs[0]), []
        for z in zs:
            state = self.decode_step(z, state)
            out.append(self.mean(state[2]))
        return torch.stack(out)

    def forward(
        self,
        x: torch.Tensor | None = None,
        *,
        obs_mask: torch.Tensor | None = None,
        num_data: int | None = None,
    ) -> torch.Tensor:
        size, x = check_model_rows(x, num_data, obs_mask, self.data_dim)
        state = self.initial_state(size, x)
        zero = state[2].new_zeros(())
        # --8<-- [start:model]
        with pyro.plate(DATA_PLATE, size, dim=-1):
            prior = dist.Normal(zero, 1.0).expand([size, self.z_dim]).to_event(1)
            for t in range(1, self.steps + 1):
                state = self.decode_step(pyro.sample(step_site(t), prior), state)
            if obs_mask is None:
                return self.likelihood(state[2], obs=x, site_name=OBS_SITE)
            return self.likelihood.observe_entries(state[2], x, obs_mask, site_name=OBS_SITE)
        # --8<-- [end:model]

    def extra_repr(self) -> str:
        return (
            f"image_size={self.image_size}, steps={self.steps}, z_dim={self.z_dim}, hidden_dim={self.hidden_dim}, "
            f"attention={self.attention}"
        )


class DRAWGuide(PyroModule):
    """DRAW's inference network ``q(z_1 .. z_T | x)`` (see the module docstring).

    Args:
        model: the :class:`DRAW` whose decoder the guide runs (held by reference, not as a
            submodule, so its parameters keep the model's names).
        hidden_dim: units of the encoder LSTM (default: the model's ``hidden_dim``).
        read_size: N of the read filterbank (the model's ``attention`` only).
        name: prefix of the guide's own parameter names.

    Call with the model's arguments, ``guide(x, *, obs_mask=None, num_data=None)``; returns
    the canvases ``[c_1, ..., c_T]`` (natural parameters), each ``(*outer, data, D)``.
    """

    def __init__(
        self, model: DRAW, *, hidden_dim: int | None = None, read_size: int = 2, name: str = "draw_guide"
    ) -> None:
        super().__init__(name)
        if not isinstance(model, DRAW):
            raise TypeError(f"model must be a DRAW, got {type(model).__name__}")
        hidden_dim = model.hidden_dim if hidden_dim is None else hidden_dim
        check_int("hidden_dim", hidden_dim)
        object.__setattr__(self, "model", model)  # a reference, not a submodule (see the docstring)
        self.hidden_dim = hidden_dim
        if model.attention:
            self.reader = GaussianRead(model.image_size, read_size, model.hidden_dim)
        else:
            self.reader = PlainRead(model.data_dim)
        self.encoder = LSTMCell(self.reader.out_dim + model.hidden_dim, hidden_dim)
        self.head = GaussianHead(hidden_dim, (), model.z_dim, "tanh")

    def forward(
        self,
        x: torch.Tensor | None = None,
        *,
        obs_mask: torch.Tensor | None = None,
        num_data: int | None = None,
    ) -> list[torch.Tensor]:
        model = self.model
        size, x = check_guide_rows(x, num_data, obs_mask, model.data_dim)
        state = model.initial_state(size, x)
        h_enc = cell_enc = x.new_zeros(size, self.hidden_dim)
        canvases = []
        # --8<-- [start:guide]
        with pyro.plate(DATA_PLATE, size, dim=-1):
            for t in range(1, model.steps + 1):
                h_dec, _, canvas = state
                glimpse = self.reader(x, x - model.mean(canvas), h_dec)
                h_enc, cell_enc = self.encoder(expand_cat(glimpse, h_dec), h_enc, cell_enc)
                loc, scale = self.head(h_enc)
                z = pyro.sample(step_site(t), dist.Normal(loc, scale).to_event(1))
                state = model.decode_step(z, state)
                canvases.append(state[2])
        # --8<-- [end:guide]
        return canvases

    def extra_repr(self) -> str:
        return f"hidden_dim={self.hidden_dim}, reader={type(self.reader).__name__}"
