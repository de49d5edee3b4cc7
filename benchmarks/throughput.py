"""Collection and training throughput (environment steps per second) versus the number of parallel environments.

One *collection step* steps every environment once and runs the policy on the batch of observations
(sampling actions), i.e. the work of an on-policy rollout without the update. A *training* column
times whole iterations (rollout and update) and divides the rollout's environment steps by the time.
Methods compared:

* ``sb3_ppo_collect``: SB3 PPO with ``MlpPolicy`` collecting a rollout on ``DummyVecEnv`` of the
  Gymnasium env (``PPO.collect_rollouts``, including SB3's buffer writes);
* ``sb3_ppo_train``: the same plus PPO's update (SB3 defaults: 10 epochs, minibatch 64), i.e. full
  training throughput (``PPO.learn`` of one rollout of ``max(2, 256 // n)`` steps per env, :data:`ROLLOUT_SAMPLES`);
* ``gym_bsn_collect``: ``DummyVecEnv`` of the Gymnasium env stepped with actions of a
  :class:`~policies.BinaryStochasticNetwork` policy (numpy <-> torch copies every step);
* ``torch_cpu_bsn_collect`` / ``torch_cuda_bsn_collect``: our batched torch env
  (:func:`envs.make_torch_vec_env`) stepped with ``step_tensor`` by the same BSN policy, all on one
  device (the CUDA column appears only when CUDA is available);
* ``sb3_ppo_zoo_train``: SB3 PPO full training with RL-zoo's CartPole-v1 hyperparameters
  (:data:`SB3_ZOO_CARTPOLE`: ``n_steps=32``, ``batch_size=256``, ``n_epochs=20``), the reference
  of the "LocalPG on the torch env trains 50x faster" target (RL-zoo runs 8 envs);
* ``localpg_gym_train``, ``localpg_torch_cpu_train``, ``localpg_torch_cuda_train``: LocalPG full
  training (``BsnPolicy`` of the same hidden sizes, :func:`localpg_settings`) on the Gymnasium env in
  ``DummyVecEnv`` (numpy path) and on our torch env on CPU / CUDA (tensor path: rollout, buffer and
  update on the env's device);
* ``localpg_torch_cpu_train_compiled``, ``localpg_torch_cuda_train_compiled``: the same with
  ``compile_update=True`` (the minibatch loss compiled by ``torch.compile``; compilation happens in
  the warm-up iteration and is not timed).

The BSN policy is ``BinaryStochasticNetwork(obs_dim, hidden)`` with a linear action head: a
categorical distribution for ``Discrete`` actions, a unit-variance Gaussian for ``Box`` actions.

Each cell runs warm-up steps, then steps until ``--seconds`` of wall time have passed (at least
``--min-steps`` steps), and reports ``num_envs * steps / elapsed``. New methods (e.g. a full-training
column for LocalPG) are one function added to :data:`METHODS`.

Usage (the committed results were made with the command recorded in the results file)::

    python -m benchmarks.throughput --num-envs 1 4 8 16 64 256 1024 4096 16384 --seconds 1.0
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from torch import nn

import envs
from agents import LocalPG
from benchmarks.common import load_tuned, machine_description
from bsn_zoo.config import HYPERPARAMS_DIR, RUN_DEFAULTS, LinearDecay
from bsn_zoo.plotting import agg_figure
from policies import BinaryStochasticNetwork

ROOT = Path(__file__).resolve().parents[1]

#: Samples per SB3 rollout (``n_steps = max(2, ROLLOUT_SAMPLES // num_envs)``). PPO's update cost per sample
#: does not depend on it (10 epochs, minibatch 64), so a short rollout keeps each timed call short.
ROLLOUT_SAMPLES = 256


def _constant_rates(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry's PPO arguments (its run settings left out) with each linear schedule replaced by its start."""
    return {
        key: value.start if isinstance(value, LinearDecay) else value
        for key, value in entry.items()
        if key not in RUN_DEFAULTS
    }


#: RL-zoo's PPO hyperparameters for CartPole-v1 (``hyperparams/ppo.yml``, RL Zoo's entry; it uses 8 envs).
#: The zoo decays learning rate and clip range linearly; constants here (the schedules' starts) cost the same
#: time per step.
SB3_ZOO_CARTPOLE: dict[str, Any] = _constant_rates(load_tuned(HYPERPARAMS_DIR / "ppo.yml", "CartPole-v1", "ppo"))

#: LocalPG's training columns: steps per env per rollout at least this (more for few envs, see localpg_settings).
LOCALPG_MIN_STEPS = 16
#: LocalPG's training columns: passes over each rollout.
LOCALPG_EPOCHS = 2
#: LocalPG's training columns: minibatches per epoch (minibatch = rollout / this).
LOCALPG_MINIBATCHES = 4

__all__ = [
    "LOCALPG_EPOCHS",
    "LOCALPG_MINIBATCHES",
    "LOCALPG_MIN_STEPS",
    "METHODS",
    "ROLLOUT_SAMPLES",
    "SB3_ZOO_CARTPOLE",
    "BenchmarkConfig",
    "BsnActor",
    "Method",
    "localpg_settings",
    "measure_throughput",
    "run_benchmark",
]


@dataclass(frozen=True)
class BenchmarkConfig:
    """Settings shared by every cell of the benchmark.

    Attributes:
        env_id: Gymnasium id with a torch implementation (a key of :data:`envs.TORCH_ENVS`).
        hidden_sizes: units of each BSN layer (and of each MLP layer of SB3's policy).
        seconds: wall-clock time measured per cell (> 0), after warm-up.
        min_steps: least number of collection steps measured per cell (>= 1).
        warmup_steps: collection steps run before timing (>= 0).
        seed: seed of environments and policies.
    """

    env_id: str = "CartPole-v1"
    hidden_sizes: tuple[int, ...] = (64, 64)
    seconds: float = 1.0
    min_steps: int = 3
    warmup_steps: int = 2
    seed: int = 0


class BsnActor(nn.Module):
    """A BSN policy for benchmarking: binary stochastic hidden layers and a linear action head.

    Args:
        observation_dim: size of the (flat) observation (> 0).
        action_space: ``Discrete`` (categorical head) or ``Box`` (Gaussian head with unit variance).
        hidden_sizes: units of each binary stochastic layer.
    """

    def __init__(self, observation_dim: int, action_space: spaces.Space, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.bsn = BinaryStochasticNetwork(observation_dim, hidden_sizes)
        if isinstance(action_space, spaces.Discrete):
            self.discrete = True
            out = int(action_space.n)
        elif isinstance(action_space, spaces.Box):
            self.discrete = False
            out = int(np.prod(action_space.shape))
            self.action_shape = action_space.shape
        else:
            raise ValueError(f"the benchmark supports Discrete and Box action spaces, got {action_space}")
        self.head = nn.Linear(hidden_sizes[-1], out)

    @torch.no_grad()
    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Sample one action per row of ``observations`` (batch, observation_dim)."""
        features = self.bsn.sample(observations.float())[-1]
        logits = self.head(features)
        if self.discrete:
            return torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(-1)
        return (logits + torch.randn_like(logits)).reshape(-1, *self.action_shape)


def _time_steps(
    call: Callable[[], None], env_steps_per_call: int, config: BenchmarkConfig, whole_rollouts: bool = False
) -> float:
    """Environment steps per second of repeated ``call()``, each stepping ``env_steps_per_call`` environments.

    ``whole_rollouts``: each call is a whole rollout (or training iteration), so warm up with one
    call and time at least one, instead of ``config.warmup_steps`` and ``config.min_steps``.
    """
    warmup, least = (1, 1) if whole_rollouts else (config.warmup_steps, config.min_steps)
    for _ in range(warmup):
        call()
    calls, start = 0, time.perf_counter()
    while calls < least or time.perf_counter() - start < config.seconds:
        call()
        calls += 1
    return env_steps_per_call * calls / (time.perf_counter() - start)


def _sb3_ppo(num_envs: int, config: BenchmarkConfig) -> PPO:
    venv = envs.make_vec_env(config.env_id, n_envs=num_envs, seed=config.seed)
    policy_kwargs = {"net_arch": list(config.hidden_sizes)}
    n_steps = max(2, ROLLOUT_SAMPLES // num_envs)
    return PPO("MlpPolicy", venv, n_steps=n_steps, policy_kwargs=policy_kwargs, seed=config.seed, device="cpu")


def sb3_ppo_collect(num_envs: int, config: BenchmarkConfig) -> float:
    """SB3 PPO (MlpPolicy) rollout collection on DummyVecEnv, steps per second."""
    model = _sb3_ppo(num_envs, config)
    _, callback = model._setup_learn(total_timesteps=1, callback=None)

    def one_rollout() -> None:
        model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)

    return _time_steps(one_rollout, num_envs * model.n_steps, config, whole_rollouts=True)


def sb3_ppo_train(num_envs: int, config: BenchmarkConfig) -> float:
    """SB3 PPO (MlpPolicy) full training (one rollout + update per call) on DummyVecEnv, steps per second."""
    model = _sb3_ppo(num_envs, config)
    rollout = num_envs * model.n_steps

    def one_iteration() -> None:
        model.learn(total_timesteps=rollout, reset_num_timesteps=False)

    return _time_steps(one_iteration, rollout, config, whole_rollouts=True)


def sb3_ppo_zoo_train(num_envs: int, config: BenchmarkConfig) -> float:
    """SB3 PPO (MlpPolicy) full training with RL-zoo's CartPole settings on DummyVecEnv, steps per second."""
    venv = envs.make_vec_env(config.env_id, n_envs=num_envs, seed=config.seed)
    policy_kwargs = {"net_arch": list(config.hidden_sizes)}
    model = PPO("MlpPolicy", venv, policy_kwargs=policy_kwargs, seed=config.seed, device="cpu", **SB3_ZOO_CARTPOLE)
    rollout = num_envs * model.n_steps

    def one_iteration() -> None:
        model.learn(total_timesteps=rollout, reset_num_timesteps=False)

    return _time_steps(one_iteration, rollout, config, whole_rollouts=True)


def localpg_settings(num_envs: int) -> dict[str, int]:
    """LocalPG's settings in the training columns for ``num_envs`` environments.

    ``n_steps = max(LOCALPG_MIN_STEPS, ROLLOUT_SAMPLES // num_envs)`` (rollouts of at least 256 rows),
    ``batch_size = rollout // LOCALPG_MINIBATCHES``, ``n_epochs = LOCALPG_EPOCHS``.
    """
    n_steps = max(LOCALPG_MIN_STEPS, ROLLOUT_SAMPLES // num_envs)
    batch_size = max(2, num_envs * n_steps // LOCALPG_MINIBATCHES)
    return {"n_steps": n_steps, "batch_size": batch_size, "n_epochs": LOCALPG_EPOCHS}


def _localpg_train(
    backend: str, device: str, compile_update: bool = False
) -> Callable[[int, BenchmarkConfig], float]:
    def measure(num_envs: int, config: BenchmarkConfig) -> float:
        venv = envs.make_vec_env(config.env_id, n_envs=num_envs, seed=config.seed, backend=backend, device=device)
        policy_kwargs = {"net_arch": list(config.hidden_sizes)}
        settings = localpg_settings(num_envs)
        model: LocalPG = LocalPG(
            "BsnPolicy",
            venv,
            seed=config.seed,
            device=device,
            policy_kwargs=policy_kwargs,
            compile_update=compile_update,
            **settings,
        )
        rollout = num_envs * model.n_steps

        def one_iteration() -> None:
            model.learn(total_timesteps=rollout, reset_num_timesteps=False)
            if model.device.type == "cuda":
                torch.cuda.synchronize(model.device)

        return _time_steps(one_iteration, rollout, config, whole_rollouts=True)

    where = "the Gymnasium env in DummyVecEnv" if backend == "gymnasium" else f"our torch env on {device}"
    how = ", update compiled (compile_update=True; the warm-up iteration compiles)" if compile_update else ""
    measure.__doc__ = f"LocalPG full training (rollout + update{how}) on {where}, steps per second."
    return measure


def gym_bsn_collect(num_envs: int, config: BenchmarkConfig) -> float:
    """Gymnasium env in SB3's DummyVecEnv, actions from the BSN policy on CPU, steps per second."""
    venv = envs.make_vec_env(config.env_id, n_envs=num_envs, seed=config.seed)
    torch.manual_seed(config.seed)
    actor = BsnActor(int(np.prod(venv.observation_space.shape)), venv.action_space, config.hidden_sizes)
    observations = venv.reset()

    def one_step() -> None:
        nonlocal observations
        actions = actor(torch.as_tensor(observations)).numpy()
        observations, _, _, _ = venv.step(actions)

    return _time_steps(one_step, num_envs, config)


def _torch_bsn_collect(device: str) -> Callable[[int, BenchmarkConfig], float]:
    def measure(num_envs: int, config: BenchmarkConfig) -> float:
        env = envs.make_torch_vec_env(config.env_id, num_envs, device=device, seed=config.seed)
        torch.manual_seed(config.seed)
        actor = BsnActor(int(np.prod(env.observation_space.shape)), env.action_space, config.hidden_sizes)
        actor.to(env.device)
        observations = env.reset_tensor()

        def one_step() -> None:
            nonlocal observations
            observations = env.step_tensor(actor(observations)).obs

        def synchronised_step() -> None:
            one_step()
            if env.device.type == "cuda":
                torch.cuda.synchronize(env.device)

        return _time_steps(synchronised_step, num_envs, config)

    measure.__doc__ = (
        f"Our torch env on {device}, stepped with step_tensor by the BSN policy on {device}, steps per second."
    )
    return measure


@dataclass(frozen=True)
class Method:
    """One column of the benchmark.

    Attributes:
        label: column title.
        measure: ``measure(num_envs, config) -> steps per second``.
        max_envs: largest number of environments measured (larger cells are left empty).
        available: whether the method can run on this machine.
    """

    label: str
    measure: Callable[[int, BenchmarkConfig], float]
    max_envs: int
    available: bool = True


#: The benchmark's columns, by name.
METHODS: dict[str, Method] = {
    "sb3_ppo_collect": Method("SB3 PPO collect (DummyVecEnv)", sb3_ppo_collect, max_envs=4096),
    "sb3_ppo_train": Method("SB3 PPO train (DummyVecEnv)", sb3_ppo_train, max_envs=4096),
    "sb3_ppo_zoo_train": Method("SB3 PPO train, RL-zoo settings (DummyVecEnv)", sb3_ppo_zoo_train, max_envs=256),
    "gym_bsn_collect": Method("BSN collect, Gymnasium (DummyVecEnv)", gym_bsn_collect, max_envs=4096),
    "torch_cpu_bsn_collect": Method("BSN collect, torch env CPU", _torch_bsn_collect("cpu"), max_envs=1 << 20),
    "torch_cuda_bsn_collect": Method(
        "BSN collect, torch env CUDA", _torch_bsn_collect("cuda"), max_envs=1 << 22, available=torch.cuda.is_available()
    ),
    "localpg_gym_train": Method("LocalPG train, Gymnasium (DummyVecEnv)", _localpg_train("gymnasium", "cpu"), 4096),
    "localpg_torch_cpu_train": Method("LocalPG train, torch env CPU", _localpg_train("torch", "cpu"), max_envs=16384),
    "localpg_torch_cuda_train": Method(
        "LocalPG train, torch env CUDA",
        _localpg_train("torch", "cuda"),
        max_envs=1 << 20,
        available=torch.cuda.is_available(),
    ),
    "localpg_torch_cpu_train_compiled": Method(
        "LocalPG train (compile_update), torch env CPU", _localpg_train("torch", "cpu", True), max_envs=16384
    ),
    "localpg_torch_cuda_train_compiled": Method(
        "LocalPG train (compile_update), torch env CUDA",
        _localpg_train("torch", "cuda", True),
        max_envs=1 << 20,
        available=torch.cuda.is_available(),
    ),
}


def measure_throughput(method: Method, num_envs: int, config: BenchmarkConfig) -> float | None:
    """Steps per second of ``method`` with ``num_envs`` environments (None if the cell is skipped)."""
    if not method.available or num_envs > method.max_envs:
        return None
    return method.measure(num_envs, config)


def run_benchmark(
    methods: list[str],
    env_counts: list[int],
    config: BenchmarkConfig,
    log: Callable[[str], None] = print,
    repeats: int = 1,
) -> dict[str, dict[int, float | None]]:
    """Measure every (method, number of environments) cell; ``{method: {num_envs: steps/s or None}}``.

    ``repeats`` (>= 1) passes over all cells, each cell reported as the median of its passes: a change
    of load on a shared machine then shifts one pass of every column instead of a few columns.
    """
    measured: dict[str, dict[int, list[float | None]]] = {name: {n: [] for n in env_counts} for name in methods}
    for attempt in range(repeats):
        for name in methods:
            for num_envs in env_counts:
                value = measure_throughput(METHODS[name], num_envs, config)
                measured[name][num_envs].append(value)
                log(
                    f"[{attempt + 1}/{repeats}] {name:>24} n={num_envs:<6} "
                    + ("skipped" if value is None else f"{value:,.0f} steps/s")
                )
    return {
        name: {
            n: None if any(v is None for v in values) else float(np.median(values))  # type: ignore[arg-type]
            for n, values in cells.items()
        }
        for name, cells in measured.items()
    }


def write_markdown(
    path: Path,
    results: dict[str, dict[int, float | None]],
    env_counts: list[int],
    config: BenchmarkConfig,
    command: str,
    repeats: int = 1,
) -> None:
    """Write the results table with the command and the machine that produced it.

    Methods without any measured cell (e.g. CUDA on a machine without it) get no column but a note.
    """
    names = [name for name in results if any(value is not None for value in results[name].values())]
    unmeasured = [name for name in results if name not in names]
    lines = [
        f"# Collection and training throughput on {config.env_id} (environment steps per second)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine_description()}.",
        "",
        f"BSN policy: `BinaryStochasticNetwork({list(config.hidden_sizes)})` with a linear action head, batched "
        "sampling; SB3 PPO's MlpPolicy has the same hidden sizes. Each cell: steps per second over "
        f">= {config.seconds} s of wall time after {config.warmup_steps} warm-up steps (SB3 and LocalPG columns: "
        "one warm-up rollout or training iteration)"
        + (f", the median of {repeats} passes over all cells" if repeats > 1 else "")
        + ". The machine may be shared with other jobs (see its load "
        "average): compare columns within one run. Empty cell: more environments than the method is run with.",
        "",
        "Training columns (rollout + update, steps of the rollout per second): SB3 PPO train: SB3 defaults "
        f"(10 epochs, minibatch 64, `n_steps = max(2, {ROLLOUT_SAMPLES} // num_envs)`); SB3 PPO RL-zoo settings: "
        + ", ".join(f"`{key}={value}`" for key, value in SB3_ZOO_CARTPOLE.items())
        + "; LocalPG train: `BsnPolicy` with BSN layers and critic of the same sizes, "
        f"`n_steps = max({LOCALPG_MIN_STEPS}, {ROLLOUT_SAMPLES} // num_envs)`, `batch_size = rollout / "
        f"{LOCALPG_MINIBATCHES}`, `n_epochs = {LOCALPG_EPOCHS}`, other arguments at their defaults.",
        "",
        *_target_lines(results),
        *(
            [f"Not measured: {', '.join(METHODS[name].label for name in unmeasured)} (unavailable here).", ""]
            if unmeasured
            else []
        ),
        "| num_envs | " + " | ".join(METHODS[name].label for name in names) + " |",
        "|---:|" + "---:|" * len(names),
    ]
    for num_envs in env_counts:
        cells = [results[name][num_envs] for name in names]
        lines.append(f"| {num_envs} | " + " | ".join("" if c is None else f"{c:,.0f}" for c in cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def _target_lines(results: dict[str, dict[int, float | None]]) -> list[str]:
    """The speed-up of LocalPG's best torch-env training cell over SB3 PPO (RL-zoo settings, 8 envs), if measured."""
    reference = results.get("sb3_ppo_zoo_train", {}).get(8)
    lines = []
    for name in (
        "localpg_torch_cpu_train",
        "localpg_torch_cpu_train_compiled",
        "localpg_torch_cuda_train",
        "localpg_torch_cuda_train_compiled",
    ):
        cells = {n: v for n, v in results.get(name, {}).items() if v is not None}
        if reference is None or not cells:
            continue
        best = max(cells, key=lambda n: cells[n])
        lines += [
            f"{METHODS[name].label}, best cell ({best} envs): {cells[best]:,.0f} steps/s = "
            f"{cells[best] / reference:.1f} x SB3 PPO with RL-zoo settings on 8 envs ({reference:,.0f} steps/s).",
            "",
        ]
    return lines


def write_plot(path: Path, results: dict[str, dict[int, float | None]], config: BenchmarkConfig) -> None:
    """Log-log plot of steps per second against the number of environments, one line per method."""
    figure = agg_figure(7, 4.5)
    axes = figure.add_subplot()
    for name, cells in results.items():
        points = [(n, v) for n, v in cells.items() if v is not None]
        if points:
            style = "--" if "_train" in name else "-"  # training columns dashed
            axes.plot(*zip(*points, strict=True), style, marker="o", label=METHODS[name].label)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("number of environments")
    axes.set_ylabel("environment steps per second")
    axes.set_title(f"Collection and training throughput, {config.env_id}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=120)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="CartPole-v1", help="Gymnasium id with a torch implementation")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 4, 8, 16, 64, 256, 1024, 4096, 16384])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--seconds", type=float, default=1.0, help="measured wall time per cell (> 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (>= 1)")
    parser.add_argument("--repeats", type=int, default=1, help="passes over all cells; each cell's median (>= 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "throughput", help="path stem")
    args = parser.parse_args(argv)
    envs.check_env_id(args.env, envs.TORCH_ENVS, "environment id for the torch backend")
    if not args.seconds > 0 or min(args.threads, args.repeats, *args.num_envs) < 1:
        parser.error("--seconds must be > 0, --threads and --repeats >= 1 and every --num-envs >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = BenchmarkConfig(args.env, tuple(args.hidden_sizes), args.seconds, seed=args.seed)
    env_counts = sorted(set(args.num_envs))
    start = time.perf_counter()
    results = run_benchmark(args.methods, env_counts, config, repeats=args.repeats)
    command = "python -m benchmarks.throughput " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_markdown(args.out.with_suffix(".md"), results, env_counts, config, command, args.repeats)
    write_plot(args.out.with_suffix(".png"), results, config)
    print(f"wrote {args.out.with_suffix('.md')} and .png in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
