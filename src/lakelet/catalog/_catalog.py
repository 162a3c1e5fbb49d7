"""The local index: SQLite (WAL) over the name records, for fast lookups and listings.

The index is derived data. The records under ``names/`` are the truth and
``rebuild`` recreates the index from them, so the index may lag a crash by
one operation (the next write or ``fsck`` repairs it) but never disagrees in
a way that loses a name. For lake names it also remembers the last segment
it applied, so that a lag is found with one ``stat`` (see ``_bind``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from lakelet.core import _faults
from lakelet.core._batch import batch_size, batched
from lakelet.core.errors import StorageError
from lakelet.storage._objects import Fingerprint
from lakelet.storage._packs import Member, Pack
from lakelet.storage._refs import NameRecord, SnapshotPiece
from lakelet.storage._sweeps import Sweep

__all__ = ["Catalog", "SCHEMA_VERSION"]

# 4: sweeps. An index of 3 is rebuilt, and so reads the remote's log again: it may have
# skipped sweep lines that a push must know of (docs/remote-layout.md, "gc against a push").
# 5: the facts a batch of names shares (time, creator, meta) in ``batches``, once, not per
# name; pack digests in ``packs``, once, not per member. An older index is rebuilt.
SCHEMA_VERSION = 5
_SCHEMA = """
-- the facts a batch of names shares (an add's time, creator, source and environment), once
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    creator TEXT NOT NULL,
    meta TEXT NOT NULL,
    UNIQUE (created_at, creator, meta)
);
CREATE TABLE IF NOT EXISTS name_rows (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    removed_at TEXT,
    PRIMARY KEY (scope, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS names_by_digest ON name_rows (digest);
-- what readers see: a record per row
CREATE VIEW IF NOT EXISTS names AS SELECT n.scope, n.name, n.digest, n.size, b.created_at, b.creator,
    b.meta, n.removed_at FROM name_rows n JOIN batches b ON b.id = n.batch;
-- what the remote binds each name to (learned from its log, or bound there by us)
CREATE TABLE IF NOT EXISTS on_remote (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (scope, name)
) WITHOUT ROWID;
-- where the remote keeps small objects: inside which pack, at which offset (see _packs);
-- the newest pack line for a digest wins (an older pack may have been deleted by gc)
CREATE TABLE IF NOT EXISTS packs (id INTEGER PRIMARY KEY, digest TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS packed (
    digest TEXT PRIMARY KEY,
    pack INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    size INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS packed_by_pack ON packed (pack);
-- the remote gc sweeps the log announced: the keys each is deleting, and the entry that said
-- it was done (none yet: it may still be deleting them)
CREATE TABLE IF NOT EXISTS sweeps (seq INTEGER NOT NULL, key TEXT NOT NULL, PRIMARY KEY (seq, key))
    WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sweeps_by_key ON sweeps (key);
CREATE TABLE IF NOT EXISTS sweeps_done (seq INTEGER PRIMARY KEY, done_at INTEGER NOT NULL);
-- small settings: the last log entry applied, the last sync time
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS verified (
    key TEXT PRIMARY KEY,
    ino INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL
) WITHOUT ROWID;
"""
# schema 4 -> 5: the shared facts and pack digests move out; the indexes and the view are
# then made by _SCHEMA
_UPGRADE_FROM_4 = [
    "CREATE TABLE batches (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, creator TEXT NOT NULL, "
    "meta TEXT NOT NULL, UNIQUE (created_at, creator, meta))",
    "INSERT INTO batches (created_at, creator, meta) SELECT DISTINCT created_at, creator, meta FROM names",
    "CREATE TABLE name_rows (scope TEXT NOT NULL, name TEXT NOT NULL, digest TEXT NOT NULL, "
    "size INTEGER NOT NULL, batch INTEGER NOT NULL, removed_at TEXT, PRIMARY KEY (scope, name)) "
    "WITHOUT ROWID",
    "INSERT INTO name_rows SELECT n.scope, n.name, n.digest, n.size, b.id, n.removed_at FROM names n "
    "JOIN batches b ON b.created_at = n.created_at AND b.creator = n.creator AND b.meta = n.meta",
    "DROP TABLE names",
    "CREATE TABLE packs (id INTEGER PRIMARY KEY, digest TEXT NOT NULL UNIQUE)",
    "INSERT INTO packs (digest) SELECT DISTINCT pack FROM packed",
    "CREATE TABLE packed_5 (digest TEXT PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL, "
    "size INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT INTO packed_5 SELECT m.digest, p.id, m.offset, m.size FROM packed m "
    "JOIN packs p ON p.digest = m.pack",
    "DROP TABLE packed",
    "ALTER TABLE packed_5 RENAME TO packed",
]
_COLUMNS = "scope, name, digest, size, created_at, creator, meta, removed_at"
_STORED = "scope, name, digest, size, batch, removed_at"  # the columns of name_rows
_INSERT = f"INSERT OR REPLACE INTO name_rows ({_STORED}) VALUES (?, ?, ?, ?, ?, ?)"
_SEGMENTS_APPLIED = "segments_applied"  # the last names/segments/<seq>.jsonl in the index
# (a query by digest says ``+scope``: every name of a lake may share one scope, and SQLite,
# without statistics, would rather scan the scope's part of the primary key than the digests)
_IN_CHUNK = 500  # names per IN (...) query, well under SQLite's bound-parameter limit
# Catalog.apply_remote's work inside an open transaction: (seq, records, packs, sweeps) -> refused
_ApplyRemote = Callable[
    [int, Iterable[NameRecord], Iterable[Pack], Iterable[Sweep]], list[tuple[NameRecord, str]]
]
# a row of ``names``: scope, name, digest, size, created_at, creator, meta (JSON), removed_at
_Row = tuple[str, str, str, int, str, str, str, str | None]
# a row of ``name_rows``: scope, name, digest, size, batch, removed_at
_StoredRow = tuple[str, str, str, int, int, str | None]


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
    for name, member in list(vars(cls).items()):
        if callable(member) and not name.startswith("_") and name != "unreadable_error":
            setattr(cls, name, _index_errors(member))
    return cls


def _prefix_bounds(prefix: str) -> tuple[str, str]:
    # SQLite compares TEXT bytewise (UTF-8); no valid name character sorts above U+10FFFF.
    return prefix, prefix + "\U0010ffff"


def _row_to_record(row: _Row) -> NameRecord:
    scope, name, digest, size, created_at, creator, meta, removed_at = row
    return NameRecord(scope, name, digest, size, created_at, creator, json.loads(meta), removed_at)


def _rows(db: sqlite3.Connection, records: Iterable[NameRecord]) -> Iterator[list[_StoredRow]]:
    """The rows of ``records``, a batch at a time, each pointing at its batch of shared facts
    (made when new). The records of one add share one meta dict: it is encoded once, not once
    per name (the key holds the dict, so its id cannot be reused meanwhile)."""
    ids: dict[tuple[str, str, int], tuple[dict[str, Any], int]] = {}
    for chunk in batched(records):
        rows = []
        for r in chunk:
            key = (r.created_at, r.creator, id(r.meta))
            hit = ids.get(key)
            if hit is None:
                hit = ids[key] = (
                    r.meta,
                    _batch_id(db, r.created_at, r.creator, json.dumps(r.meta, sort_keys=True)),
                )
            rows.append((r.scope, r.name, r.digest, r.size, hit[1], r.removed_at))
        yield rows


def _batch_id(db: sqlite3.Connection, created_at: str, creator: str, meta: str) -> int:
    db.execute(
        "INSERT OR IGNORE INTO batches (created_at, creator, meta) VALUES (?, ?, ?)",
        (created_at, creator, meta),
    )
    row = db.execute(
        "SELECT id FROM batches WHERE created_at = ? AND creator = ? AND meta = ?",
        (created_at, creator, meta),
    ).fetchone()
    return int(row[0])


def _insert(db: sqlite3.Connection, statement: str, records: Iterable[NameRecord]) -> None:
    for rows in _rows(db, records):
        db.executemany(statement, rows)


def _pack_id(db: sqlite3.Connection, digest: str) -> int:
    db.execute("INSERT OR IGNORE INTO packs (digest) VALUES (?)", (digest,))
    return int(db.execute("SELECT id FROM packs WHERE digest = ?", (digest,)).fetchone()[0])


def _first_bindings(
    db: sqlite3.Connection, records: list[NameRecord]
) -> tuple[list[NameRecord], list[tuple[NameRecord, str]]]:
    """Of the remote's ``records`` (in log order), those to apply, and those refused with the
    digest the remote already binds their name to (see ``Catalog.apply_remote``)."""
    bound: dict[tuple[str, str], str] = {}
    for scope in {r.scope for r in records}:
        names = [r.name for r in records if r.scope == scope]
        for i in range(0, len(names), _IN_CHUNK):
            chunk = names[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT name, digest FROM on_remote WHERE scope = ? AND name IN ({marks})", (scope, *chunk)
            )
            bound.update(((scope, name), digest) for name, digest in rows)
    kept: list[NameRecord] = []
    refused: list[tuple[NameRecord, str]] = []
    for record in records:
        key = (record.scope, record.name)
        there = bound.get(key)
        if there is None:  # its first binding
            bound[key] = record.digest
            kept.append(record)
        elif there != record.digest:
            refused.append((record, there))
        elif record.removed_at is not None:  # a tombstone of the same content
            kept.append(record)
        # else: the same binding again; the first one's record stays
    return kept, refused


def _apply_remote(
    db: sqlite3.Connection,
    seq: int,
    records: Iterable[NameRecord],
    packs: Iterable[Pack],
    sweeps: Iterable[Sweep] = (),
) -> list[tuple[NameRecord, str]]:
    """``Catalog.apply_remote`` inside the transaction of ``db``."""
    records, refused = _first_bindings(db, list(records))
    _insert(
        db,
        f"INSERT INTO name_rows ({_STORED}) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (scope, name) DO UPDATE SET digest = excluded.digest, "
        "size = excluded.size, batch = excluded.batch, removed_at = excluded.removed_at "
        "WHERE name_rows.digest = excluded.digest OR EXISTS (SELECT 1 FROM on_remote r "
        "WHERE r.scope = name_rows.scope AND r.name = name_rows.name AND r.digest = name_rows.digest)",
        records,
    )
    db.executemany(
        "INSERT OR REPLACE INTO on_remote VALUES (?, ?, ?)",
        ((r.scope, r.name, r.digest) for r in records),
    )
    for p in packs:
        pack = _pack_id(db, p.digest)
        db.executemany(
            "INSERT OR REPLACE INTO packed VALUES (?, ?, ?, ?)",
            ((m.digest, pack, m.offset, m.size) for m in p.members),
        )
    for sweep in sweeps:
        if sweep.done_at is None:
            db.executemany(
                "INSERT OR IGNORE INTO sweeps VALUES (?, ?)", ((sweep.seq, key) for key in sweep.keys)
            )
        else:
            db.execute("INSERT OR IGNORE INTO sweeps_done VALUES (?, ?)", (sweep.seq, sweep.done_at))
    db.execute("INSERT OR REPLACE INTO state VALUES ('log_seq', ?)", (str(seq),))
    return refused


@_guard_public_methods
class Catalog:
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
            if version == 4:
                version = self._upgrade_from_4()
            # The index is derived data: an index of another version is dropped and
            # rebuilt from the records by the Lake (``fresh`` tells it to).
            self.fresh = version != SCHEMA_VERSION
            if self.fresh:
                for kind in ("view", "table"):  # a view first: it reads the tables
                    found = db.execute("SELECT name FROM sqlite_master WHERE type = ?", (kind,)).fetchall()
                    for (name,) in found:
                        db.execute(f'DROP {kind.upper()} "{name}"')
            db.executescript(_SCHEMA)  # idempotent; executescript manages its own transaction
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

    def _upgrade_from_4(self) -> int:
        """Move an index of schema 4 to 5 in place, in one transaction; returns the version now.

        Rebuilt instead, it would forget the names it learned from the remote until the next
        sync (a lake with a remote keeps no local record of them), and `ls` would list none."""
        with self._transaction() as db:
            version: int = db.execute("PRAGMA user_version").fetchone()[0]
            if version != 4:  # another process upgraded it meanwhile
                return version
            for statement in _UPGRADE_FROM_4:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return SCHEMA_VERSION

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

    # names

    def get(self, scope: str, name: str) -> NameRecord | None:
        row = (
            self._db()
            .execute(f"SELECT {_COLUMNS} FROM names WHERE scope = ? AND name = ?", (scope, name))
            .fetchone()
        )
        return _row_to_record(row) if row else None

    def records(self, scope: str, prefix: str = "", include_removed: bool = False) -> list[NameRecord]:
        return list(self.iter_records(scope, prefix, include_removed))

    def iter_records(
        self,
        scope: str,
        prefix: str = "",
        include_removed: bool = False,
        *,
        after: str = "",
        limit: int | None = None,
    ) -> Iterator[NameRecord]:
        """The records of ``scope`` whose names start with ``prefix``, by name, from the first
        name past ``after``, at most ``limit`` of them. Read a batch at a time (``batch_size``),
        each page by one query that starts where the last ended: no read transaction stays
        open between pages, so writers and checkpoints go on while a caller iterates."""
        low, high = _prefix_bounds(prefix)
        live = "" if include_removed else "AND removed_at IS NULL "
        query = (
            f"SELECT {_COLUMNS} FROM names WHERE scope = ? AND name >= ? AND name < ? AND name > ? "
            f"{live}ORDER BY name LIMIT ?"
        )
        left = limit
        while left is None or left > 0:
            page = batch_size() if left is None else min(left, batch_size())
            rows = self._db().execute(query, (scope, low, high, after, page)).fetchall()
            yield from map(_row_to_record, rows)
            if len(rows) < page:
                return
            after = rows[-1][1]
            left = None if left is None else left - len(rows)

    def names(self, scope: str, prefix: str = "") -> list[str]:
        low, high = _prefix_bounds(prefix)
        rows = self._db().execute(
            "SELECT name FROM name_rows WHERE scope = ? AND name >= ? AND name < ? "
            "AND removed_at IS NULL ORDER BY name",
            (scope, low, high),
        )
        return [row[0] for row in rows]

    def listing(self, scope: str, prefix: str = "") -> list[tuple[str, str, int, str]]:
        """(name, digest, size, created_at) of the live names starting with ``prefix``, by name:
        what a file listing shows, without decoding each name's metadata."""
        low, high = _prefix_bounds(prefix)
        rows = self._db().execute(
            "SELECT name, digest, size, created_at FROM names WHERE scope = ? AND name >= ? AND name < ? "
            "AND removed_at IS NULL ORDER BY name",
            (scope, low, high),
        )
        return rows.fetchall()

    def totals(self, scope: str) -> tuple[int, int]:
        """(live names, their bytes) of ``scope``: what a notebook shows of a lake."""
        row = (
            self._db()
            .execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM names WHERE scope = ? AND removed_at IS NULL",
                (scope,),
            )
            .fetchone()
        )
        return int(row[0]), int(row[1])

    def recent(self, scope: str, limit: int) -> list[NameRecord]:
        """The ``limit`` live names of ``scope`` bound last, newest first."""
        rows = self._db().execute(
            f"SELECT {_COLUMNS} FROM names WHERE scope = ? AND removed_at IS NULL "
            "ORDER BY created_at DESC, name LIMIT ?",
            (scope, limit),
        )
        return [_row_to_record(row) for row in rows]

    def first_with_digest(self, scope: str, digest: str) -> NameRecord | None:
        """The live name of ``scope`` bound to ``digest`` first (then by name), if any."""
        row = (
            self._db()
            .execute(
                f"SELECT {_COLUMNS} FROM names WHERE digest = ? AND +scope = ? AND removed_at IS NULL "
                "ORDER BY created_at, name LIMIT 1",
                (digest, scope),
            )
            .fetchone()
        )
        return _row_to_record(row) if row else None

    def has_prefix(self, scope: str, prefix: str) -> bool:
        """Whether a live name of ``scope`` starts with ``prefix`` (one index probe)."""
        low, high = _prefix_bounds(prefix)
        row = (
            self._db()
            .execute(
                "SELECT 1 FROM name_rows WHERE scope = ? AND name >= ? AND name < ? AND removed_at IS NULL "
                "LIMIT 1",
                (scope, low, high),
            )
            .fetchone()
        )
        return row is not None

    def scopes(self) -> list[str]:
        return [row[0] for row in self._db().execute("SELECT DISTINCT scope FROM name_rows")]

    def get_many(self, scope: str, names: Iterable[str]) -> dict[str, NameRecord]:
        """The records of those ``names`` that the index holds, by name."""
        names = list(names)
        db = self._db()
        found: dict[str, NameRecord] = {}
        for i in range(0, len(names), _IN_CHUNK):
            chunk = names[i : i + _IN_CHUNK]
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM names WHERE scope = ? AND name IN ({','.join('?' * len(chunk))})",
                (scope, *chunk),
            )
            found.update((row[1], _row_to_record(row)) for row in rows)
        return found

    def live_holders(self, scope: str, digests: Iterable[str]) -> Iterator[tuple[str, str]]:
        """(digest, name) of each live name of ``scope`` holding one of ``digests``."""
        db = self._db()
        digests = list(digests)
        for i in range(0, len(digests), _IN_CHUNK):
            chunk = digests[i : i + _IN_CHUNK]
            yield from db.execute(
                f"SELECT digest, name FROM name_rows WHERE digest IN ({','.join('?' * len(chunk))}) "
                "AND +scope = ? AND removed_at IS NULL",
                (*chunk, scope),
            ).fetchall()

    def with_digests(self, scope: str, digests: Iterable[str]) -> Iterator[NameRecord]:
        """Every record of ``scope`` (tombstones too) holding one of ``digests``."""
        db = self._db()
        digests = list(digests)
        for i in range(0, len(digests), _IN_CHUNK):
            chunk = digests[i : i + _IN_CHUNK]
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM names WHERE digest IN ({','.join('?' * len(chunk))}) AND +scope = ?",
                (*chunk, scope),
            ).fetchall()
            yield from map(_row_to_record, rows)

    def upsert(self, records: Iterable[NameRecord]) -> None:
        with self._transaction() as db:
            _insert(db, _INSERT, records)

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
            _insert(db, f"INSERT OR IGNORE INTO name_rows ({_STORED}) VALUES (?, ?, ?, ?, ?, ?)", records)
            db.executemany(
                "INSERT OR REPLACE INTO verified VALUES (?, ?, ?, ?, ?)",
                ((key, *fp) for key, fp in verified),
            )
            row = db.execute("SELECT value FROM state WHERE key = ?", (_SEGMENTS_APPLIED,)).fetchone()
            if row is None or int(row[0]) < seq:
                db.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (_SEGMENTS_APPLIED, str(seq)))
            _faults.reached("segment-indexed")  # before the commit

    def delete(self, scope: str, names: Iterable[str]) -> None:
        with self._transaction() as db:
            db.executemany("DELETE FROM name_rows WHERE scope = ? AND name = ?", ((scope, n) for n in names))

    def drop_scope(self, scope: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM name_rows WHERE scope = ?", (scope,))

    def rebuild(self, records: Iterable[NameRecord], segments_applied: int) -> int:
        """Re-index the local ``records``, which include lake segments up to at least
        ``segments_applied``; returns how many names are indexed.

        Names known only from the remote have no local record: they are kept
        (the remote holds their record, and a sync re-reads it).
        """
        with self._transaction() as db:
            db.execute(
                "DELETE FROM name_rows WHERE NOT EXISTS (SELECT 1 FROM on_remote r "
                "WHERE r.scope = name_rows.scope AND r.name = name_rows.name AND r.digest = name_rows.digest)"
            )
            db.execute("DELETE FROM verified")
            _insert(db, _INSERT, records)
            db.execute("DELETE FROM batches WHERE id NOT IN (SELECT batch FROM name_rows)")
            db.execute(
                "INSERT OR REPLACE INTO state VALUES (?, ?)", (_SEGMENTS_APPLIED, str(segments_applied))
            )
            count: int = db.execute("SELECT count(*) FROM name_rows").fetchone()[0]
            return count

    # what the remote holds (see _sync)

    def remote_digests(self, scope: str, prefix: str = "") -> dict[str, str]:
        low, high = _prefix_bounds(prefix)
        rows = self._db().execute(
            "SELECT name, digest FROM on_remote WHERE scope = ? AND name >= ? AND name < ?",
            (scope, low, high),
        )
        return dict(rows.fetchall())

    def not_on_remote(self, scope: str) -> list[NameRecord]:
        """Live names whose record the remote is not known to hold: what ``push`` sends."""
        return [r for batch in self.unpushed_batches(scope) for r in batch]

    def unpushed_batches(self, scope: str) -> Iterator[list[NameRecord]]:
        """``not_on_remote``, a batch (``batch_size``) at a time, by name."""
        query = (
            f"SELECT {', '.join('n.' + c for c in _COLUMNS.split(', '))} FROM names n "
            "LEFT JOIN on_remote r ON r.scope = n.scope AND r.name = n.name AND r.digest = n.digest "
            "WHERE n.scope = ? AND n.name > ? AND n.removed_at IS NULL AND r.name IS NULL "
            "ORDER BY n.name LIMIT ?"
        )
        return self._record_pages(query, scope)

    def _record_pages(self, query: str, scope: str) -> Iterator[list[NameRecord]]:
        """The records ``query`` selects (its parameters: scope, the name to start after, a
        limit), a page of ``batch_size`` at a time, by name: never all of them held."""
        after = ""
        while True:
            page = batch_size()
            rows = self._db().execute(query, (scope, after, page)).fetchall()
            if rows:
                yield [_row_to_record(row) for row in rows]
            if len(rows) < page:
                return
            after = rows[-1][1]

    def count_not_on_remote(self, scope: str) -> int:
        count: int = (
            self._db()
            .execute(
                "SELECT count(*) FROM name_rows n WHERE n.scope = ? AND n.removed_at IS NULL AND NOT EXISTS "
                "(SELECT 1 FROM on_remote r WHERE r.scope = n.scope AND r.name = n.name "
                "AND r.digest = n.digest)",
                (scope,),
            )
            .fetchone()[0]
        )
        return count

    def unpushed_digests(self, scope: str, digests: Iterable[str]) -> set[str]:
        """Those of ``digests`` that a live name not known to be on the remote holds."""
        db = self._db()
        digests = list(digests)
        found: set[str] = set()
        for i in range(0, len(digests), _IN_CHUNK):
            chunk = digests[i : i + _IN_CHUNK]
            rows = db.execute(
                "SELECT DISTINCT n.digest FROM name_rows n WHERE +n.scope = ? AND n.removed_at IS NULL "
                f"AND n.digest IN ({','.join('?' * len(chunk))}) AND NOT EXISTS (SELECT 1 FROM on_remote r "
                "WHERE r.scope = n.scope AND r.name = n.name AND r.digest = n.digest)",
                (scope, *chunk),
            )
            found.update(row[0] for row in rows)
        return found

    def apply_remote(
        self, seq: int, records: Iterable[NameRecord], packs: Iterable[Pack], sweeps: Iterable[Sweep] = ()
    ) -> list[tuple[NameRecord, str]]:
        """Index records, pack and sweep lines of the remote's log up to entry ``seq``, in one
        transaction. Returns the records refused: (record, the digest the remote binds its
        name to).

        A name is bound by the first record that holds it (docs/remote-layout.md): a later
        record of that name applies only as a tombstone of the same content; one binding it
        to other content (a forged entry or snapshot) is refused, so a name never changes
        content here, and every machine agrees on it whatever the order it learned the log in.
        A name bound here but not on the remote (a deferred push that lost a race) keeps its
        local record, so it stays visible as unpushed; ``on_remote`` holds the remote's digest.
        """
        with self.applying_remote() as apply:
            return apply(seq, records, packs, sweeps)

    def load_snapshot(self, seq: int, pieces: Iterable[SnapshotPiece]) -> int:
        """Index a remote snapshot taken after entry ``seq`` into an index with no remote state
        yet (a new machine's first sync, fsck's rebuild), piece by piece, in one transaction:
        an exception from ``pieces`` (a bad piece) rolls it all back. Leaves exactly what
        ``apply_remote`` of the same records, packs and sweeps would. Returns the names loaded.

        (A simple implementation through ``apply_remote``'s work: a batch's facts are decoded
        once, and its records share one meta dict, so each is encoded once.)"""
        shared: dict[int, tuple[str, str, dict[str, Any]]] = {}
        loaded = 0
        with self.applying_remote() as apply:
            for piece in pieces:
                for number, created_at, creator, meta_text in piece.shared:
                    shared[number] = (created_at, creator, json.loads(meta_text))
                records = []
                for scope, name, digest, size, batch, removed_at in zip(
                    piece.scopes,
                    piece.names,
                    piece.digests,
                    piece.sizes,
                    piece.batches,
                    piece.removed_at,
                    strict=True,
                ):
                    created_at, creator, meta = shared[batch]
                    records.append(
                        NameRecord(scope, name, digest, size, created_at, creator, meta, removed_at)
                    )
                refused = apply(seq, records, piece.packs, piece.sweeps)
                loaded += len(records) - len(refused)
            apply(seq, [], [], [])  # log_seq, even for a snapshot of nothing
        return loaded

    @contextmanager
    def applying_remote(self) -> Iterator[_ApplyRemote]:
        """One transaction over many calls of ``apply_remote``'s work (a snapshot read in
        pieces, a run of log entries): all of them apply, or, when the block raises, none."""
        # (SQLite's page cache stays at its 2 MiB default: raised to 256 MiB for a first sync it
        # halved the time, but the peak RSS grew with the lake, 685 MiB at 1 M names, 1.3 GiB
        # at 2 M, where it stays at ~90 MiB at its default: bench/README.md)
        with self._transaction() as db:
            yield functools.partial(_apply_remote, db)

    def remote_bindings(self, scope: str, names: Iterable[str]) -> dict[str, tuple[str, bool]]:
        """name -> (digest, removed) as the remote binds it, for the names it binds."""
        db = self._db()
        query = (
            "SELECT r.digest, n.removed_at IS NOT NULL FROM on_remote r LEFT JOIN name_rows n "
            "ON n.scope = r.scope AND n.name = r.name AND n.digest = r.digest "
            "WHERE r.scope = ? AND r.name = ?"
        )
        out = {}
        for name in names:
            row = db.execute(query, (scope, name)).fetchone()
            if row is not None:
                out[name] = (row[0], bool(row[1]))
        return out

    def pack_locations(self, digests: Iterable[str]) -> dict[str, tuple[str, Member]]:
        """digest -> (pack digest, where in it) for the digests the remote keeps in packs."""
        db = self._db()
        out = {}
        for d in digests:
            row = db.execute(
                "SELECT p.digest, m.offset, m.size FROM packed m JOIN packs p ON p.id = m.pack "
                "WHERE m.digest = ?",
                (d,),
            ).fetchone()
            if row is not None:
                out[d] = (row[0], Member(d, row[1], row[2]))
        return out

    def packs(self) -> Iterator[Pack]:
        """Every pack the remote's log mentions, with its members, one pack at a time."""
        query = "SELECT digest, offset, size FROM packed WHERE pack = ? ORDER BY offset"
        db = self._db()
        # the packs first (one per ~1,000 members), then each pack's members
        for pack, digest in db.execute("SELECT id, digest FROM packs ORDER BY digest").fetchall():
            members = tuple(Member(*row) for row in db.execute(query, (pack,)))
            if members:  # (every member since placed in a newer pack)
                yield Pack(digest, members)

    def pack_members(self, pack: str) -> list[str]:
        """The digests the log places in ``pack``."""
        rows = self._db().execute(
            "SELECT m.digest FROM packed m JOIN packs p ON p.id = m.pack WHERE p.digest = ?", (pack,)
        )
        return [row[0] for row in rows]

    def swept(self, keys: Iterable[str], since: int) -> set[str]:
        """Those of ``keys`` that a sweep deletes, or may still delete, after log entry ``since``:
        one not done yet, or done in a later entry."""
        db = self._db()
        keys = list(keys)
        found: set[str] = set()
        for i in range(0, len(keys), _IN_CHUNK):
            chunk = keys[i : i + _IN_CHUNK]
            rows = db.execute(
                "SELECT DISTINCT s.key FROM sweeps s LEFT JOIN sweeps_done d ON d.seq = s.seq "
                f"WHERE s.key IN ({','.join('?' * len(chunk))}) AND (d.done_at IS NULL OR d.done_at > ?)",
                (*chunk, since),
            )
            found.update(row[0] for row in rows)
        return found

    def open_sweeps(self) -> list[Sweep]:
        """The sweeps not known to be done, with their keys (for a snapshot)."""
        keys: dict[int, list[str]] = {}
        for seq, key in self._db().execute(
            "SELECT seq, key FROM sweeps WHERE seq NOT IN (SELECT seq FROM sweeps_done) ORDER BY seq, key"
        ):
            keys.setdefault(seq, []).append(key)
        return [Sweep(seq, tuple(ks)) for seq, ks in keys.items()]

    def remote_differs(self, scope: str) -> bool:
        """Whether a name bound here is bound to other content on the remote (its record here
        is not the remote's)."""
        row = (
            self._db()
            .execute(
                "SELECT 1 FROM on_remote r JOIN name_rows n ON n.scope = r.scope AND n.name = r.name "
                "WHERE r.scope = ? AND n.digest != r.digest LIMIT 1",
                (scope,),
            )
            .fetchone()
        )
        return row is not None

    def remote_records(self, scope: str) -> Iterator[NameRecord]:
        """The records the remote binds, as this index knows them, by name, a batch at a time
        (see ``remote_differs``)."""
        query = (
            f"SELECT {', '.join('n.' + c for c in _COLUMNS.split(', '))} FROM names n JOIN on_remote r "
            "ON r.scope = n.scope AND r.name = n.name AND r.digest = n.digest WHERE n.scope = ? "
            "AND n.name > ? ORDER BY n.name LIMIT ?"
        )
        for page in self._record_pages(query, scope):
            yield from page

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
            .execute("SELECT ino, size, mtime_ns, ctime_ns FROM verified WHERE key = ?", (key,))
            .fetchone()
        )
        return tuple(row) if row else None

    def record_verified(self, key: str, fingerprint: Fingerprint) -> None:
        self.record_verified_many([(key, fingerprint)])

    def record_verified_many(self, entries: Iterable[tuple[str, Fingerprint]]) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO verified VALUES (?, ?, ?, ?, ?)",
                ((key, *fp) for key, fp in entries),
            )
