"""Sweep lines: how a remote gc announces in the log what it is about to delete.

A remote is a bare object store: there is no lock a gc could hold while a push
binds names, and objects are content-addressed, so a push that sends an object
again writes the very key a gc may be deleting. The log is what orders them:
gc appends an entry holding a sweep line (the keys it is about to delete,
checked against every entry before it) and only then deletes; once done, it
appends a line saying so. A push appends its entry after reading every entry
before it, so either the gc's sweep came first and the push sees which keys
it must not rely on, or the push's entry came first and the gc saw its names.
docs/remote-layout.md ("gc against a push") has the whole argument.

Both kinds of line carry ``"pack": ""`` and ``"members": []``: a lakelet from
before sweeps reads any line with ``"pack"`` as a pack line, so to it these are
empty packs, which it ignores, and the log stays readable by it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lakelet.core._records import check_count, shown
from lakelet.core.errors import CorruptRecordError

__all__ = ["Sweep"]

# the keys a sweep may name: a loose object, or a pack (named by the digest of its bytes)
_KEY = re.compile(
    r"objects/(?:blake3|sha256)/[0-9a-f]{2}/[0-9a-f]{62}|packs/(?:blake3|sha256)/[0-9a-f]{2}/[0-9a-f]{62}\.pack"
)
_SWEEP_FIELDS = {"pack", "members", "sweep", "keys"}
_SWEPT_FIELDS = {"pack", "members", "swept"}


@dataclass(frozen=True, slots=True)
class Sweep:
    """Sweep ``seq`` (the log entry announcing it) deletes ``keys``; or, with ``done_at``,
    the line of entry ``done_at`` saying sweep ``seq`` has finished deleting."""

    seq: int
    keys: tuple[str, ...] = ()
    done_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.done_at is not None:
            return {"pack": "", "members": [], "swept": self.seq}
        return {"pack": "", "members": [], "sweep": self.seq, "keys": list(self.keys)}

    @staticmethod
    def is_line(data: dict[str, Any]) -> bool:
        return "sweep" in data or "swept" in data

    @classmethod
    def from_dict(cls, data: dict[str, Any], at: int) -> Sweep:
        """The one validating parser of a sweep line; ``at``: the entry (or snapshot) it was
        read from. A sweep is announced in its own entry and said done in a later one (a
        snapshot holds sweeps announced up to it); every key names an object or a pack.
        Raises CorruptRecordError saying what is wrong."""
        fields = data.keys()
        if fields not in (_SWEEP_FIELDS, _SWEPT_FIELDS) or data["pack"] != "" or data["members"] != []:
            raise CorruptRecordError(f"a sweep line with the fields {shown(sorted(fields))}")
        if "swept" in data:
            seq = check_count(data["swept"], "the sweep a line says is done")
            if not 0 < seq < at:
                raise CorruptRecordError(f"entry {at} says sweep {seq} is done: no entry before announced it")
            return cls(seq, done_at=at)
        seq, keys = check_count(data["sweep"], "a sweep's entry"), data["keys"]
        if not 0 < seq <= at:
            raise CorruptRecordError(f"sweep {seq} announced in entry {at}")
        if not isinstance(keys, list) or not all(isinstance(k, str) and _KEY.fullmatch(k) for k in keys):
            raise CorruptRecordError(f"sweep {seq} names keys that are neither objects nor packs")
        return cls(seq, tuple(keys))
