"""Where LocalPG's training time goes on a torch environment: rollout collection versus update, and top ops.

Builds LocalPG (``BsnPolicy``) on :func:`envs.make_torch_vec_env` with the throughput benchmark's
training settings (:func:`benchmarks.throughput.localpg_settings`, unless overridden), runs one warm-up
iteration, then times ``collect_rollouts`` and ``train`` separately (minimum over ``--repeats``
calls each, interleaved) and profiles one call of each with ``torch.profiler`` (ops sorted by
self time). With CUDA, every timed call ends with a device synchronisation.

Usage::

    python -m benchmarks.profile_localpg --num-envs 4096 --device cpu
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import envs
from agents import LocalPG
from benchmarks.common import machine_description
from benchmarks.throughput import localpg_settings

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["profile_phases", "time_phases"]


def _timed(call: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _phases(model: LocalPG) -> dict[str, Callable[[], object]]:
    """The two phases of a training iteration as calls: one rollout and one update."""
    _, callback = model._setup_learn(total_timesteps=10**12, reset_num_timesteps=False)
    return {
        "collect_rollouts": lambda: model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps),
        "train": model.train,
    }


def time_phases(model: LocalPG, repeats: int) -> dict[str, float]:
    """Least seconds of each phase over ``repeats`` interleaved calls (rollout, update, rollout, ...)."""
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, call in _phases(model).items():
            times.setdefault(name, []).append(_timed(call, model.device))
    return {name: min(values) for name, values in times.items()}


def profile_phases(model: LocalPG, rows: int) -> dict[str, str]:
    """``torch.profiler`` tables (top ``rows`` ops by self time) of one rollout and one update."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if model.device.type == "cuda" else [])
    sort_by = "self_device_time_total" if model.device.type == "cuda" else "self_cpu_time_total"
    tables = {}
    for name, call in _phases(model).items():
        with profile(activities=activities) as profiler:
            _timed(call, model.device)
        tables[name] = profiler.key_averages().table(sort_by=sort_by, row_limit=rows)
    return tables


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="CartPole-v1", help="a key of envs.TORCH_ENVS")
    parser.add_argument("--num-envs", type=int, default=4096)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--n-epochs", type=int, default=None, help="default: the throughput benchmark's")
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of each phase (>= 1)")
    parser.add_argument("--rows", type=int, default=25, help="ops listed per profile (>= 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (>= 1)")
    parser.add_argument("--compile-update", action="store_true", help="LocalPG(compile_update=True)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "localpg_profile.md")
    args = parser.parse_args(argv)
    envs.check_env_id(args.env, envs.TORCH_ENVS, "environment id for the torch backend")
    epochs_ok = args.n_epochs is None or args.n_epochs >= 1
    if min(args.num_envs, args.repeats, args.rows, args.threads) < 1 or not epochs_ok:
        parser.error("--num-envs, --repeats, --rows, --threads and --n-epochs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = localpg_settings(args.num_envs)
    if args.n_epochs is not None:
        settings["n_epochs"] = args.n_epochs
    env = envs.make_torch_vec_env(args.env, args.num_envs, device=args.device, seed=0)
    policy_kwargs = {"net_arch": list(args.hidden_sizes)}
    model = LocalPG(
        "BsnPolicy",
        env,
        seed=0,
        device=args.device,
        policy_kwargs=policy_kwargs,
        compile_update=args.compile_update,
        **settings,
    )
    rollout = args.num_envs * model.n_steps
    model.learn(rollout)  # warm-up iteration (compiles, with --compile-update)
    seconds = time_phases(model, args.repeats)
    tables = profile_phases(model, args.rows)
    total = sum(seconds.values())
    command = "python -m benchmarks.profile_localpg " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    lines = [
        f"# LocalPG on the torch {args.env}: collection versus update ({args.device})",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine_description()}.",
        "",
        f"Settings: {args.num_envs} envs, " + ", ".join(f"`{k}={v}`" for k, v in settings.items()) + f", "
        f"`net_arch={list(args.hidden_sizes)}`, `compile_update={args.compile_update}`; rollout of {rollout:,} "
        f"steps. Times: least of {args.repeats} interleaved calls each, after one warm-up iteration.",
        "",
        "| phase | seconds per iteration | share | rollout steps per second |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {t:.3f} | {t / total:.0%} | {rollout / t:,.0f} |" for name, t in seconds.items()),
        f"| both | {total:.3f} | 100% | {rollout / total:,.0f} |",
    ]
    for name, table in tables.items():
        lines += ["", f"## torch.profiler, one `{name}` call", "", "```", table.rstrip(), "```"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:14]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
