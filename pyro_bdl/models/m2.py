"""Semi-supervised M2 (Kingma, Mohamed, Rezende & Welling 2014), labels summed out exactly.

Generative process for data rows ``x`` (data, D) with partly observed labels ``y``::

    for n in data:                                      plate "data", dim -1
        y_n ~ Categorical(pi)                           site "y" (observed where labelled)
        z_n ~ N(0, I)                                   site "z", (latent_dim,)
        eta = f(z_n, y_n)                               decoder MLP, (D,)
        x_n ~ p(x | eta)                                site "obs", any observation of the GLM table

The guide (:class:`M2Guide`) is ``q(y | x) q(z | x, y)``: the classifier ``q(y | x)`` and a
Gaussian encoder of ``x`` and the label. For an unlabelled row the label is enumerated
(``TraceEnum_ELBO``, parallel enumeration over the ``K`` classes), which gives the paper's
eq. (7) exactly::

    U(x) = sum_y q(y | x) (-L(x, y)) + H(q(y | x))

where ``-L(x, y)`` is the labelled bound of eq. (6): ``E_q(z|x,y)[log p(x|y,z) + log p(y) + log p(z)
- log q(z|x,y)]``. While the guide is in training mode (``guide.train()``, the default) it adds
the classification term of eq. (9), ``alpha * log q(y_n | x_n)`` for each labelled row, as a
guide factor (``pyro.factor(..., -alpha log q, has_rsample=True)``: the ELBO subtracts guide
log-densities, so the objective gains ``+alpha log q``). The loss that plain ``SVI`` or
:func:`pyro_bdl.inference.fit` then minimise is the paper's ``J^alpha``; because the factor sits
in the data plate, minibatching scales it with the other per-datum terms. In eval mode
(``guide.eval()``) the term is left out, so the ELBO is a bound on ``log p(x)`` (or
``log p(x, y)``) and importance-weighted scoring is valid.

Labels follow scikit-learn's convention for semi-supervised data: ``y`` is an integer tensor
(data,) with ``-1`` marking an unlabelled row. Inside a batch that mixes the two, the label
site is split by Pyro's ``obs_mask`` into ``y_observed`` and ``y_unobserved``; the guide
enumerates ``y_unobserved`` (masked out on labelled rows, whose terms are constant over the
enumerated values).

Shapes under enumeration: ``y_unobserved`` is ``(K, 1)`` on the left of the data plate, ``z``
``(K, data, latent_dim)``, the decoder's ``eta`` ``(K, data, D)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import TraceEnum_ELBO
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn

from pyro_bdl.conventions import DATA_PLATE, LABEL_SITE, OBS_SITE
from pyro_bdl.models.dlgm import ACTIVATIONS, MIN_SCALE, mlp
from pyro_bdl.observation import ObservationModel, get_observation_model
from pyro_bdl.validation import check_int, check_labels, check_model_rows, check_num_data, check_table

LATENT_SITE = "z"
"""The style variable of M2."""

CLASSIFICATION_SITE = "classification"
"""The guide factor carrying ``alpha * log q(y | x)`` for labelled rows (training mode only)."""

UNLABELLED = -1
"""The label value of an unlabelled row."""


def enumerated_elbo(num_particles: int = 1, **kwargs) -> TraceEnum_ELBO:
    """The loss to train M2 with: ``TraceEnum_ELBO`` with the data plate as the one plate.

    Batches whose rows are all labelled enumerate nothing, which is correct here, so Pyro's
    warning for that case is switched off. ``kwargs`` go to ``TraceEnum_ELBO``.
    """
    kwargs.setdefault("max_plate_nesting", 1)
    kwargs.setdefault("strict_enumeration_warning", False)
    return TraceEnum_ELBO(num_particles=num_particles, **kwargs)


def check_partial_labels(y: object, num_data: int, num_classes: int) -> torch.Tensor:
    """``y`` as an integer tensor (num_data,) with values in ``{-1, 0, ..., num_classes - 1}``."""
    return check_labels("y", y, num_data=num_data, num_classes=num_classes, unlabelled=UNLABELLED)


OBSERVATION_SCALES = ("learned", "amortised")
"""Where the observation's ``scale`` comes from: the observation model's own (learned or fixed) parameter, or
the decoder, one per datum and entry (Kingma et al.'s Gaussian ``p(x | y, z)``)."""

INIT_LAYERS = ("all", "hidden")
"""Which layers ``init_scale`` draws small: every one (Kingma et al.) or the hidden ones only (Pyro's SS-VAE)."""


def small_init_(module: nn.Module, scale: float | None, layers: str = "all") -> None:
    """Small initial weights for one network (``None`` keeps PyTorch's defaults).

    ``layers="all"``: Kingma et al.'s initialisation (their code: ``scale = 1e-3``), every weight of the
    linear and embedding layers of ``module`` drawn from ``N(0, scale^2)``, every bias 0. ``layers="hidden"``:
    Pyro's SS-VAE example (``examples/vae/utils/custom_mlp.py``), the weights *and biases* of every layer but
    the last linear one (the output layer) drawn from ``N(0, scale^2)``, the output layer left at PyTorch's
    default. Either way the network starts near a constant function of its input.
    """
    if scale is None:
        return
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise ValueError(f"init_scale must be a number > 0 or None, got {scale!r}")
    if layers not in INIT_LAYERS:
        raise ValueError(f"init_layers must be one of {INIT_LAYERS}, got {layers!r}")
    parts = [layer for layer in module.modules() if isinstance(layer, nn.Linear | nn.Embedding)]
    if layers == "hidden":
        output = [layer for layer in parts if isinstance(layer, nn.Linear)][-1]
        parts = [layer for layer in parts if layer is not output]
    with torch.no_grad():
        for layer in parts:
            nn.init.normal_(layer.weight, std=float(scale))
            if getattr(layer, "bias", None) is not None:
                if layers == "all":
                    nn.init.zeros_(layer.bias)
                else:
                    nn.init.normal_(layer.bias, std=float(scale))


def _pyro(module: nn.Module) -> PyroModule:
    """``module`` turned into a PyroModule in place, so SVI finds its parameters."""
    to_pyro_module_(module)
    return module


class LabelConditionedMLP(PyroModule):
    """``MLP([inputs, one_hot(y)])`` with the label entering as an embedding of the first layer.

    ``W [u, one_hot(y)] = W_u u + W_y[:, y]``: the input part is computed once and the label's
    column added by broadcasting, so enumerating ``K`` labels costs ``K`` additions, not ``K``
    products with the (possibly 784-wide) input.

    Shapes: ``inputs`` (..., in_dim) and ``y`` (...) integer, broadcastable against each other's
    batch shape; returns (*broadcast, out_dim).
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: Sequence[int], out_dim: int, activation: str) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("hidden must list at least one layer (the label enters at the first)")
        embedding = nn.Embedding(num_classes, hidden[0])
        nn.init.normal_(embedding.weight, std=1.0 / (in_dim + num_classes) ** 0.5)
        self.input_layer = _pyro(nn.Linear(in_dim, hidden[0]))
        self.label_embedding = _pyro(embedding)
        self.activation = ACTIVATIONS[activation]()
        self.rest = mlp(hidden[0], hidden[1:], out_dim, activation)

    def forward(self, inputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.rest(self.activation(self.input_layer(inputs) + self.label_embedding(y)))


class M2(PyroModule):
    """The M2 generative model ``p(y) p(z) p(x | y, z)`` (see the module docstring).

    Args:
        data_dim: features D of each row (784 for MNIST; the M1 latent size for M1+M2).
        num_classes: K.
        latent_dim: size of ``z``.
        hidden_dims: hidden sizes of the decoder MLP (at least one layer).
        observation: a name from the GLM table for ``x`` (not ``categorical``).
        activation: a key of :data:`pyro_bdl.models.dlgm.ACTIVATIONS`.
        class_probs: the prior ``pi`` (K,); uniform by default.
        observation_params: initial likelihood parameters (``{"scale": ...}``, ...).
        learn_params: fit the observation model's parameters (else keep them fixed).
        init_scale: standard deviation of the small initial decoder weights (see :func:`small_init_`);
            None keeps PyTorch's initialisation.
        init_layers: ``"all"`` (Kingma et al.) or ``"hidden"`` (Pyro's SS-VAE): which layers ``init_scale`` draws.
        observation_scale: ``"learned"`` (the observation model's own parameters) or ``"amortised"``: the
            decoder also outputs the observation's ``scale`` for every entry, ``softplus(.) + MIN_SCALE``, so
            ``p(x | y, z) = N(mu(y, z), diag sigma(y, z)^2)`` for ``gaussian`` (any observation with a ``scale``).

    Call as ``model(x, y=None, *, obs_mask=None, num_data=None)``: ``x`` (data, D) observed,
    ``y`` (data,) integer labels with ``-1`` for unlabelled rows (``None``: all unlabelled);
    ``x=None`` with ``num_data`` samples rows (labels from the prior unless ``y`` is given).
    Returns ``x`` (observed or sampled).
    """

    def __init__(
        self,
        data_dim: int,
        num_classes: int = 10,
        latent_dim: int = 50,
        hidden_dims: Sequence[int] = (500,),
        *,
        observation: str = "bernoulli_logit",
        activation: str = "softplus",
        class_probs: torch.Tensor | None = None,
        observation_params: dict | None = None,
        learn_params: bool = True,
        init_scale: float | None = None,
        init_layers: str = "all",
        observation_scale: str = "learned",
    ) -> None:
        super().__init__()
        check_int("data_dim", data_dim, 1)
        check_int("num_classes", num_classes, 2)
        check_int("latent_dim", latent_dim, 1)
        if observation_scale not in OBSERVATION_SCALES:
            raise ValueError(f"observation_scale must be one of {OBSERVATION_SCALES}, got {observation_scale!r}")
        spec = get_observation_model(observation)
        if observation_scale == "amortised" and "scale" not in {param.name for param in spec.params}:
            raise ValueError(f"observation_scale='amortised' needs an observation with a scale, got {observation!r}")
        if observation == "categorical":
            raise ValueError(
                "observation='categorical' is not supported by M2: it needs one natural parameter per entry"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.data_dim, self.num_classes, self.latent_dim = data_dim, num_classes, latent_dim
        self.hidden_dims, self.activation_name = tuple(hidden_dims), activation
        if class_probs is None:
            class_probs = torch.full((num_classes,), 1.0 / num_classes)
        class_probs = torch.as_tensor(class_probs, dtype=torch.get_default_dtype())
        if class_probs.shape != (num_classes,) or bool((class_probs <= 0).any()):
            raise ValueError(f"class_probs must be ({num_classes},) positive probabilities, got {class_probs}")
        self.register_buffer("class_probs", class_probs / class_probs.sum())
        self.observation_scale = observation_scale
        outputs = 2 * data_dim if observation_scale == "amortised" else data_dim
        self.decoder = LabelConditionedMLP(latent_dim, num_classes, self.hidden_dims, outputs, activation)
        small_init_(self.decoder, init_scale, init_layers)
        self.positive_eta = spec.eta_positive
        self.likelihood = ObservationModel(
            observation, event_dim=1, plates=(), learn_params=learn_params, **(observation_params or {})
        )

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``eta = f(z, y)`` and the per-datum observation parameters (``{"scale": sigma(y, z)}`` when
        amortised, else none): z (..., latent_dim), y (...) integer; each tensor (..., D)."""
        out = self.decoder(z, y)
        params = {}
        if self.observation_scale == "amortised":
            out, raw_scale = out.chunk(2, dim=-1)
            params["scale"] = F.softplus(raw_scale) + MIN_SCALE
        return (F.softplus(out) + MIN_SCALE if self.positive_eta else out), params

    def natural_parameter(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``eta = f(z, y)``: z (..., latent_dim), y (...) integer; returns (..., D)."""
        return self.decode(z, y)[0]

    def observation_distribution(self, z: torch.Tensor, y: torch.Tensor) -> dist.TorchDistribution:
        """``p(x | y, z)`` per entry (batch (..., D), before ``to_event``)."""
        return self.likelihood.distribution(*self.decode(z, y))

    def observation_mean(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``E[x | y, z]``, (..., D)."""
        return self.likelihood.mean(*self.decode(z, y))

    def forward(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        *,
        obs_mask: torch.Tensor | None = None,
        num_data: int | None = None,
    ) -> torch.Tensor:
        if x is None and num_data is None and isinstance(y, torch.Tensor):
            num_data = y.shape[0]  # labels alone: sample one image per label
        size, x = check_model_rows(x, num_data, obs_mask, self.data_dim)
        labels = None if y is None else check_partial_labels(y, size, self.num_classes)
        prior = dist.Categorical(self.class_probs)
        with pyro.plate(DATA_PLATE, size, dim=-1):
            if labels is None and x is None:
                label = pyro.sample(LABEL_SITE, prior.expand([size]))
            else:
                label = _label_site(prior.expand([size]), labels, size)
            zero = self.class_probs.new_zeros(())
            z = pyro.sample(LATENT_SITE, dist.Normal(zero, 1.0).expand([size, self.latent_dim]).to_event(1))
            eta, params = self.decode(z, label)
            if obs_mask is None:
                return self.likelihood(eta, obs=x, site_name=OBS_SITE, params=params)
            return self.likelihood.observe_entries(eta, x, obs_mask, site_name=OBS_SITE, params=params)


def _label_site(fn: dist.Categorical, labels: torch.Tensor | None, size: int) -> torch.Tensor:
    """The label site of model or guide, for all-labelled, all-unlabelled or mixed batches.

    All labelled: one observed site ``y``. Otherwise Pyro's ``obs_mask`` splits it into
    ``y_observed`` and ``y_unobserved`` (model and guide agree on this rule, so site names
    match); unlabelled entries of the observed part are filled with class 0 and masked out.
    """
    if labels is not None and bool((labels >= 0).all()):
        return pyro.sample(LABEL_SITE, fn, obs=labels)
    if labels is None:
        labels = torch.full((size,), UNLABELLED, dtype=torch.long, device=fn.logits.device)
    labelled = labels >= 0
    return pyro.sample(LABEL_SITE, fn, obs=labels.clamp(min=0), obs_mask=labelled)


class M2Guide(PyroModule):
    """``q(y | x) q(z | x, y)`` for :class:`M2`, with the classification term while training.

    Args:
        data_dim: as the model's.
        num_classes: as the model's.
        latent_dim: as the model's.
        hidden_dims: hidden sizes of the classifier and of the ``z`` encoder.
        activation: a key of :data:`pyro_bdl.models.dlgm.ACTIVATIONS`.
        alpha: weight of ``log q(y | x)`` on labelled rows (eq. 9). Kingma et al. use
            ``alpha = 0.1 N`` in their per-batch objective; here every term is per datum, so
            the same weighting is ``alpha = 0.1 * N_total / N_labelled`` relative to one row.
        classifier_dropout: dropout before each hidden layer of the classifier (0 = none).
        unlabelled_trains_classifier: let the unlabelled rows' term (eq. 7) train ``q(y | x)``. If False,
            its ``q(y | x)`` weights and entropy are constants (``logits.detach()``): the classifier learns
            from the classification term alone while the rest of the model learns from its soft labels.
            The objective's value is unchanged. An attribute, so a schedule can switch it.
        init_scale: standard deviation of the small initial weights of both networks (see
            :func:`small_init_`); None keeps PyTorch's initialisation.
        init_layers: ``"all"`` or ``"hidden"``, as for :class:`M2`.

    Call as ``guide(x, y=None, *, obs_mask=None, num_data=None)`` like the model; missing
    entries of ``x`` (``obs_mask`` False) are fed to the networks as 0.
    """

    def __init__(
        self,
        data_dim: int,
        num_classes: int = 10,
        latent_dim: int = 50,
        hidden_dims: Sequence[int] = (500,),
        *,
        activation: str = "softplus",
        alpha: float = 0.1,
        classifier_dropout: float = 0.0,
        unlabelled_trains_classifier: bool = True,
        init_scale: float | None = None,
        init_layers: str = "all",
    ) -> None:
        super().__init__()
        check_int("data_dim", data_dim, 1)
        check_int("num_classes", num_classes, 2)
        check_int("latent_dim", latent_dim, 1)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha >= 0:
            raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
        if not 0.0 <= classifier_dropout < 1.0:
            raise ValueError(f"classifier_dropout must lie in [0, 1), got {classifier_dropout!r}")
        self.data_dim, self.num_classes, self.latent_dim = data_dim, num_classes, latent_dim
        self.alpha = float(alpha)
        self.unlabelled_trains_classifier = bool(unlabelled_trains_classifier)
        layers: list[nn.Module] = []
        width = data_dim
        for size in hidden_dims:
            if classifier_dropout > 0:
                layers.append(nn.Dropout(classifier_dropout))
            layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.classifier = _pyro(nn.Sequential(*layers))
        self.encoder = LabelConditionedMLP(data_dim, num_classes, tuple(hidden_dims), 2 * latent_dim, activation)
        for network in (self.classifier, self.encoder):
            small_init_(network, init_scale, init_layers)

    @classmethod
    def for_model(cls, model: M2, **kwargs) -> M2Guide:
        """A guide whose sizes mirror ``model``; ``kwargs`` as for ``__init__``."""
        kwargs.setdefault("activation", model.activation_name)
        kwargs.setdefault("hidden_dims", model.hidden_dims)
        return cls(model.data_dim, model.num_classes, model.latent_dim, **kwargs)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Classifier logits of ``q(y | x)``: x (data, D) -> (data, K)."""
        return self.classifier(x)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """``q(y | x)`` as probabilities (data, K), computed in eval mode (no dropout)."""
        check_table("x", x, self.data_dim)
        was_training = self.training
        self.eval()
        try:
            return self.logits(x).softmax(-1)
        finally:
            self.train(was_training)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable class under ``q(y | x)``: (data,) long."""
        return self.predict_proba(x).argmax(-1)

    def latent_distribution(self, x: torch.Tensor, y: torch.Tensor) -> dist.Normal:
        """``q(z | x, y)``, batch shape broadcast of (data,) and ``y``'s, event (latent_dim,)."""
        loc, raw_scale = self.encoder(x, y).chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw_scale) + MIN_SCALE).to_event(1)

    def forward(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        *,
        obs_mask: torch.Tensor | None = None,
        num_data: int | None = None,
    ) -> torch.Tensor:
        if x is None:
            raise ValueError(f"the guide needs x (data, {self.data_dim}) to encode; got x=None")
        x = check_table("x", x, self.data_dim, obs_mask)
        size = check_num_data(x, num_data, obs_mask)
        labels = None if y is None else check_partial_labels(y, size, self.num_classes)
        inputs = x if obs_mask is None else torch.where(obs_mask, x, torch.zeros_like(x))
        logits = self.logits(inputs)
        with pyro.plate(DATA_PLATE, size, dim=-1):
            enumerated = logits if self.unlabelled_trains_classifier else logits.detach()
            label = _guide_label(dist.Categorical(logits=enumerated), labels)
            if self.training and self.alpha > 0 and labels is not None and bool((labels >= 0).any()):
                log_q = dist.Categorical(logits=logits).log_prob(labels.clamp(min=0))
                term = torch.where(labels >= 0, -self.alpha * log_q, torch.zeros_like(log_q))
                pyro.factor(CLASSIFICATION_SITE, term, has_rsample=True)
            z = pyro.sample(LATENT_SITE, self.latent_distribution(inputs, label))
        return z


def _guide_label(fn: dist.Categorical, labels: torch.Tensor | None) -> torch.Tensor:
    """The guide's side of :func:`_label_site`: nothing for all-labelled batches, else the
    unobserved labels drawn from ``q(y | x)``, enumerated in parallel, masked on labelled rows."""
    if labels is not None and bool((labels >= 0).all()):
        return labels
    if labels is None:
        labels = torch.full(fn.batch_shape, UNLABELLED, dtype=torch.long, device=fn.logits.device)
    labelled = labels >= 0
    with pyro.poutine.mask(mask=~labelled):
        unobserved = pyro.sample(f"{LABEL_SITE}_unobserved", fn, infer={"enumerate": "parallel"})
    return torch.where(labelled, labels, unobserved)


@torch.no_grad()
def class_scores(model: M2, guide: M2Guide, x: torch.Tensor) -> torch.Tensor:
    """The generative model's own score of every class, (data, K): eq. (6)'s ``-L(x, k)`` evaluated at the
    mean ``z_k`` of ``q(z | x, k)`` (one deterministic point, no draw)::

        s_k(x) = log p(x | k, z_k) + log p(k) + log p(z_k) - log q(z_k | x, k)

    ``argmax_k s_k(x)`` is the generative classifier that the unlabelled term pulls ``q(y | x)`` towards
    (its optimum in ``q`` is ``softmax_k(-L(x, k))``). Shapes: ``x`` (data, D).
    """
    check_table("x", x, model.data_dim)
    classes = torch.arange(model.num_classes, device=x.device).unsqueeze(-1).expand(-1, len(x))  # (K, data)
    posterior = guide.latent_distribution(x, classes)
    z = posterior.mean
    with pyro.validation_enabled(False):  # grey-level images are scored as Bernoulli "observations" too
        log_lik = model.observation_distribution(z, classes).log_prob(x)
    log_prior = dist.Normal(0.0, 1.0).log_prob(z).sum(-1) + model.class_probs.log()[classes]
    return (log_lik.sum(-1) + log_prior - posterior.log_prob(z)).T


@torch.no_grad()
def analogies(model: M2, guide: M2Guide, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Fix each row's style, vary the class: ``E[x | z_n, k]`` for every class ``k``.

    ``z_n`` is the mean of ``q(z | x_n, y_n)``, with ``y_n`` the given label or, where ``y`` is
    ``None`` or ``-1``, the classifier's prediction (the seed's "analogical reasoning" figure).

    Shapes: ``x`` (n, D), ``y`` (n,) or None; returns (n, K, D).
    """
    check_table("x", x, model.data_dim)
    predicted = guide.predict(x)
    labels = (
        predicted if y is None else torch.where(check_partial_labels(y, len(x), model.num_classes) >= 0, y, predicted)
    )
    style = guide.latent_distribution(x, labels).mean  # (n, latent_dim)
    classes = torch.arange(model.num_classes, device=x.device)
    return model.observation_mean(style.unsqueeze(-2).expand(-1, model.num_classes, -1), classes)


@torch.no_grad()
def class_conditional_samples(
    model: M2, num_per_class: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``E[x | z, k]`` for ``z`` drawn from the prior, the same ``z`` across classes: (num_per_class, K, D)."""
    check_int("num_per_class", num_per_class, 1)
    z = torch.randn(num_per_class, 1, model.latent_dim, generator=generator).expand(-1, model.num_classes, -1)
    return model.observation_mean(z, torch.arange(model.num_classes))
