"""benchmarks/ablation.py: every arm builds on every benchmark task it applies to; finished runs are kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecNormalize

from agents.localpg import LocalPG
from benchmarks import ablation
from benchmarks.ablation import (
    VARIANTS,
    Variant,
    applies,
    build,
    main,
    record_name,
    variant_named,
    why_sitting_out,
)
from benchmarks.compare_sb3 import TASKS, Task, algo_config


@pytest.mark.parametrize("env_id", list(TASKS))
def test_every_arm_builds_on_every_task(env_id: str) -> None:
    for variant in VARIANTS:
        if not applies(variant, env_id):
            reason = why_sitting_out(variant, env_id)
            assert variant.box_actions_only or reason == "the task's entry already has the arm's settings", variant.name
            continue
        model = build(variant, env_id, seed=0)
        assert isinstance(model, LocalPG if variant.algo == "localpg" else PPO), variant.name
        # The stock-PPO arms keep RL Zoo's settings except gSDE, which the BSN policy refuses.
        assert not model.use_sde
        model.get_env().close()


def test_gaussian_head_arms_sit_out_discrete_tasks_and_runs_are_not_trained_twice(tmp_path: Path, monkeypatch) -> None:
    assert applies(variant_named("state_dependent_std"), "Pendulum-v1")
    assert not applies(variant_named("state_dependent_std"), "CartPole-v1")
    monkeypatch.setitem(TASKS, "CartPole-v1", Task("CartPole-v1", 475.0, {"localpg": 256}, 256, 1))
    out = tmp_path / "ablation"
    argv = ["--envs", "CartPole-v1", "--variants", "default", "state_dependent_std", "--seeds", "1",
            "--budget", "256", "--out", str(out)]
    main(argv)
    text = out.with_suffix(".md").read_text()
    assert "Not run: state_dependent_std on CartPole-v1 (the arm changes the Gaussian head; no Box actions)." in text
    assert "every run asked for is finished" in text
    assert len(list((tmp_path / "ablation_runs").glob("CartPole-v1__default__*.json"))) == 1

    def no_training(job_and_folder):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("benchmarks.ablation.run_one", no_training)
    main(argv)
    assert "| default |" in out.with_suffix(".md").read_text()


def test_an_arm_the_entry_already_has_sits_out_instead_of_repeating_the_default() -> None:
    """An arm that changes nothing on a task would be a second default row under another name."""
    entry_width = Variant("same", "", overrides={"rao_blackwell": True}, policy_overrides={"net_arch": [256]})
    assert why_sitting_out(entry_width, "Hopper-v5") == "the task's entry already has the arm's settings"
    wider = Variant("wider", "", overrides={"rao_blackwell": True}, policy_overrides={"net_arch": [512]})
    assert applies(wider, "Hopper-v5")
    assert applies(variant_named("rao_blackwell=False"), "Hopper-v5")
    assert applies(variant_named("log_std_init=0"), "Hopper-v5")
    assert applies(variant_named("default"), "Hopper-v5")


@pytest.mark.parametrize("arm", ["default", "ppo+local"])
def test_one_reading_of_the_settings_names_builds_and_evaluates_a_run(
    arm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each algorithm's settings are read once per run, and that reading names the record, builds the model and
    sets the evaluation env's normalisation: here every later reading sees an edited entry (another discount,
    normalisation turned over), and none of the three may follow it."""
    monkeypatch.setitem(TASKS, "Pendulum-v1", Task("Pendulum-v1", -200.0, {"localpg": 64, "ppo": 64}, 64, 1))
    job = (arm, "Pendulum-v1", 0, 64)
    named_for = record_name(job)
    readings: list[str] = []

    def edited_after_the_first_reading(algo: str, env_id: str) -> dict:
        settings = algo_config(algo, env_id)
        first = algo not in readings
        readings.append(algo)
        return settings if first else {**settings, "gamma": 0.5, "normalize": not settings.get("normalize", False)}

    built, evaluated_on = [], []
    real_train_until = ablation.train_until

    def recording_train_until(make_model, make_eval_env, *args, **kwargs):
        return real_train_until(
            lambda: built.append(make_model()) or built[-1],
            lambda: evaluated_on.append(make_eval_env()) or evaluated_on[-1],
            *args,
            **kwargs,
        )

    monkeypatch.setattr(ablation, "algo_config", edited_after_the_first_reading)
    monkeypatch.setattr(ablation, "train_until", recording_train_until)
    ablation.run_one((job, tmp_path))
    # LocalPG's entry names every record; a stock-PPO arm also reads RL Zoo's settings, and nothing else.
    assert readings == (["localpg"] if arm == "default" else ["localpg", "ppo_bsn"])
    settings = algo_config(readings[-1], "Pendulum-v1")
    assert built[0].gamma == settings["gamma"] != 0.5
    assert isinstance(evaluated_on[0], VecNormalize) == bool(settings.get("normalize", False))
    assert [path.name for path in tmp_path.glob("*.json")] == [named_for]
