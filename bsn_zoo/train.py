"""Train an agent with a policy of binary stochastic neurons (or an MLP, for comparison).

With no arguments: LocalPG with the BSN policy on CartPole-v1. Options follow RL Baselines3 Zoo's names.
Runs go to ``<log-folder>/<algo>/<env>_<N>/`` (see ``bsn_zoo/run.py``). Examples::

    python train.py
    python train.py --algo ppo --env Acrobot-v1 -n 200000 --estimator st --seed 1
    python train.py -params learning_rate:1e-3 policy_kwargs.net_arch:[32,32]
    python train.py -i logs/localpg/CartPole-v1_1 -n 200000     # continue a run (or an interrupted one)
    python train.py --sweep sweeps/estimators_cartpole.yml        # many runs: configurations x seeds
    python train.py --optimize sweeps/optuna_cartpole.yml         # Optuna hyperparameter search
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bsn_zoo.checkpoint import check_model_file
from bsn_zoo.cli_errors import OneLineArgumentParser, UserInputError, command_hint, program_name, run_cli
from bsn_zoo.config import (
    ALGORITHM_NAMES,
    BACKEND_NAMES,
    BASELINE_NAMES,
    CREDIT_RULES,
    DEFAULT_NUM_THREADS,
    ESTIMATOR_NAMES,
    POLICY_NAMES,
    RUN_DEFAULTS,
    build_config,
    credit_setting,
    merge,
    parse_overrides,
    parse_value,
    set_num_threads,
    validate_config,
)
from bsn_zoo.run import (
    RunLayout,
    config_changes,
    create_run_dir,
    find_run,
    make_env,
    read_run_config,
    run_training,
    tensorboard_root,
)
from bsn_zoo.sweep import main as sweep_main
from bsn_zoo.tune import main as tune_main

#: run settings that cannot change when a run is continued (they define the model or its data).
FIXED_ON_CONTINUE = ("algo", "env", "env_kwargs", "env_wrapper", "policy", "policy_kwargs", "normalize")


#: flags that set a run setting of the same name (``estimator``, ``baseline`` go into ``policy_kwargs``).
FLAG_SETTINGS = ("algo", "env", "backend", "policy", "estimator", "baseline", "n_timesteps", "seed", "n_envs", "device",
                 "eval_freq", "eval_episodes", "save_freq", "log_interval", "normalize", "tensorboard_log",
                 "reward_delay", "bsn_layers", "credit")


def build_parser() -> OneLineArgumentParser:
    """The command-line parser of ``train.py``."""
    parser = OneLineArgumentParser(
        prog=program_name("train.py"), description=__doc__.split("\n\n")[0],
        epilog="Flags override the hyperparameter file; -params overrides both. "
               "Values like 1e5 are accepted for step counts.",
    )
    what = parser.add_argument_group("what to train")
    what.add_argument("--algo", choices=ALGORITHM_NAMES, help=f"algorithm (default {RUN_DEFAULTS['algo']})")
    what.add_argument("--env", help=f"Gymnasium environment id, or module:Id (default {RUN_DEFAULTS['env']})")
    what.add_argument("--backend", choices=BACKEND_NAMES,
                      help="gymnasium (default), or torch: one batched torch env on --device for the ids of "
                           "envs.TORCH_ENVS (LocalPG's rollouts then stay on the device)")
    what.add_argument("--policy", choices=POLICY_NAMES,
                      help="bsn: binary stochastic neurons (default); mlp: SB3's usual MLP, for comparison")
    what.add_argument("--estimator", choices=ESTIMATOR_NAMES, help="gradient estimator of the BSN policy")
    what.add_argument("--baseline", choices=BASELINE_NAMES, help="baseline of the BSN policy")
    what.add_argument("-i", "--trained-agent", type=Path, metavar="PATH",
                      help="continue training a run folder or model .zip (a run continues in its own folder)")
    budget = parser.add_argument_group("budget and hardware")
    budget.add_argument("-n", "--n-timesteps", type=parse_value, metavar="N",
                        help="total environment steps of the run (with -i: train until the model has N)")
    budget.add_argument("--seed", type=parse_value, help="random seed (default: none)")
    budget.add_argument("--n-envs", type=parse_value, metavar="N", help="parallel environments")
    budget.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    budget.add_argument("--num-threads", "--threads", dest="num_threads", type=parse_value, metavar="N",
                        default=DEFAULT_NUM_THREADS,
                        help=f"CPU threads of torch (default {DEFAULT_NUM_THREADS}: small policy networks gain little "
                             "from more, and lose much when runs share the cores; -1 leaves torch's own choice)")
    logging = parser.add_argument_group("logging and saving")
    logging.add_argument("-f", "--log-folder", type=Path, default=Path("logs"), help="root of run folders (logs)")
    logging.add_argument("-tb", "--tensorboard-log", metavar="DIR",
                         help="TensorBoard root; events go to DIR/<algo>/<run> (default: <run folder>/tb)")
    logging.add_argument("--log-interval", type=parse_value, metavar="N",
                         help="write logs every N updates (default: the algorithm's; A2C's is 100)")
    logging.add_argument("--eval-freq", type=parse_value, metavar="N",
                         help="evaluate every N steps, keep the best model (0 disables)")
    logging.add_argument("--eval-episodes", type=parse_value, metavar="N", help="episodes per evaluation")
    logging.add_argument("--save-freq", type=parse_value, metavar="N", help="checkpoint every N steps (0 disables)")
    logging.add_argument("--progress-bar", action=argparse.BooleanOptionalAction, default=None,
                         help="show a progress bar (default: on in a terminal)")
    logging.add_argument("--verbose", action="store_true", help="print SB3's log tables and full tracebacks")
    conf = parser.add_argument_group("configuration")
    conf.add_argument("-conf", "--conf-file", type=Path, metavar="FILE",
                      help="YAML hyperparameter file keyed by env id (default hyperparams/<algo>.yml)")
    conf.add_argument("-params", "--hyperparams", nargs="+", default=[], metavar="KEY:VALUE",
                      help="override hyperparameters, e.g. learning_rate:1e-3 policy_kwargs.net_arch:[32,32]")
    conf.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                      help="normalise observations and rewards with VecNormalize")
    conf.add_argument("--reward-delay", type=parse_value, metavar="K|episode",
                      help="pay the reward every K steps or only at the episode's end (envs.RewardDelay), with the "
                           "time feature and the settings of hyperparams/<algo>_delayed.yml (docs: Delayed reward)")
    conf.add_argument("--bsn-layers", type=parse_value, metavar="D",
                      help="LocalPG with D BSN layers as wide as the entry's first, with the settings of "
                           "hyperparams/localpg_deep.yml for --credit (docs: Deep policies)")
    conf.add_argument("--credit", choices=CREDIT_RULES, default=None,
                      help="credit rule of the BSN layers: strict (rao_blackwell false) or posterior (true); with "
                           "--bsn-layers, also that rule's deep settings")
    many = parser.add_argument_group("many runs (each has its own options: train.py --sweep FILE --help)")
    many.add_argument("--sweep", type=Path, metavar="FILE",
                      help="run a sweep file (grid of options x seeds) locally, or on Ray with --ray-address")
    many.add_argument("--optimize", type=Path, metavar="FILE", help="Optuna hyperparameter search from a study file")
    return parser


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """The run settings given as flags (``None`` where not given)."""
    return {key: getattr(args, key) for key in FLAG_SETTINGS}


def continue_config(base: dict[str, Any], flags: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The configuration of a continued run: its saved one with the new flags and overrides.

    Raises:
        UserInputError: if a flag or override would change a setting of :data:`FIXED_ON_CONTINUE`.
    """
    given = {key: value for key, value in flags.items() if value is not None}
    if "reward_delay" in given:
        raise UserInputError("--reward-delay applies to new runs; a continued run keeps its own env_wrapper "
                             "(start a new run without -i)")
    if "bsn_layers" in given:
        raise UserInputError("--bsn-layers applies to new runs; a continued run keeps its own policy "
                             "(start a new run without -i)")
    if "credit" in given:
        given.update(credit_setting(str(base.get("algo", "localpg")), given.pop("credit")))
    policy_flags = {key: given.pop(key) for key in ("estimator", "baseline") if key in given}
    changes = merge(merge(given, {"policy_kwargs": policy_flags} if policy_flags else {}), overrides)
    config = validate_config(merge(base, changes))
    for key in FIXED_ON_CONTINUE:
        if key in changes and config.get(key) != base.get(key):
            raise UserInputError(f"cannot change {key} when continuing a run (saved: {base.get(key)!r}); "
                                 "start a new run without -i instead")
    return config


def resolve_run(args: argparse.Namespace) -> tuple[dict[str, Any], RunLayout | None, Path | None]:
    """The configuration, the run folder to continue (``None``: a new one) and the model to start from.

    Without ``-i``: a new run from the hyperparameter file, flags and ``-params``. With ``-i`` on a run
    folder or a model inside one: that run, its ``config.yml`` updated by flags and ``-params``. With
    ``-i`` on a bare model file: a new run folder, starting from that model.

    Raises:
        UserInputError: for a bad ``-i`` target, ``-conf`` together with a run to continue, or a bad setting.
    """
    flags, overrides = _flags(args), parse_overrides(args.hyperparams)
    if args.trained_agent is None:
        return build_config(flags, overrides, args.conf_file), None, None
    layout, resume_from = find_run(args.trained_agent)
    check_model_file(resume_from)
    if layout is None:
        return build_config(flags, overrides, args.conf_file), None, resume_from
    if args.conf_file is not None:
        raise UserInputError(f"-conf does not apply when continuing the run {layout.root} (its config.yml is "
                             "used); change hyperparameters with -params instead")
    return continue_config(read_run_config(layout), flags, overrides), layout, resume_from


#: Below this many envs, a LocalPG run on the torch backend is told about hyperparams/localpg_torch.yml.
FEW_TORCH_ENVS = 64


def _report_start(config: dict[str, Any], result_dir: Path, events: Path, resumed_at: int,
                  changes: dict[str, dict[str, Any]]) -> None:
    action = f"Continuing at step {resumed_at}" if resumed_at else "Training"
    print(f"{action}: {config['algo']} ({config['policy']} policy) on {config['env']} for "
          f"{config['n_timesteps']} steps\n  run folder:  {result_dir}\n  TensorBoard: tensorboard --logdir {events}",
          flush=True)
    for key, change in changes.items():
        print(f"  changed:     {key} {change['from']!r} -> {change['to']!r}", flush=True)
    if config["algo"] == "localpg" and config["backend"] == "torch" and config["n_envs"] < FEW_TORCH_ENVS:
        print(f"  hint: {config['n_envs']} envs leave a batched torch env mostly idle, above all on a GPU; "
              "-conf hyperparams/localpg_torch.yml trains with 256 envs and few large updates", flush=True)


def main(argv: Sequence[str]) -> int:
    """Parse ``argv``, train, and print where the model and logs went. Returns the exit status."""
    # Sweeps and searches have parsers of their own (bsn_zoo.sweep, bsn_zoo.tune); they take the same argv.
    if "--sweep" in argv:
        return sweep_main(argv)
    if "--optimize" in argv:
        return tune_main(argv)
    args = build_parser().parse_args(argv)
    set_num_threads(args.num_threads)
    config, layout, resume_from = resolve_run(args)
    make_env(config, n_envs=1, seed=None).close()  # unknown id or unsupported spaces: fail before any folder
    if layout is None:
        layout = create_run_dir(args.log_folder, config["algo"], config["env"])
    progress = sys.stdout.isatty() if args.progress_bar is None else args.progress_bar
    changes = config_changes(read_run_config(layout), config) if layout.config_file.is_file() else {}
    events = tensorboard_root(config, layout)
    started = time.monotonic()
    result = run_training(
        config, layout.root, resume_from=resume_from, progress_bar=progress, verbose=int(args.verbose),
        on_start=lambda model: _report_start(config, layout.root, events, model.num_timesteps, changes),
        command=" ".join([program_name("train.py"), *argv]),
    )
    minutes, seconds = divmod(round(time.monotonic() - started), 60)
    if result["interrupted"]:
        print(f"Interrupted by {result['interrupted']} at step {result['num_timesteps']}; checkpoint saved to "
              f"{result['model_path']}\n  continue with: {command_hint('train.py')} -i {layout.root}")
        return 128 + int(signal.Signals[result["interrupted"]])
    final, best = "", ""
    if result["final_evaluation"] is not None:
        mean, std = result["final_evaluation"]
        final = f" (evaluation: {mean:.2f} +/- {std:.2f} over {config['eval_episodes']} episodes)"
    if layout.best_model.is_file() and result["best_mean_reward"] is not None:
        best = f"\n  best model:  {layout.best_model} (best mean evaluation: {result['best_mean_reward']:.2f})"
    print(f"Done: {result['num_timesteps']} steps in {minutes} min {seconds} s.\n"
          f"  final model: {result['model_path']}{final}{best}\n"
          f"  evaluate:    {command_hint('evaluate.py')} {layout.root}\n"
          f"  TensorBoard: tensorboard --logdir {events}")
    return 0


def cli() -> None:
    """The ``bsn-train`` command (and ``python train.py``): run :func:`main` on ``sys.argv``; exit with its status."""
    sys.exit(run_cli(main, prog=program_name("train.py")))


if __name__ == "__main__":
    cli()
