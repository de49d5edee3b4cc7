"""Evaluate trained agents, record their episodes, and plot learning curves of runs.

Examples::

    python evaluate.py logs/localpg/CartPole-v1_1                 # the run's latest model, 10 episodes
    python evaluate.py logs/localpg/CartPole-v1_1/best_model.zip -n 20 --stochastic --json result.json
    python evaluate.py logs/localpg/LunarLander-v3_1 --deterministic-units mean_field   # units output p
    python evaluate.py logs/localpg/CartPole-v1_1 --video-folder videos --video-episodes 2
    python evaluate.py logs/localpg/CartPole-v1_* -n 0 --plot curves.png   # only plot learning curves
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bsn_zoo.checkpoint import load_model, load_vecnormalize
from bsn_zoo.cli_errors import OneLineArgumentParser, UserInputError, program_name, run_cli
from bsn_zoo.config import (
    ALGORITHM_NAMES,
    DEFAULT_NUM_THREADS,
    RUN_DEFAULTS,
    algorithm_class,
    parse_value,
    positive_int,
    set_num_threads,
    validate_config,
)
from bsn_zoo.evaluation import (
    load_monitor_curve,
    load_tensorboard_scalars,
    render_error,
    run_episodes,
    save_gif,
    set_deterministic_units,
)
from bsn_zoo.plotting import curve_panels, plot_learning_curves
from bsn_zoo.run import (
    find_run,
    load_run_config,
    make_env,
    read_run_config,
    run_name,
    tensorboard_root,
    tensorboard_segments,
)
from policies import DETERMINISTIC_UNITS


def build_parser() -> OneLineArgumentParser:
    """The command-line parser of ``evaluate.py``."""
    parser = OneLineArgumentParser(prog=program_name("evaluate.py"), description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", type=Path, metavar="TARGET",
                        help="run folder (its latest model) or model .zip; several are evaluated in turn "
                             "(default: the run of --algo and --env in -f numbered --exp-id, as RL Zoo finds it)")
    parser.add_argument("-n", "--n-episodes", type=parse_value, default=10, metavar="N",
                        help="episodes per target (default 10; 0 skips evaluation, e.g. to only plot)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--stochastic", dest="deterministic", action="store_false", default=None,
                      help="sample neurons and actions (default: the run's deterministic_eval setting, which is "
                           "true unless its configuration says otherwise; deterministic for a bare model file)")
    mode.add_argument("--deterministic", dest="deterministic", action="store_true", default=None,
                      help="noise-free units (as --deterministic-units says) and actions")
    parser.add_argument("--deterministic-units", choices=DETERMINISTIC_UNITS,
                        help="BSN policies in deterministic mode: each unit fires iff p > 0.5 (threshold) or "
                             "outputs p (mean_field) (default: the policy's own deterministic_units)")
    parser.add_argument("--algo", choices=ALGORITHM_NAMES,
                        help="algorithm of the run to find without TARGET, or that saved a bare model file "
                             f"(default: the run's, else {RUN_DEFAULTS['algo']})")
    parser.add_argument("--env", help=f"environment id (default: the run's; without TARGET {RUN_DEFAULTS['env']})")
    found = parser.add_argument_group("finding the run and model (RL Baselines3 Zoo's flags)")
    found.add_argument("-f", "--folder", type=Path, default=Path("logs"),
                       help="log folder of the runs, <folder>/<algo>/<env>_<N> (default logs)")
    found.add_argument("--exp-id", type=parse_value, default=0, metavar="N",
                       help="run number N of <env>_<N> (default 0: the latest)")
    which = found.add_mutually_exclusive_group()
    which.add_argument("--load-best", action="store_true", help="the run's best_model.zip")
    which.add_argument("--load-checkpoint", type=parse_value, metavar="STEPS",
                       help="the run's checkpoint saved at STEPS steps (checkpoints/ckpt_<STEPS>_steps.zip)")
    which.add_argument("--load-last-checkpoint", action="store_true", help="the run's latest checkpoint")
    parser.add_argument("--num-threads", "--threads", dest="num_threads", type=parse_value, metavar="N",
                        default=DEFAULT_NUM_THREADS,
                        help=f"CPU threads of torch (default {DEFAULT_NUM_THREADS}; -1 leaves torch's own choice)")
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
    if record:  # off-screen rendering needs neither a sound nor a display device (and must not warn about them)
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            os.environ.setdefault("MUJOCO_GL", "egl")  # MuJoCo's headless OpenGL (its default, GLFW, needs a display)
    try:
        venv = make_env({**config, "backend": "gymnasium"}, n_envs=1, seed=int(args.seed),
                        render_mode="rgb_array" if record else None)
    except (ImportError, AttributeError, RuntimeError) as error:  # a renderer library that cannot load
        if not record:
            raise
        raise render_error(error) from None
    normalized = load_vecnormalize(model_path, venv, config["env"])
    if normalized is not None:
        normalized.training, normalized.norm_reward = False, False
        venv = normalized
    model = load_model(algorithm_class(config["algo"]), model_path, env=venv, env_id=config["env"],
                       device=config["device"])
    units = set_deterministic_units(model, args.deterministic_units)
    deterministic = config["deterministic_eval"] if args.deterministic is None else args.deterministic
    stats, videos = run_episodes(model, venv, n_episodes, deterministic=deterministic, record=record)
    fps = float(venv.metadata.get("render_fps") or 30)
    venv.close()
    stem = f"{config['algo']}_{layout.root.name + '_' if layout else ''}{model_path.stem}"
    gifs = [str(save_gif(frames, args.video_folder / f"{stem}_episode{index}.gif", fps))
            for index, frames in enumerate(videos)]
    return {"target": str(target), "model": str(model_path), "env": config["env"], "algo": config["algo"],
            **stats.summary(), "deterministic_units": units if deterministic else None, "videos": gifs}


def find_targets(args: argparse.Namespace) -> list[Path]:
    """The model files or run folders to evaluate: the given targets, else the run RL Zoo's flags name.

    Without targets, the run is ``<folder>/<algo>/<env>_<exp-id>`` (the latest number for ``--exp-id 0``).
    ``--load-best``, ``--load-checkpoint`` and ``--load-last-checkpoint`` pick a model inside each run folder.

    Raises:
        UserInputError: if no such run or model exists, or a model-picking flag meets a model file.
    """
    targets = list(args.targets)
    if not targets:
        algo, env_id = args.algo or RUN_DEFAULTS["algo"], args.env or RUN_DEFAULTS["env"]
        parent, stem = args.folder / algo, run_name(env_id)
        exp_id = int(args.exp_id) if args.exp_id in (0, "0") else positive_int("exp-id", args.exp_id)
        numbers = sorted(int(m.group(1)) for path in (parent.iterdir() if parent.is_dir() else [])
                         if (m := re.fullmatch(re.escape(stem) + r"_(\d+)", path.name)))
        if not numbers or (exp_id and exp_id not in numbers):
            wanted = f"{stem}_{exp_id}" if exp_id else f"{stem}_<N>"
            raise UserInputError(f"no run {parent / wanted}; train one with train.py --algo {algo} --env {env_id} "
                                 f"-f {args.folder}, or give a run folder or model file")
        targets = [parent / f"{stem}_{exp_id or numbers[-1]}"]
    if not (args.load_best or args.load_checkpoint is not None or args.load_last_checkpoint):
        return targets
    return [_pick_model(target, args) for target in targets]


def _pick_model(target: Path, args: argparse.Namespace) -> Path:
    layout, _ = find_run(target)
    if layout is None or target.suffix == ".zip":
        raise UserInputError(f"--load-best and --load-*checkpoint pick a model inside a run folder; {target} is a "
                             "model file: give its run folder")
    if args.load_best:
        path = layout.best_model
        if not path.is_file() and not read_run_config(layout).get("eval_freq", 1):
            raise UserInputError(f"{layout.root} was trained with --eval-freq 0, so it has no best model; evaluate "
                                 "its latest model without --load-best")
    elif args.load_last_checkpoint:
        saved = layout.checkpoints()
        if not saved:
            raise UserInputError(f"{layout.root} has no checkpoint; evaluate its latest model without the flag")
        path = saved[-1][1]
    else:
        path = layout.checkpoint(positive_int("load-checkpoint", args.load_checkpoint))
    if not path.is_file():
        have = ", ".join(str(steps) for steps, _ in layout.checkpoints()) or "none"
        raise UserInputError(f"{path} does not exist (checkpoints at steps: {have})")
    return path


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
            segments = tensorboard_segments(tensorboard_root(read_run_config(layout), layout))
            scalars = load_tensorboard_scalars(segments, list(keys))
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
    set_num_threads(args.num_threads)
    n_episodes = 0 if args.n_episodes == 0 else positive_int("n-episodes", args.n_episodes)
    targets = find_targets(args)
    results = []
    for target in targets if n_episodes else []:
        result = evaluate_target(target, args, n_episodes)
        results.append(result)
        mode = "deterministic" if result["deterministic"] else "stochastic"
        if result["deterministic_units"]:
            mode += f", {result['deterministic_units']} units"
        episodes = f"{result['episodes']} episode{'s' if result['episodes'] != 1 else ''}"
        print(f"{result['model']} on {result['env']}, {episodes} ({mode}): "
              f"return {result['mean_return']:.2f} +/- {result['std_return']:.2f}, "
              f"length {result['mean_length']:.1f} +/- {result['std_length']:.1f}")
        for gif in result["videos"]:
            print(f"  video: {gif}")
    if args.plot:
        print(f"learning curves: {plot_targets(targets, args.plot, args.plot_keys)}")
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
