"""Helpers shared by the command-line tests: running the tools in-process or as subprocesses."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: a few hundred steps of a tiny LocalPG agent: enough to produce every file of a run folder.
TINY_PARAMS = ["-params", "n_steps:64", "batch_size:64", "n_epochs:1", "policy_kwargs.net_arch:[8]"]
TINY = ["-n", "256", "--n-envs", "2", "--seed", "0", "--eval-freq", "128", "--eval-episodes", "2",
        "--save-freq", "128", "--no-progress-bar"]


def _pythonpath() -> str:
    """The repository root ahead of the caller's ``PYTHONPATH`` (which may hold the dependencies)."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def run_tool(script: str, args: Sequence[str], cwd: Path, timeout: float = 120,
             extra_env: dict[str, str] | None = None,
             replace_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python <ROOT>/<script> args`` in ``cwd`` with single-threaded torch; capture its output.

    Args:
        script: ``train.py`` or ``evaluate.py``.
        args: the command-line arguments.
        cwd: the working directory (relative paths in ``args`` start there).
        timeout: seconds before the run is killed (a test failure).
        extra_env: environment variables to add (e.g. ``CUDA_VISIBLE_DEVICES``).
        replace_env: the environment to start from instead of this process's (e.g. without ``DISPLAY``).
    """
    base = os.environ if replace_env is None else replace_env
    env = {**base, "OMP_NUM_THREADS": "1", "PYTHONPATH": _pythonpath(), **(extra_env or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout, check=False)


def start_tool(script: str, args: Sequence[str], cwd: Path) -> subprocess.Popen[str]:
    """Start ``python <ROOT>/<script> args`` in ``cwd`` in the background (stdout and stderr piped)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": _pythonpath()}
    return subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def call_main(script: str, args: Sequence[str]) -> int:
    """Run a tool's ``main`` in this process through ``run_cli`` and return its exit status."""
    from bsn_zoo.cli_errors import run_cli

    module = importlib.import_module(f"bsn_zoo.{script.removesuffix('.py')}")
    try:
        return run_cli(module.main, script, list(args))
    except SystemExit as exit_:  # argparse's own errors and --help
        return int(exit_.code or 0)


def read_events(path: Path) -> list:
    """All TensorBoard ``Event`` records of one event file (or of every event file below a folder, in name order)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    files = sorted(Path(path).glob("events.out.tfevents.*")) if Path(path).is_dir() else [Path(path)]
    return [event for file in files for event in LegacyEventFileLoader(str(file)).Load()]


def scalar_steps(events: list) -> dict[str, list[tuple[int, float]]]:
    """Scalar summaries of TensorBoard events: tag to ``(step, value)`` in file order."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for event in events:
        for value in event.summary.value:
            if value.WhichOneof("value") == "simple_value":
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def cli_docs(page: str, marker: str) -> str:
    """The text of a documentation page, checked to contain ``marker`` (e.g. the header of a documented table).

    The docs tables (TensorBoard keys, bad-input messages) are checked against the code through this helper.

    Args:
        page: the page's path under ``docs/`` (e.g. ``"bad-input.md"``).
        marker: text that the page contains (e.g. a table's header).
    """
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    assert marker in text, f"docs/{page} has no {marker!r} table"
    return text
