"""Converting a dataset kept in lakelet's former manifest format (``_manifests/<8 digits>.json``)
into a Delta table, without rewriting a data file.

Each manifest version N becomes Delta commit N − 1 beside it: the files it added (an
append) or the files it replaced (an overwrite: ``remove`` for the old ones), its schema
as ``metaData`` when it changed, and its statistics, creator and time in lakelet's
``commitInfo``. The commits are made from the manifests alone, so two machines converting
at once write the same bytes and the store's conditional create keeps one; a conversion
cut short resumes from the last commit made (the conversion's commits say so in their
lineage). The manifests stay where they were: an older lakelet still reads them.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from lakelet.core.errors import InvalidArgumentError
from lakelet.datasets import _delta_log, _delta_schema, _manifest
from lakelet.datasets._delta_log import AddFile, LakeletInfo, Metadata, Protocol
from lakelet.datasets._manifest import Manifest

if TYPE_CHECKING:
    from lakelet.datasets._datasets import Datasets

__all__ = ["UPGRADED", "manifest_versions", "upgrade"]

UPGRADED = "upgraded_from"  # the lineage key of a converted commit


def manifest_versions(store: Datasets, name: str) -> int:
    """How many manifest versions dataset ``name`` has (here or on the remote): 0 if none."""
    keys = store.mirrored.keys(f"datasets/{name}/_manifests/", ".json")
    versions = [
        int(k.rsplit("/", 1)[-1][:-5]) for k in keys if _manifest.is_version_file(k.rsplit("/", 1)[-1])
    ]
    return max(versions, default=0)


def upgrade(store: Datasets, name: str) -> int:
    """Commit every manifest version of ``name`` not yet in its Delta log; returns how many."""
    last = manifest_versions(store, name)
    done = store.latest_version(name)  # lakelet versions already in the Delta log
    if last <= done:
        return 0
    previous = _read(store, name, done) if done else None
    for version in range(done + 1, last + 1):
        manifest = _read(store, name, version)
        store.create_commit(name, version - 1, _commit(name, manifest, previous))
        previous = manifest
    return last - done


def _read(store: Datasets, name: str, version: int) -> Manifest:
    manifest = store.mirrored.read_immutable(
        _manifest.manifest_key(name, version),
        parse=lambda data, copy: _manifest.parse(data, name, version, copy),
    )
    if manifest is None:
        raise InvalidArgumentError(
            f"dataset {name!r}: manifest version {version} is missing, cannot convert it"
        )
    return manifest


def _partition_columns(name: str, manifest: Manifest) -> list[str]:
    shapes = {tuple(f.partition) for f in manifest.files}
    if len(shapes) > 1:
        raise InvalidArgumentError(
            f"dataset {name!r} version {manifest.version} mixes partitionings {sorted(shapes)}, which a "
            'Delta table cannot hold: rewrite it with mode="overwrite"'
        )
    return list(next(iter(shapes), ()))


def _commit(name: str, manifest: Manifest, previous: Manifest | None) -> bytes:
    when = int(datetime.fromisoformat(manifest.created_at).timestamp() * 1000)
    columns = _partition_columns(name, manifest) if manifest.files else []
    if not manifest.files and previous is not None:
        columns = _partition_columns(name, previous)
    before = {f.relative: f for f in previous.files} if previous else {}
    now = {f.relative: f for f in manifest.files}
    adds = [
        AddFile(
            f.relative,
            {c: _delta_value(f.partition[c]) for c in columns},
            f.size,
            f.rows,
            f.digest,
            when,
            json.dumps({"numRecords": f.rows}),
        )
        for path, f in now.items()
        if path not in before
    ]
    removes = [
        AddFile(
            f.relative, {c: _delta_value(f.partition.get(c)) for c in columns}, f.size, f.rows, f.digest, when
        )
        for path, f in before.items()
        if path not in now
    ]
    delta = _delta_schema.delta_schema(manifest.schema)
    protocol = None
    if previous is None:
        ntz = _delta_schema.needs_timestamp_ntz(delta)
        protocol = (
            Protocol(3, 7, frozenset({"timestampNtz"}), frozenset({"timestampNtz"}))
            if ntz
            else Protocol(1, 2)
        )
    metadata = None
    if (
        previous is None
        or not previous.schema.equals(manifest.schema)
        or columns != _previous_columns(previous)
    ):
        metadata = Metadata(
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"lakelet-dataset:{name}")),  # the same on every machine
            json.dumps(delta, separators=(",", ":")),
            _delta_schema.to_arrow(delta),
            tuple(columns),
            {},
            when,
        )
    info = LakeletInfo(
        version=manifest.version,
        mode=manifest.mode,
        created_at=manifest.created_at,
        creator=manifest.creator,
        schema=manifest.schema,
        num_rows=manifest.num_rows,
        stats=manifest.stats,
        write=dict(manifest.write),
        lineage={UPGRADED: manifest.key},
        meta=manifest.meta,
    )
    return _delta_log.encode_commit(protocol, metadata, adds, removes, info, when, "lakelet upgrade", columns)


def _previous_columns(previous: Manifest) -> list[str]:
    return list(previous.files[0].partition) if previous.files else []


def _delta_value(raw: str | None) -> str | None:
    from lakelet.datasets._files import NULL_PARTITION

    if raw is None:
        return None
    from urllib.parse import unquote

    value = unquote(raw)
    return None if value == NULL_PARTITION else value
