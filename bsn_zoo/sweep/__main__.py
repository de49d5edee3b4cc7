"""``python -m bsn_zoo.sweep --sweep FILE ...``: the same as ``python train.py --sweep FILE ...``."""

import sys

from bsn_zoo.cli_errors import run_cli
from bsn_zoo.sweep import main

sys.exit(run_cli(main, prog="train.py --sweep"))
