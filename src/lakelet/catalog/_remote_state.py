"""What the index knows of the remote: the names its log binds, its packs and sweeps (a part
of ``Catalog``; see _schema for how a binding is stored, _apply for how it is written)."""

from __future__ import annotations

import functools
import itertools
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager

from lakelet.catalog import _apply
from lakelet.catalog._apply import IN_CHUNK
from lakelet.catalog._names import COLUMNS, prefix_bounds, row_to_record
from lakelet.catalog._schema import SCOPE, by_digest, digest_blob, digest_params, digest_text
from lakelet.core._batch import batch_size
from lakelet.core.errors import StorageError
from lakelet.storage._packs import Member, Pack
from lakelet.storage._refs import NameRecord, SnapshotPiece
from lakelet.storage._scopes import LAKE
from lakelet.storage._sweeps import Sweep

__all__ = ["RemoteState"]

_REMOTE_DIGESTS = (
    f"SELECT name, digest FROM name_rows WHERE scope = {SCOPE} AND name >= ? AND name < ? AND remote "
    f"UNION ALL SELECT name, digest FROM remote_other WHERE scope = {SCOPE} AND name >= ? AND name < ?"
)
# where the remote keeps a digest: on a row holding it, else in packed (see _schema)
_LOCATION = (
    "SELECT p.digest, n.offset, n.size FROM name_rows n JOIN packs p ON p.id = n.pack "
    f"WHERE {by_digest('n.digest')} LIMIT 1"
)
_LOCATION_APART = (
    "SELECT p.digest, m.offset, m.size FROM packed m JOIN packs p ON p.id = m.pack WHERE m.digest = ?"
)
# every member of every pack, by pack: a scan of name_rows (no index by pack: it would cost
# ~25 B a name, and only writing a snapshot and gc ask by pack); {rows}: which rows' say
_MEMBERS = (
    "SELECT p.digest, m.digest, m.offset, m.size FROM (SELECT pack, offset, digest, size FROM name_rows "
    "WHERE pack IS NOT NULL{rows} UNION SELECT pack, offset, digest, size FROM packed) m "
    "JOIN packs p ON p.id = m.pack"
)
# the records the remote binds in a scope, with where each one's content is packed
_LOCATED = (
    "SELECT s.name, n.name, n.digest, n.size, b.created_at, b.creator, b.meta, n.removed_at, p.digest, "
    "n.offset FROM name_rows n JOIN batches b ON b.id = n.batch JOIN scopes s ON s.id = n.scope "
    f"LEFT JOIN packs p ON p.id = n.pack WHERE n.scope = {SCOPE} AND n.name > ? AND n.remote "
    "ORDER BY n.name LIMIT ?"
)
# Catalog.apply_remote's work inside an open transaction: (seq, records, packs, sweeps) -> refused
_ApplyRemote = Callable[
    [int, Iterable[NameRecord], Iterable[Pack], Iterable[Sweep]], list[tuple[NameRecord, str]]
]


class RemoteState:
    """The remote's side of the index (a part of ``Catalog``)."""

    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _record_pages(self, query: str, scope: str) -> Iterator[list[NameRecord]]:
        raise NotImplementedError

    def remote_digests(self, scope: str, prefix: str = "") -> dict[str, str]:
        low, high = prefix_bounds(prefix)
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
                f"AND {by_digest('digest', len(chunk))} AND NOT remote",
                (scope, *digest_params(chunk)),
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
            yield functools.partial(_apply.apply_remote, db)

    def load_snapshot(self, seq: int, pieces: Iterable[SnapshotPiece], partial: str | None = None) -> int:
        """Load the snapshot taken after log entry ``seq`` into an index that holds no remote
        state yet (a first sync, or a rebuild), piece by piece, in one transaction; returns
        the names loaded. The state is that of ``apply_remote`` of the same records, packs and
        sweeps; an exception from ``pieces`` (CorruptRecordError) rolls it all back.
        ``partial``: the pieces hold only the names under this prefix; the index says so in
        the same transaction (``partial_prefix``), so that it is never taken for whole."""
        with self._transaction() as db:
            loaded = _apply.load_snapshot(db, seq, pieces)
            if partial is not None:
                db.execute("INSERT OR REPLACE INTO state VALUES ('partial_prefix', ?)", (partial,))
            return loaded

    def partial_prefix(self) -> str | None:
        """The prefix a first sync learned the remote's names under, if it learned no others
        (``Lake.sync(prefix=...)``); None when the index knows every name the remote binds."""
        row = self._db().execute("SELECT value FROM state WHERE key = 'partial_prefix'").fetchone()
        return None if row is None else str(row[0])

    def forget_remote(self) -> None:
        """Drop what the index learned from the remote, in one transaction, so that the next
        sync learns it all again from the start (a partial index being completed). Names
        with no binding on the remote, this machine's own, stay."""
        with self._transaction() as db:  # (the log binds lake names only: other scopes stay)
            db.execute(f"DELETE FROM name_rows WHERE remote AND scope = {SCOPE}", (LAKE,))
            db.execute(f"DELETE FROM remote_other WHERE scope = {SCOPE}", (LAKE,))
            for table in ("packed", "sweeps", "sweeps_done"):
                db.execute(f"DELETE FROM {table}")
            db.execute("DELETE FROM state WHERE key IN ('log_seq', 'partial_prefix')")

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
            blob = digest_blob(d)
            row = db.execute(_LOCATION, digest_params([blob])).fetchone()
            if row is None:
                row = db.execute(_LOCATION_APART, (blob,)).fetchone()
            if row is not None:
                out[d] = (digest_text(row[0]), _member(d, row[1], row[2]))
        return out

    def packs(self, apart_from: str | None = None) -> Iterator[Pack]:
        """Every pack the remote's log mentions, with its members, one pack at a time (SQLite
        sorts them, spilling to a temp file past its cache: memory stays bounded).
        ``apart_from``: a scope; leave out the members whose location a row the remote binds
        in it holds (``remote_located`` gives them)."""
        rows_of = "" if apart_from is None else f" AND NOT (scope = {SCOPE} AND remote)"
        query = f"{_MEMBERS.format(rows=rows_of)} ORDER BY p.digest, m.offset"
        rows = self._db().execute(query, () if apart_from is None else (apart_from,))
        for pack, members in itertools.groupby(rows, key=lambda row: row[0]):
            yield Pack(digest_text(pack), tuple(_member(digest_text(d), o, s) for _, d, o, s in members))

    def pack_members(self, packs: Iterable[str]) -> dict[str, list[str]]:
        """pack -> the digests the log places in it, for those of ``packs`` it places any in
        (one scan of the index, whatever their number)."""
        db = self._db()
        blobs = [digest_blob(p) for p in set(packs)]
        ids: list[int] = []
        for i in range(0, len(blobs), IN_CHUNK):
            chunk = blobs[i : i + IN_CHUNK]
            ids += (
                row[0]
                for row in db.execute(
                    f"SELECT id FROM packs WHERE digest IN ({','.join('?' * len(chunk))})", chunk
                )
            )
        if not ids:
            return {}
        query = f"{_MEMBERS.format(rows='')} WHERE m.pack IN (SELECT value FROM json_each(?))"
        rows = db.execute(query, (json.dumps(ids),))
        out: dict[str, list[str]] = {}
        for pack, digest, _, _ in rows:
            out.setdefault(digest_text(pack), []).append(digest_text(digest))
        return out

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

    def remote_located(self, scope: str) -> Iterator[tuple[NameRecord, tuple[str, int] | None]]:
        """``remote_records``, each with where the remote keeps its content if in a pack and
        the index has it on the name's row: (pack digest, offset). Read a page at a time."""
        after = ""
        while True:
            page = batch_size()
            rows = self._db().execute(_LOCATED, (scope, after, page)).fetchall()
            for row in rows:
                pack, offset = row[8], row[9]
                where = None if pack is None else (digest_text(pack), _count(offset))
                yield row_to_record(row[:8]), where
            if len(rows) < page:
                return
            after = rows[-1][1]

    def remote_records(self, scope: str) -> Iterator[NameRecord]:
        """The records the remote binds, as this index knows them, by name, a batch at a time
        (see ``remote_differs``)."""
        query = f"SELECT {COLUMNS} FROM names WHERE scope = ? AND name > ? AND remote ORDER BY name LIMIT ?"
        for page in self._record_pages(query, scope):
            yield from page


def _member(digest: str, offset: object, size: object) -> Member:
    """A pack member's location read back from the index, which is input too."""
    return Member(digest, _count(offset), _count(size))


def _count(value: object) -> int:
    """An offset or size of a pack location read back from the index."""
    if type(value) is not int or value < 0:
        raise StorageError("the lake's index holds a damaged pack location: run `lakelet fsck` to rebuild it")
    return value
