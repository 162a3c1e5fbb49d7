"""Reading the names the index holds: lookups, listings, queries by digest (a part of
``Catalog``)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator

from lakelet.catalog._apply import IN_CHUNK
from lakelet.catalog._schema import SCOPE, by_digest, digest_blob, digest_params, digest_text
from lakelet.core._batch import batch_size
from lakelet.core.errors import StorageError
from lakelet.storage._refs import NameRecord

__all__ = ["COLUMNS", "NameQueries", "prefix_bounds", "row_to_record"]

COLUMNS = "scope, name, digest, size, created_at, creator, meta, removed_at"  # of the view ``names``
# a row of ``names``: scope, name, digest, size, created_at, creator, meta (JSON), removed_at
_Row = tuple[str, str, bytes, int, str, str, str, str | None]


def row_to_record(row: _Row) -> NameRecord:
    scope, name, digest, size, created_at, creator, meta, removed_at = row
    return NameRecord(scope, name, digest_text(digest), size, created_at, creator, _meta(meta), removed_at)


_parsed_meta: dict[str, dict[str, object]] = {}  # a batch's meta text -> parsed (the records of a
# batch share it: a cached stage call looks up its run record and then its output, one batch)
_PARSED_META_MAX = 256


def _meta(text: str) -> dict[str, object]:
    parsed = _parsed_meta.get(text)
    if parsed is None:
        try:
            parsed = json.loads(text)
        except (TypeError, ValueError):
            parsed = None
        if not isinstance(parsed, dict):  # the index is input too (as in digest_text)
            raise StorageError("the lake's index holds a damaged meta: run `lakelet fsck` to rebuild it")
        if any(isinstance(v, dict | list) for v in parsed.values()):
            return parsed  # nested: a copy would share its values, so each record parses its own
        if len(_parsed_meta) >= _PARSED_META_MAX:
            _parsed_meta.clear()
        _parsed_meta[text] = parsed
    return dict(parsed)  # each record its own copy (flat: nothing shared)


def prefix_bounds(prefix: str) -> tuple[str, str]:
    # SQLite compares TEXT bytewise (UTF-8); no valid name character sorts above U+10FFFF.
    return prefix, prefix + "\U0010ffff"


class NameQueries:
    """The names of every scope, as the index holds them."""

    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

    def get(self, scope: str, name: str) -> NameRecord | None:
        row = (
            self._db()
            .execute(f"SELECT {COLUMNS} FROM names WHERE scope = ? AND name = ?", (scope, name))
            .fetchone()
        )
        return row_to_record(row) if row else None

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
        low, high = prefix_bounds(prefix)
        live = "" if include_removed else "AND removed_at IS NULL "
        query = (
            f"SELECT {COLUMNS} FROM names WHERE scope = ? AND name >= ? AND name < ? AND name > ? "
            f"{live}ORDER BY name LIMIT ?"
        )
        left = limit
        while left is None or left > 0:
            page = batch_size() if left is None else min(left, batch_size())
            rows = self._db().execute(query, (scope, low, high, after, page)).fetchall()
            yield from map(row_to_record, rows)
            if len(rows) < page:
                return
            after = rows[-1][1]
            left = None if left is None else left - len(rows)

    def names(self, scope: str, prefix: str = "") -> list[str]:
        low, high = prefix_bounds(prefix)
        rows = self._db().execute(
            f"SELECT name FROM name_rows WHERE scope = {SCOPE} AND name >= ? AND name < ? "
            "AND removed_at IS NULL ORDER BY name",
            (scope, low, high),
        )
        return [row[0] for row in rows]

    def listing(self, scope: str, prefix: str = "") -> list[tuple[str, str, int, str]]:
        """(name, digest, size, created_at) of the live names starting with ``prefix``, by name:
        what a file listing shows, without decoding each name's metadata."""
        low, high = prefix_bounds(prefix)
        rows = self._db().execute(
            "SELECT name, digest, size, created_at FROM names WHERE scope = ? AND name >= ? AND name < ? "
            "AND removed_at IS NULL ORDER BY name",
            (scope, low, high),
        )
        return [(name, digest_text(digest), size, created_at) for name, digest, size, created_at in rows]

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
            f"SELECT {COLUMNS} FROM names WHERE scope = ? AND removed_at IS NULL "
            "ORDER BY created_at DESC, name LIMIT ?",
            (scope, limit),
        )
        return [row_to_record(row) for row in rows]

    def first_with_digest(self, scope: str, digest: str) -> NameRecord | None:
        """The live name of ``scope`` bound to ``digest`` first (then by name), if any."""
        row = (
            self._db()
            .execute(
                f"SELECT {COLUMNS} FROM names WHERE {by_digest('digest')} AND +scope = ? "
                "AND removed_at IS NULL ORDER BY created_at, name LIMIT 1",
                (*digest_params([digest_blob(digest)]), scope),
            )
            .fetchone()
        )
        return row_to_record(row) if row else None

    def has_prefix(self, scope: str, prefix: str) -> bool:
        """Whether a live name of ``scope`` starts with ``prefix`` (one index probe)."""
        low, high = prefix_bounds(prefix)
        row = (
            self._db()
            .execute(
                f"SELECT 1 FROM name_rows WHERE scope = {SCOPE} AND name >= ? AND name < ? "
                "AND removed_at IS NULL LIMIT 1",
                (scope, low, high),
            )
            .fetchone()
        )
        return row is not None

    def scopes(self) -> list[str]:
        query = "SELECT name FROM scopes s WHERE EXISTS (SELECT 1 FROM name_rows WHERE scope = s.id)"
        return [row[0] for row in self._db().execute(query)]

    def get_many(self, scope: str, names: Iterable[str]) -> dict[str, NameRecord]:
        """The records of those ``names`` that the index holds, by name."""
        names = list(names)
        db = self._db()
        found: dict[str, NameRecord] = {}
        for i in range(0, len(names), IN_CHUNK):
            chunk = names[i : i + IN_CHUNK]
            rows = db.execute(
                f"SELECT {COLUMNS} FROM names WHERE scope = ? AND name IN ({','.join('?' * len(chunk))})",
                (scope, *chunk),
            )
            found.update((row[1], row_to_record(row)) for row in rows)
        return found

    def live_holders(self, scope: str, digests: Iterable[str]) -> Iterator[tuple[str, str]]:
        """(digest, name) of each live name of ``scope`` holding one of ``digests``."""
        db = self._db()
        blobs = [digest_blob(d) for d in digests]
        for i in range(0, len(blobs), IN_CHUNK):
            chunk = blobs[i : i + IN_CHUNK]
            rows = db.execute(
                f"SELECT digest, name FROM name_rows WHERE {by_digest('digest', len(chunk))} "
                f"AND +scope = {SCOPE} AND removed_at IS NULL",
                (*digest_params(chunk), scope),
            ).fetchall()
            yield from ((digest_text(digest), name) for digest, name in rows)

    def with_digests(self, scope: str, digests: Iterable[str]) -> Iterator[NameRecord]:
        """Every record of ``scope`` (tombstones too) holding one of ``digests``."""
        db = self._db()
        blobs = [digest_blob(d) for d in digests]
        for i in range(0, len(blobs), IN_CHUNK):
            chunk = blobs[i : i + IN_CHUNK]
            rows = db.execute(
                f"SELECT {COLUMNS} FROM names WHERE {by_digest('digest', len(chunk))} AND +scope = ?",
                (*digest_params(chunk), scope),
            ).fetchall()
            yield from map(row_to_record, rows)
