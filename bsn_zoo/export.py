"""Export a trained BSN policy's deterministic actions to ONNX and to NumPy (``deploy/numpy_policy.py``).

The run's ``VecNormalize`` observation statistics, if any, are folded in: the exported files take raw
observations, as the run's ``env_wrapper`` (if any) gives them to the policy. Examples::

    python export.py logs/localpg/CartPole-v1_1                       # both files beside the model
    python export.py logs/localpg/CartPole-v1_1 --onnx policy.onnx    # ONNX only
    python export.py model.zip --algo ppo --numpy policy.npz
    python export.py logs/localpg/LunarLander-v3_1 --deterministic-units mean_field   # units output p
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from stable_baselines3.common.preprocessing import is_image_space

from bsn_zoo.checkpoint import load_model, read_vecnormalize
from bsn_zoo.cli_errors import OneLineArgumentParser, UserInputError, program_name, run_cli
from bsn_zoo.config import ALGORITHM_NAMES, algorithm_class
from bsn_zoo.evaluation import set_deterministic_units
from bsn_zoo.run import find_run, read_run_config
from deploy import export_numpy, export_onnx
from policies import DETERMINISTIC_UNITS


def build_parser() -> OneLineArgumentParser:
    """The command-line parser of ``export.py``."""
    parser = OneLineArgumentParser(prog=program_name("export.py"), description=__doc__.split("\n\n")[0])
    parser.add_argument("target", type=Path, help="a run folder (its latest model) or a model .zip")
    parser.add_argument("--onnx", type=Path, metavar="FILE", help="write the ONNX graph here")
    parser.add_argument("--numpy", type=Path, metavar="FILE", help="write the NumPy .npz here")
    parser.add_argument("--algo", choices=ALGORITHM_NAMES,
                        help="algorithm that saved a bare model file (default: the run's, else localpg)")
    parser.add_argument("--deterministic-units", choices=DETERMINISTIC_UNITS,
                        help="each unit fires iff p > 0.5 (threshold) or outputs p (mean_field) "
                             "(default: the policy's own deterministic_units)")
    parser.add_argument("--verbose", action="store_true", help="print full tracebacks on errors")
    return parser


def main(argv: Sequence[str]) -> int:
    """Parse ``argv``, load the model and write the files; print what was written and the graph's signature."""
    args = build_parser().parse_args(argv)
    layout, model_path = find_run(args.target)
    run_config = read_run_config(layout) if layout is not None else {}
    algo = args.algo or run_config.get("algo", "localpg")
    model = load_model(algorithm_class(algo), model_path, device="cpu")
    units = set_deterministic_units(model, args.deterministic_units)
    vec_normalize = read_vecnormalize(model_path)
    onnx_path, numpy_path = args.onnx, args.numpy
    if onnx_path is None and numpy_path is None:
        onnx_path, numpy_path = model_path.with_suffix(".onnx"), model_path.with_suffix(".npz")
    try:
        if onnx_path is not None:
            try:
                print(f"ONNX:  {export_onnx(model, onnx_path, vec_normalize)}")
            except ImportError as error:
                raise UserInputError(str(error)) from None
        if numpy_path is not None:
            written = export_numpy(model, numpy_path, vec_normalize)
            print(f"NumPy: {written} (load with deploy.numpy_policy.NumpyPolicy)")
    except ValueError as error:
        raise UserInputError(str(error)) from None
    normalised = " (VecNormalize folded in)" if vec_normalize is not None else ""
    image = ", channel-first pixels" if is_image_space(model.observation_space) else ""
    shape = ", ".join(map(str, model.observation_space.shape))
    print(f"  input obs: float32 (batch, {shape}){image}, raw{normalised}\n"
          f"  output action: the deterministic action for {model.action_space} ({units} units)")
    if run_config.get("env_wrapper"):
        print(f"  note: the run observed {run_config['env']} through env_wrapper {run_config['env_wrapper']}; "
              "apply its observation wrappers (e.g. envs.TimeFeature's remaining time) before these files")
    return 0


def cli() -> None:
    """The ``bsn-export`` command (and ``python export.py``): run :func:`main` on ``sys.argv``; exit with its status."""
    sys.exit(run_cli(main, prog=program_name("export.py")))


if __name__ == "__main__":
    cli()
