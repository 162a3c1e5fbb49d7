"""The index's tables (schema 7), the in-place upgrades from schemas 4, 5 and 6, and how a
digest and a scope are stored in them.

Digests are stored as blobs: one byte naming the algorithm, then the raw digest (33 bytes,
not 71 characters of text); scopes as a small integer (``scopes``). What the remote binds
is a flag on the name's row (``name_rows.remote``) when it binds the name to that row's
content, and a row of ``remote_other`` in the rare case it binds it to other content (a
deferred push that lost a race) or the index holds no row of the name.

Where the remote keeps a name's content in a pack is on the name's row (``pack``,
``offset``; its size is the row's), not in a table keyed by the digest again: ``packed``
holds only the locations of digests no row holds. The digest index is on the digest's
first 9 bytes (the algorithm byte and 8 of the digest): every query by digest compares the
whole digest too (``by_digest``), so a prefix two digests share (a hostile peer can make
one) costs a row more to read, never a wrong answer.
"""

from __future__ import annotations

import re
import sqlite3

from lakelet.core._digest import BLOB_ALGORITHMS
from lakelet.core.errors import StorageError

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "SCOPE",
    "by_digest",
    "digest_blob",
    "digest_params",
    "digest_text",
    "scope_id",
    "upgrade",
    "verified_key",
]

# 4: sweeps. An index of 3 is rebuilt, and so reads the remote's log again: it may have
# skipped sweep lines that a push must know of (docs/remote-layout.md, "gc against a push").
# 5: the facts a batch of names shares (time, creator, meta) in ``batches``, once, not per
# name; pack digests in ``packs``, once, not per member.
# 6: digests as blobs, scopes as integers, ``on_remote`` folded into ``name_rows``.
# 7: a pack member's location in the row of a name holding it (``packed`` only for the rest),
# the digest index on a prefix of the digest, no index of members by pack (gc scans).
# An index of 4, 5 or 6 is upgraded in place; an older one is rebuilt.
SCHEMA_VERSION = 7
SCHEMA = """
CREATE TABLE IF NOT EXISTS scopes (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
-- the facts a batch of names shares (an add's time, creator, source and environment), once
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    creator TEXT NOT NULL,
    meta TEXT NOT NULL,
    UNIQUE (created_at, creator, meta)
);
-- remote: 1 when the remote binds the name to this row's content (see remote_other);
-- pack, offset: where the remote keeps this row's content, if in a pack (the newest pack
-- line placing the digest; every row of the digest whose size is the member's holds it)
CREATE TABLE IF NOT EXISTS name_rows (
    scope INTEGER NOT NULL,
    name TEXT NOT NULL,
    digest BLOB NOT NULL,
    size INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    removed_at TEXT,
    remote INTEGER NOT NULL DEFAULT 0,
    pack INTEGER,
    offset INTEGER,
    PRIMARY KEY (scope, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS names_by_digest ON name_rows (substr(digest, 1, 9));
-- what readers see: a record per row (the digest still a blob)
CREATE VIEW IF NOT EXISTS names AS SELECT s.name AS scope, n.name, n.digest, n.size, b.created_at,
    b.creator, b.meta, n.removed_at, n.remote FROM name_rows n JOIN batches b ON b.id = n.batch
    JOIN scopes s ON s.id = n.scope;
-- what the remote binds a name to when no row of name_rows holds it (rare)
CREATE TABLE IF NOT EXISTS remote_other (
    scope INTEGER NOT NULL,
    name TEXT NOT NULL,
    digest BLOB NOT NULL,
    PRIMARY KEY (scope, name)
) WITHOUT ROWID;
-- where the remote keeps small objects: inside which pack, at which offset (see _packs);
-- the newest pack line for a digest wins (an older pack may have been deleted by gc).
-- packed: only for a digest no row of name_rows holds the location of (see name_rows)
CREATE TABLE IF NOT EXISTS packs (id INTEGER PRIMARY KEY, digest BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS packed (
    digest BLOB PRIMARY KEY,
    pack INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    size INTEGER NOT NULL
) WITHOUT ROWID;
-- the remote gc sweeps the log announced: the keys each is deleting, and the entry that said
-- it was done (none yet: it may still be deleting them)
CREATE TABLE IF NOT EXISTS sweeps (seq INTEGER NOT NULL, key TEXT NOT NULL, PRIMARY KEY (seq, key))
    WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sweeps_by_key ON sweeps (key);
CREATE TABLE IF NOT EXISTS sweeps_done (seq INTEGER PRIMARY KEY, done_at INTEGER NOT NULL);
-- small settings: the last log entry applied, the last sync time
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
-- keyed by the object's digest (a blob) when the blob is a lake object, else by its path
CREATE TABLE IF NOT EXISTS verified (
    key PRIMARY KEY,
    ino INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL
) WITHOUT ROWID;
"""
SCOPE = "(SELECT id FROM scopes WHERE name = ?)"  # a scope's id in a query, by its name

_ALGORITHMS = BLOB_ALGORITHMS  # a digest blob's first byte: 1 + the index here
_CODES = {name: bytes([i + 1]) for i, name in enumerate(_ALGORITHMS)}
_OBJECT_PATH = re.compile(r"objects/([a-z0-9]+)/([0-9a-f]{2})/([0-9a-f]{62})")

# schema 4 -> 5: the shared facts and pack digests move out
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
# schema 5 -> 6: digests to blobs (lakelet_blob, a function of the upgrading connection),
# scopes to ids, on_remote into name_rows.remote and remote_other; the indexes and the view
# are then made by SCHEMA
_UPGRADE_FROM_5 = [
    "DROP VIEW IF EXISTS names",
    "CREATE TABLE scopes (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "INSERT INTO scopes (name) SELECT scope FROM name_rows UNION SELECT scope FROM on_remote",
    "CREATE TABLE name_rows_6 (scope INTEGER NOT NULL, name TEXT NOT NULL, digest BLOB NOT NULL, "
    "size INTEGER NOT NULL, batch INTEGER NOT NULL, removed_at TEXT, remote INTEGER NOT NULL DEFAULT 0, "
    "PRIMARY KEY (scope, name)) WITHOUT ROWID",
    "INSERT INTO name_rows_6 SELECT s.id, n.name, lakelet_blob(n.digest), n.size, n.batch, n.removed_at, "
    "EXISTS (SELECT 1 FROM on_remote r WHERE r.scope = n.scope AND r.name = n.name AND r.digest = n.digest) "
    "FROM name_rows n JOIN scopes s ON s.name = n.scope",
    "CREATE TABLE remote_other (scope INTEGER NOT NULL, name TEXT NOT NULL, digest BLOB NOT NULL, "
    "PRIMARY KEY (scope, name)) WITHOUT ROWID",
    "INSERT INTO remote_other SELECT s.id, r.name, lakelet_blob(r.digest) FROM on_remote r "
    "JOIN scopes s ON s.name = r.scope WHERE NOT EXISTS (SELECT 1 FROM name_rows n "
    "WHERE n.scope = r.scope AND n.name = r.name AND n.digest = r.digest)",
    "DROP TABLE name_rows",
    "DROP TABLE on_remote",
    "ALTER TABLE name_rows_6 RENAME TO name_rows",
    "CREATE TABLE packs_6 (id INTEGER PRIMARY KEY, digest BLOB NOT NULL UNIQUE)",
    "INSERT INTO packs_6 SELECT id, lakelet_blob(digest) FROM packs",
    "CREATE TABLE packed_6 (digest BLOB PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL, "
    "size INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT INTO packed_6 SELECT lakelet_blob(digest), pack, offset, size FROM packed",
    "DROP TABLE packed",
    "DROP TABLE packs",
    "ALTER TABLE packs_6 RENAME TO packs",
    "ALTER TABLE packed_6 RENAME TO packed",
    "CREATE TABLE verified_6 (key PRIMARY KEY, ino INTEGER NOT NULL, size INTEGER NOT NULL, "
    "mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT INTO verified_6 SELECT lakelet_verified_key(key), ino, size, mtime_ns, ctime_ns FROM verified",
    "DROP TABLE verified",
    "ALTER TABLE verified_6 RENAME TO verified",
]
# schema 6 -> 7: each location by digest onto the rows holding that digest (of its size), the
# rest stays in packed
_UPGRADE_FROM_6 = [
    "DROP INDEX IF EXISTS names_by_digest",
    "DROP INDEX IF EXISTS packed_by_pack",
    "ALTER TABLE name_rows ADD COLUMN pack INTEGER",
    "ALTER TABLE name_rows ADD COLUMN offset INTEGER",
    "CREATE INDEX names_by_digest ON name_rows (substr(digest, 1, 9))",
    "UPDATE name_rows SET pack = m.pack, offset = m.offset FROM packed m "
    "WHERE m.digest = name_rows.digest AND m.size = name_rows.size",
    "DELETE FROM packed WHERE EXISTS (SELECT 1 FROM name_rows n WHERE substr(n.digest, 1, 9) = "
    "substr(packed.digest, 1, 9) AND n.digest = packed.digest AND n.pack = packed.pack "
    "AND n.offset = packed.offset)",
]
_UPGRADES = {4: _UPGRADE_FROM_4, 5: _UPGRADE_FROM_5, 6: _UPGRADE_FROM_6}


def digest_blob(digest: str) -> bytes:
    """``algorithm:hex`` (already validated) as the index stores it."""
    if digest.startswith("blake3:"):  # (nearly every one: a bulk load makes millions)
        return b"\x01" + bytes.fromhex(digest[7:])
    algorithm, _, hexdigest = digest.partition(":")
    return _CODES[algorithm] + bytes.fromhex(hexdigest)


def by_digest(column: str, count: int = 1) -> str:
    """A condition that ``column`` (a digest blob of name_rows) is one of ``count`` digests,
    through the index on its prefix; its parameters are ``digest_params`` of them."""
    marks = ",".join("?" * count)
    return f"substr({column}, 1, 9) IN ({marks}) AND {column} IN ({marks})"


def digest_params(blobs: list[bytes]) -> list[bytes]:
    """The parameters of ``by_digest`` for ``blobs``: their prefixes, then themselves."""
    return [b[:9] for b in blobs] + blobs


def digest_text(blob: bytes) -> str:
    """A digest blob read back from the index as ``algorithm:hex``. Raises StorageError (run
    fsck) for one that no lakelet wrote: the index is input too."""
    if not isinstance(blob, bytes) or len(blob) != 33 or not 1 <= blob[0] <= len(_ALGORITHMS):
        raise StorageError("the lake's index holds a damaged digest: run `lakelet fsck` to rebuild it")
    return f"{_ALGORITHMS[blob[0] - 1]}:{blob[1:].hex()}"


def verified_key(key: str) -> bytes | str:
    """The key of a verified blob's fingerprint: its digest for a lake object (the path
    ``objects/<algorithm>/<hh>/<rest>`` says it), else its path."""
    match = _OBJECT_PATH.fullmatch(key)
    if match is None or match[1] not in _CODES:
        return key
    return _CODES[match[1]] + bytes.fromhex(match[2] + match[3])


def scope_id(db: sqlite3.Connection, scope: str) -> int:
    """The id of ``scope``, made when new (inside the caller's transaction)."""
    db.execute("INSERT OR IGNORE INTO scopes (name) VALUES (?)", (scope,))
    return int(db.execute("SELECT id FROM scopes WHERE name = ?", (scope,)).fetchone()[0])


def upgrade(db: sqlite3.Connection, version: int) -> int:
    """Upgrade an index of ``version`` (4, 5 or 6) in place to SCHEMA_VERSION, inside the
    caller's transaction; returns the version now (``version`` itself if none applies)."""
    db.create_function("lakelet_blob", 1, digest_blob, deterministic=True)
    db.create_function("lakelet_verified_key", 1, verified_key, deterministic=True)
    while version in _UPGRADES:
        for statement in _UPGRADES[version]:
            db.execute(statement)
        version += 1
    return version
