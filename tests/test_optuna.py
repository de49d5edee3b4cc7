"""Tests of the Optuna search: search files, evaluation reporting and pruning, a small study, best.yml."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from bsn_zoo.cli_errors import UserInputError
from bsn_zoo.config import build_config
from bsn_zoo.tune import (
    BEST_FILE,
    EvaluationReporter,
    SearchParam,
    create_study,
    load_tune_spec,
    optimize,
    parse_tune_spec,
)
from tests.conftest import ROOT

#: a search small enough for a test: 256 CartPole steps per trial, two evaluations each.
TINY_SEARCH = {
    "name": "tiny_search",
    "base": {"algo": "localpg", "env": "CartPole-v1", "n_timesteps": 256, "n_envs": 2, "n_steps": 32,
             "batch_size": 64, "eval_freq": 128, "eval_episodes": 2, "save_freq": 0},
    "search": {"learning_rate": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
               "n_epochs": {"low": 1, "high": 4},
               "env": {"choices": ["CartPole-v1", "tests.bad_envs:NanObservation-v0"]}},
    "n_trials": 3,
    "seed": 0,
}


def test_search_ranges_are_typed_from_the_file() -> None:
    spec = parse_tune_spec(TINY_SEARCH, "unused")
    assert spec.search["learning_rate"] == SearchParam("learning_rate", low=1e-4, high=1e-2, log=True)
    assert spec.search["n_epochs"].integer
    assert spec.search["env"].choices == ("CartPole-v1", "tests.bad_envs:NanObservation-v0")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        values = {name: param.suggest(trial) for name, param in spec.search.items()}
        assert 1e-4 <= values["learning_rate"] <= 1e-2
        assert isinstance(values["n_epochs"], int) and 1 <= values["n_epochs"] <= 4
        assert values["env"] in spec.search["env"].choices


@pytest.mark.parametrize(("content", "message"), [
    ({"base": {}}, "needs a 'search' mapping"),
    ({"search": {"gamma": [0.9, 0.99]}}, "must be {choices"),
    ({"search": {"gamma": {"low": 0.99, "high": 0.9}}}, "low must be below high"),
    ({"search": {"learning_rate": {"low": 0, "high": 1, "log": True}}}, "log needs low > 0"),
    ({"search": {"gamma": {"low": 0.9, "hi": 0.99}}}, "did you mean 'high'"),
    ({"search": {"gamma": {"choices": []}}}, "non-empty list"),
    ({"search": {"gamma": {"low": 0.9, "high": 0.99}}, "n_trials": 0}, "n_trials must be an integer >= 1"),
    ({"search": {"seed": {"low": 0, "high": 9}}}, "top-level 'seed'"),
    ({"search": {"gamma": {"low": 0.9, "high": 0.99}}, "samplr": {}}, "did you mean 'sampler'"),
])
def test_bad_search_files_are_rejected_with_the_reason(content: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message.replace("{", r"\{").replace("(", r"\(")):
        parse_tune_spec(content, "s")


def test_bad_sampler_arguments_are_reported(tmp_path: Path) -> None:
    spec = parse_tune_spec({**TINY_SEARCH, "pruner": {"n_warmup_step": 2}}, "s")
    with pytest.raises(UserInputError, match="bad sampler or pruner arguments"):
        create_study(spec, f"sqlite:///{tmp_path / 'study.db'}")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask/tell here, optimize in real studies
def test_a_resumed_study_does_not_propose_its_first_trials_again(tmp_path: Path) -> None:
    spec = parse_tune_spec(TINY_SEARCH, "s")
    storage = f"sqlite:///{tmp_path / 'study.db'}"

    def first_proposal(study: optuna.Study) -> dict:
        trial = study.ask()
        params = {name: param.suggest(trial) for name, param in spec.search.items()}
        study.tell(trial, 0.0)
        return params

    fresh = first_proposal(create_study(spec, storage))
    assert first_proposal(create_study(spec, f"sqlite:///{tmp_path / 'other.db'}")) == fresh  # seeded
    assert first_proposal(create_study(spec, storage)) != fresh  # resumed: the seed moved on


def write_evaluations(run_dir: Path, returns: list[float]) -> None:
    (run_dir / "eval").mkdir(parents=True, exist_ok=True)
    np.savez(run_dir / "eval" / "evaluations.npz", timesteps=np.arange(1, len(returns) + 1) * 100,
             results=np.array(returns)[:, None].repeat(2, axis=1), ep_lengths=np.ones((len(returns), 2)))


def test_reporter_reports_each_evaluation_once_and_the_median_pruner_stops_a_worse_trial(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    good = study.ask()
    good_reporter = EvaluationReporter(good)
    assert not good_reporter(tmp_path / "good")  # nothing evaluated yet
    write_evaluations(tmp_path / "good", [100.0, 200.0])
    assert not good_reporter(tmp_path / "good")  # reported, and the first trial is never pruned
    assert not good_reporter.report_new(tmp_path / "good")  # nothing new
    study.tell(good, 200.0)
    assert study.trials[0].intermediate_values == {1: 100.0, 2: 200.0}

    bad, better = study.ask(), study.ask()
    write_evaluations(tmp_path / "bad", [10.0])
    write_evaluations(tmp_path / "better", [150.0])
    assert EvaluationReporter(bad)(tmp_path / "bad")  # 10 < median 100 at step 1
    assert not EvaluationReporter(better)(tmp_path / "better")


def test_a_small_study_records_failures_resumes_and_writes_a_usable_best_config(tmp_path: Path) -> None:
    spec = parse_tune_spec(TINY_SEARCH, "unused")
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    storage = f"sqlite:///{study_dir / 'study.db'}"
    study = create_study(spec, storage)  # a trial that crashes, one that trains, then one the sampler proposes
    study.enqueue_trial({"learning_rate": 1e-3, "n_epochs": 2, "env": "tests.bad_envs:NanObservation-v0"})
    study.enqueue_trial({"learning_rate": 1e-3, "n_epochs": 2, "env": "CartPole-v1"})

    study = optimize(spec, study_dir, n_jobs=2)

    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 3
    crashed = trials[0]
    assert crashed.state == optuna.trial.TrialState.FAIL
    assert crashed.user_attrs["status"] == "failed" and "non-finite observation" in crashed.user_attrs["error"]
    best = study.best_trial
    assert best.state == optuna.trial.TrialState.COMPLETE
    assert best.intermediate_values.keys() == {1, 2}  # both evaluations were reported

    best_file = study_dir / BEST_FILE
    assert f"-conf {best_file}" in best_file.read_text()  # the header gives the command
    config = build_config({"algo": "localpg", "env": "CartPole-v1"}, {}, best_file)  # what train.py -conf does
    assert config["learning_rate"] == pytest.approx(best.params["learning_rate"])
    assert config["n_epochs"] == best.params["n_epochs"]
    assert (config["n_timesteps"], config["n_steps"], config["policy_kwargs"]["net_arch"]) == (256, 32, [128])
    assert "seed" not in yaml.safe_load(best_file.read_text())["CartPole-v1"]

    resumed = optimize(spec, study_dir, n_jobs=2)  # already 3 finished trials: runs nothing
    assert len(resumed.get_trials(deepcopy=False)) == 3


def test_cli_rejects_a_missing_search_file_and_bad_counts(tmp_path: Path) -> None:
    from bsn_zoo.tune import main

    with pytest.raises(UserInputError, match="cannot read search file"):
        main(["--optimize", str(tmp_path / "none.yml")])
    search = tmp_path / "search.yml"
    search.write_text(yaml.safe_dump(TINY_SEARCH))
    with pytest.raises(UserInputError, match="--n-jobs must be at least 1"):
        main(["--optimize", str(search), "--sweep-dir", str(tmp_path / "s"), "--n-jobs", "0"])


def test_example_search_file_is_valid() -> None:
    spec = load_tune_spec(ROOT / "sweeps" / "optuna_cartpole.yml")
    spec.trial_spec(0, {}).run_config()
    assert spec.n_trials > 0 and spec.search
