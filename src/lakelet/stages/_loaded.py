"""Stage return values this process stored or loaded, remembered by the object holding them.

A cached call loads its value from the stage's output object, verified against its digest and
decoded by its format: the bulk of a cached call's cost. Objects are immutable, so the value
an object decodes to is remembered, for values of immutable types only (a list or a DataFrame
handed out twice could be changed by the caller between calls). Each entry also holds the
object's stat (inode, size, mtime): an object rewritten or torn since (a power cut, a peer's
repair) no longer matches, and is verified and decoded again.

A first run also remembers its own value when the format stores it exactly as it reads it back
(``_EXACT``): what a later cached call returns is what it would have decoded.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["MISS", "Memo", "exact", "recall", "remember", "remember_written"]

MISS = object()  # recall's answer when the value must be loaded
_IMMUTABLE = (int, float, str, bytes, bool, type(None))  # exact types: a subclass may be mutable
# (format, exact type) pairs whose stored bytes decode to an equal value of the same type
_EXACT = {
    ("json", int),
    ("json", float),
    ("json", bool),
    ("json", type(None)),
    ("json", str),
    ("text", str),
    ("bytes", bytes),
}
_MAX = 1 << 14  # values remembered at most
_VALUE_MAX = 64 << 10  # bytes of a stored value remembered (a larger one is decoded again)
_HELD_MAX = 64 << 20  # bytes of the values remembered, all told
_held = 0

Memo = tuple[str, str, str, str]  # (lake root, object digest, format, value kind)
_values: dict[Memo, tuple[str, tuple[int, int, int], Any]] = {}  # -> (object path, its stat, value)


def recall(memo: Memo) -> Any:
    """The value the object ``memo`` names decoded to, or MISS."""
    found = _values.get(memo)
    if found is None or found[1] != _stamp(found[0]):
        return MISS
    return found[2]


def remember(memo: Memo, path: str, value: Any) -> None:
    """Remember ``value``, just decoded from the verified object at ``path``."""
    if type(value) not in _IMMUTABLE:
        return
    stamp = _stamp(path)
    if stamp is None or stamp[1] > _VALUE_MAX:
        return
    global _held
    if len(_values) >= _MAX or _held + stamp[1] > _HELD_MAX:
        _values.clear()
        _held = 0
    _values[memo] = (path, stamp, value)
    _held += stamp[1]


def exact(fmt: str, value: Any) -> bool:
    """Whether ``value``, stored in ``fmt``, reads back as an equal value of the same type."""
    return (fmt, type(value)) in _EXACT


def remember_written(memo: Memo, path: str, value: Any) -> None:
    """Remember the value a run returned and stored at ``path`` in the format ``memo`` names,
    if the format reads it back exactly (else the first cached call decodes it)."""
    if exact(memo[2], value):
        remember(memo, path, value)


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
