"""Moving a lake between its local root and its remote: publish, push, sync, fetch, evict.

Order is what keeps every machine consistent: objects (loose or in packs) are
uploaded before the log entry that binds names to them is appended, that
entry is appended (the arbiter, by conditional create) before the names are
bound locally, and a downloaded object is verified before it is renamed into
the local store (``_fetch``). A push never binds a name to bytes under a key
that a remote gc announced it is deleting (``_sweeps``): it sends them again
under a new one.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lakelet.catalog._catalog import Catalog
from lakelet.core import _faults
from lakelet.core._batch import batched
from lakelet.core._digest import Digest
from lakelet.core._progress import SILENT, Progress
from lakelet.core.errors import CorruptRecordError, NameExistsError, NotFoundError, RemoteError
from lakelet.remote._fetch import Fetcher
from lakelet.remote._log import SNAPSHOT_EVERY, Log, entry_key, snapshot_key
from lakelet.remote._remote import Remote
from lakelet.remote._remote import parallel as _parallel
from lakelet.remote._snapshot import read_snapshot
from lakelet.storage import _packs
from lakelet.storage._objects import ObjectStore, StoredBlob
from lakelet.storage._packs import Pack
from lakelet.storage._refs import NameRecord
from lakelet.storage._scopes import LAKE
from lakelet.storage._sweeps import Sweep

__all__ = ["EvictReport", "PushReport", "SyncReport", "Syncer"]

_HEAD_FIRST = 1 << 20  # above this size, ask whether the remote has a loose object before sending it
_MAX_ATTEMPTS = 100  # log entries lost to other writers in a row before giving up
_FRESH_TAIL = 16  # random bytes that give a pack sent again a key no sweep has named
_CURSOR = "log_seq"  # the last log entry applied (written by Catalog.apply_remote)
_LAST_SYNC = "last_sync"
_SNAPSHOT_SEEN = "snapshot_seq"
_log = logging.getLogger("lakelet.remote")


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
    # one line per record of the remote's log (or snapshot) that was skipped: damaged, or not
    # what a lakelet writes (also logged, as warnings of the 'lakelet.remote' logger)
    problems: list[str] = field(default_factory=list)


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
        self._fetcher = Fetcher(remote, catalog, objects, tmp)
        self.problems: list[str] = []  # every record skipped since this syncer was made

    def _report(self, problem: str) -> None:
        line = f"remote {self.remote.url}: {problem}"
        self.problems.append(line)
        _log.warning("%s", line)

    # writing to the remote

    def publish(self, records: list[NameRecord], progress: Progress = SILENT) -> list[NameRecord]:
        """Write-through for a new batch: all names bound on the remote, or none.

        Returns the records as bound on the remote; raises NameExistsError when
        any name is bound there to other content (nothing of the batch is bound).
        """
        self.pull_metadata()
        since = self.cursor()  # every object is sent or looked for after this entry
        new, _, conflicts = self._classify(records)
        if conflicts:  # known before sending a byte
            raise NameExistsError(_conflict_message(conflicts, self.remote.url), name=conflicts[0])
        packs, _, _ = self.upload_objects(new, progress)
        bound, _ = self._commit(records, packs, all_or_nothing=True, since=since, progress=progress)
        by_name = {r.name: r for r in bound}
        return [by_name[r.name] for r in records]

    def push(self, pending: list[NameRecord], progress: Progress = SILENT) -> PushReport:
        """Send names bound locally but not yet on the remote. Conflicts are reported, not raised."""
        report = PushReport()
        if not pending:
            return report
        self.pull_metadata()
        since = self.cursor()
        new, _, _ = self._classify(pending)
        packs, report.objects, report.bytes = self.upload_objects(new, progress)
        bound, report.conflicts = self._commit(
            pending, packs, all_or_nothing=False, since=since, progress=progress, report=report
        )
        report.names = len(bound)
        return report

    def tombstone(self, records: list[NameRecord]) -> None:
        """Mark lake names removed on the remote: one log entry for the batch."""
        self._commit(records, [], all_or_nothing=True)

    def upload_objects(
        self, records: list[NameRecord], progress: Progress = SILENT
    ) -> tuple[list[Pack], int, int]:
        """Send the objects of ``records`` the remote lacks: small ones in packs.

        Returns (the packs sent, objects sent, bytes sent).
        """
        # Every object is sent, even one the log says the remote holds: gc may have deleted
        # it since (the outputs of expired stage runs release theirs). Big ones are looked
        # for first and not sent again if there (_send_loose): whether a gc may be deleting
        # what was found, or what was sent, is settled when the entry is appended (_commit).
        sizes = {r.digest: r.size for r in records}
        # (an empty object has no range to read back: it goes alone)
        small = {d: s for d, s in sizes.items() if 0 < s <= _packs.MEMBER_MAX}
        if len(small) < 2:  # a pack of one is a loose object with extra steps
            small = {}
        groups = _packs.plan(small)
        loose = [(d, s) for d, s in sizes.items() if d not in small]
        progress.add_total(sum(sizes.values()))

        def send(job: tuple[str, list[tuple[str, int]]]) -> tuple[Pack | None, int, int]:
            kind, items = job
            if kind == "pack":
                return self._send_pack(items, progress)
            ((digest, size),) = items
            return None, *self._send_loose(Digest.parse(digest), size, progress)

        jobs = [("pack", g) for g in groups] + [("loose", [item]) for item in loose]
        sent = _parallel(send, jobs, self.remote.transfers)
        _faults.reached("objects-pushed")
        packs = [p for p, _, _ in sent if p is not None]
        return packs, sum(n for _, n, _ in sent), sum(b for _, _, b in sent)

    def _send_pack(self, group: list[tuple[str, int]], progress: Progress) -> tuple[Pack, int, int]:
        path, pack = _packs.write(group, self._objects.path, self._tmp)
        try:
            # content-addressed: a second upload of the same pack writes the same bytes
            self.remote.upload(path, _packs.key_of(pack.digest))
        finally:
            path.unlink(missing_ok=True)
        size = sum(s for _, s in group)
        progress.advance(size)
        return pack, len(group), size

    def _send_loose(self, digest: Digest, size: int, progress: Progress) -> tuple[int, int]:
        if size >= _HEAD_FIRST and self.remote.object_size(digest) == size:
            progress.advance(size)
            return 0, 0
        local = self._objects.path(digest)
        if not local.is_file():
            raise NotFoundError(f"object {digest} is not stored locally, so it cannot be pushed")
        self.remote.upload(local, self.remote.object_key(digest))
        progress.advance(size)
        return 1, size

    def _classify(self, records: list[NameRecord]) -> tuple[list[NameRecord], list[NameRecord], list[str]]:
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
        self,
        records: list[NameRecord],
        packs: list[Pack],
        all_or_nothing: bool,
        since: int | None = None,
        progress: Progress = SILENT,
        report: PushReport | None = None,
    ) -> tuple[list[NameRecord], list[str]]:
        """Bind ``records`` by appending one log entry. Returns (records as bound, conflicts).

        The entry goes after the last one this machine has applied; if another
        writer took that number, its entry is read and the names checked again.
        ``since``: the entry after which the objects were sent or found on the
        remote (None for tombstones, which need no bytes).
        """
        for _ in range(_MAX_ATTEMPTS):
            new, bound, conflicts = self._classify(records)
            if conflicts and all_or_nothing:
                raise NameExistsError(_conflict_message(conflicts, self.remote.url))
            if not new:
                return bound, conflicts
            if since is not None:
                packs = self._resend_swept(new, packs, since, progress, report)
            used = {r.digest for r in new}
            # only packs holding an object of this entry: the others hold nothing it names
            entry_packs = [p for p in packs if any(m.digest in used for m in p.members)]
            seq = self.cursor() + 1
            try:
                self.log.append(seq, new, entry_packs)
            except FileExistsError:
                self.pull_metadata()
                continue
            _faults.reached("log-appended")
            self._apply(seq, new, entry_packs)
            return [*bound, *new], conflicts
        raise RemoteError(
            f"remote {self.remote.url}: {_MAX_ATTEMPTS} log entries in a row were taken by other "
            "writers while binding names; try again",
            url=self.remote.url,
        )

    def _resend_swept(
        self,
        new: list[NameRecord],
        packs: list[Pack],
        since: int,
        progress: Progress,
        report: PushReport | None,
    ) -> list[Pack]:
        """``packs``, with the objects of ``new`` whose key a gc sweep may be deleting sent
        again under new keys.

        Called with every entry before the one about to be appended applied: a sweep
        announced after it will have seen this entry's names and spares their keys
        (docs/remote-layout.md, "gc against a push"). A sweep announced before it, and not done
        by entry ``since`` (before which nothing of this push was sent or looked for), may
        delete a key this entry relies on at any moment, even one this push has just
        written: the same bytes sent again land on the same key. So those objects go in
        new packs, whose keys no sweep names (they end with random bytes), and this
        entry's pack lines place them there."""
        sizes = {r.digest: r.size for r in new if r.removed_at is None and r.size > 0}
        relied: dict[str, list[str]] = {}  # key -> the objects of this entry read from it
        for pack in packs:
            members = [m.digest for m in pack.members if m.digest in sizes]
            if members:
                relied[_packs.key_of(pack.digest)] = members
        in_packs = {d for members in relied.values() for d in members}
        for digest in sizes.keys() - in_packs:
            relied[self.remote.object_key(Digest.parse(digest))] = [digest]
        swept = self._catalog.swept(relied, since)
        if not swept:
            return packs  # the common case: one query of the index, no request
        again = {d: sizes[d] for key in swept for d in relied[key]}
        small = {d: s for d, s in again.items() if s <= _packs.MEMBER_MAX}
        # a big object goes alone, so that a reader streams it rather than holding a span
        groups = _packs.plan(small) + [[(d, s)] for d, s in again.items() if d not in small]
        progress.add_total(sum(again.values()))

        def send(group: list[tuple[str, int]]) -> Pack:
            path, pack = _packs.write(
                group, self._objects.path, self._tmp, tail=secrets.token_bytes(_FRESH_TAIL)
            )
            try:
                self.remote.upload(path, _packs.key_of(pack.digest))
            finally:
                path.unlink(missing_ok=True)
            progress.advance(sum(s for _, s in group))
            return pack

        fresh = _parallel(send, groups, self.remote.transfers)
        if report is not None:
            report.objects += len(again)
            report.bytes += sum(again.values())
        return [p for p in packs if _packs.key_of(p.digest) not in swept] + fresh

    def announce_sweep(self, keys: list[str], unreferenced: Callable[[list[str]], list[str]]) -> Sweep | None:
        """Append a log entry saying a gc is about to delete ``keys``, those of them that
        ``unreferenced`` still returns once every entry before it is applied. Returns the
        sweep announced (None when nothing is left to delete)."""

        def make(seq: int) -> Sweep | None:
            left = unreferenced(keys)
            return Sweep(seq, tuple(left)) if left else None

        return self._append_sweep(make)

    def end_sweep(self, sweep: Sweep) -> None:
        """Append a log entry saying ``sweep`` has deleted everything it will."""
        self._append_sweep(lambda seq: Sweep(sweep.seq, done_at=seq))

    def _append_sweep(self, make: Callable[[int], Sweep | None]) -> Sweep | None:
        for _ in range(_MAX_ATTEMPTS):
            seq = self.cursor() + 1
            sweep = make(seq)
            if sweep is None:
                return None
            try:
                self.log.append(seq, [], [], [sweep])
            except FileExistsError:
                self.pull_metadata()
                continue
            self._apply(seq, [], [], [sweep])
            return sweep
        raise RemoteError(
            f"remote {self.remote.url}: {_MAX_ATTEMPTS} log entries in a row were taken by other "
            "writers while gc announced a sweep; try again",
            url=self.remote.url,
        )

    # reading from the remote

    def cursor(self) -> int:
        return int(self._catalog.get_state(_CURSOR) or 0)

    def lookup(self, name: str) -> NameRecord | None:
        """The remote's record of a lake name this machine has not seen yet (read from the
        log entries it has not applied: no request per name)."""
        self.pull_metadata()
        return self._catalog.get(LAKE, name)

    def pull_metadata(self, prefix: str = "") -> tuple[int, int]:
        """Apply the log entries this machine has not read; returns (names, entries).

        The cost is one listing (one more per 1,000 entries) and one read per new
        entry: it does not grow with the number of names in the lake. A machine
        that has read nothing yet starts from the latest snapshot that the log
        vouches for. Lines that are not valid records are skipped and reported
        (``problems``); the rest applies.

        ``prefix``: a machine that has read nothing yet learns, of that snapshot, only the
        names under ``prefix`` (the entries after it whole), and its index says so. Every
        other call on such an index (a sync of another prefix or of all, and so every bind,
        push, look-up and remote gc, which all start here) first learns everything again:
        a bind checked against part of the names could bind one bound elsewhere, and a
        remote gc would delete what the names it does not know still need.
        """
        partial = self._catalog.partial_prefix()
        if partial is not None and not (prefix and prefix.startswith(partial)):
            self._catalog.forget_remote()
        cursor = self.cursor()
        names = 0
        listed: dict[int, list[int]] = {}  # log folder listings, shared by the snapshot check
        if cursor == 0:
            taken = self._load_snapshot(listed, prefix)
            if taken is not None:
                names, cursor = taken
        numbers = self.log.entries_after(cursor, listed)
        if numbers:
            # one transaction, as one apply was: the cursor names an entry applied whole
            with self._catalog.applying_remote() as apply:
                for piece in self.log.read_entries(numbers):
                    for problem in piece.problems:
                        self._report(problem)
                    refused = apply(piece.seq, piece.records, piece.packs, piece.sweeps)
                    self._report_refused(refused, entry_key(piece.seq))
                    names += len(piece.records)
        _faults.reached("log-applied")
        self._catalog.set_state(_LAST_SYNC, datetime.now(UTC).isoformat())
        return names, len(numbers)

    def _load_snapshot(self, listed: dict[int, list[int]], prefix: str = "") -> tuple[int, int] | None:
        """Index the newest snapshot that is whole and taken after an entry the log holds,
        streamed in pieces; returns (its names, its entry number), or None to read the log
        from its first entry.

        A snapshot numbered past the log's last entry would make this machine skip every
        entry up to its number, and is no state any machine reached: refused, as is one with
        a line that is not a valid record (it would bind other than the log binds): its
        pieces are applied in one transaction, rolled back at the first bad line."""
        for seq in reversed(self.log.snapshots()):
            if not self.log.holds(seq, listed):
                self._report(
                    f"snapshot {seq} is past the end of the log (there is no {entry_key(seq)}): "
                    "ignored; a machine that is not a lakelet wrote it"
                )
                continue
            names = 0
            refused: list[tuple[NameRecord, str]] = []
            try:
                if self.log.columnar(seq):  # format 3: loaded in bulk (only a prefix: partial)
                    pieces = read_snapshot(self.remote, seq, self._tmp, prefix)
                    names = self._catalog.load_snapshot(seq, pieces, partial=prefix or None)
                else:
                    with self._catalog.applying_remote() as apply:
                        for piece in self.log.read_snapshot(seq):
                            refused += apply(seq, piece.records, piece.packs, piece.sweeps)
                            names += len(piece.records)
            except FileNotFoundError:  # deleted since the listing (or no file): an older one will do
                continue
            except (CorruptRecordError, RemoteError) as e:  # RemoteError: e.g. a folder by that name
                self._report(f"snapshot {seq} ignored: {e}")
                continue
            self._report_refused(refused, snapshot_key(seq))
            self._catalog.set_state(_SNAPSHOT_SEEN, str(seq))
            return names, seq
        return None

    def _apply(
        self, seq: int, records: list[NameRecord], packs: list[Pack], sweeps: list[Sweep] | None = None
    ) -> None:
        """Index an entry this machine has just appended as entry ``seq``."""
        self._report_refused(self._catalog.apply_remote(seq, records, packs, sweeps or []), entry_key(seq))

    def _report_refused(self, refused: list[tuple[NameRecord, str]], where: str) -> None:
        """Report each record refused because its name is bound to other content already."""
        for record, bound in refused:
            self._report(
                f"{where} binds {record.name!r} to {record.digest}, but the log bound it to {bound} "
                "before: ignored (lake names are write-once)"
            )

    def maybe_snapshot(self) -> bool:
        """Write a snapshot once SNAPSHOT_EVERY entries have followed the latest, so that a new
        machine reads one file and at most a few folders of entries."""
        cursor = self.cursor()
        seen = int(self._catalog.get_state(_SNAPSHOT_SEEN) or 0)
        if cursor - seen < SNAPSHOT_EVERY or self._catalog.partial_prefix() is not None:
            return False  # (an index that knows the names under a prefix only has no snapshot to give)
        # one numbered past this machine's last entry is no snapshot (a peer's forgery, refused by
        # pull_metadata), nor is one whose writer died before its end: counting either would
        # stop every machine from taking one again
        taken = sorted((n for n in self.log.snapshots() if n <= cursor), reverse=True)
        latest = next((n for n in taken if self.log.finished(n)), 0)
        if cursor - latest < SNAPSHOT_EVERY:
            self._catalog.set_state(_SNAPSHOT_SEEN, str(latest))
            return False
        if self._catalog.remote_differs(LAKE):  # a name here lost a race: leave it to another machine
            return False
        if self.log.places_records:  # each name's pack location in its row: packs hold the rest
            records: Iterable[tuple[NameRecord, tuple[str, int] | None]] = self._catalog.remote_located(LAKE)
            packs = self._catalog.packs(apart_from=LAKE)
        else:
            records, packs = ((r, None) for r in self._catalog.remote_records(LAKE)), self._catalog.packs()
        self.log.write_snapshot(cursor, records, packs, self._catalog.open_sweeps(), tmp=self._tmp)
        self._catalog.set_state(_SNAPSHOT_SEEN, str(cursor))
        return True

    def last_sync(self) -> datetime | None:
        value = self._catalog.get_state(_LAST_SYNC)
        return datetime.fromisoformat(value) if value else None

    # content

    def fetch(self, record: NameRecord, progress: Progress = SILENT) -> StoredBlob:
        """Download the object of ``record`` into the local store, verified on the way."""
        return self._fetcher.fetch(record, progress)

    def fetch_many(self, records: list[NameRecord], progress: Progress = SILENT) -> int:
        return self._fetcher.fetch_many(records, progress)

    def evict(self, records: Iterable[NameRecord]) -> EvictReport:
        report = EvictReport()
        sizes: dict[str, int | None] = {}  # one size request per pack or loose object
        for batch in batched(records):
            self._evict_batch(batch, sizes, report)
        return report

    def _evict_batch(
        self, records: list[NameRecord], sizes: dict[str, int | None], report: EvictReport
    ) -> None:
        on_remote = {
            n: d for n, (d, _) in self._catalog.remote_bindings(LAKE, (r.name for r in records)).items()
        }
        keep = self._catalog.unpushed_digests(LAKE, {r.digest for r in records})
        for record in records:
            path = self._objects.path(Digest.parse(record.digest))
            if not path.is_file():
                continue
            if on_remote.get(record.name) != record.digest or record.digest in keep:
                report.kept_unpushed.append(record.name)
                continue
            if not self._fetcher.is_on_remote(record, sizes):  # trust, but check the bytes are there
                report.kept_unpushed.append(record.name)
                continue
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            report.files += 1
            report.bytes += size

    def url(self, record: NameRecord, expires_s: int) -> str:
        return self._fetcher.url(record, expires_s)


def _conflict_message(conflicts: list[str], url: str) -> str:
    shown = ", ".join(repr(n) for n in conflicts[:3])
    more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
    return (
        f"{shown}{more} already bound to other content on remote {url}; "
        "lake names are write-once: choose another name"
    )
