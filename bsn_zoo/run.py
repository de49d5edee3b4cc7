"""The training driver: run folders, environments and models built from a configuration, training, resume.

Run folder layout (``<log-folder>/<algo>/<env>_<N>/``, see :class:`RunLayout`)::

    config.yml                      the configuration of the latest training segment (bsn_zoo.config)
    history.yml                     one entry per training segment (each train.py call): steps, command,
                                    and the settings it changed
    final_model.zip                 the model at the end of training (+ _vecnormalize.pkl if normalised)
    best_model.zip                  the model with the best evaluation return so far
    checkpoints/ckpt_<steps>_steps.zip   periodic checkpoints, and the one saved on SIGINT / SIGTERM
    monitor/<i>.monitor.csv         per-episode return and length of each training environment (a
                                    continued run appends, its times counted from the run's start)
    eval/evaluations.npz            the periodic evaluations (SB3 EvalCallback format)
    tb/<Algo>_<k>/                  TensorBoard events of segment k (unless -tb names another root);
                                    ``tensorboard --logdir <run>/tb`` shows each segment with its HParams

:func:`run_training` is the reusable entry point (``train.py`` and sweep runners call it).
"""

from __future__ import annotations

import inspect
import json
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import (
    VecEnv,
    VecEnvWrapper,
    VecNormalize,
    sync_envs_normalization,
    unwrap_vec_wrapper,
)

from bsn_zoo.callbacks import (
    CheckpointCallback,
    FiniteParametersCallback,
    FiringHistogramCallback,
    HParamCallback,
    SaveModelCallback,
    StopOnRequestCallback,
    StopRequest,
    catch_stop_signals,
)
from bsn_zoo.checkpoint import (
    TEMP_SUFFIX,
    atomic_write,
    check_finite_parameters,
    check_model_file,
    load_model,
    load_vecnormalize,
    save_model,
)
from bsn_zoo.cli_errors import DivergenceError, UserInputError
from bsn_zoo.config import (
    ACTIVATIONS,
    DRIVER_ARGUMENTS,
    RUN_DEFAULTS,
    algorithm_class,
    merge,
    policy_class,
    resolve_schedules,
    torch_env_options,
    validate_config,
    wrapper_class,
)
from bsn_zoo.env_checks import VecCheckFinite, check_env_id, check_spaces
from envs import TORCH_ENVS, make_vec_env
from policies import BinaryStochasticPolicy

__all__ = [
    "RunLayout",
    "algorithm_kwargs",
    "build_model",
    "config_changes",
    "create_run_dir",
    "effective_hyperparameters",
    "find_run",
    "firing_probabilities",
    "load_run_config",
    "make_env",
    "read_history",
    "read_run_config",
    "restore_evaluations",
    "run_name",
    "run_training",
    "tensorboard_root",
    "tensorboard_segments",
]

#: name of a training segment's TensorBoard folder, ``<Algo>_<k>`` (SB3's ``<tb_log_name>_<k>``).
SEGMENT_PATTERN = re.compile(r"[A-Za-z0-9]+_(\d+)")
CHECKPOINT_PATTERN = re.compile(r"^ckpt_(\d+)_steps\.zip$")


@dataclass(frozen=True)
class RunLayout:
    """Where everything of one run lives, below its folder ``root`` (see the module docstring)."""

    root: Path

    @property
    def config_file(self) -> Path:
        """The run's configuration, ``config.yml``."""
        return self.root / "config.yml"

    @property
    def final_model(self) -> Path:
        """The model saved when training ends."""
        return self.root / "final_model.zip"

    @property
    def best_model(self) -> Path:
        """The model with the best evaluation return."""
        return self.root / "best_model.zip"

    @property
    def checkpoint_dir(self) -> Path:
        """Folder of the periodic and interruption checkpoints."""
        return self.root / "checkpoints"

    @property
    def monitor_dir(self) -> Path:
        """Folder of the training environments' Monitor CSV files."""
        return self.root / "monitor"

    @property
    def history_file(self) -> Path:
        """The record of the run's training segments, ``history.yml``."""
        return self.root / "history.yml"

    @property
    def eval_dir(self) -> Path:
        """Folder of the periodic evaluations (``evaluations.npz``)."""
        return self.root / "eval"

    def checkpoint(self, steps: int) -> Path:
        """The checkpoint file for a model that has taken ``steps`` environment steps."""
        return self.checkpoint_dir / f"ckpt_{steps}_steps.zip"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints on disk as ``(steps, path)``, oldest first (temporary files ignored)."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = [(int(match.group(1)), path) for path in self.checkpoint_dir.iterdir()
                 if (match := CHECKPOINT_PATTERN.match(path.name))]
        return sorted(found)

    def latest_model(self) -> Path | None:
        """The saved model with the most steps (the final model wins a tie); ``None`` if none is saved."""
        candidates = self.checkpoints()
        if self.final_model.is_file():
            candidates.append((saved_timesteps(self.final_model), self.final_model))
        return max(candidates, key=lambda item: (item[0], item[1] == self.final_model))[1] if candidates else None

    def remove_temporary_files(self) -> None:
        """Delete temporary files that a process killed mid-save left behind."""
        for folder in (self.root, self.checkpoint_dir):
            if folder.is_dir():
                for path in folder.glob(f".*{TEMP_SUFFIX}"):
                    path.unlink(missing_ok=True)


def saved_timesteps(model_path: Path) -> int:
    """The ``num_timesteps`` recorded in a saved model (read from its ``data`` entry, without loading it)."""
    with zipfile.ZipFile(model_path) as archive:
        return int(json.loads(archive.read("data"))["num_timesteps"])


def run_name(env_id: str) -> str:
    """The folder-name stem of an env id: ``module:Name-v0`` gives ``Name-v0``; slashes become ``_``."""
    return env_id.rpartition(":")[2].replace("/", "_")


def create_run_dir(log_folder: Path, algo: str, env_id: str) -> RunLayout:
    """Create the next free run folder ``<log_folder>/<algo>/<env>_<N>`` (N counts from 1).

    Raises:
        UserInputError: if the folder cannot be created or written (naming it and the fix).
    """
    parent = Path(log_folder) / algo
    stem = run_name(env_id)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        numbers = [int(match.group(1)) for path in parent.iterdir()
                   if (match := re.fullmatch(re.escape(stem) + r"_(\d+)", path.name))]
        number = max(numbers, default=0) + 1
        while True:
            root = parent / f"{stem}_{number}"
            try:
                root.mkdir()
                break
            except FileExistsError:
                number += 1
        probe = root / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserInputError(f"cannot write to log folder {log_folder} ({error.strerror or error}); "
                             "choose a writable folder with -f") from None
    return RunLayout(root)


def tensorboard_root(config: Mapping[str, Any], layout: RunLayout) -> Path:
    """The run's TensorBoard root (what ``tensorboard --logdir`` takes): ``<tensorboard_log>/<algo>/<run>`` or
    ``<run folder>/tb``. Each training segment writes its events into a folder of its own below it."""
    base = config.get("tensorboard_log")
    return Path(base) / config["algo"] / layout.root.name if base else layout.root / "tb"


def tensorboard_segments(root: Path) -> list[Path]:
    """The event folders below a TensorBoard root, in segment order (``<Algo>_<k>`` by ``k``).

    Event files directly in ``root`` (an unsegmented run) come first, as ``root`` itself.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    numbered = [(int(match.group(1)), path) for path in root.iterdir()
                if path.is_dir() and (match := SEGMENT_PATTERN.fullmatch(path.name))]
    direct = [root] if any(root.glob("events.out.tfevents.*")) else []
    return direct + [path for _, path in sorted(numbered)]


def read_history(layout: RunLayout) -> list[dict[str, Any]]:
    """The run's training segments recorded in ``history.yml`` (empty for a new run or one without the file)."""
    if not layout.history_file.is_file():
        return []
    try:
        entries = yaml.safe_load(layout.history_file.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UserInputError(f"cannot read {layout.history_file}: {' '.join(str(error).split())}; "
                             "move it away to start a new history") from None
    return list(entries) if isinstance(entries, list) else []


def config_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The settings that differ between two configurations: ``{key: {"from": old, "to": new}}`` (``None`` if absent)."""
    keys = [*before, *(key for key in after if key not in before)]
    return {key: {"from": before.get(key), "to": after.get(key)} for key in keys if before.get(key) != after.get(key)}


def find_run(path: Path) -> tuple[RunLayout | None, Path]:
    """Resolve a run folder or a model file to ``(run layout or None, model file)``.

    A run folder gives its latest model (:meth:`RunLayout.latest_model`); a model file gives the run
    whose ``config.yml`` is in its folder or the folder above (``checkpoints/``), if any.

    Raises:
        UserInputError: for a folder that is not a run or has no model yet, or a bad model file.
    """
    path = Path(path)
    if path.is_dir():
        layout = RunLayout(path)
        if not layout.config_file.is_file():
            raise UserInputError(f"{path} is not a run folder (no config.yml); give a run folder made by "
                                 "train.py or a model .zip")
        model = layout.latest_model()
        if model is None:
            raise UserInputError(f"run folder {path} has no saved model yet; train it first")
        return layout, model
    check_model_file(path)
    for folder in (path.parent, path.parent.parent):
        if (folder / "config.yml").is_file():
            return RunLayout(folder), path
    return None, path


def read_run_config(layout: RunLayout) -> dict[str, Any]:
    """A run's ``config.yml`` as written, not validated (validate after merging changes, e.g. the device).

    Raises:
        UserInputError: if it cannot be read or is not a mapping.
    """
    try:
        config = yaml.safe_load(layout.config_file.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UserInputError(f"cannot read {layout.config_file}: {' '.join(str(error).split())}") from None
    if not isinstance(config, dict):
        raise UserInputError(f"{layout.config_file} is not a mapping of configuration keys")
    return config


def load_run_config(layout: RunLayout, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A run's configuration with ``changes`` merged in, validated.

    Changes come first so that, e.g., a run trained with ``device: cuda`` loads on a machine without
    CUDA when ``changes`` names another device.

    Raises:
        UserInputError: if the file cannot be read or the result is not a valid configuration.
    """
    return validate_config(merge(read_run_config(layout), changes or {}))


def save_run_config(layout: RunLayout, config: Mapping[str, Any]) -> None:
    """Write the configuration to the run's ``config.yml`` atomically."""
    text = yaml.safe_dump(dict(config), sort_keys=False)
    atomic_write(layout.config_file, lambda handle: handle.write(text.encode()))


def make_env(
    config: Mapping[str, Any],
    n_envs: int,
    seed: int | None,
    monitor_dir: Path | None = None,
    append_monitor: bool = False,
    render_mode: str | None = None,
) -> VecEnv:
    """Build the vectorised environment of a configuration, checked for known id, spaces and finite output.

    The environment comes from the project's one factory, :func:`envs.make_vec_env`; this maps the
    configuration to its arguments and turns bad input into :class:`UserInputError`.

    Args:
        config: a validated run configuration (``env``, ``env_kwargs``, ``env_wrapper``).
        n_envs: number of parallel copies (> 0).
        seed: seed of the first copy (copy ``i`` gets ``seed + i``), or ``None``.
        monitor_dir: folder of the Monitor CSV files, or ``None`` to keep them in memory only.
        append_monitor: append to existing Monitor files (a continued run) instead of replacing them.
        render_mode: Gymnasium render mode (``"rgb_array"`` to record videos), or ``None``.

    Returns:
        A ``VecEnv`` wrapped in :class:`~bsn_zoo.env_checks.VecCheckFinite` (not normalised); with
        ``config["backend"] == "torch"`` (and no ``render_mode``), one unwrapped batched
        :class:`envs.TorchVecEnv` on ``config["device"]`` instead, so LocalPG keeps its on-device
        rollouts (no Monitor files, no finiteness wrapper).

    Raises:
        UserInputError: for an unknown id, bad ``env_kwargs``, a wrapper that refuses the task, or unsupported
            spaces.
    """
    env_id = config["env"]
    torch_backend = config["backend"] == "torch" and render_mode is None
    if torch_backend and env_id not in TORCH_ENVS:
        raise UserInputError(f"environment {env_id!r} has no torch implementation; use one of "
                             f"{', '.join(TORCH_ENVS)} or the gymnasium backend")
    if not torch_backend:
        check_env_id(env_id)
    env_kwargs = dict(config.get("env_kwargs") or {})
    if render_mode is not None:
        env_kwargs["render_mode"] = render_mode
    if torch_backend:
        options: dict[str, Any] = {"backend": "torch", "device": config["device"],
                                   **torch_env_options(config.get("env_wrapper"))}
    else:
        options = {"monitor_dir": str(monitor_dir) if monitor_dir else None,
                   "monitor_kwargs": {"override_existing": not append_monitor},
                   "wrapper_class": wrapper_class(config.get("env_wrapper"))}
    try:
        venv = make_vec_env(env_id, n_envs, seed, env_kwargs=env_kwargs or None, **options)
    except TypeError as error:
        raise UserInputError(f"cannot make {env_id!r} with env_kwargs {env_kwargs}: {error}; "
                             "fix env_kwargs") from None
    except ValueError as error:  # a value the task or a wrapper refuses (envs.TimeFeature without a time limit, ...)
        given = " and ".join(f"{key} {value}" for key, value in (("env_kwargs", env_kwargs),
                                                                 ("env_wrapper", config.get("env_wrapper"))) if value)
        raise UserInputError(f"cannot make {env_id!r}{' with ' if given else ''}{given}: {error}") from None
    if torch_backend:
        return venv
    check_spaces(venv.observation_space, venv.action_space, env_id)
    return VecCheckFinite(venv)


def continue_monitor_clocks(venv: VecEnv) -> None:
    """Time a continued run's episodes from the run's start, so its Monitor files stay in time order.

    SB3's ``Monitor`` appends to an existing file but counts each row's time ``t`` from its own start;
    each Monitor here takes the ``t_start`` of its file's header instead, so the rows of every segment
    of a run share one clock.

    Args:
        venv: the training env just built with ``append_monitor``; envs without a Monitor file are skipped.
    """
    while isinstance(venv, VecEnvWrapper):
        venv = venv.venv
    for env in getattr(venv, "envs", []):
        while not isinstance(env, Monitor) and hasattr(env, "env"):
            env = env.env
        writer = getattr(env, "results_writer", None)
        if not isinstance(env, Monitor) or writer is None:
            continue
        with open(writer.file_handler.name) as handle:
            header = handle.readline()
        if header.startswith("#"):
            env.t_start = float(json.loads(header[1:])["t_start"])


def algorithm_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """The algorithm constructor arguments of a configuration (run settings removed, names resolved,
    ``lin_<start>`` values made linear schedules)."""
    kwargs = resolve_schedules({key: value for key, value in config.items() if key not in RUN_DEFAULTS})
    if "policy_kwargs" in kwargs:
        policy_kwargs = dict(kwargs["policy_kwargs"])
        if "activation_fn" in policy_kwargs:
            policy_kwargs["activation_fn"] = ACTIVATIONS[policy_kwargs["activation_fn"]]
        kwargs["policy_kwargs"] = policy_kwargs
    return kwargs


def build_model(config: Mapping[str, Any], env: VecEnv) -> BaseAlgorithm:
    """A new, untrained algorithm for a validated configuration, on ``env``."""
    algo = algorithm_class(config["algo"])
    try:
        policy = policy_class(config["policy"], env.observation_space)
        return algo(policy, env, seed=config["seed"], device=config["device"], verbose=0, **algorithm_kwargs(config))
    except (ValueError, AssertionError) as error:
        raise UserInputError(f"invalid hyperparameters for {config['algo']}: "
                             f"{' '.join(str(error).split())}") from None


def firing_probabilities(model: BaseAlgorithm, observations: Any) -> list[torch.Tensor]:
    """Per layer, the firing probabilities of the policy's binary stochastic units on ``observations``.

    Units above the first see sampled outputs of the layer below, as when acting; the samples come
    from a forked random state, so the training's random stream is untouched.
    """
    policy = model.policy
    with torch.random.fork_rng(devices=[]):
        return list(policy.bsn(policy.actor_features(observations)).firing_probs)


def effective_hyperparameters(config: Mapping[str, Any], model: BaseAlgorithm) -> dict[str, Any]:
    """The run's configuration plus every scalar constructor argument the model actually uses.

    Arguments left at the algorithm's defaults are not in the configuration; they are read from the
    model so TensorBoard's HPARAMS tab shows the complete set (e.g. ``learning_rate``, ``clip_range``).
    """
    hparams = {key: value for key, value in config.items() if key != "tensorboard_log"}
    for name in inspect.signature(type(model).__init__).parameters:
        value = getattr(model, name, None)
        if name not in hparams and name not in DRIVER_ARGUMENTS and isinstance(value, (bool, int, float, str)):
            hparams[name] = value
    return hparams


def _is_bsn(model: BaseAlgorithm) -> bool:
    return isinstance(model.policy, BinaryStochasticPolicy)


def restore_evaluations(evaluation: EvalCallback, path: Path) -> None:
    """Give a continued run's ``EvalCallback`` the earlier evaluations and best mean return.

    Without this, ``evaluations.npz`` would restart empty and the first evaluation after ``-i`` would
    replace ``best_model.zip`` even if it were worse.

    Args:
        evaluation: the new callback (before training starts).
        path: the run's ``evaluations.npz``; nothing happens if it does not exist.
    """
    if not path.is_file():
        return
    with np.load(path) as saved:
        evaluation.evaluations_timesteps = [int(step) for step in saved["timesteps"]]
        evaluation.evaluations_results = [list(row) for row in saved["results"]]
        evaluation.evaluations_length = [list(row) for row in saved["ep_lengths"]]
    if evaluation.evaluations_results:
        evaluation.best_mean_reward = max(float(np.mean(row)) for row in evaluation.evaluations_results)


def _callbacks(
    config: Mapping[str, Any], layout: RunLayout, model: BaseAlgorithm, request: StopRequest,
    vec_normalize: VecNormalize | None, resumed: bool,
) -> tuple[list[BaseCallback], EvalCallback | None]:
    """The callbacks of a run: stop on request, divergence check, checkpoints, evaluation, TensorBoard extras.

    Returns the list and the evaluation callback (``None`` when ``eval_freq`` is 0). Each evaluation
    prints its mean +/- std return (SB3's ``EvalCallback`` lines). Every training segment logs its
    hyperparameters into its own TensorBoard folder.
    """
    callbacks: list[BaseCallback] = [StopOnRequestCallback(request), FiniteParametersCallback()]
    if config["save_freq"]:
        callbacks.append(CheckpointCallback(config["save_freq"], layout.checkpoint, vec_normalize))
    evaluation = None
    if config["eval_freq"]:
        eval_seed = None if config["seed"] is None else config["seed"] + 10_000
        eval_env = make_env({**config, "backend": "gymnasium"}, n_envs=1, seed=eval_seed)
        if vec_normalize is not None:
            eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
        evaluation = EvalCallback(
            eval_env, callback_on_new_best=SaveModelCallback(layout.best_model, vec_normalize),
            n_eval_episodes=config["eval_episodes"], eval_freq=max(config["eval_freq"] // config["n_envs"], 1),
            log_path=str(layout.eval_dir), deterministic=config["deterministic_eval"], verbose=1, warn=False,
        )
        if resumed:
            restore_evaluations(evaluation, layout.eval_dir / "evaluations.npz")
        callbacks.append(evaluation)
    callbacks.append(HParamCallback(effective_hyperparameters(config, model)))
    if _is_bsn(model):
        callbacks.append(FiringHistogramCallback(firing_probabilities))
    return callbacks, evaluation


def _prepare_env(config: Mapping[str, Any], layout: RunLayout, resume_from: Path | None,
                 start_step: int) -> tuple[VecEnv, VecNormalize | None]:
    """The training environment and its ``VecNormalize`` (or ``None``), seeded with ``seed + start_step``.

    A continued run appends to its Monitor files and reloads the statistics saved beside ``resume_from``.
    """
    seed = None if config["seed"] is None else config["seed"] + start_step
    env = make_env(config, config["n_envs"], seed, layout.monitor_dir, append_monitor=resume_from is not None)
    if resume_from is not None:
        continue_monitor_clocks(env)
    if not config["normalize"]:
        return env, None
    vec_normalize = load_vecnormalize(resume_from, env, config["env"]) if resume_from is not None else None
    if vec_normalize is not None:
        vec_normalize.training = True
    else:
        # RL Zoo's normalize: the return statistics that scale rewards use the run's discount
        vec_normalize = VecNormalize(env, gamma=float(config.get("gamma", 0.99)))
    return vec_normalize, vec_normalize


def _load_or_build_model(config: Mapping[str, Any], env: VecEnv, resume_from: Path | None) -> BaseAlgorithm:
    """The model to train: loaded from ``resume_from`` (with the configuration's hyperparameters) or new."""
    if resume_from is None:
        return build_model(config, env)
    kwargs = {key: value for key, value in algorithm_kwargs(config).items() if key != "policy_kwargs"}
    return load_model(algorithm_class(config["algo"]), resume_from, env=env, env_id=config["env"],
                      device=config["device"], **kwargs)


def _learn(model: BaseAlgorithm, config: Mapping[str, Any], callbacks: list[BaseCallback], request: StopRequest,
           progress_bar: bool) -> None:
    """Train until ``config["n_timesteps"]`` or a stop request; turn a numerical blow-up into DivergenceError."""
    interval = {} if config["log_interval"] is None else {"log_interval": config["log_interval"]}
    try:
        with catch_stop_signals(request), warnings.catch_warnings():
            # The evaluation env is a Gymnasium one even when training uses the torch backend.
            warnings.filterwarnings("ignore", message="Training and eval env are not of the same type")
            warnings.filterwarnings("ignore", message="rich is experimental")  # SB3's progress bar
            model.learn(config["n_timesteps"] - model.num_timesteps, callback=callbacks,
                        reset_num_timesteps=False, progress_bar=progress_bar, **interval)
    except (UserInputError, KeyboardInterrupt):
        raise
    except Exception as error:
        check_finite_parameters(model)  # non-finite weights raise DivergenceError here
        if isinstance(error, FloatingPointError) or "nan" in str(error).lower():
            raise DivergenceError(f"training diverged at step {model.num_timesteps} "
                                  f"({' '.join(str(error).split())[:200]}); nothing was saved over the last "
                                  "good checkpoint; lower the learning rate") from error
        raise


def _record_segment(layout: RunLayout, history: list[dict[str, Any]], entry: dict[str, Any]) -> None:
    """Append a training segment to the run's ``history.yml`` (written atomically)."""
    text = yaml.safe_dump([*history, entry], sort_keys=False)
    atomic_write(layout.history_file, lambda handle: handle.write(text.encode()))


def _evaluate_final(model: BaseAlgorithm, evaluation: EvalCallback, config: Mapping[str, Any]) -> tuple[float, float]:
    """Mean and std return of the final model on the evaluation env (normalisation statistics synced first).

    An evaluation the callback made at the final step is the final model's: it is reported, not repeated.
    """
    if evaluation.evaluations_timesteps and evaluation.evaluations_timesteps[-1] == model.num_timesteps:
        returns = evaluation.evaluations_results[-1]
        return float(np.mean(returns)), float(np.std(returns))
    if model.get_vec_normalize_env() is not None:
        sync_envs_normalization(model.get_env(), evaluation.eval_env)
    mean, std = evaluate_policy(model, evaluation.eval_env, n_eval_episodes=config["eval_episodes"],
                                deterministic=config["deterministic_eval"], warn=False)
    return float(mean), float(std)


def run_training(
    config: Mapping[str, Any],
    run_dir: Path,
    resume_from: Path | None = None,
    progress_bar: bool = False,
    verbose: int = 0,
    on_start: Callable[[BaseAlgorithm], None] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Train (or continue training) one run and save everything into ``run_dir``.

    SIGINT and SIGTERM stop training at the next environment step, save a checkpoint and return
    (``result["interrupted"]`` names the signal). Periodic checkpoints, the best and the final model are
    written atomically and only with finite weights.

    Args:
        config: a run configuration (validated again here; missing run settings take
            :data:`~bsn_zoo.config.RUN_DEFAULTS`). :func:`bsn_zoo.config.build_config` builds one from the
            hyperparameter files, as ``train.py`` does.
        run_dir: the run folder (created if missing); its ``config.yml`` is (re)written.
        resume_from: a model file to continue from: its step count, optimiser state, TensorBoard event
            folder and Monitor files continue (``reset_num_timesteps=False``); training runs until the
            model has ``config["n_timesteps"]`` steps. ``None`` starts a new model.
        progress_bar: show SB3's progress bar.
        verbose: 0 quiet, 1 SB3's log tables on stdout too.
        on_start: called with the model just before training starts (e.g. to report where things go).
        command: the command line that started this segment, recorded in ``history.yml`` (``None``: not known).

    Each call is one *training segment* of the run: it is recorded in ``history.yml`` (its number, start
    time, steps, command and the settings it changed against the previous ``config.yml``) and writes its
    TensorBoard events, hyperparameters included, to ``<tensorboard root>/<Algo>_<segment>``.

    Returns:
        ``run_dir``, ``model_path`` (final model, or checkpoint if interrupted), ``num_timesteps``,
        ``interrupted`` (signal name or ``None``), ``tensorboard_dir`` (this segment's event folder),
        ``segment``, ``changes`` (as :func:`config_changes`), ``best_mean_reward`` (or ``None``), and
        ``final_evaluation``: ``(mean, std)`` return of the final model over ``eval_episodes`` episodes of
        the evaluation env (``None`` if interrupted or ``eval_freq`` is 0).

    Raises:
        UserInputError: for bad configuration, environment or model file; a finished run.
        DivergenceError: if training makes a weight non-finite (nothing non-finite is saved).
        NonFiniteEnvError: if the environment returns NaN or infinity (with the step).
    """
    config = validate_config(config)
    layout = RunLayout(Path(run_dir))
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.remove_temporary_files()
    for folder in (layout.checkpoint_dir, layout.monitor_dir):
        folder.mkdir(exist_ok=True)
    start_step = saved_timesteps(resume_from) if resume_from is not None else 0
    if start_step >= config["n_timesteps"]:
        raise UserInputError(f"the model {resume_from} already has {start_step} steps >= n_timesteps "
                             f"{config['n_timesteps']}; pass a larger -n to train further")
    history = read_history(layout)
    previous = read_run_config(layout) if layout.config_file.is_file() and resume_from is not None else None
    changes = {} if previous is None else config_changes(previous, config)
    segment = len(history) + 1
    save_run_config(layout, config)
    env, vec_normalize = _prepare_env(config, layout, resume_from, start_step)
    try:
        if config["seed"] is not None:
            set_random_seed(config["seed"] + start_step)
        model = _load_or_build_model(config, env, resume_from)
        events = tensorboard_root(config, layout) / f"{type(model).__name__}_{segment}"
        _record_segment(layout, history, {
            "segment": segment, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "from_step": int(model.num_timesteps), "n_timesteps": config["n_timesteps"],
            "resumed_from": None if resume_from is None else str(resume_from), "command": command,
            "tensorboard": str(events), "changed": changes,
        })
        model.set_logger(configure(str(events), ["tensorboard", "stdout"] if verbose else ["tensorboard"]))
        finite_check = unwrap_vec_wrapper(env, VecCheckFinite)
        if finite_check is not None:
            finite_check.num_steps = model.num_timesteps
        request = StopRequest()
        callbacks, evaluation = _callbacks(config, layout, model, request, vec_normalize, resume_from is not None)
        if on_start is not None:
            on_start(model)
        final_evaluation = None
        try:
            _learn(model, config, callbacks, request, progress_bar)
            if evaluation is not None and not request.requested:
                final_evaluation = _evaluate_final(model, evaluation, config)
        finally:
            model.logger.close()
            if evaluation is not None:
                evaluation.eval_env.close()
    finally:
        env.close()
    path = layout.checkpoint(model.num_timesteps) if request.requested else layout.final_model
    save_model(model, path, vec_normalize)
    return {
        "run_dir": layout.root,
        "model_path": path,
        "num_timesteps": model.num_timesteps,
        "interrupted": request.signal_name,
        "tensorboard_dir": events,
        "segment": segment,
        "changes": changes,
        "final_evaluation": final_evaluation,
        "best_mean_reward": None if evaluation is None or evaluation.best_mean_reward == float("-inf")
        else float(evaluation.best_mean_reward),
    }
