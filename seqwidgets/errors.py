"""Errors and warnings about settings that know which field they are about.

Widgets show the message next to ``error.field``; scripts can keep catching `ValueError`.

Example:
    >>> from seqwidgets.errors import ParamError
    >>> try:
    ...     raise ParamError("cfg", "cfg: 200.0 is out of range; allowed: float from 0.0 to 100.0")
    ... except ValueError as error:
    ...     print(error.field)
    cfg
"""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = ["ParamError", "ParamWarning", "short_repr"]


class ParamError(ValueError):
    """An invalid setting. ``field`` is the `SequenceParams` field name (or the keyframe text's
    field) the message is about; ``str(error)`` is the full message, which starts with it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ParamWarning(UserWarning):
    """A setting that is valid but probably not what was meant (a keyframe the loop count never
    reaches). ``field`` names the field, as in `ParamError`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlong = 40


def short_repr(value: Any) -> str:
    """``repr(value)``, shortened for a message.

    Example:
        >>> len(short_repr("x" * 10_000)) < 100
        True
    """
    return _REPR.repr(value)


def check_one_of(name: str, value: Any, choices, *, optional: bool = False) -> None:
    """Refuse a ``value`` that is not one of ``choices`` (or ``None``, when ``optional``), in one
    line naming the setting ``name`` and what is allowed.

    Example:
        >>> check_one_of("offload", "model", ("model", "sequential"), optional=True)
        >>> check_one_of("quantize", "2bit", ("4bit", "8bit"), optional=True)
        Traceback (most recent call last):
        ...
        ValueError: quantize: '2bit' is not one of None, '4bit', '8bit'
    """
    if (optional and value is None) or value in choices:
        return
    allowed = ", ".join([*(["None"] if optional else []), *map(repr, choices)])
    raise ValueError(f"{name}: {value!r} is not one of {allowed}")
