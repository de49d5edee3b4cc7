"""LocalPG's own update against the exact gradient, every layer of a 3-layer BSN policy.

The rollout holds *every* (state, hidden configuration, action) row of a tiny policy: 2 states x
2^6 hidden configurations of three 2-unit BSN layers x every discrete action (for a Box head, every
point of an action grid whose weighted sum is the integral over actions up to about 1e-8). LocalPG
scores it with its own code (``_score_rollout``: old log-probabilities and, with ``rao_blackwell``,
the posterior credit) and its minibatch loss (``_minibatch_loss``) is
back-propagated row by row, each row weighted by its probability under the policy. At ratio 1 that
weighted sum is the update's expected gradient, with no Monte Carlo error; it must equal
``-d J / d theta`` for ``J = mean_s sum_{h, a} P(h | s) pi(a | h) A(s, a)``, which autograd
differentiates here from the layers' weights directly (:func:`policies.exact.enumerate_network`,
independent of the policy's forward code). Per-neuron baselines do not depend on a unit's own sample,
so they leave the expectation unchanged and the check holds with each of them.

A sign flip, a dropped term or a wrong detach in any one layer changes that layer's expected gradient,
so it fails here; ``benchmarks/mutations.py`` applies such mutations and records which tests catch them.
"""

from __future__ import annotations

import copy
import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv

from agents import LocalPG
from policies.exact import configurations, enumerate_network

HIDDEN_SIZES = [2, 2, 2]
OBS_DIM = 3
STATES = torch.tensor([[0.7, -1.2, 0.4], [-0.5, 0.3, 1.1]])
#: A Box head's actions: a uniform grid, the same for every hidden configuration, each point weighted by
#: its Gaussian density times the spacing (:func:`box_density`). For a smooth, fast-decaying integrand
#: the grid's sum is the integral up to about ``exp(-2 pi^2 std^2 / spacing^2)`` (the trapezoid rule;
#: here std = spacing = e^0.8, so about 3e-9), so the weights of every hidden configuration sum to 1,
#: which the baseline identity needs.
BOX_LOG_STD = 0.8
BOX_SPACING = float(np.exp(BOX_LOG_STD))
BOX_GRID = BOX_SPACING * torch.arange(-8.0, 9.0).unsqueeze(-1)

ACTION_SPACES = {
    "Discrete": spaces.Discrete(3),
    "MultiDiscrete": spaces.MultiDiscrete([2, 3]),
    "MultiBinary": spaces.MultiBinary(2),
    "Box": spaces.Box(-1.0, 1.0, (1,), dtype=np.float32),
}


class StaticEnv(gym.Env):
    """Never stepped: it only gives LocalPG its spaces."""

    def __init__(self, action_space: spaces.Space) -> None:
        self.observation_space = spaces.Box(-5.0, 5.0, (OBS_DIM,), dtype=np.float32)
        self.action_space = action_space

    def reset(self, *, seed=None, options=None):
        return np.zeros(OBS_DIM, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(OBS_DIM, dtype=np.float32), 0.0, True, False, {}


#: Per-neuron baselines by test name: the policy's ``baseline`` and its ``baseline_kwargs``.
BASELINE_SETTINGS: dict[str, tuple[str, dict]] = {
    "value": ("value", {}),
    "mean": ("mean", {}),
    "optimal": ("optimal", {}),
    "learned": ("learned", {}),
    "learned_layer_input": ("learned", {"condition": "layer_input"}),
}


def make_model(
    space_name: str,
    rao_blackwell: bool,
    baseline: str,
    rows: int,
    hidden_coef: float,
    signed_inputs: bool = False,
    signed_head: bool = False,
    state_dependent_std: bool = False,
) -> LocalPG:
    """A LocalPG whose buffer holds ``rows`` rows (n_envs 1), with a non-trivial per-neuron baseline
    (``baseline``: a key of :data:`BASELINE_SETTINGS`); ``signed_inputs``, ``signed_head`` and ``state_dependent_std``
    as the policy's arguments."""
    baseline_name, baseline_kwargs = BASELINE_SETTINGS[baseline]
    env = DummyVecEnv([lambda: StaticEnv(ACTION_SPACES[space_name])])
    model = LocalPG(
        "MlpPolicy",
        env,
        n_steps=rows,
        batch_size=rows,
        n_epochs=1,
        normalize_advantage=False,
        rao_blackwell=rao_blackwell,
        hidden_coef=hidden_coef,
        seed=3,
        policy_kwargs={
            "net_arch": HIDDEN_SIZES,
            "baseline": baseline_name,
            "baseline_kwargs": baseline_kwargs,
            "bsn_init_gain": 2.0,
            "log_std_init": BOX_LOG_STD,
            "signed_inputs": signed_inputs,
            "signed_head": signed_head,
            "state_dependent_std": state_dependent_std,
        },
    )
    policy = model.policy
    torch.manual_seed(0)  # the same draws below whatever the baseline's construction consumed
    with torch.no_grad():
        for parameter in policy.action_net.parameters():  # a head whose output varies with the samples
            parameter.copy_(torch.randn_like(parameter))
        if isinstance(model.action_space, spaces.Box):  # Gaussian means well inside the grid
            policy.action_net.weight.mul_(0.6)
            if state_dependent_std:  # log-stds that vary with the samples, each std wide enough for the grid
                mean_rows = model.action_space.shape[0]
                policy.action_net.weight[mean_rows:].mul_(0.15 / 0.6)
                policy.action_net.bias[mean_rows:].fill_(BOX_LOG_STD + 0.2)
        if signed_head:  # the bit-reading head's map of the bits, W (2h - 1) / 2 + b + W 1 / 2 = W h + b
            weight = policy.action_net.weight.clone()
            policy.action_net.weight.copy_(weight / 2)
            policy.action_net.bias.add_(weight.sum(1) / 2)
        for layer in policy.bsn.layers:  # biases away from 0, so no unit sits at p = 1/2
            layer.bias.copy_(0.5 * torch.randn_like(layer.bias))
        neuron_baseline = policy.neuron_baseline
        if neuron_baseline is not None:
            # Running statistics away from zero and per-neuron; a learned regressor that varies with the state.
            for name, buffer in neuron_baseline.named_buffers():
                buffer.copy_(torch.rand_like(buffer) + (1.0 if name in ("weight", "denominator") else 0.0))
            for parameter in neuron_baseline.parameters():
                parameter.copy_(torch.randn_like(parameter))
            # Frozen for the check: the expectation identity needs one baseline for every row.
            neuron_baseline.observe = lambda output, signal: None  # type: ignore[method-assign]
    return model


def advantage_table(space: spaces.Space) -> torch.Tensor:
    """Fixed advantages ``A(s, a)``, (states, actions or grid points), offset from 0 so that a baseline
    has something to remove; on a Box grid a smooth function of the action, ``c0 + c1 a + c2 a^2``."""
    generator = torch.Generator().manual_seed(11)
    if not isinstance(space, spaces.Box):
        return 1.5 + torch.randn((len(STATES), len(discrete_actions(space))), generator=generator)
    c0, c1, c2 = (1.5 + torch.randn((len(STATES), 3, 1), generator=generator)).unbind(1)
    action = BOX_GRID[:, 0].unsqueeze(0)
    return c0 + c1 * action + 0.05 * c2 * action**2


def discrete_actions(space: spaces.Space) -> torch.Tensor:
    """Every action of a discrete space, as the buffer stores them: (n_actions,) or (n_actions, dims)."""
    if isinstance(space, spaces.Discrete):
        return torch.arange(space.n, dtype=torch.float32)
    if isinstance(space, spaces.MultiDiscrete):
        grid = itertools.product(*(range(int(n)) for n in space.nvec))
        return torch.tensor(list(grid), dtype=torch.float32)
    return configurations(int(space.n), torch.float32)


def head_log_probs(policy, top: torch.Tensor, space: spaces.Space, actions: torch.Tensor) -> torch.Tensor:
    """``log pi(a | h_top)`` of every action for each row of ``top``, (rows, n_actions), from the head's
    outputs (softmax per categorical group, or Bernoulli per bit)."""
    logits = policy.action_net(top)
    if isinstance(space, spaces.Discrete):
        return torch.log_softmax(logits, -1)
    if isinstance(space, spaces.MultiBinary):
        log_p, log_q = torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits)
        return (actions.unsqueeze(0) * log_p.unsqueeze(1) + (1 - actions.unsqueeze(0)) * log_q.unsqueeze(1)).sum(-1)
    total = 0
    for dim, group in enumerate(torch.split(logits, [int(n) for n in space.nvec], dim=-1)):
        total = total + torch.log_softmax(group, -1)[:, actions[:, dim].long()]
    return total


def box_density(policy, top: torch.Tensor) -> torch.Tensor:
    """The Gaussian head's density at every grid point for each row of ``top``, (rows, grid points)."""
    mean = policy.action_net(top)
    if policy.state_dependent_std:  # the head's outputs are [mean, log_std]
        mean, log_std = mean.chunk(2, dim=-1)
        std = log_std.exp().unsqueeze(1)
    else:
        std = policy.log_std.exp()
    z = (BOX_GRID.to(mean).unsqueeze(0) - mean.unsqueeze(1)) / std
    return (BOX_SPACING * torch.exp(-0.5 * z**2) / (std * (2 * torch.pi) ** 0.5)).prod(-1)


def exact_objective(policy, space: spaces.Space, table: torch.Tensor) -> torch.Tensor:
    """``J = mean_s sum_h P(h | s) E_{a ~ pi(. | h)}[A(s, a)]``, differentiable in every parameter
    (in the policy's dtype: the check runs it on a float64 copy)."""
    enumeration = enumerate_network(policy.bsn, STATES.to(policy.action_net.weight.dtype))
    top = enumeration.events[-1]
    if isinstance(space, spaces.Box):
        weights = box_density(policy, top)
        assert torch.allclose(weights.sum(-1), torch.ones(()).to(weights), atol=1e-6), "the grid must cover the mass"
    else:
        weights = head_log_probs(policy, top, space, discrete_actions(space).to(top)).exp()
    expected = (weights * table[enumeration.input_index]).sum(-1)
    return (enumeration.probability * expected).sum() / len(STATES)


def enumerated_rows(policy, space: spaces.Space, table: torch.Tensor):
    """Every row: (observation, hidden samples, action, advantage, probability weight / number of states)."""
    with torch.no_grad():
        enumeration = enumerate_network(policy.bsn, STATES)
        top = enumeration.events[-1]
        every = BOX_GRID if isinstance(space, spaces.Box) else discrete_actions(space)
        actions = every.unsqueeze(0).expand(len(top), *every.shape)
        if isinstance(space, spaces.Box):
            action_weights = box_density(policy, top)
        else:
            action_weights = head_log_probs(policy, top, space, every).exp()
        advantages = table[enumeration.input_index]
        per_action = actions.shape[1]
        weights = (enumeration.probability.unsqueeze(1) * action_weights).reshape(-1) / len(STATES)
        repeat = torch.arange(len(top)).repeat_interleave(per_action)
        hidden = torch.cat(enumeration.events, -1)[repeat].to(torch.uint8)
        observations = enumeration.inputs[repeat]
        return observations, hidden, actions.reshape(len(repeat), *actions.shape[2:]), advantages.reshape(-1), weights


def fill_rollout(model: LocalPG, table: torch.Tensor) -> dict[tuple[bytes, ...], torch.Tensor]:
    """Put every enumerated row into LocalPG's buffer, score it with LocalPG's own code, and return each
    row's probability weight keyed by its (observation, hidden, action) bytes."""
    policy = model.policy
    observations, hidden, actions, advantages, weights = enumerated_rows(policy, model.action_space, table)
    buffer = model.rollout_buffer
    with torch.no_grad():
        old_log_prob = policy.evaluate_hidden(observations, actions, hidden).action_log_prob
    for row in range(len(weights)):
        zero = torch.zeros(1)
        one = slice(row, row + 1)
        buffer.add(observations[one], actions[one], zero, zero, zero, old_log_prob[one], hidden[one])
    buffer.tensors.advantages = advantages.reshape(-1, 1).clone()
    buffer.tensors.returns = advantages.reshape(-1, 1).clone()
    model._score_rollout()  # LocalPG's own scoring: P_old of every unit and, if asked, the posteriors
    return {
        (obs.numpy().tobytes(), h.numpy().tobytes(), a.numpy().tobytes()): w
        for obs, h, a, w in zip(observations, hidden, actions, weights, strict=True)
    }


def row_key(batch) -> tuple[bytes, ...]:
    return tuple(column[0].numpy().tobytes() for column in (batch.observations, batch.hidden, batch.actions))


def expected_update_gradient(model: LocalPG, table: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sum over the enumerated rows of (row probability) x (gradient of LocalPG's minibatch loss on that row)."""
    policy = model.policy
    weight_of = fill_rollout(model, table)
    policy.optimizer.zero_grad()
    for batch in model.rollout_buffer.get(batch_size=1):  # one row at a time, in the buffer's (shuffled) order
        loss, _stats = model._minibatch_loss(batch, 0.2)
        (weight_of[row_key(batch)] * loss).backward()
    return {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None}


def exact_gradient(model: LocalPG, table: torch.Tensor) -> dict[str, torch.Tensor]:
    """``d J / d theta`` in float64, on a copy of the policy."""
    policy = copy.deepcopy(model.policy).double()
    exact_objective(policy, model.action_space, table.double()).backward()
    return {name: p.grad.float() for name, p in policy.named_parameters() if p.grad is not None}


def checked_parameters(model: LocalPG) -> list[str]:
    names = [f"mlp_extractor.bsn.layers.{i}.{kind}" for i in range(len(HIDDEN_SIZES)) for kind in ("weight", "bias")]
    names += ["action_net.weight", "action_net.bias"]
    if isinstance(model.action_space, spaces.Box) and not model.policy.state_dependent_std:
        names.append("log_std")
    return names


def assert_update_is_exact(model: LocalPG, table: torch.Tensor, hidden_coef: float) -> None:
    """The update's expected gradient equals ``-d J / d theta`` for every checked parameter (times ``hidden_coef``
    for the BSN layers), each far enough from 0 for the check to bite."""
    exact = exact_gradient(model, table)
    update = expected_update_gradient(model, table)
    for name in checked_parameters(model):
        scale = hidden_coef if ".bsn.layers." in name else 1.0
        expected = -scale * exact[name]
        assert expected.abs().max() > 1e-3, f"{name}: the exact gradient must be far from 0 for the check to bite"
        torch.testing.assert_close(update[name], expected, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("baseline", list(BASELINE_SETTINGS))
@pytest.mark.parametrize("rao_blackwell", [False, True], ids=["sample_credit", "posterior_credit"])
@pytest.mark.parametrize("space_name", list(ACTION_SPACES))
def test_update_gradient_is_exact_in_every_layer(space_name: str, rao_blackwell: bool, baseline: str) -> None:
    """Every BSN layer's weight and bias gradient, and the action head's, equal the exact gradient of the
    expected advantage (times ``hidden_coef`` for the BSN layers), for each credit rule and baseline."""
    hidden_coef = 1.7
    space = ACTION_SPACES[space_name]
    table = advantage_table(space)
    rows = len(STATES) * 2 ** sum(HIDDEN_SIZES) * table.shape[1]
    model = make_model(space_name, rao_blackwell, baseline, rows, hidden_coef)
    assert_update_is_exact(model, table, hidden_coef)


@pytest.mark.parametrize("reading", ["signed_inputs", "signed_head"])
@pytest.mark.parametrize("rao_blackwell", [False, True], ids=["sample_credit", "posterior_credit"])
@pytest.mark.parametrize("space_name", ["Discrete", "Box"])
def test_update_gradient_is_exact_with_signed_unit_readings(space_name: str, rao_blackwell: bool, reading: str) -> None:
    """As above, for a policy whose layers above the first read the units below as signs (``signed_inputs``), or
    whose action head reads the top layer's units as signs (``signed_head``): the local rule and the posterior
    credit (which must shift a child, or the head's output, by ``2 W`` per flip) stay exact."""
    hidden_coef = 1.7
    table = advantage_table(ACTION_SPACES[space_name])
    rows = len(STATES) * 2 ** sum(HIDDEN_SIZES) * table.shape[1]
    model = make_model(space_name, rao_blackwell, "value", rows, hidden_coef, **{reading: True})
    assert_update_is_exact(model, table, hidden_coef)


@pytest.mark.parametrize("signed_head", [False, True], ids=["bit_head", "signed_head"])
@pytest.mark.parametrize("rao_blackwell", [False, True], ids=["sample_credit", "posterior_credit"])
def test_update_gradient_is_exact_with_state_dependent_std(rao_blackwell: bool, signed_head: bool) -> None:
    """As above, for a Gaussian head whose log-std is a function of the top layer's samples
    (``state_dependent_std``), read as bits or as signs: flipping a top unit moves the std as well as the mean,
    and posterior credit must score both."""
    hidden_coef = 1.7
    table = advantage_table(ACTION_SPACES["Box"])
    rows = len(STATES) * 2 ** sum(HIDDEN_SIZES) * table.shape[1]
    model = make_model("Box", rao_blackwell, "value", rows, hidden_coef, signed_head=signed_head,
                       state_dependent_std=True)
    assert_update_is_exact(model, table, hidden_coef)


@pytest.mark.parametrize("baseline", ["optimal", "learned", "learned_layer_input"])
@pytest.mark.parametrize("rao_blackwell", [False, True], ids=["sample_credit", "posterior_credit"])
def test_each_row_is_credited_against_its_own_layers_baseline(rao_blackwell: bool, baseline: str) -> None:
    """Row by row, every layer's gradient is ``-hidden_coef (credit - p)(A - c_l) x^T`` with ``c_l`` that layer's
    per-neuron baseline. A baseline leaves the expectation unchanged, so the exact check above cannot see a
    baseline added instead of subtracted, or taken from another layer; this one can (the two baselines here
    differ per unit and per layer)."""
    hidden_coef = 1.7
    space = ACTION_SPACES["Discrete"]
    table = advantage_table(space)
    model = make_model("Discrete", rao_blackwell, baseline, len(STATES) * 2 ** sum(HIDDEN_SIZES) * 3, hidden_coef)
    fill_rollout(model, table)
    policy = model.policy
    for batch, _ in zip(model.rollout_buffer.get(batch_size=1), range(12), strict=False):
        policy.optimizer.zero_grad()
        loss, _stats = model._minibatch_loss(batch, 0.2)
        loss.backward()
        with torch.no_grad():
            features = policy.actor_features(batch.observations)
            output = policy.bsn(features, given_samples=policy.bsn.unpack_samples(batch.hidden))
            corrections = policy.neuron_baseline(features, output)
            credits = (
                torch.split(batch.old_posterior, HIDDEN_SIZES, dim=-1) if rao_blackwell else output.samples
            )
        for index, layer in enumerate(policy.bsn.layers):
            signal = batch.advantages.unsqueeze(-1) - corrections[index]
            unit = (credits[index] - output.firing_probs[index]) * signal
            expected = -hidden_coef * unit.T @ output.layer_inputs[index]
            torch.testing.assert_close(layer.weight.grad, expected, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(layer.bias.grad, -hidden_coef * unit.sum(0), rtol=1e-4, atol=1e-6)
