"""``lakelet fsck``: verify every stored byte, quarantine what rotted, rebuild the index, and
remove what killed processes left in ``tmp/``.

Dataset manifests belong to a layer above this one: ``Lake.fsck`` has them checked
(``datasets._delta_log.quarantine_invalid``, with ``quarantine`` below) and adds what it
found to this report.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lakelet.catalog import _bind
from lakelet.core._digest import Digest
from lakelet.core._progress import SILENT, Progress
from lakelet.remote._fetch import Fetcher
from lakelet.remote._remote import Remote
from lakelet.storage._objects import hash_stream
from lakelet.storage._scopes import LAKE

if TYPE_CHECKING:
    from lakelet.lake._context import LakeContext

__all__ = ["FsckReport", "check", "check_remote", "quarantine"]


@dataclass(frozen=True)
class FsckReport:
    """What ``Lake.fsck`` checked and found."""

    objects_checked: int
    names_indexed: int
    corrupt: list[str]  # blobs whose bytes no longer match their digest (moved to quarantine/)
    missing: list[str]  # 'scope:name' whose object is neither local nor on the remote
    # local dataset manifests that do not parse (moved to quarantine/): their keys
    manifests_quarantined: list[str] = field(default_factory=list)
    # name records that are not valid (a segment line cut short, garbage, a bad per-name file),
    # taken out and kept under quarantine/: one line each, saying where and what is wrong
    records_quarantined: list[str] = field(default_factory=list)
    # where an index SQLite could not read was moved (under quarantine/) before the rebuild
    index_set_aside: str | None = None
    # with remote=True: the objects the remote's names need, each read back and hashed…
    remote_checked: int = 0
    # …those it lacks or holds damaged ('blake3:…' -> 'missing' or 'corrupt (…)')…
    remote_damaged: dict[str, str] = field(default_factory=dict)
    # …and of those, the ones re-sent from a good local copy (with repair=True)
    remote_repaired: list[str] = field(default_factory=list)
    datasets_upgraded: list[str] = field(default_factory=list)  # converted to Delta tables (--upgrade)

    @property
    def ok(self) -> bool:
        return not (
            self.corrupt
            or self.missing
            or self.manifests_quarantined
            or self.records_quarantined
            or self.index_set_aside
            or self.remote_damaged
        )


def check(lake: LakeContext, progress: Progress = SILENT) -> FsckReport:
    set_aside = lake.catalog.set_aside_if_unreadable(lake.root / "quarantine")
    with _bind.locked(lake.refs):  # no binder appends a segment while one is rewritten
        bad_records = [p for x in lake.layouts() for p in x.refs.set_aside_invalid(_keeper(lake.root))]
    # Streamed: the objects are walked, and the records read, a batch at a time; nothing
    # holds every name (a lake may have millions).
    layouts = lake.layouts()
    scoped_blobs = [lake.blob_path(r) for x in layouts if x.scope != LAKE for r in x.refs.records()]
    progress.add_total(sum(_size(p) for p in _stored(lake, scoped_blobs)))
    corrupt: list[str] = []
    checked = 0
    for path in _stored(lake, scoped_blobs):
        if not path.exists():
            continue
        checked += 1
        digest = _digest_from_path(path)
        with open(path, "rb") as f:
            actual, _ = hash_stream(f, digest.algorithm, progress)
        if actual != digest:
            corrupt.append(str(digest))
            quarantine(lake.root, path)
    records, last_segment = _bind.all_records(lake.refs, [x.refs for x in layouts])
    count = lake.catalog.rebuild(records, segments_applied=last_segment)
    syncer = lake.syncer() if set_aside is not None else None
    if syncer is not None:  # what the remote holds was in the index set aside: read its log again
        syncer.pull_metadata()
    # a live name is missing when neither its object is here nor the remote binds it to it
    missing = [
        f"{r.scope}:{r.name}"
        for scope in lake.catalog.scopes()
        for batch in lake.catalog.unpushed_batches(scope)
        for r in batch
        if not lake.blob_path(r).exists()
    ]
    _clean_stale_temp_files(lake.root / "tmp")
    _clean_stale_work_folders(lake.root / "tmp")
    return FsckReport(
        checked,
        count,
        corrupt,
        missing,
        records_quarantined=bad_records,
        index_set_aside=None if set_aside is None else str(set_aside),
    )


def check_remote(lake: LakeContext, repair: bool, progress: Progress = SILENT) -> FsckReport:
    """Read back every object the remote's live lake names need and hash it; with ``repair``,
    send this machine's copy over each one the remote lacks or holds damaged, if that copy
    hashes right. Returns only the remote_ fields of a report."""
    syncer = lake.require_remote("fsck --remote")
    syncer.pull_metadata()
    bound = lake.catalog.remote_digests(LAKE)
    records = lake.catalog.get_many(LAKE, bound)
    sizes = {r.digest: r.size for r in records.values() if r.removed_at is None and bound[r.name] == r.digest}
    damaged = Fetcher(syncer.remote, lake.catalog, lake.objects, lake.tmp).check(sizes, progress)
    repaired = [d for d in sorted(damaged) if repair and _resend(lake, syncer.remote, Digest.parse(d))]
    return FsckReport(
        0, 0, [], [], remote_checked=len(sizes), remote_damaged=damaged, remote_repaired=repaired
    )


def _resend(lake: LakeContext, remote: Remote, digest: Digest) -> bool:
    """Upload the local copy of ``digest`` to its loose key, where a fetch finds it (a damaged
    pack member included), if that copy is intact; whether it was sent."""
    path = lake.objects.path(digest)
    try:
        with open(path, "rb") as f:
            if hash_stream(f, digest.algorithm)[0] != digest:
                return False  # damaged here too: the next local fsck quarantines it
    except FileNotFoundError:
        return False
    remote.upload(path, remote.object_key(digest))
    return True


def _stored(lake: LakeContext, scoped_blobs: list[Path]) -> Iterator[Path]:
    """The lake's objects, then the blobs of its scoped names (walked, never all held)."""
    objects = lake.objects
    if objects is not None:
        yield from (objects.path(d) for d in objects.digests())
    yield from sorted(set(scoped_blobs))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _digest_from_path(path: Path) -> Digest:
    # objects/<algo>/<hh>/<rest>  or  blobs/<hh>/<key>/<algo>-<hex>
    if "-" in path.name and path.parent.parent.parent.name == "blobs":
        algorithm, _, hexdigest = path.name.partition("-")
        return Digest(algorithm, hexdigest)
    return Digest(path.parent.parent.name, path.parent.name + path.name)


def quarantine(root: Path, path: Path) -> None:
    """Move ``path`` (under ``root``) to the same place under ``quarantine/``, never to be served."""
    target = root / "quarantine" / path.relative_to(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)


def _keeper(root: Path) -> Callable[[Path], None]:
    def keep(path: Path) -> None:
        """A copy of ``path`` under ``quarantine/`` (a second link: the caller replaces it)."""
        target = root / "quarantine" / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        while True:
            try:
                os.link(path, target.with_name(f"{target.name}.{n}") if n else target)
                return
            except FileExistsError:  # one kept by an earlier fsck
                n += 1

    return keep


def _clean_stale_temp_files(tmp_dir: Path) -> None:
    for tmp in tmp_dir.glob("*.tmp"):
        pid = tmp.name.split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
    for trash in tmp_dir.glob("trash-*"):
        shutil.rmtree(trash, ignore_errors=True)


def _clean_stale_work_folders(tmp_dir: Path) -> None:
    """Folders named ``<pid>-…`` (a dataset write's staging folder, an ingest's work folder)
    whose process is gone: it was killed before it could remove them."""
    if not tmp_dir.is_dir():
        return
    with os.scandir(tmp_dir) as entries:
        stale = [
            e.path
            for e in entries
            if e.is_dir(follow_symlinks=False)
            and (pid := e.name.split("-", 1)[0]).isascii()
            and pid.isdigit()
            and not _pid_alive(int(pid))
        ]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
