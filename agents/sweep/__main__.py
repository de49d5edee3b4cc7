"""``python -m agents.sweep --sweep FILE ...``: the same as ``python train.py --sweep FILE ...``."""

import sys

from agents.cli_errors import run_cli
from agents.sweep import main

sys.exit(run_cli(main, prog="train.py --sweep"))
