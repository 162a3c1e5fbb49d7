"""A lake: one local root holding objects, name records, scoped stores and the index."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from . import _config, _faults
from ._catalog import Catalog
from ._digest import DEFAULT_ALGORITHM, Digest
from ._errors import ConfigError, InvalidNameError, NameExistsError, NotFoundError, SourceError
from ._file import File
from ._names import validate_name, validate_prefix
from ._objects import (
    StoredBlob,
    VerifiedReader,
    adopt_file,
    hash_stream,
    is_cross_device,
    sync_filesystem,
    write_blob,
)
from ._progress import SILENT, Progress
from ._refs import NameRecord, check_same_content, utc_now
from ._remote import Remote
from ._scoped import PipelineStore, ScopedStore
from ._scoped_remote import RemoteScope
from ._scopes import LAKE, ScopeLayout, parse_scope, scope_id
from ._sources import Source, redact, resolve
from ._sync import EvictReport, PushReport, Syncer, SyncReport


@dataclass(frozen=True)
class FsckReport:
    """What ``Lake.fsck`` checked and found."""

    objects_checked: int
    names_indexed: int
    corrupt: list[str]  # blobs whose bytes no longer match their digest (moved to quarantine/)
    missing: list[str]  # 'scope:name' whose object is not stored locally

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.missing


class Lake:
    """An opened lake. Create one with ``lakelet.init`` and open it with ``lakelet.open``."""

    def __init__(self, config: _config.LakeConfig) -> None:
        self.config = config
        self.root = config.root
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(exist_ok=True)
        self._catalog = Catalog(self.root / "index.sqlite")
        self._reader = VerifiedReader(self.root, self._catalog)
        self._lake = ScopeLayout.of(self.root, LAKE, self._tmp)
        if self._catalog.fresh:  # a new, lost or older-format index: rebuild it from the records
            self._catalog.rebuild(r for layout in self._layouts() for r in layout.refs.records())
        self._remote = (
            Remote(config.remote, config.storage_options, config.transfers) if config.remote else None
        )
        self._syncer_checked: Syncer | None = None

    @property
    def remote(self) -> str | None:
        """The remote's URL, or None for an embedded lake."""
        return self._remote.url if self._remote else None

    def _syncer(self) -> Syncer | None:
        """The link to the remote, once its format is checked (not before it is needed:
        an offline machine keeps reading what it has)."""
        if self._remote is None:
            return None
        if self._syncer_checked is None:
            self._remote.check_format(create=False)
            assert self._lake.objects is not None
            self._syncer_checked = Syncer(self._remote, self._catalog, self._lake.objects, self._tmp)
        return self._syncer_checked

    def __repr__(self) -> str:
        return f"<Lake {self.root}>"

    def close(self) -> None:
        self._catalog.close()

    # lake-scope files

    def file(self, name: str, scope: str = LAKE) -> File:
        """A handle on a name; nothing is read until it is used.

        ``scope`` is 'lake' (the default), 'user' or 'pipeline/<run>'. Lake
        handles are lazy; a scoped name is looked up now, since it may be
        overwritten later and the handle should keep what it saw.
        """
        name = validate_name(name)
        scope = self._resolve_scope(scope)
        if scope == LAKE:
            return File(name, lake=self)
        if self._remote is not None:
            return File(name, lake=self, record=self._scoped(scope)._record(name))
        return File(name, lake=self, record=self._record(scope, name))

    def exists(self, name: str) -> bool:
        record = self._lookup(LAKE, validate_name(name))
        return record is not None and record.removed_at is None

    def ls(self, prefix: str = "", scope: str = LAKE) -> list[File]:
        """Files whose names start with ``prefix`` in ``scope`` ('lake', 'user', 'pipeline/<run>')."""
        scope = self._resolve_scope(scope)
        validate_prefix(prefix)
        if scope != LAKE and self._remote is not None:  # the remote holds every machine's puts
            store = self._scoped(scope)
            records = [store._record(n) for n in store.list(prefix)]
        else:
            records = self._catalog.records(scope, prefix)
        return [File(r.name, lake=self, record=r) for r in records]

    def add(
        self,
        src: str | os.PathLike[str],
        name: str,
        *,
        move: bool = False,
        progress: Progress = SILENT,
    ) -> File | list[File]:
        """Store ``src`` (a path, directory, http(s) URL or fsspec URL) under ``name``.

        A directory's files become ``name/<relative path>`` and a list is returned.
        Adding the same content under the same name again is a no-op.
        Raises NameExistsError, InvalidNameError, NotFoundError, SourceError.
        """
        validate_name(name)
        sources = resolve(src)
        if not sources:
            raise SourceError(f"{os.fspath(src)} holds no files to add")
        single = len(sources) == 1 and sources[0].relative == ""
        names = [name] if single else [f"{name}/{s.relative}" for s in sources]
        for n in names:
            validate_name(n)
        if len(set(names)) != len(names):
            raise InvalidNameError(f"{os.fspath(src)} maps two files to one name")
        meta = {"source": redact(os.fspath(src))}
        records = self._ingest(list(zip(names, sources, strict=True)), meta, move, progress)
        files = [File(r.name, lake=self, record=r) for r in records]
        return files[0] if single else files

    def _ingest(
        self,
        items: list[tuple[str, Source]],
        meta: dict[str, str],
        move: bool,
        progress: Progress,
    ) -> list[NameRecord]:
        progress.add_total(sum(s.size or 0 for _, s in items))
        # Names already bound are compared by hash only, before anything is written,
        # so a conflict anywhere in a directory changes nothing and an unchanged
        # re-add costs no copy.
        existing: dict[str, NameRecord] = {}
        for n, source in items:
            record = self._lookup(LAKE, n, ask_remote=False)  # the remote arbitrates below
            if record is None:
                continue
            if record.removed_at is None:
                with source.open() as reader:
                    digest, _ = hash_stream(reader, _algorithm_of(record), progress)
                record_check = NameRecord(LAKE, n, str(digest), 0, "", "")
            else:
                record_check = record
            check_same_content(record, record_check)
            existing[n] = record

        durable = len(items) - len(existing) <= 1
        creator = _config.current_user()
        stored: list[tuple[str, Source, StoredBlob]] = []
        for n, source in items:
            if n not in existing:
                stored.append((n, source, self._store_lake_object(source, move, durable, progress)))
        if not durable:
            sync_filesystem(self.root)
        _faults.reached("objects-stored")

        now = utc_now()
        wanted = [
            NameRecord(LAKE, n, str(blob.digest), blob.size, now, creator, meta) for n, _, blob in stored
        ]
        syncer = self._syncer() if self.config.upload == "write-through" else None
        if syncer is not None and wanted:
            try:
                wanted = syncer.publish(wanted, progress)  # the remote decides who owns a name
            except BaseException:
                self._return_moved(stored, move)
                raise
        created: list[NameRecord] = []
        try:
            for record in wanted:
                bound, is_new = self._lake.refs.bind_once(record, durable=durable)
                if is_new:
                    created.append(bound)
                else:
                    existing[n] = bound
        except BaseException:
            for record in created:
                self._lake.refs.unbind_created(record.name)
            self._return_moved(stored, move)
            raise
        if not durable:
            sync_filesystem(self.root)
        _faults.reached("names-bound")

        self._catalog.upsert([*created, *existing.values()])
        self._catalog.record_verified_many(
            (blob.path.relative_to(self.root).as_posix(), blob.fingerprint)
            for _, _, blob in stored
        )
        if move:
            self._remove_moved_sources([s for _, s in items])
        by_name = {r.name: r for r in [*created, *existing.values()]}
        return [by_name[n] for n, _ in items]

    def _store_lake_object(
        self, source: Source, move: bool, durable: bool, progress: Progress
    ) -> StoredBlob:
        objects = self._lake.objects
        assert objects is not None
        if move and source.local_path is not None:
            with source.open() as reader:
                digest, size = hash_stream(reader, DEFAULT_ALGORITHM, progress)
            try:
                return adopt_file(source.local_path, digest, size, objects.path, durable=durable)
            except OSError as e:
                if not is_cross_device(e):
                    raise
        with source.open() as reader:
            return write_blob(
                reader, self._tmp, objects.path, durable=durable, progress=progress
            )

    def _return_moved(self, stored: list[tuple[str, Source, StoredBlob]], move: bool) -> None:
        """After a failed move-add, put files that were renamed into the store back."""
        if not move:
            return
        for _, source, blob in stored:
            if blob.created and source.local_path is not None and not source.local_path.exists():
                with contextlib.suppress(OSError):
                    os.replace(blob.path, source.local_path)
                    os.chmod(source.local_path, 0o644)

    def _remove_moved_sources(self, sources: list[Source]) -> None:
        for source in sources:
            if source.local_path is not None:
                source.local_path.unlink(missing_ok=True)
        for source in sources:  # then the directories they leave empty
            if source.local_path is None or not source.relative:
                continue
            parent = source.local_path.parent
            for _ in source.relative.split("/"):
                with contextlib.suppress(OSError):
                    parent.rmdir()
                parent = parent.parent

    def rm(self, name: str, *, force: bool = False, scope: str = LAKE, recursive: bool = False) -> None:
        """Remove a name.

        A lake name is write-once, so removing it needs ``force=True``; its
        record stays as a tombstone so lineage survives. In a scoped store this
        is ``delete(name, recursive)``.
        """
        validate_name(name)
        scope = self._resolve_scope(scope)
        if scope != LAKE:
            self._scoped(scope).delete(name, recursive=recursive)
            return
        if not force:
            raise NameExistsError(
                f"{name!r} is a write-once lake name: removing it needs force=True "
                "(`--force`); its lineage is kept"
            )
        record = self._lookup(LAKE, name)
        if record is None or record.removed_at is not None:
            raise NotFoundError(f"no lake name {name!r}")
        tomb = record.removed(utc_now())
        syncer = self._syncer()
        if syncer is not None:
            syncer.tombstone(tomb)
        self._lake.refs.tombstone(tomb)
        self._catalog.upsert([tomb])

    # the remote

    def push(self, progress: Progress = SILENT) -> PushReport:
        """Send names bound here but not yet on the remote (``upload = "deferred"``, or after
        an interrupted push). Names another machine bound to other content meanwhile are
        listed in ``conflicts`` and stay local-only."""
        syncer = self._require_remote("push")
        return syncer.push(self._catalog.not_on_remote(LAKE), progress)

    def sync(self, progress: Progress = SILENT) -> SyncReport:
        """Push what is pending, then learn every name bound elsewhere since the last sync.
        Downloads no content: files are fetched when first opened (or by ``pull``)."""
        syncer = self._require_remote("sync")
        pushed = syncer.push(self._catalog.not_on_remote(LAKE), progress)
        names, segments = syncer.pull_metadata()
        syncer.maybe_snapshot(lambda: self._catalog.records(LAKE, "", include_removed=True))
        return SyncReport(pushed, names, segments)

    def pull(
        self, names: Iterable[str] | None = None, *, prefix: str = "", progress: Progress = SILENT
    ) -> list[File]:
        """Sync, then download the content of ``names`` (default: every name under ``prefix``)
        that is not held locally."""
        validate_prefix(prefix)
        syncer = self._require_remote("pull")
        syncer.pull_metadata()
        if names is None:
            records = self._catalog.records(LAKE, prefix)
        else:
            wanted = [names] if isinstance(names, str) else list(names)
            records = [self._record(LAKE, validate_name(n)) for n in wanted]
        syncer.fetch_many(records, progress)
        return [File(r.name, lake=self, record=r) for r in records]

    def evict(self, prefix: str = "") -> EvictReport:
        """Drop local copies under ``prefix`` that are safely on the remote (never unpushed ones)."""
        validate_prefix(prefix)
        syncer = self._require_remote("evict")
        return syncer.evict(self._catalog.records(LAKE, prefix))

    def url(self, name: str, expires: int = 3600) -> str:
        """A URL another tool can read ``name`` from: presigned on cloud stores, a file:// URL
        of the local copy for an embedded lake."""
        record = self._record(LAKE, validate_name(name))
        syncer = self._syncer()
        if syncer is None:
            return File(name, lake=self, record=record).path.as_uri()
        if self._catalog.remote_digests(LAKE, name).get(name) != record.digest:
            raise NotFoundError(f"{name!r} is not on remote {syncer.remote.url} yet: run `lakelet push`")
        return syncer.remote.object_url(Digest.parse(record.digest), expires)

    def state(self, record: NameRecord) -> str:
        """'local', 'remote' (only there: fetched on first open) or 'unpushed'."""
        if self._remote is not None and record.scope == LAKE:
            on_remote = self._catalog.remote_digests(LAKE, record.name).get(record.name) == record.digest
            if not on_remote:
                return "unpushed"
        return "local" if self._blob_path(record).is_file() else "remote"

    def status(self) -> dict[str, object]:
        """Counts a listing warns about: unpushed names and when the last sync was."""
        syncer = self._syncer_checked or (
            Syncer(self._remote, self._catalog, self._lake.objects, self._tmp)  # type: ignore[arg-type]
            if self._remote else None
        )
        return {
            "remote": self.remote,
            "unpushed": len(self._catalog.not_on_remote(LAKE)) if self._remote else 0,
            "last_sync": syncer.last_sync() if syncer else None,
        }

    def _require_remote(self, doing: str) -> Syncer:
        syncer = self._syncer()
        if syncer is None:
            raise ConfigError(
                f"cannot {doing}: this lake has no remote (set `remote = \"s3://…\"` under [lake] in "
                f"{self.root / _config.CONFIG_FILE})"
            )
        return syncer

    # scoped stores

    @property
    def user(self) -> ScopedStore:
        """The current user's persistent scratch space."""
        return self._scoped(scope_id("user", _config.current_user()))

    def pipeline(self, run_id: str) -> PipelineStore:
        """The temporary store of one pipeline run."""
        return self._scoped(scope_id("pipeline", run_id), PipelineStore)  # type: ignore[return-value]

    def _scoped(self, scope: str, kind: type[ScopedStore] = ScopedStore) -> ScopedStore:
        syncer = self._syncer()
        remote = RemoteScope(syncer.remote, scope) if syncer is not None else None
        layout = ScopeLayout.of(self.root, scope, self._tmp)
        return kind(layout, self._tmp, self._catalog, self._reader, remote)

    def _resolve_scope(self, scope: str) -> str:
        if scope == "user":
            return scope_id("user", _config.current_user())
        return parse_scope(scope)

    # reading

    def _lookup(self, scope: str, name: str, ask_remote: bool = True) -> NameRecord | None:
        """The record of ``name``: from the index, else from the local records (repairing
        the index), else, for a lake name, from the remote."""
        record = self._catalog.get(scope, name)
        if record is not None:
            return record
        record = ScopeLayout.of(self.root, scope, self._tmp).refs.read(name)
        if record is not None:
            self._catalog.upsert([record])
            return record
        syncer = self._syncer() if ask_remote and scope == LAKE else None
        return syncer.lookup(name) if syncer is not None else None

    def _record(self, scope: str, name: str) -> NameRecord:
        record = self._lookup(scope, name)
        if record is None:
            raise NotFoundError(f"no name {name!r} in this lake" + _scope_suffix(scope))
        if record.removed_at is not None:
            raise NotFoundError(f"{name!r} was removed on {record.removed_at}")
        return record

    def _blob_path(self, record: NameRecord) -> Path:
        layout = ScopeLayout.of(self.root, record.scope, self._tmp)
        return layout.blob_path(record.name, Digest.parse(record.digest))

    def _open_record(self, record: NameRecord) -> BinaryIO:
        path = self._blob_path(record)
        digest = Digest.parse(record.digest)
        try:
            return self._reader.open(path, digest, record.size)
        except FileNotFoundError:
            syncer = self._syncer()
            if syncer is not None and record.scope != LAKE:
                reader, _ = self._scoped(record.scope)._open(record.name)
                return reader
            if syncer is not None:
                blob = syncer.fetch(record)  # lazy fetch, verified before it is cached
                self._reader.remember(blob)
                return self._reader.open(path, digest, record.size)
            raise NotFoundError(
                f"the content of {record.name!r} ({record.digest}) is not stored locally"
            ) from None

    # maintenance

    def fsck(self, progress: Progress = SILENT) -> FsckReport:
        """Verify every stored blob, quarantine corrupt ones, rebuild the index from records."""
        records = [r for layout in self._layouts() for r in layout.refs.records()]
        live = [r for r in records if r.removed_at is None]
        paths = {self._blob_path(r): r for r in live}
        if self._lake.objects is not None:
            paths.update({self._lake.objects.path(d): None for d in self._lake.objects.digests()})
        progress.add_total(sum(p.stat().st_size for p in paths if p.exists()))
        corrupt: list[str] = []
        checked = 0
        for path in sorted(paths):
            if not path.exists():
                continue
            checked += 1
            digest = _digest_from_path(path)
            with open(path, "rb") as f:
                actual, _ = hash_stream(f, digest.algorithm, progress)
            if actual != digest:
                corrupt.append(str(digest))
                self._quarantine(path)
        count = self._catalog.rebuild(records)
        on_remote = self._catalog.remote_digests(LAKE)
        missing = [
            f"{r.scope}:{r.name}" for r in live
            if not self._blob_path(r).exists() and on_remote.get(r.name) != r.digest
        ]
        self._clean_stale_temp_files()
        return FsckReport(checked, count, corrupt, missing)

    def _layouts(self) -> list[ScopeLayout]:
        """The lake scope and every scoped store that has a directory."""
        scopes_dir = self.root / "scopes"
        if not scopes_dir.is_dir():
            return [self._lake]
        return [self._lake, *[
            ScopeLayout.of(self.root, f"{kind.name}/{ident.name}", self._tmp)
            for kind in sorted(scopes_dir.iterdir())
            for ident in sorted(kind.iterdir())
        ]]

    def _quarantine(self, path: Path) -> None:
        target = self.root / "quarantine" / path.relative_to(self.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)

    def _clean_stale_temp_files(self) -> None:
        for tmp in self._tmp.glob("*.tmp"):
            pid = tmp.name.split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)
        for trash in self._tmp.glob("trash-*"):
            shutil.rmtree(trash, ignore_errors=True)


def _digest_from_path(path: Path) -> Digest:
    # objects/<algo>/<hh>/<rest>  or  blobs/<hh>/<key>/<algo>-<hex>
    if "-" in path.name and path.parent.parent.parent.name == "blobs":
        algorithm, _, hexdigest = path.name.partition("-")
        return Digest(algorithm, hexdigest)
    return Digest(path.parent.parent.name, path.parent.name + path.name)


def _algorithm_of(record: NameRecord) -> str:
    return Digest.parse(record.digest).algorithm


def _scope_suffix(scope: str) -> str:
    return "" if scope == LAKE else f" (scope {scope})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def init(
    path: str | os.PathLike[str] | None = None,
    remote: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Lake:
    """Create a lake at ``path`` ($LAKELET_HOME, else ./.lakelet) and return it opened.

    ``remote`` is any fsspec URL; ``storage_options`` go to its filesystem
    (endpoint, profile…; credentials are better left to the store's own chain).
    Idempotent: an existing lake is opened as it is.
    """
    root = _config.new_root(path)
    if remote:
        # Reach the remote before writing anything: a typo or bad credentials change nothing.
        config_file = root / _config.CONFIG_FILE
        options = _config.load(root).storage_options if config_file.is_file() else storage_options
        Remote(remote, options).check_format(create=True)
    _config.write_new(root, remote, storage_options)
    return Lake(_config.load(root))


def open_lake(path: str | os.PathLike[str] | None = None, remote: str | None = None) -> Lake:
    """Open the lake at ``path``, $LAKELET_HOME, the nearest lakelet.toml upwards, or ./.lakelet."""
    config = _config.load(_config.find_root(path))
    if remote is not None and remote != config.remote:
        config = dataclasses.replace(config, remote=remote)
    return Lake(config)
