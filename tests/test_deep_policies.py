"""Deep BSN policies: ``hyperparams/localpg_deep.yml`` expanded per layer, ``train.py --bsn-layers D --credit RULE``,
the depth benchmark's settings and resumable records, and (``slow``) 3-layer policies learning by local rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_support import TINY, call_main, cli_docs

from agents.localpg import LocalPG
from benchmarks import depth
from benchmarks.common import load_record
from bsn_zoo.cli_errors import UserInputError
from bsn_zoo.config import (
    CREDIT_RULES,
    build_config,
    deep_policy_file,
    deep_policy_settings,
    merge,
    read_hyperparams,
    validate_config,
)
from bsn_zoo.run import build_model
from envs import make_vec_env


def test_deep_settings_repeat_the_entrys_width_and_expand_per_layer_values(tmp_path: Path, monkeypatch) -> None:
    rules = {
        "CartPole-v1": {
            "strict": {"hidden_lr_scale": [10.0, 1.0], "policy_kwargs": {"bsn_init_gain": [8.0, 2.0]}},
            "posterior": {"hidden_lr_scale": 3.0, "n_epochs": 4},
        },
        "default": {"strict": {"hidden_lr_scale": [5.0, 0.5]}},
    }
    path = tmp_path / "localpg_deep.yml"
    path.write_text(yaml.safe_dump(rules))
    monkeypatch.setattr("bsn_zoo.config.deep_policy_file", lambda: path)
    entry = {"hidden_lr_scale": 10.0, "policy_kwargs": {"net_arch": [96], "bsn_init_gain": 8.0}}
    strict = deep_policy_settings("CartPole-v1", 3, "strict", entry)
    assert strict == {
        "hidden_lr_scale": [10.0, 1.0, 1.0],
        "rao_blackwell": False,
        "policy_kwargs": {"bsn_init_gain": [8.0, 2.0, 2.0], "net_arch": [96, 96, 96]},
    }
    posterior = deep_policy_settings("CartPole-v1", 2, "posterior", entry)
    assert posterior == {
        "hidden_lr_scale": 3.0, "n_epochs": 4, "rao_blackwell": True, "policy_kwargs": {"net_arch": [96, 96]}
    }
    # An env id without an entry takes the default's; a rule the entry does not give changes only depth and rule.
    assert deep_policy_settings("Acrobot-v1", 2, "strict", entry)["hidden_lr_scale"] == [5.0, 0.5]
    assert deep_policy_settings("Acrobot-v1", 2, "posterior", entry) == {
        "rao_blackwell": True, "policy_kwargs": {"net_arch": [96, 96]}
    }
    # A dict net_arch keeps its critic.
    split = {"policy_kwargs": {"net_arch": {"pi": [32], "vf": [16]}}}
    assert deep_policy_settings("Pong", 2, "posterior", split)["policy_kwargs"]["net_arch"] == {
        "pi": [32, 32], "vf": [16]
    }
    with pytest.raises(UserInputError, match="unknown credit rule 'exact'"):
        deep_policy_settings("CartPole-v1", 2, "exact", entry)
    with pytest.raises(UserInputError, match="integer >= 1"):
        deep_policy_settings("CartPole-v1", 0, "strict", entry)
    path.write_text(yaml.safe_dump({"default": {"strict": {"hidden_lr_scale": [1.0, 2.0, 3.0]}}}))
    with pytest.raises(UserInputError, match=r"hidden_lr_scale must be a number or \[first layer, layers above\]"):
        deep_policy_settings("CartPole-v1", 2, "strict", entry)


def test_bsn_layers_flag_applies_the_shipped_deep_settings_under_flags_and_params() -> None:
    dense = build_config({"env": "CartPole-v1"}, {})
    deep = build_config({"env": "CartPole-v1", "bsn_layers": 3, "credit": "posterior"}, {})
    width = dense["policy_kwargs"]["net_arch"][0]
    assert deep["policy_kwargs"]["net_arch"] == [width] * 3 and deep["rao_blackwell"] is True
    assert deep["n_steps"] == dense["n_steps"]
    assert build_config({"env": "CartPole-v1", "bsn_layers": 2}, {})["rao_blackwell"] is False  # strict by default
    mine = build_config({"env": "CartPole-v1", "bsn_layers": 2}, {"hidden_lr_scale": 4.0, "rao_blackwell": True})
    assert mine["hidden_lr_scale"] == 4.0 and mine["rao_blackwell"] is True
    # --credit alone chooses the rule of the entry's own depth.
    assert build_config({"env": "CartPole-v1", "credit": "strict"}, {})["rao_blackwell"] is False


@pytest.mark.parametrize("credit", CREDIT_RULES)
def test_every_shipped_deep_entry_builds_a_valid_localpg(credit: str) -> None:
    entries = read_hyperparams(deep_policy_file())
    assert "default" in entries
    for env_id in entries:
        target = "CartPole-v1" if env_id == "default" else env_id
        for layers in (2, 3):
            config = build_config({"env": target, "bsn_layers": layers, "credit": credit}, {})
            model = build_model(config, make_vec_env(target, 1, 0))
            assert len(model.policy.bsn.layers) == layers
            assert model.rao_blackwell is (credit == "posterior")


def test_the_docs_python_example_builds_the_shipped_deep_policy(monkeypatch) -> None:
    opening = "The same from Python:\n\n```python\n"
    example = cli_docs("deep-policies.md", opening).split(opening, 1)[1].split("```", 1)[0]
    learned: list[int] = []
    monkeypatch.setattr(LocalPG, "learn", lambda self, total_timesteps, **_: learned.append(total_timesteps))
    scope: dict = {}
    exec(compile(example, "docs/deep-policies.md", "exec"), scope)
    model, shipped = scope["model"], build_config({"env": "CartPole-v1", "bsn_layers": 3, "credit": "strict"}, {})
    assert learned == [shipped["n_timesteps"]] and model.n_envs == shipped["n_envs"]
    assert model.policy.bsn.hidden_sizes == [128, 128, 128] and model.rao_blackwell is False
    for key in ("gae_lambda", "gamma", "n_steps", "batch_size", "n_epochs", "hidden_clip_range"):
        assert getattr(model, key) == shipped[key], key
    assert list(model.hidden_lr_scale) == shipped["hidden_lr_scale"]


def test_train_py_bsn_layers_trains_and_saves_the_deep_policy(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    status = call_main("train.py", [*TINY, "--bsn-layers", "2", "--credit", "posterior", "-f", "logs",
                                    "-params", "n_steps:64", "batch_size:64", "n_epochs:1"])
    assert status == 0
    config = yaml.safe_load((tmp_path / "logs/localpg/CartPole-v1_1/config.yml").read_text())
    assert len(config["policy_kwargs"]["net_arch"]) == 2 and config["rao_blackwell"] is True
    model = LocalPG.load(tmp_path / "logs/localpg/CartPole-v1_1/final_model.zip")
    assert model.policy.bsn.hidden_sizes == config["policy_kwargs"]["net_arch"]


def test_depth_benchmark_gives_ppo_the_same_actor_depth_and_width_and_localpg_the_shipped_levers() -> None:
    width = depth.width("CartPole-v1")
    for layers in (1, 3):
        ppo = depth.settings(depth.Job("CartPole-v1", "ppo", layers, 0))
        assert ppo["policy_kwargs"]["net_arch"] == {"pi": [width] * layers, "vf": depth.CRITIC}
        for credit in CREDIT_RULES:
            mine = depth.settings(depth.Job("CartPole-v1", credit, layers, 0))
            shipped = build_config({"env": "CartPole-v1", "bsn_layers": layers, "credit": credit}, {})
            assert validate_config(merge(shipped, {})) == shipped
            for key in ("hidden_lr_scale", "rao_blackwell", "n_steps", "batch_size"):
                assert mine[key] == shipped[key], key
            assert mine["policy_kwargs"]["net_arch"] == [width] * layers
    digests = {depth.settings_digest(depth.Job("CartPole-v1", a, d, 0)) for a in depth.ALGOS for d in (1, 2)}
    assert len(digests) == 6


def test_readme_depth_table_is_the_depth_benchmark_s_medians() -> None:
    """The README's deep-policy table quotes benchmarks/results/depth.md: each depth's median steps to threshold
    for the strict rule, posterior credit and PPO."""
    root = Path(__file__).resolve().parents[1]
    report = {}
    for line in (root / "benchmarks" / "results" / "depth.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) > 4 and cells[0] == "CartPole-v1" and "/" in cells[3]:  # summary rows: "seeds solved"
            report.setdefault(int(cells[1]), {})[cells[2]] = cells[4]
    readme = (root / "README.md").read_text()
    rows = readme[readme.index("| hidden layers (128 units) |") :].split("\n\n")[0].splitlines()[2:]
    assert len(rows) == 4
    for row in rows:
        depth_cell, *values = [cell.strip().strip("*").split(" ")[0] for cell in row.strip("|").split("|")]
        assert values == [report[int(depth_cell)][learner] for learner in ("strict", "posterior", "ppo")], row


def test_depth_benchmark_resumes_from_its_records(tmp_path: Path, monkeypatch) -> None:
    """A finished run is saved at once and never trained again; the report is written from the records."""
    tiny = depth.DepthTask("CartPole-v1", 256, 0, 475.0, 1)
    monkeypatch.setattr(depth, "TASKS", {"CartPole-v1": tiny})
    trained: list[depth.Job] = []
    real_run_job = depth.run_job
    monkeypatch.setattr(depth, "run_job", lambda item: trained.append(item[0]) or real_run_job(item))
    out = tmp_path / "depth"
    args = ["--tasks", "CartPole-v1", "--depths", "1", "2", "--seeds", "1", "--out", str(out)]
    depth.main(args)
    assert len(trained) == 6
    records = [load_record(path) for path in sorted((tmp_path / "depth_runs").glob("*.json"))]
    assert len(records) == 6 and all(r["steps"] >= 256 and np.isfinite(r["eval_mean"]) for r in records)
    localpg = [r for r in records if r["algo"] != "ppo"]
    layers = [(set(r[f"layer_{key}"]), r["depth"]) for r in localpg for key in depth.LAYER_KEYS]
    assert layers and all(keys == {str(i) for i in range(count)} for keys, count in layers)
    assert all(r["layer_flip_reach"][str(r["depth"] - 1)] == 1.0 for r in localpg)  # the top layer moves the head
    depth.main(args)
    assert len(trained) == 6  # nothing trained again
    report = out.with_suffix(".md").read_text()
    assert "every run asked for is finished" in report and out.with_suffix(".png").is_file()
    assert report.count("| CartPole-v1 | 2 |") == 3 + 3  # summary rows and per-seed rows


def _train_and_evaluate(
    tmp_path: Path, env_id: str, credit: str, steps: int, episodes: int, best: bool = False
) -> tuple[dict, float]:
    """``train.py --bsn-layers 3 --credit <credit>`` for ``steps``, then ``evaluate.py`` on ``episodes``
    deterministic episodes of the final model (``best``: of the best model of the run's evaluations every 10k
    steps); returns the run's configuration and the evaluation's mean return."""
    evaluations = ["--eval-freq", "10000", "--eval-episodes", "10"] if best else ["--eval-freq", "0"]
    args = ["--env", env_id, "--bsn-layers", "3", "--credit", credit, "-n", str(steps), "--seed", "0",
            *evaluations, "--save-freq", "0", "--no-progress-bar", "-f", str(tmp_path / "logs")]
    assert call_main("train.py", args) == 0
    run = tmp_path / "logs" / "localpg" / f"{env_id}_1"
    report = tmp_path / "r.json"
    which = ["--load-best"] if best else []
    assert call_main("evaluate.py", [str(run), *which, "-n", str(episodes), "--seed", "1", "--json", str(report)]) == 0
    config = yaml.safe_load((run / "config.yml").read_text())
    return config, float(json.loads(report.read_text())["results"][0]["mean_return"])


@pytest.mark.slow
def test_three_layer_strict_rule_policy_learns_cartpole(tmp_path: Path) -> None:
    """Three BSN layers, each unit reading only its inputs, its own sample and the broadcast advantage
    (``--credit strict``), balance CartPole-v1 within 100k steps: the run's best model (evaluated every 10k
    steps, as RL Zoo keeps it) scores 475 or more (random policy: about 20). The final model may sit in one of
    CartPole's dips after solving, so the best is what is checked."""
    config, mean_return = _train_and_evaluate(tmp_path, "CartPole-v1", "strict", 100_000, 10, best=True)
    assert config["rao_blackwell"] is False and len(config["policy_kwargs"]["net_arch"]) == 3
    assert mean_return >= 475.0


@pytest.mark.slow
def test_three_layer_posterior_credit_policy_learns_acrobot(tmp_path: Path) -> None:
    """Three BSN layers with posterior credit swing Acrobot-v1 up within 200k steps (random policy: about
    -500; the solved threshold -100)."""
    config, mean_return = _train_and_evaluate(tmp_path, "Acrobot-v1", "posterior", 200_000, 20)
    assert config["rao_blackwell"] is True and len(config["policy_kwargs"]["net_arch"]) == 3
    assert mean_return >= -100.0
