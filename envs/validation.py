"""Argument checks shared by the environments: one-line errors naming the problem and the fix."""

__all__ = ["positive_int"]


def positive_int(name: str, value: int, meaning: str) -> int:
    """``value`` as an ``int`` if it is a positive integer, else a one-line ``ValueError``.

    Args:
        name: the argument's name, for the message.
        value: the value to check.
        meaning: what the argument counts, for the message.
    """
    try:
        valid = not isinstance(value, bool) and int(value) == value and value >= 1
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"{name} must be a positive integer ({meaning}), got {value!r}")
    return int(value)
