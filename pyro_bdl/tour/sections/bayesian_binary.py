"""Tour section: a Bayesian binary MLP (+-1 weights as Pyro latents) predicting on the packed XNOR kernels.

The weights of ``BayesBinaryMLP`` are ``SignBernoulli`` sample sites; ``BernoulliMeanFieldGuide``
holds one logit per weight and samples hard +-1 weights, their gradient passed through the mean (BayesBiNN's estimator);
BayesBiNN's natural-gradient step trains the logits through plain ``fit`` (Meng, Bachmann & Khan
2020). Prediction draws S weight samples once, packs them, and evaluates the S networks in one
batched XNOR product per layer (``export_packed_ensemble``), averaging in probability space.
Reported: test error, log-likelihood and ECE of the ensemble, the predictive entropy on right and
wrong answers, and how well its mutual information tells pixel-permuted digits from real ones.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pyro.infer import TraceMeanField_ELBO

from pyro_bdl.bnn import BNNClassifier
from pyro_bdl.conventions import DATA_PLATE
from pyro_bdl.data import permute_pixels, to_float
from pyro_bdl.evaluation import auroc, bald_decomposition, classification_scores
from pyro_bdl.inference.fit import fit
from pyro_bdl.inference.minibatch import scale_data_plate
from pyro_bdl.inference.natural_gradient import natural_gradient_optim
from pyro_bdl.models.bayes_binary import BayesBinaryMLP, BernoulliMeanFieldGuide
from pyro_bdl.networks.packed_ensemble import export_packed_ensemble
from pyro_bdl.tour.core import Budget, Section
from pyro_bdl.tour.data import TourData

HIDDEN, DEPTH, SAMPLES = 512, 2, 8
LIKELIHOOD_WEIGHT = 1000.0
"""The tempered likelihood that ``examples/bayes_binary_mnist.py`` chose on validation (docs/bayes_binary.md)."""


def run(data: TourData, out: Path, budget: Budget) -> Section:
    torch.manual_seed(budget.seed)
    x, y = to_float(data.train.images, -1.0, 1.0, flatten=True), data.train.labels
    test_x, test_y = to_float(data.test.images, -1.0, 1.0, flatten=True), data.test.labels
    permuted_x = to_float(permute_pixels(data.test.images, seed=budget.seed), -1.0, 1.0, flatten=True)
    epochs = budget.pick(10, 1)
    net = BayesBinaryMLP(784, HIDDEN, DEPTH, 10)
    model = BNNClassifier(net, num_classes=10)
    guide = BernoulliMeanFieldGuide(model, temperature=0.1, estimator="mean", init_logit_scale=3.0)
    result = fit(
        scale_data_plate(model, DATA_PLATE, LIKELIHOOD_WEIGHT), guide, (x, y),
        optim=natural_gradient_optim(5e-3, 3e-2, max_logit=30.0), loss=TraceMeanField_ELBO(),
        epochs=epochs, batch_size=100, seed=budget.seed, progress=budget.progress,
    )  # fmt: skip
    model.eval()
    weights = guide.by_layer(guide.sample_weights(SAMPLES), list(net.layers))
    ensemble = export_packed_ensemble(net, weights, calibration=x[:1000])
    with torch.no_grad():
        logits, permuted_logits = ensemble(test_x), ensemble(permuted_x)  # (S, n, 10), on the XNOR kernels
    scores = classification_scores(logits, test_y)
    information = bald_decomposition(logits.softmax(-1)).mutual_information
    permuted_information = bald_decomposition(permuted_logits.softmax(-1)).mutual_information
    numbers = {
        "hidden_units": HIDDEN,
        "hidden_layers": DEPTH,
        "epochs": epochs,
        "posterior_samples": SAMPLES,
        "final_train_elbo": result.history[-1]["train_elbo"],
        "test_error": scores["error"],
        "test_log_likelihood": scores["log_likelihood"],
        "test_ece": scores["ece"],
        "entropy_correct": scores["entropy_correct"],
        "entropy_wrong": scores["entropy_wrong"] if scores["entropy_wrong"] is not None else float("nan"),
        "permuted_digits_auroc_mutual_information": auroc(information, permuted_information),
    }
    text = (
        f"A Bayesian binary MLP 784-{HIDDEN}x{DEPTH}-10: every weight a +-1 random variable with a uniform "
        f"prior, a mean-field Bernoulli posterior trained by BayesBiNN's natural gradient (hard +-1 samples, "
        f"gradient through the mean tanh(l / 2), likelihood weighted x{LIKELIHOOD_WEIGHT:.0f} as chosen on "
        f"validation for the MNIST example) for {epochs} epochs on the 3,000 training digits. "
        f"{SAMPLES} weight samples are packed once and run as one batched XNOR product per layer; their "
        f"probabilities are averaged. Test error {100 * numbers['test_error']:.1f}%, log-likelihood "
        f"{numbers['test_log_likelihood']:.3f} nats, ECE {100 * numbers['test_ece']:.1f}%; predictive entropy "
        f"{numbers['entropy_correct']:.2f} on right answers against {numbers['entropy_wrong']:.2f} on wrong ones; "
        f"mutual information tells pixel-permuted digits from real ones with AUROC "
        f"{numbers['permuted_digits_auroc_mutual_information']:.3f}. On full MNIST (5 epochs) it is within 0.2 "
        f"points of the deterministic BinaryNet of the same size (docs/bayes_binary.md)."
    )
    return Section("Bayesian binary MLP on packed XNOR kernels", numbers, [], text)
