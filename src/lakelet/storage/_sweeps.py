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

from dataclasses import dataclass
from typing import Any

__all__ = ["Sweep"]


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
        """``at``: the entry (or snapshot) the line was read from."""
        if "swept" in data:
            return cls(int(data["swept"]), done_at=at)
        return cls(int(data["sweep"]), tuple(data["keys"]))
