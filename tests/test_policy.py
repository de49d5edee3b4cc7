"""BinaryStochasticPolicy: SB3 API, spaces, counter noise under stock PPO/A2C, save/load."""

from __future__ import annotations

import inspect
import math
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from cli_support import cli_docs
from gymnasium import spaces
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
)
from stable_baselines3.common.envs.multi_input_envs import SimpleMultiObsEnv
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.vec_env import VecTransposeImage
from tiny_policies import ACTION_SPACES, UNIT_READINGS, tiny_policy

from agents import LocalPG
from policies import BinaryStochasticPolicy
from policies.exact import enumerate_network
from policies.policy import default_features_extractor


class SpacesEnv(gym.Env):
    """A one-step env with arbitrary spaces, for space-validation tests."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        self.observation_space = observation_space
        self.action_space = action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, True, False, {}


@pytest.mark.parametrize("algo", [LocalPG, PPO, A2C])
@pytest.mark.parametrize(
    "observation_space, action_space",
    [
        (spaces.Box(-1, 1, (3,)), spaces.Tuple([spaces.Discrete(2), spaces.Discrete(2)])),
        (spaces.Tuple([spaces.Discrete(2)]), spaces.Discrete(2)),
        (spaces.Dict({"a": spaces.Dict({"b": spaces.Box(-1, 1, (2,))})}), spaces.Discrete(2)),
    ],
)
def test_unsupported_spaces_raise_with_names(algo, observation_space, action_space) -> None:
    """LocalPG raises a ValueError naming the space and the supported ones; stock SB3 its own named error."""
    env = SpacesEnv(observation_space, action_space)
    expected = ValueError if algo is LocalPG else (ValueError, AssertionError, NotImplementedError)
    with pytest.raises(expected) as info:
        algo(BinaryStochasticPolicy, env)
    message = str(info.value)
    assert "Tuple" in message or "Dict" in message, message
    if algo is LocalPG:
        assert "supports" in message and "Discrete" in message and "Box" in message


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"estimator": "bogus"}, "unknown estimator 'bogus'"),
        ({"baseline": "bogus"}, "unknown baseline 'bogus'"),
        ({"net_arch": []}, "at least one BSN layer"),
        ({"net_arch": [0]}, "positive integers"),
        ({"net_arch": {"pi": [4], "qf": [3]}}, "keys 'pi' and 'vf'"),
        ({"bsn_init_gain": 0.0}, "bsn_init_gain must be > 0"),
        ({"bsn_init_gain": [8.0, -1.0]}, "bsn_init_gain must be > 0"),
        ({"net_arch": [4, 4], "bsn_init_gain": [8.0, 2.0, 1.0]}, "3 gains for 2 BSN layers"),
        ({"baseline": "learned", "baseline_kwargs": {"condition": "action"}}, "unknown baseline condition 'action'"),
        ({"state_dependent_std": True}, "state_dependent_std applies to Box action spaces only"),
        ({"deterministic_units": "mean"}, "deterministic_units must be one of threshold, mean_field, got 'mean'"),
    ],
)
def test_bad_policy_kwargs_raise(kwargs, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        LocalPG("BsnPolicy", "CartPole-v1", policy_kwargs=kwargs)


@pytest.mark.parametrize(
    "env_fn, action_shape",
    [
        (lambda: IdentityEnv(3), ()),
        (lambda: IdentityEnvMultiDiscrete(3), (2,)),
        (lambda: IdentityEnvMultiBinary(3), (3,)),
        (lambda: IdentityEnvBox(), (1,)),
        (lambda: SimpleMultiObsEnv(random_start=True), ()),
        (lambda: FakeImageEnv(screen_height=36, screen_width=36, n_channels=1), ()),
    ],
)
def test_predict_shapes_all_spaces(env_fn, action_shape) -> None:
    env = env_fn()
    model = LocalPG("BsnPolicy", env, n_steps=8, batch_size=8, policy_kwargs={"net_arch": [8]}, seed=0)
    obs, _ = env.reset(seed=0)
    action, state = model.predict(obs, deterministic=True)
    assert state is None
    assert np.shape(action) == action_shape
    assert env.action_space.contains(action.astype(env.action_space.dtype) if action_shape == (1,) else action)
    batched = {k: np.stack([v, v]) for k, v in obs.items()} if isinstance(obs, dict) else np.stack([obs, obs])
    actions, _ = model.predict(batched, deterministic=False)
    assert np.shape(actions) == (2, *action_shape)
    model.learn(16)  # one update on every kind of space and extractor


@pytest.mark.parametrize(
    ("observation_space", "extractor"),
    [
        (spaces.Box(0, 255, (36, 36, 3), np.uint8), NatureCNN),
        (spaces.Box(0, 255, (1, 40, 36), np.uint8), NatureCNN),
        (spaces.Box(0, 255, (12, 12, 3), np.uint8), FlattenExtractor),  # too small for NatureCNN's kernels
        (spaces.Box(0, 255, (3, 35, 64), np.uint8), FlattenExtractor),
        (spaces.Box(-1.0, 1.0, (4,)), FlattenExtractor),
        (spaces.Discrete(5), FlattenExtractor),
        (spaces.Dict({"image": spaces.Box(0, 255, (1, 36, 36), np.uint8), "x": spaces.Box(-1, 1, (2,))}),
         CombinedExtractor),
    ],
)
def test_default_features_extractor_flattens_images_too_small_for_nature_cnn(observation_space, extractor) -> None:
    assert default_features_extractor(observation_space) is extractor
    if is_image_space(observation_space) and not is_image_space_channels_first(observation_space):
        observation_space = VecTransposeImage.transpose_space(observation_space)  # as SB3 gives it to the policy
        assert default_features_extractor(observation_space) is extractor
    policy = BinaryStochasticPolicy(observation_space, spaces.Discrete(2), lambda _: 1e-3, net_arch=[8])
    assert type(policy.features_extractor) is extractor
    with torch.no_grad():
        policy.predict(observation_space.sample(), deterministic=True)


def test_a_dict_holding_an_image_too_small_for_nature_cnn_is_refused_with_the_fix() -> None:
    observation_space = spaces.Dict({"image": spaces.Box(0, 255, (7, 7, 3), np.uint8), "x": spaces.Box(-1, 1, (2,))})
    with pytest.raises(ValueError, match=r"'image' is an image of shape \(7, 7, 3\).*FlattenObservation"):
        BinaryStochasticPolicy(observation_space, spaces.Discrete(2), lambda _: 1e-3)


class _ConcatenateDict(BaseFeaturesExtractor):
    """Flattens and concatenates every entry of a Dict observation (no convolution)."""

    def __init__(self, observation_space: spaces.Dict) -> None:
        super().__init__(observation_space, features_dim=spaces.flatdim(observation_space))

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([observations[key].flatten(1).float() for key in sorted(observations)], dim=1)


def test_a_dict_holding_a_small_image_is_accepted_with_an_extractor_of_the_user_s_own() -> None:
    """Only the default extractor refuses such a Dict: a user's ``features_extractor_class`` takes it."""
    observation_space = spaces.Dict({"image": spaces.Box(0, 255, (7, 7, 3), np.uint8), "x": spaces.Box(-1, 1, (2,))})
    policy = BinaryStochasticPolicy(observation_space, spaces.Discrete(2), lambda _: 1e-3, net_arch=[8],
                                    features_extractor_class=_ConcatenateDict)
    with torch.no_grad():
        action, _ = policy.predict(observation_space.sample(), deterministic=True)
    assert spaces.Discrete(2).contains(int(action))


def test_state_dependent_std_starts_at_log_std_init_learns_per_state_and_round_trips(tmp_path) -> None:
    """The head maps the top layer's samples to [mean, log_std]: the std starts at ``exp(log_std_init)`` in every
    state, moves apart between states with training, and a saved model restores it."""
    model = LocalPG(
        "BsnPolicy", "Pendulum-v1", n_steps=64, batch_size=64, seed=0,
        policy_kwargs={"net_arch": [16], "state_dependent_std": True, "log_std_init": -0.5},
    )
    policy = model.policy
    assert "log_std" not in dict(policy.named_parameters())
    assert policy.action_net.out_features == 2
    observations = torch.tensor([[1.0, 0.0, -4.0], [-1.0, 0.0, 4.0], [0.0, 1.0, 0.0]])
    with torch.no_grad():
        start = policy.get_distribution(observations).distribution.stddev
    torch.testing.assert_close(start, torch.full_like(start, math.exp(-0.5)))
    model.learn(512)
    with torch.no_grad():
        trained = policy.get_distribution(observations).distribution.stddev
    assert trained.std() > 1e-4, "the std must depend on the state after training"
    model.save(tmp_path / "model.zip")
    loaded = LocalPG.load(tmp_path / "model.zip")
    assert loaded.policy.state_dependent_std
    with torch.no_grad():
        torch.testing.assert_close(loaded.policy.action_net(torch.ones(1, 16)), policy.action_net(torch.ones(1, 16)))


def test_signed_head_reads_the_units_as_signs_from_sb3s_start_and_round_trips(tmp_path) -> None:
    """With ``signed_head`` the head computes ``W (2h - 1) + b``, starting from SB3's initial weights, with every
    other part of the policy as without it (same seed); a saved model restores it."""
    kwargs = {"net_arch": [16], "bsn_init_gain": 2.0}
    bits = LocalPG("BsnPolicy", "Pendulum-v1", n_steps=64, batch_size=64, seed=4, policy_kwargs=kwargs)
    signs = LocalPG("BsnPolicy", "Pendulum-v1", n_steps=64, batch_size=64, seed=4,
                    policy_kwargs={**kwargs, "signed_head": True})
    torch.testing.assert_close(signs.policy.state_dict(), bits.policy.state_dict())
    samples = (torch.rand(32, 16) < 0.5).float()
    head = signs.policy.action_net
    with torch.no_grad():
        head.bias.add_(torch.randn_like(head.bias))
        torch.testing.assert_close(head(samples), (2 * samples - 1) @ head.weight.T + head.bias)
    signs.learn(128)
    signs.save(tmp_path / "model.zip")
    loaded = LocalPG.load(tmp_path / "model.zip")
    assert loaded.policy.signed_head and not bits.policy.signed_head
    with torch.no_grad():
        torch.testing.assert_close(loaded.policy.action_net(samples), signs.policy.action_net(samples))


@pytest.mark.parametrize("reading", list(UNIT_READINGS))
@pytest.mark.parametrize("space", list(ACTION_SPACES))
def test_mean_field_deterministic_mode_reads_the_expected_head_output(space, reading) -> None:
    """One BSN layer with ``deterministic_units="mean_field"``: the deterministic action distribution is the one
    of the head's output averaged over every configuration of the units, weighted by its probability (a Gaussian
    head's mean action over the units' draws; a categorical head's expected logits)."""
    torch.manual_seed(5)
    policy = tiny_policy([3], ACTION_SPACES[space], reading)
    policy.deterministic_units = "mean_field"
    observations = torch.rand(16, 2) * 2 - 1
    with torch.no_grad():
        enumeration = enumerate_network(policy.bsn, policy.actor_features(observations))
        head = policy.action_net(enumeration.values[0])
        expected = torch.zeros(16, head.shape[1]).index_add_(
            0, enumeration.input_index, enumeration.probability.unsqueeze(1) * head
        )
        # SB3 reuses one distribution object: read each one's tensors before asking for the next.
        got = distribution_tensors(policy.get_distribution(observations, deterministic=True))
        want = distribution_tensors(policy._distribution_from_params(expected))
        policy.deterministic_units = "threshold"
        thresholded = distribution_tensors(policy.get_distribution(observations, deterministic=True))
    for mine, reference in zip(got, want, strict=True):
        torch.testing.assert_close(mine, reference)
    assert not all(torch.allclose(a, b) for a, b in zip(thresholded, want, strict=True))


def distribution_tensors(distribution) -> list[torch.Tensor]:
    """The parameters that define an SB3 action distribution: Gaussian means, categorical or Bernoulli
    probabilities (one tensor per MultiDiscrete group)."""
    inner = distribution.distribution
    parts = inner if isinstance(inner, list) else [inner]
    return [part.mean if isinstance(part, torch.distributions.Normal) else part.probs for part in parts]


@pytest.mark.parametrize("value", ["threshold", "mean_field"])
def test_deterministic_units_round_trip_and_a_bad_value_is_refused(value, tmp_path) -> None:
    model = LocalPG("BsnPolicy", "CartPole-v1", n_steps=16, batch_size=32, seed=0,
                    policy_kwargs={"net_arch": [8], "deterministic_units": value})
    model.save(tmp_path / "model.zip")
    loaded = LocalPG.load(tmp_path / "model.zip", device="cpu")
    assert loaded.policy.deterministic_units == loaded.policy.bsn.deterministic_units == value
    assert BinaryStochasticPolicy(**loaded.policy._get_constructor_parameters()).deterministic_units == value
    with pytest.raises(ValueError, match="deterministic_units must be one of threshold, mean_field"):
        loaded.policy.deterministic_units = "probabilities"


def test_the_policy_kwarg_table_of_the_docs_gives_every_bsn_argument_and_its_default() -> None:
    """docs/policy.md's table names each argument that BinaryStochasticPolicy adds to SB3's ActorCriticPolicy, with
    its default as the constructor has it (arguments whose default is None give their effective value instead)."""
    text = cli_docs("policy.md", "| policy kwarg | default | meaning |")
    documented = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", text, flags=re.MULTILINE))
    ours = inspect.signature(BinaryStochasticPolicy).parameters
    added = [name for name in ours if name not in inspect.signature(ActorCriticPolicy).parameters]
    assert added and not set(added) - set(documented), f"undocumented: {sorted(set(added) - set(documented))}"
    for name in added:
        default = ours[name].default
        if default is not None:
            assert documented[name] == (f'"{default}"' if isinstance(default, str) else repr(default)), name


class SampleRecorder:
    """Wraps ``policy.bsn.forward`` to record, per observation row, the hidden samples drawn while acting
    (``forward`` with noise) and those scored by the update (``given_samples``, or re-drawn noise)."""

    def __init__(self, policy: BinaryStochasticPolicy) -> None:
        self.acted: dict[bytes, torch.Tensor] = {}
        self.scored: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.policy = policy
        self.forward = policy.bsn.forward
        policy.bsn.forward = self  # type: ignore[method-assign]

    def __call__(self, inputs, deterministic=False, noise=None, given_samples=None):
        output = self.forward(inputs, deterministic=deterministic, noise=noise, given_samples=given_samples)
        packed = self.policy.bsn.pack_samples(output.samples)
        if self.policy.training:
            self.scored.append((inputs.detach().clone(), packed))
        else:
            for row, sample in zip(inputs, packed, strict=True):
                self.acted[row.numpy().tobytes()] = sample
        return output

    def differing_units(self) -> tuple[int, int]:
        """(units that differ between the scored and the acting samples, units scored)."""
        differing = total = 0
        for inputs, packed in self.scored:
            acted = torch.stack([self.acted[row.numpy().tobytes()] for row in inputs])
            differing += int((acted != packed).sum())
            total += packed.numel()
        return differing, total


@pytest.mark.parametrize("algo", [PPO, A2C])
def test_stock_algorithms_score_the_samples_that_acted_in_every_minibatch_and_epoch(algo) -> None:
    """PPO (4 epochs x 4 minibatches) and A2C re-score exactly the hidden samples that chose the actions.

    Negative control: with the behaviour copy dropped (samples re-drawn from the same noise by the
    *current* parameters) the units differ after the first gradient step, so the check can fail.
    """
    env = make_vec_env("CartPole-v1", n_envs=4, seed=1)
    extra = {"batch_size": 32, "n_epochs": 4, "learning_rate": 3e-3} if algo is PPO else {"learning_rate": 3e-3}
    model = algo(BinaryStochasticPolicy, env, n_steps=32, seed=1, policy_kwargs={"net_arch": [16, 16]}, **extra)
    model._setup_learn(256, callback=None)
    for _rollout in range(2):
        recorder = SampleRecorder(model.policy)
        model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, n_rollout_steps=32)
        model.train()
        model.policy.bsn.forward = recorder.forward
        differing, total = recorder.differing_units()
        assert total >= 128 * 32 * (4 if algo is PPO else 1), "every minibatch of every epoch was scored"
        assert differing == 0, f"{differing} of {total} scored hidden units differ from those that acted"
    if algo is A2C:
        return  # one gradient step per rollout: nothing to contrast
    recorder = SampleRecorder(model.policy)
    model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, n_rollout_steps=32)
    model.policy.behaviour.bsn = None  # the flaw this design removes: scoring with the current parameters
    model.train()
    model.policy.bsn.forward = recorder.forward
    assert recorder.differing_units()[0] > 0


def test_stock_ppo_joint_ratio_is_exactly_one_on_the_first_minibatch() -> None:
    """Before any step the re-scored joint log-probability equals the rollout's (ratio 1), and only
    with this rollout's noise key."""
    env = make_vec_env("CartPole-v1", n_envs=4, seed=1)
    model = PPO(BinaryStochasticPolicy, env, n_steps=16, batch_size=64, seed=1, policy_kwargs={"net_arch": [16, 16]})
    model._setup_learn(64, callback=None)
    model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, n_rollout_steps=16)
    model.policy.set_training_mode(True)  # what PPO.train() does first
    data = next(model.rollout_buffer.get(batch_size=None))
    actions = data.actions.long().flatten()
    with torch.no_grad():
        _, log_prob, _ = model.policy.evaluate_actions(data.observations, actions)
    torch.testing.assert_close(log_prob, data.old_log_prob, rtol=0, atol=1e-5)
    # Negative control: with another rollout key the samples differ and so does the joint log-probability.
    model.policy.noise_key += 1
    with torch.no_grad():
        _, other, _ = model.policy.evaluate_actions(data.observations, actions)
    assert (other - data.old_log_prob).abs().max() > 1e-2


def test_behaviour_copy_is_frozen_and_not_saved() -> None:
    model = PPO(BinaryStochasticPolicy, "CartPole-v1", n_steps=16, batch_size=16, policy_kwargs={"net_arch": [8]})
    model.learn(32)
    policy = model.policy
    behaviour = policy.behaviour.bsn
    assert behaviour is not None and not any(p.requires_grad for p in behaviour.parameters())
    assert not any("behaviour" in key for key in policy.state_dict())
    assert {id(p) for p in behaviour.parameters()}.isdisjoint(id(p) for p in policy.parameters())
    model.learn(32, reset_num_timesteps=False)
    policy.set_training_mode(True)
    policy.set_training_mode(False)  # the start of a rollout: refreshed in place with the current values
    assert policy.behaviour.bsn is behaviour
    for live, frozen in zip(policy.bsn.parameters(), behaviour.parameters(), strict=True):
        assert torch.equal(live, frozen)
    policy.double()  # moved to another dtype (as to another device): a new copy where the policy now lives
    policy.set_training_mode(True)
    policy.set_training_mode(False)
    assert policy.behaviour.bsn is not behaviour
    assert next(policy.behaviour.bsn.parameters()).dtype == torch.float64


def test_noise_key_advances_once_per_rollout_not_during_eval() -> None:
    policy = LocalPG("BsnPolicy", "CartPole-v1", seed=0).policy
    policy.set_training_mode(True)
    key = policy.noise_key
    policy.set_training_mode(False)  # start of a rollout
    assert policy.noise_key == key + 1
    policy.set_training_mode(False)  # predict() / EvalCallback inside the rollout
    assert policy.noise_key == key + 1


def test_joint_log_prob_includes_hidden_units_for_local_family_only() -> None:
    obs = torch.randn(5, 4)
    for estimator, includes_hidden in [("local", True), ("st", False), ("sts", False)]:
        policy = PPO(
            BinaryStochasticPolicy, "CartPole-v1", policy_kwargs={"estimator": estimator, "net_arch": [6]}, seed=0
        ).policy
        with torch.no_grad():
            actions, _, log_prob = policy(obs)
            distribution = policy.get_distribution(obs)  # same key, same samples
            action_only = distribution.log_prob(actions)
        assert torch.allclose(log_prob, action_only) is not includes_hidden


def local_estimator_gradients(policy, observations, acted, advantages) -> list[torch.Tensor]:
    """Per BSN layer, ``-(1/B) sum_rows A (h - p) x^T`` from the acting samples, written from the layers' weights
    (``x``: the layer below's samples, as signs ``2h - 1`` when the policy has ``signed_inputs``)."""
    samples = policy.bsn.unpack_samples(acted)
    layer_input = policy.actor_features(observations)
    gradients = []
    for layer, sample in zip(policy.bsn.layers, samples, strict=True):
        firing_prob = torch.sigmoid(layer_input @ layer.weight.T + layer.bias)
        signal = (sample - firing_prob) * advantages.unsqueeze(-1)
        gradients.append(-(signal.T @ layer_input) / len(observations))
        layer_input = 2.0 * sample - 1.0 if policy.signed_inputs else sample
    return gradients


@pytest.mark.parametrize("signed_inputs", [False, True], ids=["bit_inputs", "signed_inputs"])
@pytest.mark.parametrize("algo", [PPO, A2C])
def test_stock_algorithms_apply_the_local_estimator_in_every_layer(algo, signed_inputs) -> None:
    """The first gradient step of PPO / A2C on a 3-layer BSN actor: every layer's weight gradient is the
    paper's local estimate ``-(h - p) A x^T`` (mean over the minibatch) on the samples that acted."""
    env = make_vec_env("CartPole-v1", n_envs=4, seed=2)
    extra = {"batch_size": 64, "n_epochs": 1} if algo is PPO else {"normalize_advantage": True}
    model = algo(
        BinaryStochasticPolicy,
        env,
        n_steps=16,
        seed=2,
        max_grad_norm=1e9,
        policy_kwargs={"net_arch": [6, 5, 4], "bsn_init_gain": 2.0, "signed_inputs": signed_inputs},
        **extra,
    )
    model._setup_learn(64, callback=None)
    recorder = SampleRecorder(model.policy)
    model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, n_rollout_steps=16)
    model.policy.bsn.forward = recorder.forward
    captured = []
    step = model.policy.optimizer.step

    def capturing_step(*args, **kwargs):
        if not captured:
            captured.append([layer.weight.grad.clone() for layer in model.policy.bsn.layers])
        return step(*args, **kwargs)

    model.policy.optimizer.step = capturing_step
    with torch.no_grad():
        data = next(model.rollout_buffer.get(batch_size=None))  # PPO: one minibatch of the whole rollout
        observations = data.observations
        advantages = (data.advantages - data.advantages.mean()) / (data.advantages.std() + 1e-8)
        rows = model.policy.actor_features(observations)
        acted = torch.stack([recorder.acted[row.numpy().tobytes()] for row in rows])
        expected = local_estimator_gradients(model.policy, observations, acted, advantages)
    model.train()
    for index, (got, want) in enumerate(zip(captured[0], expected, strict=True)):
        assert want.abs().max() > 1e-3, f"layer {index}: the expected gradient must be far from 0"
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=lambda m, i=index: f"layer {i}: {m}")


def test_each_bsn_layer_gets_its_own_init_gain() -> None:
    """Orthogonal initialisation with the layer's gain: every singular value of a layer's weight equals it."""
    gains = [8.0, 2.0, 0.5]
    model = LocalPG("BsnPolicy", "CartPole-v1", policy_kwargs={"net_arch": [16, 16, 16], "bsn_init_gain": gains})
    assert model.policy.layer_init_gains() == gains
    for layer, gain in zip(model.policy.bsn.layers, gains, strict=True):
        singular_values = torch.linalg.svdvals(layer.weight.detach())
        torch.testing.assert_close(singular_values, torch.full_like(singular_values, gain), rtol=1e-4, atol=1e-5)
    single = LocalPG("BsnPolicy", "CartPole-v1", policy_kwargs={"net_arch": [16, 16], "bsn_init_gain": 4.0})
    assert single.policy.layer_init_gains() == [4.0, 4.0]


@pytest.mark.parametrize(
    "extra",
    [
        {"baseline": "learned", "bsn_init_gain": 2.0},
        {"baseline": "learned", "baseline_kwargs": {"condition": "layer_input"}, "bsn_init_gain": [2.0, 8.0]},
    ],
)
def test_save_load_round_trip_keeps_policy_kwargs(tmp_path, extra) -> None:
    kwargs = {"net_arch": {"pi": [8, 4], "vf": [16]}, "estimator": "local", **extra}
    model = LocalPG("BsnPolicy", "CartPole-v1", n_steps=16, batch_size=32, policy_kwargs=kwargs, seed=3)
    model.learn(32)
    model.save(tmp_path / "model.zip")
    loaded = LocalPG.load(tmp_path / "model.zip", device="cpu")
    assert loaded.policy.bsn.hidden_sizes == [8, 4]
    assert loaded.policy.baseline_name == "learned"
    assert loaded.policy.baseline_kwargs == extra.get("baseline_kwargs", {})
    assert loaded.policy.bsn_init_gain == extra["bsn_init_gain"]
    for (name, a), (_, b) in zip(model.policy.state_dict().items(), loaded.policy.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
