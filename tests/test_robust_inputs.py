"""Every bad input of the documented table gets a one-line message naming the problem, and a non-zero exit.

Each row of :data:`BAD_INPUTS` is a row of the "Bad input" table of ``docs/bad-input.md``
(``test_every_row_is_documented`` checks that the two agree: same rows, messages and exit statuses).
Arguments may name ``{tmp}`` (a scratch folder with broken files), ``{run}`` (a finished 256-step run)
and ``{model}`` (its final model).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import TINY_PARAMS, call_main, cli_docs, run_tool
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from bsn_zoo.config import validate_config
from bsn_zoo.run import run_training

TINY_TRAIN = ["-n", "256", "--n-envs", "2", "--eval-freq", "0", "--save-freq", "0", "--no-progress-bar"]

#: (row id, tool, arguments, text the one-line message contains, exit status).
BAD_INPUTS = [
    ("unknown env id", "train.py", ["--env", "CartPol-v1"],
     "unknown Gymnasium environment 'CartPol-v1': did you mean 'CartPole-v1'", 2),
    ("unsupported observation space", "train.py", ["--env", "Blackjack-v1"],
     "unsupported observation space Tuple(Discrete(32), Discrete(11), Discrete(2))", 2),
    ("unsupported action space", "train.py", ["--env", "tests.bad_envs:TupleAction-v0"],
     "unsupported action space Tuple(Discrete(2), Discrete(2))", 2),
    ("environment without a torch implementation", "train.py", ["--backend", "torch", "--env", "LunarLander-v3"],
     "environment 'LunarLander-v3' has no torch implementation", 2),
    ("non-positive size", "train.py", ["--n-envs", "0"], "n_envs must be a positive integer, got 0", 2),
    ("non-positive steps", "train.py", ["-n", "-5"], "n_timesteps must be a positive integer, got -5", 2),
    ("non-numeric steps", "train.py", ["-n", "many"], "n_timesteps must be a number, got 'many'", 2),
    ("fractional size", "train.py", ["-params", "n_steps:10.5"], "n_steps must be a whole number, got 10.5", 2),
    ("non-positive batch size", "train.py", ["-params", "batch_size:0"],
     "batch_size must be an integer >= 2, got 0", 2),
    ("non-positive learning rate", "train.py", ["-params", "learning_rate:0"],
     "learning_rate must be > 0, got 0", 2),
    ("non-numeric learning rate", "train.py", ["-params", "learning_rate:fast"],
     "learning_rate must be a number, got 'fast'", 2),
    ("discount out of range", "train.py", ["-params", "gamma:1.5"], "gamma must be in [0, 1], got 1.5", 2),
    ("unknown estimator (flag)", "train.py", ["--estimator", "magic"],
     "argument --estimator: invalid choice: 'magic'", 2),
    ("unknown estimator (config)", "train.py", ["-params", "policy_kwargs.estimator:magic"],
     "unknown estimator 'magic'; choose one of: local, learned_predictor", 2),
    ("unknown baseline", "train.py", ["-params", "policy_kwargs.baseline:magic"],
     "unknown baseline 'magic'; choose one of: value, mean, optimal, learned", 2),
    ("estimator the algorithm refuses", "train.py", ["--estimator", "st"],
     "LocalPG trains with local estimators ('local', 'learned_predictor')", 2),
    ("estimator with the MLP policy", "train.py", ["--policy", "mlp", "--estimator", "local"],
     "estimator only applies to the BSN policy", 2),
    ("YAML syntax error", "train.py", ["-conf", "{tmp}/broken.yml"], "YAML syntax error in", 2),
    ("unknown YAML key", "train.py", ["-conf", "{tmp}/typo.yml"],
     "unknown hyperparameter 'learning_rte' for localpg; did you mean 'learning_rate'?", 2),
    ("unknown -params key", "train.py", ["-params", "n_step:64"],
     "unknown hyperparameter 'n_step' for localpg; did you mean 'n_steps'?", 2),
    ("-params item without a colon", "train.py", ["-params", "n_steps"],
     "bad -params item 'n_steps'; write key:value", 2),
    ("unknown flag", "train.py", ["--learning-rate", "3"], "unrecognized arguments: --learning-rate 3", 2),
    ("bad env_kwargs", "train.py", ["-params", "env_kwargs:{gravity: 1}"],
     "cannot make 'CartPole-v1' with env_kwargs {'gravity': 1}", 2),
    ("unknown env_wrapper", "train.py", ["-params", "env_wrapper:gymnasium.wrappers.Flatten"],
     "cannot import env_wrapper 'gymnasium.wrappers.Flatten'", 2),
    ("env_wrapper with the torch backend", "train.py",
     ["--backend", "torch", "-params", "env_wrapper:gymnasium.wrappers.FlattenObservation"],
     "env_wrapper 'gymnasium.wrappers.FlattenObservation' wraps Gymnasium envs and does not apply to the torch "
     "backend", 2),
    ("bad reward delay", "train.py", ["-params", "env_wrapper:[{envs.RewardDelay: {delay: 0}}]"],
     "reward delay must be an integer number of steps >= 1 or 'episode', got 0", 2),
    ("bad --reward-delay", "train.py", ["--reward-delay", "end"],
     "--reward-delay: reward delay must be an integer number of steps >= 1 or 'episode', got 'end'", 2),
    ("--reward-delay on a continued run", "train.py", ["-i", "{run}", "--reward-delay", "50"],
     "--reward-delay applies to new runs", 2),
    ("--reward-delay on a task without a time limit", "train.py",
     ["--env", "Blackjack-v1", "--reward-delay", "episode"],
     "the time feature needs the task's time limit, got max_episode_steps=None; give the task one (train.py: "
     "-params \"env_kwargs:{'max_episode_steps': 1000}\")", 2),
    ("--reward-delay on a task observing images", "train.py",
     ["--env", "tests.image_envs:SmallImageDict-v0", "--reward-delay", "episode"],
     "the time feature takes observations without images", 2),
    ("--reward-delay with env_wrapper's own reward delay", "train.py",
     ["-params", "env_wrapper:[{envs.RewardDelay: {delay: 5}}]", "--reward-delay", "episode"],
     "env_wrapper already has envs.RewardDelay and --reward-delay adds envs.TimeFeature and envs.RewardDelay; drop "
     "it from env_wrapper or drop --reward-delay", 2),
    ("bad --bsn-layers", "train.py", ["--bsn-layers", "0"], "bsn-layers must be a positive integer, got 0", 2),
    ("--bsn-layers for another algorithm", "train.py", ["--algo", "ppo", "--bsn-layers", "3"],
     "--bsn-layers sets LocalPG's deep-policy settings; got --algo ppo", 2),
    ("--bsn-layers on a continued run", "train.py", ["-i", "{run}", "--bsn-layers", "3"],
     "--bsn-layers applies to new runs", 2),
    ("--credit for another algorithm", "train.py", ["--algo", "ppo", "--credit", "strict"],
     "--credit sets LocalPG's credit rule (rao_blackwell); got --algo ppo", 2),
    ("state-dependent std without Box actions", "train.py", ["-params", "policy_kwargs.state_dependent_std:true"],
     "state_dependent_std applies to Box action spaces only, got Discrete(2); drop state_dependent_std", 2),
    ("CUDA without a CUDA device", "train.py", ["--device", "cuda"],
     "asked for CUDA but no CUDA device is available; use --device cpu or auto", 2),
    ("log folder that cannot be written", "train.py", ["-f", "{tmp}/notes.txt/logs"],
     "cannot write to log folder", 2),
    ("missing model file", "train.py", ["-i", "{tmp}/missing.zip"], "missing.zip does not exist", 2),
    ("truncated model file", "train.py", ["-i", "{tmp}/truncated.zip"],
     "truncated.zip is truncated or not a model file", 2),
    ("non-model file", "evaluate.py", ["{tmp}/notes.txt"], "notes.txt is truncated or not a model file", 2),
    ("zip that is not a model", "evaluate.py", ["{tmp}/other.zip"], "other.zip is truncated or not a model file", 2),
    ("folder that is not a run", "evaluate.py", ["{tmp}"], "is not a run folder (no config.yml)", 2),
    ("env whose spaces differ from the model's", "evaluate.py", ["{model}", "--env", "Acrobot-v1"],
     "was trained with observation space Box(4,) but environment 'Acrobot-v1' has Box(6,)", 2),
    ("normalisation statistics of another environment", "evaluate.py", ["{tmp}/normalized.zip", "--env", "Acrobot-v1"],
     "normalized_vecnormalize.pkl do not fit environment 'Acrobot-v1'", 2),
    ("damaged normalisation statistics", "evaluate.py", ["{tmp}/damaged.zip", "--env", "CartPole-v1"],
     "cannot read the VecNormalize statistics", 2),
    ("image too small for NatureCNN in a Dict observation", "train.py", ["--env", "tests.image_envs:SmallImageDict-v0"],
     "error: environment 'tests.image_envs:SmallImageDict-v0': observation 'image' is an image of shape (7, 7, 3), "
     "smaller than the 36 x 36 pixels of CombinedExtractor's NatureCNN; wrap the env with "
     "gymnasium.wrappers.FlattenObservation (train.py: -params env_wrapper:gymnasium.wrappers.FlattenObservation)", 2),
    ("environment that cannot render", "evaluate.py",
     ["{model}", "--env", "tests.bad_envs:UnrenderableCartPole-v1", "--video-folder", "{tmp}/videos"],
     "cannot render the environment to record videos (RuntimeError: no OpenGL context)", 2),
    ("changing the model when continuing", "train.py", ["-i", "{run}", "--baseline", "mean"],
     "cannot change policy_kwargs when continuing a run", 2),
    ("-conf when continuing a run", "train.py", ["-i", "{run}", "-n", "512", "-conf", "{tmp}/typo.yml"],
     "-conf does not apply when continuing the run", 2),
    ("continuing a finished run", "train.py", ["-i", "{run}"],
     "already has 256 steps >= n_timesteps 256; pass a larger -n", 2),
    ("--load-best on a run trained without evaluation", "evaluate.py", ["{run}", "--load-best"],
     "was trained with --eval-freq 0, so it has no best model; evaluate its latest model without --load-best", 2),
    ("non-positive episode count", "evaluate.py", ["{run}", "-n", "-1"],
     "n-episodes must be a positive integer, got -1", 2),
    ("unknown TensorBoard key to plot", "evaluate.py",
     ["{run}", "-n", "0", "--plot", "{tmp}/curves.png", "--plot-keys", "bsn/nothing"],
     "nothing to plot for bsn/nothing", 2),
    ("NaN observation", "train.py", ["--env", "tests.bad_envs:NanObservation-v0"],
     "non-finite observation (nan) at step 6 (env index 0)", 1),
    ("infinite reward", "train.py", ["--env", "tests.bad_envs:InfReward-v0"],
     "non-finite reward (inf) at step 6 (env index 0)", 1),
    ("diverging run", "train.py",
     ["--algo", "ppo", "-params", "learning_rate:1e30", "max_grad_norm:1e30", "batch_size:64"],
     "training diverged at step", 1),
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A finished tiny run plus broken files; returns the placeholders of :data:`BAD_INPUTS`."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    config = validate_config({"n_timesteps": 256, "n_envs": 2, "seed": 0, "eval_freq": 0, "save_freq": 0,
                              "n_steps": 64, "batch_size": 64, "n_epochs": 1, "policy_kwargs": {"net_arch": [8]}})
    result = run_training(config, tmp / "run")
    model = Path(result["model_path"])
    (tmp / "broken.yml").write_text("CartPole-v1:\n  n_steps: [64\n  gamma: 0.9\n")
    (tmp / "typo.yml").write_text("CartPole-v1:\n  learning_rte: 0.001\n")
    (tmp / "notes.txt").write_text("not a model\n")
    (tmp / "truncated.zip").write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    shutil.make_archive(str(tmp / "other"), "zip", root_dir=tmp, base_dir="notes.txt")
    for name in ("normalized", "damaged"):  # a model outside its run folder, with the statistics saved beside it
        shutil.copy(model, tmp / f"{name}.zip")
    VecNormalize(make_vec_env("CartPole-v1")).save(str(tmp / "normalized_vecnormalize.pkl"))
    (tmp / "damaged_vecnormalize.pkl").write_bytes(b"not a pickle")
    return {"tmp": str(tmp), "run": str(tmp / "run"), "model": str(model)}


@pytest.mark.parametrize(("tool", "args", "message", "status"), [row[1:] for row in BAD_INPUTS],
                         ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_gets_one_line_message(
    scratch: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tool: str, args: list[str], message: str, status: int,
) -> None:
    if "--device" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    monkeypatch.chdir(scratch["tmp"])
    argv = list(args)
    for name, value in scratch.items():
        argv = [arg.replace(f"{{{name}}}", value) for arg in argv]
    if tool == "train.py" and "-i" not in argv:
        argv = [*TINY_TRAIN, *argv]
        if "-params" not in argv:
            argv += TINY_PARAMS
    code = call_main(tool, argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == status
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), captured.err
    assert message in lines[0]


def test_subprocess_errors_have_no_traceback_unless_verbose(tmp_path: Path) -> None:
    quiet = run_tool("train.py", ["--env", "CartPol-v1"], tmp_path)
    loud = run_tool("evaluate.py", [str(tmp_path / "missing.zip"), "--verbose"], tmp_path)
    assert quiet.returncode == 2 and quiet.stderr.count("\n") == 1 and "Traceback" not in quiet.stderr
    assert "unknown Gymnasium environment 'CartPol-v1'" in quiet.stderr
    assert loud.returncode == 2 and "Traceback" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1].startswith("evaluate.py: error: model file")


def test_every_row_is_documented() -> None:
    text = cli_docs("bad-input.md", "| Bad input | example | message | exit |")
    documented = {line.split(" | ")[0].removeprefix("| "): line for line in text.splitlines()
                  if line.startswith("| ") and line.endswith(" |")}
    missing = [row[0] for row in BAD_INPUTS if row[0] not in documented]
    assert missing == []
    disagree = [row[0] for row in BAD_INPUTS
                if row[3] not in documented[row[0]] or not documented[row[0]].endswith(f" | {row[4]} |")]
    assert disagree == []
    extra = sorted(set(documented) - {row[0] for row in BAD_INPUTS} - {"Bad input"})
    assert extra == []


@pytest.mark.parametrize("env_id", ["FrozenLake-v1", "CartPole-v1"])
def test_finite_check_handles_discrete_and_box_terminal_observations(env_id: str) -> None:
    """Terminal observations of Discrete spaces are plain ints, of Box spaces arrays: both are checked."""

    from bsn_zoo.env_checks import VecCheckFinite

    env = VecCheckFinite(make_vec_env(env_id, n_envs=2, seed=0))
    env.reset()
    for _ in range(300):
        env.step(np.array([env.action_space.sample() for _ in range(2)]))
    assert env.num_steps == 600
