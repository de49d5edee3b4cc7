"""The valid range of each numeric hyperparameter: one definition, used by :class:`~agents.LocalPG` and by the
experiment kit's configuration validator (``bsn_zoo.config``), so the two cannot disagree.

The same ranges apply to the stock algorithms' arguments of the same name (SB3's PPO also needs
``batch_size > 1`` for advantage normalisation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["HYPERPARAMETER_RANGES", "Interval", "check_hyperparameters"]


@dataclass(frozen=True)
class Interval:
    """A range of numbers: ``low`` to ``high``, each end open or closed; ``integer`` also asks for a whole number.

    Attributes:
        low: the lower end (``-inf`` for none).
        high: the upper end (``inf`` for none).
        low_open: ``low`` itself is excluded.
        high_open: ``high`` itself is excluded.
        integer: only whole numbers are valid.
    """

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = True
    integer: bool = False

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the range (and is whole, for an integer range)."""
        if self.integer and float(value) != int(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return bool(above and below)

    def describe(self) -> str:
        """The range in words, e.g. ``in [0, 1]``, ``> 0`` or ``an integer >= 2``."""
        kind = "an integer " if self.integer else ""
        if math.isinf(self.high):
            return f"{kind}{'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{kind}in {left}{self.low:g}, {self.high:g}{right}"


POSITIVE = Interval(0.0, low_open=True)
NON_NEGATIVE = Interval(0.0)

#: Valid values of each numeric hyperparameter. ``learning_rate`` and ``clip_range`` may also be
#: schedules (their start must lie in the range); ``target_kl``, ``hidden_target_kl`` and
#: ``hidden_clip_range`` may also be ``None``.
HYPERPARAMETER_RANGES: dict[str, Interval] = {
    "learning_rate": POSITIVE,
    "n_steps": Interval(1.0, integer=True),
    "batch_size": Interval(2.0, integer=True),
    "n_epochs": Interval(1.0, integer=True),
    "gamma": Interval(0.0, 1.0, high_open=False),
    "gae_lambda": Interval(0.0, 1.0, high_open=False),
    "clip_range": POSITIVE,
    "ent_coef": NON_NEGATIVE,
    "hidden_ent_coef": NON_NEGATIVE,
    "hidden_coef": POSITIVE,
    "vf_coef": NON_NEGATIVE,
    "max_grad_norm": POSITIVE,
    "target_kl": POSITIVE,
    "hidden_target_kl": POSITIVE,
    "hidden_clip_range": POSITIVE,
}


def check_hyperparameters(**values: float | None) -> None:
    """Check each named value against :data:`HYPERPARAMETER_RANGES` (``None`` and schedules are skipped).

    Raises:
        ValueError: ``<name> must be <range>, got <value>`` for the first value out of its range.
    """
    for name, value in values.items():
        if value is None or callable(value):
            continue
        if not HYPERPARAMETER_RANGES[name].contains(value):
            raise ValueError(f"{name} must be {HYPERPARAMETER_RANGES[name].describe()}, got {value!r}")
