"""Estimators against exact gradients of tiny networks, computed by enumerating every hidden configuration.

Two kinds of evidence (docs/method.md §1, §3, §4):

* exact expectations: the estimator's mean over every configuration, weighted by its probability,
  compared to the exact gradient with no Monte Carlo error at all;
* Monte Carlo: 50 independent batches of 4000 samples; every parameter's mean must lie within
  ``Z_MAX`` standard errors of the exact gradient. The same check must flag deliberately wrong
  estimators, and the standard error must be small relative to the gradient, so it cannot pass by
  accident.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch

from policies.baselines import BASELINES, Baseline, make_baseline
from policies.bsn import BinaryStochasticNetwork, BSNOutput
from policies.estimators import local_gradient
from policies.exact import (
    Readout,
    configurations,
    enumerate_network,
    exact_estimator_mean,
    exact_gradient,
    exact_unit_estimates,
    exact_unit_moments,
    fit_baseline,
    fit_predictors,
    local_unit_gradients,
    make_tiny_network,
    monte_carlo_gradients,
    per_row_gradients,
    predictor_unit_gradients,
    rectifier_expected_loss,
    z_scores,
)

#: |z| bound for "matches": P(max over 20 parameters of |N(0,1)| > 5) ~ 1e-5.
Z_MAX = 5.0
#: Monte Carlo budget: 50 independent batches x 4000 rows = 200k samples.
N_BATCHES, BATCH_SIZE = 50, 4000
#: Largest standard error allowed, relative to the exact gradient's norm (test power). With the optimal
#: baseline the standard error is ~1% of the gradient even for the bottom layer's weights.
MAX_RELATIVE_SE = 0.1

IN_FEATURES = 3


def tiny_setup(
    hidden_sizes: Sequence[int] = (3, 2), estimator: str = "local", **kwargs: object
) -> tuple[BinaryStochasticNetwork, torch.Tensor, Readout]:
    """A seeded tiny network, four fixed inputs and a nonlinear readout loss with an offset."""
    net = make_tiny_network(IN_FEATURES, hidden_sizes, estimator, seed=5, weight_scale=1.5, **kwargs)
    inputs = torch.randn(4, IN_FEATURES, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return net, inputs, Readout(hidden_sizes[-1], offset=3.0, seed=3)


#: The baselines checked: every registered one, and the learned one conditioned on each unit's own input.
BASELINE_CASES: dict[str, tuple[str, dict]] = {
    **{name: (name, {}) for name in BASELINES},
    "learned_layer_input": ("learned", {"condition": "layer_input"}),
}


def fitted_baseline(name: str, net: BinaryStochasticNetwork, inputs: torch.Tensor, readout: Readout) -> Baseline:
    """The baseline of :data:`BASELINE_CASES` ``name``, warmed up on 40 independent batches and frozen."""
    registry_name, kwargs = BASELINE_CASES[name]
    baseline = make_baseline(registry_name, IN_FEATURES, net.hidden_sizes, **kwargs).double()
    return fit_baseline(baseline, net, inputs, readout, steps=40, batch_size=1000)


def own_sample_baseline(
    output: BSNOutput, signal: torch.Tensor, baselines: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """WRONG: a baseline that depends on the unit's own sample, ``c = 0.5 h``: bias ``-0.5 p(1-p) x``."""
    return [
        local_gradient(h, p, signal, c + 0.5 * h)
        for h, p, c in zip(output.samples, output.firing_probs, baselines, strict=True)
    ]


def centred_at_half(output: BSNOutput, signal: torch.Tensor, baselines: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """WRONG: ``(h - 1/2) L`` instead of ``(h - p) L``."""
    return [
        local_gradient(h, torch.full_like(p, 0.5), signal, c)
        for h, p, c in zip(output.samples, output.firing_probs, baselines, strict=True)
    ]


def scaled(output: BSNOutput, signal: torch.Tensor, baselines: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """WRONG: the right direction, 15% too short."""
    return [0.85 * g for g in local_unit_gradients(output, signal, baselines)]


def bottom_layer_only(wrong: Callable) -> Callable:
    """Corrupt only the bottom layer (the hardest to check: its gradient is the smallest and noisiest)."""

    def unit_gradients(
        output: BSNOutput, signal: torch.Tensor, baselines: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        return [wrong(output, signal, baselines)[0], *local_unit_gradients(output, signal, baselines)[1:]]

    return unit_gradients


WRONG_ESTIMATORS: dict[str, Callable] = {
    "own_sample_baseline": bottom_layer_only(own_sample_baseline),
    "centred_at_half": bottom_layer_only(centred_at_half),
    "scaled_0.85": bottom_layer_only(scaled),
}


@pytest.mark.parametrize("hidden_sizes", [(3, 2), (2, 2, 2)])
@pytest.mark.parametrize("baseline_name", list(BASELINE_CASES))
def test_local_estimator_expectation_equals_exact_gradient(hidden_sizes: tuple[int, ...], baseline_name: str) -> None:
    net, inputs, readout = tiny_setup(hidden_sizes)
    baseline = fitted_baseline(baseline_name, net, inputs, readout)
    exact = exact_gradient(net, inputs, readout)
    assert exact.abs().min() > 1e-5, "every weight and bias must receive a nonzero gradient for the check to bite"
    expected = exact_estimator_mean(net, inputs, readout, baseline)
    torch.testing.assert_close(expected, exact, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("wrong", list(WRONG_ESTIMATORS))
def test_wrong_estimators_expectation_differs_from_exact_gradient(wrong: str) -> None:
    net, inputs, readout = tiny_setup()
    exact = exact_gradient(net, inputs, readout)
    expected = exact_estimator_mean(net, inputs, readout, unit_gradient_fn=WRONG_ESTIMATORS[wrong])
    bottom = net.layers[0].weight.numel() + net.layers[0].bias.numel()
    assert (expected - exact)[:bottom].norm() > 0.1 * exact[:bottom].norm()
    torch.testing.assert_close(expected[bottom:], exact[bottom:])


@pytest.mark.parametrize(
    ("hidden_sizes", "baseline_name"),
    [((3, 2), name) for name in BASELINE_CASES] + [((2, 2, 2), name) for name in ("none", "learned_layer_input")],
)
def test_local_estimator_monte_carlo_mean_matches_exact_for_every_parameter(
    hidden_sizes: tuple[int, ...], baseline_name: str
) -> None:
    net, inputs, readout = tiny_setup(hidden_sizes)
    baseline = fitted_baseline(baseline_name, net, inputs, readout)
    exact = exact_gradient(net, inputs, readout)
    batches = monte_carlo_gradients(net, inputs, readout, N_BATCHES, BATCH_SIZE, baseline)
    z, standard_error = z_scores(batches, exact)
    assert standard_error.norm() < MAX_RELATIVE_SE * exact.norm()
    assert z.abs().max() < Z_MAX, f"max |z| = {z.abs().max():.2f} over {z.numel()} parameters"


@pytest.mark.parametrize("wrong", list(WRONG_ESTIMATORS))
def test_wrong_estimators_fail_the_monte_carlo_check(wrong: str) -> None:
    """The check of the test above, with the optimal baseline, flags an error confined to the bottom layer."""
    net, inputs, readout = tiny_setup()
    baseline = fitted_baseline("optimal", net, inputs, readout)
    exact = exact_gradient(net, inputs, readout)
    batches = monte_carlo_gradients(
        net, inputs, readout, N_BATCHES, BATCH_SIZE, baseline, unit_gradient_fn=WRONG_ESTIMATORS[wrong]
    )
    z, standard_error = z_scores(batches, exact)
    assert standard_error.norm() < MAX_RELATIVE_SE * exact.norm()
    assert z.abs().max() > Z_MAX


@pytest.mark.parametrize("name", ["st", "st_sigmoid", "sts"])
def test_propagating_estimators_are_biased_on_a_nonlinear_loss(name: str) -> None:
    net, inputs, readout = tiny_setup(estimator=name)
    exact = exact_gradient(net, inputs, readout)
    expected = exact_estimator_mean(net, inputs, readout)
    assert (expected - exact).norm() > 0.1 * exact.norm()
    batches = monte_carlo_gradients(net, inputs, readout, 20, 2000)
    z, _ = z_scores(batches, exact)
    assert z.abs().max() > Z_MAX
    # The Monte Carlo mean agrees with the enumerated expectation of the same (biased) estimator.
    z_own, _ = z_scores(batches, expected)
    assert z_own.abs().max() < Z_MAX


def single_unit(estimator: str, bias: float, **kwargs: object) -> BinaryStochasticNetwork:
    """One unit with input 1: ``a = w + b`` with ``w = 0``, so ``dE/db = dE/da``."""
    net = BinaryStochasticNetwork(1, [1], estimator, kwargs or None).double()
    with torch.no_grad():
        net.layers[0].weight.zero_()
        net.layers[0].bias.fill_(bias)
    return net


def bias_gradient(flat: torch.Tensor) -> float:
    """The ``dE/db`` entry of a one-unit network's flat (weight, bias) gradient."""
    return float(flat[1])


@pytest.mark.parametrize("pre_activation", [-1.5, 0.7, 2.0])
def test_straight_through_bias_matches_closed_form(pre_activation: float) -> None:
    """One unit, ``L = (h - t)^2``: exact ``p(1-p)(1-2t)``; ST ``2(p-t)``; sigmoid-ST ``2(p-t)p(1-p)``.

    Both differ from the exact value whenever ``p != 1/2`` (ST also at ``p = 1/2`` unless ``t = 1/2``).
    """
    target = 0.2
    p = 1.0 / (1.0 + math.exp(-pre_activation))
    one = torch.ones(1, 1, dtype=torch.float64)

    def loss(h: torch.Tensor) -> torch.Tensor:
        return (h[:, 0] - target) ** 2

    exact = p * (1 - p) * (1 - 2 * target)
    closed_forms = {"st": 2 * (p - target), "st_sigmoid": 2 * (p - target) * p * (1 - p)}
    for name, value in closed_forms.items():
        net = single_unit(name, pre_activation)
        assert bias_gradient(exact_gradient(net, one, loss)) == pytest.approx(exact, rel=1e-10)
        assert bias_gradient(exact_estimator_mean(net, one, loss)) == pytest.approx(value, rel=1e-10)
        assert abs(value - exact) > 1e-3


@pytest.mark.parametrize("pre_activation", [-1.0, 0.5, 2.5])
def test_sts_bias_matches_closed_form(pre_activation: float) -> None:
    """One STS unit, ``s = sqrt(p)``, ``L = (h - t)^2``: exact ``(3s^2 - 4st) s'``; STS ``2s(s - t) s'``.

    ``s' = ds/da = s(1-p)/2``. They differ by ``s(s - 2t) s'``, nonzero unless ``s = 2t``.
    """
    target = 0.1
    p = 1.0 / (1.0 + math.exp(-pre_activation))
    s, ds = math.sqrt(p), math.sqrt(p) * (1 - p) / 2
    net = single_unit("sts", pre_activation)
    one = torch.ones(1, 1, dtype=torch.float64)

    def loss(h: torch.Tensor) -> torch.Tensor:
        return (h[:, 0] - target) ** 2

    assert bias_gradient(exact_gradient(net, one, loss)) == pytest.approx((3 * s * s - 4 * s * target) * ds)
    assert bias_gradient(exact_estimator_mean(net, one, loss)) == pytest.approx(2 * s * (s - target) * ds)
    assert abs(s * (s - 2 * target) * ds) > 1e-3


def test_straight_through_sigmoid_is_exact_for_a_linear_loss_of_one_layer() -> None:
    """Control: with ``L = v . h`` and one layer, sigmoid-adjusted ST has no bias (``E[v_i p(1-p)]``)."""
    net = make_tiny_network(IN_FEATURES, [3], "st_sigmoid", seed=4)
    inputs = torch.randn(4, IN_FEATURES, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    weights = torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64)

    def loss(h: torch.Tensor) -> torch.Tensor:
        return h @ weights

    torch.testing.assert_close(exact_estimator_mean(net, inputs, loss), exact_gradient(net, inputs, loss))


@pytest.mark.parametrize("noise_std", [0.5, 1.0])
def test_noisy_rectifier_is_unbiased_for_a_smooth_loss(noise_std: float) -> None:
    """The noisy rectifier's back-propagated ``1[a + sigma z > 0]`` is the pathwise (reparameterisation)
    gradient, unbiased whenever ``L`` is Lipschitz in ``h``."""
    net = single_unit("noisy_rectifier", 0.3, noise_std=noise_std)

    def loss(h: torch.Tensor) -> torch.Tensor:
        return (h[:, 0] - 1.0) ** 2 + torch.sin(3 * h[:, 0])

    pre_activation = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    (exact,) = torch.autograd.grad(rectifier_expected_loss(pre_activation, loss, noise_std), pre_activation)
    one = torch.ones(1, 1, dtype=torch.float64)
    batches = monte_carlo_gradients(net, one, loss, N_BATCHES, BATCH_SIZE)[:, 1]
    z, standard_error = z_scores(batches.unsqueeze(-1), exact.reshape(1))
    assert standard_error < 0.05 * abs(float(exact))
    assert z.abs().max() < Z_MAX


def test_noisy_rectifier_is_biased_for_a_loss_of_the_firing_event() -> None:
    """``L = h + k 1[h > 0]``: exact ``dE/da = Phi(a/sigma) + k phi(a/sigma)/sigma``, but back-propagation
    cannot see the jump, so the estimator averages to ``Phi(a/sigma)``: bias ``k phi(a/sigma)/sigma``."""
    pre_activation, jump = 0.3, 2.0
    net = single_unit("noisy_rectifier", pre_activation)

    def loss(h: torch.Tensor) -> torch.Tensor:
        return h[:, 0] + jump * (h[:, 0] > 0).to(h.dtype)

    density = math.exp(-0.5 * pre_activation**2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * math.erfc(-pre_activation / math.sqrt(2))
    one = torch.ones(1, 1, dtype=torch.float64)
    batches = monte_carlo_gradients(net, one, loss, N_BATCHES, BATCH_SIZE)[:, 1:]
    z_biased, _ = z_scores(batches, torch.tensor([cdf], dtype=torch.float64))
    z_exact, _ = z_scores(batches, torch.tensor([cdf + jump * density], dtype=torch.float64))
    assert z_biased.abs().max() < Z_MAX
    assert z_exact.abs().max() > 10 * Z_MAX


@pytest.mark.parametrize("use_straight_through", [False, True])
def test_learned_predictor_trains_lowers_variance_and_tracks_the_gradient(use_straight_through: bool) -> None:
    """docs/method.md §3: the regressor's squared error falls; its prediction, a regression of ``g`` on
    the unit's features, has lower per-unit variance than ``g``; its (capacity-limited, hence nonzero)
    bias leaves its expected update well aligned with the exact gradient."""
    net, inputs, readout = tiny_setup(estimator="learned_predictor", use_straight_through=use_straight_through)
    history = fit_predictors(net, inputs, readout, steps=100, batch_size=512, learning_rate=0.05)
    assert sum(history[-10:]) < 0.1 * sum(history[:10])
    predicted = predictor_unit_gradients(net, readout if use_straight_through else None)
    weights, local = exact_unit_estimates(net, inputs, readout)
    _, prediction = exact_unit_estimates(net, inputs, readout, predicted)

    def variance(estimates: torch.Tensor) -> torch.Tensor:
        mean = (weights.unsqueeze(-1) * estimates).sum(0)
        return (weights.unsqueeze(-1) * (estimates - mean).pow(2)).sum(0)

    assert variance(prediction).sum() < variance(local).sum()
    exact = exact_gradient(net, inputs, readout)
    expected = exact_estimator_mean(net, inputs, readout, unit_gradient_fn=predicted)
    assert torch.nn.functional.cosine_similarity(expected, exact, dim=0) > 0.8
    assert (expected - exact).norm() > 1e-3 * exact.norm()


@pytest.mark.parametrize("name", ["local", "st", "sts"])
def test_per_row_gradients_average_to_the_enumerated_expectation(name: str) -> None:
    """The benchmark's exact per-sample gradients agree with the estimator's exact expectation."""
    net, inputs, readout = tiny_setup(estimator=name)
    weights, gradients = per_row_gradients(net, inputs, readout)
    assert weights.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(weights @ gradients, exact_estimator_mean(net, inputs, readout))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: configurations(21), r"units must be in 1\.\.20"),
        (
            lambda: enumerate_network(make_tiny_network(3, [2], "noisy_rectifier"), torch.zeros(1, 3)),
            "continuous outputs",
        ),
        (lambda: monte_carlo_gradients(*tiny_setup(), n_batches=2, batch_size=10), "multiple of the 4 inputs"),
        (lambda: exact_unit_moments(*tiny_setup()), "one input row"),
    ],
)
def test_exact_helpers_refuse_what_they_cannot_compute(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
