"""Inference cost of a trained BSN policy: SB3's ``MlpPolicy.predict`` against our policy's ``predict``,
ONNX Runtime and the NumPy module, side by side in one run; and the firing sparsity on real rollouts.

LocalPG trains the tuned CartPole-v1 entry (``hyperparams/localpg.yml``) until its 20-episode training mean
reaches 475, then its deterministic policy is exported (:mod:`deploy`). SB3's PPO ``MlpPolicy`` (RL Zoo's
CartPole-v1 network, two tanh layers of 64) is the reference; its latency does not depend on training.
Latency: median over 7 repeats of the mean time of 1000 calls on one observation (``predict`` of one
observation; ONNX Runtime ``run`` on a (1, 4) array, one intra-op thread; NumPy ``act``, the per-observation
path of :mod:`deploy.numpy_policy`). Throughput: a 1024-row batch, median of 7 repeats of 20 calls.
Sparsity: the fraction of each layer's units that fire on 10,000 observations of the policy's own
deterministic rollouts; a layer reading bits adds ``fired x units_out`` weights instead of computing
``units_in x units_out`` multiply-adds.

Usage (the committed table's command is written at its top)::

    python -m benchmarks.inference
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from stable_baselines3 import PPO

from benchmarks.common import ThresholdCallback
from benchmarks.compare_sb3 import build
from deploy import NumpyPolicy, export_numpy, export_onnx
from envs import make_vec_env

ENV_ID = "CartPole-v1"


def per_call_seconds(call: Callable[[], object], calls: int, repeats: int = 7) -> float:
    """Median over ``repeats`` of the mean wall time of ``calls`` calls (after one warm-up call)."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def rollout_observations(model, rows: int, seed: int) -> np.ndarray:
    """``rows`` observations of the model's deterministic rollouts."""
    env = make_vec_env(ENV_ID, 8, seed)
    obs, collected = env.reset(), []
    while sum(len(batch) for batch in collected) < rows:
        actions, _ = model.predict(obs, deterministic=True)
        obs, _rewards, _dones, _infos = env.step(actions)
        collected.append(obs)
    return np.concatenate(collected)[:rows].astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="training seed of LocalPG (>= 0)")
    parser.add_argument("--out", default="benchmarks/results/inference", help="output path without extension")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    command = " ".join(["python -m benchmarks.inference", *(sys.argv[1:] if argv is None else argv)])
    model = build("localpg", ENV_ID, args.seed)
    solved = ThresholdCallback(475.0, window=20)
    model.learn(200_000, callback=solved)
    reference = PPO("MlpPolicy", make_vec_env(ENV_ID, 8, args.seed), seed=args.seed)
    with tempfile.TemporaryDirectory() as folder:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(export_onnx(model, Path(folder) / "p.onnx")), options)
        numpy_policy = NumpyPolicy(export_numpy(model, Path(folder) / "p.npz"))
    observations = rollout_observations(model, 10_000, args.seed + 10_000)
    one, batch = observations[0], observations[:1024]
    same = (session.run(None, {"obs": observations})[0] == model.predict(observations, deterministic=True)[0]).all()
    paths: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "SB3 PPO `MlpPolicy.predict` (2 x 64 tanh)": (
            lambda: reference.predict(one, deterministic=True),
            lambda: reference.predict(batch, deterministic=True),
        ),
        "BSN policy `predict` (torch)": (
            lambda: model.predict(one, deterministic=True),
            lambda: model.predict(batch, deterministic=True),
        ),
        "ONNX Runtime": (
            lambda: session.run(None, {"obs": one[None]}),
            lambda: session.run(None, {"obs": batch}),
        ),
        "NumPy module (`act` at batch 1, `predict` at 1024)": (
            lambda: numpy_policy.act(one),
            lambda: numpy_policy.predict(batch),
        ),
    }
    timings = {
        name: (per_call_seconds(single, 1000), per_call_seconds(many, 20)) for name, (single, many) in paths.items()
    }
    base_latency, base_batch = next(iter(timings.values()))
    rows = [
        f"| {name} | {latency * 1e6:.1f} | {base_latency / latency:.1f}x | {1024 / seconds:,.0f} | "
        f"{base_batch / seconds:.1f}x |"
        for name, (latency, seconds) in timings.items()
    ]
    bits = numpy_policy.hidden_units(observations)
    outputs = [*(w.shape[0] for w in numpy_policy.weights[1:]), numpy_policy.head_weight.shape[0]]
    sparsity = []
    for index, (layer_bits, units_out) in enumerate(zip(bits, outputs, strict=True)):
        rate = float(layer_bits.mean())
        units = layer_bits.shape[1]
        reader = f"layer {index + 1}" if index + 1 < len(bits) else "the action head"
        sparsity.append(
            f"| {index} | {units} | {rate:.3f} | {reader}: {rate * units * units_out:.0f} additions instead of "
            f"{units * units_out} multiply-adds ({1 - rate:.0%} fewer operations, no multiplication) |"
        )
    text = "\n".join(
        [
            "# Inference cost of a trained BSN policy (CartPole-v1)",
            "",
            f"Command: `{command}` (2-core machine, one torch / ONNX Runtime thread). LocalPG's tuned entry trained "
            f"until its training mean reached 475 ({solved.solved_at} steps, seed {args.seed}); "
            f"ONNX actions identical to `predict` on 10,000 rollout observations: {bool(same)}.",
            "",
            "| path | latency at batch 1 (µs) | speed-up over SB3 `MlpPolicy.predict` | actions/s at batch 1024 "
            "| speed-up |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "Firing on 10,000 observations of the policy's deterministic rollouts:",
            "",
            "| BSN layer | units | fraction firing | what reading its bits costs |",
            "|---|---|---|---|",
            *sparsity,
            "",
        ]
    )
    out = Path(args.out).with_suffix(".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
