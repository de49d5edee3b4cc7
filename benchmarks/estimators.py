"""Bias and variance of every gradient estimator and baseline against EXACT gradients of tiny networks.

Reproduce (about a minute on one core):

    python -m benchmarks.estimators --output benchmarks/results/estimators.md

For binary-event networks (local, learned predictor, straight-through, STS) every quantity in the first
two tables is computed exactly, by enumerating every hidden configuration (:mod:`policies.exact`):
the exact gradient of the expected loss, the estimator's exact expectation (hence its bias), and its
exact per-sample covariance (hence its variance). Only the last column, the average cosine between a
64-sample minibatch estimate and the exact gradient, is sampled (from the enumerated distribution).
The noisy rectifier has continuous outputs; its table uses one unit, exact by quadrature.

Every estimator is compared with the gradient of ITS OWN network's expected loss (STS samples a
different distribution from the binary units: its firing probability is ``sqrt(p)``).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from policies.baselines import make_baseline
from policies.bsn import BinaryStochasticNetwork
from policies.exact import (
    Readout,
    exact_gradient,
    fit_baseline,
    fit_predictors,
    local_unit_gradients,
    make_tiny_network,
    monte_carlo_gradients,
    per_row_gradients,
    predictor_unit_gradients,
    rectifier_expected_loss,
)

COMMAND = "python -m benchmarks.estimators --output benchmarks/results/estimators.md"


@dataclass(frozen=True)
class Variant:
    """One row of the tables: an estimator (registry name) with its baseline and options.

    Attributes:
        label: the row's name in the tables.
        estimator: estimator registry name (``policies.estimators.ESTIMATORS``).
        baseline: baseline registry name (``policies.baselines.BASELINES``): ``c`` of the local estimator,
            or of the regression target ``(h - p)(L - c)`` of the learned predictor.
        estimator_kwargs: constructor arguments of the estimator.
    """

    label: str
    estimator: str
    baseline: str = "none"
    estimator_kwargs: dict = field(default_factory=dict)


VARIANTS = [
    Variant("local (h-p)(L-c), no baseline", "local", "none"),
    Variant("local, running-mean baseline", "local", "mean"),
    Variant("local, optimal per-neuron c_i*", "local", "optimal"),
    Variant("local, learned per-neuron c_i(x)", "local", "learned"),
    Variant("learned predictor (local features), target c = 0", "learned_predictor"),
    Variant("learned predictor (local features), target c = mean", "learned_predictor", "mean"),
    Variant(
        "learned predictor (+ ST feature), target c = mean",
        "learned_predictor",
        "mean",
        estimator_kwargs={"use_straight_through": True},
    ),
    Variant(
        "learned predictor (+ layer inputs), target c = mean",
        "learned_predictor",
        "mean",
        estimator_kwargs={"use_inputs": True},
    ),
    Variant("straight-through (identity)", "st"),
    Variant("straight-through (sigmoid-adjusted)", "st_sigmoid"),
    Variant("stochastic times smooth (STS)", "sts"),
]


@dataclass(frozen=True)
class Setting:
    """A tiny network and its loss.

    Attributes:
        in_features: input size.
        hidden_sizes: units per layer.
        n_inputs: number of fixed random inputs the gradient averages over.
        normalise_readout: scale the readout by ``1/sqrt(top units)`` (widths comparison).
        seed: seed of the weights, inputs and readout.
    """

    in_features: int
    hidden_sizes: tuple[int, ...]
    n_inputs: int = 4
    normalise_readout: bool = False
    seed: int = 5


@dataclass(frozen=True)
class Measurement:
    """Exact moments of one estimator on one setting (``g`` the estimate, ``G`` the exact gradient).

    Attributes:
        gradient_norm: ``||G||``.
        bias: ``||E[g] - G||``.
        cosine_of_mean: cosine between ``E[g]`` and ``G``.
        variance: per-sample ``trace Cov[g]`` (sum over every weight and bias).
        minibatch_cosine: mean cosine between a 64-sample average of ``g`` and ``G``.
    """

    gradient_norm: float
    bias: float
    cosine_of_mean: float
    variance: float
    minibatch_cosine: float

    @property
    def relative_bias(self) -> float:
        """``||E[g] - G|| / ||G||``."""
        return self.bias / self.gradient_norm

    @property
    def relative_noise(self) -> float:
        """``sqrt(trace Cov[g]) / ||G||``: about how many samples a unit-accuracy estimate needs, squared."""
        return math.sqrt(self.variance) / self.gradient_norm


def build(variant: Variant, setting: Setting) -> tuple[BinaryStochasticNetwork, torch.Tensor, Readout]:
    """The setting's network with the variant's estimator, its inputs and its loss."""
    net = make_tiny_network(
        setting.in_features,
        setting.hidden_sizes,
        variant.estimator,
        seed=setting.seed,
        weight_scale=1.5,
        **variant.estimator_kwargs,
    )
    generator = torch.Generator().manual_seed(setting.seed + 1)
    inputs = torch.randn(setting.n_inputs, setting.in_features, generator=generator, dtype=torch.float64)
    readout = Readout(setting.hidden_sizes[-1], offset=3.0, seed=setting.seed + 2, normalise=setting.normalise_readout)
    return net, inputs, readout


def measure(variant: Variant, setting: Setting, minibatch: int = 64, n_minibatches: int = 400) -> Measurement:
    """Train what the variant learns (baseline or predictor, 300 batches), then compute its exact moments."""
    net, inputs, readout = build(variant, setting)
    baseline = None
    if variant.baseline != "none":
        baseline = make_baseline(variant.baseline, setting.in_features, setting.hidden_sizes).double()
        fit_baseline(baseline, net, inputs, readout, steps=300, batch_size=512, learning_rate=0.1)
    unit_gradient_fn: Callable = local_unit_gradients
    if variant.estimator == "learned_predictor":
        fit_predictors(net, inputs, readout, steps=300, batch_size=512, learning_rate=0.05, baseline=baseline)
        uses_st = variant.estimator_kwargs.get("use_straight_through", False)
        unit_gradient_fn = predictor_unit_gradients(net, readout if uses_st else None)
    exact = exact_gradient(net, inputs, readout).detach()
    weights, gradients = per_row_gradients(net, inputs, readout, baseline, unit_gradient_fn)
    mean = weights @ gradients
    variance = weights @ (gradients - mean).pow(2)
    draws = torch.multinomial(weights, minibatch * n_minibatches, replacement=True)
    minibatch_means = gradients[draws].reshape(n_minibatches, minibatch, -1).mean(1)
    return Measurement(
        gradient_norm=float(exact.norm()),
        bias=float((mean - exact).norm()),
        cosine_of_mean=float(torch.nn.functional.cosine_similarity(mean, exact, dim=0)),
        variance=float(variance.sum()),
        minibatch_cosine=float(torch.nn.functional.cosine_similarity(minibatch_means, exact.unsqueeze(0)).mean()),
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table; the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def two_layer_table(setting: Setting) -> str:
    """Table 1: every variant on one two-layer network."""
    rows = []
    for variant in VARIANTS:
        m = measure(variant, setting)
        rows.append(
            [
                variant.label,
                f"{m.gradient_norm:.4f}",
                f"{m.bias:.4f}",
                f"{m.relative_bias:.3f}",
                f"{m.cosine_of_mean:.3f}",
                f"{m.variance:.3f}",
                f"{m.relative_noise:.1f}",
                f"{m.minibatch_cosine:.3f}",
            ]
        )
    header = [
        "estimator",
        "‖∇E[L]‖ (exact)",
        "bias ‖E[g]−∇‖",
        "relative bias",
        "cos(E[g], ∇)",
        "variance tr Cov[g]",
        "noise √tr Cov / ‖∇‖",
        "cos(64-sample mean, ∇)",
    ]
    return markdown_table(header, rows)


def growth_tables(widths: Sequence[int], in_features: int, seeds: Sequence[int]) -> tuple[str, str]:
    """Tables 2 and 3: relative noise and relative bias of every variant as the layer widens.

    Each cell is the mean over ``seeds`` (random networks, inputs and losses) and the range over them.
    """
    noise_rows, bias_rows = [], []
    for variant in VARIANTS:
        noise_cells, bias_cells = [], []
        for width in widths:
            results = [
                measure(variant, Setting(in_features, (width,), normalise_readout=True, seed=seed)) for seed in seeds
            ]
            noise_cells.append(summarise([m.relative_noise for m in results], "{:.1f}"))
            bias_cells.append(summarise([m.relative_bias for m in results], "{:.2f}"))
        noise_rows.append([variant.label, *noise_cells])
        bias_rows.append([variant.label, *bias_cells])
    header = ["estimator", *[f"{width} units" for width in widths]]
    return markdown_table(header, noise_rows), markdown_table(header, bias_rows)


def summarise(values: Sequence[float], fmt: str) -> str:
    """``mean (min–max)`` of a few values, each formatted with ``fmt``."""
    mean = sum(values) / len(values)
    return f"{fmt.format(mean)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def noisy_rectifier_table(pre_activations: Sequence[float], jump: float = 2.0, samples: int = 200_000) -> str:
    """Table 4: one noisy-rectifier unit (sigma = 1), exact gradient by quadrature vs the estimator's mean."""

    def smooth(h: torch.Tensor) -> torch.Tensor:
        return (h[:, 0] - 1.0) ** 2 + torch.sin(3 * h[:, 0])

    def with_jump(h: torch.Tensor) -> torch.Tensor:
        return h[:, 0] + jump * (h[:, 0] > 0).to(h.dtype)

    rows = []
    for value in pre_activations:
        net = BinaryStochasticNetwork(1, [1], "noisy_rectifier").double()
        with torch.no_grad():
            net.layers[0].weight.zero_()
            net.layers[0].bias.fill_(value)
        one = torch.ones(1, 1, dtype=torch.float64)
        pre_activation = torch.tensor(value, dtype=torch.float64, requires_grad=True)
        (smooth_exact,) = torch.autograd.grad(rectifier_expected_loss(pre_activation, smooth), pre_activation)
        # L = h + k 1[h > 0]: E[L] = E[relu(a + z)] + k Phi(a), so dE/da = Phi(a) + k phi(a).
        jump_exact = 0.5 * math.erfc(-value / math.sqrt(2)) + jump * math.exp(-0.5 * value**2) / math.sqrt(2 * math.pi)
        for name, loss, exact in (("smooth", smooth, float(smooth_exact)), ("with jump", with_jump, jump_exact)):
            batches = monte_carlo_gradients(net, one, loss, 50, samples // 50)[:, 1]
            estimate, error = float(batches.mean()), float(batches.std() / math.sqrt(50))
            rows.append(
                [
                    f"a = {value:+.1f}, {name}",
                    f"{exact:.4f}",
                    f"{estimate:.4f} ± {error:.4f}",
                    f"{estimate - exact:+.4f}",
                    f"{(estimate - exact) / error:+.1f}",
                ]
            )
    header = ["unit, loss", "exact dE[L]/da", f"estimator mean ± s.e. ({samples:,} samples)", "bias", "z"]
    return markdown_table(header, rows)


def report(seed: int) -> str:
    """The whole markdown report (tables and the notes that read them)."""
    torch.manual_seed(seed)
    start = time.process_time()
    main = Setting(3, (3, 2))
    table_main = two_layer_table(main)
    widths = (4, 8, 16)
    seeds = (5, 6, 7)
    table_noise, table_bias = growth_tables(widths, in_features=4, seeds=seeds)
    table_rectifier = noisy_rectifier_table([-1.0, 0.3, 1.5])
    seconds = time.process_time() - start
    return f"""# Gradient estimators and baselines against exact gradients

Reproduce: `{COMMAND}` (seed {seed}; {seconds:.0f} s of CPU time on this run;
torch {torch.__version__}, Python {platform.python_version()}).

Notation: `g` is one sample's estimate of the parameter gradient (all weights and biases of all layers),
`∇` the exact gradient of the network's expected loss `E[L]`, by enumerating every hidden configuration
(see `policies/exact.py`). Bias and variance are exact (enumeration, no sampling); the last column
samples 400 minibatches of 64 configurations from the exact distribution. Learned baselines and
predictors are trained first on 300 batches of 512 samples, then frozen. Every estimator is compared
with the gradient of its own network (STS samples a different distribution than binary units).

## 1. Two-layer network (3 inputs, layers [3, 2], 4 fixed inputs, L = 3 + u·tanh(V h₂ + c))

{table_main}

## 2. Variance growth with width: relative noise √tr Cov[g] / ‖∇‖ (one layer, 4 inputs)

Loss `L = 3 + u·tanh(V h / √n + c)` so its spread does not grow with the width `n`.
Samples needed for a fixed relative accuracy scale with the square of these numbers.
Each cell: mean (min–max) over {len(seeds)} random networks (seeds {", ".join(map(str, seeds))})

{table_noise}

## 3. Relative bias ‖E[g] − ∇‖ / ‖∇‖ in the same networks (mean (min–max) over the same seeds)

{table_bias}

## 4. Noisy rectifier (one unit, σ = 1): exact by quadrature

The back-propagated `1[a + z > 0]` is the pathwise (reparameterisation) derivative, so the noisy
rectifier is unbiased for a loss that is smooth in `h`, and biased (by `k φ(a)`) when the loss jumps
by `k` at the firing event `h > 0`, which back-propagation cannot see.

{table_rectifier}
"""


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: print the report, and write it to ``--output`` if given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    parser.add_argument("--output", default=None, help="also write the markdown report to this file")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    text = report(args.seed)
    sys.stdout.write(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
