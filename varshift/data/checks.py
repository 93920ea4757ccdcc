"""Argument checks shared by the data modules."""

from __future__ import annotations


def check_int(value: int, what: str, minimum: int) -> int:
    """``value`` if it is an integer (not a bool) ``>= minimum``, else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value
