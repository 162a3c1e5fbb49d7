"""Moving a lake between its local root and its remote: publish, push, sync, fetch, evict.

Order is what keeps every machine consistent: objects are uploaded before the
name that points at them is created, a name is created on the remote (the
arbiter, by conditional create) before it is bound locally or journaled, and
a downloaded object is verified before it is renamed into the local store.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from . import _faults
from ._catalog import Catalog
from ._digest import Digest
from ._errors import IntegrityError, NameExistsError, NotFoundError
from ._objects import ObjectStore, StoredBlob, new_temp_path, write_blob
from ._progress import SILENT, Progress
from ._refs import NameRecord, check_same_content
from ._remote import JOURNAL_LOOKBACK, Remote, hour_of, parse_hour
from ._remote import parallel as _parallel  # _datasets imports it from here too
from ._scopes import LAKE

_HEAD_FIRST = 1 << 20  # above this size, ask whether the remote has an object before sending it
_WHOLE_READ = 8 << 20  # objects up to this size are fetched in one request, into memory
_SNAPSHOT_EVERY_HOURS = 24
_CURSOR = "journal_cursor"
_LAST_SYNC = "last_sync"

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
    segments_read: int = 0


@dataclass
class EvictReport:
    files: int = 0
    bytes: int = 0
    kept_unpushed: list[str] = field(default_factory=list)


class Syncer:
    def __init__(self, remote: Remote, catalog: Catalog, objects: ObjectStore, tmp: Path) -> None:
        self.remote = remote
        self._catalog = catalog
        self._objects = objects
        self._tmp = tmp

    # writing to the remote

    def upload_objects(self, records: list[NameRecord], progress: Progress = SILENT) -> tuple[int, int]:
        """Send the objects of ``records`` the remote lacks; returns (objects sent, bytes sent)."""
        by_digest = {r.digest: r.size for r in records}
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

    def bind_names(self, records: list[NameRecord]) -> tuple[list[NameRecord], list[NameRecord], list[str]]:
        """Create lake names on the remote.

        Returns (created by this call, already bound there to the same content, conflicts).
        """

        def bind(record: NameRecord) -> tuple[str, NameRecord]:
            try:
                self.remote.create_name(record)
                return "created", record
            except FileExistsError:
                existing = self.remote.read_name(record.name)
                if existing is None:  # removed between the two requests: cannot happen for lake names
                    return "conflict", record
                try:
                    check_same_content(existing, record)
                except NameExistsError:
                    return "conflict", existing
                return "same", existing

        created, same, conflicts = [], [], []
        for outcome, record in _parallel(bind, records, self.remote.transfers):
            if outcome == "created":
                created.append(record)
            elif outcome == "same":
                same.append(record)
            else:
                conflicts.append(record.name)
        _faults.reached("names-pushed")
        return created, same, conflicts

    def publish(self, records: list[NameRecord], progress: Progress = SILENT) -> list[NameRecord]:
        """Write-through for a new batch: objects, then names; all or nothing.

        Returns the records as bound on the remote. On a conflict, undoes the
        names this call created (they were never journaled) and raises.
        """
        self.upload_objects(records, progress)
        created, same, conflicts = self.bind_names(records)
        if conflicts:
            for record in created:
                self.remote.delete_name(record.name)
            raise NameExistsError(_conflict_message(conflicts, self.remote.url))
        self.remote.append_journal([*created, *same])
        self._catalog.mark_on_remote([*created, *same])
        by_name = {r.name: r for r in [*created, *same]}
        return [by_name[r.name] for r in records]

    def push(self, pending: list[NameRecord], progress: Progress = SILENT) -> PushReport:
        """Send names bound locally but not yet on the remote. Conflicts are reported, not raised."""
        report = PushReport()
        if not pending:
            return report
        report.objects, report.bytes = self.upload_objects(pending, progress)
        created, same, report.conflicts = self.bind_names(pending)
        self.remote.append_journal([*created, *same])
        self._catalog.mark_on_remote([*created, *same])
        report.names = len(created) + len(same)
        return report

    def tombstone(self, record: NameRecord) -> None:
        self.remote.tombstone(record)
        self.remote.append_journal([record])

    # reading from the remote

    def lookup(self, name: str) -> NameRecord | None:
        """The remote's record of a lake name this machine has not seen yet."""
        record = self.remote.read_name(name)
        if record is not None:
            self._catalog.apply_segments([], [record])
        return record

    def pull_metadata(self) -> tuple[int, int]:
        """Apply the journal segments this machine has not read; returns (names, segments).

        The cost is one listing per journal hour since the last sync (plus one
        hour of look-back) and one read per new segment: it does not grow with
        the number of names in the lake.
        """
        now = datetime.now(UTC)
        cursor = self._catalog.get_state(_CURSOR)
        names = 0
        if cursor is None:
            snapshot = self.remote.latest_snapshot()
            if snapshot is not None:
                cutoff, records = snapshot
                self._catalog.apply_segments([f"snapshots/{cutoff}"], records)
                names += len(records)
                cursor = cutoff
        hours = self._hours_to_read(cursor, now)
        segments_read = 0
        for hour in hours:
            keys = self.remote.journal_segments(hour)
            new = [k for k in keys if k not in self._catalog.seen_segments(keys)]
            for key, records in self.remote.read_segments(new).items():
                self._catalog.apply_segments([key], records)
                names += len(records)
                segments_read += 1
        self._catalog.set_state(_CURSOR, hour_of(now))
        self._catalog.set_state(_LAST_SYNC, now.isoformat())
        return names, segments_read

    def _hours_to_read(self, cursor: str | None, now: datetime) -> list[str]:
        if cursor is not None:
            start = parse_hour(cursor) - JOURNAL_LOOKBACK
            span = now - start
            if span.total_seconds() <= 48 * 3600:
                # enumerate the hours instead of listing journal/: a recent sync costs 2-3 listings
                hours, t = [], start
                while t <= now + JOURNAL_LOOKBACK:
                    hours.append(hour_of(t))
                    t = t.replace(minute=0, second=0, microsecond=0) + JOURNAL_LOOKBACK
                return sorted(set(hours))
            return [h for h in self.remote.journal_hours() if h >= hour_of(start)]
        return self.remote.journal_hours()

    def maybe_snapshot(self, records: Callable[[], list[NameRecord]]) -> bool:
        """Compact the journal into a snapshot once a day, so new machines start fast."""
        cursor = self._catalog.get_state(_CURSOR)
        latest = self._catalog.get_state("snapshot_seen")
        now = datetime.now(UTC)
        cutoff = hour_of(now - 2 * JOURNAL_LOOKBACK)
        if cursor is None or cutoff > cursor:
            return False
        if latest is not None and (parse_hour(cutoff) - parse_hour(latest)).total_seconds() < (
            _SNAPSHOT_EVERY_HOURS * 3600
        ):
            return False
        existing = self.remote.latest_snapshot()
        if existing is not None and (parse_hour(cutoff) - parse_hour(existing[0])).total_seconds() < (
            _SNAPSHOT_EVERY_HOURS * 3600
        ):
            self._catalog.set_state("snapshot_seen", existing[0])
            return False
        self.remote.write_snapshot(cutoff, records())
        self._catalog.set_state("snapshot_seen", cutoff)
        return True

    def last_sync(self) -> datetime | None:
        value = self._catalog.get_state(_LAST_SYNC)
        return datetime.fromisoformat(value) if value else None

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
