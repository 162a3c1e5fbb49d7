"""``LakeContext``: the parts of one opened lake, built once and handed to whatever works on it.

add, fsck, gc, datasets, state and run take a context instead of reaching into
``Lake``'s private members; ``Lake`` is the public facade over it.
"""

from __future__ import annotations

import io
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, overload

from lakelet.catalog import _bind
from lakelet.catalog._catalog import Catalog
from lakelet.core import _config
from lakelet.core._digest import Digest
from lakelet.core.errors import NotFoundError, StorageError
from lakelet.lake._expiry import is_run_record
from lakelet.lake._scoped import ScopedStore
from lakelet.remote._link import RemoteLink
from lakelet.remote._remote import Remote
from lakelet.remote._scoped_remote import RemoteScope
from lakelet.remote._sync import Syncer
from lakelet.storage._objects import ObjectStore, VerifiedReader
from lakelet.storage._refs import NameRecord, RefStore
from lakelet.storage._scopes import LAKE, ScopeLayout

__all__ = ["LakeContext"]

_Store = TypeVar("_Store", bound=ScopedStore)


@dataclass(frozen=True, slots=True)
class LakeContext:
    """One lake's root, temp folder, lake-scope layout, index, verified reader and remote link."""

    config: _config.LakeConfig
    root: Path
    tmp: Path  # temp files, on the lake's filesystem so that a rename publishes them
    layout: ScopeLayout  # the lake scope: its name segments and the object store
    catalog: Catalog
    reader: VerifiedReader
    link: RemoteLink

    @classmethod
    def open(cls, config: _config.LakeConfig) -> LakeContext:
        root = config.root
        tmp = root / "tmp"
        tmp.mkdir(exist_ok=True)
        catalog = Catalog(root / "index.sqlite")
        layout = ScopeLayout.of(root, LAKE, tmp)
        if config.format < _config.LAYOUT_FORMAT and layout.refs.last_segment():
            _config.raise_format(root)  # segments from a lakelet that did not record it
        # A new, lost or older-format index is rebuilt from the records; so is an index from
        # before segments, which trusted per-name files a lookup could still find on a miss.
        try:
            if catalog.fresh or catalog.segments_applied() is None:
                layouts = _layouts(root, layout, tmp)
                records, last = _bind.all_records(layout.refs, [x.refs for x in layouts])
                catalog.rebuild(records, segments_applied=last)
        except StorageError:
            # An unreadable index still opens: every use of it says to run fsck, which must
            # be able to open the lake to set it aside and rebuild it.
            if catalog.unreadable is None:
                raise
        remote = Remote(config.remote, config.storage_options, config.transfers) if config.remote else None
        assert layout.objects is not None
        link = RemoteLink(remote, catalog, layout.objects, tmp, root / _config.CONFIG_FILE)
        return cls(config, root, tmp, layout, catalog, VerifiedReader(root, catalog), link)

    @property
    def refs(self) -> RefStore:
        """The lake scope's name segments."""
        return self.layout.refs

    @property
    def objects(self) -> ObjectStore:
        """The lake scope's content-addressed objects."""
        assert self.layout.objects is not None
        return self.layout.objects

    def syncer(self) -> Syncer | None:
        """The link to the remote, once its format is checked; None for an embedded lake."""
        return self.link.syncer()

    def require_remote(self, doing: str) -> Syncer:
        """The checked syncer; raises ConfigError naming ``doing`` for an embedded lake."""
        return self.link.require(doing)

    def close(self) -> None:
        self.catalog.close()

    # scopes

    def scope_layout(self, scope: str) -> ScopeLayout:
        return self.layout if scope == LAKE else ScopeLayout.of(self.root, scope, self.tmp)

    def layouts(self) -> list[ScopeLayout]:
        """The lake scope and every scoped store that has a directory."""
        return _layouts(self.root, self.layout, self.tmp)

    @overload
    def scoped(self, scope: str) -> ScopedStore: ...
    @overload
    def scoped(self, scope: str, kind: type[_Store]) -> _Store: ...
    def scoped(self, scope: str, kind: type[ScopedStore] = ScopedStore) -> ScopedStore:
        """The store of a user or pipeline scope ('user/<id>', 'pipeline/<run>')."""
        syncer = self.syncer()
        remote = RemoteScope(syncer.remote, scope) if syncer is not None else None
        return kind(ScopeLayout.of(self.root, scope, self.tmp), self.tmp, self.catalog, self.reader, remote)

    # records

    def lookup(self, scope: str, name: str, ask_remote: bool = True) -> NameRecord | None:
        """The record of ``name``: from the index, else from the local records (repairing
        the index), else, for a lake name, from the remote."""
        record = self.catalog.get(scope, name)
        if record is None and scope == LAKE:  # maybe bound by a process killed before it indexed it
            _bind.catch_up(self.catalog, self.refs)
            record = self.catalog.get(scope, name)
        if record is not None:
            return record
        record = self.scope_layout(scope).refs.read(name)
        if record is not None:
            self.catalog.upsert([record])
            return record
        syncer = self.syncer() if ask_remote and scope == LAKE else None
        return syncer.lookup(name) if syncer is not None else None

    def lookup_many(self, scope: str, names: Collection[str]) -> dict[str, NameRecord]:
        """``lookup`` of each of ``names``, by name (those found): each step done once for all
        of them, the remote's log read once, not once per missing name."""
        found = self.catalog.get_many(scope, names)
        missing = [n for n in names if n not in found]
        if missing and scope == LAKE:
            _bind.catch_up(self.catalog, self.refs)
            found |= self.catalog.get_many(scope, missing)
            missing = [n for n in missing if n not in found]
        refs = self.scope_layout(scope).refs
        repaired = [r for r in map(refs.read, missing) if r is not None]
        if repaired:
            self.catalog.upsert(repaired)
            found |= {r.name: r for r in repaired}
        syncer = self.syncer() if scope == LAKE and len(found) < len(names) else None
        if syncer is not None:
            syncer.pull_metadata()
            found |= self.catalog.get_many(scope, [n for n in names if n not in found])
        return found

    def record(self, scope: str, name: str) -> NameRecord:
        """The live record of ``name``; raises NotFoundError if it is unbound or removed."""
        record = self.lookup(scope, name)
        if record is None:
            suffix = "" if scope == LAKE else f" (scope {scope})"
            raise NotFoundError(f"no name {name!r} in this lake" + suffix, name=name)
        if record.removed_at is not None:
            raise NotFoundError(f"{name!r} was removed on {record.removed_at}", name=name)
        return record

    def run_records(self) -> list[NameRecord]:
        """Every live stage run record this lake knows (``stages/<stage>/<key>[-g<n>].json``)."""
        return [r for r in self.catalog.records(LAKE, "stages/") if is_run_record(r.name)]

    def tombstone(self, tombs: list[NameRecord]) -> None:
        """Mark lake names removed, keeping their records: on the remote first (the source of
        truth, one log entry for the batch), then here. Used by ``rm --force`` and gc."""
        syncer = self.syncer()
        if syncer is not None and tombs:
            syncer.tombstone(tombs)
        for tomb in tombs:
            self.refs.tombstone(tomb)
        self.catalog.upsert(tombs)

    # content

    def blob_path(self, record: NameRecord) -> Path:
        return self.scope_layout(record.scope).blob_path(record.name, Digest.parse(record.digest))

    def blob_path_name(self, record: NameRecord) -> str:
        """``blob_path`` as a string (see ``ScopeLayout.blob_path_name``)."""
        return self.scope_layout(record.scope).blob_path_name(record.name, Digest.parse(record.digest))

    def state_of(self, record: NameRecord) -> str:
        """'local', 'remote' (only there: fetched on first open) or 'unpushed'."""
        if self.link.url is not None and record.scope == LAKE and not self.link.is_pushed(record):
            return "unpushed"
        return "local" if self.blob_path(record).is_file() else "remote"

    def read(self, record: NameRecord) -> bytes:
        """The whole content of a small ``record`` (a run record, a stage's small value),
        verified; fetched from the remote first when it is not held here."""
        digest = Digest.parse(record.digest)
        path = self.scope_layout(record.scope).blob_path_name(record.name, digest)
        try:
            return self.reader.read(path, digest, record.size)
        except FileNotFoundError:
            with self.open_record(record) as f:
                return f.read()

    def open_record(self, record: NameRecord) -> io.BufferedReader:
        """The content of ``record``, verified against its digest; fetched from the remote first
        when it is not held here."""
        path = self.blob_path(record)
        digest = Digest.parse(record.digest)
        try:
            return self.reader.open(path, digest, record.size)
        except FileNotFoundError:
            syncer = self.syncer()
            if syncer is not None and record.scope != LAKE:
                reader, _ = self.scoped(record.scope).open_reader(record.name)
                return reader
            if syncer is not None:
                blob = syncer.fetch(record)  # lazy fetch, verified before it is cached
                self.reader.remember(blob)
                return self.reader.open(path, digest, record.size)
            raise NotFoundError(
                f"the content of {record.name!r} ({record.digest}) is not stored locally", name=record.name
            ) from None


def _layouts(root: Path, lake: ScopeLayout, tmp: Path) -> list[ScopeLayout]:
    scopes_dir = root / "scopes"
    if not scopes_dir.is_dir():
        return [lake]
    return [
        lake,
        *[
            ScopeLayout.of(root, f"{kind.name}/{ident.name}", tmp)
            for kind in sorted(scopes_dir.iterdir())
            for ident in sorted(kind.iterdir())
        ],
    ]
