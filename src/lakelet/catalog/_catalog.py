"""The local index: SQLite (WAL) over the name records, for fast lookups and listings.

The index is derived data. The records under ``names/`` are the truth and
``rebuild`` recreates the index from them, so the index may lag a crash by
one operation (the next write or ``fsck`` repairs it) but never disagrees in
a way that loses a name. For lake names it also remembers the last segment
it applied, so that a lag is found with one ``stat`` (see ``_bind``).

``Catalog`` is cut in parts: its tables (``_schema``), reading names (``_names``), the
remote's side (``_remote_state``, written by ``_apply``); here, opening, transactions,
writing local records, and fingerprints of verified blobs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from lakelet.catalog._apply import KEEP_LOCATION, SPILL, stored_rows
from lakelet.catalog._names import NameQueries, row_to_record
from lakelet.catalog._remote_state import RemoteState
from lakelet.catalog._schema import (
    SCHEMA,
    SCHEMA_VERSION,
    SCOPE,
    upgrade,
    verified_key,
)
from lakelet.core import _faults
from lakelet.core._batch import batch_size
from lakelet.core.errors import StorageError
from lakelet.storage._objects import Fingerprint
from lakelet.storage._refs import NameRecord

__all__ = ["Catalog", "SCHEMA_VERSION"]

_SEGMENTS_APPLIED = "segments_applied"  # the last names/segments/<seq>.jsonl in the index
_STORED = "scope, name, digest, size, batch, removed_at"  # the columns of name_rows a record sets
# a local record over a row: the remote's flag stays only if the content does (_KEEP_REMOTE
# moves the remote's binding aside first when it does not)
_PUT = (
    f"INSERT INTO name_rows ({_STORED}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, name) DO UPDATE SET "
    f"{KEEP_LOCATION}, digest = excluded.digest, size = excluded.size, batch = excluded.batch, "
    "removed_at = excluded.removed_at, remote = name_rows.remote AND name_rows.digest = excluded.digest"
)
_KEEP_REMOTE = (
    "INSERT OR IGNORE INTO remote_other SELECT scope, name, digest FROM name_rows "
    "WHERE scope = ? AND name = ? AND remote AND digest != ?"
)
_SPILL_CHANGED = SPILL + "scope = ? AND name = ? AND (digest != ? OR size != ?)"


# SQLite's result codes for a disk that refuses a write; others (a damaged file) are not ours
_DISK_ERRORS = {
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PERM,
}


# ...and for a file that is no index, or a damaged one: `lakelet fsck` sets it aside and rebuilds
_UNREADABLE = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_Method = TypeVar("_Method", bound=Callable[..., Any])


def _unreadable(e: sqlite3.Error) -> bool:
    return (getattr(e, "sqlite_errorcode", 0) & 0xFF) in _UNREADABLE


def _index_errors(method: _Method) -> _Method:
    """A damaged index found by ``method`` (SQLite finds it page by page, at any query) is one
    StorageError that says to run fsck, and every later use of the index raises it too."""

    @functools.wraps(method)
    def guarded(self: Catalog, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as e:
            if not _unreadable(e):
                raise
            self.unreadable = str(e)
            raise self.unreadable_error() from None

    return guarded  # type: ignore[return-value]


def _guard_public_methods(cls: type[Catalog]) -> type[Catalog]:
    for name in dir(cls):
        member = getattr(cls, name)
        if callable(member) and not name.startswith("_") and name != "unreadable_error":
            setattr(cls, name, _index_errors(member))
    return cls


def _put(db: sqlite3.Connection, records: Iterable[NameRecord]) -> None:
    """Index local ``records`` over whatever rows their names had."""
    for rows in stored_rows(db, records):
        db.executemany(_KEEP_REMOTE, ((scope, name, digest) for scope, name, digest, *_ in rows))
        db.executemany(_SPILL_CHANGED, (row[:4] for row in rows))
        db.executemany(_PUT, rows)
    _settle(db)


def _settle(db: sqlite3.Connection) -> None:
    """Flag the rows now holding what ``remote_other`` says the remote binds their name to (a
    local record of the remote's content); remote_other is small, this costs a lookup each."""
    settled = db.execute(
        "SELECT o.scope, o.name FROM remote_other o JOIN name_rows n "
        "ON n.scope = o.scope AND n.name = o.name AND n.digest = o.digest"
    ).fetchall()
    db.executemany("UPDATE name_rows SET remote = 1 WHERE scope = ? AND name = ?", settled)
    db.executemany("DELETE FROM remote_other WHERE scope = ? AND name = ?", settled)


_BAD_DIGEST = "(typeof({0}) != 'blob' OR length({0}) != 33 OR substr({0}, 1, 1) NOT IN (x'01', x'02'))"
_BAD_COUNT = "(typeof({0}) != 'integer' OR {0} < 0)"
# what the readers of these values refuse (digest_text, _remote_state._count), a table at a time
_DAMAGED = [
    ("digest", f"SELECT 1 FROM name_rows WHERE {_BAD_DIGEST.format('digest')} LIMIT 1"),
    ("digest", f"SELECT 1 FROM remote_other WHERE {_BAD_DIGEST.format('digest')} LIMIT 1"),
    ("digest", f"SELECT 1 FROM packs WHERE {_BAD_DIGEST.format('digest')} LIMIT 1"),
    ("digest", f"SELECT 1 FROM packed WHERE {_BAD_DIGEST.format('digest')} LIMIT 1"),
    (
        "pack location",
        f"SELECT 1 FROM name_rows WHERE pack IS NOT NULL AND ({_BAD_COUNT.format('offset')} "
        "OR pack NOT IN (SELECT id FROM packs)) LIMIT 1",
    ),
    (
        "pack location",
        f"SELECT 1 FROM packed WHERE {_BAD_COUNT.format('offset')} OR {_BAD_COUNT.format('size')} "
        "OR pack NOT IN (SELECT id FROM packs) LIMIT 1",
    ),
]


@_guard_public_methods
class Catalog(NameQueries, RemoteState):
    """Names, scopes and verified-blob fingerprints of one local lake.

    An index SQLite cannot read (damaged, truncated, not a database) does not stop the lake
    from opening: ``unreadable`` says why, every use raises StorageError telling to run
    ``lakelet fsck``, and fsck sets it aside (``set_aside_if_unreadable``) and rebuilds it.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        self.unreadable: str | None = None  # why SQLite cannot read the index, once it said so
        self.fresh = False
        try:
            self._open()
        except sqlite3.DatabaseError as e:
            if not _unreadable(e):
                raise
            self.unreadable = str(e)

    def _open(self) -> None:
        with self._disk_errors():
            db = self._db()
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version in (4, 5, 6):
                version = self._upgrade(version)
            # The index is derived data: an index of another version is dropped and
            # rebuilt from the records by the Lake (``fresh`` tells it to).
            self.fresh = version != SCHEMA_VERSION
            if self.fresh:
                for kind in ("view", "table"):  # a view first: it reads the tables
                    found = db.execute("SELECT name FROM sqlite_master WHERE type = ?", (kind,)).fetchall()
                    for (name,) in found:
                        db.execute(f'DROP {kind.upper()} "{name}"')
            db.executescript(SCHEMA)  # idempotent; executescript manages its own transaction
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def unreadable_error(self) -> StorageError:
        return StorageError(
            f"the lake's index {self._path} is unreadable ({self.unreadable}): "
            "run `lakelet fsck` to set it aside and rebuild it from the name records",
            path=str(self._path),
        )

    def set_aside_if_unreadable(self, quarantine: Path) -> Path | None:
        """If SQLite cannot read the index (or its ``quick_check`` fails), move it and its WAL
        into ``quarantine`` and start an empty one; returns where it went (kept for whoever
        wants to look), None if the index is sound. The caller rebuilds it."""
        if self.unreadable is None:
            try:
                problem = self._db().execute("PRAGMA quick_check(1)").fetchone()[0]
            except sqlite3.DatabaseError as e:
                if not _unreadable(e):
                    raise
                problem = str(e)
            if problem == "ok":
                problem = self._damaged_value() or "ok"
            if problem == "ok":
                return None
            self.unreadable = problem
        self.close()
        quarantine.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = quarantine / f"{self._path.stem}-{stamp}{self._path.suffix}"
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self._path}{suffix}", f"{target}{suffix}")
        self.unreadable = None
        self._open()
        return target

    def _damaged_value(self) -> str | None:
        """What the index holds that no lakelet wrote (a value SQLite reads fine), or None.
        The rows of names learned from the remote have no local record to be rebuilt from:
        an index holding one is set aside whole, and the remote read again."""
        db = self._db()
        for what, query in _DAMAGED:
            if db.execute(query).fetchone():
                return f"it holds a damaged {what}"
        return None

    def _upgrade(self, version: int) -> int:
        """Move an index of schema 4, 5 or 6 to SCHEMA_VERSION in place, in one transaction;
        returns the version now (the old one if its rows are not what a lakelet writes: then it
        is rebuilt).

        Rebuilt instead, it would forget the names it learned from the remote until the next
        sync (a lake with a remote keeps no local record of them), and `ls` would list none."""
        try:
            with self._transaction() as db:
                now: int = db.execute("PRAGMA user_version").fetchone()[0]
                if now != version:  # another process upgraded it meanwhile
                    return now
                version = upgrade(db, version)
                db.execute(f"PRAGMA user_version = {version}")
        except sqlite3.OperationalError as e:  # a digest no lakelet wrote (lakelet_blob raised)
            if "user-defined function" not in str(e):
                raise
        return version

    def _db(self) -> sqlite3.Connection:
        if self.unreadable is not None:
            raise self.unreadable_error()
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._path, timeout=60, isolation_level=None)
            db.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL survives a killed process; after a power cut the
            # index may miss its last writes, which `fsck` restores from records.
            db.execute("PRAGMA synchronous = NORMAL")
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._disk_errors():
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk can end the transaction):
                # a second ROLLBACK would raise and hide the first error.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    @contextmanager
    def _disk_errors(self) -> Iterator[None]:
        """A disk that refuses the index (full, read-only, failing) is a StorageError."""
        try:
            yield
        except sqlite3.Error as e:
            if (getattr(e, "sqlite_errorcode", 0) & 0xFF) not in _DISK_ERRORS:
                raise
            raise StorageError(
                f"cannot write the lake's index {self._path}: {e}", path=str(self._path)
            ) from None
        except OSError as e:
            raise StorageError(
                f"cannot write the lake's index {self._path}: {e.strerror or e}", path=str(self._path)
            ) from None

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def upsert(self, records: Iterable[NameRecord]) -> None:
        with self._transaction() as db:
            _put(db, records)

    # lake-name segments (see _bind)

    def segments_applied(self) -> int | None:
        """The last segment applied; None for an index built before segments existed."""
        value = self.get_state(_SEGMENTS_APPLIED)
        return int(value) if value is not None else None

    def apply_segment(
        self, seq: int, records: Iterable[NameRecord], verified: Iterable[tuple[str, Fingerprint]] = ()
    ) -> None:
        """Index the records of segment ``seq`` (and blobs just written and verified), in one
        transaction.

        Applying is idempotent and may race another process applying the same segment: a
        segment only ever holds first bindings, so an existing row for one of its names is
        that record already applied, or its tombstone, and is kept.
        """
        with self._transaction() as db:
            for rows in stored_rows(db, records):
                db.executemany(f"INSERT OR IGNORE INTO name_rows ({_STORED}) VALUES (?, ?, ?, ?, ?, ?)", rows)
            _settle(db)
            db.executemany(
                "INSERT OR REPLACE INTO verified VALUES (?, ?, ?, ?, ?)",
                ((verified_key(key), *fp) for key, fp in verified),
            )
            row = db.execute("SELECT value FROM state WHERE key = ?", (_SEGMENTS_APPLIED,)).fetchone()
            if row is None or int(row[0]) < seq:
                db.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (_SEGMENTS_APPLIED, str(seq)))
            _faults.reached("segment-indexed")  # before the commit

    def delete(self, scope: str, names: Iterable[str]) -> None:
        with self._transaction() as db:
            for name in names:  # (what the remote binds is kept)
                db.execute(
                    f"INSERT OR IGNORE INTO remote_other SELECT scope, name, digest FROM name_rows "
                    f"WHERE scope = {SCOPE} AND name = ? AND remote",
                    (scope, name),
                )
                db.execute(f"{SPILL}scope = {SCOPE} AND name = ?", (scope, name))
                db.execute(f"DELETE FROM name_rows WHERE scope = {SCOPE} AND name = ?", (scope, name))

    def drop_scope(self, scope: str) -> None:
        with self._transaction() as db:
            db.execute(
                f"INSERT OR IGNORE INTO remote_other SELECT scope, name, digest FROM name_rows "
                f"WHERE scope = {SCOPE} AND remote",
                (scope,),
            )
            db.execute(f"{SPILL}scope = {SCOPE}", (scope,))
            db.execute(f"DELETE FROM name_rows WHERE scope = {SCOPE}", (scope,))

    def rebuild(self, records: Iterable[NameRecord], segments_applied: int) -> int:
        """Re-index the local ``records``, which include lake segments up to at least
        ``segments_applied``; returns how many names are indexed.

        Names known only from the remote have no local record: they are kept
        (the remote holds their record, and a sync re-reads it).
        """
        with self._transaction() as db:
            db.execute(f"{SPILL}NOT remote")
            db.execute("DELETE FROM name_rows WHERE NOT remote")
            db.execute("DELETE FROM verified")
            _put(db, records)
            db.execute("DELETE FROM batches WHERE id NOT IN (SELECT batch FROM name_rows)")
            db.execute(
                "INSERT OR REPLACE INTO state VALUES (?, ?)", (_SEGMENTS_APPLIED, str(segments_applied))
            )
            count: int = db.execute("SELECT count(*) FROM name_rows").fetchone()[0]
            return count

    def _record_pages(self, query: str, scope: str) -> Iterator[list[NameRecord]]:
        """The records ``query`` selects (its parameters: scope, the name to start after, a
        limit), a page of ``batch_size`` at a time, by name: never all of them held."""
        after = ""
        while True:
            page = batch_size()
            rows = self._db().execute(query, (scope, after, page)).fetchall()
            if rows:
                yield [row_to_record(row) for row in rows]
            if len(rows) < page:
                return
            after = rows[-1][1]

    def get_state(self, key: str) -> str | None:
        row = self._db().execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_state(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, value))

    # verified blobs (see _objects.VerifiedReader)

    def verified_fingerprint(self, key: str) -> Fingerprint | None:
        row = (
            self._db()
            .execute("SELECT ino, size, mtime_ns, ctime_ns FROM verified WHERE key = ?", (verified_key(key),))
            .fetchone()
        )
        return tuple(row) if row else None

    def record_verified(self, key: str, fingerprint: Fingerprint) -> None:
        self.record_verified_many([(key, fingerprint)])

    def record_verified_many(self, entries: Iterable[tuple[str, Fingerprint]]) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO verified VALUES (?, ?, ?, ?, ?)",
                ((verified_key(key), *fp) for key, fp in entries),
            )
