"""LocalPG's tuning levers: layer-wise learning rates, the hidden units' trust region, numerical safety."""

from __future__ import annotations

import pytest
import torch
from stable_baselines3.common.logger import configure

from agents import LocalPG
from agents.localpg.diagnostics import bernoulli_entropy


def model(**kwargs) -> LocalPG:
    defaults = {"n_steps": 16, "batch_size": 32, "n_epochs": 2, "seed": 0, "policy_kwargs": {"net_arch": [8, 4]}}
    return LocalPG("BsnPolicy", "CartPole-v1", **{**defaults, **kwargs})


def group_lrs(agent: LocalPG) -> list[float]:
    return [group["lr"] for group in agent.policy.optimizer.param_groups]


def test_layerwise_learning_rates_follow_the_schedule() -> None:
    agent = model(learning_rate=lambda progress: 1e-3 * progress, hidden_lr_scale=[10.0, 2.0])
    agent.set_logger(configure(None, [""]))
    agent._current_progress_remaining = 0.5
    agent._update_learning_rate(agent.policy.optimizer)
    lrs = group_lrs(agent)
    assert lrs[:2] == pytest.approx([5e-3, 1e-3])  # the two BSN layers
    assert lrs[2:] == pytest.approx([5e-4] * (len(lrs) - 2))  # action head, critic, rest


def test_optimizer_covers_every_parameter_once() -> None:
    agent = model(hidden_lr_scale=3.0)
    in_groups = [id(p) for group in agent.policy.optimizer.param_groups for p in group["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in agent.policy.parameters())


def test_only_the_bsn_layers_get_the_scaled_rate() -> None:
    agent = model(learning_rate=1e-3, hidden_lr_scale=4.0)
    layer_params = {id(p) for layer in agent.policy.bsn.layers for p in layer.parameters()}
    for group in agent.policy.optimizer.param_groups:
        scaled = all(id(p) in layer_params for p in group["params"])
        assert group["lr"] == pytest.approx(4e-3 if scaled else 1e-3)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"hidden_lr_scale": 0.0}, "hidden_lr_scale must be > 0"),
        ({"hidden_lr_scale": []}, "hidden_lr_scale must be > 0"),
        ({"hidden_lr_scale": [1.0, 2.0, 3.0]}, "gives 3 values for 2 BSN layers"),
        ({"hidden_clip_range": -0.1}, "hidden_clip_range must be > 0, got -0.1"),
        ({"hidden_target_kl": 0.0}, "hidden_target_kl must be > 0, got 0.0"),
    ],
)
def test_bad_levers_raise(kwargs, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        model(**kwargs)


def gradient_steps(agent: LocalPG) -> int:
    """Gradient steps of one update of ``agent`` (a rollout is collected first)."""
    agent.learn(agent.n_steps * agent.n_envs)  # collects a rollout and updates
    steps = 0
    step = agent.policy.optimizer.step

    def counting_step(*args, **kwargs):
        nonlocal steps
        steps += 1
        return step(*args, **kwargs)

    agent.policy.optimizer.step = counting_step  # type: ignore[method-assign]
    agent.learn(agent.n_steps * agent.n_envs, reset_num_timesteps=False)
    return steps


@pytest.mark.parametrize("hidden_target_kl, steps", [(None, 8), (1e6, 8), (1e-9, 1)])
def test_hidden_target_kl_stops_the_epochs_once_a_layer_drifts(hidden_target_kl, steps) -> None:
    """4 epochs x 2 minibatches; a tiny target stops after the first step (the first minibatch is at ratio 1)."""
    agent = model(n_epochs=4, batch_size=8, learning_rate=1e-2, hidden_target_kl=hidden_target_kl)
    assert gradient_steps(agent) == steps


def test_layer_kl_is_per_layer_and_zero_at_the_collecting_parameters() -> None:
    agent = model(n_epochs=1, batch_size=None, policy_kwargs={"net_arch": [8, 4], "bsn_init_gain": 1.0})
    agent.learn(16)
    agent._score_rollout()  # P_old = the current parameters
    batch = next(agent.rollout_buffer.get(None))
    _loss, stats = agent._minibatch_loss(batch, 0.2)
    assert float(stats["layer_kl_0"]) == pytest.approx(0.0, abs=1e-6)
    assert float(stats["layer_kl_1"]) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():  # move the upper layer only: only its KL may grow
        agent.policy.bsn.layers[1].bias.add_(1.0)
    _loss, stats = agent._minibatch_loss(batch, 0.2)
    assert float(stats["layer_kl_0"]) == pytest.approx(0.0, abs=1e-6)
    # Each of the 4 units' log-odds moved by 1: every unit contributes, so the joint KL is of order 4 x 0.1.
    assert 0.1 < float(stats["layer_kl_1"]) < 2.0


def test_bernoulli_entropy_matches_the_definition_and_stays_finite() -> None:
    logits = torch.tensor([-300.0, -2.0, 0.0, 1.5, 300.0], requires_grad=True)
    entropy = bernoulli_entropy(logits)
    p = torch.sigmoid(logits[1:4].detach())
    expected = -(p * p.log() + (1 - p) * (1 - p).log())
    assert torch.allclose(entropy[1:4].detach(), expected, atol=1e-6)
    assert entropy[[0, 4]].detach().abs().max() < 1e-6
    (0.0 * entropy.sum()).backward()  # a zero coefficient must give zero gradient, not 0 * inf = NaN
    assert torch.isfinite(logits.grad).all()


def test_saturated_units_keep_the_update_finite() -> None:
    agent = model(hidden_clip_range=1.0)
    agent.learn(32)
    with torch.no_grad():
        for layer in agent.policy.bsn.layers:
            layer.weight.mul_(1e4)  # every unit's probability rounds to 0 or 1
    agent.learn(32, reset_num_timesteps=False)
    assert all(torch.isfinite(p).all() for p in agent.policy.parameters())
