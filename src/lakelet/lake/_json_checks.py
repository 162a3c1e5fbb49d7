"""Checking JSON read back: the small steps the validating parsers of records share.

Each check returns the value it checked, typed, or raises ``Invalid`` with a reason
short enough for one line; the parser that called it turns that into its own typed
error (``CorruptRecordError``) naming the record.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

from lakelet.core._digest import Digest
from lakelet.core._names import validate_name, validate_segment
from lakelet.core.errors import InvalidNameError

__all__ = [
    "Invalid",
    "digest",
    "hex_text",
    "integer",
    "line",
    "load_json",
    "name",
    "number",
    "obj",
    "optional_text",
    "segment",
    "shown",
    "str_map",
    "text",
    "timestamp",
]

_CONTROL = re.compile("[\x00-\x1f\x7f]")
_SHOWN = 60  # characters of a bad value a reason quotes


class Invalid(Exception):
    """Why a record is refused: one line, quoting at most a short piece of the bad value."""


def shown(value: object) -> str:
    """A short, one-line quote of a value for a reason."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _no_constant(value: str) -> None:
    raise ValueError(f"{value} is not JSON")


# NaN and Infinity are not JSON. One decoder for every record: json.loads with an option builds a
# new one per call, a third of the cost of loading a small record
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def load_json(data: bytes, limit: int, what: str) -> Any:
    """The JSON value in ``data`` (UTF-8, as lakelet writes it), at most ``limit`` bytes of it."""
    if len(data) > limit:
        raise Invalid(f"it is more than {limit >> 20} MiB, the most a {what} may have")
    try:
        return _DECODER.decode(data.decode("utf-8"))
    except RecursionError:
        raise Invalid("not JSON: nested too deep") from None
    except ValueError as e:  # JSONDecodeError, and UnicodeDecodeError for bytes that are no text
        raise Invalid(f"not JSON ({str(e).splitlines()[0][: _SHOWN * 2]})") from None


def obj(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"{where} is not an object: {shown(value)}")
    return value


_TEXT_MAX = 1 << 20


def text(value: object, where: str, limit: int = _TEXT_MAX) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{where} is not a string: {shown(value)}")
    if len(value) > limit:
        raise Invalid(f"{where} is longer than {limit} characters")
    return value


def optional_text(value: object, where: str, limit: int = _TEXT_MAX) -> str | None:
    return None if value is None else text(value, where, limit)


def line(value: object, where: str, limit: int = 4096) -> str:
    """A string meant for one line of output: no control characters."""
    checked = text(value, where, limit)
    if _CONTROL.search(checked):
        raise Invalid(f"{where} holds control characters: {shown(checked)}")
    return checked


def str_map(value: object, where: str) -> dict[str, str | None]:
    """An object whose values are strings (or null)."""
    checked = obj(value, where)
    for k, v in checked.items():
        if not (v is None or (isinstance(v, str) and len(v) <= _TEXT_MAX)):
            optional_text(v, f"{where}[{shown(k)}]")  # raises, naming the entry
    return checked


def integer(value: object, where: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise Invalid(f"{where} is not an integer of at least {minimum}: {shown(value)}")
    return value


def number(value: object, where: str) -> float:
    """A finite number, not negative (durations, sizes)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise Invalid(f"{where} is not a number of at least 0: {shown(value)}")
    return float(value)


def timestamp(value: object, where: str) -> datetime:
    """An ISO 8601 time with its offset (lakelet writes UTC)."""
    try:
        parsed = datetime.fromisoformat(text(value, where, 64))
    except ValueError:
        raise Invalid(f"{where} is not an ISO 8601 time: {shown(value)}") from None
    if parsed.tzinfo is None:
        raise Invalid(f"{where} has no UTC offset: {shown(value)}")
    return parsed


_HEX_DIGITS = frozenset("0123456789abcdef")


def hex_text(value: object, where: str, length: int) -> str:
    checked = text(value, where, length)
    if len(checked) != length or not _HEX_DIGITS.issuperset(checked):
        raise Invalid(f"{where} is not {length} hex digits: {shown(value)}")
    return checked


def digest(value: object, where: str) -> Digest:
    try:
        return Digest.parse(text(value, where, 200))
    except ValueError:
        raise Invalid(f"{where} is not a digest: {shown(value)}") from None


def name(value: object, where: str) -> str:
    """A lake name, checked by the rules every name is bound by."""
    try:
        return validate_name(text(value, where, 4096))
    except InvalidNameError as e:
        raise Invalid(f"{where}: {e}") from None


def segment(value: object, where: str) -> str:
    """One path segment (a run id, a stage's module.qualname)."""
    try:
        return validate_segment(text(value, where, 4096), where)
    except InvalidNameError as e:
        raise Invalid(str(e)) from None
