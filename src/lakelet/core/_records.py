"""What the validating parsers of records read back share: JSON lines, counts, quoting.

Each record type lakelet writes and reads back has one validating parser beside the
layer that owns it (``storage._refs.parse_record`` for name records, ``Pack.from_dict``,
``Sweep.from_dict``, ``remote._log.decode`` for log entries and snapshots). A record may
have been damaged, or written by a hostile peer: these helpers turn whatever it holds into
``CorruptRecordError`` with a message of one short line.
"""

from __future__ import annotations

import json

from lakelet.core.errors import CorruptRecordError

__all__ = ["MAX_COUNT", "check_count", "parse_json_line", "shown"]

MAX_COUNT = (1 << 63) - 1  # SQLite's largest INTEGER: a bigger size or offset fails every insert


def shown(value: object, limit: int = 80) -> str:
    """``value`` for a one-line report: quoted (``repr`` escapes every control character),
    and cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_json_line(raw: bytes | str) -> object:
    """One line of JSON; CorruptRecordError when it is not JSON, or nests deeper than the
    parser goes (a hostile line can)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
        raise CorruptRecordError(f"not JSON ({type(e).__name__}): {shown(raw)}") from None


def check_count(value: object, what: str) -> int:
    """``value`` if it is an int in [0, MAX_COUNT] (a size, an offset, an entry number)."""
    if type(value) is not int or not 0 <= value <= MAX_COUNT:  # a bool is an int: not a count
        raise CorruptRecordError(f"{what} is {shown(value)}, not a count of 0 or more")
    return value
