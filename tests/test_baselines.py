"""Baselines for the local estimator (docs/method.md §2): protocol, variance ordering, convergence to c_i*."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from policies.baselines import (
    BASELINES,
    Baseline,
    LearnedBaseline,
    NoBaseline,
    OptimalBaseline,
    RunningMeanBaseline,
    make_baseline,
)
from policies.bsn import BinaryStochasticNetwork
from policies.estimators import local_gradient
from policies.exact import Readout, exact_unit_moments, fit_baseline, make_tiny_network


def skewed_setup() -> tuple[BinaryStochasticNetwork, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """One input, one layer of three units with p far from 1/2, and a loss that depends on them.

    There ``c_i* = E[(h_i - p_i)^2 L] / E[(h_i - p_i)^2]`` is far from ``E[L]``, so the optimal
    baseline has a clearly lower variance than the running mean.
    """
    net = BinaryStochasticNetwork(1, [3]).double()
    with torch.no_grad():
        net.layers[0].weight.zero_()
        net.layers[0].bias.copy_(torch.tensor([2.2, -2.2, 0.5]))

    def loss(h: torch.Tensor) -> torch.Tensor:
        return 3.0 + 4.0 * h[:, 0] - 3.0 * h[:, 1] + 2.0 * h[:, 0] * h[:, 2]

    return net, torch.ones(1, 1, dtype=torch.float64), loss


def fitted(
    name: str, net: BinaryStochasticNetwork, inputs: torch.Tensor, loss: Callable, steps: int = 100, **kwargs: object
) -> Baseline:
    """The named baseline for ``net``, warmed up on ``steps`` fresh batches (see ``fit_baseline``) and frozen."""
    baseline = make_baseline(name, net.in_features, net.hidden_sizes).double()
    return fit_baseline(baseline, net, inputs, loss, steps=steps, **{"batch_size": 500, **kwargs})


def test_no_baseline_is_zero_for_every_layer() -> None:
    net = BinaryStochasticNetwork(3, [4, 2])
    inputs = torch.randn(5, 3)
    values = NoBaseline()(inputs, net(inputs))
    assert len(values) == 2 and all(torch.equal(v, torch.zeros(1, 1)) for v in values)


def test_running_mean_is_a_bias_corrected_exponential_average() -> None:
    net = BinaryStochasticNetwork(3, [2])
    inputs = torch.randn(4, 3)
    baseline = RunningMeanBaseline(decay=0.5)
    assert baseline.value() == 0.0
    out = net(inputs)
    baseline.observe(out, torch.full((4,), 2.0))
    torch.testing.assert_close(baseline.value(), torch.tensor(2.0))
    baseline.observe(out, torch.tensor([4.0, 6.0, 8.0, 10.0]))
    # (0.5 * 0.5 * 2 + 0.5 * 7) / (1 - 0.5**2) = 4 / 0.75
    torch.testing.assert_close(baseline.value(), torch.tensor(16.0 / 3.0))
    assert all(torch.equal(v, baseline.value().reshape(1, 1)) for v in baseline(inputs, out))


def test_optimal_baseline_running_ratio_matches_its_formula() -> None:
    net = BinaryStochasticNetwork(3, [2, 1])
    inputs = torch.randn(64, 3)
    baseline = OptimalBaseline(net.hidden_sizes, decay=0.0)
    assert torch.equal(baseline.value(), torch.zeros(3))
    out = net(inputs)
    signal = torch.randn(64)
    baseline.observe(out, signal)
    weights = torch.cat([(h - p).pow(2) for h, p in zip(out.samples, out.firing_probs, strict=True)], -1).detach()
    expected = (weights * signal.unsqueeze(-1)).sum(0) / weights.sum(0)
    torch.testing.assert_close(baseline.value(), expected)
    per_layer = baseline(inputs, out)
    assert [tuple(v.shape) for v in per_layer] == [(1, 2), (1, 1)]


def test_learned_baseline_loss_is_the_weighted_squared_error() -> None:
    net = BinaryStochasticNetwork(3, [2, 2])
    inputs = torch.randn(16, 3)
    out = net(inputs)
    signal = torch.randn(16)
    baseline = LearnedBaseline(3, net.hidden_sizes, net_arch=[8])
    c = baseline.predict(inputs, out)
    weights = torch.cat([(h - p).pow(2) for h, p in zip(out.samples, out.firing_probs, strict=True)], -1)
    expected = (weights * (signal.unsqueeze(-1) - c).pow(2)).sum(-1).mean()
    torch.testing.assert_close(baseline.loss(inputs, out, signal), expected)
    assert all(not v.requires_grad for v in baseline(inputs, out))


def test_learned_baseline_loads_the_state_of_its_single_regressor_layout() -> None:
    """A state dict that names the observation-conditioned regressor ``regressor.*`` (one regressor, not a list)
    loads into the same predictions."""
    baseline = LearnedBaseline(3, [2, 2], net_arch=[8])
    older = {key.replace("regressors.0.", "regressor."): value for key, value in baseline.state_dict().items()}
    loaded = LearnedBaseline(3, [2, 2], net_arch=[8])
    loaded.load_state_dict(older)
    net = BinaryStochasticNetwork(3, [2, 2])
    rows = torch.randn(5, 3)
    out = net(rows)
    torch.testing.assert_close(loaded.predict(rows, out), baseline.predict(rows, out))


def test_layer_input_baseline_reads_each_layers_own_input() -> None:
    """With ``condition="layer_input"`` layer l's units are predicted from the samples of layer l - 1 (the network's
    input for the first layer): changing the samples below a layer changes its prediction, and nothing else."""
    net = BinaryStochasticNetwork(3, [4, 2])
    inputs = torch.randn(8, 3)
    out = net(inputs)
    baseline = LearnedBaseline(3, net.hidden_sizes, condition="layer_input")
    first, second = baseline(inputs, out)
    torch.testing.assert_close(first, baseline.regressors[0](inputs).detach())
    torch.testing.assert_close(second, baseline.regressors[1](out.samples[0]).detach())
    flipped = out._replace(samples=[1.0 - out.samples[0], out.samples[1]])
    changed = baseline(inputs, flipped)
    torch.testing.assert_close(changed[0], first)
    assert not torch.allclose(changed[1], second)
    with pytest.raises(ValueError, match="unknown baseline condition 'action'"):
        LearnedBaseline(3, [2], condition="action")


def test_layer_input_baseline_lowers_the_upper_layers_variance_below_the_state_conditioned_one() -> None:
    """Top unit 1 copies bottom unit 0 and the loss rewards it; top unit 0 is a fair coin. On a fixed input a
    baseline of the observation is one constant per unit, so unit 0's signal keeps the loss's swing caused by
    the bottom unit's noise; a baseline of the layer below's samples predicts that swing and removes it."""
    net = BinaryStochasticNetwork(1, [2, 2]).double()
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.zero_()
            layer.bias.zero_()
        net.layers[1].weight[1, 0], net.layers[1].bias[1] = 8.0, -4.0  # h2_1 = h1_0 with probability 0.98

    def loss(top: torch.Tensor) -> torch.Tensor:
        return 3.0 + 5.0 * top[:, 1] + top[:, 0]

    inputs = torch.ones(1, 1, dtype=torch.float64)
    variances = {}
    for condition in ("features", "layer_input"):
        baseline = make_baseline("learned", 1, net.hidden_sizes, net_arch=[16], condition=condition).double()
        fit_baseline(baseline, net, inputs, loss, steps=300, batch_size=2000, learning_rate=0.05)
        rows = inputs.repeat(20000, 1)
        with torch.no_grad():
            out = net(rows)
            corrections = baseline(rows, out)
        coin, prob = out.samples[1][:, 0], out.firing_probs[1][:, 0]
        estimate = local_gradient(coin, prob, loss(out.output), corrections[1][:, 0])
        variances[condition] = float(estimate.var())
    assert variances["layer_input"] < 0.3 * variances["features"], variances


def test_optimal_baseline_has_the_lowest_exact_variance() -> None:
    """Exact, by enumeration: per unit Var[g_i](c*) <= Var[g_i](E[L]) and Var[g_i](0); summed over units
    the running mean's limit E[L] also beats no baseline here (per unit it need not)."""
    net, inputs, loss = skewed_setup()
    _, var_none, optimal = exact_unit_moments(net, inputs, loss)
    probability = torch.sigmoid(net.layers[0].bias.detach())
    mean_loss = float(3.0 + 4.0 * probability[0] - 3.0 * probability[1] + 2.0 * probability[0] * probability[2])
    _, var_mean, _ = exact_unit_moments(net, inputs, loss, mean_loss)
    _, var_optimal, _ = exact_unit_moments(net, inputs, loss, optimal)
    assert (var_optimal <= var_mean + 1e-12).all() and (var_optimal <= var_none + 1e-12).all()
    assert var_optimal.sum() < 0.7 * var_mean.sum() and var_mean.sum() < 0.5 * var_none.sum()
    for shift in (-0.3, 0.3):  # c* is the minimiser: moving away from it raises every unit's variance
        _, var_shifted, _ = exact_unit_moments(net, inputs, loss, optimal + shift)
        assert (var_shifted > var_optimal).all()


def test_optimal_baseline_has_lower_monte_carlo_variance_than_running_mean_and_none() -> None:
    net, inputs, loss = skewed_setup()
    rows = inputs.repeat(200_000, 1)
    variances = {}
    for name in ("none", "mean", "optimal"):
        baseline = fitted(name, net, inputs, loss)
        out = net(rows)
        (c,) = baseline(rows, out)
        g = local_gradient(out.samples[0], out.firing_probs[0], loss(out.output), c)
        variances[name] = g.var(0)
    # Exact ratios (previous test): optimal/mean ~ 0.5, mean/none ~ 0.25; Monte Carlo error ~1%.
    assert variances["optimal"].sum() < 0.8 * variances["mean"].sum()
    assert variances["mean"].sum() < 0.8 * variances["none"].sum()


@pytest.mark.parametrize("name", ["optimal", "learned"])
def test_trained_baselines_converge_to_the_exact_optimal_baseline_on_a_fixed_input(name: str) -> None:
    net = make_tiny_network(3, [3, 2], seed=5, weight_scale=1.5)
    inputs = torch.randn(1, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    readout = Readout(2, offset=3.0, seed=3)
    _, _, optimal = exact_unit_moments(net, inputs, readout)
    baseline = fitted(name, net, inputs, readout, steps=300, learning_rate=0.1)
    values = torch.cat(baseline(inputs, net(inputs)), dim=-1).squeeze(0)
    torch.testing.assert_close(values, optimal, atol=0.02, rtol=0)


def test_learned_baseline_learns_an_input_dependent_optimum() -> None:
    """Two inputs with different c_i*(x): one regressor output per unit tracks both (running ratios cannot)."""
    net, _, loss = skewed_setup()
    with torch.no_grad():  # pre-activations (0.7, -3.7, 0) at x = -1 and (-0.8, 0.8, 1.5) at x = +1
        net.layers[0].weight.copy_(torch.tensor([[-1.5], [1.5], [0.5]]))
        net.layers[0].bias.add_(torch.tensor([-1.5, 1.5, 0.5]))
    inputs = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    targets = torch.stack([exact_unit_moments(net, x.unsqueeze(0), loss)[2] for x in inputs])
    assert (targets[0] - targets[1]).abs().max() > 1.0
    baseline = fitted("learned", net, inputs, loss, steps=400, batch_size=2000, learning_rate=0.1)
    torch.testing.assert_close(baseline.predict(inputs, net(inputs)), targets, atol=0.1, rtol=0)


def test_make_baseline_builds_every_registered_name() -> None:
    for name, kind in BASELINES.items():
        baseline = make_baseline(name, 3, [2, 2])
        assert type(baseline) is kind and baseline.name == name
    assert make_baseline("mean", 3, [2], decay=0.5).decay == 0.5
    learned = make_baseline("learned", 3, [2, 2], net_arch=[8])
    rows = torch.randn(4, 3)
    assert isinstance(learned, LearnedBaseline)
    assert learned.predict(rows, BinaryStochasticNetwork(3, [2, 2])(rows)).shape == (4, 4)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: make_baseline("critic", 3, [2]), r"unknown baseline 'critic'.*none, mean, optimal, learned"),
        (lambda: RunningMeanBaseline(decay=1.0), r"decay must be in \[0, 1\)"),
        (lambda: OptimalBaseline([2], decay=-0.1), r"decay must be in \[0, 1\)"),
    ],
)
def test_bad_baseline_arguments_raise_a_clear_error(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()
