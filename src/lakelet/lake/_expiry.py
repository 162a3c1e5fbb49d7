"""Lifetimes: durations (``ttl=``, ``gc --ttl``, ``url --expires``) and the run records that expire.

A stage declared with ``ttl=`` writes ``expires_at`` into its run record (and
into its outputs' metadata), so every machine sharing the lake knows when its
outputs may go. ``gc`` retires an expired run by tombstoning its run record and
its outputs, like ``rm --force``. Lake names are never rebound, so the next
run of the same key binds a new *generation* of names beside the old ones::

    stages/<module>.<function>/<key>.json        and  <key>/output.parquet   generation 1
    stages/<module>.<function>/<key>-g2.json     and  <key>-g2/output.parquet   after one expiry

A key's current run record is its first generation that is not removed (nor
refused: ``_run_lookup.current_run``): one lookup per generation, and a key
that never expired costs one, as before.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from lakelet.core.errors import InvalidArgumentError
from lakelet.storage._refs import NameRecord

__all__ = [
    "EXPIRED",
    "RUN_RECORD",
    "expiry_fields",
    "holds_object",
    "is_run_record",
    "parse_duration",
    "record_name",
    "stage_ttl",
]

RUN_RECORD = re.compile(r"^stages/[^/]+/[0-9a-f]{40}(?:-g[0-9]+)?\.json$")
EXPIRED = "expired_at"  # set in the meta of the tombstones gc writes: the expiry that retired the name

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
        hint = (
            "use e.g. 30m, 12h, 7d (a number alone is seconds)"
            if isinstance(value, str)
            else "use a timedelta, a number of seconds or text like 7d"
        )
        raise InvalidArgumentError(f"invalid {what} {value!r}: {hint}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidArgumentError(f"invalid {what} {value!r}: it must be positive")
    if seconds > _LONGEST.total_seconds():  # past it, an expiry date overflows the calendar
        raise InvalidArgumentError(
            f"invalid {what} {value!r}: it must be at most 100 years "
            "(a stage whose output never expires has no ttl=)"
        )
    return timedelta(seconds=seconds)


def stage_ttl(stage: str, options: dict[str, Any]) -> timedelta | None:
    """The ``ttl=`` option of a stage, checked when it is decorated."""
    if options.get("ttl") is None:
        return None
    ttl = parse_duration(options["ttl"], f"ttl of stage {stage}")
    if options.get("name") is not None:  # an expired name could never be bound again
        raise InvalidArgumentError(
            f"stage {stage}: ttl= cannot go with name= (a lake name is never rebound, so an expired "
            "output could not be recomputed under it): drop one of them"
        )
    return ttl


def expiry_fields(ttl: timedelta | None) -> dict[str, Any]:
    """What a run record says of its lifetime: counted from the end of the run."""
    if ttl is None:
        return {}
    return {"ttl_s": ttl.total_seconds(), "expires_at": (datetime.now(UTC) + ttl).isoformat()}


def record_name(stage: str, key: str, generation: int = 1) -> str:
    """The run record a key binds in its ``generation`` (its outputs go under the same stem + '/')."""
    suffix = "" if generation == 1 else f"-g{generation}"
    return f"stages/{stage}/{key[:40]}{suffix}.json"


def is_run_record(name: str) -> bool:
    return RUN_RECORD.match(name) is not None


def holds_object(record: NameRecord) -> bool:
    """Whether a record keeps its object from gc: a live name does, and so does a tombstone of
    ``rm --force``; an expired stage output's tombstone does not. An expired run record keeps
    its (small) object: it is the lineage the output tombstones point at."""
    if record.removed_at is None or EXPIRED not in record.meta:
        return True
    return is_run_record(record.name)
