"""A lake: one local root holding objects, name records, scoped stores and the index."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from lakelet.catalog import _bind
from lakelet.core import _config
from lakelet.core._digest import Digest
from lakelet.core._globs import compile_glob, literal_prefix
from lakelet.core._meta import check_user_meta
from lakelet.core._names import validate_name, validate_prefix
from lakelet.core._progress import SILENT, Progress
from lakelet.core.errors import (
    CorruptRecordError,
    InvalidArgumentError,
    InvalidNameError,
    NameExistsError,
    NotFoundError,
)
from lakelet.facade._file import File
from lakelet.facade._progress_bar import ProgressOption, chosen
from lakelet.lake import _add
from lakelet.lake._context import LakeContext
from lakelet.lake._expiry import parse_duration
from lakelet.lake._scoped import PipelineStore, ScopedStore
from lakelet.remote._remote import Remote
from lakelet.remote._sync import EvictReport, PushReport, SyncReport
from lakelet.secrets._secrets import Secrets
from lakelet.storage._refs import NameRecord, utc_now
from lakelet.storage._scopes import LAKE, parse_scope, scope_id
from lakelet.storage._sources import AddSource

if TYPE_CHECKING:  # loaded where used: `lakelet ls` pays for none of them (pyarrow least of all)
    from lakelet.datasets._datasets import Dataset
    from lakelet.datasets._state import State
    from lakelet.facade._graph import LineageGraph
    from lakelet.lake._fsck import FsckReport
    from lakelet.lake._gc import GcReport

__all__ = ["Lake", "init", "open_lake"]

_log = logging.getLogger("lakelet.remote")


_GLOB_PAGE = 5000  # names read per query while a pattern filters them


class Lake:
    """An opened lake. Create one with ``lakelet.init`` and open it with ``lakelet.open``."""

    def __init__(self, config: _config.LakeConfig) -> None:
        self.config = config
        self.root = config.root
        self.context = LakeContext.open(config)  # the parts that add, fsck, gc, datasets… work on

    @property
    def remote(self) -> str | None:
        """The remote's URL, or None for an embedded lake."""
        return self.context.link.url

    def __repr__(self) -> str:
        return f"<Lake {self.root}>"

    def _repr_html_(self) -> str:
        """A notebook's view: root, remote, counts, the names added last (escaped)."""
        from lakelet.facade._display import lake_card

        return lake_card(self).html()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        from lakelet.facade._display import lake_card

        lake_card(self).pretty(p, cycle)

    def close(self) -> None:
        self.context.close()

    # lake-scope files

    def file(self, name: str, scope: str = LAKE, *, ask_remote: bool = True) -> File:
        """A handle on a name; nothing is read until it is used.

        ``scope`` is 'lake' (the default), 'user' or 'pipeline/<run>'. Lake
        handles are lazy; a scoped name is looked up now, since it may be
        overwritten later and the handle should keep what it saw. With
        ``ask_remote=False`` a lake name is looked up now, in what this machine
        knows only (NotFoundError if it is not there).

        A content digest (``"blake3:<64 hex>"``) in place of ``name`` is looked up
        now: the handle is on the first live name bound to that content
        (NotFoundError naming the digest if none is).
        """
        name = validate_name(name)
        scope = self._resolve_scope(scope)
        digest = _as_digest(name)
        if digest is not None:
            return self._file_holding(digest, scope, ask_remote)
        if scope == LAKE and not ask_remote:
            record = self.context.lookup(LAKE, name, ask_remote=False)
            if record is None:
                raise NotFoundError(f"no name {name!r} in the lake at {self.root}", name=name)
            return File.of(record, self)
        if scope == LAKE:
            return File(name, lake=self)
        if self.remote is not None:
            return File(name, lake=self, record=self.context.scoped(scope).record(name))
        return File(name, lake=self, record=self.context.record(scope, name))

    def _file_holding(self, digest: str, scope: str, ask_remote: bool) -> File:
        context = self.context
        if scope == LAKE:  # maybe bound by a process killed before it indexed it
            _bind.catch_up(context.catalog, context.refs)
        record = context.catalog.first_with_digest(scope, digest)
        syncer = context.syncer() if record is None and scope == LAKE and ask_remote else None
        if syncer is not None:  # bound on another machine since the last sync?
            syncer.pull_metadata()
            record = context.catalog.first_with_digest(scope, digest)
        if record is None:
            where = "" if scope == LAKE else f" (scope {scope})"
            raise NotFoundError(f"no name in the lake at {self.root} holds {digest}{where}", name=digest)
        return File.of(record, self)

    def exists(self, name: str) -> bool:
        record = self.context.lookup(LAKE, validate_name(name))
        return record is not None and record.removed_at is None

    def ls(
        self,
        prefix: str = "",
        scope: str = LAKE,
        *,
        glob: str | None = None,
        limit: int | None = None,
        after: str = "",
    ) -> list[File]:
        """Files whose names start with ``prefix`` in ``scope`` ('lake', 'user', 'pipeline/<run>'),
        by name; with ``glob``, only those whose whole name matches it (``*`` and ``?`` within a
        segment, ``**`` across segments, ``[abc]``: ``lake.ls(glob="raw/**/*.csv")``). A page of
        a long listing: at most ``limit`` of them, from the first name past ``after`` (the last
        name of the page before)."""
        scope = self._resolve_scope(scope)
        prefix = validate_prefix(prefix)
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidArgumentError(f"limit must be a count of 0 or more, not {limit!r}")
        if not isinstance(after, str):
            raise InvalidArgumentError(f"after must be a name, not {after!r}")
        if glob is not None:
            return self._glob(prefix, scope, glob, limit, after)
        context = self.context
        if scope != LAKE and self.remote is not None:  # the remote holds every machine's puts
            records = _remote_records(context.scoped(scope), prefix, after, limit)
        else:
            if scope == LAKE:
                _bind.catch_up(context.catalog, context.refs)
            records = list(context.catalog.iter_records(scope, prefix, after=after, limit=limit))
        return [File.of(r, self) for r in records]

    def _glob(self, prefix: str, scope: str, glob: str, limit: int | None, after: str) -> list[File]:
        """``ls`` by pattern: the names under the pattern's literal start, a page at a time,
        kept if they match (so memory holds a page, not the listing)."""
        pattern = compile_glob(glob)
        literal = literal_prefix(glob)
        narrower = literal if literal.startswith(prefix) else prefix
        found: list[File] = []
        while limit is None or len(found) < limit:
            page = self.ls(narrower, scope, limit=_GLOB_PAGE, after=after)
            found += [f for f in page if f.name.startswith(prefix) and pattern.match(f.name)]
            if len(page) < _GLOB_PAGE:
                break
            after = page[-1].name
        return found if limit is None else found[:limit]

    def add(
        self,
        src: AddSource,
        name: str,
        *,
        move: bool = False,
        meta: Mapping[str, Any] | None = None,
        progress: ProgressOption = None,
        follow_symlinks: bool = True,
    ) -> File | list[File]:
        """Store ``src`` under ``name``: a path, directory, http(s) URL or fsspec URL, or the
        content itself — bytes, a binary file object (read from its position to its end, left
        open) or an iterable of bytes — streamed, verified, and bound only once it is whole.

        A directory's files become ``name/<relative path>`` and a list is returned; a symlink
        in it to a file is followed unless ``follow_symlinks=False``. What it leaves out (a
        symlink to a folder, a FIFO…) and a symlink it follows out of the directory are
        reported as warnings of the ``lakelet`` logger.
        Adding the same content under the same name again is a no-op.
        ``meta``: your own JSON keys for the record (``File.meta``); lakelet's keys are refused.
        ``progress``: a ``Progress`` told the bytes; True/False: a bar on stderr or none;
        None (default): a bar in an interactive session (a terminal, Jupyter) only.
        Raises NameExistsError, InvalidNameError, InvalidArgumentError (bad meta or data),
        NotFoundError, SourceError, StorageError.
        """
        with chosen(progress, f"adding {name}") as shown:
            records, single = _add.add(
                self.context,
                src,
                name,
                move=move,
                progress=shown,
                meta=meta,
                follow_symlinks=follow_symlinks,
            )
        files = [File.of(r, self) for r in records]
        return files[0] if single else files

    def rm(self, name: str, *, force: bool = False, scope: str = LAKE, recursive: bool = False) -> None:
        """Remove a name.

        A lake name is write-once, so removing it needs ``force=True``; its
        record stays as a tombstone so lineage survives. In a scoped store this
        is ``delete(name, recursive)``.
        """
        name = validate_name(name)
        scope = self._resolve_scope(scope)
        if scope != LAKE:
            self.context.scoped(scope).delete(name, recursive=recursive)
            return
        if not force:
            raise NameExistsError(
                f"{name!r} is a write-once lake name: removing it needs force=True "
                "(`--force`); its lineage is kept",
                name=name,
            )
        record = self.context.lookup(LAKE, name)
        if record is None or record.removed_at is not None:
            raise NotFoundError(f"no lake name {name!r}", name=name)
        self.context.tombstone([record.removed(utc_now())])

    # the remote

    def push(self, progress: ProgressOption = None) -> PushReport:
        """Send names bound here but not yet on the remote (``upload = "deferred"``, or after
        an interrupted push). Names another machine bound to other content meanwhile are
        listed in ``conflicts`` and stay local-only. ``progress``: as for ``add``."""
        with chosen(progress, "pushing") as shown:
            return self.context.link.push(shown)

    def sync(self, progress: ProgressOption = None, *, prefix: str = "") -> SyncReport:
        """Push what is pending, then learn every name bound elsewhere since the last sync.
        Downloads no content: files are fetched when first opened (or by ``pull``).
        ``progress``: as for ``add``.

        ``prefix``: on a machine that has not synced yet, learn from the remote's snapshot
        only the names under ``prefix`` (reading only the parts of it that hold them), and
        everything bound since. Anything that needs the other names (a bind, a push, a look-up
        of a name outside the prefix, ``gc(remote=True)``, a sync without the prefix) learns
        them first (docs/remote-layout.md, "A sync of one prefix")."""
        prefix = validate_prefix(prefix) if prefix else ""
        with chosen(progress, "syncing") as shown:
            return self.context.link.sync(shown, prefix)

    def upgrade_remote(self) -> bool:
        """Switch the remote to the newest format lakelet writes (3: the compact log,
        docs/remote-layout.md), once every machine sharing it runs a lakelet that reads it: an
        older one then refuses the remote. Returns False when it had that format already."""
        return self.context.link.upgrade()

    def pull(
        self, names: Iterable[str] | None = None, *, prefix: str = "", progress: ProgressOption = None
    ) -> list[File]:
        """Sync, then download the content of ``names`` (default: every name under ``prefix``)
        that is not held locally. ``progress``: as for ``add``."""
        prefix = validate_prefix(prefix)
        syncer = self.context.require_remote("pull")
        syncer.pull_metadata()
        if names is None:
            records = self.context.catalog.records(LAKE, prefix)
        else:
            wanted = [names] if isinstance(names, str) else list(names)
            records = [self.context.record(LAKE, validate_name(n)) for n in wanted]
        with chosen(progress, "pulling") as shown:
            syncer.fetch_many(records, shown)
        if names is None and (prefix + "/").startswith("datasets/"):
            for dataset in self.datasets_under(prefix):
                dataset.materialize()
        return [File.of(r, self) for r in records]

    def datasets_under(self, prefix: str) -> list[Dataset]:
        """The latest version of every dataset whose folder is under ``prefix`` (``datasets/``,
        ``datasets/sales/``, ``datasets/sales/orders``)."""
        inside = prefix.removeprefix("datasets").lstrip("/").rstrip("/")
        return [
            self.dataset(n)
            for n in self.datasets()
            if not inside or n == inside or n.startswith(inside + "/")
        ]

    def evict(self, prefix: str = "") -> EvictReport:
        """Drop local copies under ``prefix`` that are safely on the remote (never unpushed ones)."""
        prefix = validate_prefix(prefix)
        return self.context.link.evict(prefix)

    def url(self, name: str, expires: timedelta | float | str = 3600, *, scope: str = LAKE) -> str:
        """A URL another tool can read ``name`` (or a content digest) from: presigned on cloud
        stores (valid for ``expires``: seconds, a timedelta or text like "1h"), a file:// URL of
        the local copy for an embedded lake. ``scope``: 'lake', 'user' or 'pipeline/<run>'.
        ``datasets/<name>``: the URL of that Delta table's folder (on the remote when there is
        one), which any Delta reader opens."""
        seconds = max(1, int(parse_duration(expires, "expiry").total_seconds()))
        scope = self._resolve_scope(scope)
        if scope != LAKE:
            return self.context.scoped(scope).url(validate_name(name), seconds)
        if name.startswith("datasets/") and not self.exists(name):
            from lakelet.datasets._datasets import Datasets

            return Datasets(self.context).url(name.removeprefix("datasets/").rstrip("/"))
        f = self.file(name)
        record, name = f.record, f.name
        syncer = self.context.syncer()
        if syncer is None:
            return f.path.as_uri()
        if not self.context.link.is_pushed(record):
            raise NotFoundError(
                f"{name!r} is not on remote {syncer.remote.url} yet: run `lakelet push`", name=name
            )
        return syncer.url(record, seconds)

    def status(self) -> dict[str, object]:
        """Counts a listing warns about: unpushed names and when the last sync was."""
        return self.context.link.status()

    # datasets

    def write_dataset(
        self,
        name: str,
        data: Any,
        partition_by: list[str] | tuple[str, ...] = (),
        mode: str = "append",
        compression: str = "zstd",
        keys: list[str] | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
        progress: ProgressOption = None,
    ) -> Dataset:
        """Write a DataFrame, Arrow table or RecordBatchReader (streamed) as a new version of
        the Delta table ``name``: ``mode`` "append", "overwrite", or "merge" (rows whose
        ``keys`` match are replaced, the others appended); returns that version. ``meta``: your
        own JSON keys for this version (``Dataset.meta``), checked before anything is written.
        ``progress``: as for ``add``; told the data's bytes in memory as they are written, then
        the files' bytes as they are uploaded."""
        from lakelet.datasets._datasets import Datasets

        checked = check_user_meta(meta)
        with chosen(progress, f"writing {name}") as shown:
            return Datasets(self.context).write(
                name, data, list(partition_by), mode, compression, keys=keys, meta=checked, progress=shown
            )

    def dataset(self, name: str, version: int | None = None) -> Dataset:
        """The latest version of dataset ``name``, or ``version``."""
        from lakelet.datasets._datasets import Datasets

        return Datasets(self.context).open(name, version)

    def datasets(self) -> list[str]:
        """The names of every dataset in this lake."""
        from lakelet.datasets._datasets import Datasets

        return Datasets(self.context).names()

    @property
    def secrets(self) -> Secrets:
        """Named values for stages: ``set(name, value, org=False)``, ``list()``, ``delete(name)``."""
        return Secrets(self.config)

    def state(self, pipeline: str) -> State:
        """The incremental bookmark of ``pipeline``: ``.get()`` and ``.set(dict)``."""
        from lakelet.datasets._state import State

        return State(self.context, pipeline)

    # scoped stores

    @property
    def user(self) -> ScopedStore:
        """The current user's persistent scratch space."""
        return self.context.scoped(scope_id("user", _config.current_user()))

    def pipeline(self, run_id: str | None = None) -> PipelineStore:
        """The temporary store of one pipeline run (default: the run executing this stage)."""
        if run_id is None:
            run_id = os.environ.get("LAKELET_RUN_ID")
            if not run_id:
                raise InvalidNameError("pipeline() needs a run id outside a lakelet.run()")
        return self.context.scoped(scope_id("pipeline", run_id), PipelineStore)

    def _resolve_scope(self, scope: str) -> str:
        if scope == "user":
            return scope_id("user", _config.current_user())
        return parse_scope(scope)

    # lineage and runs

    def lineage(self, name: str, depth: int | None = None) -> list[dict[str, Any]]:
        """The lineage records of ``name`` and of its inputs, recursively, up to ``depth`` levels:
        how each was made (stage, code, git commit and line, inputs, parameters, versions)."""
        self.file(name).record  # noqa: B018 - NotFoundError first, for a name never bound
        from lakelet.facade import _lineage

        return _lineage.upstream(self, validate_name(name), depth)

    def downstream(self, name: str, depth: int | None = None) -> list[File]:
        """Every file made from ``name``, directly or not, up to ``depth`` stage runs away."""
        self.file(name).record  # noqa: B018
        from lakelet.facade import _lineage

        return _lineage.downstream(self, validate_name(name), depth)

    def lineage_inputs(self, record: dict[str, Any]) -> list[str]:
        """Every input of a lineage record: lake names, local paths, the source of an add."""
        from lakelet.facade import _lineage

        return _lineage.input_labels(self, record)

    def lineage_graph(
        self, name: str | None = None, depth: int | None = None, direction: str = "both"
    ) -> LineageGraph:
        """The lineage around ``name`` ('upstream', 'downstream' or 'both'), or of every stage
        run this lake knows when ``name`` is None."""
        from lakelet.facade import _graph

        if name is None:
            return _graph.whole(self)
        if direction not in ("upstream", "downstream", "both"):
            raise InvalidArgumentError(f"direction must be upstream, downstream or both, not {direction!r}")
        return _graph.around(self, validate_name(name), depth, direction)

    def runs(self) -> list[dict[str, Any]]:
        """The report of every ``lakelet.run`` on this lake (or its remote), oldest first: dicts
        that a notebook shows as a card."""
        from lakelet.lake._run_reports import list_reports

        return list_reports(self.context)

    def ingest(
        self, pipeline_file: str | os.PathLike[str], progress: ProgressOption = None
    ) -> dict[str, Any]:
        """Run the Singer tap of a DataSpoc pipeline YAML into partitioned datasets, resuming from
        its bookmark; returns the run's log (rows per stream, files written, state).
        ``progress``: as for ``write_dataset``, over each stream's dataset in turn."""
        from lakelet.datasets._singer import run

        with chosen(progress, f"ingesting {os.path.basename(os.fspath(pipeline_file))}") as shown:
            return run(self.context, pipeline_file, shown)

    # maintenance

    def fsck(
        self,
        progress: Progress = SILENT,
        upgrade: bool = False,
        *,
        remote: bool = False,
        repair: bool = False,
    ) -> FsckReport:
        """Verify every stored blob and dataset commit, quarantine corrupt ones, rebuild the
        index from records, remove what killed processes left in tmp/. ``upgrade``: convert
        datasets still in the former manifest format to Delta tables (no data file rewritten).

        ``remote``: also read back every object the remote's names need and report those it
        lacks or holds damaged; ``repair`` (with ``remote``): send this machine's intact copy
        over each of them. Raises ConfigError without a remote."""
        from lakelet.lake import _fsck

        if repair and not remote:
            raise InvalidArgumentError(
                "fsck: repair=True re-sends copies to the remote: pass remote=True too"
            )
        report = _fsck.check(self.context, progress)
        if remote:
            found = _fsck.check_remote(self.context, repair, progress)
            report = dataclasses.replace(
                report,
                remote_checked=found.remote_checked,
                remote_damaged=found.remote_damaged,
                remote_repaired=found.remote_repaired,
            )
        if not (self.root / "datasets").is_dir():
            return report  # no dataset: pyarrow, which the manifests need, stays unloaded
        from lakelet.datasets._delta_log import quarantine_invalid

        report = dataclasses.replace(report, manifests_quarantined=quarantine_invalid(self.root))
        if not upgrade:
            return report
        from lakelet.datasets._datasets import Datasets

        return dataclasses.replace(report, datasets_upgraded=Datasets(self.context).upgrade_all())

    def gc(
        self,
        ttl: timedelta | float | str = "7d",
        *,
        dry_run: bool = False,
        remote: bool = False,
        now: datetime | None = None,
    ) -> GcReport:
        """Drop pipeline runs older than ``ttl`` (a timedelta, seconds, or text like "7d"), expired
        stage outputs nothing live read, and objects no name refers to (older than a day);
        ``remote``: on the remote too. ``now``: when expiry is judged (default: the clock)."""
        from lakelet.lake import _gc

        return _gc.collect(self.context, parse_duration(ttl, "ttl"), dry_run=dry_run, remote=remote, now=now)


def _as_digest(text: str) -> str | None:
    """``text`` if it is a whole content digest as lakelet prints them, else None.

    Both algorithms give 32 bytes: a shorter hex part is an ordinary name that
    happens to contain a colon, never a truncated digest.
    """
    try:
        digest = Digest.parse(text)
    except ValueError:
        return None
    return text if len(digest.hexdigest) == _DIGEST_HEX_LENGTH else None


_DIGEST_HEX_LENGTH = 64


def _remote_records(store: ScopedStore, prefix: str, after: str, limit: int | None) -> list[NameRecord]:
    """The records under ``prefix`` of a scoped store on the remote (a page of them: see
    ``Lake.ls``); one that any user of the remote made invalid is skipped and reported, so
    the others stay listed."""
    records: list[NameRecord] = []
    for name in sorted(n for n in store.list(prefix) if n > after):
        if limit is not None and len(records) >= limit:
            break
        try:
            records.append(store.record(name))
        except CorruptRecordError as e:
            _log.warning("%s", e)
    return records


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
