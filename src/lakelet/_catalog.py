"""The local index: SQLite (WAL) over the name records, for fast lookups and listings.

The index is derived data. The records under ``names/`` are the truth and
``rebuild`` recreates the index from them, so the index may lag a crash by
one operation (the next write or ``fsck`` repairs it) but never disagrees in
a way that loses a name.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ._objects import Fingerprint
from ._refs import NameRecord

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS names (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    creator TEXT NOT NULL,
    meta TEXT NOT NULL,
    removed_at TEXT,
    PRIMARY KEY (scope, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS names_by_digest ON names (digest);
CREATE TABLE IF NOT EXISTS verified (
    key TEXT PRIMARY KEY,
    ino INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL
) WITHOUT ROWID;
"""
_COLUMNS = "scope, name, digest, size, created_at, creator, meta, removed_at"


def _prefix_bounds(prefix: str) -> tuple[str, str]:
    # SQLite compares TEXT bytewise (UTF-8); no valid name character sorts above U+10FFFF.
    return prefix, prefix + "\U0010ffff"


def _row_to_record(row: tuple) -> NameRecord:
    scope, name, digest, size, created_at, creator, meta, removed_at = row
    return NameRecord(scope, name, digest, size, created_at, creator, json.loads(meta), removed_at)


def _record_to_row(r: NameRecord) -> tuple:
    meta = json.dumps(r.meta, sort_keys=True)
    return (r.scope, r.name, r.digest, r.size, r.created_at, r.creator, meta, r.removed_at)


class Catalog:
    """Names, scopes and verified-blob fingerprints of one local lake."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        db = self._db()
        db.executescript(_SCHEMA)  # idempotent; executescript manages its own transaction
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _db(self) -> sqlite3.Connection:
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
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

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

    def records(self, scope: str, prefix: str = "") -> list[NameRecord]:
        low, high = _prefix_bounds(prefix)
        rows = self._db().execute(
            f"SELECT {_COLUMNS} FROM names WHERE scope = ? AND name >= ? AND name < ? "
            "AND removed_at IS NULL ORDER BY name",
            (scope, low, high),
        )
        return [_row_to_record(row) for row in rows]

    def names(self, scope: str, prefix: str = "") -> list[str]:
        low, high = _prefix_bounds(prefix)
        rows = self._db().execute(
            "SELECT name FROM names WHERE scope = ? AND name >= ? AND name < ? "
            "AND removed_at IS NULL ORDER BY name",
            (scope, low, high),
        )
        return [row[0] for row in rows]

    def scopes(self) -> list[str]:
        return [row[0] for row in self._db().execute("SELECT DISTINCT scope FROM names")]

    def upsert(self, records: Iterable[NameRecord]) -> None:
        with self._transaction() as db:
            db.executemany(
                f"INSERT OR REPLACE INTO names ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (_record_to_row(r) for r in records),
            )

    def delete(self, scope: str, names: Iterable[str]) -> None:
        with self._transaction() as db:
            db.executemany(
                "DELETE FROM names WHERE scope = ? AND name = ?", ((scope, n) for n in names)
            )

    def drop_scope(self, scope: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM names WHERE scope = ?", (scope,))

    def rebuild(self, records: Iterable[NameRecord]) -> int:
        """Replace every name row with ``records``; returns how many there are."""
        with self._transaction() as db:
            db.execute("DELETE FROM names")
            db.execute("DELETE FROM verified")
            cursor = db.executemany(
                f"INSERT OR REPLACE INTO names ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (_record_to_row(r) for r in records),
            )
            return cursor.rowcount

    # verified blobs (see _objects.VerifiedReader)

    def verified_fingerprint(self, key: str) -> Fingerprint | None:
        row = (
            self._db()
            .execute("SELECT ino, size, mtime_ns, ctime_ns FROM verified WHERE key = ?", (key,))
            .fetchone()
        )
        return tuple(row) if row else None  # type: ignore[return-value]

    def record_verified(self, key: str, fingerprint: Fingerprint) -> None:
        self.record_verified_many([(key, fingerprint)])

    def record_verified_many(self, entries: Iterable[tuple[str, Fingerprint]]) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO verified VALUES (?, ?, ?, ?, ?)",
                ((key, *fp) for key, fp in entries),
            )
