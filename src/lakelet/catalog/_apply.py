"""Writing what the remote's log says into the index: records by the first-binding rule
(``Catalog.apply_remote``), a snapshot in bulk (``Catalog.load_snapshot``), pack and sweep
lines."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from lakelet.catalog._schema import by_digest, digest_blob, digest_params, digest_text, scope_id
from lakelet.core._batch import batched
from lakelet.core.errors import CorruptRecordError
from lakelet.storage._packs import Pack
from lakelet.storage._refs import NameRecord, PackMembers, SnapshotPiece
from lakelet.storage._sweeps import Sweep

__all__ = [
    "IN_CHUNK",
    "KEEP_LOCATION",
    "SPILL",
    "StoredRow",
    "apply_remote",
    "batch_id",
    "load_snapshot",
    "stored_rows",
]

IN_CHUNK = 500  # names per IN (...) query, well under SQLite's bound-parameter limit
_STORED = "scope, name, digest, size, batch, removed_at"
# A row's pack location goes with its content: a row that goes, or takes other content, first
# leaves it in ``packed`` (SPILL + which rows), as another row of the digest may not hold it
SPILL = (
    "INSERT OR REPLACE INTO packed SELECT digest, pack, offset, size FROM name_rows "
    "WHERE pack IS NOT NULL AND "
)
# ...and an upsert's SET keeps it only over the same content
_SAME = "name_rows.digest = excluded.digest AND name_rows.size = excluded.size"
KEEP_LOCATION = f"pack = iif({_SAME}, name_rows.pack, NULL), offset = iif({_SAME}, name_rows.offset, NULL)"
# a remote record: bound as the first binding, or over a row of the same content (a local
# row, or a tombstone over the remote's own row); another content's row stays (see
# apply_remote) and the remote's binding goes to remote_other
_BIND_REMOTE = (
    f"INSERT INTO name_rows ({_STORED}, remote) VALUES (?, ?, ?, ?, ?, ?, 1) "
    f"ON CONFLICT (scope, name) DO UPDATE SET {KEEP_LOCATION}, digest = excluded.digest, "
    "size = excluded.size, batch = excluded.batch, removed_at = excluded.removed_at, remote = 1 "
    "WHERE name_rows.digest = excluded.digest OR name_rows.remote"
)
_SPILL_CHANGED = SPILL + "scope = ? AND name = ? AND (digest != ? OR size != ?)"
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
# (with where the snapshot says the remote keeps its content, if it says)
_LOAD = (
    f"INSERT INTO name_rows ({_STORED}, remote, pack, offset) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?) "
    "ON CONFLICT (scope, name) DO UPDATE SET size = excluded.size, batch = excluded.batch, "
    "removed_at = excluded.removed_at, pack = excluded.pack, offset = excluded.offset "
    "WHERE name_rows.digest = excluded.digest AND excluded.removed_at IS NOT NULL"
)
_BY_DIGEST = "CREATE INDEX IF NOT EXISTS names_by_digest ON name_rows (substr(digest, 1, 9))"
_STAGED = "CREATE TEMP TABLE load_packed (digest BLOB, pack INTEGER, offset INTEGER, size INTEGER)"
# a line placing a digest: onto every row of it (of its size), else into packed
_PLACE = f"UPDATE name_rows SET pack = ?, offset = ? WHERE {by_digest('digest')} AND size = ?"
# a row of ``name_rows``: scope id, name, digest blob, size, batch, removed_at
StoredRow = tuple[int, str, bytes, int, int, str | None]
# a snapshot's batch of shared facts: its id in ``batches``, created_at, creator, meta
_Batch = tuple[int, str, str, dict[str, Any]]


def batch_id(db: sqlite3.Connection, created_at: str, creator: str, meta: str) -> int:
    made = db.execute(
        "INSERT OR IGNORE INTO batches (created_at, creator, meta) VALUES (?, ?, ?)",
        (created_at, creator, meta),
    )
    if made.rowcount == 1 and made.lastrowid is not None:  # new: no need to look it up
        return made.lastrowid
    row = db.execute(
        "SELECT id FROM batches WHERE created_at = ? AND creator = ? AND meta = ?",
        (created_at, creator, meta),
    ).fetchone()
    return int(row[0])


def stored_rows(db: sqlite3.Connection, records: Iterable[NameRecord]) -> Iterator[list[StoredRow]]:
    """The rows of ``records``, a batch at a time, each pointing at its batch of shared facts
    (made when new). The records of one add share one meta dict: it is encoded once, not once
    per name (the key holds the dict, so its id cannot be reused meanwhile); records with equal
    metas (a group commit's run records) share one batch, looked up once."""
    ids: dict[tuple[str, str, int], tuple[dict[str, Any], int]] = {}
    by_text: dict[tuple[str, str, str], int] = {}
    scopes: dict[str, int] = {}
    for chunk in batched(records):
        rows = []
        for r in chunk:
            key = (r.created_at, r.creator, id(r.meta))
            hit = ids.get(key)
            if hit is None:
                facts = (r.created_at, r.creator, json.dumps(r.meta, sort_keys=True))
                batch = by_text.get(facts)
                if batch is None:
                    batch = by_text[facts] = batch_id(db, *facts)
                hit = ids[key] = (r.meta, batch)
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


def _pack_id(db: sqlite3.Connection, digest: str) -> int:
    db.execute("INSERT OR IGNORE INTO packs (digest) VALUES (?)", (digest_blob(digest),))
    return int(db.execute("SELECT id FROM packs WHERE digest = ?", (digest_blob(digest),)).fetchone()[0])


def _member_rows(db: sqlite3.Connection, packs: Iterable[Pack]) -> Iterator[tuple[bytes, int, int, int]]:
    """(digest, pack id, offset, size) of each member of ``packs``, the packs made when new."""
    for p in packs:
        pack = _pack_id(db, p.digest)
        yield from ((digest_blob(m.digest), pack, m.offset, m.size) for m in p.members)


def _place(db: sqlite3.Connection, packs: Iterable[Pack]) -> None:
    """Pack lines applied: each member's location onto the rows holding its digest, or (none
    does) into ``packed``; a former location of the digest in ``packed`` goes."""
    for digest, pack, offset, size in _member_rows(db, packs):
        if db.execute(_PLACE, (pack, offset, *digest_params([digest]), size)).rowcount:
            db.execute("DELETE FROM packed WHERE digest = ?", (digest,))
        else:
            db.execute("INSERT OR REPLACE INTO packed VALUES (?, ?, ?, ?)", (digest, pack, offset, size))


def _sweeps(db: sqlite3.Connection, sweeps: Iterable[Sweep]) -> None:
    for sweep in sweeps:
        if sweep.done_at is None:
            db.executemany(
                "INSERT OR IGNORE INTO sweeps VALUES (?, ?)", ((sweep.seq, key) for key in sweep.keys)
            )
        else:
            db.execute("INSERT OR IGNORE INTO sweeps_done VALUES (?, ?)", (sweep.seq, sweep.done_at))


def _stage_members(db: sqlite3.Connection, packs: Iterable[PackMembers]) -> None:
    for p in packs:
        rows = zip(p.digests, [_pack_id(db, p.pack)] * len(p.digests), p.offsets, p.sizes, strict=True)
        db.executemany("INSERT INTO temp.load_packed VALUES (?, ?, ?, ?)", rows)


def apply_remote(
    db: sqlite3.Connection,
    seq: int,
    records: Iterable[NameRecord],
    packs: Iterable[Pack],
    sweeps: Iterable[Sweep] = (),
) -> list[tuple[NameRecord, str]]:
    """``Catalog.apply_remote`` inside the transaction of ``db``."""
    kept, refused = _first_bindings(db, list(records))
    for rows in stored_rows(db, kept):
        db.executemany(_SPILL_CHANGED, (row[:4] for row in rows))
        db.executemany(_BIND_REMOTE, rows)
        db.executemany(_ELSEWHERE, (row[:3] for row in rows))
        db.executemany(_SETTLED, (row[:2] for row in rows))
    _place(db, packs)
    _sweeps(db, sweeps)
    db.execute("INSERT OR REPLACE INTO state VALUES ('log_seq', ?)", (str(seq),))
    return refused


def load_snapshot(db: sqlite3.Connection, seq: int, pieces: Iterable[SnapshotPiece]) -> int:
    """``Catalog.load_snapshot`` inside the transaction of ``db``."""
    if db.execute(
        "SELECT 1 FROM remote_other UNION ALL SELECT 1 FROM state WHERE key = 'log_seq'"
    ).fetchone():
        raise ValueError("load_snapshot needs an index that holds no remote state yet")
    # Into an empty index, the rows go in by name (a snapshot is sorted: each insert appends
    # to the B-tree) and the indexes are built once, after them, rather than kept up to date
    # row by row at random keys (bench/index_load.py: half apply_remote's time at 1 M names).
    empty = db.execute("SELECT 1 FROM name_rows LIMIT 1").fetchone() is None
    if empty:
        db.execute("DROP INDEX IF EXISTS names_by_digest")
    # A snapshot that says where each name's content is packed gives its location with its
    # row; the pack members it lists apart (those no name holds), or all of them in a snapshot
    # that does not say, go into ``packed``: they come in no order of their digests, its key,
    # so they are kept in a table of their own and put in by digest at the end (then each
    # insert appends too). (Finding each member's rows instead is a look-up at random per
    # name, which doubled the load's time at 1 M names: bench/README.md, "scale".)
    db.execute(_STAGED)
    batches: dict[int, _Batch] = {}
    scopes: dict[str, int] = {}
    pack_ids: dict[str, int] = {}
    loaded = 0
    for piece in pieces:
        rows = _piece_rows(db, seq, piece, batches, scopes)
        at = _locations(db, piece, pack_ids)
        if not empty:
            rows, apart = _apply_where_bound(db, seq, piece, rows, at, batches)
            db.executemany("INSERT INTO temp.load_packed VALUES (?, ?, ?, ?)", apart)
        db.executemany(_LOAD, (row + where for row, where in zip(rows, at, strict=True)))
        _stage_members(db, piece.packs)
        _sweeps(db, piece.sweeps)
        loaded += len(piece.names)
    if empty:
        db.execute(_BY_DIGEST)
    # (by rowid too: of two lines placing one digest, the later wins, as in apply_remote)
    db.execute("INSERT OR REPLACE INTO packed SELECT * FROM temp.load_packed ORDER BY digest, rowid")
    db.execute("DROP TABLE temp.load_packed")
    db.execute("INSERT OR REPLACE INTO state VALUES ('log_seq', ?)", (str(seq),))
    return loaded


_Location = tuple[int, int] | tuple[None, None]  # pack id, offset (or none)


def _locations(db: sqlite3.Connection, piece: SnapshotPiece, pack_ids: dict[str, int]) -> list[_Location]:
    """(pack id, offset) of each name of ``piece`` (None, None where it has none); the packs
    made when new. ``pack_ids`` caches their ids: a pack's names come in runs."""
    if not piece.located:
        return [(None, None)] * len(piece.names)
    if len(piece.located) != len(piece.names):
        raise CorruptRecordError("a snapshot piece that places some of its names and not others")
    out: list[_Location] = []
    for where in piece.located:
        if where is None:
            out.append((None, None))
            continue
        pack, offset = where
        if pack not in pack_ids:
            if len(pack_ids) >= IN_CHUNK:  # (bounded: a lake of tiny adds has millions of packs)
                pack_ids.clear()
            pack_ids[pack] = _pack_id(db, pack)
        out.append((pack_ids[pack], offset))
    return out


def _piece_rows(
    db: sqlite3.Connection, seq: int, piece: SnapshotPiece, batches: dict[int, _Batch], scopes: dict[str, int]
) -> list[StoredRow]:
    """The rows of ``piece``, its batches of shared facts (and scopes) made or found first."""
    for number, created_at, creator, meta in piece.shared:
        shared = json.loads(meta)  # (one per add, not per name) stored as apply_remote does
        key = batch_id(db, created_at, creator, json.dumps(shared, sort_keys=True))
        batches[number] = (key, created_at, creator, shared)
    for scope in set(piece.scopes) - scopes.keys():
        scopes[scope] = scope_id(db, scope)
    try:
        ids = [batches[b][0] for b in piece.batches]
        columns = (piece.names, piece.digests, piece.sizes, ids, piece.removed_at)
        return list(zip(map(scopes.__getitem__, piece.scopes), *columns, strict=True))
    except (KeyError, ValueError) as e:
        raise CorruptRecordError(
            f"snapshot {seq}: a piece refers to no batch or is not whole ({e})"
        ) from None


def _apply_where_bound(
    db: sqlite3.Connection,
    seq: int,
    piece: SnapshotPiece,
    rows: list[StoredRow],
    at: list[_Location],
    batches: dict[int, _Batch],
) -> tuple[list[StoredRow], list[tuple[bytes, int, int, int]]]:
    """The rows of names with no row yet and no binding elsewhere (what ``_LOAD`` may take);
    the others' records applied through ``apply_remote`` now (a local row of theirs decides),
    their locations returned as pack members (digest, pack id, offset, size) for ``packed``."""
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
        return rows, []
    columns = (piece.scopes, piece.names, piece.digests, piece.sizes, piece.batches, piece.removed_at, rows)
    records = [
        NameRecord(s, n, digest_text(d), size, *batches[b][1:], removed)
        for s, n, d, size, b, removed, row in zip(*columns, strict=True)
        if (row[0], row[1]) in taken
    ]
    apply_remote(db, seq, records, ())
    mine = [(row[0], row[1]) in taken for row in rows]
    apart = [
        (row[2], where[0], where[1], row[3])
        for row, where, m in zip(rows, at, mine, strict=True)
        if m and where[0] is not None
    ]
    at[:] = [where for where, m in zip(at, mine, strict=True) if not m]
    return [row for row, m in zip(rows, mine, strict=True) if not m], apart
