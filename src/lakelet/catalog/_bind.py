"""Binding write-once lake names: one segment per batch, under one lock, index kept caught up.

A bind appends one segment of records (``RefStore.append_segment``) numbered
one past the last. Binders take an exclusive ``flock`` on ``names/.lock``
(the kernel drops it when its process dies, so a SIGKILL never leaves it
held), bring the index up to the last segment on disk, check every name of
the batch against the index, and only then append. So two processes binding
one name to different content never both succeed, which a ``link(2)`` per
name used to decide, and a conflict anywhere in a batch writes nothing.

The index records the last segment it applied. A segment whose writer was
killed before it updated the index is found with one ``stat`` of the next
number, by the next binder or by the next lookup that misses.

``gc`` holds the same lock while it decides which objects no name refers to
and deletes them (``_gc``). An add stores its objects before it takes the lock,
so a binder checks, under the lock, that they are all still there: a gc that
ran in between and deleted one makes the bind fail whole, never leaves a name
pointing at nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator

from lakelet.catalog._catalog import Catalog
from lakelet.core import _faults
from lakelet.core.errors import NotFoundError, StorageError
from lakelet.storage._objects import Fingerprint
from lakelet.storage._refs import NameRecord, RefStore, check_same_content
from lakelet.storage._scopes import LAKE

__all__ = ["LOCK", "all_records", "bind_once", "catch_up", "locked"]

LOCK = ".lock"


@contextlib.contextmanager
def locked(refs: RefStore) -> Iterator[None]:
    """Hold the lock of lake-name binding (binders, and gc while it deletes objects)."""
    refs.directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(refs.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def catch_up(catalog: Catalog, refs: RefStore) -> int:
    """Index the segments written since the index last looked; returns the last one applied."""
    applied = catalog.segments_applied() or 0
    while (records := refs.read_segment(applied + 1)) is not None:
        applied += 1
        catalog.apply_segment(applied, records)
    return applied


def bind_once(
    catalog: Catalog,
    refs: RefStore,
    records: list[NameRecord],
    verified: Iterable[tuple[str, Fingerprint]] = (),
    stored: Iterable[tuple[str, str]] = (),
    durable: bool = True,
) -> tuple[list[NameRecord], list[NameRecord]]:
    """Bind write-once lake names, all in one segment.

    Returns (the records this call bound, the records already bound to the same
    content). Raises NameExistsError, before writing anything, if any name is
    bound to other content or was removed, and NotFoundError if one of the
    ``stored`` objects (name, path) is gone. ``verified`` (blobs this process
    just wrote) is indexed in the same transaction as the names. ``durable=False``: the
    segment is not fsynced (derived data, recomputable).
    """
    with locked(refs):
        while True:
            applied = catch_up(catalog, refs)
            bound = catalog.get_many(LAKE, [r.name for r in records])
            for record in records:
                if record.name in bound:
                    check_same_content(bound[record.name], record)
            new = [r for r in records if r.name not in bound]
            same = [bound[r.name] for r in records if r.name in bound]
            if not new:
                with contextlib.suppress(StorageError):  # only fingerprints: reads re-hash
                    catalog.record_verified_many(verified)
                return [], same
            _check_still_stored(stored)
            try:
                refs.append_segment(applied + 1, new, durable)
            except FileExistsError:
                # Written by a binder that did not take the lock (a lakelet older than
                # segments cannot: it binds per-name files). Read it, check again.
                continue
            except OSError as e:
                # The disk refused the segment (full, read-only). A failure after the link (the
                # directory's fsync) leaves it in place: then the names are bound after all.
                if not _holds(refs, applied + 1, new):
                    raise StorageError(
                        f"cannot bind names in {refs.directory}: {e.strerror or e}; nothing was bound",
                        path=str(refs.directory),
                    ) from None
            _faults.reached("names-bound")
            # The names are bound: the segment is durable. An index that cannot take them now
            # (C1: a full disk) catches up from the segment on the next bind or lookup, so
            # this bind succeeded; an error here would tell the caller it had not.
            with contextlib.suppress(StorageError):
                catalog.apply_segment(applied + 1, new, verified)
            return new, same


def _holds(refs: RefStore, seq: int, records: list[NameRecord]) -> bool:
    """Whether segment ``seq`` is on disk and is exactly ``records``."""
    try:
        return refs.segment_path(seq).read_bytes() == NameRecord.lines(records)
    except OSError:
        return False


def _check_still_stored(stored: Iterable[tuple[str, str]]) -> None:
    for name, path in stored:
        if not os.access(path, os.F_OK):
            raise NotFoundError(
                f"the content of {name!r} was deleted by a `lakelet gc` that ran while it was "
                "being added: no name was bound here, add it again"
            )


def all_records(lake_refs: RefStore, refs: Iterable[RefStore]) -> tuple[Iterator[NameRecord], int]:
    """Every record of ``refs`` (the lake's among them), read as they are iterated (a segment
    at a time), and the last lake segment they include, for ``Catalog.rebuild``."""
    # The number is read before the records: a segment appended meanwhile is either among
    # them or caught up later (applying one twice is harmless), never skipped.
    last = lake_refs.last_segment()
    return (r for store in list(refs) for r in store.records()), last
