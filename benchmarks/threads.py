"""How many torch threads should the command-line tools use? Wall time of the default run per thread setting.

Each setting runs ``train.py`` (the default agent: LocalPG on CartPole-v1 with its tuned entry) and then
``evaluate.py`` on the run, in fresh processes with no ``OMP_NUM_THREADS`` in their environment, as a new
user's shell has it. ``-1`` is torch's own choice (one thread per core). The table gives the wall time of
each command; the fastest setting is the tools' default (``bsn_zoo.config.DEFAULT_NUM_THREADS``).

    python -m benchmarks.threads --steps 20000 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine_description
from bsn_zoo.sweep.trial import package_pythonpath

SETTINGS = ("1", "2", "-1")


def child_env() -> dict[str, str]:
    """This process's environment without ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``, with the checkout importable."""
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = package_pythonpath()  # the checkout's packages, also when not installed
    return env


def timed(commands: list[list[str]], cwds: list[Path]) -> float:
    """Seconds until every command (started together, each in its folder) has finished; each must succeed."""
    start = time.perf_counter()
    processes = [subprocess.Popen(command, cwd=cwd, env=child_env(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
                 for command, cwd in zip(commands, cwds, strict=True)]
    for command, process in zip(commands, processes, strict=True):
        _, stderr = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{stderr}")
    return time.perf_counter() - start


def train_command(steps: int, threads: str, seed: int) -> list[str]:
    return [sys.executable, "-m", "bsn_zoo.train", "-n", str(steps), "--seed", str(seed), "--eval-freq", "0",
            "--save-freq", "0", "--no-progress-bar", "--num-threads", threads]


def measure(threads: str, steps: int, episodes: int, concurrent: int) -> tuple[float, float, float]:
    """(train alone, ``concurrent`` trainings side by side, evaluate) seconds with ``--num-threads threads``."""
    with tempfile.TemporaryDirectory() as scratch:
        folders = [Path(scratch) / f"run{index}" for index in range(concurrent)]
        for folder in folders:
            folder.mkdir()
        alone = timed([train_command(steps, threads, 0)], folders[:1])
        run = folders[0] / "logs" / "localpg" / "CartPole-v1_1"
        evaluate = timed([[sys.executable, "-m", "bsn_zoo.evaluate", str(run), "-n", str(episodes),
                           "--num-threads", threads]], folders[:1])
        together = timed([train_command(steps, threads, seed) for seed in range(concurrent)], folders)
    return alone, together, evaluate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000, help="training steps per run (default 20000)")
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes (default 10)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting; the table gives the fastest")
    parser.add_argument("--concurrent", type=int, default=2,
                        help="trainings side by side in the second measurement (default 2: two seeds at once)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/threads.md"))
    args = parser.parse_args(argv)
    rows = []
    for threads in SETTINGS:
        results = [measure(threads, args.steps, args.episodes, args.concurrent) for _ in range(args.repeats)]
        alone, together, evaluate = (min(result[index] for result in results) for index in range(3))
        rows.append((threads, alone, together, evaluate))
        print(f"--num-threads {threads}: train {alone:.1f} s alone, {together:.1f} s for {args.concurrent} at once, "
              f"evaluate {evaluate:.1f} s", flush=True)
    best_alone = min(row[1] for row in rows)
    best_together = min(row[2] for row in rows)
    command = " ".join(["python -m benchmarks.threads", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# Torch threads of the command-line tools",
        "",
        f"Command: `{command}`. Machine: {machine_description()}.",
        "",
        f"`train.py -n {args.steps}` (the default agent, no evaluation or checkpoints): alone (seed 0), and "
        f"{args.concurrent} runs side by side (seeds 0-{args.concurrent - 1}, as when training several seeds "
        f"or with other work on the machine; wall time until all finished); then `evaluate.py RUN -n "
        f"{args.episodes}`. Each in a fresh process without `OMP_NUM_THREADS`; fastest of {args.repeats} "
        "measurements. `-1` is torch's own choice (a thread per core).",
        "",
        f"| `--num-threads` | train alone (s) | / fastest | {args.concurrent} trainings at once (s) | / fastest "
        "| evaluate (s) |",
        "|---|---|---|---|---|---|",
        *(f"| {threads} | {alone:.1f} | {alone / best_alone:.2f} | {together:.1f} | {together / best_together:.2f} "
          f"| {evaluate:.1f} |" for threads, alone, together, evaluate in rows),
        "",
        f"Fastest alone: `--num-threads {min(rows, key=lambda row: row[1])[0]}`; fastest with {args.concurrent} "
        f"at once: `--num-threads {min(rows, key=lambda row: row[2])[0]}`.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
