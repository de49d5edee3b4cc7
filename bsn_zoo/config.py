"""Run configurations: defaults, RL-Zoo-style hyperparameter files, ``key:value`` overrides, validation.

A *run configuration* is one flat, YAML-serialisable ``dict``. Its keys are the run settings of
:data:`RUN_DEFAULTS` (``algo``, ``env``, ``n_timesteps``, ...) plus the constructor arguments of the
chosen algorithm (``learning_rate``, ``n_steps``, ``policy_kwargs``, ...). It is built from, in
increasing priority:

1. :data:`RUN_DEFAULTS`;
2. the entry for the environment id (or else the ``default`` entry) of a hyperparameter file keyed by
   env id, ``hyperparams/<algo>.yml`` unless another file is given (``-conf``);
3. explicit command-line flags and ``-params key:value`` overrides.

:func:`validate_config` checks every key and value and returns the normalised configuration that
``train.py`` saves as ``config.yml`` next to the run's models.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from gymnasium import spaces
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

import hyperparams
from agents.localpg import LocalPG
from agents.localpg.hyperparameters import HYPERPARAMETER_RANGES
from bsn_zoo.cli_errors import UserInputError
from envs.reward_delay import EPISODE, RewardDelay, TimeFeature, delay_period
from policies import BinaryStochasticPolicy
from policies.estimators import ESTIMATORS
from policies.policy import NEURON_BASELINES

__all__ = [
    "ACTIVATIONS",
    "ALGORITHM_NAMES",
    "BACKEND_NAMES",
    "BASELINE_NAMES",
    "CREDIT_RULES",
    "DEFAULT_NUM_THREADS",
    "ESTIMATOR_NAMES",
    "HYPERPARAMS_DIR",
    "LINEAR_PREFIX",
    "POLICY_NAMES",
    "RUN_DEFAULTS",
    "SCHEDULE_KEYS",
    "LinearDecay",
    "algorithm_class",
    "build_config",
    "credit_setting",
    "deep_policy_file",
    "deep_policy_settings",
    "delayed_reward_file",
    "delayed_reward_settings",
    "delayed_reward_wrappers",
    "linear_schedule",
    "load_hyperparams",
    "merge",
    "parse_overrides",
    "parse_value",
    "policy_class",
    "read_hyperparams",
    "resolve_schedules",
    "set_num_threads",
    "validate_config",
]

#: folder of the built-in hyperparameter files, one per algorithm, keyed by env id.
HYPERPARAMS_DIR = Path(hyperparams.__file__).resolve().parent

#: algorithms that ``--algo`` accepts.
ALGORITHM_NAMES = ("localpg", "ppo", "a2c")
#: environment backends: Gymnasium environments in SB3's ``DummyVecEnv``, or one batched torch env.
BACKEND_NAMES = ("gymnasium", "torch")
#: policies that ``--policy`` accepts: the binary-stochastic-neuron policy or SB3's usual MLP.
POLICY_NAMES = ("bsn", "mlp")
#: policy aliases accepted in hyperparameter files (RL Zoo spelling) and their ``--policy`` names.
POLICY_ALIASES = {"bsn": "bsn", "BsnPolicy": "bsn", "mlp": "mlp", "MlpPolicy": "mlp"}
#: ``policy_kwargs.activation_fn`` names and the ``torch.nn`` modules they stand for (MLP policy, BSN critic).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid,
}

#: run settings and their defaults; every other configuration key is an algorithm argument.
RUN_DEFAULTS: dict[str, Any] = {
    "algo": "localpg",
    "env": "CartPole-v1",
    "env_kwargs": {},
    "env_wrapper": None,
    "backend": "gymnasium",
    "policy": "bsn",
    "n_timesteps": 100_000,
    "n_envs": 8,
    "seed": None,
    "device": "auto",
    "normalize": False,
    "eval_freq": 10_000,
    "eval_episodes": 5,
    "deterministic_eval": True,
    "save_freq": 10_000,
    "tensorboard_log": None,
    "log_interval": None,
}

#: algorithm arguments that the run driver sets itself and a configuration may not.
DRIVER_ARGUMENTS = frozenset({"self", "policy", "env", "tensorboard_log", "verbose", "seed", "device",
                              "_init_setup_model"})


#: prefix of a linearly decaying value in a configuration, RL Zoo's spelling: ``lin_3e-3`` starts at 3e-3
#: and decays linearly to 0 over the ``learn`` call's ``total_timesteps``.
LINEAR_PREFIX = "lin_"
#: algorithm arguments that may be a schedule of the progress remaining (``lin_<start>`` in a configuration).
SCHEDULE_KEYS = ("learning_rate", "clip_range")


#: estimators that ``--estimator`` accepts (``policies.ESTIMATORS``).
ESTIMATOR_NAMES = tuple(ESTIMATORS)
#: baselines that ``--baseline`` accepts (``policies.policy.NEURON_BASELINES``).
BASELINE_NAMES = NEURON_BASELINES


def algorithm_class(name: str) -> type[OnPolicyAlgorithm]:
    """The SB3 algorithm class for an ``--algo`` name (``localpg``, ``ppo`` or ``a2c``).

    Raises:
        UserInputError: for an unknown name, listing the known ones.
    """
    if name == "localpg":
        return LocalPG
    if name == "ppo":
        return PPO
    if name == "a2c":
        return A2C
    raise UserInputError(f"unknown algorithm {name!r}; choose one of: {', '.join(ALGORITHM_NAMES)}")


def policy_class(name: str, observation_space: spaces.Space | None = None) -> type | str:
    """The policy for a ``--policy`` name: the BSN policy class, or SB3's MLP policy alias.

    Args:
        name: ``"bsn"`` or ``"mlp"``.
        observation_space: the environment's; a ``Dict`` space selects ``"MultiInputPolicy"`` for ``mlp``.
    """
    if name == "bsn":
        return BinaryStochasticPolicy
    return "MultiInputPolicy" if isinstance(observation_space, spaces.Dict) else "MlpPolicy"


def parse_value(text: str) -> Any:
    """Parse one ``-params`` value: an int, a float (``1e-3`` too), or YAML (lists, mappings, bools, null).

    Args:
        text: the text after the first ``:`` of a ``key:value`` override.

    Raises:
        UserInputError: if the text is not valid YAML.
    """
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UserInputError(f"cannot parse value {text!r}: {_first_line(error)}") from None


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``-params`` items ``key:value`` into a nested dict; ``a.b:v`` sets ``{"a": {"b": v}}``.

    Raises:
        UserInputError: for an item without ``:`` or with an empty key.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition(":")
        if not sep or not key.strip():
            raise UserInputError(f"bad -params item {item!r}; write key:value, e.g. learning_rate:1e-3")
        *parents, leaf = key.strip().split(".")
        target = overrides
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = parse_value(text.strip())
    return overrides


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, other values replace)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class LinearDecay:
    """RL Zoo's ``lin_<start>``: ``value(progress_remaining) = max(progress_remaining, 0) * start`` (a picklable
    class, so saved models keep their schedule).

    SB3's progress remaining, ``1 - num_timesteps / total_timesteps``, turns negative when the last rollout runs
    past ``total_timesteps`` (``learn(1000)`` with 2048-step rollouts: ``1 - 2048 / 1000``). RL Zoo's
    ``linear_schedule`` then returns a negative learning rate or clip range, which ascends the loss (or inverts
    the clip) in that update; this one holds at 0 there instead, and equals RL Zoo's everywhere else.

    Args:
        start: the value at the start of training (progress remaining 1); it reaches 0 at the end of
            the ``learn`` call (progress remaining 0) and stays there.
    """

    def __init__(self, start: float) -> None:
        self.start = float(start)

    def __call__(self, progress_remaining: float) -> float:
        return max(progress_remaining, 0.0) * self.start

    def __repr__(self) -> str:
        return f"{LINEAR_PREFIX}{self.start!r}"


def linear_schedule(start: float) -> LinearDecay:
    """The schedule of ``lin_<start>``: linear decay from ``start`` (> 0) to 0 over the ``learn`` call (never below)."""
    return LinearDecay(start)


def resolve_schedules(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of algorithm arguments with each ``lin_<start>`` of :data:`SCHEDULE_KEYS` made a schedule.

    Args:
        kwargs: algorithm constructor arguments; ``learning_rate`` / ``clip_range`` may be a number or
            a ``lin_<start>`` string (checked by :func:`validate_config`, or here for unvalidated input).

    Raises:
        UserInputError: for a ``lin_`` value whose start is not a positive number.
    """
    resolved = dict(kwargs)
    for key in SCHEDULE_KEYS:
        value = resolved.get(key)
        if isinstance(value, str) and value.startswith(LINEAR_PREFIX):
            resolved[key] = linear_schedule(_linear_start(key, value))
    return resolved


def _first_line(error: Exception) -> str:
    return " ".join(str(error).split())


def read_hyperparams(path: Path) -> dict[str, dict[str, Any]]:
    """Every entry of a YAML file keyed by environment id (``default`` included), as written.

    Raises:
        UserInputError: if the file is missing, is not valid YAML (with the line), or is not a mapping
            of env ids to mappings.
    """
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise UserInputError(f"cannot read hyperparameter file {path}: {error.strerror}") from None
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or _first_line(error)
        raise UserInputError(f"YAML syntax error in {path}{where}: {problem}; fix the file") from None
    if not isinstance(content, dict) or not all(isinstance(v, dict) for v in content.values()):
        raise UserInputError(f"{path} must map environment ids to mappings of hyperparameters, "
                             "e.g. 'CartPole-v1: {n_steps: 128}'")
    return content


def load_hyperparams(path: Path, env_id: str) -> dict[str, Any]:
    """Read the entry for ``env_id`` (or else ``default``) of a YAML file keyed by environment id.

    Args:
        path: the YAML file (``hyperparams/<algo>.yml`` or a ``-conf`` file).
        env_id: the environment id whose entry is wanted.

    Returns:
        A copy of that entry.

    Raises:
        UserInputError: if the file is missing, is not valid YAML (with the line), is not a mapping
            of env ids to mappings, or has neither an ``env_id`` nor a ``default`` entry.
    """
    content = read_hyperparams(path)
    key = env_id if env_id in content else "default"
    if key not in content:
        raise UserInputError(f"{path} has no entry for {env_id!r} and no 'default' entry; "
                             f"add one (entries: {', '.join(map(str, content))})")
    return dict(content[key])


def build_config(
    flags: Mapping[str, Any], overrides: Mapping[str, Any], hyperparams_file: Path | None = None
) -> dict[str, Any]:
    """Merge defaults, the hyperparameter file, flags and overrides into one validated configuration.

    Args:
        flags: run settings given as flags (``algo``, ``env``, ``n_timesteps``...); ``None`` values
            mean "not given". ``estimator`` / ``baseline`` go into ``policy_kwargs``; ``reward_delay``
            (``--reward-delay``) adds :func:`delayed_reward_settings` over the file's entry and, after the
            overrides, :func:`delayed_reward_wrappers` to ``env_wrapper``; ``bsn_layers``
            (``--bsn-layers``) adds :func:`deep_policy_settings` for ``credit`` (``--credit``, default
            ``strict``), and ``credit`` alone sets ``rao_blackwell``.
        overrides: ``-params`` overrides (:func:`parse_overrides`); applied last.
        hyperparams_file: the file keyed by env id; ``None`` uses ``hyperparams/<algo>.yml``.

    Returns:
        The configuration returned by :func:`validate_config`.
    """
    given = {key: value for key, value in flags.items() if value is not None}
    policy_flags = {key: given.pop(key) for key in ("estimator", "baseline") if key in given}
    reward_delay = given.pop("reward_delay", None)
    bsn_layers = given.pop("bsn_layers", None)
    credit = given.pop("credit", None)
    if credit is not None:
        given.update(credit_setting(str(given.get("algo", RUN_DEFAULTS["algo"])), credit))
    algo = str(given.get("algo", RUN_DEFAULTS["algo"]))
    env_id = str(given.get("env", RUN_DEFAULTS["env"]))
    path = hyperparams_file if hyperparams_file is not None else HYPERPARAMS_DIR / f"{algo}.yml"
    config = merge(RUN_DEFAULTS, load_hyperparams(path, env_id) if algo in ALGORITHM_NAMES else {})
    if reward_delay is not None:
        config = merge(config, delayed_reward_settings(algo, env_id, reward_delay))
    if bsn_layers is not None:
        config = merge(config, deep_settings_for_flags(algo, env_id, bsn_layers, credit, config))
    config = merge(config, given)
    if policy_flags:
        config = merge(config, {"policy_kwargs": policy_flags})
    config = merge(config, overrides)
    if reward_delay is not None:  # after the overrides, so that an env_wrapper given by -params keeps the delay
        config["env_wrapper"] = delayed_reward_wrappers(config.get("env_wrapper"), reward_delay)
    return validate_config(config)


def delayed_reward_file(algo: str) -> Path:
    """``hyperparams/<algo>_delayed.yml``: the algorithm's settings for delayed reward, keyed by env id."""
    return HYPERPARAMS_DIR / f"{algo}_delayed.yml"


def delayed_reward_settings(algo: str, env_id: str, delay: Any) -> dict[str, Any]:
    """The settings ``train.py --reward-delay`` puts over the algorithm's entry for ``env_id``: the entry for
    ``env_id`` (else ``default``) of :func:`delayed_reward_file`, if the algorithm has one (the discount and
    GAE lambda measured best for delayed reward, ``benchmarks/results/delayed.md``); ``{}`` otherwise.

    Args:
        algo: ``--algo`` name.
        env_id: the environment id.
        delay: an integer ``k >= 1`` (the reward paid every ``k`` steps) or ``"episode"``.

    Raises:
        UserInputError: for a bad ``delay``.
    """
    check_reward_delay(delay)
    path = delayed_reward_file(algo)
    return load_hyperparams(path, env_id) if path.is_file() else {}


def delayed_reward_wrappers(env_wrapper: Any, delay: Any) -> list[str | dict[str, dict[str, Any]]]:
    """The ``env_wrapper`` list of a run with ``--reward-delay``: the run's own wrappers (innermost), then
    :class:`envs.TimeFeature` (the critic sees the remaining time, which tells it how much reward has accrued
    unpaid) and :class:`envs.RewardDelay` with ``delay``.

    Args:
        env_wrapper: the run's ``env_wrapper`` setting (any RL Zoo form, or ``None``).
        delay: an integer ``k >= 1`` (the reward paid every ``k`` steps) or ``"episode"``.

    Raises:
        UserInputError: for a bad ``delay``, or an ``env_wrapper`` that already holds either of the two.
    """
    check_reward_delay(delay)
    wrappers = env_wrappers(env_wrapper) or []
    for item in wrappers:
        path = item if isinstance(item, str) else next(iter(item))
        if import_wrapper(path) in (TimeFeature, RewardDelay):
            raise UserInputError(
                f"env_wrapper already has {path} and --reward-delay adds envs.TimeFeature and envs.RewardDelay; "
                "drop it from env_wrapper or drop --reward-delay"
            )
    return [*wrappers, "envs.TimeFeature", {"envs.RewardDelay": {"delay": delay}}]


def check_reward_delay(delay: Any) -> None:
    """Fail with one line naming ``--reward-delay`` unless ``delay`` is an integer ``k >= 1`` or ``"episode"``."""
    try:
        delay_period(delay)
    except ValueError as error:
        raise UserInputError(f"--reward-delay: {error}") from None


#: Credit rules of a deep BSN policy: ``strict`` (``rao_blackwell: false``; each unit reads only its inputs, its
#: own sample and probability, and the broadcast advantage) or ``posterior`` (``rao_blackwell: true``; each unit
#: is credited with its posterior firing probability given the layer above, docs/method.md).
CREDIT_RULES = ("strict", "posterior")
#: Settings of :func:`deep_policy_file` given per BSN layer, written ``[first layer, every layer above]``.
PER_LAYER_SETTINGS = ("hidden_lr_scale", "bsn_init_gain")


def credit_setting(algo: str, credit: str) -> dict[str, bool]:
    """What ``train.py --credit RULE`` sets: ``rao_blackwell`` (``True`` for ``posterior``).

    Raises:
        UserInputError: for an algorithm other than LocalPG, which has no credit rule.
    """
    if algo != "localpg":
        raise UserInputError(f"--credit sets LocalPG's credit rule (rao_blackwell); got --algo {algo}")
    return {"rao_blackwell": credit == "posterior"}


def deep_policy_file() -> Path:
    """``hyperparams/localpg_deep.yml``: what LocalPG changes with more than one BSN layer, keyed by env id, then
    by credit rule (:data:`CREDIT_RULES`)."""
    return HYPERPARAMS_DIR / "localpg_deep.yml"


def deep_policy_settings(env_id: str, layers: int, credit: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that turn ``entry`` (LocalPG's configuration for ``env_id``) into a policy of ``layers`` BSN
    layers learning under the ``credit`` rule.

    * ``policy_kwargs.net_arch``: ``layers`` layers as wide as the entry's first BSN layer;
    * ``rao_blackwell``: ``credit == "posterior"``;
    * the ``credit`` settings of :func:`deep_policy_file`'s entry for ``env_id`` (else ``default``), where each
      of :data:`PER_LAYER_SETTINGS` written ``[first, above]`` becomes one value per layer,
      ``[first, above, ..., above]`` (``policy_kwargs`` keys go into ``policy_kwargs``).

    Args:
        env_id: the environment id.
        layers: the number of BSN layers (>= 1).
        credit: a name of :data:`CREDIT_RULES`.
        entry: the configuration the settings apply to (its ``policy_kwargs.net_arch`` gives the width; 64
            without one).

    Returns:
        Settings to :func:`merge` over ``entry``.

    Raises:
        UserInputError: for a bad ``layers`` or ``credit``, or a per-layer setting not written as a number or
            ``[first, above]``.
    """
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise UserInputError(f"the number of BSN layers must be an integer >= 1, got {layers!r}")
    if credit not in CREDIT_RULES:
        raise UserInputError(f"unknown credit rule {credit!r}; choose one of: {', '.join(CREDIT_RULES)}")
    arch = dict(entry.get("policy_kwargs") or {}).get("net_arch", [64])
    first = arch.get("pi", [64]) if isinstance(arch, Mapping) else arch
    width = int(first[0]) if first else 64
    path = deep_policy_file()
    rules = load_hyperparams(path, env_id) if path.is_file() else {}
    chosen = dict(rules.get(credit) or {})
    policy_kwargs = dict(chosen.pop("policy_kwargs", None) or {})
    for settings in (chosen, policy_kwargs):
        for key in PER_LAYER_SETTINGS:
            if key in settings:
                settings[key] = _per_layer(key, settings[key], layers)
    net_arch = [width] * layers if not isinstance(arch, Mapping) else {**arch, "pi": [width] * layers}
    return {**chosen, "rao_blackwell": credit == "posterior", "policy_kwargs": {**policy_kwargs, "net_arch": net_arch}}


def deep_settings_for_flags(
    algo: str, env_id: str, layers: Any, credit: str | None, config: Mapping[str, Any]
) -> dict[str, Any]:
    """What ``train.py --bsn-layers D [--credit RULE]`` adds to ``config``: :func:`deep_policy_settings` for
    ``D`` layers under ``RULE`` (default ``strict``, the paper's rule).

    Raises:
        UserInputError: for an algorithm other than LocalPG, or a bad ``D``.
    """
    if algo != "localpg":
        raise UserInputError(f"--bsn-layers sets LocalPG's deep-policy settings; got --algo {algo} (set the BSN "
                             "policy's layers with -params policy_kwargs.net_arch:[...] instead)")
    return deep_policy_settings(env_id, positive_int("bsn-layers", layers), credit or "strict", config)


def _per_layer(key: str, value: Any, layers: int) -> Any:
    """A :data:`PER_LAYER_SETTINGS` value for ``layers`` layers: a number as it is, ``[first, above]`` expanded."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, list) and len(value) == 2:
        return [value[0]] + [value[1]] * (layers - 1)
    raise UserInputError(f"{deep_policy_file()}: {key} must be a number or [first layer, layers above], got {value!r}")


# --- validation -------------------------------------------------------------------------------------

Check = Callable[[str, Any], Any]


def _number(key: str, value: Any, kind: type) -> int | float:
    """``value`` as a finite ``kind`` (int or float); numeric strings are accepted, bools are not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        text = repr(value)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise UserInputError(f"{key} must be a number, got {text}") from None
        else:
            raise UserInputError(f"{key} must be a number, got {text}")
    if not math.isfinite(value):
        raise UserInputError(f"{key} must be finite, got {value}")
    if kind is int:
        if value != int(value):
            raise UserInputError(f"{key} must be a whole number, got {value}")
        return int(value)
    return float(value)


#: torch's CPU threads of the command-line tools unless ``--num-threads`` says otherwise. For the small networks
#: of RL policies one thread is about as fast as several on an idle machine and much faster when runs share
#: the cores (``benchmarks/results/threads.md``).
DEFAULT_NUM_THREADS = 1


def set_num_threads(value: Any) -> None:
    """Set torch's CPU threads from a ``--num-threads`` value: a positive count, or -1 for torch's own choice.

    Raises:
        UserInputError: for any other value.
    """
    if value in (-1, "-1"):
        return
    torch.set_num_threads(positive_int("num-threads", value))


def positive_int(key: str, value: Any) -> int:
    """``value`` as an integer > 0 (``1e5`` accepted), else a :class:`UserInputError` naming ``key``."""
    number = _number(key, value, int)
    if number <= 0:
        raise UserInputError(f"{key} must be a positive integer, got {value!r}")
    return int(number)


def frequency(key: str, value: Any) -> int:
    """A period in environment steps; ``0`` or ``-1`` disables it (stored as 0)."""
    number = int(_number(key, value, int))
    if number < -1:
        raise UserInputError(f"{key} must be a positive number of steps (0 or -1 disables), got {value!r}")
    return max(number, 0)


def _choice(choices: Sequence[str]) -> Check:
    def check(key: str, value: Any) -> str:
        if value not in choices:
            raise UserInputError(f"unknown {key} {value!r}; choose one of: {', '.join(choices)}")
        return str(value)

    return check


def _seed(key: str, value: Any) -> int | None:
    if value is None:
        return None
    number = int(_number(key, value, int))
    if number < 0:
        raise UserInputError(f"{key} must be a non-negative integer, got {value!r}")
    return number


def _device(key: str, value: Any) -> str:
    import torch

    text = str(value)
    if text == "auto" or text == "cpu":
        return text
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserInputError(f"{key} {text!r} asked for CUDA but no CUDA device is available; "
                                 "use --device cpu or auto")
        return text
    raise UserInputError(f"unknown {key} {text!r}; use auto, cpu, cuda or cuda:N")


#: how ``env_wrapper`` is written, for error messages.
WRAPPER_FORMAT = "'module.Class', or a list of 'module.Class' / {'module.Class': {kwargs}} (RL Zoo's env_wrapper)"


def import_wrapper(path: str) -> Callable[..., Any]:
    """The class (or function) that ``path`` (``module.Name``) names, e.g. ``gymnasium.wrappers.FlattenObservation``.

    Raises:
        UserInputError: if ``path`` cannot be imported or does not name a callable.
    """
    module_name, _, name = str(path).rpartition(".")
    try:
        wrapper = getattr(importlib.import_module(module_name), name) if module_name else None
    except (ImportError, AttributeError, ValueError) as error:
        raise UserInputError(
            f"cannot import env_wrapper {path!r} ({error}); give a 'module.Class' path, "
            "e.g. gymnasium.wrappers.FlattenObservation"
        ) from None
    if not callable(wrapper):
        raise UserInputError(
            f"env_wrapper {path!r} does not name a wrapper class; give a 'module.Class' path, "
            "e.g. gymnasium.wrappers.FlattenObservation"
        )
    return wrapper  # type: ignore[no-any-return]


def env_wrappers(value: Any) -> list[str | dict[str, dict[str, Any]]] | None:
    """The ``env_wrapper`` setting, validated (every wrapper imports) and normalised to a list, or ``None``.

    Accepts RL Zoo's forms: ``"module.Class"``, ``{"module.Class": {kwargs}}``, or a list of those
    (applied in order, the first innermost, around each environment's ``Monitor``, which records the unwrapped returns).
    """
    if value in (None, "", []):
        return None
    items = value if isinstance(value, list) else [value]
    normalised: list[str | dict[str, dict[str, Any]]] = []
    for item in items:
        if isinstance(item, str):
            import_wrapper(item)
            normalised.append(item)
        elif isinstance(item, Mapping) and len(item) == 1 and isinstance(next(iter(item.values())), Mapping | None):
            path, kwargs = next(iter(item.items()))
            check_wrapper_arguments(str(path), import_wrapper(path), dict(kwargs or {}))
            normalised.append({str(path): dict(kwargs or {})})
        else:
            raise UserInputError(f"env_wrapper must be {WRAPPER_FORMAT}, got {item!r}")
    return normalised


def check_wrapper_arguments(path: str, wrapper: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Fail with one line if ``kwargs`` do not fit the wrapper's signature, or (for
    :class:`envs.RewardDelay`) ``delay`` is not a valid reward delay.

    Args:
        path: the wrapper's ``module.Class`` path, for the message.
        wrapper: the imported wrapper class, called as ``wrapper(env, **kwargs)``.
        kwargs: the arguments written in ``env_wrapper``.
    """
    try:
        inspect.signature(wrapper).bind(None, **kwargs)
    except TypeError as error:
        raise UserInputError(f"env_wrapper {path!r} cannot take {kwargs}: {error}; fix its arguments") from None
    except ValueError:  # no signature to check (a builtin): the env build reports any mismatch
        return
    if wrapper is RewardDelay:
        try:
            delay_period(kwargs.get("delay", EPISODE))
        except ValueError as error:
            raise UserInputError(f"env_wrapper {path!r}: {error}") from None


def torch_env_options(value: list[str | dict[str, dict[str, Any]]] | None) -> dict[str, Any]:
    """The ``reward_delay`` and ``time_feature`` options that a validated ``env_wrapper`` list asks of the torch
    backend.

    The torch backend's batched envs are not Gymnasium envs and take no wrappers, but they pay reward late and
    observe the time themselves (:class:`envs.TorchVecEnv`'s ``reward_delay`` and ``time_feature``), so
    ``envs.RewardDelay`` and ``envs.TimeFeature`` (with the task's own time limit) are the wrappers they accept.

    Raises:
        UserInputError: for any other wrapper, a ``TimeFeature`` with a time limit of its own, or a wrapper
            given twice.
    """
    options: dict[str, Any] = {}
    for item in value or []:
        path, kwargs = (item, {}) if isinstance(item, str) else next(iter(item.items()))
        wrapper = import_wrapper(path)
        if wrapper is RewardDelay:
            option, setting = "reward_delay", kwargs.get("delay", EPISODE)
        elif wrapper is TimeFeature and kwargs.get("max_episode_steps") is None:
            option, setting = "time_feature", True
        else:
            raise UserInputError(
                f"env_wrapper {path!r} wraps Gymnasium envs and does not apply to the torch backend, which takes "
                "envs.RewardDelay and envs.TimeFeature only; drop it or use --backend gymnasium"
            )
        if option in options:
            raise UserInputError(f"env_wrapper names {path} twice; keep one")
        options[option] = setting
    return options


def wrapper_class(value: list[str | dict[str, dict[str, Any]]] | None) -> Callable[[Any], Any] | None:
    """One callable ``env -> wrapped env`` applying the validated ``env_wrapper`` list in order (None if empty)."""
    if not value:
        return None
    steps = []
    for item in value:
        path, kwargs = (item, {}) if isinstance(item, str) else next(iter(item.items()))
        steps.append((import_wrapper(path), kwargs))

    def wrap(env: Any) -> Any:
        for wrapper, kwargs in steps:
            env = wrapper(env, **kwargs)
        return env

    return wrap


def _mapping(key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UserInputError(f"{key} must be a mapping, e.g. {{gravity: 9.8}}, got {value!r}")
    return dict(value)


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UserInputError(f"{key} must be true or false, got {value!r}")
    return value


def _linear_start(key: str, value: str) -> float:
    """The start of a ``lin_<start>`` value (a positive number), else a :class:`UserInputError`."""
    try:
        start = float(value[len(LINEAR_PREFIX):])
    except ValueError:
        start = math.nan
    if not (math.isfinite(start) and start > 0):
        raise UserInputError(f"{key} {value!r} is not a linear schedule with a positive start; "
                             f"write {LINEAR_PREFIX}<start>, e.g. {LINEAR_PREFIX}3e-3")
    return start


#: validation of each run setting.
RUN_CHECKS: dict[str, Check] = {
    "algo": _choice(ALGORITHM_NAMES),
    "env": lambda key, value: str(value),
    "env_kwargs": _mapping,
    "env_wrapper": lambda key, value: env_wrappers(value),
    "backend": _choice(BACKEND_NAMES),
    "policy": lambda key, value: _choice(POLICY_NAMES)(key, POLICY_ALIASES.get(value, value)),
    "n_timesteps": positive_int,
    "n_envs": positive_int,
    "seed": _seed,
    "device": _device,
    "normalize": _flag,
    "eval_freq": frequency,
    "eval_episodes": positive_int,
    "deterministic_eval": _flag,
    "save_freq": frequency,
    "tensorboard_log": lambda key, value: None if value in (None, "") else str(Path(value).resolve()),
    "log_interval": lambda key, value: None if value is None else positive_int(key, value),
}

def _in_range(key: str, value: Any) -> int | float:
    """``value`` checked against its range in :data:`agents.localpg.hyperparameters.HYPERPARAMETER_RANGES`."""
    interval = HYPERPARAMETER_RANGES[key]
    number = _number(key, value, int if interval.integer else float)
    if not interval.contains(number):
        raise UserInputError(f"{key} must be {interval.describe()}, got {value!r}")
    return number


def _in_range_or_linear(key: str, value: Any) -> float | str:
    """A number in the key's range, or ``lin_<start>`` (kept as text, normalised to ``lin_<float>``) for a schedule."""
    if isinstance(value, str) and value.startswith(LINEAR_PREFIX):
        return f"{LINEAR_PREFIX}{_linear_start(key, value)!r}"
    return _in_range(key, value)


def _in_range_or_none(key: str, value: Any) -> float | None:
    return None if value is None else _in_range(key, value)


#: validation of the usual algorithm arguments (others are only checked to be known). The numeric ranges
#: are the algorithms' own (:data:`agents.localpg.hyperparameters.HYPERPARAMETER_RANGES`).
HYPERPARAM_CHECKS: dict[str, Check] = {
    **{key: _in_range for key in HYPERPARAMETER_RANGES},
    "learning_rate": _in_range_or_linear,
    "clip_range": _in_range_or_linear,
    **{key: _in_range_or_none for key in ("target_kl", "hidden_target_kl", "hidden_clip_range")},
    "normalize_advantage": _flag,
    "rao_blackwell": _flag,
    "coupled_posterior": _flag,
}


def _unknown(kind: str, key: str, known: Sequence[str], where: str) -> UserInputError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return UserInputError(f"unknown {kind} {key!r}{where}; {hint}known: {', '.join(sorted(known))}")


def _argument_names(function: Callable[..., Any]) -> tuple[list[str], bool]:
    parameters = inspect.signature(function).parameters.values()
    names = [p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    return names, any(p.kind == p.VAR_KEYWORD for p in parameters)


def _validate_policy_kwargs(policy: str, value: Any) -> dict[str, Any]:
    kwargs = _mapping("policy_kwargs", value)
    if policy == "mlp":
        for key in ("estimator", "baseline"):
            if key in kwargs:
                raise UserInputError(f"{key} only applies to the BSN policy; drop it or use --policy bsn")
    else:
        if "estimator" in kwargs:
            kwargs["estimator"] = _choice(ESTIMATOR_NAMES)("estimator", kwargs["estimator"])
        if "baseline" in kwargs:
            kwargs["baseline"] = _choice(BASELINE_NAMES)("baseline", kwargs["baseline"])
    if "activation_fn" in kwargs:
        kwargs["activation_fn"] = _choice(tuple(ACTIVATIONS))("activation_fn", kwargs["activation_fn"])
    if "net_arch" in kwargs:
        arch = kwargs["net_arch"]
        layers = arch.values() if isinstance(arch, Mapping) else [arch]
        for sizes in layers:
            if not isinstance(sizes, list) or not sizes:
                raise UserInputError(f"policy_kwargs.net_arch must be a list of layer sizes, got {arch!r}")
            for size in sizes:
                positive_int("policy_kwargs.net_arch size", size)
    policy_obj = policy_class(policy)
    if isinstance(policy_obj, type):
        known, open_ended = _argument_names(policy_obj.__init__)
    else:
        known, open_ended = _argument_names(ActorCriticPolicy.__init__)
    known = [name for name in known if name not in ("self", "observation_space", "action_space", "lr_schedule")]
    for key in kwargs:
        if key not in known and not open_ended:
            raise _unknown("policy_kwargs key", key, known, f" for the {policy} policy")
    return kwargs


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check every key and value of a run configuration and return it normalised.

    Run settings are checked by :data:`RUN_CHECKS`; other keys must be constructor arguments of the
    algorithm (checked against its signature), the usual ones by :data:`HYPERPARAM_CHECKS`; the
    estimator and baseline in ``policy_kwargs`` must be known names.

    Raises:
        UserInputError: naming the first bad key or value and what is expected.
    """
    result: dict[str, Any] = {}
    for key, default in RUN_DEFAULTS.items():
        result[key] = RUN_CHECKS[key](key, config.get(key, default))
    algo = algorithm_class(result["algo"])
    known, _ = _argument_names(algo.__init__)
    known = [name for name in known if name not in DRIVER_ARGUMENTS]
    for key, value in config.items():
        if key in RUN_DEFAULTS:
            continue
        if key not in known:
            raise _unknown("hyperparameter", key, [*known, *RUN_DEFAULTS], f" for {result['algo']}")
        if key == "policy_kwargs":
            result[key] = _validate_policy_kwargs(result["policy"], value)
        elif key in HYPERPARAM_CHECKS:
            result[key] = HYPERPARAM_CHECKS[key](key, value)
        else:
            result[key] = value
    return result
