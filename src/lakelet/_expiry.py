"""Lifetimes: durations (``ttl=``, ``gc --ttl``, ``url --expires``)."""

from __future__ import annotations

import math
import re
from datetime import timedelta

from ._errors import InvalidArgumentError

_LONGEST = timedelta(days=36525)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)


def parse_duration(value: object, what: str = "duration") -> timedelta:
    """A positive duration from a timedelta, seconds, or text like "90", "30m", "12h", "7d", "2w".

    Raises InvalidArgumentError naming ``what``.
    """
    seconds: float | None = None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if seconds is None:
        hint = ("use e.g. 30m, 12h, 7d (a number alone is seconds)" if isinstance(value, str)
                else "use a timedelta, a number of seconds or text like 7d")
        raise InvalidArgumentError(f"invalid {what} {value!r}: {hint}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidArgumentError(f"invalid {what} {value!r}: it must be positive")
    if seconds > _LONGEST.total_seconds():  # past it, an expiry date overflows the calendar
        raise InvalidArgumentError(f"invalid {what} {value!r}: it must be at most 100 years "
                                   "(a stage whose output never expires has no ttl=)")
    return timedelta(seconds=seconds)
