"""Wall time for LocalPG to solve CartPole-v1 on our batched torch environment.

Training runs LocalPG (``BsnPolicy``) on :func:`envs.make_torch_vec_env` with every tensor on one
device (``--device cpu`` or ``cuda``). Every ``--eval-every`` updates the policy is evaluated on a
separate torch CartPole with deterministic actions (hidden units fire iff ``p > 0.5``, the most
probable action): ``--eval-episodes`` parallel episodes of at most 500 steps, return = steps until
each episode's first end. CartPole counts as solved at the first evaluation whose mean return is
``>= --threshold`` (475, Gymnasium's reward threshold for ``CartPole-v1``).

Reported per seed: training wall time until solved (evaluation time excluded, listed separately),
environment steps, updates, and the evaluations' returns. With CUDA the clock reads after a device
synchronisation, so the times include all queued work.

The defaults (256 envs, learning rate ``2e-2``) solve in the fewest updates among the settings swept
in ``benchmarks/results/tuning_log.md`` ("Solve-time settings for the torch env": 64 to 1024 envs,
learning rates 5e-3 to 3e-2, seeds 0-9): a GPU pays per update, not per sample, and on 2 CPU cores
they are also faster than the earlier 64 envs and ``5e-3`` (median 2.5 s against 3.9 s).

Usage (one command; the committed results name theirs)::

    python -m benchmarks.solve_time --device cpu --seeds 0 1 2 3 4
    python -m benchmarks.solve_time --device cuda --seeds 0 1 2 3 4 --out benchmarks/results/solve_time_cuda
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.callbacks import BaseCallback

import envs
from agents import LocalPG
from benchmarks.common import machine_description
from policies import BinaryStochasticPolicy

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["SolveConfig", "SolveResult", "SolvedCallback", "deterministic_return", "parse_args", "solve"]

#: Gymnasium's reward threshold of CartPole-v1.
CARTPOLE_THRESHOLD = 475.0


@dataclass(frozen=True)
class SolveConfig:
    """One solve-time run's settings.

    Attributes:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``: where env, rollout, buffer and update run.
        num_envs: parallel training environments (>= 1).
        n_steps: steps per environment per rollout (>= 1).
        batch_fraction: minibatch size as a fraction of the rollout ``num_envs * n_steps`` (in (0, 1]).
        n_epochs: passes over each rollout (>= 1).
        learning_rate: Adam's learning rate (> 0).
        gamma: discount factor in [0, 1].
        gae_lambda: GAE's lambda in [0, 1].
        net_arch: BSN layer sizes of the actor (the critic keeps SB3's ``[64, 64]``).
        bsn_init_gain: gain of the BSN layers' orthogonal initialisation (> 0).
        eval_every: updates between evaluations (>= 1).
        eval_episodes: parallel deterministic evaluation episodes (>= 1).
        threshold: mean evaluation return that counts as solved.
        max_steps: give up after this many training environment steps (>= 1).
        compile_update: ``LocalPG(compile_update=True)``; its compilation (in the first updates) counts
            as training time.
    """

    device: str = "cpu"
    num_envs: int = 256
    n_steps: int = 16
    batch_fraction: float = 0.25
    n_epochs: int = 4
    learning_rate: float = 2e-2
    gamma: float = 0.99
    gae_lambda: float = 0.95
    net_arch: tuple[int, ...] = (64, 64)
    bsn_init_gain: float = 1.0
    eval_every: int = 5
    eval_episodes: int = 32
    threshold: float = CARTPOLE_THRESHOLD
    max_steps: int = 3_000_000
    compile_update: bool = False

    @property
    def rollout(self) -> int:
        """Rows of one rollout: ``num_envs * n_steps``."""
        return self.num_envs * self.n_steps

    @property
    def batch_size(self) -> int:
        """Minibatch rows (at least 2)."""
        return max(2, int(self.rollout * self.batch_fraction))


@dataclass
class SolveResult:
    """Outcome of one seed.

    Attributes:
        seed: the run's seed.
        solved: whether an evaluation reached the threshold within ``max_steps``.
        train_seconds: wall time spent training (rollouts and updates) until solved or given up.
        eval_seconds: wall time spent in evaluations.
        steps: training environment steps taken.
        updates: rollouts collected and trained on.
        returns: mean evaluation return of every evaluation, in order.
    """

    seed: int
    solved: bool = False
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    steps: int = 0
    updates: int = 0
    returns: list[float] = field(default_factory=list)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def deterministic_return(
    policy: BinaryStochasticPolicy, episodes: int, device: torch.device | str, seed: int
) -> torch.Tensor:
    """Mean return of ``episodes`` parallel deterministic CartPole-v1 episodes (a 0-dim tensor on ``device``).

    Each episode counts its rewards until it first ends (terminated or truncated at 500 steps); the
    env's automatic resets after that are ignored. No host synchronisation.

    Args:
        policy: the policy; acts with deterministic hidden units and its most probable action.
        episodes: number of parallel episodes (>= 1).
        device: where the evaluation env runs (the policy's device).
        seed: seed of the evaluation env's initial states.
    """
    env = envs.make_torch_vec_env("CartPole-v1", episodes, device=device, seed=seed)
    obs = env.reset_tensor()
    alive = torch.ones(episodes, device=env.device, dtype=torch.bool)
    returns = torch.zeros(episodes, device=env.device)
    for _ in range(env.max_episode_steps):
        actions = policy.get_distribution(obs, deterministic=True).get_actions(deterministic=True)
        obs, rewards, terminated, truncated = env.step_tensor(actions)
        returns += rewards * alive
        alive &= ~(terminated | truncated)
    return returns.mean()


class SolvedCallback(BaseCallback):
    """Evaluate every ``eval_every`` updates (at the start of a rollout) and stop training once solved.

    Args:
        config: the run's settings (evaluation cadence, episodes, threshold).
        result: filled in place: times, steps, updates, returns, ``solved``.
        eval_seed: seed of the evaluation episodes' initial states (fixed over the run).
    """

    def __init__(self, config: SolveConfig, result: SolveResult, eval_seed: int) -> None:
        super().__init__()
        self.config = config
        self.result = result
        self.eval_seed = eval_seed
        self.device = torch.device(config.device)
        self.rollouts = 0
        self.clock = 0.0

    def _on_training_start(self) -> None:
        _synchronise(self.device)
        self.clock = time.perf_counter()

    def _on_rollout_start(self) -> None:
        updates = self.rollouts  # updates done so far: one per finished rollout
        self.rollouts += 1
        if updates == 0 or updates % self.config.eval_every:
            return
        _synchronise(self.device)
        now = time.perf_counter()
        self.result.train_seconds += now - self.clock
        mean_return = float(
            deterministic_return(self.model.policy, self.config.eval_episodes, self.device, self.eval_seed)
        )
        self.result.returns.append(mean_return)
        self.result.updates = updates
        self.result.steps = self.num_timesteps
        self.result.solved = mean_return >= self.config.threshold
        self.clock = time.perf_counter()
        self.result.eval_seconds += self.clock - now

    def _on_step(self) -> bool:
        return not self.result.solved

    def _on_training_end(self) -> None:
        if not self.result.solved:
            _synchronise(self.device)
            self.result.train_seconds += time.perf_counter() - self.clock
            self.result.steps = self.num_timesteps
            self.result.updates = self.rollouts


def make_model(config: SolveConfig, seed: int) -> LocalPG:
    """LocalPG on a torch CartPole-v1 with ``config``'s settings, everything on ``config.device``."""
    env = envs.make_torch_vec_env("CartPole-v1", config.num_envs, device=config.device, seed=seed)
    return LocalPG(
        "BsnPolicy",
        env,
        learning_rate=config.learning_rate,
        n_steps=config.n_steps,
        batch_size=config.batch_size,
        n_epochs=config.n_epochs,
        gamma=config.gamma,
        gae_lambda=config.gae_lambda,
        seed=seed,
        device=config.device,
        policy_kwargs={"net_arch": list(config.net_arch), "bsn_init_gain": config.bsn_init_gain},
        compile_update=config.compile_update,
    )


def solve(config: SolveConfig, seed: int) -> SolveResult:
    """Train until solved (or ``config.max_steps``) and return the timings; model building is not timed."""
    result = SolveResult(seed)
    model = make_model(config, seed)
    model.learn(config.max_steps, callback=SolvedCallback(config, result, eval_seed=10_000 + seed))
    return result


def write_markdown(path: Path, results: list[SolveResult], config: SolveConfig, command: str) -> None:
    """Write the per-seed table, the settings and the command that produced them."""
    settings: dict[str, Any] = {
        "num_envs": config.num_envs,
        "n_steps": config.n_steps,
        "batch_size": config.batch_size,
        "n_epochs": config.n_epochs,
        "learning_rate": config.learning_rate,
        "gamma": config.gamma,
        "gae_lambda": config.gae_lambda,
        "net_arch": list(config.net_arch),
        "bsn_init_gain": config.bsn_init_gain,
        "compile_update": config.compile_update,
    }
    lines = [
        f"# CartPole-v1 solved: LocalPG on the torch env, device {config.device}",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine_description(config.device)}.",
        "",
        "LocalPG settings: " + ", ".join(f"`{key}={value}`" for key, value in settings.items()) + ". "
        f"Evaluation every {config.eval_every} updates: {config.eval_episodes} parallel deterministic episodes "
        f"(max 500 steps); solved when their mean return is >= {config.threshold:g}. Training time excludes "
        "evaluations and model construction. The machine may be shared (see its load average).",
        "",
        "| seed | solved | train seconds | env steps | updates | eval seconds | evaluation returns |",
        "|---:|:---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        returns = ", ".join(f"{value:.0f}" for value in r.returns)
        lines.append(
            f"| {r.seed} | {'yes' if r.solved else 'no'} | {r.train_seconds:.1f} | {r.steps:,} | {r.updates} | "
            f"{r.eval_seconds:.1f} | {returns} |"
        )
    solved = [r for r in results if r.solved]
    if solved:
        seconds = sorted(r.train_seconds for r in solved)
        steps = sorted(r.steps for r in solved)
        lines += [
            "",
            f"Solved {len(solved)}/{len(results)} seeds; median train seconds {seconds[len(seconds) // 2]:.1f}, "
            f"median env steps {steps[len(steps) // 2]:,}.",
        ]
    if config.device == "cpu":
        lines += [
            "",
            "On a GPU (target: solved in < 15 s on an H100), the same script runs unchanged: "
            "`python -m benchmarks.solve_time --device cuda --seeds 0 1 2 3 4 "
            "--out benchmarks/results/solve_time_cuda`.",
        ]
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = SolveConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=defaults.device, help="cpu, cuda or cuda:N")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-envs", type=int, default=defaults.num_envs)
    parser.add_argument("--n-steps", type=int, default=defaults.n_steps)
    parser.add_argument("--batch-fraction", type=float, default=defaults.batch_fraction)
    parser.add_argument("--n-epochs", type=int, default=defaults.n_epochs)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--gamma", type=float, default=defaults.gamma)
    parser.add_argument("--gae-lambda", type=float, default=defaults.gae_lambda)
    parser.add_argument("--net-arch", type=int, nargs="+", default=list(defaults.net_arch))
    parser.add_argument("--bsn-init-gain", type=float, default=defaults.bsn_init_gain)
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--eval-episodes", type=int, default=defaults.eval_episodes)
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (>= 1)")
    parser.add_argument("--compile-update", action="store_true", help="LocalPG(compile_update=True), timed")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "solve_time", help="path stem")
    args = parser.parse_args(argv)
    positive = ["num_envs", "n_steps", "n_epochs", "eval_every", "eval_episodes", "max_steps", "threads"]
    bad = [name for name in positive if getattr(args, name) < 1]
    if bad:
        parser.error(f"{', '.join('--' + name.replace('_', '-') for name in bad)} must be >= 1")
    if not 0 < args.batch_fraction <= 1:
        parser.error(f"--batch-fraction must be in (0, 1], got {args.batch_fraction}")
    try:
        envs.torch_vec_env.resolve_device(args.device)
    except (ValueError, RuntimeError) as error:
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = SolveConfig(
        device=args.device,
        num_envs=args.num_envs,
        n_steps=args.n_steps,
        batch_fraction=args.batch_fraction,
        n_epochs=args.n_epochs,
        learning_rate=args.learning_rate,
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        net_arch=tuple(args.net_arch),
        bsn_init_gain=args.bsn_init_gain,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        max_steps=args.max_steps,
        compile_update=args.compile_update,
    )
    results = []
    for seed in args.seeds:
        result = solve(config, seed)
        results.append(result)
        print(
            f"seed {seed}: solved={result.solved} train {result.train_seconds:.1f} s, {result.steps:,} steps, "
            f"{result.updates} updates, eval returns {[round(r) for r in result.returns]}",
            flush=True,
        )
    command = "python -m benchmarks.solve_time " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_markdown(args.out.with_suffix(".md"), results, config, command)
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
