"""``lakelet gc``: drop expired pipeline runs, expired stage outputs, and content no name refers to.

Stage outputs: a run of a stage declared with ``ttl=`` carries ``expires_at``
in its run record. Once that has passed, gc retires the run — its run record
first (so the next call of the stage misses and recomputes, under a new
generation of names: ``_expiry``), then its outputs — with tombstones, as
``rm --force`` does, so every machine sharing the remote learns it and the
lineage stays: a tombstone keeps its record, and the run record's bytes (the
lineage) are kept too. Only the outputs' bytes are released. An expired run
stays while a run that stays read its output (by content digest, or as an
upstream stage's key), directly or through other runs kept so: the lineage of
everything live remains walkable. It also stays when it bound names chosen by
the caller (they could never be bound again) or wrote datasets (a rerun would
write them again).

Objects are content-addressed, so "unreferenced" means no name record in this
lake holds the digest: a live record, or a tombstone of ``rm --force``. An add
stores its objects before it binds their names (docs/local-layout.md), so an
unreferenced object may be one another process is about to name: local objects
younger than the grace period are never deleted (by ctime, which storing an
object sets; a file moved in keeps its source's mtime), and so neither are the
bytes of an output that expired within a day of being written, until that day
is over. The sweep holds the bind lock (``_bind``), and a binder checks under
it that its objects are still there: an add that reused an old unreferenced
object, deleted meanwhile, fails rather than bind a name to nothing. The local
grace is judged at ``now``, like expiry.

On the remote, another machine may have uploaded an object or a pack a moment
ago and not yet appended the log entry that names it (objects go first,
docs/remote-layout.md): remote objects and packs younger than the grace period
are never deleted, and a pack goes only when none of its members is
referenced. Nothing holds pushes off while the remote sweep deletes, so it
announces the keys in the log first (``_sweeps``); a push that appends after
that sends those objects again under new keys. The remote grace is judged at
``now`` too, against the stamps the remote put on its keys with its own clock:
left to its default (this machine's clock), that assumes the two clocks agree
to well within the grace; a test on a store whose stamps it cannot set moves
``now`` instead. A ``file://`` remote's ``tmp/`` holds the temp files of its writers
(``_remote``); one older than the grace belongs to a writer that was killed, since a live
one renames or links its temp within moments of its last write, so it goes too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from lakelet.catalog import _bind
from lakelet.core import _faults
from lakelet.core._batch import batched
from lakelet.core._digest import Digest
from lakelet.core.errors import CorruptRecordError, IntegrityError
from lakelet.lake._expiry import EXPIRED, holds_object, is_run_record
from lakelet.lake._run_lookup import ignore, read_run_record
from lakelet.lake._run_record import RunRecord
from lakelet.lake._scoped import PipelineStore
from lakelet.storage._refs import NameRecord, utc_now
from lakelet.storage._scopes import LAKE, scope_id

if TYPE_CHECKING:
    from lakelet.lake._context import LakeContext
    from lakelet.remote._remote import Remote

__all__ = ["GRACE", "GcReport", "collect"]

GRACE = timedelta(hours=24)


@dataclass
class GcReport:
    dry_run: bool
    runs: list[str] = field(default_factory=list)  # archived pipeline runs
    stage_runs: list[str] = field(default_factory=list)  # run records of expired stage runs retired
    stage_outputs: list[str] = field(default_factory=list)  # their output names, tombstoned
    kept: dict[str, str] = field(default_factory=dict)  # expired stage runs that stay -> why
    objects: list[str] = field(default_factory=list)  # local objects deleted
    remote_objects: list[str] = field(default_factory=list)
    remote_temps: list[str] = field(default_factory=list)  # keys under a file:// remote's tmp/
    bytes: int = 0


def collect(
    lake: LakeContext,
    ttl: timedelta,
    dry_run: bool = False,
    remote: bool = False,
    now: datetime | None = None,
) -> GcReport:
    """Collect garbage; with ``dry_run`` only report it. ``now`` is the time expiry and the grace
    periods are judged at (default: the clock). Returns a GcReport; raises RemoteError when a
    needed remote is down."""
    report = GcReport(dry_run)
    now = _as_datetime(now) or datetime.now(UTC)
    scopes = lake.root / "scopes" / "pipeline"
    for run_dir in sorted(scopes.iterdir()) if scopes.is_dir() else []:
        age = now - datetime.fromtimestamp(run_dir.stat().st_mtime, UTC)
        if age > ttl:
            report.runs.append(run_dir.name)
            report.bytes += sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
            if not dry_run:
                lake.scoped(scope_id("pipeline", run_dir.name), PipelineStore).archive()

    retiring = _expire_stage_runs(lake, now, report)
    with _bind.locked(lake.refs):  # no bind between reading the records and deleting
        _bind.catch_up(lake.catalog, lake.refs)  # the index now holds every lake record
        scoped = [r for layout in lake.layouts() if layout.scope != LAKE for r in layout.refs.records()]
        referenced = _Referenced(lake, _referenced(scoped, retiring), retiring)
        _collect_local(lake, referenced, now, report)

    if remote:
        _collect_remote(lake, referenced, now, report)
    return report


class _Referenced:
    """Which digests some record holds: those of the scoped stores (read from their files),
    or a lake record in the index, asked a batch of digests at a time (never every name
    at once)."""

    def __init__(self, lake: LakeContext, scoped: set[str], retiring: set[str]) -> None:
        self._lake, self._scoped, self._retiring = lake, scoped, retiring

    def __call__(self, digests: Iterable[str]) -> set[str]:
        digests = set(digests)
        held = digests & self._scoped
        catalog = self._lake.catalog
        # a live name holds its object (unless this gc retires it): asked without decoding
        # records, as almost every name is live; then the tombstones, record by record
        held |= {d for d, name in catalog.live_holders(LAKE, digests - held) if name not in self._retiring}
        return held | _referenced(catalog.with_digests(LAKE, digests - held), self._retiring)


def _collect_local(lake: LakeContext, referenced: _Referenced, now: datetime, report: GcReport) -> None:
    objects = lake.objects
    assert objects is not None
    for batch in batched(objects.digests()):
        held = referenced(str(d) for d in batch)
        for digest in batch:
            if str(digest) not in held:
                _collect_object(objects.path(digest), digest, now, report)


def _collect_object(path: Path, digest: Digest, now: datetime, report: GcReport) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:  # another gc, or fsck, took it meanwhile
        return
    if now - datetime.fromtimestamp(st.st_ctime, UTC) < GRACE:
        return  # maybe an add's, whose names are on their way
    report.objects.append(str(digest))
    report.bytes += st.st_size
    if not report.dry_run:
        path.unlink(missing_ok=True)


def _referenced(records: Iterable[NameRecord], retiring: set[str]) -> set[str]:
    """Digests some record holds. ``retiring``: output names this gc tombstones (or, in a dry
    run, would), so that a dry run counts the bytes a real one frees."""
    return {r.digest for r in records if holds_object(r) and r.name not in retiring}


# expired stage runs


@dataclass
class _Run:
    record: NameRecord  # of a live run record
    body: RunRecord

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def folder(self) -> str:  # where its implicit outputs are: stages/<stage>/<key>[-g<n>]/
        return self.name.removesuffix(".json") + "/"

    @property
    def expires_at(self) -> str:  # as the record states it: the tombstones keep it
        return str(self.body.lineage["expires_at"])

    def expired(self, now: datetime) -> bool:
        return self.body.expires_at is not None and self.body.expires_at <= now

    def inputs(self) -> list[str]:
        """What this run read, as comparable tokens: content digests and upstream stage keys."""
        out = []
        for identity in self.body.inputs.values():
            if "digest" in identity:
                out.append(identity["digest"])
            if "stage" in identity:
                out.append(f"{identity['stage']}@{identity['key']}")
        return out

    def provides(self) -> list[str]:
        """The tokens under which a later run may have read this run's outputs."""
        digests = [str(o.digest) for o in self.body.outputs]
        return [*digests, f"{self.body.stage}@{self.body.key}"]

    def cannot_expire(self) -> str | None:
        named = [o.name for o in self.body.outputs if not o.name.startswith(self.folder)]
        if named:
            return f"it bound names chosen by the caller, which are never bound again ({', '.join(named)})"
        if self.body.wrote_datasets:
            return "it wrote datasets, which a rerun would write again"
        return None


def _stage_runs(lake: LakeContext) -> tuple[list[_Run], list[NameRecord]]:
    """(the live stage runs, the outputs of runs gc retired that are still live: left by a gc
    that stopped between its two steps). A run record that is refused is reported and left
    alone: gc acts on nothing a record it cannot trust says."""
    runs, leftovers = [], []
    for record in lake.catalog.records(LAKE, "stages/", include_removed=True):
        if not is_run_record(record.name):
            continue
        if record.removed_at is None:
            try:
                runs.append(_Run(record, read_run_record(lake, record)))
            except (CorruptRecordError, IntegrityError) as e:
                ignore(lake, e, "gc leaves it and its outputs")
        elif EXPIRED in record.meta:
            leftovers += [_expired(r, record.meta[EXPIRED]) for r in _left_live(lake, record)]
    return runs, leftovers


def _left_live(lake: LakeContext, retired: NameRecord) -> list[NameRecord]:
    """The outputs of a retired run that are still live. All its outputs are in its folder:
    runs that bound other names never expire."""
    return lake.catalog.records(LAKE, retired.name.removesuffix(".json") + "/")


def _anything_to_retire(lake: LakeContext, now: datetime) -> bool:
    """From the index alone: an expired output (its meta has the run's ``expires_at``), or one
    left live by a gc that stopped between its two steps."""
    for record in lake.catalog.records(LAKE, "stages/", include_removed=True):
        if record.removed_at is None:
            expires = _as_datetime(record.meta.get("expires_at"))  # meta a peer wrote may hold anything
            if expires is not None and expires <= now:
                return True
        elif EXPIRED in record.meta and is_run_record(record.name) and _left_live(lake, record):
            return True
    return False


def _plan(runs: list[_Run], now: datetime, report: GcReport) -> list[_Run]:
    """The live runs to retire now; fills ``report.kept`` with the expired ones that stay."""
    expired = {r.name: r for r in runs if r.expired(now)}
    for run in expired.values():
        if why := run.cannot_expire():
            report.kept[run.name] = why
    used_by: dict[str, str] = {}  # token -> a run that stays and read it
    staying = [r for r in runs if r.name not in expired or r.name in report.kept]
    while staying:  # to a fixpoint: a kept run keeps what it read in turn
        for run in staying:
            for token in run.inputs():
                used_by.setdefault(token, run.name)
        staying = []
        for run in expired.values():
            if run.name in report.kept:
                continue
            user = next((used_by[t] for t in run.provides() if t in used_by), None)
            if user is not None:
                report.kept[run.name] = f"{user} read its output"
                staying.append(run)
    return [r for r in expired.values() if r.name not in report.kept]


def _expire_stage_runs(lake: LakeContext, now: datetime, report: GcReport) -> set[str]:
    """Retire expired stage runs (or list them in a dry run); returns the output names retired."""
    if not _anything_to_retire(lake, now):  # the common case: read no run record, reach no remote
        return set()
    syncer = lake.syncer()
    if syncer is not None:
        # runs bound on other machines may read what expired here: learn them first
        syncer.pull_metadata()
    runs, leftovers = _stage_runs(lake)
    retire = _plan(runs, now, report)
    report.stage_runs = [r.name for r in retire]
    outputs = list(leftovers)
    for run in retire:
        for output in run.body.outputs:
            record = lake.lookup(LAKE, output.name)  # the index, else the remote
            if record is not None and record.removed_at is None:
                outputs.append(_expired(record, run.expires_at))
    report.stage_outputs = [r.name for r in outputs]
    if not report.dry_run:
        # the run records first: a crash in between leaves a miss (the stage recomputes) and
        # outputs that the next gc retires, never a run record whose outputs are gone
        lake.tombstone([_expired(r.record, r.expires_at) for r in retire])
        _faults.reached("gc-runs-retired")
        lake.tombstone(outputs)
    return set(report.stage_outputs)


def _expired(record: NameRecord, expires_at: str) -> NameRecord:
    return replace(record, removed_at=utc_now(), meta={**record.meta, EXPIRED: expires_at})


# the remote


def _collect_remote(lake: LakeContext, referenced: _Referenced, now: datetime, report: GcReport) -> None:
    syncer = lake.require_remote("gc --remote")
    remote = syncer.remote
    syncer.pull_metadata()  # the log names every record: the index now knows them all
    unreferenced = _Unreferenced(lake, referenced)
    keys = [*remote.find("objects/"), *(k for k in remote.find("packs/") if k.endswith(".pack"))]
    # younger keys may be another machine's uploads whose names are on their way
    old = _older_than_grace(remote, unreferenced(keys), now)
    _collect_remote_temps(remote, now, report)
    if report.dry_run or not old:
        report.remote_objects += [_digest_of(k) for k in old]
        report.bytes += sum(old.values())
        return
    # No lock holds pushes off while we delete, and a push that finds a key, or sends the
    # same bytes again, relies on that very key. So the log orders us: the sweep entry
    # names the keys only if no entry before it references them (a push bound before it is
    # seen, and its keys are spared), and a push appending after it sees the sweep and sends
    # those objects again under new keys. Only then do the deletions start.
    sweep = syncer.announce_sweep(list(old), unreferenced)
    if sweep is None:
        return
    for key in sweep.keys:
        remote.remove(key)
        report.remote_objects.append(_digest_of(key))
        report.bytes += old[key]
    # Not in a `finally`: after a failed deletion a request may still be on its way, so the
    # sweep stays not done, and pushes keep sending those objects again (costly, not wrong).
    syncer.end_sweep(sweep)  # pushes from now on need not avoid these keys


def _older_than_grace(remote: Remote, keys: Iterable[str], now: datetime) -> dict[str, int]:
    """key -> size of each of ``keys`` the store stamped more than the grace before ``now``."""
    old = {}
    for key in keys:
        with remote.errors(f"inspecting {key}"):
            try:
                info = remote.fs.info(remote.path(key))
            except FileNotFoundError:  # another gc took it meanwhile, or its writer renamed it
                continue
        modified = (
            info.get("LastModified") or info.get("last_modified") or info.get("mtime") or info.get("updated")
        )
        when = _as_datetime(modified)
        if when is not None and now - when >= GRACE:
            old[key] = int(info.get("size", 0))
    return old


def _collect_remote_temps(remote: Remote, now: datetime, report: GcReport) -> None:
    """Delete the temps killed writers left in a ``file://`` remote's ``tmp/``. No key refers
    to a temp, so unlike objects they need no sweep entry: the grace alone spares live writers."""
    if not remote.is_local:  # object stores publish an upload whole: they have no tmp/
        return
    old = _older_than_grace(remote, remote.find("tmp/"), now)
    for key in old:
        if not report.dry_run:
            remote.remove(key)
        report.remote_temps.append(key)
        report.bytes += old[key]


class _Unreferenced:
    """Which remote keys hold nothing a record references, as far as the index knows: a
    record bound here, or one of the log's entries applied so far (asked when called)."""

    def __init__(self, lake: LakeContext, referenced: _Referenced) -> None:
        self._catalog, self._referenced = lake.catalog, referenced

    def __call__(self, keys: list[str]) -> list[str]:
        out = []
        for batch in batched(keys):
            members = self._catalog.pack_members(_digest_of(k) for k in batch if k.startswith("packs/"))
            holds = {k: self._holds(k, members) for k in batch}
            held = self._referenced(d for ds in holds.values() for d in ds)
            out += [k for k in batch if not any(d in held for d in holds[k])]
        return out

    @staticmethod
    def _holds(key: str, members: dict[str, list[str]]) -> list[str]:
        # A pack goes only when none of its members is referenced: packs are never rewritten,
        # so a partly referenced one stays whole (docs/remote-layout.md). One that no pack
        # line lists (left by an interrupted push) holds nothing anyone can reach.
        return members.get(_digest_of(key), []) if key.startswith("packs/") else [_digest_of(key)]


def _digest_of(key: str) -> str:
    """The digest a remote key is named by: ``objects/<algo>/<hh>/<rest>`` or ``packs/….pack``."""
    _, algorithm, prefix, rest = key.removesuffix(".pack").split("/", 3)
    return str(Digest(algorithm, prefix + rest))


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
