"""Argument checks shared by the public language functions: the wrong type raises
:class:`~promptweights.errors.ArgumentTypeError`, a value out of range
:class:`~promptweights.errors.InvalidArgumentError`, each naming the argument, before any work or
cache lookup (an unhashable argument must not reach ``functools.lru_cache``)."""

from __future__ import annotations

import operator

from .errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["check_int", "check_text"]


def check_text(value: object, name: str) -> str:
    """``value`` if it is a ``str`` (a subclass is read as the ``str`` it holds)."""
    if type(value) is str:
        return value
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be a str, not {type(value).__name__}")
    return str(value)


def check_int(value: object, name: str, *, minimum: int | None = None) -> int:
    """``value`` as an ``int``: anything with ``__index__`` (numpy integers too), not a bool."""
    if isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be an int, not bool")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ArgumentTypeError(f"{name} must be an int, not {type(value).__name__}") from None
    if minimum is not None and number < minimum:
        raise InvalidArgumentError(f"{name} must be at least {minimum}, not {number}")
    return number
