"""The checks of every value a user gives varshift (a config key, a model parameter, a loader argument), with one
argument order, ``(key, value, ...)``, and one message: ``<key>=<value> is not allowed: <what is allowed>``."""

from __future__ import annotations

import typing
from numbers import Integral, Real


def refuse(key: str, value, allowed: str) -> typing.NoReturn:
    raise ValueError(f"{key}={value!r} is not allowed: {allowed}")


def require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        refuse(key, value, allowed)


def whole_number(key: str, value, minimum: int = 1) -> int:
    """``value`` as an int if it is a whole number (not a bool) ``>= minimum``."""
    require(not isinstance(value, bool) and isinstance(value, Integral) and value >= minimum, key, value,
            f"a whole number >= {minimum}")
    return int(value)


def fraction(key: str, value) -> float:
    """``value`` as a float in (0, 1]."""
    require(not isinstance(value, bool) and isinstance(value, Real) and 0.0 < value <= 1.0, key, value,
            "a number in (0, 1]")
    return float(value)


def flag(key: str, value) -> bool:
    require(isinstance(value, bool), key, value, "true or false")
    return value


def one_of(key: str, value, allowed: typing.Sequence[str]) -> str:
    require(value in allowed, key, value, f"one of {', '.join(allowed)}")
    return value
