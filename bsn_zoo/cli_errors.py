"""Errors a user can cause, and how the command-line tools report them.

Every problem with what the user gave (a flag, a file, an environment) raises a :class:`UserInputError`
whose message names the problem and the fix. The command-line entry points run through
:func:`run_cli`, which prints such an error as one line on stderr and exits with a non-zero status,
without a traceback unless ``--verbose`` was given.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "DivergenceError",
    "NonFiniteEnvError",
    "OneLineArgumentParser",
    "UserInputError",
    "run_cli",
]

#: exit status of a bad flag, value, file or environment (argparse's convention).
EXIT_USAGE = 2
#: exit status of a run that failed while training (divergence, non-finite environment output).
EXIT_FAILURE = 1
#: exit status after an interruption that could not be handled gracefully (128 + SIGINT).
EXIT_INTERRUPTED = 130


class UserInputError(Exception):
    """A problem with the user's input; ``str(error)`` names the problem and the fix in one line."""

    exit_code = EXIT_USAGE


class DivergenceError(UserInputError):
    """Training produced non-finite weights or losses; nothing non-finite was saved."""

    exit_code = EXIT_FAILURE


class NonFiniteEnvError(UserInputError):
    """The environment returned a NaN or infinite observation or reward (reported with the step)."""

    exit_code = EXIT_FAILURE


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser that reports a bad flag in one line (no usage block) and exits with 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message> (see <prog> --help)`` on stderr and exit with status 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def program_name(script: str) -> str:
    """The name a command was started by: ``bsn-train`` for the console command, else ``script``.

    Args:
        script: the name to use outside a console command (``train.py`` for ``python train.py`` and in tests).
    """
    started_as = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return started_as if started_as.startswith("bsn-") else script


def command_hint(script: str) -> str:
    """How to start another of the project's tools, in the form this one was started in.

    Args:
        script: the tool's script name, e.g. ``evaluate.py``.

    Returns:
        ``bsn-evaluate`` when running as a console command (``bsn-*``), else ``python evaluate.py``.
    """
    console = program_name(script).startswith("bsn-")
    return f"bsn-{script.removesuffix('.py')}" if console else f"python {script}"


def run_cli(main: Callable[[Sequence[str]], int], prog: str, argv: Sequence[str] | None = None) -> int:
    """Run a command-line ``main(argv) -> exit status`` and turn user errors into one-line messages.

    Args:
        main: the tool's entry point; it raises :class:`UserInputError` (or a subclass) for bad input.
        prog: the program name that starts each message (``train.py``).
        argv: the arguments (without the program name); ``None`` reads ``sys.argv[1:]``.

    Returns:
        The exit status: ``main``'s own, :data:`EXIT_USAGE` for bad input, :data:`EXIT_FAILURE` for a
        failed run, :data:`EXIT_INTERRUPTED` for a ``KeyboardInterrupt`` (a second Ctrl-C). With
        ``--verbose`` in ``argv`` the traceback is printed as well.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):  # each line shows at once, also when output goes to a file or pipe
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)
    try:
        return main(args)
    except UserInputError as error:
        if "--verbose" in args:
            traceback.print_exc()
        print(f"{prog}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        if "--verbose" in args:
            traceback.print_exc()
        print(f"{prog}: interrupted; nothing more was saved (saved files are complete)", file=sys.stderr)
        return EXIT_INTERRUPTED
