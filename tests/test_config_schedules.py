"""RL Zoo's ``lin_<start>`` schedules for ``learning_rate`` and ``clip_range`` in configurations."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml
from stable_baselines3.common.env_util import make_vec_env

from agents.localpg import LocalPG
from benchmarks.common import load_tuned
from bsn_zoo.cli_errors import UserInputError
from bsn_zoo.config import build_config, linear_schedule, parse_overrides, resolve_schedules, validate_config
from bsn_zoo.run import algorithm_kwargs


@pytest.mark.parametrize("progress_remaining", [1.0, 0.75, 0.5, 0.1, 0.0])
def test_linear_schedule_is_start_times_progress_remaining(progress_remaining: float) -> None:
    assert linear_schedule(3e-3)(progress_remaining) == pytest.approx(3e-3 * progress_remaining)


@pytest.mark.parametrize("progress_remaining", [-0.001, -1.0, -2047.0])
def test_linear_schedule_holds_at_zero_past_the_end_of_training(progress_remaining: float) -> None:
    """The last rollout may run past total_timesteps; a negative learning rate would ascend the loss."""
    assert linear_schedule(3e-3)(progress_remaining) == 0.0


def test_a_learn_call_shorter_than_one_rollout_never_sets_a_negative_rate() -> None:
    config = validate_config({"learning_rate": "lin_1e-3", "clip_range": "lin_0.2"})
    kwargs = algorithm_kwargs(config)
    model = LocalPG("BsnPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), n_steps=64, batch_size=64,
                    n_epochs=1, seed=0, learning_rate=kwargs["learning_rate"], clip_range=kwargs["clip_range"])
    model.learn(total_timesteps=1)  # one rollout of 128 steps: progress remaining 1 - 128 / 1
    assert {group["lr"] for group in model.policy.optimizer.param_groups} == {0.0}
    assert model.logger.name_to_value["train/clip_range"] == 0.0


def test_validated_config_keeps_plain_yaml_and_the_model_gets_schedules() -> None:
    config = validate_config({"learning_rate": "lin_3e-3", "clip_range": "lin_0.2"})
    assert config["learning_rate"] == "lin_0.003" and config["clip_range"] == "lin_0.2"
    assert yaml.safe_load(yaml.safe_dump(config)) == config  # config.yml stays plain YAML
    kwargs = algorithm_kwargs(config)
    assert kwargs["learning_rate"](0.5) == pytest.approx(1.5e-3)
    assert kwargs["clip_range"](0.25) == pytest.approx(0.05)


def test_numbers_pass_through_unchanged() -> None:
    config = validate_config({"learning_rate": 1e-3, "clip_range": "0.3"})
    assert config["learning_rate"] == 1e-3 and config["clip_range"] == 0.3
    assert algorithm_kwargs(config)["learning_rate"] == 1e-3


def test_params_override_accepts_a_linear_schedule() -> None:
    config = build_config({"env": "CartPole-v1"}, parse_overrides(["learning_rate:lin_1e-3"]))
    assert config["learning_rate"] == "lin_0.001"


@pytest.mark.parametrize("value", ["lin_", "lin_fast", "lin_0", "lin_-1e-3", "lin_inf", "lin_nan"])
@pytest.mark.parametrize("key", ["learning_rate", "clip_range"])
def test_bad_linear_schedules_name_the_key_and_the_fix(key: str, value: str) -> None:
    with pytest.raises(UserInputError, match=rf"{key} '{value}' is not a linear schedule.*e\.g\. lin_3e-3"):
        validate_config({key: value})
    with pytest.raises(UserInputError, match=rf"{key} '{value}'"):
        resolve_schedules({key: value})


def test_other_keys_are_not_read_as_schedules() -> None:
    assert resolve_schedules({"ent_coef": "lin_0.01"}) == {"ent_coef": "lin_0.01"}


def test_load_tuned_gives_schedules_that_decay_the_optimizer_rates(tmp_path: Path) -> None:
    path = tmp_path / "tuned.yml"
    path.write_text("CartPole-v1:\n  n_envs: 2\n  n_steps: 8\n  batch_size: 16\n  n_epochs: 1\n"
                    "  learning_rate: lin_2e-3\n  clip_range: lin_0.2\n  hidden_lr_scale: 5.0\n"
                    "  policy_kwargs: {net_arch: [8]}\n")
    config = load_tuned(str(path), "CartPole-v1")
    env = make_vec_env("CartPole-v1", n_envs=int(config.pop("n_envs")), seed=0)
    model = LocalPG("BsnPolicy", env, seed=0, **config)
    # Rollouts of 16 steps; stopping in the third leaves the update after the second (progress 1 - 32/64).
    model.learn(total_timesteps=64, callback=lambda local_vars, _globals: local_vars["self"].num_timesteps <= 32)
    rates = sorted({group["lr"] for group in model.policy.optimizer.param_groups})
    assert rates == pytest.approx([2e-3 * 0.5, 5.0 * 2e-3 * 0.5])
    assert model.clip_range(0.25) == pytest.approx(0.05)


def test_schedules_survive_pickling_and_name_themselves() -> None:
    schedule = pickle.loads(pickle.dumps(linear_schedule(0.2)))
    assert schedule(0.5) == 0.1 and repr(schedule) == "lin_0.2"
