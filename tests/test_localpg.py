"""LocalPG: identity-env learnability, locality of the update, GAE, save/load, determinism, bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

from agents import LocalPG
from agents.localpg import HiddenRolloutBuffer, clipped_local_loss
from agents.localpg.buffer import take_rows
from agents.localpg.losses import MAX_LOG_RATIO
from bsn_zoo.cli_errors import UserInputError
from bsn_zoo.config import validate_config
from policies.estimators import bernoulli_log_prob, local_gradient

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


def small_model(env="CartPole-v1", **kwargs) -> LocalPG:
    defaults = {"n_steps": 16, "batch_size": 32, "n_epochs": 2, "seed": 0, "policy_kwargs": {"net_arch": [8, 8]}}
    return LocalPG("BsnPolicy", env, **{**defaults, **kwargs})


# ---------------------------------------------------------------- learnability (SB3-style identity envs)
@pytest.mark.parametrize(
    "env_fn, steps, deterministic, threshold, extra",
    [
        (lambda: IdentityEnv(4), 6000, True, 90, {}),
        (lambda: IdentityEnv(4), 6000, True, 90, {"rao_blackwell": True}),
        (lambda: IdentityEnvMultiDiscrete(2), 6000, True, 90, {}),
        (lambda: IdentityEnvMultiBinary(2), 8000, True, 90, {}),
        # Continuous outputs from binary features: the deterministic (p > 0.5) code is coarser than the
        # stochastic one the Gaussian head was trained on, so this row evaluates stochastic neurons.
        (lambda: IdentityEnvBox(eps=0.5), 20000, False, 75, {}),
    ],
    ids=["Discrete", "Discrete_rao_blackwell", "MultiDiscrete", "MultiBinary", "Box"],
)
def test_identity_envs_are_learned(env_fn, steps, deterministic, threshold, extra) -> None:
    env = make_vec_env(env_fn, n_envs=4, seed=0)
    model = LocalPG(
        "BsnPolicy",
        env,
        n_steps=64,
        batch_size=128,
        n_epochs=4,
        learning_rate=3e-3,
        seed=0,
        policy_kwargs={"net_arch": [32], "bsn_init_gain": 8.0},
        **extra,
    )
    model.learn(steps)
    mean_reward, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=5, deterministic=deterministic)
    assert mean_reward >= threshold


# ---------------------------------------------------------------- locality of the update
def test_update_is_local() -> None:
    """A layer's weight gradient is (h - p)(A) x^T / B: it depends on the layers above only through A."""
    model = small_model(n_epochs=1, batch_size=None, normalize_advantage=False, policy_kwargs={"net_arch": [5, 4]})
    model.learn(16)  # fills the buffer and makes one update
    model._score_rollout()  # old unit log-probs = current parameters: every ratio is exactly 1
    batch = next(model.rollout_buffer.get(None))
    bsn = model.policy.bsn

    def layer0_gradient() -> torch.Tensor:
        model.policy.optimizer.zero_grad()
        loss, _ = model._minibatch_loss(batch, clip_range=0.2)
        loss.backward()
        return bsn.layers[0].weight.grad.clone()

    first = layer0_gradient()
    with torch.no_grad():  # change everything above layer 0: layer 1, the action head and the critic
        for module in (bsn.layers[1], model.policy.action_net, model.policy.value_net):
            for parameter in module.parameters():
                parameter.add_(torch.randn_like(parameter))
    second = layer0_gradient()
    torch.testing.assert_close(first, second)

    # And it equals the paper's local rule dW = -(h - p) * A * x^T averaged over the batch.
    features = model.policy.extract_features(batch.observations)
    output = bsn(features, given_samples=bsn.unpack_samples(batch.hidden))
    g = local_gradient(output.samples[0], output.firing_probs[0], batch.advantages)
    expected = -(g.T @ features) / len(features)
    torch.testing.assert_close(first, expected.detach(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("clip_as_tensor", [False, True], ids=["float_clip", "tensor_clip"])
@pytest.mark.parametrize("signal_shape", ["shared", "per_unit"])
@pytest.mark.parametrize("clip_range", [0.2, 1.0])
def test_clipped_local_loss_matches_autograd_of_the_clipped_surrogate(
    signal_shape: str, clip_range: float, clip_as_tensor: bool
) -> None:
    """The closed-form backward equals autograd's derivative of -min(r s, clip(r) s), in every regime:
    ratios inside and outside the trust region, signals of both signs, and a clamped log-ratio; the
    clip range given as a float or as a 0-dim tensor (as a compiled update passes it)."""
    generator = torch.Generator().manual_seed(0)
    rows, units = 64, 12
    pre_activation = (3 * torch.randn(rows, units, generator=generator, dtype=torch.float64)).requires_grad_()
    samples = (torch.rand(rows, units, generator=generator, dtype=torch.float64) < 0.5).to(torch.float64)
    old_log_prob = bernoulli_log_prob(samples, pre_activation.detach() + torch.randn(rows, units, generator=generator))
    old_log_prob[0, 0] = old_log_prob[0, 0] - 2 * MAX_LOG_RATIO  # a ratio beyond the exp() guard
    shape = (rows, 1) if signal_shape == "shared" else (rows, units)
    signal = torch.randn(shape, generator=generator, dtype=torch.float64)

    log_prob = bernoulli_log_prob(samples, pre_activation)
    ratio = (log_prob - old_log_prob).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()
    reference = -torch.min(ratio * signal, ratio.clamp(1 - clip_range, 1 + clip_range) * signal).sum(-1).mean()
    (expected,) = torch.autograd.grad(reference, pre_activation)

    clip = torch.tensor(clip_range, dtype=torch.float64) if clip_as_tensor else clip_range
    loss, clip_fraction = clipped_local_loss(
        pre_activation, samples, torch.sigmoid(pre_activation), log_prob, old_log_prob, signal, clip
    )
    (gradient,) = torch.autograd.grad(loss, pre_activation)
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(gradient, expected)
    assert ((ratio - 1).abs() > clip_range).any() and ((ratio - 1).abs() <= clip_range).any()  # both regimes
    torch.testing.assert_close(clip_fraction, ((ratio - 1).abs() > clip_range).float().mean())
    assert gradient[0, 0] == 0  # the clamped unit gets no gradient


def test_clipped_local_loss_at_ratio_one_is_the_local_estimator() -> None:
    """With P_new = P_old (first epoch), dL/da = -(h - p) * s / B: the paper's local estimator."""
    generator = torch.Generator().manual_seed(1)
    pre_activation = torch.randn(32, 5, generator=generator).requires_grad_()
    samples = (torch.rand(32, 5, generator=generator) < torch.sigmoid(pre_activation)).float()
    log_prob = bernoulli_log_prob(samples, pre_activation)
    signal = torch.randn(32, 1, generator=generator)
    probs = torch.sigmoid(pre_activation)
    loss, clip_fraction = clipped_local_loss(pre_activation, samples, probs, log_prob, log_prob, signal, 0.2)
    loss.backward()
    torch.testing.assert_close(pre_activation.grad, -local_gradient(samples, probs.detach(), signal) / 32)
    assert clip_fraction == 0


# ---------------------------------------------------------------- rollout buffer
def test_gae_matches_sb3_rollout_buffer() -> None:
    rng = np.random.default_rng(0)
    steps, n_envs = 12, 3
    ours = HiddenRolloutBuffer(steps, n_envs, total_units=2, device="cpu", gamma=0.97, gae_lambda=0.9)
    sb3 = RolloutBuffer(steps, spaces.Box(-1, 1, (2,)), spaces.Discrete(2), "cpu", 0.9, 0.97, n_envs)
    for _ in range(steps):
        obs = rng.normal(size=(n_envs, 2)).astype(np.float32)
        rewards = rng.normal(size=n_envs).astype(np.float32)
        starts = rng.random(n_envs) < 0.2
        values = torch.as_tensor(rng.normal(size=(n_envs, 1)), dtype=torch.float32)
        log_probs = torch.zeros(n_envs)
        actions = np.zeros((n_envs, 1))
        sb3.add(obs, actions, rewards, starts, values, log_probs)
        ours.add(
            torch.as_tensor(obs),
            torch.zeros(n_envs),
            torch.as_tensor(rewards),
            torch.as_tensor(starts, dtype=torch.float32),
            values,
            log_probs,
            torch.zeros(n_envs, 2, dtype=torch.uint8),
        )
    last_values = torch.as_tensor(rng.normal(size=(n_envs, 1)), dtype=torch.float32)
    dones = np.array([True, False, False])
    sb3.compute_returns_and_advantage(last_values, dones)
    ours.compute_returns_and_advantage(last_values, torch.as_tensor(dones, dtype=torch.float32))
    np.testing.assert_allclose(ours.advantages, sb3.advantages, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.returns, sb3.returns, rtol=1e-5, atol=1e-5)


def test_buffer_stores_hidden_compactly() -> None:
    model = small_model()
    model.learn(16)
    assert model.rollout_buffer.hidden.dtype == torch.uint8
    assert set(model.rollout_buffer.hidden.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize(
    "column",
    [
        torch.randn(50),
        torch.randn(50, 4),
        torch.randn(50, 3, 2, dtype=torch.float64),
        torch.randint(0, 2, (50, 7), dtype=torch.uint8),
        torch.randint(0, 5, (50, 2)),
        torch.rand(50, 3) > 0.5,
        torch.randn(50, 6)[:, ::2],  # not contiguous
    ],
    ids=["1d", "float32", "float64_3d", "uint8", "int64", "bool", "strided"],
)
def test_take_rows_is_row_indexing(column: torch.Tensor) -> None:
    order = torch.randperm(50)
    assert torch.equal(take_rows(column, order), column[order])


# ---------------------------------------------------------------- reproducibility and persistence
def test_seeded_runs_are_identical() -> None:
    # As in SB3, the seed fixes the global generators at construction: build and train one run at a time.
    first = small_model(seed=7).learn(96)
    second = small_model(seed=7).learn(96)
    for a, b in zip(first.policy.parameters(), second.policy.parameters(), strict=True):
        assert torch.equal(a, b)
    third = small_model(seed=8).learn(96)
    assert any(not torch.equal(a, b) for a, b in zip(first.policy.parameters(), third.policy.parameters(), strict=True))


@pytest.mark.parametrize("device", DEVICES)
def test_save_load_round_trip_and_continue(tmp_path, device) -> None:
    model = small_model(device=device, policy_kwargs={"net_arch": [8, 8], "baseline": "optimal"})
    model.learn(64)
    path = tmp_path / "model.zip"
    model.save(path)
    loaded = LocalPG.load(path, env=make_vec_env("CartPole-v1", n_envs=1, seed=0), device=device)
    for (name, a), (_, b) in zip(model.policy.state_dict().items(), loaded.policy.state_dict().items(), strict=True):
        assert torch.equal(a.cpu(), b.cpu()), name
    obs = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    # Training continues from the saved state, timesteps included.
    steps = loaded.num_timesteps
    loaded.learn(32, reset_num_timesteps=False)
    assert loaded.num_timesteps > steps
    # Loads on the CPU whatever device saved it.
    on_cpu = LocalPG.load(path, device="cpu")
    assert next(on_cpu.policy.parameters()).device.type == "cpu"


# ---------------------------------------------------------------- compiled update
def test_compiled_update_matches_eager_and_survives_save_load(tmp_path) -> None:
    """compile_update=True trains to the eager parameters (float rounding aside), through schedules of
    clip_range and learning rate, a short last minibatch, and a save/load round trip."""

    def train(compile_update: bool) -> LocalPG:
        model = small_model(
            make_vec_env("CartPole-v1", n_envs=2, seed=0),
            batch_size=24,  # rollouts of 32 rows: minibatches of 24 and 8
            n_epochs=2,
            clip_range=lambda progress: 0.1 + 0.1 * progress,
            learning_rate=lambda progress: 1e-3 * progress,
            compile_update=compile_update,
        )
        return model.learn(32 * 3)

    eager, compiled = train(False), train(True)
    assert eager._loss_fn == eager._minibatch_loss and compiled._loss_fn != compiled._minibatch_loss
    for (name, a), b in zip(eager.policy.state_dict().items(), compiled.policy.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    path = tmp_path / "compiled.zip"
    compiled.save(path)
    loaded = LocalPG.load(path, env=make_vec_env("CartPole-v1", n_envs=2, seed=0))
    assert loaded.compile_update and loaded._loss_fn != loaded._minibatch_loss
    loaded.learn(32, reset_num_timesteps=False)
    assert all(torch.isfinite(p).all() for p in loaded.policy.parameters())


@pytest.mark.parametrize(
    "env_fn, policy, extra",
    [
        (lambda: IdentityEnvBox(eps=0.5), "BsnPolicy", {}),  # Gaussian head
        (lambda: SimpleMultiObsEnv(random_start=False), "MultiInputPolicy", {}),  # Dict observations
        (
            lambda: IdentityEnvMultiDiscrete(2),
            "BsnPolicy",
            {
                "ent_coef": 0.01,
                "hidden_ent_coef": 0.01,
                "policy_kwargs": {"net_arch": [8, 8], "estimator": "learned_predictor", "baseline": "optimal"},
            },
        ),
        (lambda: IdentityEnvMultiDiscrete(2), "BsnPolicy", {"rao_blackwell": True}),
        (lambda: IdentityEnvMultiDiscrete(2), "BsnPolicy", {"rao_blackwell": True, "coupled_posterior": True}),
    ],
    ids=["box_actions", "dict_obs", "predictor_optimal_baseline_entropy", "rao_blackwell", "coupled_posterior"],
)
def test_compiled_update_matches_eager_across_spaces_and_options(env_fn, policy, extra) -> None:
    def train(compile_update: bool) -> LocalPG:
        kwargs = {"n_steps": 16, "batch_size": 32, "n_epochs": 2, "seed": 0, "policy_kwargs": {"net_arch": [8, 8]}}
        model = LocalPG(policy, make_vec_env(env_fn, n_envs=2, seed=0), compile_update=compile_update, **kwargs | extra)
        return model.learn(32 * 2)

    eager, compiled = train(False), train(True)
    for (name, a), b in zip(eager.policy.state_dict().items(), compiled.policy.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("compiled_function", ["_unit_scores_fn", "_loss_fn"])
def test_compile_failure_names_the_fix(compiled_function: str) -> None:
    model = small_model(compile_update=True)

    def failing_compiler(*args, **kwargs):
        raise torch._dynamo.exc.BackendCompilerFailed(None, RuntimeError("no C++ compiler found"), None)

    setattr(model, compiled_function, failing_compiler)
    with pytest.raises(RuntimeError, match=r"no C\+\+ compiler found.*compile_update=False"):
        model.learn(32)


# ---------------------------------------------------------------- SB3 integration
def test_vecnormalize_callbacks_and_evaluate_policy(tmp_path) -> None:
    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=2, seed=0))
    eval_env = VecNormalize(make_vec_env("CartPole-v1", n_envs=1, seed=1), training=False)
    model = small_model(env)
    callbacks = [
        EvalCallback(eval_env, eval_freq=16, n_eval_episodes=2, best_model_save_path=str(tmp_path)),
        CheckpointCallback(save_freq=32, save_path=str(tmp_path), name_prefix="ckpt"),
    ]
    model.learn(128, callback=callbacks)
    assert (tmp_path / "best_model.zip").exists()
    assert any(tmp_path.glob("ckpt_*_steps.zip"))
    mean_reward, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=2)
    assert np.isfinite(mean_reward)


def test_logs_sb3_and_bsn_keys() -> None:
    model = small_model(policy_kwargs={"net_arch": [8, 8], "baseline": "learned"})
    model.learn(64)
    logged = model.logger.name_to_value
    expected = [
        "train/value_loss",
        "train/approx_kl",
        "train/clip_fraction",
        "train/explained_variance",
        "bsn/hidden_loss",
        "bsn/unit_clip_fraction",
        "bsn/baseline_explained_variance",
    ]
    for layer in (0, 1):
        expected += [
            f"bsn/layer{layer}/{key}"
            for key in (
                "firing_rate",
                "frac_always_on",
                "frac_never_on",
                "mean_abs_h_minus_p",
                "grad_snr",
                "update_norm",
            )
        ]
    for key in expected:
        assert key in logged and np.isfinite(logged[key]), key


@pytest.mark.parametrize("baseline", ["value", "mean", "optimal", "learned"])
def test_first_update_moves_every_layer_along_its_local_estimate(baseline) -> None:
    """Through ``learn``: each BSN layer's first step has a positive inner product with the local estimate
    ``(h - p)(A - c) x^T`` computed from the stored rollout under the parameters that collected it (Adam's
    first step is ``lr * g / (|g| + eps)`` per weight, so a wrong sign in any layer makes it negative)."""
    model = small_model(
        n_epochs=1,
        batch_size=None,
        normalize_advantage=False,
        policy_kwargs={"net_arch": [8, 8, 8], "baseline": baseline, "bsn_init_gain": 2.0},
    )
    collecting = copy.deepcopy(model.policy)
    model.learn(16)  # one rollout, one full-batch step
    buffer = model.rollout_buffer
    observations, hidden = buffer.flat_observations(), buffer.hidden.reshape(16, -1)
    advantages = buffer.tensors.advantages.reshape(-1)
    with torch.no_grad():
        features = collecting.actor_features(observations)
        output = collecting.bsn(features, given_samples=collecting.bsn.unpack_samples(hidden))
        corrections = (
            [torch.zeros(1, 1)] * 3
            if collecting.neuron_baseline is None
            else collecting.neuron_baseline(features, output)
        )
    for index, (layer, old) in enumerate(zip(model.policy.bsn.layers, collecting.bsn.layers, strict=True)):
        signal = advantages.unsqueeze(-1) - corrections[index]
        estimate = local_gradient(output.samples[index], output.firing_probs[index], signal)
        ascent = estimate.T @ output.layer_inputs[index] / len(advantages)
        step = (layer.weight - old.weight).detach()
        assert float((step * ascent).sum()) > 0, f"layer {index} moved against its local estimate"


@pytest.mark.parametrize("baseline", ["value", "mean", "optimal", "learned"])
def test_learned_predictor_trains_with_every_baseline(baseline) -> None:
    model = small_model(policy_kwargs={"net_arch": [8, 8], "estimator": "learned_predictor", "baseline": baseline})
    model.learn(64)
    for layer, estimator_module in zip(model.policy.bsn.layers, model.policy.bsn.estimators, strict=True):
        assert torch.isfinite(layer.weight).all()
        # starts at g_hat = 0 and has been trained on (h - p)(A - c)
        assert estimator_module.regressor[-1].weight.abs().sum() > 0


def test_learned_predictor_with_inputs_trains_its_input_term_and_round_trips(tmp_path) -> None:
    policy_kwargs = {"net_arch": [8, 6], "estimator": "learned_predictor", "estimator_kwargs": {"use_inputs": True}}
    model = small_model(policy_kwargs=policy_kwargs)
    model.learn(64)
    heads = [estimator.input_head for estimator in model.policy.bsn.estimators]
    # Layer 0 reads CartPole's 4 observations, layer 1 the 8 units of layer 0; one (off, on) pair per unit.
    assert [(head.in_features, head.out_features) for head in heads] == [(4, 16), (8, 12)]
    assert all(head.weight.abs().sum() > 0 for head in heads)  # trained from zero
    model.save(tmp_path / "predictor.zip")
    loaded = LocalPG.load(tmp_path / "predictor.zip")
    for (name, a), b in zip(model.policy.state_dict().items(), loaded.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("estimator", ["st", "st_sigmoid", "sts", "noisy_rectifier"])
def test_propagating_estimators_are_refused_with_advice(estimator) -> None:
    with pytest.raises(ValueError, match="use PPO or A2C"):
        small_model(policy_kwargs={"estimator": estimator})


def test_straight_through_predictor_feature_is_refused_with_the_reason() -> None:
    kwargs = {"estimator": "learned_predictor", "estimator_kwargs": {"use_straight_through": True}}
    with pytest.raises(ValueError, match="LocalPG cannot train a learned predictor with use_straight_through=True"):
        small_model(policy_kwargs={**kwargs, "net_arch": [4]})


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"n_steps": 0}, "n_steps must be an integer >= 1, got 0"),
        ({"n_epochs": 0}, "n_epochs must be an integer >= 1, got 0"),
        ({"learning_rate": -1.0}, "learning_rate must be > 0"),
        ({"clip_range": 0.0}, "clip_range must be > 0"),
        ({"batch_size": 1}, "batch_size must be an integer >= 2, got 1"),
        ({"gamma": 1.5}, r"gamma must be in \[0, 1\], got 1.5"),
        ({"gae_lambda": -0.1}, r"gae_lambda must be in \[0, 1\], got -0.1"),
        ({"n_steps": 2.5}, "n_steps must be an integer >= 1, got 2.5"),
        ({"ent_coef": -0.1}, "ent_coef must be >= 0"),
        ({"compile_update": "yes"}, "compile_update must be True or False"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        small_model(**kwargs)


@pytest.mark.parametrize(("key", "bad", "edge"), [
    ("gamma", 1.5, 0.0), ("gae_lambda", -0.1, 1.0), ("batch_size", 1, 2), ("n_steps", 0, 1),
    ("hidden_clip_range", 0.0, 1e-3), ("vf_coef", -1.0, 0.0),
])
def test_the_command_line_and_the_algorithm_accept_the_same_values(key: str, bad: float, edge: float) -> None:
    """One range per hyperparameter: the config validator and LocalPG reject a value with the same message,
    and both accept the range's edge."""
    with pytest.raises(ValueError) as algorithm_error:
        small_model(**{key: bad})
    with pytest.raises(UserInputError) as config_error:
        validate_config({key: bad})
    assert str(config_error.value) == str(algorithm_error.value)
    small_model(**{key: edge})
    validate_config({key: edge})


def test_non_finite_loss_stops_before_writing_weights() -> None:
    model = small_model()
    model.learn(16)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.rollout_buffer.tensors.advantages.fill_(float("nan"))
    model.rollout_buffer.pos = model.rollout_buffer.buffer_size
    with pytest.raises(FloatingPointError, match="diverged"):
        model.train()
    for a, b in zip(before, model.policy.parameters(), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- torch-batched envs
def test_runs_on_device_with_torch_env_and_uses_wrappers_when_wrapped() -> None:
    from stable_baselines3.common.vec_env import VecNormalize

    from envs import make_torch_vec_env

    env = make_torch_vec_env("CartPole-v1", num_envs=16, device="cpu", seed=0)
    model = small_model(env, n_steps=32, batch_size=128)
    model.learn(16 * 32 * 3)
    assert isinstance(model._last_obs, torch.Tensor)  # the tensor path kept observations on the device
    assert len(model.ep_info_buffer) > 0  # finished episodes reached rollout/ep_rew_mean
    assert all(np.isfinite(info["r"]) and info["l"] >= 1 for info in model.ep_info_buffer)

    wrapped = VecNormalize(make_torch_vec_env("CartPole-v1", num_envs=4, device="cpu", seed=0))
    normalized = small_model(wrapped)
    normalized.learn(64)
    assert isinstance(normalized._last_obs, np.ndarray)  # numpy path through the wrapper
    assert wrapped.obs_rms.count > 1  # VecNormalize saw the observations


def test_explained_variance_on_the_device_matches_sb3() -> None:
    from stable_baselines3.common.utils import explained_variance

    from agents.localpg.diagnostics import explained_variance as device_explained_variance

    generator = torch.Generator().manual_seed(0)
    target = torch.randn(4096, generator=generator)
    predicted = target + 0.5 * torch.randn(4096, generator=generator)
    constant = torch.full((4096,), 3.0)
    assert device_explained_variance(predicted, target) == pytest.approx(
        explained_variance(predicted.numpy(), target.numpy()), abs=1e-6
    )
    assert np.isnan(device_explained_variance(predicted, constant)) and np.isnan(
        explained_variance(predicted.numpy(), constant.numpy())
    )
