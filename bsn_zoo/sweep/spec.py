"""Sweep files: a YAML grid of training options and seeds, expanded into trials.

A sweep file is a mapping with these keys (only ``grid`` or ``configs`` is required)::

    name: estimators_cartpole          # folder name of the sweep (default: the file's stem)
    conf: hyperparams/localpg.yml      # optional -conf file of every trial (default: the built-in one)
    base:                              # options shared by every configuration
      algo: localpg
      env: CartPole-v1
      n_timesteps: 50000
      eval_freq: 5000
    grid:                              # cartesian product: one configuration per combination
      policy_kwargs.estimator: [local, st]
      policy_kwargs.baseline: [value, optimal]
    configs:                           # and/or explicit configurations (optional ``name`` each)
      - {name: ppo-mlp, algo: ppo, policy: mlp}
    seeds: 5                           # seeds 0..4, or a list such as [0, 7, 42]
    threshold: 475                     # return threshold of steps-to-threshold (default: the env's)

An *option* is any key of a run configuration (``bsn_zoo.config``): a run setting (``algo``, ``env``,
``n_timesteps``, ``n_envs``, ``policy``, ``eval_freq``...) or an algorithm argument; dotted keys
(``policy_kwargs.estimator``) reach into mappings. Every (configuration, seed) pair is one *trial*, run as
``python train.py --algo A --env E --seed S -f <trial folder> -params key:value ...``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import yaml

from bsn_zoo.cli_errors import UserInputError
from bsn_zoo.config import build_config

__all__ = [
    "FLAG_OPTIONS",
    "SWEEP_FILE",
    "SweepSpec",
    "TrialSpec",
    "check_keys",
    "check_name",
    "flatten_options",
    "load_saved_sweep",
    "load_sweep",
    "parse_options",
    "parse_sweep",
    "read_yaml",
    "save_sweep",
    "unflatten_options",
]

#: options passed to ``train.py`` as flags (they choose the hyperparameter file); the rest go to ``-params``.
FLAG_OPTIONS = {"algo": "--algo", "env": "--env"}
#: keys a sweep file may have.
SWEEP_KEYS = ("name", "conf", "base", "grid", "configs", "seeds", "threshold")
#: characters kept in configuration labels (they become folder names).
UNSAFE_LABEL_CHARS = re.compile(r"[^A-Za-z0-9._+=,-]+")


def flatten_options(options: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys: ``{"a": {"b": 1}}`` gives ``{"a.b": 1}``.

    Empty mappings stay as values (``{"env_kwargs": {}}`` is kept), so nothing is lost.

    Args:
        options: option names (dotted or not) to values.
        prefix: prepended to every key (used by the recursion), e.g. ``"policy_kwargs."``.
    """
    flat: dict[str, Any] = {}
    for key, value in options.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_options(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def unflatten_options(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flatten_options`: ``{"a.b": 1}`` gives ``{"a": {"b": 1}}``."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        target = nested
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return nested


def _fingerprint(payload: Any) -> str:
    """A short, stable hash of a JSON-serialisable value (12 hex digits)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class TrialSpec:
    """One run of a sweep: a configuration's options and a seed.

    Attributes:
        trial_id: unique within the sweep, ``<config_id>_s<seed>``; the trial's folder name.
        config_id: the configuration's label (shared by its seeds).
        seed: the run's random seed (>= 0).
        options: flat (dotted) option names to values, ``algo`` and ``env`` included.
        conf_file: the ``-conf`` hyperparameter file, or ``None`` for the built-in one.
    """

    trial_id: str
    config_id: str
    seed: int
    options: dict[str, Any] = field(default_factory=dict)
    conf_file: str | None = None

    @property
    def fingerprint(self) -> str:
        """A hash of everything that defines the run; a finished trial is reused only if it matches."""
        return _fingerprint([self.options, self.seed, self.conf_file])

    def train_arguments(self, log_folder: Path) -> list[str]:
        """The ``train.py`` arguments of this trial, writing its run folder below ``log_folder``.

        ``algo`` and ``env`` become flags, every other option a ``-params key:value`` item whose
        value is JSON (which ``train.py`` reads as YAML), so strings, numbers and lists survive.
        """
        arguments = ["--seed", str(self.seed), "-f", str(log_folder), "--no-progress-bar"]
        for key, flag in FLAG_OPTIONS.items():
            if key in self.options:
                arguments += [flag, str(self.options[key])]
        if self.conf_file is not None:
            arguments += ["-conf", self.conf_file]
        params = [f"{key}:{json.dumps(value)}" for key, value in self.options.items() if key not in FLAG_OPTIONS]
        if params:
            arguments += ["-params", *params]
        return arguments

    def run_config(self) -> dict[str, Any]:
        """The validated run configuration ``train.py`` will build for this trial (``bsn_zoo.config``).

        Raises:
            UserInputError: naming the trial and the bad option.
        """
        flags = {key: self.options.get(key) for key in FLAG_OPTIONS}
        flags["seed"] = self.seed
        params = {key: value for key, value in self.options.items() if key not in FLAG_OPTIONS}
        overrides = unflatten_options(params)
        try:
            return build_config(flags, overrides, Path(self.conf_file) if self.conf_file else None)
        except UserInputError as error:
            raise UserInputError(f"configuration {self.config_id!r}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (sent to Ray workers and written to the sweep state)."""
        return {"trial_id": self.trial_id, "config_id": self.config_id, "seed": self.seed,
                "options": dict(self.options), "conf_file": self.conf_file}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialSpec:
        """Rebuild a trial from :meth:`to_dict`'s output."""
        return cls(trial_id=data["trial_id"], config_id=data["config_id"], seed=int(data["seed"]),
                   options=dict(data["options"]), conf_file=data.get("conf_file"))


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file: named configurations times seeds.

    Attributes:
        name: the sweep's name (folder name of its results).
        configs: configuration label to its flat options (base options merged in), in file order.
        seeds: the seeds every configuration runs with.
        threshold: the return that defines steps-to-threshold, or ``None`` for the environment's own.
        conf_file: the ``-conf`` file of every trial, or ``None``.
    """

    name: str
    configs: dict[str, dict[str, Any]]
    seeds: tuple[int, ...]
    threshold: float | None = None
    conf_file: str | None = None

    def trials(self) -> list[TrialSpec]:
        """Every (configuration, seed) trial, configuration-major (all seeds of the first one first)."""
        return [TrialSpec(f"{config_id}_s{seed}", config_id, seed, options, self.conf_file)
                for config_id, options in self.configs.items() for seed in self.seeds]

    def validate(self) -> None:
        """Check every configuration with ``bsn_zoo.config`` before anything runs.

        Raises:
            UserInputError: naming the first configuration with an unknown or bad option.
        """
        for trial in self.trials()[:: len(self.seeds)]:
            trial.run_config()


def _seeds(value: Any) -> tuple[int, ...]:
    if isinstance(value, bool):
        raise UserInputError(f"seeds must be a count or a list of integers, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise UserInputError(f"seeds must be a positive count, got {value}")
        return tuple(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                 for s in value):
        if len(set(value)) != len(value):
            raise UserInputError(f"seeds list has duplicates: {value}; list each seed once")
        return tuple(value)
    raise UserInputError(f"seeds must be a positive count or a list of non-negative integers, got {value!r}")


def parse_options(where: str, value: Any) -> dict[str, Any]:
    """Flatten a mapping of options (``base``, a configuration); ``where`` names it in errors.

    Raises:
        UserInputError: if it is not a mapping, or sets ``seed`` (seeds are given separately).
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UserInputError(f"{where} must be a mapping of option names to values, got {value!r}")
    flat = flatten_options(value)
    if "seed" in flat:
        raise UserInputError(f"{where} sets 'seed'; list seeds under the sweep's top-level 'seeds' key instead")
    return flat


def _value_label(value: Any) -> str:
    if isinstance(value, list):
        return "x".join(_value_label(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _label(varying: Mapping[str, Any]) -> str:
    parts = [f"{key.rpartition('.')[2]}={_value_label(value)}" for key, value in varying.items()]
    return UNSAFE_LABEL_CHARS.sub("-", ",".join(parts)).strip("-") or "base"


def _grid(value: Any) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Each combination of the grid as ``(options that vary across the grid, all its grid options)``."""
    if value is None:
        return
    if not isinstance(value, Mapping) or not value:
        raise UserInputError(f"grid must be a mapping of option names to lists of values, got {value!r}")
    flat = flatten_options(value)
    for key, choices in flat.items():
        if not isinstance(choices, list) or not choices:
            raise UserInputError(f"grid option {key!r} must be a non-empty list of values, got {choices!r}")
        if key == "seed":
            raise UserInputError("grid sets 'seed'; list seeds under the sweep's top-level 'seeds' key instead")
    for combination in product(*flat.values()):
        options = dict(zip(flat, combination, strict=True))
        yield {key: value for key, value in options.items() if len(flat[key]) > 1}, options


def _explicit_configs(value: Any) -> Iterator[tuple[str | None, dict[str, Any]]]:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(entry, Mapping) for entry in value):
        raise UserInputError(f"configs must be a list of mappings of options, got {value!r}")
    for index, entry in enumerate(value):
        options = dict(entry)
        name = options.pop("name", None)
        yield (None if name is None else str(name)), parse_options(f"configs[{index}]", options)


def _unique_labels(entries: Sequence[tuple[str | None, dict[str, Any], dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Label each (name, varying options, full options) entry; clashing labels get a hash suffix."""
    labels = [UNSAFE_LABEL_CHARS.sub("-", name) if name else _label(varying) for name, varying, _ in entries]
    configs: dict[str, dict[str, Any]] = {}
    for label, (_, _, options) in zip(labels, entries, strict=True):
        if labels.count(label) > 1:
            label = f"{label}-{_fingerprint(options)[:6]}"
        if label in configs:
            raise UserInputError(f"configuration {label!r} appears twice in the sweep; remove the duplicate")
        configs[label] = options
    return configs


def parse_sweep(content: Any, default_name: str) -> SweepSpec:
    """Build a :class:`SweepSpec` from the parsed YAML of a sweep file (see the module docstring).

    Args:
        content: the file's YAML content.
        default_name: the sweep's name when the file gives none (the file's stem).

    Raises:
        UserInputError: naming the bad key or value and what is expected.
    """
    check_keys(content, SWEEP_KEYS, "sweep file")
    base = parse_options("base", content.get("base"))
    entries = [(None, varying, {**base, **options}) for varying, options in _grid(content.get("grid"))]
    entries += [(name, options, {**base, **options}) for name, options in _explicit_configs(content.get("configs"))]
    if not entries:
        raise UserInputError("the sweep has no configurations; add a 'grid' or a 'configs' list")
    threshold = content.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        raise UserInputError(f"threshold must be a number (a return), got {threshold!r}")
    conf = content.get("conf")
    return SweepSpec(
        name=check_name(str(content.get("name") or default_name)),
        configs=_unique_labels(entries),
        seeds=_seeds(content.get("seeds", 1)),
        threshold=None if threshold is None else float(threshold),
        conf_file=None if conf is None else str(conf),
    )


def read_yaml(path: Path, kind: str) -> Any:
    """The parsed content of a YAML file; ``kind`` names the file in errors (``"sweep file"``).

    Raises:
        UserInputError: if the file cannot be read or is not valid YAML (with the line).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise UserInputError(f"cannot read {kind} {path}: {error.strerror}; check the path") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserInputError(f"YAML syntax error in {kind} {path}{where}; fix the file") from None


def check_keys(content: Any, known: Sequence[str], kind: str) -> None:
    """Check that ``content`` is a mapping whose keys are all in ``known``; ``kind`` names it in errors.

    Raises:
        UserInputError: for a non-mapping or an unknown key (with the closest known one).
    """
    if not isinstance(content, Mapping):
        raise UserInputError(f"a {kind} must be a mapping with the keys {', '.join(known)}")
    for key in content:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserInputError(f"unknown {kind} key {key!r}; {hint}known: {', '.join(known)}")


def check_name(name: str) -> str:
    """``name`` if it can be a folder name (letters, digits, ``.+=-``).

    Raises:
        UserInputError: otherwise.
    """
    if not name or UNSAFE_LABEL_CHARS.search(name):
        raise UserInputError(f"name {name!r} may only have letters, digits and . _ + = , - (it names a folder)")
    return name


def load_sweep(path: Path) -> SweepSpec:
    """Read and parse a sweep file.

    Raises:
        UserInputError: if the file cannot be read, is not valid YAML (with the line), or is not a valid sweep.
    """
    path = Path(path)
    content = read_yaml(path, "sweep file")
    try:
        return parse_sweep(content, path.stem)
    except UserInputError as error:
        raise UserInputError(f"{path}: {error}") from None


#: the expanded sweep, written into the sweep folder.
SWEEP_FILE = "sweep.yml"


def save_sweep(spec: SweepSpec, sweep_dir: Path) -> Path:
    """Write the expanded sweep to ``<sweep_dir>/sweep.yml`` (itself a valid sweep file)."""
    content = {
        "name": spec.name,
        "threshold": spec.threshold,
        "conf": spec.conf_file,
        "seeds": list(spec.seeds),
        "configs": [{"name": config_id, **options} for config_id, options in spec.configs.items()],
    }
    path = Path(sweep_dir) / SWEEP_FILE
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def load_saved_sweep(sweep_dir: Path) -> SweepSpec:
    """Read the sweep saved in a sweep folder by :func:`save_sweep`.

    Raises:
        UserInputError: if the folder has no readable ``sweep.yml`` (it is not a sweep folder).
    """
    path = Path(sweep_dir) / SWEEP_FILE
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        raise UserInputError(f"{sweep_dir} is not a sweep folder (no readable {SWEEP_FILE}); give the folder "
                             "that train.py --sweep wrote") from None
    return parse_sweep(content, Path(sweep_dir).name)
