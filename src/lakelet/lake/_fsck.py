"""``lakelet fsck``: verify every stored byte, quarantine what rotted, rebuild the index, and
remove what killed processes left in ``tmp/``.

Dataset manifests belong to a layer above this one: ``Lake.fsck`` has them checked
(``datasets._manifest.quarantine_invalid``, with ``quarantine`` below) and adds what it
found to this report.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lakelet.catalog import _bind
from lakelet.core._digest import Digest
from lakelet.core._progress import SILENT, Progress
from lakelet.storage._objects import hash_stream
from lakelet.storage._scopes import LAKE

if TYPE_CHECKING:
    from lakelet.lake._context import LakeContext

__all__ = ["FsckReport", "check", "quarantine"]


@dataclass(frozen=True)
class FsckReport:
    """What ``Lake.fsck`` checked and found."""

    objects_checked: int
    names_indexed: int
    corrupt: list[str]  # blobs whose bytes no longer match their digest (moved to quarantine/)
    missing: list[str]  # 'scope:name' whose object is neither local nor on the remote
    # local dataset manifests that do not parse (moved to quarantine/): their keys
    manifests_quarantined: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.missing and not self.manifests_quarantined


def check(lake: LakeContext, progress: Progress = SILENT) -> FsckReport:
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
    return FsckReport(checked, count, corrupt, missing)


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
