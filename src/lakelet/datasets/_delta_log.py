"""The Delta Lake transaction log of a dataset: its actions, and the one validating parser every
commit file and checkpoint goes through.

A dataset folder is a Delta table (docs/datasets.md): ``_delta_log/<20 digits>.json``
holds one commit per line-delimited JSON file; lakelet version N is Delta version
N − 1. A commit file is read back from the local lake or the shared remote, where any
peer with write access may have written it, damaged or forged, and a table may have
been written by another Delta writer (delta-rs, Spark). ``parse_commit`` (and
``parse_checkpoint`` for the rows of a Parquet checkpoint, through the same action
checks) takes only what a Delta writer makes and lakelet can read: a data path is
relative, inside the table and outside ``_delta_log`` (no ``..``, absolute path, URL
or control character), sizes and counts are non-negative 64-bit integers, the schema
is a Delta schema, partition values name the table's partition columns and convert to
their types, and the protocol asks for no feature lakelet cannot honour. A bad commit
raises ``CorruptRecordError`` naming the file and version; a feature lakelet does not
support raises ``UnsupportedFeatureError`` naming it. Nothing is built on either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from lakelet.core._digest import Digest
from lakelet.core.errors import CorruptRecordError, UnsupportedFeatureError
from lakelet.datasets import _delta_schema
from lakelet.datasets._delta_actions import (
    DIGEST_TAG,
    LAKELET_INFO_FORMAT,
    AddFile,
    Commit,
    Files,
    LakeletInfo,
    Metadata,
    Protocol,
    Snapshot,
    checkpoint_key,
    commit_key,
    encode_commit,
    is_commit_file,
    last_checkpoint_key,
    unsupported,
)
from lakelet.datasets._manifest import (
    Invalid,
    arrow_schema,
    column_stats,
    confinement_problem,
    count,
    json_object,
    short,
    text,
)
from lakelet.lake._fsck import quarantine

__all__ = [
    "LAKELET_INFO_FORMAT",
    "AddFile",
    "Commit",
    "LakeletInfo",
    "Metadata",
    "Protocol",
    "Snapshot",
    "apply",
    "encode_commit",
    "checkpoint_key",
    "commit_key",
    "is_commit_file",
    "last_checkpoint_key",
    "parse_commit",
    "quarantine_invalid",
]

_MAX_LINE = 64 << 20
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_LAKELET_FILE = re.compile(r"part-([0-9a-f]{32})\.parquet")
_DIGEST = re.compile(r"(blake3|sha256):([0-9a-f]{64})")
# What lakelet reads: protocol reader 1, or 3 with these features
_READER_FEATURES = frozenset({"timestampNtz"})
_FEATURE_NAMES = {2: "column mapping (reader version 2)"}
_IGNORED_ACTIONS = frozenset({"commitInfo", "txn", "cdc", "domainMetadata", "checkpointMetadata"})

# reading


def _where(name: str, key: str, version: int, copy: str) -> str:
    at = f" ({copy})" if copy else ""
    return f"dataset {name!r} version {version + 1} (Delta version {version}): invalid commit {key}{at}"


def parse_commit(data: bytes, name: str, version: int, copy: str = "") -> Commit:
    """Delta version ``version`` of ``name`` from its commit file; CorruptRecordError naming the
    file and version, UnsupportedFeatureError naming a feature lakelet cannot read."""
    key = commit_key(name, version)
    try:
        return _commit(_lines(data), name, version)
    except Invalid as e:
        older = f"; version {version} and older can still be read" if version >= 1 else ""
        raise CorruptRecordError(f"{_where(name, key, version, copy)}: {e}{older}", record=key) from None


def apply(snapshot: Snapshot | None, commit: Commit, name: str, copy: str = "") -> Snapshot:
    """The table after ``commit``; CorruptRecordError if the commit does not fit the table (a
    first commit without protocol or schema, an append into columns the table lacks)."""
    key = commit_key(name, commit.version)
    try:
        return _apply(snapshot, commit, name)
    except Invalid as e:
        raise CorruptRecordError(f"{_where(name, key, commit.version, copy)}: {e}", record=key) from None


def _apply(snapshot: Snapshot | None, commit: Commit, name: str) -> Snapshot:
    if snapshot is not None and commit.version != snapshot.version + 1:
        raise Invalid(f"it follows version {snapshot.version + 1} out of order")
    protocol = commit.protocol or (snapshot.protocol if snapshot else None)
    metadata = commit.metadata or (snapshot.metadata if snapshot else None)
    if protocol is None or metadata is None:
        raise Invalid("the table has no protocol or no metaData at this version")
    _check_protocol(protocol, name)
    for add in commit.adds:
        _check_partition(add, metadata)
    before = snapshot.files if snapshot else {}
    files = Files(partial(_applied, before, commit), before)
    if commit.metadata is not None and snapshot is not None:
        for add in files.values():  # a new schema must still describe every file kept
            _check_partition(add, metadata)
    return Snapshot(commit.version, protocol, metadata, files, commit.info, commit.timestamp)


def _applied(files: Mapping[str, AddFile], commit: Commit) -> dict[str, AddFile]:
    out = dict(files)
    for path in commit.removes:
        out.pop(path, None)
    for add in commit.adds:
        out[add.path] = add
    return out


def _check_protocol(protocol: Protocol, name: str) -> None:
    if protocol.reader in _FEATURE_NAMES:
        unsupported(name, _FEATURE_NAMES[protocol.reader])
    if protocol.reader > 3:
        unsupported(name, f"reader version {protocol.reader}")
    for feature in sorted(protocol.reader_features - _READER_FEATURES):
        unsupported(name, feature)


def _check_partition(add: AddFile, metadata: Metadata) -> None:
    if set(add.partition) != set(metadata.partition_columns):
        raise Invalid(
            f"{short(add.path)} has partition values for {sorted(add.partition)}, "
            f"not the table's partition columns {list(metadata.partition_columns)}"
        )
    types = {f.name: f.type for f in metadata.schema}
    for column, value in add.partition.items():
        if column not in types:
            raise Invalid(f"partition column {column!r} is not in the schema")
        try:
            _delta_schema.partition_scalar(value, types[column])
        except ValueError:
            raise Invalid(f"partition value {column}={short(value)} is not a {types[column]}") from None


def _lines(data: bytes) -> list[dict[str, Any]]:
    if len(data) > _MAX_LINE:
        raise Invalid("it is too large")
    try:
        decoded = data.decode()
    except UnicodeDecodeError:
        raise Invalid("not UTF-8 text") from None
    actions = []
    for i, line in enumerate(decoded.splitlines()):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise Invalid(f"line {i + 1} is not JSON ({e})") from None
        actions.append(json_object(value, f"line {i + 1}"))
    if not actions:
        raise Invalid("it holds no action")
    return actions


def _commit(actions: list[dict[str, Any]], name: str, version: int) -> Commit:
    protocol = metadata = None
    adds: list[AddFile] = []
    removes: list[str] = []
    info: LakeletInfo | None = None
    timestamp = None
    for action in actions:
        if len(action) != 1:
            raise Invalid(f"an action holds {len(action)} keys, not one")
        ((kind, body),) = action.items()
        if kind == "protocol":
            protocol = _protocol(json_object(body, "protocol"))
        elif kind == "metaData":
            metadata = _metadata(json_object(body, "metaData"))
        elif kind == "add":
            adds.append(_add(json_object(body, "add")))
        elif kind == "remove":
            obj = json_object(body, "remove")
            removes.append(_path(obj.get("path"), "remove.path"))
        elif kind == "commitInfo":
            obj = json_object(body, "commitInfo")
            stamp = obj.get("timestamp")
            timestamp = stamp if type(stamp) is int else None
            if "lakelet" in obj:
                info = _info(obj["lakelet"], version)
        elif kind not in _IGNORED_ACTIONS:
            raise Invalid(f"unknown action {short(kind)}")
    if protocol is not None:
        _check_protocol(protocol, name)
    if info is not None and metadata is not None:
        delta_names = [f.name for f in metadata.schema]
        if [f.name for f in info.schema] != delta_names:
            raise Invalid("its Arrow schema and its Delta schema name different columns")
    return Commit(version, protocol, metadata, tuple(adds), tuple(removes), timestamp, info)


def _protocol(obj: dict[str, Any]) -> Protocol:
    reader = count(obj.get("minReaderVersion"), "protocol.minReaderVersion")
    writer = count(obj.get("minWriterVersion"), "protocol.minWriterVersion")
    return Protocol(
        reader,
        writer,
        _names(obj.get("readerFeatures", []), "protocol.readerFeatures"),
        _names(obj.get("writerFeatures", []), "protocol.writerFeatures"),
    )


def _names(value: Any, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and len(v) < 100 for v in value):
        raise Invalid(f"{where} is not a list of names")
    return frozenset(value)


def _metadata(obj: dict[str, Any]) -> Metadata:
    schema_string = obj.get("schemaString")
    if not isinstance(schema_string, str):
        raise Invalid("metaData.schemaString is not text")
    try:
        schema = _delta_schema.to_arrow(json.loads(schema_string))
    except (ValueError, RecursionError) as e:
        raise Invalid(f"metaData.schemaString is not a Delta schema ({e})") from None
    columns = obj.get("partitionColumns", [])
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise Invalid("metaData.partitionColumns is not a list of column names")
    missing = [c for c in columns if schema.get_field_index(c) < 0]
    if missing:
        raise Invalid(f"partition column {short(missing[0])} is not in the schema")
    configuration = json_object(obj.get("configuration", {}), "metaData.configuration")
    if not all(isinstance(v, str) for v in configuration.values()):
        raise Invalid("metaData.configuration holds a value that is not text")
    created = obj.get("createdTime")
    fmt = json_object(obj.get("format", {"provider": "parquet"}), "metaData.format")
    if fmt.get("provider") != "parquet":
        raise Invalid(f"the data files are {short(fmt.get('provider'))}, not parquet")
    return Metadata(
        text(obj.get("id"), "metaData.id"),
        schema_string,
        schema,
        tuple(columns),
        configuration,
        created if type(created) is int else None,
    )


def _stats_rows(stats: str | None, path: str) -> int | None:
    """The row count an ``add``'s stats JSON gives (``numRecords``), None if it gives none."""
    if stats is None:
        return None
    try:
        parsed = json.loads(stats)
    except (ValueError, RecursionError):
        raise Invalid(f"add.stats of {short(path)} is not JSON") from None
    if isinstance(parsed, dict) and "numRecords" in parsed:
        return count(parsed["numRecords"], "add.stats.numRecords")
    return None


def _add(obj: dict[str, Any]) -> AddFile:
    path = _path(obj.get("path"), "add.path")
    if obj.get("deletionVector") is not None:
        raise Invalid(f"{short(path)} has a deletion vector but the protocol names no such feature")
    values = json_object(obj.get("partitionValues", {}), "add.partitionValues")
    if not all(v is None or isinstance(v, str) for v in values.values()):
        raise Invalid(f"add.partitionValues of {short(path)} holds a value that is not text")
    stats = obj.get("stats")
    if stats is not None and not isinstance(stats, str):
        raise Invalid(f"add.stats of {short(path)} is not text")
    rows = _stats_rows(stats, path)
    tags = obj.get("tags") or {}
    digest = None
    if isinstance(tags, dict) and DIGEST_TAG in tags:
        digest = _digest(tags[DIGEST_TAG], path)
    stamp = obj.get("modificationTime", 0)
    return AddFile(
        path,
        values,
        count(obj.get("size"), "add.size"),
        rows,
        digest,
        count(stamp, "add.modificationTime"),
        stats,
    )


def _digest(value: Any, path: str) -> Digest:
    match = _DIGEST.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise Invalid(f"the digest of {short(path)} is not a digest but {short(value)}")
    named = _LAKELET_FILE.fullmatch(path.rsplit("/", 1)[-1])
    if named is None or named[1] != match[2][:32]:
        raise Invalid(f"{short(path)} is not named after its digest")
    return Digest(match[1], match[2])


def _path(value: Any, where: str) -> str:
    """A data file's path relative to the table folder, decoded; nothing that leaves it."""
    if not isinstance(value, str) or not value:
        raise Invalid(f"{where} is not a path but {short(value)}")
    if _SCHEME.match(value) or value.startswith("/"):
        raise Invalid(f"{where} {short(value)} names a path outside the table")
    path = unquote(value)
    problem = _path_problem(path)
    if problem:
        raise Invalid(f"{where} {short(value)} {problem}")
    return path


def _path_problem(path: str) -> str | None:
    problem = confinement_problem(path)
    if problem:
        return problem
    segments = path.split("/")
    if segments[0] == "_delta_log" or not segments[-1].endswith(".parquet"):
        return "is not a Parquet data file"
    return None


def _info(value: Any, version: int) -> LakeletInfo:
    obj = json_object(value, "commitInfo.lakelet")
    if obj.get("format") != LAKELET_INFO_FORMAT:
        raise Invalid(f"commitInfo.lakelet.format is {short(obj.get('format'))}, not {LAKELET_INFO_FORMAT}")
    if obj.get("version") != version + 1 or type(obj.get("version")) is not int:
        raise Invalid(f"commitInfo.lakelet names version {short(obj.get('version'))}")
    mode = obj.get("mode")
    if mode not in ("append", "overwrite", "merge"):
        raise Invalid(f"mode is not append, overwrite or merge but {short(mode)}")
    run_id = obj.get("run_id")
    write = json_object(obj.get("write"), "write")
    return LakeletInfo(
        version=version + 1,
        mode=str(mode),
        created_at=text(obj.get("created_at"), "created_at"),
        creator=text(obj.get("creator"), "creator"),
        schema=arrow_schema(obj.get("schema")),
        num_rows=count(obj.get("num_rows"), "num_rows"),
        stats={
            c: column_stats(_untagged(s), f"stats[{c!r}]")
            for c, s in json_object(obj.get("stats"), "stats").items()
        },
        write={
            "rows": count(write.get("rows"), "write.rows"),
            "files": count(write.get("files"), "write.files"),
        },
        run_id=None if run_id is None else text(run_id, "run_id"),
        lineage=json_object(obj.get("lineage", {}), "lineage"),
        meta=json_object(obj.get("meta", {}), "meta"),
    )


def quarantine_invalid(root: Path) -> list[str]:
    """``fsck``'s part: move every local commit file that does not parse to ``quarantine/``
    (the remote's copy, if good, is fetched again when next read); returns their keys."""
    folder = root / "datasets"
    bad = []
    for path in sorted(folder.glob("**/_delta_log/*.json")):
        name = path.parent.parent.relative_to(folder).as_posix()
        try:
            if not is_commit_file(path.name):
                continue  # not a commit: another writer's file, not lakelet's to judge
            parse_commit(path.read_bytes(), name, int(path.name[:20]))
        except UnsupportedFeatureError:
            continue  # a valid table lakelet cannot read: not damage
        except (CorruptRecordError, OSError):
            quarantine(root, path)
            bad.append(path.relative_to(root).as_posix())
    return bad


def _untagged(value: Any, depth: int = 0) -> Any:
    if isinstance(value, dict) and depth < 4:
        if value.keys() == {"float"} and value["float"] in ("nan", "inf", "-inf"):
            return float(value["float"])
        return {k: _untagged(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list) and depth < 4:  # a sample: mostly scalars, kept as they are
        if not set(map(type, value)) & {dict, list}:  # at C speed: 4,096 values a column
            return value
        return [_untagged(v, depth + 1) if isinstance(v, (dict, list)) else v for v in value]
    return value
