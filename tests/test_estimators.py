"""Estimator building blocks: formulas, surrogate derivatives, sampling distributions, registry, bad input."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from policies.estimators import (
    ESTIMATORS,
    LearnedPredictorEstimator,
    LocalEstimator,
    NoisyRectifierEstimator,
    StochasticTimesSmoothEstimator,
    StraightThroughEstimator,
    bernoulli_log_prob,
    local_gradient,
    make_estimator,
)

#: 100k evenly spaced uniforms: sample averages over them are quadratures with error ~1e-5.
GRID = (torch.arange(100_000, dtype=torch.float64) + 0.5) / 100_000


def test_bernoulli_log_prob_derivative_is_h_minus_p() -> None:
    pre_activation = torch.linspace(-6, 6, 25, dtype=torch.float64, requires_grad=True)
    for value in (0.0, 1.0):
        samples = torch.full_like(pre_activation, value)
        (gradient,) = torch.autograd.grad(bernoulli_log_prob(samples, pre_activation).sum(), pre_activation)
        torch.testing.assert_close(gradient, samples - torch.sigmoid(pre_activation.detach()))


def test_bernoulli_log_prob_is_exact_far_in_the_tails() -> None:
    pre_activation = torch.tensor([1e4, -1e4, 50.0])
    torch.testing.assert_close(bernoulli_log_prob(torch.zeros(3), pre_activation), torch.tensor([-1e4, 0.0, -50.0]))
    torch.testing.assert_close(bernoulli_log_prob(torch.ones(3), pre_activation), torch.tensor([0.0, -1e4, 0.0]))


@pytest.mark.parametrize("signal_shape", [(4,), (4, 1)])
def test_local_gradient_is_h_minus_p_times_signal_minus_baseline(signal_shape: tuple[int, ...]) -> None:
    samples = torch.tensor([[1.0, 0.0, 1.0]] * 4)
    prob = torch.full((4, 3), 0.25, requires_grad=True)
    signal = torch.arange(4.0).reshape(signal_shape)
    per_unit = torch.tensor([0.5, 1.0, -1.0])
    estimate = local_gradient(samples, prob, signal, per_unit)
    expected = (samples - 0.25) * (torch.arange(4.0).unsqueeze(-1) - per_unit)
    torch.testing.assert_close(estimate, expected)
    assert not estimate.requires_grad
    torch.testing.assert_close(local_gradient(samples, prob, signal), (samples - 0.25) * torch.arange(4.0)[:, None])


def test_local_gradient_accepts_one_signal_per_unit() -> None:
    samples, prob = torch.ones(2, 3), torch.full((2, 3), 0.5)
    signal = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    torch.testing.assert_close(local_gradient(samples, prob, signal, 1.0), 0.5 * (signal - 1.0))


def test_local_estimator_is_unbiased_for_one_unit_by_the_papers_identity() -> None:
    """E[(h - p) L] = p(1 - p)(L(1) - L(0)) = d/da [p L(1) + (1 - p) L(0)] (docs/method.md §1)."""
    unit = LocalEstimator()
    pre_activation = torch.tensor(0.8, dtype=torch.float64)
    p = torch.sigmoid(pre_activation)
    h = unit.sample(pre_activation.expand(GRID.shape), GRID)
    loss = torch.where(h > 0, 2.5, -1.0)
    for baseline in (0.0, 1.7):
        estimate = local_gradient(h.unsqueeze(-1), p.expand(GRID.shape).unsqueeze(-1), loss, baseline).mean()
        torch.testing.assert_close(estimate, p * (1 - p) * 3.5, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("variant", "derivative"), [("identity", lambda p: torch.ones_like(p)), ("sigmoid", lambda p: p * (1 - p))]
)
def test_straight_through_forward_is_binary_and_backward_is_its_surrogate(
    variant: str, derivative: Callable[[torch.Tensor], torch.Tensor]
) -> None:
    unit = StraightThroughEstimator(variant)
    pre_activation = torch.linspace(-4, 4, 9, requires_grad=True)
    uniform = torch.rand(9)
    sample = unit.sample(pre_activation, uniform)
    p = torch.sigmoid(pre_activation.detach())
    assert torch.equal(sample, (uniform < p).float())
    (gradient,) = torch.autograd.grad((sample * torch.arange(9.0)).sum(), pre_activation)
    torch.testing.assert_close(gradient, torch.arange(9.0) * derivative(p))
    assert unit.name == ("st" if variant == "identity" else "st_sigmoid")


def test_sts_sample_has_mean_p_and_fires_with_probability_sqrt_p() -> None:
    unit = StochasticTimesSmoothEstimator()
    for value in (-2.0, 0.3, 3.0):
        pre_activation = torch.full(GRID.shape, value, dtype=torch.float64)
        sample = unit.sample(pre_activation, GRID)
        p = 1 / (1 + math.exp(-value))
        assert float(sample.mean()) == pytest.approx(p, abs=1e-4)
        assert float((sample > 0).double().mean()) == pytest.approx(math.sqrt(p), abs=1e-4)
        torch.testing.assert_close(
            unit.firing_prob(pre_activation[:1]), torch.tensor([math.sqrt(p)], dtype=torch.float64)
        )


def test_sts_backward_treats_the_bernoulli_factor_as_constant() -> None:
    unit = StochasticTimesSmoothEstimator()
    pre_activation = torch.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    uniform = torch.tensor([0.0, 0.0, 0.999])  # fires, fires, does not fire
    sample = unit.sample(pre_activation, uniform)
    (gradient,) = torch.autograd.grad(sample.sum(), pre_activation)
    p = torch.sigmoid(pre_activation.detach())
    expected = torch.tensor([1.0, 1.0, 0.0]) * p.sqrt() * (1 - p) / 2
    torch.testing.assert_close(gradient, expected)


@pytest.mark.parametrize("noise_std", [0.5, 1.0, 2.0])
def test_noisy_rectifier_is_a_relu_of_gaussian_noise(noise_std: float) -> None:
    unit = NoisyRectifierEstimator(noise_std)
    value = 0.4
    pre_activation = torch.full(GRID.shape, value, dtype=torch.float64, requires_grad=True)
    sample = unit.sample(pre_activation, GRID)
    assert (sample >= 0).all()
    phi = 0.5 * math.erfc(-value / (noise_std * math.sqrt(2)))
    assert float((sample > 0).double().mean()) == pytest.approx(phi, abs=1e-4)
    torch.testing.assert_close(unit.firing_prob(pre_activation[:1].detach()), torch.tensor([phi], dtype=torch.float64))
    # E[relu(a + sigma z)] = a Phi(a/sigma) + sigma phi(a/sigma)
    density = math.exp(-0.5 * (value / noise_std) ** 2) / math.sqrt(2 * math.pi)
    assert float(sample.detach().mean()) == pytest.approx(value * phi + noise_std * density, abs=1e-3)
    (gradient,) = torch.autograd.grad(sample.sum(), pre_activation)
    torch.testing.assert_close(gradient, (sample > 0).double())


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_deterministic_output_of_each_estimator(name: str) -> None:
    unit = make_estimator(name)
    pre_activation = torch.tensor([-2.0, -0.1, 0.1, 2.0])
    output = unit.deterministic(pre_activation)
    expected = {
        "sts": (torch.sigmoid(pre_activation).sqrt() > 0.5).float() * torch.sigmoid(pre_activation).sqrt(),
        "noisy_rectifier": torch.relu(pre_activation),
    }.get(name, (pre_activation > 0).float())
    torch.testing.assert_close(output, expected)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_make_estimator_builds_every_registered_name(name: str) -> None:
    unit = make_estimator(name)
    assert isinstance(unit, ESTIMATORS[name]) and unit.name == name
    assert unit.propagates == (name not in ("local", "learned_predictor"))
    assert make_estimator(unit) is unit


def test_make_estimator_forwards_keyword_arguments() -> None:
    assert make_estimator("noisy_rectifier", noise_std=0.3).noise_std == 0.3
    predictor = make_estimator("learned_predictor", hidden_size=5, use_straight_through=True)
    assert predictor.regressor[0].in_features == 5 and predictor.regressor[0].out_features == 5


def test_untrained_predictor_predicts_zero_and_uses_the_documented_features() -> None:
    predictor = LearnedPredictorEstimator(hidden_size=8)
    a = torch.randn(6, 3)
    p = torch.sigmoid(a)
    h = (torch.rand(6, 3) < p).float()
    assert torch.equal(predictor.predict(h, p, a), torch.zeros(6, 3))
    features = predictor.features(h, p, a)
    assert features.shape == (6, 3, 4)
    torch.testing.assert_close(features[..., 3], h - p)
    with_st = LearnedPredictorEstimator(use_straight_through=True)
    signal = torch.randn(6, 3)
    torch.testing.assert_close(with_st.features(h, p, a, signal)[..., 4], signal)
    target = torch.randn(6, 3)
    torch.testing.assert_close(predictor.predictor_loss(torch.zeros(6, 3), target), target.pow(2).mean())


def test_predictor_with_inputs_starts_at_zero_and_checks_its_layer() -> None:
    predictor = LearnedPredictorEstimator(hidden_size=8, use_inputs=True)
    a = torch.randn(6, 4)
    p = torch.sigmoid(a)
    h = (torch.rand(6, 4) < p).float()
    x = torch.randn(6, 3)
    with pytest.raises(ValueError, match="needs the layer's inputs"):
        predictor.predict(h, p, a, inputs=x)  # not bound to a layer yet
    predictor.bind(3, 4)
    assert predictor.input_head is not None and predictor.input_head.out_features == 8
    assert torch.equal(predictor.predict(h, p, a, inputs=x), torch.zeros(6, 4))
    with pytest.raises(ValueError, match="needs the layer's inputs"):
        predictor.predict(h, p, a)
    with pytest.raises(ValueError, match="already bound"):
        predictor.bind(5, 4)
    plain = LearnedPredictorEstimator()
    plain.bind(3, 4)
    assert plain.input_head is None  # without use_inputs, bind changes nothing


def _fit_predictor(predictor: LearnedPredictorEstimator, weights: torch.Tensor, steps: int = 600) -> float:
    """Fit ``predictor`` by its own loss to ``g = (h - p) s`` with ``s_i = h_i (x . w_i) + noise``; return the
    mean squared error of its prediction to ``E[g | x, h] = (h - p) h (x . w_i)`` on fresh data."""
    generator = torch.Generator().manual_seed(0)

    def draw(rows: int) -> tuple[torch.Tensor, ...]:
        x = torch.randn(rows, weights.shape[0], generator=generator)
        a = torch.randn(rows, weights.shape[1], generator=generator)
        p = torch.sigmoid(a)
        h = (torch.rand(rows, weights.shape[1], generator=generator) < p).float()
        mean_signal = h * (x @ weights)
        signal = mean_signal + torch.randn(rows, weights.shape[1], generator=generator)
        return x, a, p, h, (h - p) * signal, (h - p) * mean_signal

    optimizer = torch.optim.Adam(predictor.parameters(), lr=1e-2)
    for _ in range(steps):
        x, a, p, h, target, _ = draw(256)
        loss = predictor.predictor_loss(predictor.predict(h, p, a, inputs=x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, a, p, h, _, expected = draw(4096)
    with torch.no_grad():
        return float((predictor.predict(h, p, a, inputs=x) - expected).pow(2).mean())


def test_predictor_with_inputs_learns_the_conditional_expectation_that_local_features_miss() -> None:
    """When the learning signal depends on the layer's input, E[g | x, h] is out of reach of the shared
    per-unit regressor F(a, p, h, h - p) but within the input-conditioned term's class."""
    torch.manual_seed(0)  # the regressors' initialisation
    weights = torch.tensor([[1.0, -1.0], [0.5, 2.0], [-1.5, 0.0]])  # 3 inputs, 2 units
    with_inputs = LearnedPredictorEstimator(hidden_size=8, use_inputs=True)
    with_inputs.bind(3, 2)
    local_only = LearnedPredictorEstimator(hidden_size=8)
    error_with_inputs = _fit_predictor(with_inputs, weights)
    error_local_only = _fit_predictor(local_only, weights)
    assert error_with_inputs < 0.02 < 0.1 < error_local_only


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: make_estimator("reinforce"),
            r"unknown estimator 'reinforce'; choose one of: local, learned_predictor",
        ),
        (lambda: StraightThroughEstimator("tanh"), r"variant must be 'identity' or 'sigmoid'"),
        (lambda: NoisyRectifierEstimator(0.0), r"noise_std must be > 0"),
        (lambda: LearnedPredictorEstimator(hidden_size=0), r"hidden_size must be > 0"),
        (
            lambda: LearnedPredictorEstimator(use_straight_through=True).features(*[torch.zeros(1, 1)] * 3),
            r"needs the straight-through signal",
        ),
    ],
)
def test_bad_estimator_arguments_raise_a_clear_error(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_every_estimator_documents_its_formula_source() -> None:
    """Code standard: each estimator's docstring cites the docs/method.md section (§N) it implements."""
    for kind in set(ESTIMATORS.values()):
        assert "docs/method.md §" in (kind.__doc__ or ""), kind.__name__
    assert "docs/method.md §" in (local_gradient.__doc__ or "")
