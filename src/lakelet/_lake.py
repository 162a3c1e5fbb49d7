"""A lake: one local root holding objects, name records, scoped stores and the index."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from . import _bind, _config, _fsck, _ingest, _lineage
from ._catalog import Catalog
from ._digest import Digest
from ._errors import InvalidNameError, NameExistsError, NotFoundError, SourceError
from ._expiry import is_run_record
from ._file import File
from ._fsck import FsckReport
from ._names import validate_name, validate_path_name, validate_prefix
from ._objects import (
    VerifiedReader,
)
from ._progress import SILENT, Progress
from ._refs import NameRecord, utc_now
from ._remote import Remote
from ._remote_link import RemoteLink
from ._scoped import PipelineStore, ScopedStore
from ._scoped_remote import RemoteScope
from ._scopes import LAKE, ScopeLayout, parse_scope, scope_id
from ._secrets import Secrets
from ._sources import redact, resolve
from ._state import State
from ._sync import EvictReport, PushReport, Syncer, SyncReport

if TYPE_CHECKING:  # pyarrow takes longer to import than most commands take to run
    from ._datasets import Dataset


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
        if config.format < _config.LAYOUT_FORMAT and self._lake.refs.last_segment():
            _config.raise_format(self.root)  # segments from a lakelet that did not record it
        # A new, lost or older-format index is rebuilt from the records; so is an index from
        # before segments, which trusted per-name files a lookup could still find on a miss.
        if self._catalog.fresh or self._catalog.segments_applied() is None:
            records, last = _bind.all_records(self._lake.refs, [x.refs for x in self._layouts()])
            self._catalog.rebuild(records, segments_applied=last)
        remote = Remote(config.remote, config.storage_options, config.transfers) if config.remote else None
        assert self._lake.objects is not None
        self._link = RemoteLink(
            remote, self._catalog, self._lake.objects, self._tmp, self.root / _config.CONFIG_FILE
        )

    @property
    def remote(self) -> str | None:
        """The remote's URL, or None for an embedded lake."""
        return self._link.url

    def _syncer(self) -> Syncer | None:
        """The link to the remote, once its format is checked; None for an embedded lake."""
        return self._link.syncer()

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
        if self.remote is not None:
            return File(name, lake=self, record=self._scoped(scope)._record(name))
        return File(name, lake=self, record=self._record(scope, name))

    def exists(self, name: str) -> bool:
        record = self._lookup(LAKE, validate_name(name))
        return record is not None and record.removed_at is None

    def ls(self, prefix: str = "", scope: str = LAKE) -> list[File]:
        """Files whose names start with ``prefix`` in ``scope`` ('lake', 'user', 'pipeline/<run>')."""
        scope = self._resolve_scope(scope)
        validate_prefix(prefix)
        if scope != LAKE and self.remote is not None:  # the remote holds every machine's puts
            store = self._scoped(scope)
            records = [store._record(n) for n in store.list(prefix)]
        else:
            if scope == LAKE:
                _bind.catch_up(self._catalog, self._lake.refs)
            records = self._catalog.records(scope, prefix)
        return [File._of(r, self) for r in records]

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
        # the lineage of an add: where it came from, and with what (user and time are in the record)
        meta = {"source": redact(os.fspath(src)), **_lineage.add_environment()}
        records = _ingest.ingest(self, list(zip(names, sources, strict=True)), meta, move, progress)
        files = [File._of(r, self) for r in records]
        return files[0] if single else files

    def _bind_outputs(self, outputs: list[tuple[str, Path, bool]], meta: dict[str, Any]) -> list[File]:
        """Bind a stage's outputs (name, path, whether to move it in): all in one segment, or none."""
        items = [(validate_name(name), resolve(path)[0]) for name, path, _ in outputs]
        moved = [name for name, _, move in outputs if move]
        records = _ingest.ingest(self, items, meta, moved, SILENT)
        return [File(r.name, lake=self, record=r) for r in records]

    def _run_records(self) -> list[NameRecord]:
        """Every live stage run record this lake knows (``stages/<stage>/<key>[-g<n>].json``)."""
        return [r for r in self._catalog.records(LAKE, "stages/") if is_run_record(r.name)]

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
        self._tombstone([record.removed(utc_now())])

    def _tombstone(self, tombs: list[NameRecord]) -> None:
        """Mark lake names removed, keeping their records: on the remote first (the source of
        truth, one log entry for the batch), then here. Used by ``rm --force`` and gc."""
        syncer = self._syncer()
        if syncer is not None and tombs:
            syncer.tombstone(tombs)
        for tomb in tombs:
            self._lake.refs.tombstone(tomb)
        self._catalog.upsert(tombs)

    # the remote

    def push(self, progress: Progress = SILENT) -> PushReport:
        """Send names bound here but not yet on the remote (``upload = "deferred"``, or after
        an interrupted push). Names another machine bound to other content meanwhile are
        listed in ``conflicts`` and stay local-only."""
        return self._link.push(progress)

    def sync(self, progress: Progress = SILENT) -> SyncReport:
        """Push what is pending, then learn every name bound elsewhere since the last sync.
        Downloads no content: files are fetched when first opened (or by ``pull``)."""
        return self._link.sync(progress)

    def pull(
        self, names: Iterable[str] | None = None, *, prefix: str = "", progress: Progress = SILENT
    ) -> list[File]:
        """Sync, then download the content of ``names`` (default: every name under ``prefix``)
        that is not held locally."""
        validate_prefix(prefix)
        syncer = self._link.require("pull")
        syncer.pull_metadata()
        if names is None:
            records = self._catalog.records(LAKE, prefix)
        else:
            wanted = [names] if isinstance(names, str) else list(names)
            records = [self._record(LAKE, validate_name(n)) for n in wanted]
        syncer.fetch_many(records, progress)
        return [File._of(r, self) for r in records]

    def evict(self, prefix: str = "") -> EvictReport:
        """Drop local copies under ``prefix`` that are safely on the remote (never unpushed ones)."""
        validate_prefix(prefix)
        return self._link.evict(prefix)

    def url(self, name: str, expires: int = 3600) -> str:
        """A URL another tool can read ``name`` from: presigned on cloud stores, a file:// URL
        of the local copy for an embedded lake."""
        record = self._record(LAKE, validate_name(name))
        syncer = self._syncer()
        if syncer is None:
            return File(name, lake=self, record=record).path.as_uri()
        if not self._link.is_pushed(record):
            raise NotFoundError(f"{name!r} is not on remote {syncer.remote.url} yet: run `lakelet push`")
        return syncer.url(record, expires)

    def _state_of(self, record: NameRecord) -> str:
        """'local', 'remote' (only there: fetched on first open) or 'unpushed'."""
        if self.remote is not None and record.scope == LAKE and not self._link.is_pushed(record):
            return "unpushed"
        return "local" if self._blob_path(record).is_file() else "remote"

    def status(self) -> dict[str, object]:
        """Counts a listing warns about: unpushed names and when the last sync was."""
        return self._link.status()

    def _require_remote(self, doing: str) -> Syncer:
        return self._link.require(doing)  # for gc

    # datasets

    def write_dataset(
        self,
        name: str,
        data: Any,
        partition_by: list[str] | tuple[str, ...] = (),
        mode: str = "append",
        compression: str = "zstd",
    ) -> Dataset:
        """Write a DataFrame, Arrow table or RecordBatchReader (streamed) as a new version of
        the partitioned Parquet dataset ``name``; returns that version."""
        from ._datasets import Datasets

        return Datasets(self).write(name, data, list(partition_by), mode, compression)

    def dataset(self, name: str, version: int | None = None) -> Dataset:
        """The latest version of dataset ``name``, or ``version``."""
        from ._datasets import Dataset, Datasets

        store = Datasets(self)
        validate_path_name(name, "dataset name")
        wanted = version if version is not None else store.latest_version(name)
        manifest = store.read_manifest(name, wanted) if wanted else None
        if manifest is None:
            which = f"version {version} of " if version is not None else ""
            raise NotFoundError(f"no {which}dataset {name!r} in this lake")
        return Dataset(store, name, manifest)

    def datasets(self) -> list[str]:
        from ._datasets import Datasets

        return Datasets(self).names()

    @property
    def secrets(self) -> Secrets:
        """Named values for stages: ``set(name, value, org=False)``, ``list()``, ``delete(name)``."""
        return Secrets(self)

    def state(self, pipeline: str) -> State:
        """The incremental bookmark of ``pipeline``: ``.get()`` and ``.set(dict)``."""
        return State(self, pipeline)

    # scoped stores

    @property
    def user(self) -> ScopedStore:
        """The current user's persistent scratch space."""
        return self._scoped(scope_id("user", _config.current_user()))

    def pipeline(self, run_id: str | None = None) -> PipelineStore:
        """The temporary store of one pipeline run (default: the run executing this stage)."""
        if run_id is None:
            run_id = os.environ.get("LAKELET_RUN_ID")
            if not run_id:
                raise InvalidNameError("pipeline() needs a run id outside a lakelet.run()")
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
        if record is None and scope == LAKE:  # maybe bound by a process killed before it indexed it
            _bind.catch_up(self._catalog, self._lake.refs)
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
        return _fsck.check(self, progress)

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


def _scope_suffix(scope: str) -> str:
    return "" if scope == LAKE else f" (scope {scope})"


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
