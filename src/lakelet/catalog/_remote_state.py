"""What the index knows of the remote: the names its log binds, its packs and sweeps, and the
bulk load of a snapshot (see _schema for how a binding is stored)."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from lakelet.catalog._schema import SCOPE, digest_blob, digest_text, scope_id
from lakelet.core._batch import batched
from lakelet.core.errors import CorruptRecordError
from lakelet.storage._packs import Member, Pack
from lakelet.storage._refs import NameRecord, SnapshotPiece
from lakelet.storage._sweeps import Sweep

__all__ = ["COLUMNS", "IN_CHUNK", "RemoteState", "StoredRow", "batch_id", "row_to_record", "stored_rows"]

COLUMNS = "scope, name, digest, size, created_at, creator, meta, removed_at"  # of the view ``names``
IN_CHUNK = 500  # names per IN (...) query, well under SQLite's bound-parameter limit
# (a query by digest says ``+scope``: every name of a lake may share one scope, and SQLite,
# without statistics, would rather scan the scope's part of the primary key than the digests)
_STORED = "scope, name, digest, size, batch, removed_at"
# a remote record: bound as the first binding, or over a row of the same content (a local
# row, or a tombstone over the remote's own row); another content's row stays (see
# apply_remote) and the remote's binding goes to remote_other
_BIND_REMOTE = (
    f"INSERT INTO name_rows ({_STORED}, remote) VALUES (?, ?, ?, ?, ?, ?, 1) "
    "ON CONFLICT (scope, name) DO UPDATE SET digest = excluded.digest, size = excluded.size, "
    "batch = excluded.batch, removed_at = excluded.removed_at, remote = 1 "
    "WHERE name_rows.digest = excluded.digest OR name_rows.remote"
)
_ELSEWHERE = (  # the remote binds the name to what no row holds
    "INSERT OR REPLACE INTO remote_other SELECT ?1, ?2, ?3 WHERE NOT EXISTS "
    "(SELECT 1 FROM name_rows WHERE scope = ?1 AND name = ?2 AND remote)"
)
_SETTLED = (
    "DELETE FROM remote_other WHERE scope = ?1 AND name = ?2 AND EXISTS "
    "(SELECT 1 FROM name_rows WHERE scope = ?1 AND name = ?2 AND remote)"
)
# a snapshot's record over a row of this load: only a tombstone of the same content applies
# (load_snapshot sends names that had a row, or a binding elsewhere, through apply_remote)
_LOAD = (
    f"INSERT INTO name_rows ({_STORED}, remote) VALUES (?, ?, ?, ?, ?, ?, 1) "
    "ON CONFLICT (scope, name) DO UPDATE SET size = excluded.size, batch = excluded.batch, "
    "removed_at = excluded.removed_at WHERE name_rows.digest = excluded.digest "
    "AND excluded.removed_at IS NOT NULL"
)
_BY_DIGEST = "CREATE INDEX IF NOT EXISTS names_by_digest ON name_rows (digest)"
_BY_PACK = "CREATE INDEX IF NOT EXISTS packed_by_pack ON packed (pack)"
_STAGED = "CREATE TEMP TABLE load_packed (digest BLOB, pack INTEGER, offset INTEGER, size INTEGER)"
_REMOTE_DIGESTS = (
    f"SELECT name, digest FROM name_rows WHERE scope = {SCOPE} AND name >= ? AND name < ? AND remote "
    f"UNION ALL SELECT name, digest FROM remote_other WHERE scope = {SCOPE} AND name >= ? AND name < ?"
)
# a row of ``name_rows``: scope id, name, digest blob, size, batch, removed_at
StoredRow = tuple[int, str, bytes, int, int, str | None]
# Catalog.apply_remote's work inside an open transaction: (seq, records, packs, sweeps) -> refused
_ApplyRemote = Callable[
    [int, Iterable[NameRecord], Iterable[Pack], Iterable[Sweep]], list[tuple[NameRecord, str]]
]
# a row of ``names``: scope, name, digest, size, created_at, creator, meta (JSON), removed_at
_Row = tuple[str, str, bytes, int, str, str, str, str | None]


def row_to_record(row: _Row) -> NameRecord:
    scope, name, digest, size, created_at, creator, meta, removed_at = row
    return NameRecord(
        scope, name, digest_text(digest), size, created_at, creator, json.loads(meta), removed_at
    )


def batch_id(db: sqlite3.Connection, created_at: str, creator: str, meta: str) -> int:
    db.execute(
        "INSERT OR IGNORE INTO batches (created_at, creator, meta) VALUES (?, ?, ?)",
        (created_at, creator, meta),
    )
    row = db.execute(
        "SELECT id FROM batches WHERE created_at = ? AND creator = ? AND meta = ?",
        (created_at, creator, meta),
    ).fetchone()
    return int(row[0])


def stored_rows(db: sqlite3.Connection, records: Iterable[NameRecord]) -> Iterator[list[StoredRow]]:
    """The rows of ``records``, a batch at a time, each pointing at its batch of shared facts
    (made when new). The records of one add share one meta dict: it is encoded once, not once
    per name (the key holds the dict, so its id cannot be reused meanwhile)."""
    ids: dict[tuple[str, str, int], tuple[dict[str, Any], int]] = {}
    scopes: dict[str, int] = {}
    for chunk in batched(records):
        rows = []
        for r in chunk:
            key = (r.created_at, r.creator, id(r.meta))
            hit = ids.get(key)
            if hit is None:
                hit = ids[key] = (
                    r.meta,
                    batch_id(db, r.created_at, r.creator, json.dumps(r.meta, sort_keys=True)),
                )
            scope = scopes.get(r.scope)
            if scope is None:
                scope = scopes[r.scope] = scope_id(db, r.scope)
            rows.append((scope, r.name, digest_blob(r.digest), r.size, hit[1], r.removed_at))
        yield rows


def _remote_binding(db: sqlite3.Connection, scope: int, names: list[str]) -> Iterator[tuple[str, bytes]]:
    """(name, digest) of each of ``names`` that the remote binds."""
    for i in range(0, len(names), IN_CHUNK):
        chunk = names[i : i + IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        yield from db.execute(
            f"SELECT name, digest FROM name_rows WHERE scope = ? AND name IN ({marks}) AND remote "
            f"UNION ALL SELECT name, digest FROM remote_other WHERE scope = ? AND name IN ({marks})",
            (scope, *chunk, scope, *chunk),
        )


def _first_bindings(
    db: sqlite3.Connection, records: list[NameRecord]
) -> tuple[list[NameRecord], list[tuple[NameRecord, str]]]:
    """Of the remote's ``records`` (in log order), those to apply, and those refused with the
    digest the remote already binds their name to (see ``Catalog.apply_remote``)."""
    bound: dict[tuple[str, str], str] = {}
    for scope in {r.scope for r in records}:
        names = [r.name for r in records if r.scope == scope]
        rows = _remote_binding(db, scope_id(db, scope), names)
        bound.update(((scope, name), digest_text(digest)) for name, digest in rows)
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


def _apply_packs_and_sweeps(
    db: sqlite3.Connection, packs: Iterable[Pack], sweeps: Iterable[Sweep], into: str = "packed"
) -> None:
    for p in packs:
        db.execute("INSERT OR IGNORE INTO packs (digest) VALUES (?)", (digest_blob(p.digest),))
        pack = db.execute("SELECT id FROM packs WHERE digest = ?", (digest_blob(p.digest),)).fetchone()[0]
        db.executemany(
            f"INSERT OR REPLACE INTO {into} VALUES (?, ?, ?, ?)",
            ((digest_blob(m.digest), pack, m.offset, m.size) for m in p.members),
        )
    for sweep in sweeps:
        if sweep.done_at is None:
            db.executemany(
                "INSERT OR IGNORE INTO sweeps VALUES (?, ?)", ((sweep.seq, key) for key in sweep.keys)
            )
        else:
            db.execute("INSERT OR IGNORE INTO sweeps_done VALUES (?, ?)", (sweep.seq, sweep.done_at))


def _apply_remote(
    db: sqlite3.Connection,
    seq: int,
    records: Iterable[NameRecord],
    packs: Iterable[Pack],
    sweeps: Iterable[Sweep] = (),
) -> list[tuple[NameRecord, str]]:
    """``Catalog.apply_remote`` inside the transaction of ``db``."""
    kept, refused = _first_bindings(db, list(records))
    for rows in stored_rows(db, kept):
        db.executemany(_BIND_REMOTE, rows)
        db.executemany(_ELSEWHERE, (row[:3] for row in rows))
        db.executemany(_SETTLED, (row[:2] for row in rows))
    _apply_packs_and_sweeps(db, packs, sweeps)
    db.execute("INSERT OR REPLACE INTO state VALUES ('log_seq', ?)", (str(seq),))
    return refused


def _load_snapshot(db: sqlite3.Connection, seq: int, pieces: Iterable[SnapshotPiece]) -> int:
    """``Catalog.load_snapshot`` inside the transaction of ``db``."""
    if db.execute(
        "SELECT 1 FROM remote_other UNION ALL SELECT 1 FROM state WHERE key = 'log_seq'"
    ).fetchone():
        raise ValueError("load_snapshot needs an index that holds no remote state yet")
    # Into an empty index, the rows go in by name (a snapshot is sorted: each insert appends
    # to the B-tree) and the index by digest is built once, after them: ~3x faster than
    # keeping it up to date row by row (bench/README.md, "scale").
    empty = db.execute("SELECT 1 FROM name_rows LIMIT 1").fetchone() is None
    if empty:
        db.execute("DROP INDEX IF EXISTS names_by_digest")
    no_packs = db.execute("SELECT 1 FROM packed LIMIT 1").fetchone() is None
    if no_packs:
        db.execute("DROP INDEX IF EXISTS packed_by_pack")
    # Pack members come in no order of their digests, the key of ``packed``: they are kept in
    # a table of their own and put in by digest at the end (then each insert appends too).
    db.execute(_STAGED)
    batches: dict[int, tuple[int, str, str, dict[str, Any]]] = {}
    scopes: dict[str, int] = {}
    loaded = 0
    for piece in pieces:
        for number, created_at, creator, meta in piece.shared:
            shared = json.loads(meta)  # (one per add, not per name) stored as apply_remote does
            batches[number] = (
                batch_id(db, created_at, creator, json.dumps(shared, sort_keys=True)),
                created_at,
                creator,
                shared,
            )
        for scope in set(piece.scopes) - scopes.keys():
            scopes[scope] = scope_id(db, scope)
        ids = list(map(scopes.__getitem__, piece.scopes))
        blobs = list(map(digest_blob, piece.digests))
        try:
            rows = list(
                zip(
                    ids,
                    piece.names,
                    blobs,
                    piece.sizes,
                    [batches[b][0] for b in piece.batches],
                    piece.removed_at,
                    strict=True,
                )
            )
        except (KeyError, ValueError) as e:
            raise CorruptRecordError(
                f"snapshot {seq}: a piece refers to no batch or is not whole ({e})"
            ) from None
        if not empty:
            rows = _apply_where_bound(db, seq, piece, rows, batches)
        db.executemany(_LOAD, rows)
        _apply_packs_and_sweeps(db, piece.packs, piece.sweeps, into="temp.load_packed")
        loaded += len(piece.names)
    if empty:
        db.execute(_BY_DIGEST)
    # (by rowid too: of two lines placing one digest, the later wins, as in apply_remote)
    db.execute("INSERT OR REPLACE INTO packed SELECT * FROM temp.load_packed ORDER BY digest, rowid")
    db.execute("DROP TABLE temp.load_packed")
    if no_packs:
        db.execute(_BY_PACK)
    db.execute("INSERT OR REPLACE INTO state VALUES ('log_seq', ?)", (str(seq),))
    return loaded


def _apply_where_bound(
    db: sqlite3.Connection,
    seq: int,
    piece: SnapshotPiece,
    rows: list[StoredRow],
    batches: dict[int, tuple[int, str, str, dict[str, Any]]],
) -> list[StoredRow]:
    """The rows of names with no row yet and no binding elsewhere (what ``_LOAD`` may take);
    the others' records applied through ``_apply_remote`` now (a local row of theirs decides)."""
    taken: set[tuple[int, str]] = set()
    for scope in {row[0] for row in rows}:
        names = [row[1] for row in rows if row[0] == scope]
        for i in range(0, len(names), IN_CHUNK):
            chunk = names[i : i + IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            found = db.execute(
                f"SELECT name FROM name_rows WHERE scope = ? AND name IN ({marks}) AND NOT remote "
                f"UNION SELECT name FROM remote_other WHERE scope = ? AND name IN ({marks})",
                (scope, *chunk, scope, *chunk),
            )
            taken.update((scope, name) for (name,) in found)
    if not taken:
        return rows
    columns = (piece.scopes, piece.names, piece.digests, piece.sizes, piece.batches, piece.removed_at, rows)
    records = [
        NameRecord(s, n, d, size, *batches[b][1:], removed)
        for s, n, d, size, b, removed, row in zip(*columns, strict=True)
        if (row[0], row[1]) in taken
    ]
    _apply_remote(db, seq, records, ())
    return [row for row in rows if (row[0], row[1]) not in taken]


class RemoteState:
    """The remote's side of the index (a part of ``Catalog``)."""

    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _record_pages(self, query: str, scope: str) -> Iterator[list[NameRecord]]:
        raise NotImplementedError

    def remote_digests(self, scope: str, prefix: str = "") -> dict[str, str]:
        low, high = prefix, prefix + "\U0010ffff"
        rows = self._db().execute(_REMOTE_DIGESTS, (scope, low, high, scope, low, high))
        return {name: digest_text(digest) for name, digest in rows}

    def not_on_remote(self, scope: str) -> list[NameRecord]:
        """Live names whose record the remote is not known to hold: what ``push`` sends."""
        return [r for batch in self.unpushed_batches(scope) for r in batch]

    def unpushed_batches(self, scope: str) -> Iterator[list[NameRecord]]:
        """``not_on_remote``, a batch (``batch_size``) at a time, by name."""
        query = (
            f"SELECT {COLUMNS} FROM names WHERE scope = ? AND name > ? AND removed_at IS NULL "
            "AND NOT remote ORDER BY name LIMIT ?"
        )
        return self._record_pages(query, scope)

    def count_not_on_remote(self, scope: str) -> int:
        count: int = (
            self._db()
            .execute(
                f"SELECT count(*) FROM name_rows WHERE scope = {SCOPE} AND removed_at IS NULL AND NOT remote",
                (scope,),
            )
            .fetchone()[0]
        )
        return count

    def unpushed_digests(self, scope: str, digests: Iterable[str]) -> set[str]:
        """Those of ``digests`` that a live name not known to be on the remote holds."""
        db = self._db()
        blobs = [digest_blob(d) for d in digests]
        found: set[str] = set()
        for i in range(0, len(blobs), IN_CHUNK):
            chunk = blobs[i : i + IN_CHUNK]
            rows = db.execute(
                f"SELECT DISTINCT digest FROM name_rows WHERE +scope = {SCOPE} AND removed_at IS NULL "
                f"AND digest IN ({','.join('?' * len(chunk))}) AND NOT remote",
                (scope, *chunk),
            )
            found.update(digest_text(row[0]) for row in rows)
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
        local record, so it stays visible as unpushed; ``remote_other`` holds the remote's digest.
        """
        with self.applying_remote() as apply:
            return apply(seq, records, packs, sweeps)

    @contextmanager
    def applying_remote(self) -> Iterator[_ApplyRemote]:
        """One transaction over many calls of ``apply_remote``'s work (a run of log entries):
        all of them apply, or, when the block raises, none."""
        # (SQLite's page cache stays at its 2 MiB default: raised to 256 MiB for a first sync it
        # halved the time, but the peak RSS grew with the lake, 685 MiB at 1 M names, 1.3 GiB
        # at 2 M, where it stays at ~90 MiB at its default: bench/README.md)
        with self._transaction() as db:
            yield functools.partial(_apply_remote, db)

    def load_snapshot(self, seq: int, pieces: Iterable[SnapshotPiece]) -> int:
        """Load the snapshot taken after log entry ``seq`` into an index that holds no remote
        state yet (a first sync, or a rebuild), piece by piece, in one transaction; returns
        the names loaded. The state is that of ``apply_remote`` of the same records, packs and
        sweeps; an exception from ``pieces`` (CorruptRecordError) rolls it all back."""
        with self._transaction() as db:
            return _load_snapshot(db, seq, pieces)

    def remote_bindings(self, scope: str, names: Iterable[str]) -> dict[str, tuple[str, bool]]:
        """name -> (digest, removed) as the remote binds it, for the names it binds."""
        db = self._db()
        query = (
            f"SELECT digest, removed_at IS NOT NULL FROM name_rows WHERE scope = {SCOPE} AND name = ? "
            f"AND remote UNION ALL SELECT digest, 0 FROM remote_other WHERE scope = {SCOPE} AND name = ?"
        )
        out = {}
        for name in names:
            row = db.execute(query, (scope, name, scope, name)).fetchone()
            if row is not None:
                out[name] = (digest_text(row[0]), bool(row[1]))
        return out

    def pack_locations(self, digests: Iterable[str]) -> dict[str, tuple[str, Member]]:
        """digest -> (pack digest, where in it) for the digests the remote keeps in packs."""
        db = self._db()
        out = {}
        for d in digests:
            row = db.execute(
                "SELECT p.digest, m.offset, m.size FROM packed m JOIN packs p ON p.id = m.pack "
                "WHERE m.digest = ?",
                (digest_blob(d),),
            ).fetchone()
            if row is not None:
                out[d] = (digest_text(row[0]), Member(d, row[1], row[2]))
        return out

    def packs(self) -> Iterator[Pack]:
        """Every pack the remote's log mentions, with its members, one pack at a time."""
        query = "SELECT digest, offset, size FROM packed WHERE pack = ? ORDER BY offset"
        db = self._db()
        # the packs first (one per ~1,000 members), then each pack's members
        for pack, digest in db.execute("SELECT id, digest FROM packs ORDER BY digest").fetchall():
            members = tuple(
                Member(digest_text(d), offset, size) for d, offset, size in db.execute(query, (pack,))
            )
            if members:  # (every member since placed in a newer pack)
                yield Pack(digest_text(digest), members)

    def pack_members(self, pack: str) -> list[str]:
        """The digests the log places in ``pack``."""
        rows = self._db().execute(
            "SELECT m.digest FROM packed m JOIN packs p ON p.id = m.pack WHERE p.digest = ?",
            (digest_blob(pack),),
        )
        return [digest_text(row[0]) for row in rows]

    def swept(self, keys: Iterable[str], since: int) -> set[str]:
        """Those of ``keys`` that a sweep deletes, or may still delete, after log entry ``since``:
        one not done yet, or done in a later entry."""
        db = self._db()
        keys = list(keys)
        found: set[str] = set()
        for i in range(0, len(keys), IN_CHUNK):
            chunk = keys[i : i + IN_CHUNK]
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
                "SELECT 1 FROM remote_other r JOIN name_rows n ON n.scope = r.scope AND n.name = r.name "
                f"WHERE r.scope = {SCOPE} LIMIT 1",
                (scope,),
            )
            .fetchone()
        )
        return row is not None

    def remote_records(self, scope: str) -> Iterator[NameRecord]:
        """The records the remote binds, as this index knows them, by name, a batch at a time
        (see ``remote_differs``)."""
        query = f"SELECT {COLUMNS} FROM names WHERE scope = ? AND name > ? AND remote ORDER BY name LIMIT ?"
        for page in self._record_pages(query, scope):
            yield from page
