"""User metadata: the caller's own JSON keys beside lakelet's in a name record's ``meta``.

A record's meta also holds keys lakelet writes and reads back to choose what it shows
(``stage`` and ``run`` make a name a stage output, ``expires_at`` retires it): a user key
of the same name would pass a file off as something it is not, so those keys are refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from lakelet.core.errors import InvalidArgumentError

__all__ = ["MAX_META_BYTES", "RESERVED_KEYS", "check_user_meta"]

# The keys lakelet writes into a record's meta (adds, stage outputs, gc's tombstones, datasets)
RESERVED_KEYS = frozenset(
    {"source", "host", "lakelet", "python", "stage", "run", "expires_at", "expired_at", "dataset", "version"}
)
MAX_META_BYTES = 64 << 10  # it rides in every record, the index and the remote's log


def check_user_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """``meta`` as stored (a plain JSON object; tuples become lists), or ``{}`` for None.

    Raises InvalidArgumentError for a key lakelet owns, a key that is not a string, a value
    JSON cannot hold (NaN included), or more than MAX_META_BYTES encoded.
    """
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise InvalidArgumentError(f"meta must be a dict of JSON values, not {type(meta).__name__}")
    taken = sorted(k for k in meta if k in RESERVED_KEYS)
    if taken:
        raise InvalidArgumentError(
            f"meta key {taken[0]!r} is lakelet's own (reserved: {', '.join(sorted(RESERVED_KEYS))})"
        )
    value = _plain(meta, "meta")
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > MAX_META_BYTES:
        raise InvalidArgumentError(f"meta is {size} bytes as JSON; at most {MAX_META_BYTES} are kept")
    assert isinstance(value, dict)
    return value


def _plain(value: object, where: str) -> object:
    """``value`` as JSON reads it back; json.dumps alone would turn an int key into a string
    and a NaN into a token no JSON parser takes."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgumentError(f"{where} is {value}, which JSON cannot hold")
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidArgumentError(f"{where} has the key {k!r}: JSON keys are strings")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise InvalidArgumentError(f"{where} is of type {type(value).__name__}, which JSON cannot hold")
