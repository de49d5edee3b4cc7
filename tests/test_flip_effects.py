"""The per-layer flip diagnostic (agents.localpg.diagnostics.flip_effects, ``bsn/layer<l>/flip_*``): its
Monte Carlo values against an exact enumeration of the layers above, on tiny networks of several depths."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from stable_baselines3.common.envs import IdentityEnv
from tiny_policies import ACTION_SPACES as EVERY_ACTION_SPACE
from tiny_policies import UNIT_READINGS, tiny_policy

from agents import LocalPG
from agents.localpg.diagnostics import FLIP_UNITS, evenly_spaced, flip_effects
from policies import BinaryStochasticPolicy

ACTION_SPACES = {name: EVERY_ACTION_SPACE[name] for name in ("Discrete", "Box")}


def coupled_firing_prob(stored: torch.Tensor, stored_prob: torch.Tensor, new_prob: torch.Tensor) -> torch.Tensor:
    """P(h' = 1) for h' = 1[u < p'] with u uniform given the stored draw h = 1[u < p]."""
    return torch.where(stored > 0.5, torch.minimum(new_prob, stored_prob) / stored_prob,
                       (new_prob - stored_prob).clamp_min(0) / (1 - stored_prob))


def exact_effects(policy: BinaryStochasticPolicy, output, actions: torch.Tensor) -> list[tuple[float, float]]:
    """Per layer, (influence, reach) by enumerating every joint state of the layers above each flipped unit."""
    bsn = policy.bsn
    stored_log_prob = policy._get_action_dist_from_latent(output.output).log_prob(actions)
    effects = []
    for layer, samples in enumerate(output.samples):
        influence, reach, count = 0.0, 0.0, 0
        for row, unit in itertools.product(range(len(samples)), range(samples.shape[-1])):
            flipped = samples[row : row + 1].clone()
            flipped[0, unit] = 1 - flipped[0, unit]
            above = bsn.hidden_sizes[layer + 1 :]
            for state in itertools.product([0.0, 1.0], repeat=sum(above)):
                layer_states = torch.split(torch.tensor([state]), above, dim=-1) if above else []
                probability, below = 1.0, flipped
                for offset, hidden in enumerate(layer_states):
                    index = layer + 1 + offset
                    new_prob = torch.sigmoid(bsn.layers[index](below))
                    fires = coupled_firing_prob(output.samples[index][row : row + 1],
                                                output.firing_probs[index][row : row + 1], new_prob)
                    probability *= float(torch.where(hidden > 0.5, fires, 1 - fires).prod())
                    below = hidden
                top = below
                log_prob = policy._get_action_dist_from_latent(top).log_prob(actions[row : row + 1])
                influence += probability * float((log_prob - stored_log_prob[row]).abs())
                reach += probability * float((top != output.output[row : row + 1]).any() or not above)
            count += 1
        effects.append((influence / count, reach / count))
    return effects


@pytest.mark.parametrize("reading", list(UNIT_READINGS))
@pytest.mark.parametrize("space_name", list(ACTION_SPACES))
@pytest.mark.parametrize("sizes", [[3], [3, 2], [2, 2, 2]], ids=["1_layer", "2_layers", "3_layers"])
def test_flip_effects_match_an_enumeration_of_the_layers_above(
    sizes: list[int], space_name: str, reading: str
) -> None:
    """Monte Carlo over the coupled noise (many copies of a few rows) against the exact expectation: each unit
    above changes with probability (p' - p) / (1 - p) where it did not fire and p' < p, (p - p') / p where it
    did and p' < p, else never."""
    torch.manual_seed(0)
    policy = tiny_policy(sizes, ACTION_SPACES[space_name], reading)
    rows, copies = 3, 40_000
    obs = torch.rand(rows, 2) * 2 - 1
    hidden = (torch.rand(rows, sum(sizes)) < 0.5).to(torch.uint8)
    actions = torch.as_tensor(np.stack([ACTION_SPACES[space_name].sample() for _ in range(rows)]))
    with torch.no_grad():
        output = policy.evaluate_hidden(obs, actions, hidden, with_entropy=False).bsn
        expected = exact_effects(policy, output, actions)
        copied = output.rows(torch.arange(rows).repeat_interleave(copies))
        uniform = [torch.rand_like(probs) for probs in copied.firing_probs]
        measured = flip_effects(policy, copied, actions.repeat_interleave(copies, 0), uniform)
    for layer, ((influence, reach), values) in enumerate(zip(expected, measured, strict=True)):
        assert float(values["flip_influence"]) == pytest.approx(influence, rel=0.03, abs=0.005), layer
        assert float(values["flip_reach"]) == pytest.approx(reach, abs=0.01), layer
    assert expected[-1][1] == 1.0 and expected[-1][0] > 0  # the top layer moves the head on every flip


def test_flip_effects_of_a_deterministic_layer_above_are_zero_below_it() -> None:
    """Units above that fire with probability 0 or 1 cannot be tipped: nothing below reaches the action."""
    policy = tiny_policy([3, 2], ACTION_SPACES["Discrete"])
    with torch.no_grad():
        policy.bsn.layers[1].weight.zero_()
        policy.bsn.layers[1].bias.fill_(50.0)  # every unit of the top layer always fires
        obs, actions = torch.rand(8, 2), torch.randint(0, 3, (8,))
        hidden = torch.cat([(torch.rand(8, 3) < 0.5), torch.ones(8, 2, dtype=torch.bool)], -1).to(torch.uint8)
        output = policy.evaluate_hidden(obs, actions, hidden, with_entropy=False).bsn
        lower, top = flip_effects(policy, output, actions, [torch.rand_like(p) for p in output.firing_probs])
    assert float(lower["flip_influence"]) == 0.0 and float(lower["flip_reach"]) == 0.0
    assert float(top["flip_influence"]) > 0.0 and float(top["flip_reach"]) == 1.0


def test_wide_layers_flip_evenly_spaced_units() -> None:
    assert evenly_spaced(5, FLIP_UNITS).tolist() == [0, 1, 2, 3, 4]
    spaced = evenly_spaced(256, FLIP_UNITS).tolist()
    assert len(spaced) == FLIP_UNITS and spaced[0] == 0 and spaced[-1] == 255 and spaced == sorted(set(spaced))


def test_the_update_logs_flip_effects_without_touching_the_global_random_state() -> None:
    """The diagnostic draws from its own generator: a run's samples, and so its result, stay as they were."""
    model = LocalPG("BsnPolicy", IdentityEnv(4), n_steps=32, batch_size=32, n_epochs=1, seed=0,
                    policy_kwargs={"net_arch": [8, 8]})
    model.learn(32)
    hidden = model.rollout_buffer.hidden.reshape(32, -1)
    state = torch.get_rng_state()
    effects = model._flip_effects(hidden)
    assert torch.equal(torch.get_rng_state(), state)
    assert [sorted(layer) for layer in effects] == [["flip_influence", "flip_reach"]] * 2
    assert model.logger.name_to_value["bsn/layer1/flip_reach"] == 1.0
    assert 0.0 <= model.logger.name_to_value["bsn/layer0/flip_reach"] <= 1.0
