"""Rao-Blackwellised credit (policies/posterior.py, LocalPG(rao_blackwell=True)): exact checks on tiny
networks by enumerating every hidden state, the two-branch clipped loss, and the algorithm's options."""

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
from agents.localpg import clipped_local_loss
from agents.localpg.losses import MAX_LOG_RATIO
from policies import BinaryStochasticPolicy, bernoulli_children_log_ratio
from policies.estimators import bernoulli_log_prob

SIZES = [3, 2]  # two layers: the lower one's children are units, the top one's the action
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_policy(action_space: spaces.Space, reading: str = "bit_inputs") -> BinaryStochasticPolicy:
    return tiny_sized_policy(SIZES, action_space, reading)


def all_hidden_states(rows: int) -> torch.Tensor:
    """Every joint state of the SIZES units, packed as uint8 and repeated for ``rows`` rows: (rows * 2^U, U)."""
    states = torch.tensor(list(itertools.product([0, 1], repeat=sum(SIZES))), dtype=torch.uint8)
    return states.repeat(rows, 1)


def joint_log_prob(policy: BinaryStochasticPolicy, obs: torch.Tensor, actions: torch.Tensor, hidden: torch.Tensor):
    """``log P(h | s) + log pi(a | h)`` and the network's output for the stored ``hidden``."""
    evaluation = policy.evaluate_hidden(obs, actions, hidden, with_entropy=False)
    return evaluation.bsn.log_prob + evaluation.action_log_prob, evaluation.bsn


@pytest.mark.parametrize("one_row_per_chunk", [False, True], ids=["whole", "one_row_per_chunk"])
@pytest.mark.parametrize("reading", list(UNIT_READINGS))
@pytest.mark.parametrize("space_name", list(ACTION_SPACES))
def test_posterior_is_the_conditional_of_the_joint(
    space_name: str, reading: str, one_row_per_chunk: bool, monkeypatch
) -> None:
    """q_i = P(h_i = 1 | every other unit, the action, s): brute force from the joint log-probability with
    unit i set to 1 and to 0, for every action space the policy supports, with each reading of the units (bits or
    signs), with the rows in one piece or one per chunk (``FLIP_CHUNK_ELEMENTS``)."""
    if one_row_per_chunk:
        monkeypatch.setattr("policies.policy.FLIP_CHUNK_ELEMENTS", 1)
    policy = tiny_policy(ACTION_SPACES[space_name], reading)
    rows = 16
    obs = torch.rand(rows, 2) * 2 - 1
    hidden = (torch.rand(rows, sum(SIZES)) < 0.5).to(torch.uint8)
    actions = torch.as_tensor(np.stack([ACTION_SPACES[space_name].sample() for _ in range(rows)]))
    if space_name == "Discrete":
        actions = actions.reshape(rows)
    if space_name == "MultiBinary":
        actions = actions.float()
    _, output = joint_log_prob(policy, obs, actions, hidden)
    posterior = torch.cat(policy.unit_posteriors(output, actions), -1)
    for unit in range(sum(SIZES)):
        on, off = hidden.clone(), hidden.clone()
        on[:, unit], off[:, unit] = 1, 0
        with torch.no_grad():
            log_odds = joint_log_prob(policy, obs, actions, on)[0] - joint_log_prob(policy, obs, actions, off)[0]
        expected = torch.sigmoid(log_odds)
        torch.testing.assert_close(posterior[:, unit], expected, rtol=1e-4, atol=1e-5, msg=f"unit {unit}")


def test_rao_blackwellised_estimator_is_unbiased_with_less_variance() -> None:
    """Enumerating every hidden state and action of a 3-2 network with a 3-action head:
    E[(q_i - p_i) f(a)] = E[(h_i - p_i) f(a)] = d E[f(a)] / d b_i for every unit of both layers (the exact
    gradient, by autograd of the enumerated expectation), and E[((q_i - p_i) f)^2] <= E[((h_i - p_i) f)^2]."""
    policy = tiny_policy(ACTION_SPACES["Discrete"])
    reward = torch.tensor([1.0, -0.5, 2.0])  # f(a), the return that follows the action
    obs = torch.tensor([[0.3, -0.7]])
    states = 2 ** sum(SIZES)
    hidden = all_hidden_states(3)  # each state with each of the 3 actions
    actions = torch.arange(3).repeat_interleave(states)
    log_joint, output = joint_log_prob(policy, obs.expand(len(hidden), 2), actions, hidden)
    probability = log_joint.exp()
    torch.testing.assert_close(probability.sum(), torch.tensor(1.0))
    biases = [layer.bias for layer in policy.bsn.layers]
    exact = torch.cat(torch.autograd.grad((probability * reward[actions]).sum(), biases))

    with torch.no_grad():
        credit_sample = torch.cat(output.samples, -1) - torch.cat(output.firing_probs, -1)
        credit_posterior = torch.cat(policy.unit_posteriors(output, actions), -1) - torch.cat(output.firing_probs, -1)
        weight = (probability * reward[actions]).unsqueeze(-1)
        torch.testing.assert_close((weight * credit_sample).sum(0), exact, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close((weight * credit_posterior).sum(0), exact, rtol=1e-4, atol=1e-6)
        weighted_reward = reward[actions].unsqueeze(-1)
        second_moment = lambda credit: (probability.unsqueeze(-1) * (credit * weighted_reward) ** 2).sum(0)  # noqa: E731
        assert (second_moment(credit_posterior) <= second_moment(credit_sample) + 1e-7).all()
        assert (second_moment(credit_posterior) < 0.9 * second_moment(credit_sample)).any()


def test_bernoulli_children_log_ratio_by_brute_force() -> None:
    generator = torch.Generator().manual_seed(3)
    rows, units, children = 5, 4, 3
    weight = torch.randn(children, units, generator=generator)
    bias = torch.randn(children, generator=generator)
    samples = (torch.rand(rows, units, generator=generator) < 0.5).float()
    child_samples = (torch.rand(rows, children, generator=generator) < 0.5).float()
    ratio = bernoulli_children_log_ratio(samples @ weight.t() + bias, child_samples, weight, samples)
    for unit in range(units):
        on, off = samples.clone(), samples.clone()
        on[:, unit], off[:, unit] = 1.0, 0.0
        log_likelihood = lambda h: bernoulli_log_prob(child_samples, h @ weight.t() + bias).sum(-1)  # noqa: E731
        torch.testing.assert_close(ratio[:, unit], log_likelihood(on) - log_likelihood(off))


# ---------------------------------------------------------------- the two-branch clipped loss
def _loss_inputs(seed: int, rows: int = 48, units: int = 6):
    generator = torch.Generator().manual_seed(seed)
    pre_activation = (3 * torch.randn(rows, units, generator=generator, dtype=torch.float64)).requires_grad_()
    samples = (torch.rand(rows, units, generator=generator, dtype=torch.float64) < 0.5).to(torch.float64)
    old_pre = pre_activation.detach() + torch.randn(rows, units, generator=generator, dtype=torch.float64)
    posterior = torch.rand(rows, units, generator=generator, dtype=torch.float64)
    signal = torch.randn(rows, 1, generator=generator, dtype=torch.float64)
    return pre_activation, samples, old_pre, posterior, signal


def test_two_branch_loss_matches_autograd_of_its_surrogate() -> None:
    """sum_v w_v min(r(v) s, clip(r(v)) s) with w_1 = q, w_0 = 1 - q: the closed-form backward equals
    autograd's derivative, inside and outside the trust region, with a clamped log-ratio."""
    pre_activation, samples, old_pre, posterior, signal = _loss_inputs(0)
    old_log_prob = bernoulli_log_prob(samples, old_pre)
    old_log_prob[0, 0] = -2 * MAX_LOG_RATIO
    clip = 0.2
    reference = 0.0
    for value, weight in ((torch.ones_like(samples), posterior), (torch.zeros_like(samples), 1 - posterior)):
        old = torch.where(value == samples, old_log_prob, torch.log(-torch.expm1(old_log_prob)))
        ratio = (bernoulli_log_prob(value, pre_activation) - old).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()
        reference = reference + (weight * torch.min(ratio * signal, ratio.clamp(1 - clip, 1 + clip) * signal)).sum()
    reference = -reference / len(samples)
    (expected,) = torch.autograd.grad(reference, pre_activation)
    loss, _ = clipped_local_loss(
        pre_activation,
        samples,
        torch.sigmoid(pre_activation),
        bernoulli_log_prob(samples, pre_activation),
        old_log_prob,
        signal,
        clip,
        posterior,
    )
    (gradient,) = torch.autograd.grad(loss, pre_activation)
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(gradient, expected)


def test_two_branch_loss_at_ratio_one_and_with_hard_posteriors() -> None:
    """At P_new = P_old the gradient is -(q - p) s / B; with q = h the loss is the local estimator's."""
    pre_activation, samples, _old, posterior, signal = _loss_inputs(1)
    probs = torch.sigmoid(pre_activation)
    log_prob = bernoulli_log_prob(samples, pre_activation)
    loss, _ = clipped_local_loss(pre_activation, samples, probs, log_prob, log_prob.detach(), signal, 0.2, posterior)
    (gradient,) = torch.autograd.grad(loss, pre_activation)
    torch.testing.assert_close(gradient, -(posterior - probs.detach()) * signal / len(samples))

    plain = clipped_local_loss(pre_activation, samples, probs, log_prob, log_prob.detach() - 0.3, signal, 0.2)
    hard = clipped_local_loss(pre_activation, samples, probs, log_prob, log_prob.detach() - 0.3, signal, 0.2, samples)
    torch.testing.assert_close(hard[0], plain[0])
    torch.testing.assert_close(*(torch.autograd.grad(result[0], pre_activation)[0] for result in (hard, plain)))


# ---------------------------------------------------------------- LocalPG(rao_blackwell=True)
def test_rao_blackwell_round_trips_through_save_and_load(tmp_path) -> None:
    """The option is saved with the model and a loaded model keeps training with it (learning on an
    identity env: ``tests/test_localpg.py::test_identity_envs_are_learned[Discrete_rao_blackwell]``)."""
    env = make_vec_env(lambda: IdentityEnv(4), n_envs=2, seed=0)
    model = LocalPG("BsnPolicy", env, n_steps=32, batch_size=32, seed=0, rao_blackwell=True).learn(64)
    assert model.rollout_buffer.posteriors is not None
    model.save(tmp_path / "rb.zip")
    loaded = LocalPG.load(tmp_path / "rb.zip", env=env)
    assert loaded.rao_blackwell is True
    loaded.learn(64, reset_num_timesteps=False)
    assert loaded.rollout_buffer.posteriors is not None


def test_rao_blackwell_bad_value_raises() -> None:
    with pytest.raises(ValueError, match="rao_blackwell must be True or False"):
        LocalPG("BsnPolicy", "CartPole-v1", n_steps=16, batch_size=32, rao_blackwell=1)


def test_rao_blackwell_with_the_learned_predictor_regresses_on_the_posterior_credit() -> None:
    """With the learned predictor, the regression target is (q - p)(A - c): it trains and logs its loss."""
    model = LocalPG(
        "BsnPolicy",
        make_vec_env("CartPole-v1", n_envs=2, seed=0),
        n_steps=32,
        batch_size=32,
        n_epochs=2,
        seed=0,
        rao_blackwell=True,
        policy_kwargs={"net_arch": [8, 6], "estimator": "learned_predictor"},
    ).learn(256)
    assert np.isfinite(model.logger.name_to_value["bsn/predictor_loss"])
    assert model.rollout_buffer.posteriors is not None


def test_rao_blackwellised_update_reads_only_the_markov_blanket() -> None:
    """A layer's weight gradient is -(q - p) A x^T / B, and its q depends on the layer above it (its
    children) but on nothing further up: perturbing the action head and the critic leaves layer 0's
    posteriors and gradient unchanged (only layer 1's, whose children are the actions, move)."""
    model = LocalPG(
        "BsnPolicy",
        make_vec_env("CartPole-v1", n_envs=1, seed=0),
        n_steps=16,
        batch_size=None,
        n_epochs=1,
        normalize_advantage=False,
        seed=0,
        rao_blackwell=True,
        policy_kwargs={"net_arch": [5, 4]},
    )
    model.learn(16)
    bsn, buffer = model.policy.bsn, model.rollout_buffer

    def rescored() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model._score_rollout()  # the current parameters become P_old: every ratio is 1
        batch = next(buffer.get(None))
        model.policy.optimizer.zero_grad()
        model._minibatch_loss(batch, clip_range=0.2)[0].backward()
        return batch, buffer.posteriors.reshape(16, -1).clone(), bsn.layers[0].weight.grad.clone()

    batch, posteriors, gradient = rescored()
    features = model.policy.extract_features(batch.observations)
    output = bsn(features, given_samples=bsn.unpack_samples(batch.hidden))
    layer0_posterior = torch.split(batch.old_posterior, bsn.hidden_sizes, -1)[0]
    expected = -((layer0_posterior - output.firing_probs[0]) * batch.advantages.unsqueeze(-1)).T @ features / 16
    torch.testing.assert_close(gradient, expected.detach(), rtol=1e-4, atol=1e-6)

    with torch.no_grad():  # above layer 0's children: the action head and the critic
        for module in (model.policy.action_net, model.policy.value_net):
            for parameter in module.parameters():
                parameter.add_(torch.randn_like(parameter))
    _, after_head, gradient_after_head = rescored()
    torch.testing.assert_close(after_head[:, :5], posteriors[:, :5])
    torch.testing.assert_close(gradient_after_head, gradient)
    assert not torch.allclose(after_head[:, 5:], posteriors[:, 5:])

    with torch.no_grad():  # layer 0's children
        bsn.layers[1].weight.add_(torch.randn_like(bsn.layers[1].weight))
    _, after_children, _ = rescored()
    assert not torch.allclose(after_children[:, :5], posteriors[:, :5])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_rao_blackwell_on_a_torch_env_keeps_the_rollout_on_the_device(device: str) -> None:
    from envs import make_torch_vec_env

    env = make_torch_vec_env("CartPole-v1", num_envs=16, device=device, seed=0)
    model = LocalPG(
        "BsnPolicy",
        env,
        n_steps=16,
        batch_size=64,
        n_epochs=2,
        seed=0,
        device=device,
        rao_blackwell=True,
        policy_kwargs={"net_arch": [16, 8]},
    ).learn(16 * 16 * 2)
    posteriors = model.rollout_buffer.posteriors
    assert posteriors is not None and posteriors.device.type == device
    assert ((posteriors >= 0) & (posteriors <= 1)).all()
