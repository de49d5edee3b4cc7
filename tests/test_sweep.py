"""Tests of sweeps: sweep files, the state file, resuming, and whole sweeps run by train.py locally and on Ray."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from bsn_zoo.cli_errors import UserInputError
from bsn_zoo.config import parse_overrides
from bsn_zoo.sweep import STATE_FILE, load_saved_sweep, main, run_sweep
from bsn_zoo.sweep.executors import LocalExecutor, RayExecutor, TrialSettings
from bsn_zoo.sweep.spec import TrialSpec, load_sweep, parse_sweep, unflatten_options
from bsn_zoo.sweep.state import LearningCurve, SweepState, TrialRecord
from bsn_zoo.sweep.trial import classify_exit, read_curve, run_trial
from bsn_zoo.train import build_parser as build_train_parser
from tests.conftest import ROOT

#: a sweep small enough for a test: 2 configurations x 2 seeds of 256 CartPole steps, plus a configuration
#: whose environment returns NaN at its 6th step (the run fails; the sweep must go on).
TINY_SWEEP = {
    "name": "tiny",
    "base": {"algo": "localpg", "env": "CartPole-v1", "n_timesteps": 256, "n_envs": 2, "n_steps": 32,
             "batch_size": 64, "eval_freq": 128, "eval_episodes": 2, "save_freq": 0},
    "grid": {"policy_kwargs.baseline": ["value", "mean"]},
    "configs": [{"name": "crashes", "env": "tests.bad_envs:NanObservation-v0"}],
    "seeds": 2,
    "threshold": 5,
}
GOOD_CONFIGS = ("baseline=value", "baseline=mean")


def write_sweep(folder: Path, content: dict) -> Path:
    path = folder / "sweep_in.yml"
    path.write_text(yaml.safe_dump(content))
    return path


# --- sweep files ------------------------------------------------------------------------------------------


def test_grid_and_configs_expand_to_labelled_trials() -> None:
    spec = parse_sweep(TINY_SWEEP, "unused")
    assert spec.name == "tiny"
    assert list(spec.configs) == [*GOOD_CONFIGS, "crashes"]
    trials = spec.trials()
    assert [t.trial_id for t in trials] == ["baseline=value_s0", "baseline=value_s1", "baseline=mean_s0",
                                            "baseline=mean_s1", "crashes_s0", "crashes_s1"]
    assert trials[0].options["policy_kwargs.baseline"] == "value"
    assert trials[4].options["env"] == "tests.bad_envs:NanObservation-v0"
    assert trials[4].options["n_timesteps"] == 256  # base options reach explicit configurations


def test_grid_labels_only_name_the_options_that_vary() -> None:
    spec = parse_sweep({"grid": {"algo": ["localpg"], "learning_rate": [1e-3, 3e-4]}, "seeds": [3, 7]}, "stem")
    assert spec.name == "stem"
    assert list(spec.configs) == ["learning_rate=0.001", "learning_rate=0.0003"]
    assert spec.seeds == (3, 7)


def test_clashing_labels_get_distinct_suffixes() -> None:
    spec = parse_sweep({"grid": {"a.lr": [1, 2], "b.lr": [1, 2]}}, "s")
    assert len(spec.configs) == 4
    assert len(set(spec.configs)) == 4


@pytest.mark.parametrize(("content", "message"), [
    ({"grid": {"n_steps": [8]}, "seedz": 2}, "did you mean 'seeds'"),
    ({"base": {"seed": 1}, "grid": {"n_steps": [8]}}, "top-level 'seeds'"),
    ({"grid": {"n_steps": 8}}, "non-empty list"),
    ({"grid": {"n_steps": [8]}, "seeds": 0}, "positive count"),
    ({"grid": {"n_steps": [8]}, "seeds": [1, 1]}, "duplicates"),
    ({"base": {"n_steps": 8}}, "no configurations"),
    ({"grid": {"n_steps": [8]}, "threshold": "high"}, "threshold must be a number"),
    ({"name": "a/b", "grid": {"n_steps": [8]}}, "names a folder"),
])
def test_bad_sweep_files_are_rejected_with_the_reason(content: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        parse_sweep(content, "s")


def test_unknown_option_is_rejected_before_anything_runs(tmp_path: Path) -> None:
    spec = parse_sweep({"grid": {"lerning_rate": [1e-3]}}, "typo")
    with pytest.raises(UserInputError, match=r"configuration 'base'.*did you mean 'learning_rate'"):
        run_sweep(spec, tmp_path, LocalExecutor(1), summary=False)
    assert not (tmp_path / STATE_FILE).exists()


def test_train_arguments_give_back_the_trial_options_through_train_py() -> None:
    options = {"algo": "ppo", "env": "Acrobot-v1", "learning_rate": 3e-4, "policy": "mlp",
               "policy_kwargs.net_arch": [32, 32], "policy_kwargs.activation_fn": "relu", "normalize": True}
    trial = TrialSpec("t_s4", "t", 4, options)
    args = build_train_parser().parse_args(trial.train_arguments(Path("/tmp/x")))
    assert (args.algo, args.env, args.seed, args.log_folder) == ("ppo", "Acrobot-v1", 4, Path("/tmp/x"))
    expected = unflatten_options({k: v for k, v in options.items() if k not in ("algo", "env")})
    assert parse_overrides(args.hyperparams) == expected


def test_fingerprint_changes_with_options_and_seed() -> None:
    trial = TrialSpec("t_s0", "t", 0, {"learning_rate": 1e-3})
    assert trial.fingerprint == TrialSpec("other", "o", 0, {"learning_rate": 1e-3}).fingerprint
    assert trial.fingerprint != TrialSpec("t_s0", "t", 1, {"learning_rate": 1e-3}).fingerprint
    assert trial.fingerprint != TrialSpec("t_s0", "t", 0, {"learning_rate": 2e-3}).fingerprint


def test_example_sweep_files_are_valid() -> None:
    for path in sorted((ROOT / "sweeps").glob("*.yml")):
        if "search" not in yaml.safe_load(path.read_text()):
            load_sweep(path).validate()


# --- state file -------------------------------------------------------------------------------------------


def record(trial: TrialSpec, status: str = "ok", returns: Sequence[float] = (1.0, 2.0)) -> TrialRecord:
    curve = LearningCurve(tuple(100 * (i + 1) for i in range(len(returns))), tuple(returns), "eval")
    return TrialRecord(trial.trial_id, trial.config_id, trial.seed, trial.fingerprint, status,
                       error=None if status == "ok" else "boom", curve=curve if status == "ok" else None,
                       n_timesteps=100 * len(returns), options=trial.options)


def test_state_round_trips_records_and_survives_a_torn_line(tmp_path: Path) -> None:
    state = SweepState(tmp_path / STATE_FILE)
    first, second = (TrialSpec(f"c_s{seed}", "c", seed, {"n_steps": 8}) for seed in (0, 1))
    state.append(record(first))
    with open(state.path, "a") as handle:
        handle.write('{"trial_id": "c_s1", "conf')  # a crash mid-write
    state.append(record(second, "failed"))
    with pytest.warns(UserWarning, match="unreadable record"):
        latest = state.latest()
    assert latest == {"c_s0": record(first), "c_s1": record(second, "failed")}


def test_finished_skips_recorded_trials_reruns_asked_statuses_and_detects_edits(tmp_path: Path) -> None:
    state = SweepState(tmp_path / STATE_FILE)
    ok, failed, fresh = (TrialSpec(f"c_s{seed}", "c", seed, {"n_steps": 8}) for seed in range(3))
    state.append(record(ok))
    state.append(record(failed, "failed"))
    fingerprints = {t.trial_id: t.fingerprint for t in (ok, failed, fresh)}
    assert set(state.finished(fingerprints)) == {"c_s0", "c_s1"}
    assert set(state.finished(fingerprints, rerun=("failed",))) == {"c_s0"}
    edited = TrialSpec("c_s0", "c", 0, {"n_steps": 16})
    with pytest.raises(ValueError, match=r"'c_s0'.*other options"):
        state.finished({**fingerprints, "c_s0": edited.fingerprint})


class ScriptedExecutor:
    """Records each trial as ``ok`` (or ``failed`` for the ids in ``failing``) without running anything."""

    def __init__(self, failing: Sequence[str] = ()) -> None:
        self.failing = set(failing)
        self.ran: list[str] = []

    def run(self, trials: Sequence[TrialSpec], settings: TrialSettings, on_record) -> None:
        for trial in trials:
            self.ran.append(trial.trial_id)
            on_record(record(trial, "failed" if trial.trial_id in self.failing else "ok"))


def test_run_sweep_resumes_without_rerunning_finished_trials(tmp_path: Path) -> None:
    spec = parse_sweep({"grid": {"n_steps": [32, 64]}, "seeds": 2}, "resume")
    first = ScriptedExecutor(failing=["n_steps=64_s1"])
    outcome = run_sweep(spec, tmp_path, first, summary=False)
    assert (outcome.skipped, len(outcome.ran)) == (0, 4)
    again = ScriptedExecutor()
    assert run_sweep(spec, tmp_path, again, summary=False).skipped == 4
    assert again.ran == []
    run_sweep(spec, tmp_path, again, rerun=("failed",), summary=False)
    assert again.ran == ["n_steps=64_s1"]
    assert SweepState(tmp_path / STATE_FILE).latest()["n_steps=64_s1"].status == "ok"
    assert load_saved_sweep(tmp_path) == spec  # the folder's sweep.yml is the expanded sweep


def test_resuming_after_editing_the_sweep_file_is_refused(tmp_path: Path) -> None:
    run_sweep(parse_sweep({"grid": {"n_steps": [32]}}, "s"), tmp_path, ScriptedExecutor(), summary=False)
    edited = parse_sweep({"base": {"n_epochs": 2}, "grid": {"n_steps": [32]}}, "s")
    with pytest.raises(UserInputError, match="other options than the sweep file now gives"):
        run_sweep(edited, tmp_path, ScriptedExecutor(), summary=False)


def test_cli_rejects_a_missing_sweep_file(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="cannot read sweep file"):
        main(["--sweep", str(tmp_path / "none.yml")])


# --- one trial ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("returncode", "stderr", "expected"), [
    (0, "", ("ok", None)),
    (1, "train.py: error: training diverged at step 512: non-finite values in w; lower the learning rate\n",
     ("diverged", "training diverged at step 512: non-finite values in w; lower the learning rate")),
    (1, "Traceback (most recent call last):\n  ...\nAttributeError: 'X' object has no attribute 'y'\n\n",
     ("failed", "AttributeError: 'X' object has no attribute 'y'")),
    (2, "train.py: error: unknown env 'Foo-v0'\n", ("failed", "unknown env 'Foo-v0'")),
    (-9, "", ("failed", "stopped by SIGKILL from outside the sweep (out of memory?)")),
    (3, "", ("failed", "train.py exited with status 3 and printed no error")),
])
def test_exit_status_and_last_error_line_give_the_trial_status(tmp_path: Path, returncode: int, stderr: str,
                                                                expected: tuple) -> None:
    (tmp_path / "stderr.log").write_text(stderr)
    assert classify_exit(returncode, tmp_path / "stderr.log") == expected


def test_a_trial_past_its_time_limit_is_stopped_and_recorded(tmp_path: Path) -> None:
    trial = parse_sweep(TINY_SWEEP, "x").trials()[0]
    result = run_trial(trial, tmp_path, timeout_s=0.2, poll_s=0.1)
    assert (result.status, result.exit_code) == ("timeout", None)
    assert result.error == "stopped after the trial time limit of 0.2 s"
    assert (tmp_path / "trials" / trial.trial_id / "stderr.log").is_file()


# --- whole sweeps through train.py ------------------------------------------------------------------------


def wait_for_records(path: Path, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} did not get {count} records in {timeout_s} s")


def check_finished_sweep(sweep_dir: Path) -> dict[str, TrialRecord]:
    """Assert what every finished run of TINY_SWEEP must look like; return the records."""
    latest = SweepState(sweep_dir / STATE_FILE).latest()
    assert set(latest) == {t.trial_id for t in parse_sweep(TINY_SWEEP, "x").trials()}
    for trial_id, result in latest.items():
        if trial_id.startswith("crashes"):
            assert result.status == "failed"
            assert "non-finite observation" in result.error
        else:
            assert result.status == "ok", result.error
            run_dir = sweep_dir / result.run_dir
            assert (run_dir / "final_model.zip").is_file() and (run_dir / "config.yml").is_file()
            assert any((run_dir / "tb").rglob("events.out.tfevents.*"))
            assert result.curve == read_curve(run_dir)
            assert result.curve.timesteps == (128, 256)  # eval_freq 128 of a 256-step budget
    return latest


def test_local_sweep_end_to_end_with_crash_interrupt_resume_and_summary(tmp_path: Path) -> None:
    sweep_file, sweep_dir = write_sweep(tmp_path, TINY_SWEEP), tmp_path / "sweep"
    interrupted = subprocess.Popen(
        [sys.executable, "-m", "bsn_zoo.sweep", "--sweep", str(sweep_file), "--sweep-dir", str(sweep_dir),
         "--n-jobs", "1", "--no-summary"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_records(sweep_dir / STATE_FILE, 1, timeout_s=120)
    interrupted.send_signal(signal.SIGINT)
    _, stderr = interrupted.communicate(timeout=60)
    assert interrupted.returncode == 130, stderr.decode()
    assert b"resume with the same command" in stderr
    before = SweepState(sweep_dir / STATE_FILE).latest()
    assert 1 <= len(before) < 6
    stamps = {trial_id: (sweep_dir / r.run_dir / "config.yml").stat().st_mtime_ns
              for trial_id, r in before.items() if r.run_dir}

    outcome = run_sweep(load_sweep(sweep_file), sweep_dir, LocalExecutor(2), bootstrap_reps=200)

    assert outcome.skipped == len(before)
    assert {r.trial_id for r in outcome.ran}.isdisjoint(before)
    latest = check_finished_sweep(sweep_dir)
    assert len(latest) == 6
    for trial_id, stamp in stamps.items():  # finished trials were not run again
        assert (sweep_dir / before[trial_id].run_dir / "config.yml").stat().st_mtime_ns == stamp
    summary = (sweep_dir / "summary.md").read_text()
    for label in GOOD_CONFIGS:
        row = next(line for line in summary.splitlines() if line.startswith(f"| {label} |"))
        assert "| 2/2 |" in row and "| 128 [128, 128] | 2/2 |" in row  # every seed reached 5 at the 1st eval
    assert "| crashes | " in summary and "| crashes_s0 | failed | the environment returned a non-finite" in summary
    assert (sweep_dir / "learning_curves.png").stat().st_size > 0
    assert (sweep_dir / "final_return.png").stat().st_size > 0


@pytest.mark.slow
def test_ray_sweep_runs_the_same_trials(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "ray[tune]")')
    executor = RayExecutor("local", cpus_per_trial=1, num_cpus=2)
    try:
        executor.connect()
    except UserInputError as error:  # no shared memory, no free port...: Ray cannot run here
        pytest.skip(f"Ray cannot start on this machine: {error}")
    try:
        outcome = run_sweep(load_sweep(write_sweep(tmp_path, TINY_SWEEP)), tmp_path / "sweep", executor,
                            bootstrap_reps=200)
    finally:
        ray.shutdown()
    assert len(outcome.ran) == 6
    check_finished_sweep(tmp_path / "sweep")
    assert "| baseline=value | " in (tmp_path / "sweep" / "summary.md").read_text()
