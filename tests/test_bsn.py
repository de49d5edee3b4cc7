"""BinaryStochasticNetwork: structure, sampling, log-probabilities, deterministic mode, re-scoring, no-flow rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from policies.bsn import BinaryStochasticNetwork
from policies.estimators import (
    ESTIMATORS,
    LocalEstimator,
    NoisyRectifierEstimator,
    StraightThroughEstimator,
    local_gradient,
)
from policies.exact import enumerate_network, rectifier_expected_loss

BINARY_ESTIMATORS = ["local", "learned_predictor", "st", "st_sigmoid"]
EXTREME = 1e4


def extreme_network(estimator: str) -> tuple[BinaryStochasticNetwork, torch.Tensor]:
    """Two layers whose pre-activations are +-1e4 (first layer) for a one-hot input."""
    net = BinaryStochasticNetwork(2, [2, 2], estimator)
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[EXTREME, -EXTREME], [-EXTREME, EXTREME]]))
        net.layers[0].bias.zero_()
        net.layers[1].weight.copy_(torch.tensor([[EXTREME, 0.0], [0.0, -EXTREME]]))
        net.layers[1].bias.zero_()
    return net, torch.tensor([[1.0, 0.0], [0.0, 1.0]])


def test_layers_are_a_module_list_of_linear_maps() -> None:
    net = BinaryStochasticNetwork(5, [4, 3, 2])
    assert isinstance(net.layers, nn.ModuleList)
    assert [type(layer) for layer in net.layers] == [nn.Linear] * 3
    assert [(layer.in_features, layer.out_features) for layer in net.layers] == [(5, 4), (4, 3), (3, 2)]
    assert (net.total_units, net.out_features, net.is_local, net.propagates) == (9, 2, True, False)
    assert isinstance(net.estimator, LocalEstimator)


def test_learned_predictor_gets_one_instance_per_layer() -> None:
    net = BinaryStochasticNetwork(3, [2, 2], "learned_predictor", {"hidden_size": 4})
    assert net.estimators[0] is not net.estimators[1]
    first, second = (list(e.parameters()) for e in net.estimators)
    assert all(a is not b for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_forward_returns_samples_probabilities_and_joint_log_prob(estimator: str) -> None:
    net = BinaryStochasticNetwork(3, [4, 2], estimator)
    out = net(torch.randn(7, 3))
    for tensors in (out.samples, out.firing_probs, out.pre_activations, out.unit_log_probs):
        assert [tuple(t.shape) for t in tensors] == [(7, 4), (7, 2)]
    assert out.log_prob.shape == (7,)
    assert out.output is out.samples[-1]
    torch.testing.assert_close(out.log_prob, sum(lp.sum(-1) for lp in out.unit_log_probs))
    assert all(((p > 0) & (p < 1)).all() for p in out.firing_probs)
    if estimator in BINARY_ESTIMATORS:
        assert all(((s == 0) | (s == 1)).all() for s in out.samples)


def test_local_log_prob_is_the_bernoulli_log_likelihood_of_every_layer() -> None:
    net = BinaryStochasticNetwork(3, [4, 2])
    inputs = torch.randn(50, 3)
    out = net(inputs)
    expected = torch.zeros(50)
    layer_input = inputs
    for linear, sample in zip(net.layers, out.samples, strict=True):
        p = torch.sigmoid(linear(layer_input))
        expected = expected + (sample * p.log() + (1 - sample) * (1 - p).log()).sum(-1)
        layer_input = sample
    torch.testing.assert_close(out.log_prob, expected)


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_log_prob_and_its_gradient_are_finite_at_extreme_pre_activations(estimator: str) -> None:
    net, inputs = extreme_network(estimator)
    out = net(inputs)
    assert out.pre_activations[0].abs().max() == EXTREME
    assert torch.isfinite(out.log_prob).all()
    out.log_prob.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.layers.parameters())


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_unit_log_prob_is_finite_and_normalised_for_likely_and_unlikely_events(estimator: str) -> None:
    """Both events at ``a = +-1e4`` (one of them has probability ~exp(-1e4)), and across moderate ``a``."""
    unit = BinaryStochasticNetwork(1, [1], estimator).estimator
    pre_activation = torch.tensor([-EXTREME, -3.0, -0.2, 0.0, 0.4, 5.0, EXTREME], requires_grad=True)
    fired = unit.unit_log_prob(torch.ones(7), pre_activation)
    silent = unit.unit_log_prob(torch.zeros(7), pre_activation)
    assert torch.isfinite(fired).all() and torch.isfinite(silent).all()
    assert fired[0] < -50 and silent[-1] < -50, "the unlikely events keep a large finite penalty"
    torch.testing.assert_close(fired.exp() + silent.exp(), torch.ones(7), atol=1e-6, rtol=0)
    (gradient,) = torch.autograd.grad((fired + silent).sum(), pre_activation)
    assert torch.isfinite(gradient).all()


def test_local_log_prob_gradient_is_h_minus_p() -> None:
    """docs/method.md §1: d log P(h) / da = h - p, the local estimator's factor."""
    net = BinaryStochasticNetwork(3, [5])
    out = net(torch.randn(20, 3))
    (gradient,) = torch.autograd.grad(out.log_prob.sum(), out.pre_activations[0])
    torch.testing.assert_close(gradient, out.samples[0] - out.firing_probs[0])


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_deterministic_mode_is_noise_free_and_fires_iff_p_above_half(estimator: str) -> None:
    net = BinaryStochasticNetwork(3, [6, 4], estimator)
    inputs = torch.randn(30, 3)
    state = torch.get_rng_state()
    first, second = net(inputs, deterministic=True), net(inputs, deterministic=True)
    assert torch.equal(torch.get_rng_state(), state), "deterministic mode must not consume random numbers"
    for a, b in zip(first.samples, second.samples, strict=True):
        assert torch.equal(a, b)
    for sample, prob in zip(first.samples, first.firing_probs, strict=True):
        assert torch.equal(sample > 0, prob > 0.5)
    torch.testing.assert_close(first.pre_activations[1], net.layers[1](first.samples[0]))


@pytest.mark.parametrize("estimator", [name for name in ESTIMATORS if name != "noisy_rectifier"])
def test_mean_field_units_output_their_expected_value_and_feed_it_up(estimator: str) -> None:
    """``deterministic_units="mean_field"``: each unit outputs ``E[h | a]``, enumerated over its events (STS's
    ``sqrt(p) * b`` included), and the layer above reads those outputs; no random numbers are drawn."""
    net = BinaryStochasticNetwork(3, [4, 3], estimator, signed_inputs=True, deterministic_units="mean_field").double()
    inputs = torch.randn(6, 3, dtype=torch.float64)
    state = torch.get_rng_state()
    out = net(inputs, deterministic=True)
    assert torch.equal(torch.get_rng_state(), state)
    single = BinaryStochasticNetwork(3, [4], estimator).double()
    single.layers[0].load_state_dict(net.layers[0].state_dict())
    enumeration = enumerate_network(single, inputs)
    expected = torch.zeros(6, 4, dtype=torch.float64).index_add_(
        0, enumeration.input_index, enumeration.probability.unsqueeze(1) * enumeration.values[0]
    )
    torch.testing.assert_close(out.samples[0], expected.detach())
    torch.testing.assert_close(out.pre_activations[1], 2.0 * out.samples[0] @ net.layers[1].weight.T
                               + net.layers[1].bias - net.layers[1].weight.sum(1))
    net.deterministic_units = "threshold"
    thresholded = net.estimators[0].deterministic(out.pre_activations[0])
    assert torch.equal(net(inputs, deterministic=True).samples[0], thresholded)


def test_noisy_rectifier_mean_output_is_its_expected_output() -> None:
    """``E[max(0, a + sigma z)]`` in closed form against quadrature."""
    estimator = NoisyRectifierEstimator(noise_std=0.7)
    for value in (-2.0, -0.3, 0.0, 0.4, 1.5):
        pre_activation = torch.tensor(value, dtype=torch.float64)
        quadrature = rectifier_expected_loss(pre_activation, lambda h: h[:, 0], noise_std=0.7)
        torch.testing.assert_close(estimator.mean_output(pre_activation), quadrature, atol=1e-6, rtol=1e-6)


def test_an_unknown_deterministic_readout_names_the_choices() -> None:
    with pytest.raises(ValueError, match="deterministic_units must be one of threshold, mean_field, got 'mean'"):
        BinaryStochasticNetwork(3, [4], deterministic_units="mean")


@pytest.mark.parametrize("estimator", ["local", "learned_predictor"])
def test_given_samples_rescore_the_same_log_prob_and_gradient(estimator: str) -> None:
    net = BinaryStochasticNetwork(3, [4, 3], estimator)
    inputs = torch.randn(40, 3)
    out = net(inputs)
    packed = net.pack_samples(out.samples)
    assert packed.dtype == torch.uint8 and packed.shape == (40, 7)
    rescored = net(inputs, given_samples=net.unpack_samples(packed))
    torch.testing.assert_close(rescored.log_prob, out.log_prob)
    for a, b in zip(rescored.samples, out.samples, strict=True):
        assert torch.equal(a, b)
    first = torch.autograd.grad(out.log_prob.sum(), list(net.layers.parameters()))
    second = torch.autograd.grad(rescored.log_prob.sum(), list(net.layers.parameters()))
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b)


def test_given_samples_score_samples_the_network_would_not_draw() -> None:
    """Re-scoring uses the given samples as the next layer's input, whatever the noise would have drawn."""
    net = BinaryStochasticNetwork(2, [3, 2])
    inputs = torch.randn(8, 2)
    given = [torch.ones(8, 3), torch.zeros(8, 2)]
    out = net(inputs, given_samples=given)
    torch.testing.assert_close(out.pre_activations[1], net.layers[1](torch.ones(8, 3)))
    p1, p2 = torch.sigmoid(net.layers[0](inputs)), torch.sigmoid(out.pre_activations[1])
    torch.testing.assert_close(out.log_prob, p1.log().sum(-1) + (1 - p2).log().sum(-1))


def test_local_estimator_passes_no_gradient_to_the_layer_below() -> None:
    net = BinaryStochasticNetwork(3, [4, 2])
    out = net(torch.randn(16, 3))
    assert not out.samples[0].requires_grad and not out.output.requires_grad
    top_terms = out.pre_activations[1].sum() + out.unit_log_probs[1].sum() + out.firing_probs[1].sum()
    assert torch.autograd.grad(top_terms, net.layers[0].weight, allow_unused=True) == (None,)


def test_bottom_layer_update_depends_on_the_top_layer_only_through_the_broadcast_signal() -> None:
    """``dW_1 = (h_1 - p_1)(L - c) x``: changing W_2 with the samples and L held fixed leaves dW_1 unchanged."""
    net = BinaryStochasticNetwork(3, [4, 2])
    inputs = torch.randn(32, 3)
    samples = [s.detach() for s in net(inputs).samples]
    signal = torch.randn(32)

    def bottom_update() -> torch.Tensor:
        out = net(inputs, given_samples=samples)
        gradients = [local_gradient(h, p, signal) for h, p in zip(out.samples, out.firing_probs, strict=True)]
        (weight_gradient,) = torch.autograd.grad(net.surrogate(out, gradients), net.layers[0].weight)
        return weight_gradient

    before = bottom_update()
    h, p = samples[0], torch.sigmoid(net.layers[0](inputs)).detach()
    torch.testing.assert_close(before, ((h - p) * signal.unsqueeze(-1)).T @ inputs)
    with torch.no_grad():
        net.layers[1].weight.mul_(-3.0).add_(1.0)
        net.layers[1].bias.add_(2.0)
    torch.testing.assert_close(bottom_update(), before)


@pytest.mark.parametrize(("estimator", "propagates"), [("local", False), ("st", True), ("sts", True)])
def test_propagating_estimators_back_propagate_into_the_layer_below(estimator: str, propagates: bool) -> None:
    net = BinaryStochasticNetwork(3, [4, 2], estimator)
    out = net(torch.randn(16, 3))
    assert out.output.requires_grad == propagates
    if propagates:
        (gradient,) = torch.autograd.grad(out.output.sum(), net.layers[0].weight)
        assert gradient.abs().sum() > 0
    assert net.propagates == propagates


def test_noise_as_sequence_or_callable_reproduces_samples() -> None:
    net = BinaryStochasticNetwork(3, [5, 4], "st_sigmoid")
    inputs = torch.randn(10, 3)
    noise = [torch.rand(10, 5), torch.rand(10, 4)]
    by_list = net(inputs, noise=noise)
    by_callable = net(inputs, noise=lambda index, shape: noise[index])
    for a, b in zip(by_list.samples, by_callable.samples, strict=True):
        assert torch.equal(a, b)
    torch.testing.assert_close(by_list.samples[0], (noise[0] < by_list.firing_probs[0]).float())


def test_global_seed_reproduces_samples(seeded: int) -> None:
    net = BinaryStochasticNetwork(3, [5, 4])
    inputs = torch.randn(10, 3)
    torch.manual_seed(seeded)
    first = net(inputs).samples
    torch.manual_seed(seeded)
    second = net(inputs).samples
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize(
    ("in_features", "hidden_sizes", "message"),
    [
        (0, [2], "in_features"),
        (2.5, [2], "in_features"),
        ("3", [2], "in_features"),
        (3, [], "hidden_sizes"),
        (3, [0], "hidden_sizes"),
        (3, [4, -1], "hidden_sizes"),
        (3, [2.5], "hidden_sizes"),
        (3, ["4"], "hidden_sizes"),
        (3, 4, "hidden_sizes"),
        (3, "44", "hidden_sizes"),
    ],
)
def test_bad_sizes_raise_a_clear_error(in_features: object, hidden_sizes: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BinaryStochasticNetwork(in_features, hidden_sizes)  # type: ignore[arg-type]


def test_unknown_estimator_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown estimator 'reinforce'.*local"):
        BinaryStochasticNetwork(3, [2], "reinforce")


def test_a_parametrised_estimator_instance_cannot_be_shared_by_layers() -> None:
    from policies.estimators import LearnedPredictorEstimator

    with pytest.raises(ValueError, match="by name"):
        BinaryStochasticNetwork(3, [2, 2], LearnedPredictorEstimator())
    shared = StraightThroughEstimator("identity")
    net = BinaryStochasticNetwork(3, [2, 2], shared)
    assert net.estimators[0] is shared and net.estimators[1] is shared


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inputs": torch.randn(4, 2)}, "expected inputs of shape"),
        ({"inputs": torch.randn(3)}, "expected inputs of shape"),
        ({"inputs": torch.randn(4, 3), "given_samples": [torch.ones(4, 2)]}, "given_samples must hold 2"),
        ({"inputs": torch.randn(4, 3), "noise": [torch.rand(4, 2), torch.rand(5, 2)]}, "noise for layer 1"),
    ],
)
def test_bad_forward_arguments_raise_a_clear_error(kwargs: dict, message: str) -> None:
    net = BinaryStochasticNetwork(3, [2, 2])
    with pytest.raises(ValueError, match=message):
        net(**kwargs)


def test_given_samples_are_refused_by_propagating_estimators() -> None:
    net = BinaryStochasticNetwork(3, [2], "st")
    with pytest.raises(ValueError, match="only supported by local estimators"):
        net(torch.randn(4, 3), given_samples=[torch.ones(4, 2)])


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_sample_draws_exactly_the_samples_of_forward(estimator: str) -> None:
    """``sample`` (the acting path, no scoring) gives forward's samples for the same noise, and its
    deterministic mode forward's noise-free outputs; bad inputs raise the same error."""
    torch.manual_seed(0)
    net = BinaryStochasticNetwork(3, [6, 4], estimator)
    inputs = torch.randn(9, 3)
    noise = [torch.rand(9, 6), torch.rand(9, 4)]
    for expected, got in zip(net(inputs, noise=noise).samples, net.sample(inputs, noise=noise), strict=True):
        torch.testing.assert_close(got, expected)
    for expected, got in zip(
        net(inputs, deterministic=True).samples, net.sample(inputs, deterministic=True), strict=True
    ):
        torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match=r"expected inputs of shape \(batch, 3\)"):
        net.sample(torch.randn(9, 4))


def test_output_rows_selects_the_same_rows_in_every_field() -> None:
    net = BinaryStochasticNetwork(3, [4, 2])
    inputs = torch.randn(10, 3)
    out = net(inputs)
    picked = out.rows(slice(None, None, 3))
    assert torch.equal(picked.inputs, inputs[::3]) and torch.equal(picked.log_prob, out.log_prob[::3])
    for whole, part in zip(out[:4], picked[:4], strict=True):
        assert all(torch.equal(w[::3], p) for w, p in zip(whole, part, strict=True))
