"""The actions of a Delta Lake commit as lakelet holds them (protocol, metaData, add, remove,
lakelet's commitInfo), the table they make (``Snapshot``), where the log's files are, and
the bytes of a commit lakelet writes. Reading them back is ``_delta_log``'s."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pyarrow as pa

from lakelet.core._digest import Digest
from lakelet.core.errors import UnsupportedFeatureError

__all__ = [
    "DIGEST_TAG",
    "LAKELET_INFO_FORMAT",
    "AddFile",
    "Commit",
    "LakeletInfo",
    "Metadata",
    "Protocol",
    "Snapshot",
    "checkpoint_key",
    "commit_key",
    "encode_commit",
    "encode_path",
    "is_commit_file",
    "last_checkpoint_key",
    "unsupported",
]


LAKELET_INFO_FORMAT = 1
_COMMIT_FILE = re.compile(r"[0-9]{20}\.json")
DIGEST_TAG = "lakelet.digest"
# What lakelet writes on top of (writer 2, or 7 with these features); reading is _delta_log's
_WRITER_FEATURES = frozenset({"timestampNtz", "appendOnly", "invariants"})


def commit_key(name: str, version: int) -> str:
    """Where Delta version ``version`` of dataset ``name`` is committed (lake root and remote)."""
    return f"datasets/{name}/_delta_log/{version:020d}.json"


def checkpoint_key(name: str, version: int) -> str:
    return f"datasets/{name}/_delta_log/{version:020d}.checkpoint.parquet"


def last_checkpoint_key(name: str) -> str:
    return f"datasets/{name}/_delta_log/_last_checkpoint"


def is_commit_file(file_name: str) -> bool:
    return _COMMIT_FILE.fullmatch(file_name) is not None


@dataclass(frozen=True, slots=True)
class Protocol:
    reader: int
    writer: int
    reader_features: frozenset[str] = frozenset()
    writer_features: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"minReaderVersion": self.reader, "minWriterVersion": self.writer}
        if self.reader >= 3:
            out["readerFeatures"] = sorted(self.reader_features)
        if self.writer >= 7:
            out["writerFeatures"] = sorted(self.writer_features)
        return out

    def check_writable(self, name: str) -> None:
        """UnsupportedFeatureError unless lakelet may add a commit to a table of this protocol."""
        if self.writer > 2 and self.writer != 7:
            unsupported(name, f"writer version {self.writer}")
        for feature in sorted(self.writer_features - _WRITER_FEATURES):
            unsupported(name, feature)


@dataclass(frozen=True, slots=True)
class Metadata:
    id: str
    schema_string: str
    schema: pa.Schema  # as Delta types say (lakelet's own commits also keep the exact Arrow one)
    partition_columns: tuple[str, ...]
    configuration: dict[str, str]
    created_time: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "format": {"provider": "parquet", "options": {}},
            "schemaString": self.schema_string,
            "partitionColumns": list(self.partition_columns),
            "configuration": dict(self.configuration),
            "createdTime": self.created_time,
        }


@dataclass(frozen=True, slots=True)
class AddFile:
    """One data file of a version: its path under the table folder as stored (not URL-encoded),
    partition values as the log spells them, size, rows (when its stats say), digest (lakelet's)."""

    path: str
    partition: dict[str, str | None]
    size: int
    rows: int | None
    digest: Digest | None
    modification_time: int
    stats: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": encode_path(self.path),
            "partitionValues": dict(self.partition),
            "size": self.size,
            "modificationTime": self.modification_time,
            "dataChange": True,
        }
        if self.stats is not None:
            out["stats"] = self.stats
        if self.digest is not None:
            out["tags"] = {DIGEST_TAG: str(self.digest)}
        return out

    def remove_json(self, when: int) -> dict[str, Any]:
        return {
            "path": encode_path(self.path),
            "deletionTimestamp": when,
            "dataChange": True,
            "extendedFileMetadata": True,
            "partitionValues": dict(self.partition),
            "size": self.size,
        }


@dataclass(frozen=True, slots=True)
class LakeletInfo:
    """What lakelet keeps in ``commitInfo.lakelet``, where Delta readers ignore it: the exact
    Arrow schema, cumulative column statistics (histograms and quantiles come from their
    samples), who wrote the version, in which run, and its lineage."""

    version: int
    mode: str
    created_at: str
    creator: str
    schema: pa.Schema
    num_rows: int
    stats: dict[str, dict[str, Any]]
    write: dict[str, int]
    run_id: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # the writer's own keys (write_dataset(meta=))

    def to_json(self) -> dict[str, Any]:
        serialized: bytes = self.schema.serialize().to_pybytes()
        return {
            "format": LAKELET_INFO_FORMAT,
            "version": self.version,
            "mode": self.mode,
            "created_at": self.created_at,
            "creator": self.creator,
            "schema": serialized.hex(),
            "num_rows": self.num_rows,
            "stats": _tagged(self.stats),
            "write": dict(self.write),
            "run_id": self.run_id,
            "lineage": self.lineage,
            **({"meta": self.meta} if self.meta else {}),
        }


@dataclass(frozen=True, slots=True)
class Commit:
    version: int  # Delta's
    protocol: Protocol | None
    metadata: Metadata | None
    adds: tuple[AddFile, ...]
    removes: tuple[str, ...]
    timestamp: int | None
    info: LakeletInfo | None  # None: a commit another Delta writer made


class Files(Mapping[str, AddFile]):
    """A version's files by path, built on first use. Opening a table of 10,000 files to read
    its row count or one partition need not build 10,000 ``AddFile``s: the checks that refuse
    a row (paths, sizes, partitions, digests) ran when the checkpoint was read; what ``build``
    still does (each file's stats JSON for its row count) raises CorruptRecordError then."""

    _MAX_DEPTH = 32

    def __init__(
        self, build: Callable[[], dict[str, AddFile]], on: Mapping[str, AddFile] | None = None
    ) -> None:
        """``on``: the files ``build`` starts from. A writer's commits, each on the one before,
        would chain unbuilt ``Files`` without end (and build them recursively): past a few
        dozen, ``on`` is built first."""
        self._build: Callable[[], dict[str, AddFile]] | None = build
        self._files: dict[str, AddFile] | None = None
        self.depth: int = 1 + (on.depth if isinstance(on, Files) else 0)  # unbuilt ones, itself too
        if self.depth > self._MAX_DEPTH:
            len(on or {})  # builds it
            self.depth = 1

    def _built(self) -> dict[str, AddFile]:
        files = self._files
        if files is None:
            build = self._build
            if build is None:  # another thread built it meanwhile
                return self._built()
            files = build()  # two threads may both build it: the same files, no lock needed
            self._files = files
            self._build = None  # and the table before it, which it held, is let go
            self.depth = 0
        return files

    def __getitem__(self, path: str) -> AddFile:
        return self._built()[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._built())


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A table at one version: what a reader of that version sees."""

    version: int
    protocol: Protocol
    metadata: Metadata
    files: Mapping[str, AddFile]  # by path, in the order they were added
    info: LakeletInfo | None  # of the commit that made this version, if lakelet's
    timestamp: int | None = None


def encode_commit(
    protocol: Protocol | None,
    metadata: Metadata | None,
    adds: list[AddFile],
    removes: list[AddFile],
    info: LakeletInfo,
    when: int,
    engine: str,
    partition_by: list[str],
) -> bytes:
    """A commit file's bytes: protocol, metaData, add, remove, commitInfo, one per line."""
    lines: list[dict[str, Any]] = [
        {
            "commitInfo": {
                "timestamp": when,
                "operation": "WRITE",
                "operationParameters": {
                    "mode": "Overwrite" if info.mode == "overwrite" else "Append",
                    "partitionBy": json.dumps(partition_by),
                },
                "engineInfo": engine,
                "clientVersion": engine,
                "isBlindAppend": info.mode == "append",
                "lakelet": info.to_json(),
            }
        }
    ]
    if protocol is not None:
        lines.append({"protocol": protocol.to_json()})
    if metadata is not None:
        lines.append({"metaData": metadata.to_json()})
    lines += [{"add": a.to_json()} for a in adds]
    lines += [{"remove": r.remove_json(when)} for r in removes]
    return "\n".join(json.dumps(line, separators=(",", ":"), allow_nan=False) for line in lines).encode()


def encode_path(path: str) -> str:
    return quote(path, safe="/=-_.~!$&'()*+,;@")


def _tagged(value: Any) -> Any:
    """Statistics with every non-finite float as ``{"float": "nan"}``: JSON has no NaN or
    infinity, and a Delta reader refuses a commit file that holds one."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": str(value)}
    if isinstance(value, dict):
        return {k: _tagged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tagged(v) for v in value]
    return value


def unsupported(name: str, feature: str) -> None:
    raise UnsupportedFeatureError(
        f"dataset {name!r} is a Delta table using {feature}, which lakelet does not support: "
        "read it with deltalake or Spark",
        feature=feature,
    )
