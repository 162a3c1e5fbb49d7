"""Moving a lake between its local root and its remote: publish, push, sync, fetch, evict.

Order is what keeps every machine consistent: objects are uploaded before the
log entry that binds names to them is appended, that entry is appended (the
arbiter, by conditional create) before the names are bound locally, and a
downloaded object is verified before it is renamed into the local store.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from . import _faults
from ._catalog import Catalog
from ._digest import Digest
from ._errors import IntegrityError, NameExistsError, NotFoundError, RemoteError
from ._log import SNAPSHOT_EVERY, Log
from ._objects import ObjectStore, StoredBlob, new_temp_path, write_blob
from ._progress import SILENT, Progress
from ._refs import NameRecord
from ._remote import Remote
from ._remote import parallel as _parallel  # _datasets imports it from here too
from ._scopes import LAKE

_HEAD_FIRST = 1 << 20  # above this size, ask whether the remote has an object before sending it
_WHOLE_READ = 8 << 20  # objects up to this size are fetched in one request, into memory
_MAX_ATTEMPTS = 100  # log entries lost to other writers in a row before giving up
_CURSOR = "log_seq"  # the last log entry applied (written by Catalog.apply_remote)
_LAST_SYNC = "last_sync"
_SNAPSHOT_SEEN = "snapshot_seq"


@dataclass
class PushReport:
    names: int = 0
    objects: int = 0
    bytes: int = 0
    conflicts: list[str] = field(default_factory=list)


@dataclass
class SyncReport:
    pushed: PushReport
    new_names: int = 0
    entries_read: int = 0


@dataclass
class EvictReport:
    files: int = 0
    bytes: int = 0
    kept_unpushed: list[str] = field(default_factory=list)


class Syncer:
    def __init__(self, remote: Remote, catalog: Catalog, objects: ObjectStore, tmp: Path) -> None:
        self.remote = remote
        self.log = Log(remote)
        self._catalog = catalog
        self._objects = objects
        self._tmp = tmp

    # writing to the remote

    def publish(self, records: list[NameRecord], progress: Progress = SILENT) -> list[NameRecord]:
        """Write-through for a new batch: all names bound on the remote, or none.

        Returns the records as bound on the remote; raises NameExistsError when
        any name is bound there to other content (nothing of the batch is bound).
        """
        self.pull_metadata()
        new, _, conflicts = self._classify(records)
        if conflicts:  # known before sending a byte
            raise NameExistsError(_conflict_message(conflicts, self.remote.url))
        self.upload_objects(new, progress)
        bound, _ = self._commit(records, all_or_nothing=True)
        by_name = {r.name: r for r in bound}
        return [by_name[r.name] for r in records]

    def push(self, pending: list[NameRecord], progress: Progress = SILENT) -> PushReport:
        """Send names bound locally but not yet on the remote. Conflicts are reported, not raised."""
        report = PushReport()
        if not pending:
            return report
        self.pull_metadata()
        new, _, _ = self._classify(pending)
        report.objects, report.bytes = self.upload_objects(new, progress)
        bound, report.conflicts = self._commit(pending, all_or_nothing=False)
        report.names = len(bound)
        return report

    def tombstone(self, record: NameRecord) -> None:
        self._commit([record], all_or_nothing=True)

    def upload_objects(self, records: list[NameRecord], progress: Progress = SILENT) -> tuple[int, int]:
        """Send the objects of ``records`` the remote lacks; returns (objects sent, bytes sent)."""
        by_digest = {r.digest: r.size for r in records}
        for digest in self._catalog.remote_has(by_digest):  # the log names them: they are there
            del by_digest[digest]
        progress.add_total(sum(by_digest.values()))

        def send(item: tuple[str, int]) -> int:
            digest, size = Digest.parse(item[0]), item[1]
            if size >= _HEAD_FIRST and self.remote.object_size(digest) == size:
                progress.advance(size)
                return 0
            local = self._objects.path(digest)
            if not local.is_file():
                raise NotFoundError(f"object {digest} is not stored locally, so it cannot be pushed")
            self.remote.upload(local, self.remote.object_key(digest))
            progress.advance(size)
            return size

        sent = [n for n in _parallel(send, by_digest.items(), self.remote.transfers) if n]
        _faults.reached("objects-pushed")
        return len(sent), sum(sent)

    def _classify(
        self, records: list[NameRecord]
    ) -> tuple[list[NameRecord], list[NameRecord], list[str]]:
        """Split ``records`` by what the remote binds, as far as this machine has read its log:
        (to bind, already bound there as asked, conflicting names)."""
        known = self._catalog.remote_bindings(LAKE, (r.name for r in records))
        new, bound, conflicts = [], [], []
        for record in records:
            there = known.get(record.name)
            removing = record.removed_at is not None
            if there is None:
                new.append(record)
            elif there[0] != record.digest or (there[1] and not removing):
                conflicts.append(record.name)
            elif removing and not there[1]:
                new.append(record)  # a tombstone of a name bound there
            else:
                bound.append(self._catalog.get(LAKE, record.name) or record)
        return new, bound, conflicts

    def _commit(
        self, records: list[NameRecord], all_or_nothing: bool
    ) -> tuple[list[NameRecord], list[str]]:
        """Bind ``records`` by appending one log entry. Returns (records as bound, conflicts).

        The entry goes after the last one this machine has applied; if another
        writer took that number, its entry is read and the names checked again.
        """
        for _ in range(_MAX_ATTEMPTS):
            new, bound, conflicts = self._classify(records)
            if conflicts and all_or_nothing:
                raise NameExistsError(_conflict_message(conflicts, self.remote.url))
            if not new:
                return bound, conflicts
            seq = self._cursor() + 1
            try:
                self.log.append(seq, new)
            except FileExistsError:
                self.pull_metadata()
                continue
            _faults.reached("log-appended")
            self._catalog.apply_remote(seq, new)
            return [*bound, *new], conflicts
        raise RemoteError(
            f"remote {self.remote.url}: {_MAX_ATTEMPTS} log entries in a row were taken by other "
            "writers while binding names; try again"
        )

    # reading from the remote

    def _cursor(self) -> int:
        return int(self._catalog.get_state(_CURSOR) or 0)

    def lookup(self, name: str) -> NameRecord | None:
        """The remote's record of a lake name this machine has not seen yet (read from the
        log entries it has not applied: no request per name)."""
        self.pull_metadata()
        return self._catalog.get(LAKE, name)

    def pull_metadata(self) -> tuple[int, int]:
        """Apply the log entries this machine has not read; returns (names, entries).

        The cost is one listing (one more per 1,000 entries) and one read per new
        entry: it does not grow with the number of names in the lake. A machine
        that has read nothing yet starts from the latest snapshot.
        """
        cursor = self._cursor()
        names = 0
        if cursor == 0:
            taken = self.log.snapshots()
            if taken:
                records = self.log.read_snapshot(taken[-1])
                self._catalog.apply_remote(taken[-1], records)
                self._catalog.set_state(_SNAPSHOT_SEEN, str(taken[-1]))
                names, cursor = len(records), taken[-1]
        entries = self.log.entries_after(cursor)
        if entries:
            self._catalog.apply_remote(entries[-1].seq, (r for e in entries for r in e.records))
            names += sum(len(e.records) for e in entries)
        self._catalog.set_state(_LAST_SYNC, datetime.now(UTC).isoformat())
        return names, len(entries)

    def maybe_snapshot(self) -> bool:
        """Write a snapshot once SNAPSHOT_EVERY entries have followed the latest, so that a new
        machine reads one file and at most a few folders of entries."""
        cursor = self._cursor()
        seen = int(self._catalog.get_state(_SNAPSHOT_SEEN) or 0)
        if cursor - seen < SNAPSHOT_EVERY:
            return False
        latest = max(self.log.snapshots(), default=0)
        if cursor - latest < SNAPSHOT_EVERY:
            self._catalog.set_state(_SNAPSHOT_SEEN, str(latest))
            return False
        records = self._catalog.remote_records(LAKE)
        if records is None:  # a name here lost a race: leave the snapshot to another machine
            return False
        self.log.write_snapshot(cursor, records)
        self._catalog.set_state(_SNAPSHOT_SEEN, str(cursor))
        return True

    def last_sync(self) -> datetime | None:
        value = self._catalog.get_state(_LAST_SYNC)
        return datetime.fromisoformat(value) if value else None

    # content

    def fetch(self, record: NameRecord, progress: Progress = SILENT) -> StoredBlob:
        """Download the object of ``record`` into the local store, verified on the way."""
        expected = Digest.parse(record.digest)
        try:
            if 0 < record.size <= _WHOLE_READ:
                # one ranged GET: opening a file object costs a HEAD first on s3fs
                data = self.remote.read_bytes(self.remote.object_key(expected), 0, record.size)
                if data is None:
                    raise FileNotFoundError(record.digest)
                reader: BinaryIO = io.BytesIO(data)
            else:
                reader = self.remote.open_object(expected)
        except FileNotFoundError:
            raise NotFoundError(
                f"the content of {record.name!r} ({record.digest}) is neither local nor on "
                f"remote {self.remote.url}"
            ) from None
        # Only bytes that hash to the expected digest are placed in objects/;
        # anything else lands in a throwaway temp path and is deleted.
        def place(actual: Digest) -> Path:
            return self._objects.path(actual) if actual == expected else new_temp_path(self._tmp)

        with reader, self.remote.errors(f"downloading {record.digest}"):
            blob = write_blob(reader, self._tmp, place, durable=True, progress=progress)
        if blob.digest != expected:
            blob.path.unlink(missing_ok=True)
            raise IntegrityError(
                f"the copy of {record.digest} on remote {self.remote.url} is corrupt "
                f"(its bytes hash to {blob.digest}): nothing was cached; repair the remote "
                "with `lakelet push` from a machine that holds the file"
            )
        return blob

    def fetch_many(self, records: list[NameRecord], progress: Progress = SILENT) -> int:
        missing = {r.digest: r for r in records if not self._objects.has(Digest.parse(r.digest))}
        progress.add_total(sum(r.size for r in missing.values()))
        _parallel(lambda r: self.fetch(r, progress), missing.values(), self.remote.transfers)
        return len(missing)

    def evict(self, records: list[NameRecord]) -> EvictReport:
        report = EvictReport()
        on_remote = self._catalog.remote_digests(LAKE)
        keep = {r.digest for r in self._catalog.not_on_remote(LAKE)}
        for record in records:
            digest = Digest.parse(record.digest)
            path = self._objects.path(digest)
            if not path.is_file():
                continue
            if on_remote.get(record.name) != record.digest or record.digest in keep:
                report.kept_unpushed.append(record.name)
                continue
            if self.remote.object_size(digest) != record.size:  # trust, but check the bytes are there
                report.kept_unpushed.append(record.name)
                continue
            size = path.stat().st_size
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                report.files += 1
                report.bytes += size
        return report


def _conflict_message(conflicts: list[str], url: str) -> str:
    shown = ", ".join(repr(n) for n in conflicts[:3])
    more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
    return (
        f"{shown}{more} already bound to other content on remote {url}; "
        "lake names are write-once: choose another name"
    )
