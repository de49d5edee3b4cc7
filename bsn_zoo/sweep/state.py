"""The sweep's bookkeeping: one JSON line per finished trial in ``<sweep folder>/state.jsonl``.

Only the process that drives the sweep writes the file, one whole line per trial, flushed and synced
to disk as soon as the trial ends. A sweep that is interrupted (Ctrl-C, a killed job, a lost machine)
therefore knows exactly which trials finished: rerunning the same command skips them and runs the rest.
A line torn by a crash mid-write is ignored (that trial simply runs again).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FINISHED_STATUSES", "STATE_FILE", "LearningCurve", "SweepState", "TrialRecord"]

#: the sweep's record of finished trials, in the sweep folder.
STATE_FILE = "state.jsonl"


#: trial statuses: ``ok`` (trained to the end), ``failed`` (crashed or rejected its input), ``diverged``
#: (non-finite weights or losses), ``timeout`` (ran past the trial time limit), ``pruned`` (stopped by Optuna).
FINISHED_STATUSES = ("ok", "failed", "diverged", "timeout", "pruned")


@dataclass(frozen=True)
class LearningCurve:
    """Mean return against environment steps of one run.

    Attributes:
        timesteps: environment steps at each point, increasing.
        returns: mean episode return at each point (same length as ``timesteps``).
        source: ``"eval"`` (periodic evaluations, ``eval/evaluations.npz``) or ``"train"`` (training
            episodes from the Monitor files, when the run had no evaluations).
    """

    timesteps: tuple[int, ...]
    returns: tuple[float, ...]
    source: str

    def __post_init__(self) -> None:
        if len(self.timesteps) != len(self.returns):
            raise ValueError(f"{len(self.timesteps)} timesteps but {len(self.returns)} returns")

    @property
    def final_return(self) -> float | None:
        """The last point's return, or ``None`` for an empty curve."""
        return self.returns[-1] if self.returns else None

    def steps_to_threshold(self, threshold: float) -> int | None:
        """The first step at which the return reached ``threshold``, or ``None`` if it never did."""
        return next((step for step, value in zip(self.timesteps, self.returns, strict=True) if value >= threshold),
                    None)


@dataclass(frozen=True)
class TrialRecord:
    """What the sweep remembers of one finished trial.

    Attributes:
        trial_id: the trial (see :class:`~bsn_zoo.sweep.spec.TrialSpec`).
        config_id: its configuration's label.
        seed: its seed.
        fingerprint: hash of the trial's options and seed when it ran (a changed sweep file is detected).
        status: one of :data:`FINISHED_STATUSES`.
        error: the one-line error of a trial that did not finish, else ``None``.
        exit_code: ``train.py``'s exit status (``None`` if it was stopped by the sweep).
        run_dir: the trial's run folder relative to the sweep folder, or ``None`` if none was made.
        n_timesteps: the trial's step budget (the steps-to-threshold of a run that never reached it).
        curve: the run's learning curve, or ``None`` when it has none.
        duration_s: wall-clock seconds the trial took.
        options: the trial's flat options (shown by the summary).
    """

    trial_id: str
    config_id: str
    seed: int
    fingerprint: str
    status: str
    error: str | None = None
    exit_code: int | None = None
    run_dir: str | None = None
    n_timesteps: int | None = None
    curve: LearningCurve | None = None
    duration_s: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in FINISHED_STATUSES:
            raise ValueError(f"unknown trial status {self.status!r}; expected one of {FINISHED_STATUSES}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialRecord:
        """Rebuild a record from :meth:`to_dict`'s output."""
        values = dict(data)
        curve = values.pop("curve", None)
        if curve is not None:
            curve = LearningCurve(tuple(int(t) for t in curve["timesteps"]),
                                  tuple(float(r) for r in curve["returns"]), str(curve["source"]))
        return cls(curve=curve, **values)


class SweepState:
    """The append-only record of a sweep's finished trials (``state.jsonl``).

    Args:
        path: the JSON-lines file; created on the first :meth:`append`.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def records(self) -> list[TrialRecord]:
        """Every complete record in file order (a later record of the same trial replaces an earlier one)."""
        if not self.path.is_file():
            return []
        records = []
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(TrialRecord.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError, KeyError, ValueError) as error:
                warnings.warn(f"{self.path}:{number}: ignoring an unreadable record ({error}); "
                              "its trial will run again", stacklevel=2)
        return records

    def latest(self) -> dict[str, TrialRecord]:
        """The latest record of each trial id."""
        return {record.trial_id: record for record in self.records()}

    def append(self, record: TrialRecord) -> None:
        """Append one record as a line and sync it to disk (a torn last line is terminated first)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record.to_dict(), sort_keys=True) + "\n"
        with open(self.path, "a+b") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = "\n" + line
            handle.write(line.encode())
            handle.flush()
            os.fsync(handle.fileno())

    def finished(self, fingerprints: Mapping[str, str], rerun: Sequence[str] = ()) -> dict[str, TrialRecord]:
        """The finished trials among ``fingerprints`` (trial id to fingerprint) that need not run again.

        Args:
            fingerprints: the sweep's trials and their current fingerprints.
            rerun: statuses whose trials run again (e.g. ``("failed", "timeout")`` after fixing a bug).

        Raises:
            ValueError: if a recorded trial ran with options other than its current ones (the sweep file
                changed): the message names the trial.
        """
        done = {}
        for trial_id, record in self.latest().items():
            if trial_id not in fingerprints:
                continue
            if record.fingerprint != fingerprints[trial_id]:
                raise ValueError(f"trial {trial_id!r} in {self.path} ran with other options than the sweep "
                                 "file now gives; restore the file or give a new --sweep-dir")
            if record.status not in rerun:
                done[trial_id] = record
        return done
