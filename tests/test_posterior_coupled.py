"""Coupled posterior credit (``LocalPG(coupled_posterior=True)``, :func:`policies.posterior.coupled_noise`,
:meth:`BinaryStochasticPolicy.coupled_posteriors`): brute-force and exact checks on a tiny 3-layer network,
enumerating every hidden state, every action and every cell of the noise of the layers above."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnv
from tiny_policies import ACTION_SPACES, UNIT_READINGS
from tiny_policies import tiny_policy as tiny_sized_policy

from agents import LocalPG
from policies import BinaryStochasticPolicy
from policies.exact import configurations
from policies.posterior import coupled_noise

SIZES = [2, 2, 2]  # three layers: the bottom two's credit reads the layers above through the held noise


def tiny_policy(action_space: spaces.Space, reading: str = "bit_inputs", seed: int = 0) -> BinaryStochasticPolicy:
    torch.manual_seed(seed)
    return tiny_sized_policy(SIZES, action_space, reading, init_gain=3.0).double()


def by_layer(hidden: torch.Tensor) -> list[torch.Tensor]:
    """Packed per-unit samples (rows, all units) as the network's per-layer ``given_samples``."""
    return list(torch.split(hidden, SIZES, dim=-1))


def sample_actions(space: spaces.Space, rows: int) -> torch.Tensor:
    space.seed(1)
    actions = torch.as_tensor(np.stack([space.sample() for _ in range(rows)])).double()
    return actions.reshape(rows) if isinstance(space, spaces.Discrete) else actions


def redrawn_log_joint(
    policy: BinaryStochasticPolicy, obs: torch.Tensor, actions: torch.Tensor, hidden: torch.Tensor,
    noise: list[torch.Tensor], layer: int,
) -> torch.Tensor:
    """``log P(h_l | s) + log pi(a | h_top)`` with the layers above ``layer`` drawn as ``1[u < p]`` from ``noise``,
    written with the network's forward pass on given samples, one layer at a time (not the code under test)."""
    hidden = hidden.clone()
    offsets = np.cumsum([0, *SIZES])
    for above in range(layer + 1, len(SIZES)):
        output = policy.bsn(obs, given_samples=by_layer(hidden))
        drawn = (noise[above] < output.firing_probs[above]).double()
        hidden[:, offsets[above]:offsets[above + 1]] = drawn
    output = policy.bsn(obs, given_samples=by_layer(hidden))
    action_log_prob = policy._get_action_dist_from_latent(output.output).log_prob(actions)
    return output.unit_log_probs[layer].sum(-1) + action_log_prob


@pytest.mark.parametrize("reading", list(UNIT_READINGS))
@pytest.mark.parametrize("space_name", list(ACTION_SPACES))
def test_coupled_posterior_is_the_conditional_given_the_action_and_the_noise_above(
    space_name: str, reading: str
) -> None:
    """q_i = P(h_i = 1 | h_{-i}, u, a, s): brute force from the joint with unit i set to 1 and to 0 and the
    layers above redrawn from the held noise; the noise draws the stored samples again; the top layer's
    credit is the Markov-blanket posterior's."""
    space = ACTION_SPACES[space_name]
    policy = tiny_policy(space, reading)
    rows = 24
    generator = torch.Generator().manual_seed(5)
    obs = (torch.rand(rows, 2, generator=generator, dtype=torch.float64) * 2 - 1)
    hidden = (torch.rand(rows, sum(SIZES), generator=generator) < 0.5).double()
    actions = sample_actions(space, rows)
    uniform = [torch.rand(rows, units, generator=generator, dtype=torch.float64) for units in SIZES]
    output = policy.bsn(obs, given_samples=by_layer(hidden))
    noise = [coupled_noise(h, p, v) for h, p, v in zip(output.samples, output.firing_probs, uniform, strict=True)]
    for h, p, u in zip(output.samples, output.firing_probs, noise, strict=True):
        assert torch.equal((u < p).double(), h), "the coupled noise must draw the stored samples again"

    coupled = policy.coupled_posteriors(output, actions, uniform)
    offsets = np.cumsum([0, *SIZES])
    with torch.no_grad():
        for layer in range(len(SIZES)):
            for unit in range(SIZES[layer]):
                on, off = hidden.clone(), hidden.clone()
                on[:, offsets[layer] + unit], off[:, offsets[layer] + unit] = 1.0, 0.0
                log_odds = redrawn_log_joint(policy, obs, actions, on, noise, layer) - redrawn_log_joint(
                    policy, obs, actions, off, noise, layer
                )
                torch.testing.assert_close(
                    coupled[layer][:, unit], torch.sigmoid(log_odds), msg=f"layer {layer} unit {unit}"
                )
    torch.testing.assert_close(coupled[-1], policy.unit_posteriors(output, actions)[-1])
    # Below the top, the coupled credit differs from the Markov blanket's (it conditions on other things).
    assert not torch.allclose(coupled[0], policy.unit_posteriors(output, actions)[0])


def noise_cells(policy: BinaryStochasticPolicy, obs: torch.Tensor, hidden: torch.Tensor):
    """Every cell of the noise of the layers above the bottom, for the stored ``hidden`` (1, units): yields the
    per-layer uniform ``v`` at the cell's midpoint and the cell's probability. Within a cell every redraw of
    every flip gives the same samples: its boundaries are each unit's firing probability under every
    configuration of the layer below it."""
    output = policy.bsn(obs, given_samples=by_layer(hidden))
    per_unit = []  # (layer, unit, [(v, probability), ...])
    for layer in range(1, len(SIZES)):
        below = configurations(SIZES[layer - 1], torch.float64)
        thresholds = torch.sigmoid(policy.bsn.layers[layer](below)).T  # (units, configurations below)
        for unit in range(SIZES[layer]):
            p = float(output.firing_probs[layer][0, unit])
            fired = bool(output.samples[layer][0, unit] > 0.5)
            low, high = (0.0, p) if fired else (p, 1.0)
            edges = sorted({low, high, *(float(t) for t in thresholds[unit] if low < float(t) < high)})
            cells = []
            for start, end in itertools.pairwise(edges):
                middle = 0.5 * (start + end)
                v = middle / p if fired else (middle - p) / (1.0 - p)
                cells.append((v, (end - start) / (high - low)))
            per_unit.append((layer, unit, cells))
    for choice in itertools.product(*(cells for _, _, cells in per_unit)):
        uniform = [torch.zeros(1, units, dtype=torch.float64) for units in SIZES]
        probability = 1.0
        for (layer, unit, _cells), (v, weight) in zip(per_unit, choice, strict=True):
            uniform[layer][0, unit] = v
            probability *= weight
        yield uniform, probability


def test_coupled_credit_is_unbiased_with_less_variance_than_the_sample() -> None:
    """Enumerating every hidden state, action and noise cell of a 2-2-2 network with a 3-action head:
    E[(q_i - p_i) f(a)] = d E[f(a)] / d b_i for every unit of every layer (the exact gradient, by autograd of the
    enumerated expectation), and E[((q_i - p_i) f)^2] <= E[((h_i - p_i) f)^2], strictly for some unit below the top."""
    policy = tiny_policy(ACTION_SPACES["Discrete"])
    reward = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)  # f(a), the return that follows the action
    obs = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    states = configurations(sum(SIZES), torch.float64)
    hidden = states.repeat(3, 1)
    actions = torch.arange(3, dtype=torch.float64).repeat_interleave(len(states))
    every = policy.bsn(obs.expand(len(hidden), 2), given_samples=by_layer(hidden))
    probability = (every.log_prob + policy._get_action_dist_from_latent(every.output).log_prob(actions)).exp()
    torch.testing.assert_close(probability.sum(), torch.tensor(1.0, dtype=torch.float64))
    biases = [layer.bias for layer in policy.bsn.layers]
    exact = torch.cat(torch.autograd.grad((probability * reward[actions.long()]).sum(), biases))

    mean = torch.zeros(sum(SIZES), dtype=torch.float64)
    second, sample_second = torch.zeros_like(mean), torch.zeros_like(mean)
    cells_seen = 0
    with torch.no_grad():
        for row in range(len(hidden)):
            stored = hidden[row : row + 1]
            output = policy.bsn(obs, given_samples=by_layer(stored))
            action = actions[row : row + 1]
            signal = reward[action.long()]
            sample_credit = (torch.cat(output.samples, -1) - torch.cat(output.firing_probs, -1))[0] * signal
            sample_second += probability[row] * sample_credit**2
            for uniform, cell_probability in noise_cells(policy, obs, stored):
                cells_seen += 1
                credit = torch.cat(policy.coupled_posteriors(output, action, uniform), -1)
                credit = (credit - torch.cat(output.firing_probs, -1))[0] * signal
                weight = probability[row] * cell_probability
                mean += weight * credit
                second += weight * credit**2
    assert cells_seen > 2 * len(hidden), "the noise must split into cells for the check to bite"
    torch.testing.assert_close(mean, exact, rtol=1e-6, atol=1e-9)
    assert (second <= sample_second + 1e-12).all()
    assert (second[: -SIZES[-1]] < 0.9 * sample_second[: -SIZES[-1]]).any()


def test_flipped_log_probs_do_not_depend_on_the_chunk_size(monkeypatch) -> None:
    """Rows are flipped in chunks that bound the memory; any chunk size gives the same credit."""
    policy = tiny_policy(ACTION_SPACES["Discrete"])
    generator = torch.Generator().manual_seed(2)
    rows = 13
    obs = torch.rand(rows, 2, generator=generator, dtype=torch.float64)
    hidden = (torch.rand(rows, sum(SIZES), generator=generator) < 0.5).double()
    actions = torch.randint(0, 3, (rows,), generator=generator).double()
    uniform = [torch.rand(rows, units, generator=generator, dtype=torch.float64) for units in SIZES]
    output = policy.bsn(obs, given_samples=by_layer(hidden))
    whole = policy.coupled_posteriors(output, actions, uniform)
    monkeypatch.setattr("policies.policy.FLIP_CHUNK_ELEMENTS", 5)  # one row per chunk
    for chunked, unchunked in zip(policy.coupled_posteriors(output, actions, uniform), whole, strict=True):
        torch.testing.assert_close(chunked, unchunked)


@pytest.mark.parametrize("reading", list(UNIT_READINGS))
@pytest.mark.parametrize("space_name", ["Discrete", "Box"])
def test_flipped_log_probs_and_reach_equal_a_redraw_of_the_flipped_network(
    reading: str, space_name: str
) -> None:
    """On a wider net of uneven layers, flipping a subset of units and redrawing the layers above with held noise
    gives the log-likelihoods and top-layer changes of the network's own forward pass on the flipped samples."""
    sizes = [7, 6, 5, 4]
    space = ACTION_SPACES[space_name]
    torch.manual_seed(3)
    policy = tiny_sized_policy(sizes, space, reading, init_gain=3.0).double()
    generator = torch.Generator().manual_seed(4)
    rows = 9
    obs = torch.rand(rows, 2, generator=generator, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        output = policy.bsn(obs)
        actions = policy._get_action_dist_from_latent(output.output).get_actions()
    noise = [
        coupled_noise(h, p, torch.rand(h.shape, generator=generator, dtype=torch.float64))
        for h, p in zip(output.samples, output.firing_probs, strict=True)
    ]
    reached_any = 0
    for layer, width in enumerate(sizes):
        units = torch.tensor([width - 1, 0, 2])  # a subset, out of order
        log_probs, reached = policy.flipped_action_log_probs(output, actions, layer, units, noise, with_reach=True)
        for slot, unit in enumerate(units.tolist()):
            samples = [h.clone() for h in output.samples]
            samples[layer][:, unit] = 1.0 - samples[layer][:, unit]
            for above in range(layer + 1, len(sizes)):
                redrawn = policy.bsn(obs, given_samples=samples)
                samples[above] = (noise[above] < redrawn.firing_probs[above]).double()
            expected = policy._get_action_dist_from_latent(samples[-1]).log_prob(actions)
            torch.testing.assert_close(log_probs[:, slot], expected.detach())
            changed = (samples[-1] != output.output).any(-1)
            assert torch.equal(reached[:, slot], changed), (layer, unit)
            reached_any += int(changed.sum()) if layer < len(sizes) - 1 else 0
    assert reached_any > 0, "some flip below the top must reach it for the check to bite"


def test_localpg_credits_each_unit_with_the_coupled_posterior(monkeypatch) -> None:
    """With ``coupled_posterior`` the update's stored credit is :meth:`coupled_posteriors`' (the policy's
    Markov-blanket posterior is not computed), on noise uniform on [0, 1) for every layer above the bottom."""
    env = make_vec_env(lambda: IdentityEnv(3), n_envs=2, seed=0)
    model = LocalPG(
        "BsnPolicy", env, n_steps=16, batch_size=32, seed=0, rao_blackwell=True, coupled_posterior=True,
        policy_kwargs={"net_arch": [4, 4, 4]},
    )
    calls = []
    original = model.policy.coupled_posteriors

    def recorded(output, actions, uniform):
        credit = original(output, actions, uniform)
        calls.append((uniform, credit))
        return credit

    monkeypatch.setattr(model.policy, "coupled_posteriors", recorded)
    monkeypatch.setattr(model.policy, "unit_posteriors", lambda *args: pytest.fail("Markov-blanket posterior used"))
    model.learn(32)
    assert calls
    uniform, credit = calls[-1]
    assert torch.equal(uniform[0], torch.zeros_like(uniform[0]))  # the bottom layer's noise is not read
    for noise in uniform[1:]:
        assert float(noise.min()) >= 0.0 and float(noise.max()) < 1.0 and float(noise.std()) > 0.1
    torch.testing.assert_close(model.rollout_buffer.posteriors.reshape(-1, 12), torch.cat(credit, -1))


def test_one_layer_policy_trains_exactly_as_without_coupling() -> None:
    """The top layer's credit is unchanged and no noise is drawn, so a one-layer policy's update is identical."""
    def trained(coupled: bool) -> list[torch.Tensor]:
        env = make_vec_env(lambda: IdentityEnv(3), n_envs=2, seed=0)
        model = LocalPG(
            "BsnPolicy", env, n_steps=16, batch_size=32, seed=0, rao_blackwell=True, coupled_posterior=coupled,
            policy_kwargs={"net_arch": [8]},
        )
        return [p.detach().clone() for p in model.learn(64).policy.parameters()]

    for with_coupling, without in zip(trained(True), trained(False), strict=True):
        torch.testing.assert_close(with_coupling, without, rtol=0, atol=0)


def test_coupled_posterior_round_trips_through_save_and_load(tmp_path) -> None:
    env = make_vec_env(lambda: IdentityEnv(3), n_envs=2, seed=0)
    model = LocalPG(
        "BsnPolicy", env, n_steps=16, batch_size=32, seed=0, rao_blackwell=True, coupled_posterior=True,
        policy_kwargs={"net_arch": [4, 4]},
    ).learn(32)
    model.save(tmp_path / "coupled.zip")
    loaded = LocalPG.load(tmp_path / "coupled.zip", env=env)
    assert loaded.coupled_posterior is True
    loaded.learn(32, reset_num_timesteps=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"coupled_posterior": True}, "coupled_posterior=True needs rao_blackwell=True"),
        ({"rao_blackwell": True, "coupled_posterior": 1}, "coupled_posterior must be True or False"),
    ],
)
def test_coupled_posterior_bad_value_raises(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LocalPG("BsnPolicy", "CartPole-v1", n_steps=16, batch_size=32, **kwargs)
