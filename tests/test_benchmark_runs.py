"""Resumable benchmark runs: each run's record is written once, and a run is claimed before it trains, so two
benchmark processes on the same records folder never train the same run."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks.common import (
    claim_run,
    finished_runs_sentence,
    release_run,
    resume_runs,
    save_record,
    seeds_per_task,
)

ROOT = Path(__file__).resolve().parents[1]

#: a benchmark process over six jobs, each logging its start and taking a fifth of a second to train; the process
#: named "first" holds its first job until the other process has started one (at most a minute), so both take a
#: share however slowly the second one starts.
BENCHMARK = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from benchmarks.common import resume_runs, save_record

    def run(item):
        job, folder = item
        log_path = folder / "trained.log"
        with open(log_path, "a") as log:
            log.write(f"{job} {sys.argv[2]}\\n")
        deadline = time.monotonic() + 60
        while sys.argv[2] == "first" and " second" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        save_record(folder / f"{job}.json", {"job": job})

    resume_runs(run, list(range(6)), lambda job: f"{job}.json", Path(sys.argv[1]), workers=1)
    """
)


def _record(item: tuple[int, Path]) -> None:
    job, folder = item
    with open(folder / "trained.log", "a") as log:
        log.write(f"{job}\n")
    save_record(folder / f"{job}.json", {"job": job})


def _fail(item: tuple[int, Path]) -> None:
    raise RuntimeError("training failed")


def _trained(folder: Path) -> list[str]:
    return (folder / "trained.log").read_text().split() if (folder / "trained.log").is_file() else []


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_two_benchmark_processes_on_one_folder_train_every_run_once(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-c", BENCHMARK, str(tmp_path), "first"], cwd=ROOT, env=env)
    while not (tmp_path / "trained.log").is_file():  # the first process has started its first run
        assert first.poll() is None, "the first benchmark process ended before training"
    second = subprocess.Popen([sys.executable, "-c", BENCHMARK, str(tmp_path), "second"], cwd=ROOT, env=env)
    assert first.wait(timeout=120) == 0 and second.wait(timeout=120) == 0
    lines = (tmp_path / "trained.log").read_text().splitlines()
    jobs = sorted(int(line.split()[0]) for line in lines)
    assert jobs == list(range(6)), f"runs trained: {lines}"
    assert {line.split()[1] for line in lines} == {"first", "second"}  # the second process took a share
    assert not list(tmp_path.glob("*.claim*"))


def test_a_run_claimed_by_a_live_process_is_left_to_it(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim = tmp_path / "1.json.claim"
        claim.write_text(f"{holder.pid}@{platform.node()}")
        records = resume_runs(_record, [0, 1, 2], lambda job: f"{job}.json", tmp_path, workers=1)
    finally:
        holder.kill()
        holder.wait()
    assert sorted(records) == [0, 2]  # job 1 is still being trained elsewhere: not finished here
    assert _trained(tmp_path) == ["0", "2"]
    assert claim.read_text() == f"{holder.pid}@{platform.node()}"  # not ours to drop


def test_a_stale_claim_is_taken_over_and_released(tmp_path: Path) -> None:
    (tmp_path / "1.json.claim").write_text(f"{_dead_pid()}@{platform.node()}")
    records = resume_runs(_record, [0, 1], lambda job: f"{job}.json", tmp_path, workers=1)
    assert sorted(records) == [0, 1]
    assert not list(tmp_path.glob("*.claim*"))


def test_a_failed_run_releases_its_claim(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="training failed"):
        resume_runs(_fail, [0], lambda job: f"{job}.json", tmp_path, workers=1)
    assert not list(tmp_path.glob("*.claim*"))
    assert sorted(resume_runs(_record, [0], lambda job: f"{job}.json", tmp_path, workers=1)) == [0]


def test_a_finished_run_cannot_be_claimed(tmp_path: Path) -> None:
    record = tmp_path / "0.json"
    assert claim_run(record)
    assert (tmp_path / "0.json.claim").read_text() == f"{os.getpid()}@{platform.node()}"
    release_run(record)
    save_record(record, {"job": 0})
    assert not claim_run(record)
    assert not list(tmp_path.glob("*.claim*"))


@pytest.mark.parametrize(
    ("missing", "expected"),
    [
        ([], "every run asked for is finished."),
        (["a"], "1 of the runs asked for is not finished (a)."),
        ([str(i) for i in range(7)], "7 of the runs asked for are not finished (0, 1, 2, 3, 4, 5, ...)."),
    ],
)
def test_reports_name_the_runs_not_finished(missing: list[str], expected: str) -> None:
    assert finished_runs_sentence(Path("runs"), missing) == f"Finished runs are kept in `runs/`; {expected}"


def test_seeds_are_given_once_for_every_task_or_once_per_task() -> None:
    assert seeds_per_task(["a", "b"], [3]) == {"a": 3, "b": 3}
    assert seeds_per_task(["a", "b"], [3, 5]) == {"a": 3, "b": 5}
    with pytest.raises(ValueError, match="--seeds takes one value, or one per --envs entry"):
        seeds_per_task(["a", "b"], [3, 5, 1], "--envs")
    with pytest.raises(ValueError, match="--seeds must be > 0, got 3 0"):
        seeds_per_task(["a", "b"], [3, 0])
