"""Evaluate trained agents, record their episodes, and plot learning curves of runs.

Examples::

    python evaluate.py logs/localpg/CartPole-v1_1                 # the run's latest model, 10 episodes
    python evaluate.py logs/localpg/CartPole-v1_1/best_model.zip -n 20 --stochastic --json result.json
    python evaluate.py logs/localpg/CartPole-v1_1 --video-folder videos --video-episodes 2
    python evaluate.py logs/localpg/CartPole-v1_* -n 0 --plot curves.png   # only plot learning curves
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stable_baselines3.common.vec_env import VecNormalize

from bsn_zoo.checkpoint import load_model, vecnormalize_path
from bsn_zoo.cli_errors import OneLineArgumentParser, UserInputError, program_name, run_cli
from bsn_zoo.config import ALGORITHM_NAMES, RUN_DEFAULTS, algorithm_class, parse_value, positive_int, validate_config
from bsn_zoo.evaluation import (
    load_monitor_curve,
    load_tensorboard_scalars,
    run_episodes,
    save_gif,
)
from bsn_zoo.plotting import curve_panels, plot_learning_curves
from bsn_zoo.run import find_run, load_run_config, make_env, read_run_config, tensorboard_dir


def build_parser() -> OneLineArgumentParser:
    """The command-line parser of ``evaluate.py``."""
    parser = OneLineArgumentParser(prog=program_name("evaluate.py"), description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="+", type=Path, metavar="TARGET",
                        help="run folder (its latest model) or model .zip; several are evaluated in turn")
    parser.add_argument("-n", "--n-episodes", type=parse_value, default=10, metavar="N",
                        help="episodes per target (default 10; 0 skips evaluation, e.g. to only plot)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--stochastic", dest="deterministic", action="store_false", default=None,
                      help="sample neurons and actions (default: the run's deterministic_eval setting, which is "
                           "true unless its configuration says otherwise; deterministic for a bare model file)")
    mode.add_argument("--deterministic", dest="deterministic", action="store_true", default=None,
                      help="noise-free units (each fires iff p > 0.5) and actions")
    parser.add_argument("--algo", choices=ALGORITHM_NAMES,
                        help="algorithm that saved a bare model file (default: the run's, else localpg)")
    parser.add_argument("--env", help="environment id (default: the run's)")
    parser.add_argument("--seed", type=parse_value, default=0, help="seed of the evaluation environment (0)")
    parser.add_argument("--device", default="auto", help="auto (default: CPU without CUDA), cpu, cuda, cuda:N")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--video-folder", type=Path, metavar="DIR", help="record episodes as GIFs into DIR")
    parser.add_argument("--video-episodes", type=parse_value, default=1, metavar="K",
                        help="number of first episodes recorded per target (default 1)")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="plot the runs' learning curves into PNG")
    parser.add_argument("--plot-keys", nargs="+", default=[], metavar="KEY",
                        help="with --plot: plot these TensorBoard scalars instead of the Monitor episode return")
    parser.add_argument("--verbose", action="store_true", help="print full tracebacks on errors")
    return parser


def evaluate_target(target: Path, args: argparse.Namespace, n_episodes: int) -> dict[str, Any]:
    """Load the model of one target and play ``n_episodes`` episodes; optionally record GIFs.

    Episodes run in the Gymnasium environment (also for runs trained with the torch backend), with the
    ``VecNormalize`` statistics saved beside the model if any.

    Returns:
        A JSON-serialisable summary (target, model, env, algo, mean/std of return and length...).

    Raises:
        UserInputError: for a bad target, model file or environment.
    """
    layout, model_path = find_run(target)
    if layout is None and not args.env:
        raise UserInputError(f"{model_path} is not inside a run folder; name its environment with --env")
    changes = {key: value for key, value in (("algo", args.algo), ("env", args.env)) if value}
    changes["device"] = args.device  # the run's own device may not exist here (a CUDA run on a CPU machine)
    config = (load_run_config(layout, changes) if layout is not None
              else validate_config({**RUN_DEFAULTS, "algo": "localpg", **changes}))
    record = positive_int("video-episodes", args.video_episodes) if args.video_folder else 0
    if record:
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # pygame rendering needs no sound device
    venv = make_env({**config, "backend": "gymnasium"}, n_envs=1, seed=int(args.seed),
                    render_mode="rgb_array" if record else None)
    stats_path = vecnormalize_path(model_path)
    if stats_path.is_file():
        venv = VecNormalize.load(str(stats_path), venv)
        venv.training, venv.norm_reward = False, False
    model = load_model(algorithm_class(config["algo"]), model_path, env=venv, env_id=config["env"],
                       device=config["device"])
    deterministic = config["deterministic_eval"] if args.deterministic is None else args.deterministic
    stats, videos = run_episodes(model, venv, n_episodes, deterministic=deterministic, record=record)
    fps = float(venv.metadata.get("render_fps") or 30)
    venv.close()
    stem = f"{config['algo']}_{layout.root.name + '_' if layout else ''}{model_path.stem}"
    gifs = [str(save_gif(frames, args.video_folder / f"{stem}_episode{index}.gif", fps))
            for index, frames in enumerate(videos)]
    return {"target": str(target), "model": str(model_path), "env": config["env"], "algo": config["algo"],
            **stats.summary(), "videos": gifs}


def plot_targets(targets: Sequence[Path], path: Path, keys: Sequence[str]) -> Path:
    """Plot learning curves of the run folders among ``targets`` into ``path``.

    Args:
        targets: run folders (other targets are skipped).
        path: the PNG file.
        keys: TensorBoard scalar keys, one panel each; empty plots the training episode return from the
            runs' Monitor files.

    Raises:
        UserInputError: if nothing can be plotted (no run folder, no finished episode, unknown keys).
    """
    panels: dict[str, dict] = {key: {} for key in keys} if keys else {"training episode return": {}}
    for target in targets:
        layout, _ = find_run(target)
        if layout is None:
            continue
        label = f"{layout.root.parent.name}/{layout.root.name}"
        if keys:
            scalars = load_tensorboard_scalars(tensorboard_dir(read_run_config(layout), layout), list(keys))
            for key, curve in scalars.items():
                panels[key][label] = curve
        else:
            steps, returns = load_monitor_curve(layout.monitor_dir)
            if len(steps):
                panels["training episode return"][label] = (steps, returns)
    empty = [key for key, curves in panels.items() if not curves]
    if empty:
        raise UserInputError(f"nothing to plot for {', '.join(empty)}: give run folders that logged it "
                             "(its TensorBoard keys are listed in docs/tensorboard.md)")
    return plot_learning_curves(curve_panels(panels, smooth=not keys), path, columns=2)


def main(argv: Sequence[str]) -> int:
    """Parse ``argv``, evaluate each target, print mean +/- std, and write JSON, GIFs, plots as asked."""
    args = build_parser().parse_args(argv)
    n_episodes = 0 if args.n_episodes == 0 else positive_int("n-episodes", args.n_episodes)
    results = []
    for target in args.targets if n_episodes else []:
        result = evaluate_target(target, args, n_episodes)
        results.append(result)
        mode = "deterministic" if result["deterministic"] else "stochastic"
        print(f"{result['model']} on {result['env']}, {result['episodes']} episodes ({mode}): "
              f"return {result['mean_return']:.2f} +/- {result['std_return']:.2f}, "
              f"length {result['mean_length']:.1f} +/- {result['std_length']:.1f}")
        for gif in result["videos"]:
            print(f"  video: {gif}")
    if args.plot:
        print(f"learning curves: {plot_targets(args.targets, args.plot, args.plot_keys)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"results": results}, indent=2))
        print(f"results: {args.json}")
    return 0


def cli() -> None:
    """The ``bsn-evaluate`` command (and ``python evaluate.py``): run :func:`main` on ``sys.argv``; exit with it."""
    sys.exit(run_cli(main, prog=program_name("evaluate.py")))


if __name__ == "__main__":
    cli()
