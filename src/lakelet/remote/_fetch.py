"""Reading content from the remote: loose objects and pack members, verified before cached.

Only bytes that hash to the expected digest are placed in ``objects/``; anything
else lands in a throwaway temp path, is deleted, and raises IntegrityError.
A pull reads each pack once, in one request spanning the members it wants; a
lazy fetch of one packed file is one ranged request for that member alone. A
big object in a pack (one a push sent again under a new key, ``_sync``) is
streamed instead.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from lakelet.catalog._catalog import Catalog
from lakelet.core._digest import Digest, digest_bytes
from lakelet.core._durable import new_temp_path
from lakelet.core._progress import SILENT, Progress
from lakelet.core._streams import Reader
from lakelet.core.errors import IntegrityError, NotFoundError
from lakelet.remote._remote import Remote, parallel
from lakelet.storage import _packs
from lakelet.storage._objects import (
    ObjectStore,
    StoredBlob,
    hash_stream,
    sync_filesystem,
    write_blob,
    write_small_blob,
)
from lakelet.storage._packs import Member
from lakelet.storage._refs import NameRecord

__all__ = ["Fetcher"]

_WHOLE_READ = 8 << 20  # loose objects up to this size are fetched in one request, into memory


class Fetcher:
    def __init__(self, remote: Remote, catalog: Catalog, objects: ObjectStore, tmp: Path) -> None:
        self.remote = remote
        self._catalog = catalog
        self._objects = objects
        self._tmp = tmp

    def fetch(self, record: NameRecord, progress: Progress = SILENT) -> StoredBlob:
        """Download the object of ``record`` into the local store (durably), verified."""
        where = self._catalog.pack_locations([record.digest]).get(record.digest)
        if where is not None:
            pack, member = where
            return self._from_pack(pack, [(member, record)], durable=True, progress=progress)[0]
        return self._loose(record, progress)

    def fetch_many(self, records: list[NameRecord], progress: Progress = SILENT) -> int:
        """Download every object of ``records`` not held locally; returns how many."""
        missing = {r.digest: r for r in records if not self._objects.has(Digest.parse(r.digest))}
        progress.add_total(sum(r.size for r in missing.values()))
        where = self._catalog.pack_locations(missing)
        by_pack: dict[str, list[tuple[Member, NameRecord]]] = {}
        for digest, (pack, member) in where.items():
            by_pack.setdefault(pack, []).append((member, missing[digest]))
        jobs: list[Callable[[], object]] = [
            partial(self._loose, r, progress) for d, r in missing.items() if d not in where
        ]
        jobs += [partial(self._from_pack, p, ms, False, progress) for p, ms in by_pack.items()]
        try:
            parallel(lambda job: job(), jobs, self.remote.transfers)
        finally:
            if by_pack:  # one flush for every member written without its own fsync
                sync_filesystem(self._tmp)
        return len(missing)

    def _loose(self, record: NameRecord, progress: Progress) -> StoredBlob:
        expected = Digest.parse(record.digest)
        if record.size == 0:  # nothing to read: its digest is checked all the same
            return self._store(io.BytesIO(b""), record, durable=True, progress=progress)
        try:
            if record.size <= _WHOLE_READ:
                # one ranged GET: opening a file object costs a HEAD first on s3fs
                data = self.remote.read_bytes(self.remote.object_key(expected), 0, record.size)
                if data is None:
                    raise FileNotFoundError(record.digest)
                reader: Reader = io.BytesIO(data)
            else:
                reader = self.remote.open_object(expected)
        except FileNotFoundError:
            raise self._missing(record) from None
        with reader, self.remote.errors(f"downloading {record.digest}"):
            return self._store(reader, record, durable=True, progress=progress)

    def _from_pack(
        self, pack: str, wanted: list[tuple[Member, NameRecord]], durable: bool, progress: Progress
    ) -> list[StoredBlob]:
        """Read the span of ``pack`` that holds the ``wanted`` members (one request), then
        store each member that hashes right. Raises IntegrityError after storing the others.

        A pack that is gone (gc deleted it once nothing referenced it; the object was sent
        again later, loose) sends each member to its loose key instead."""
        wanted = sorted(wanted, key=lambda w: w[0].offset)
        start, end = wanted[0][0].offset, max(m.end for m, _ in wanted)
        if end - start > _WHOLE_READ:
            return [self._streamed(pack, m, r, durable, progress) for m, r in wanted]
        data = self.remote.read_bytes(_packs.key_of(pack), start, end)
        if data is None:
            return [self._loose(record, progress) for _, record in wanted]
        records = {m.digest: r for m, r in wanted}
        stored, corrupt = [], []
        for member, chunk in _packs.slices(data, start, [m for m, _ in wanted]):
            try:
                if durable:
                    stored.append(self._store(io.BytesIO(chunk), records[member.digest], True, progress))
                else:
                    stored.append(self._store_member(chunk, records[member.digest], progress))
            except IntegrityError as e:
                try:  # a good copy at its loose key (put there by `fsck --remote --repair`)?
                    stored.append(self._loose(records[member.digest], progress))
                except (IntegrityError, NotFoundError):
                    corrupt.append(e)
        if corrupt:
            more = f" (and {len(corrupt) - 1} more in that pack)" if len(corrupt) > 1 else ""
            raise IntegrityError(f"{corrupt[0]}{more}")
        return stored

    def _streamed(
        self, pack: str, member: Member, record: NameRecord, durable: bool, progress: Progress
    ) -> StoredBlob:
        try:
            file = self.remote.open_file(_packs.key_of(pack))
        except FileNotFoundError:
            return self._loose(record, progress)
        with _Span(file, member) as span, self.remote.errors(f"downloading {record.digest}"):
            return self._store(span, record, durable, progress)

    def _store(self, reader: Reader, record: NameRecord, durable: bool, progress: Progress) -> StoredBlob:
        expected = Digest.parse(record.digest)

        def place(actual: Digest) -> Path:
            return self._objects.path(actual) if actual == expected else new_temp_path(self._tmp)

        blob = write_blob(reader, self._tmp, place, durable=durable, progress=progress)
        if blob.digest != expected:
            blob.path.unlink(missing_ok=True)
            raise self._corrupt(record, blob.digest)
        return blob

    def _store_member(self, data: bytes | memoryview, record: NameRecord, progress: Progress) -> StoredBlob:
        """A pack member of a pull, already in memory: hashed first, so corrupt bytes are never
        written, then stored as a directory add stores small files (the caller syncs once)."""
        expected = Digest.parse(record.digest)
        actual = digest_bytes(data, expected.algorithm)
        if actual != expected:
            raise self._corrupt(record, actual)
        blob = write_small_blob(data, os.fspath(self._tmp), self._objects, digest=actual)
        progress.advance(len(data))
        return blob

    def _corrupt(self, record: NameRecord, actual: Digest) -> IntegrityError:
        return IntegrityError(
            f"the copy of {record.digest} on remote {self.remote.url} is corrupt "
            f"(its bytes hash to {actual}): nothing was cached; repair the remote with "
            "`lakelet fsck --remote --repair` on a machine that holds the file"
        )

    def _missing(self, record: NameRecord) -> NotFoundError:
        return NotFoundError(
            f"the content of {record.name!r} ({record.digest}) is neither local nor on "
            f"remote {self.remote.url}"
        )

    def check(self, sizes: dict[str, int], progress: Progress = SILENT) -> dict[str, str]:
        """What is wrong with the remote's copy of each object of ``sizes`` (digest -> size):
        'missing', or 'corrupt (…)'; one held intact is left out. Reads every byte. A packed
        object whose member is damaged, or whose pack is gone, counts as held if its loose
        key holds it intact: ``fetch`` reads it there then (``fsck --remote --repair`` puts a
        good copy there)."""
        progress.add_total(sum(sizes.values()))
        by_pack: dict[str, list[Member]] = {}
        for pack, member in self._catalog.pack_locations(sizes).values():
            by_pack.setdefault(pack, []).append(member)
        in_packs = {m.digest for members in by_pack.values() for m in members}
        jobs: list[Callable[[], dict[str, str]]] = [
            partial(self._check_pack, pack, members, sizes, progress) for pack, members in by_pack.items()
        ]
        jobs += [partial(self._check_loose, d, progress) for d in sizes if d not in in_packs]
        return {
            d: problem
            for found in parallel(lambda job: job(), jobs, self.remote.transfers)
            for d, problem in found.items()
        }

    def _check_pack(
        self, pack: str, members: list[Member], sizes: dict[str, int], progress: Progress
    ) -> dict[str, str]:
        members = sorted(members, key=lambda m: m.offset)
        start, end = members[0].offset, max(m.end for m in members)
        found: dict[str, str] = {}
        data = self.remote.read_bytes(_packs.key_of(pack), start, end) if end - start <= _WHOLE_READ else None
        for member in members:
            expected = Digest.parse(member.digest)
            if data is not None:
                chunk = next(c for _, c in _packs.slices(data, start, [member]))
                actual, size = digest_bytes(chunk, expected.algorithm), len(chunk)
                progress.advance(size)
            else:
                try:
                    file = self.remote.open_file(_packs.key_of(pack))
                except FileNotFoundError:
                    actual, size = None, 0
                else:
                    with _Span(file, member) as span, self.remote.errors(f"reading {pack}"):
                        actual, size = hash_stream(span, expected.algorithm, progress)
            if actual != expected or size != sizes[member.digest]:
                found.update(self._check_loose(member.digest, SILENT))  # where a fetch looks next
        return found

    def _check_loose(self, digest: str, progress: Progress) -> dict[str, str]:
        expected = Digest.parse(digest)
        try:
            reader = self.remote.open_object(expected)
        except FileNotFoundError:
            return {digest: "missing"}
        with reader, self.remote.errors(f"reading object {digest}"):
            actual, _ = hash_stream(reader, expected.algorithm, progress)
        return {} if actual == expected else {digest: f"corrupt (its bytes hash to {actual})"}

    def is_on_remote(self, record: NameRecord, sizes: dict[str, int | None]) -> bool:
        """Whether the remote holds the bytes of ``record``: its pack (checked once per pack,
        ``sizes`` remembers) or its loose object has the size the record needs."""
        where = self._catalog.pack_locations([record.digest]).get(record.digest)
        key = _packs.key_of(where[0]) if where else self.remote.object_key(Digest.parse(record.digest))
        if key not in sizes:
            sizes[key] = self.remote.size(key)
        size = sizes[key]
        return size is not None and (size >= where[1].end if where else size == record.size)

    def url(self, record: NameRecord, expires_s: int) -> str:
        """A URL of the object alone. A presigned URL serves one whole key, so a packed
        object gets a loose copy of its own first (uploaded once, then reused)."""
        digest = Digest.parse(record.digest)
        key = self.remote.object_key(digest)
        if self._catalog.pack_locations([record.digest]) and self.remote.size(key) != record.size:
            if not self._objects.has(digest):
                self.fetch(record)
            self.remote.upload(self._objects.path(digest), key)
        return self.remote.url_of(key, expires_s)


class _Span(io.RawIOBase):
    """The bytes of one member of an open pack, as a stream (closing it closes the pack)."""

    def __init__(self, file: Reader, member: Member) -> None:
        file.seek(member.offset)
        self._file = file
        self._left = member.size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        with memoryview(buffer) as view:
            n = self._file.readinto(view[: min(len(view), self._left)]) or 0
        self._left -= n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()
