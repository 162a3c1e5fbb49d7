"""``lakelet gc``: drop expired pipeline runs and content that no name refers to.

Objects are content-addressed, so "unreferenced" means no name record (live
or removed) in this lake points at the digest. On the remote, another machine
may have uploaded an object or a pack a moment ago and not yet appended the log
entry that names it (objects go first, docs/remote-layout.md): remote objects
and packs younger than the grace period are never deleted, and a pack goes only
when none of its members is referenced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from . import _packs
from ._digest import Digest
from ._scopes import LAKE

if TYPE_CHECKING:
    from ._lake import Lake

GRACE = timedelta(hours=24)


@dataclass
class GcReport:
    dry_run: bool
    runs: list[str] = field(default_factory=list)  # archived pipeline runs
    objects: list[str] = field(default_factory=list)  # local objects deleted
    remote_objects: list[str] = field(default_factory=list)
    bytes: int = 0


def collect(lake: Lake, ttl: timedelta, dry_run: bool = False, remote: bool = False) -> GcReport:
    report = GcReport(dry_run)
    now = datetime.now(UTC)
    scopes = lake.root / "scopes" / "pipeline"
    for run_dir in sorted(scopes.iterdir()) if scopes.is_dir() else []:
        age = now - datetime.fromtimestamp(run_dir.stat().st_mtime, UTC)
        if age > ttl:
            report.runs.append(run_dir.name)
            report.bytes += sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
            if not dry_run:
                lake.pipeline(run_dir.name).archive()

    referenced = {r.digest for layout in lake._layouts() for r in layout.refs.records()}
    referenced |= {r.digest for r in lake._catalog.records(LAKE, "", include_removed=True)}
    objects = lake._lake.objects
    assert objects is not None
    for digest in list(objects.digests()):
        if str(digest) in referenced:
            continue
        path = objects.path(digest)
        report.objects.append(str(digest))
        report.bytes += path.stat().st_size
        if not dry_run:
            path.unlink(missing_ok=True)

    if remote:
        _collect_remote(lake, referenced, now, report)
    return report


def _collect_remote(lake: Lake, referenced: set[str], now: datetime, report: GcReport) -> None:
    syncer = lake._require_remote("gc --remote")
    remote = syncer.remote
    syncer.pull_metadata()  # the log names every record: the index now knows them all
    referenced = referenced | {r.digest for r in lake._catalog.records(LAKE, "", include_removed=True)}
    # A pack goes only when none of its members is referenced: packs are never rewritten,
    # so a partly referenced one stays whole (docs/remote-layout.md).
    members = {_packs.key_of(p.digest): [m.digest for m in p.members] for p in lake._catalog.packs()}
    for key in [*remote.find("objects/"), *remote.find("packs/")]:
        if key.startswith("packs/"):
            if not key.endswith(".pack") or any(d in referenced for d in members.get(key, [])):
                continue
            _, algorithm, prefix, rest = key.removesuffix(".pack").split("/", 3)
        else:
            _, algorithm, prefix, rest = key.split("/", 3)
            if str(Digest(algorithm, prefix + rest)) in referenced:
                continue
        with remote.errors(f"inspecting {key}"):
            info = remote.fs.info(remote._path(key))
        modified = info.get("LastModified") or info.get("last_modified") or info.get("mtime") or info.get(
            "updated")
        when = _as_datetime(modified)
        if when is None or now - when < GRACE:
            continue  # maybe another machine's upload whose names are on their way
        report.remote_objects.append(str(Digest(algorithm, prefix + rest)))
        report.bytes += int(info.get("size", 0))
        if not report.dry_run:
            remote.remove(key)


def _as_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None
