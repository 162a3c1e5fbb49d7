"""The latest table this process read or committed, per lake and dataset.

The next write of a table of many commits (or the next open) then reads only the commits
after it, not the checkpoint and every commit since. The table is kept with what a fresh
read would parse here — the stat of the checkpoint before it and of each commit since, and
the bytes of its last commit — and used only while they are unchanged: a commit file
replaced, damaged or quarantined here is read (and refused) again as before. Commits are
written once, so a table built from unchanged files is that version's table.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from lakelet.datasets._delta_actions import Snapshot, checkpoint_key, commit_key

__all__ = ["forget_all", "recall", "remember"]

_TABLES = 64
_LATEST: dict[tuple[str, str], tuple[tuple[Any, ...], Snapshot]] = {}


def _signature(root: Path, name: str, version: int, interval: int) -> tuple[Any, ...] | None:
    """None if one of the files a fresh read of ``version`` parses is not here."""
    start = version - version % interval
    keys = [commit_key(name, v) for v in range(start, version + 1)]
    if start:
        keys.append(checkpoint_key(name, start))
    try:
        stats = [os.stat(root / key) for key in keys]
        last = hashlib.sha256((root / commit_key(name, version)).read_bytes()).digest()
    except OSError:
        return None
    return (*((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats), last)


def remember(root: Path, name: str, snapshot: Snapshot, interval: int) -> None:
    signature = _signature(root, name, snapshot.version, interval)
    key = (str(root), name)
    _LATEST.pop(key, None)
    if signature is not None:
        _LATEST[key] = (signature, snapshot)
        while len(_LATEST) > _TABLES:
            del _LATEST[next(iter(_LATEST))]


def recall(root: Path, name: str, delta_version: int, interval: int) -> Snapshot | None:
    """The table remembered for ``name`` if at most ``delta_version``, fewer than ``interval``
    commits before it, and built from files still as they were."""
    entry = _LATEST.get((str(root), name))
    if entry is None:
        return None
    signature, snapshot = entry
    if not 0 <= delta_version - snapshot.version < interval:
        return None
    return snapshot if _signature(root, name, snapshot.version, interval) == signature else None


def forget_all() -> None:
    """What a new process starts with (bench/delta.py times an open so)."""
    _LATEST.clear()
