"""Durations given by users, normalised to seconds once at the public boundary.

Accepted forms: a number of seconds (``1.5``), a :class:`datetime.timedelta`,
or a string made of one or more ``<number><unit>`` parts with units ``ms``,
``s``, ``m``, ``h`` and ``d``: ``"500ms"``, ``"10s"``, ``"5m"``, ``"1h"``,
``"1m30s"``, ``"1.5s"``.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from .errors import DurationError

Duration = float | int | timedelta | str

_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d)", re.ASCII)
_PLAIN = re.compile(rf"{_NUMBER}", re.ASCII)


def to_seconds(value: Duration, *, what: str = "duration") -> float:
    """Return ``value`` in seconds, or raise :class:`DurationError`.

    Parameters
    ----------
    value
        Seconds as a number, a ``timedelta`` or a string such as ``"1m30s"``.
    what
        What the duration is for, used in the error message (``"timeout of
        task 'send'"``).
    """
    if isinstance(value, bool):
        raise DurationError(_message(value, what))
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise DurationError(_message(value, what)) from None
    elif isinstance(value, str):
        seconds = _parse(value, what)
    else:
        raise DurationError(_message(value, what))
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise DurationError(
            f"{what} must be a finite, non-negative duration; got {value!r}."
        )
    return seconds


def optional_seconds(value: Duration | None, *, what: str) -> float | None:
    """Like :func:`to_seconds` but passes ``None`` through."""
    return None if value is None else to_seconds(value, what=what)


def _parse(text: str, what: str) -> float:
    compact = text.strip().replace(" ", "")
    if _PLAIN.fullmatch(compact):
        return float(compact)
    position, total, units = 0, 0.0, []
    for match in _PART.finditer(compact):
        if match.start() != position:
            break
        units.append(match.group(2))
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        position = match.end()
    ordered = [unit for unit in ("d", "h", "m", "s", "ms") if unit in units]
    if not compact or position != len(compact) or units != ordered:
        raise DurationError(_message(text, what))
    return total


def _message(value: object, what: str) -> str:
    return (
        f"{what}: cannot understand {value!r}; give seconds as a number, a "
        'timedelta, or a string such as "500ms", "10s", "5m", "1h" or "1m30s".'
    )
