"""Dataset manifests, lakelet's former format (datasets are Delta tables now: ``_delta_log``):
their value type, and the one validating parser ``_upgrade`` reads them through, whose small
checks the Delta commit parser shares.

A manifest is read back from the local lake or from the shared remote, where any
peer with write access may have written it, damaged or forged. ``parse`` takes
only what a writer of this format makes, so the code that uses a manifest never
meets a file path that leaves the dataset's folder (``..``, an absolute path, an
empty or NUL segment), a digest that is not one, a negative or oversized count, a
partition value that is not a string of its column's type, or a schema or
statistics it cannot use. A bad manifest raises ``CorruptRecordError`` naming
its key, and nothing is read from it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeGuard

import pyarrow as pa

from lakelet.core._digest import Digest
from lakelet.core.errors import CorruptRecordError
from lakelet.datasets._files import partition_value
from lakelet.datasets._stats import SAMPLE_SIZE

__all__ = [
    "MANIFEST_FORMAT",
    "Invalid",
    "arrow_schema",
    "column_stats",
    "confinement_problem",
    "count",
    "json_object",
    "json_value",
    "short",
    "text",
    "Manifest",
    "ManifestFile",
    "is_version_file",
    "manifest_key",
    "parse",
]

MANIFEST_FORMAT = 1
_MAX_COUNT = 2**63 - 1  # what an int64 holds (Arrow, Parquet, SQLite)
_MAX_TEXT = 1024
_MAX_PATH_BYTES = 4096
_MAX_SEGMENT_BYTES = 255
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_DATA_FILE = re.compile(r"part-([0-9a-f]{32})\.parquet")  # docs/datasets.md: named by content
# What the writer makes, in one match (the common case, fast for 10,000 files): folders
# "<column>=<value>" (so never "", "." or "..") without a control character or a backslash,
# then a data file. ``_path_problem`` says what is wrong with a path that does not match.
_SEGMENT_CHAR = r"[^/\\\x00-\x1f\x7f]"
_WRITTEN_PATH = re.compile(
    rf"(?:[^=/\\\x00-\x1f\x7f]{_SEGMENT_CHAR}*?={_SEGMENT_CHAR}*/)*part-[0-9a-f]{{32}}\.parquet"
)
# A digest as Digest.parse reads it, of the 256 bits both its algorithms give
_DIGEST = re.compile(r"(blake3|sha256):([0-9a-f]{64})")
_VERSION_FILE = re.compile(r"[0-9]{8,}\.json")
_MODES = ("append", "overwrite")


def manifest_key(name: str, version: int) -> str:
    """Where version ``version`` of dataset ``name`` is, under the lake root and the remote's."""
    return f"datasets/{name}/_manifests/{version:08d}.json"


def is_version_file(file_name: str) -> bool:
    """Whether a file in ``_manifests/`` is named as a version (``00000001.json``)."""
    return _VERSION_FILE.fullmatch(file_name) is not None


@dataclass(frozen=True, slots=True)
class ManifestFile:
    """One Parquet file of a version: its path under the dataset's folder (Hive folders, then a
    file named after its digest), digest, size, rows and partition values (its folders')."""

    relative: str
    digest: Digest
    size: int
    rows: int
    partition: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "relative": self.relative,
            "digest": str(self.digest),
            "size": self.size,
            "rows": self.rows,
            "partition": dict(self.partition),
        }


@dataclass(frozen=True, slots=True)
class Manifest:
    """One committed version of a dataset, as its writer made it."""

    dataset: str
    version: int
    parent: int | None
    mode: str
    created_at: str
    creator: str
    schema: pa.Schema
    files: tuple[ManifestFile, ...]
    num_rows: int
    stats: dict[str, dict[str, Any]]  # column -> count, nulls, min, max, sample (see _stats)
    write: dict[str, int]  # what this version's write added: rows, files
    meta: dict[str, Any] = field(default_factory=dict)  # the writer's own keys (write_dataset(meta=))

    @property
    def key(self) -> str:
        return manifest_key(self.dataset, self.version)

    def to_json(self) -> dict[str, Any]:
        serialized: bytes = self.schema.serialize().to_pybytes()
        return {
            "format": MANIFEST_FORMAT,
            "dataset": self.dataset,
            "version": self.version,
            "parent": self.parent,
            "mode": self.mode,
            "created_at": self.created_at,
            "creator": self.creator,
            "schema": serialized.hex(),
            "files": [f.to_json() for f in self.files],
            "num_rows": self.num_rows,
            "stats": self.stats,
            "write": dict(self.write),
        } | ({"meta": self.meta} if self.meta else {})

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()


class Invalid(Exception):
    """What is wrong and where; ``parse`` turns it into one CorruptRecordError."""


def parse(data: bytes, name: str, version: int, copy: str = "") -> Manifest:
    """Version ``version`` of dataset ``name`` from the bytes of its manifest; raises
    CorruptRecordError naming it (``copy``: which copy was read, for the message)."""
    key = manifest_key(name, version)
    try:
        return _manifest(json_value(data), name, version)
    except Invalid as e:
        older = f"; version {version - 1} and older can still be read" if version > 1 else ""
        where = f" ({copy})" if copy else ""
        raise CorruptRecordError(
            f"dataset {name!r} version {version}: invalid manifest {key}{where}: {e}{older}", record=key
        ) from None


# the parser: each helper checks one part and raises Invalid saying which


def short(value: Any) -> str:
    text = repr(value)  # repr: quoted, and one line whatever the value holds
    return text if len(text) <= 60 else text[:57] + "..."


def json_value(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise Invalid(f"not JSON ({e})") from None


def json_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"{where} is not an object but {short(value)}")
    return value


def count(value: Any, where: str) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_COUNT:  # not bool: type(True) is bool
        raise Invalid(f"{where} is not a count but {short(value)}")
    return value


def text(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > _MAX_TEXT or _CONTROL.search(value):
        raise Invalid(f"{where} is not a line of text but {short(value)}")
    return value


def _manifest(body: Any, name: str, version: int) -> Manifest:
    obj = json_object(body, "the manifest")
    fmt = obj.get("format")
    if type(fmt) is int and fmt > MANIFEST_FORMAT:
        raise Invalid(f"format {fmt} is newer than this lakelet reads ({MANIFEST_FORMAT}): upgrade lakelet")
    if fmt != MANIFEST_FORMAT or type(fmt) is not int:
        raise Invalid(f"format is {short(fmt)}, not {MANIFEST_FORMAT}")
    if obj.get("dataset") != name:
        raise Invalid(f"it names dataset {short(obj.get('dataset'))}")
    if obj.get("version") != version or type(obj.get("version")) is not int:
        raise Invalid(f"it names version {short(obj.get('version'))}")
    parent = obj.get("parent")
    if parent is not None and not (type(parent) is int and 1 <= parent < version):
        raise Invalid(f"parent is not an earlier version but {short(parent)}")
    mode = obj.get("mode")
    if not isinstance(mode, str) or mode not in _MODES:
        raise Invalid(f"mode is not append or overwrite but {short(mode)}")
    created_at = text(obj.get("created_at"), "created_at")
    try:
        datetime.fromisoformat(created_at)
    except ValueError:
        raise Invalid(f"created_at is not a time but {short(created_at)}") from None
    schema = arrow_schema(obj.get("schema"))
    return Manifest(
        dataset=name,
        version=version,
        parent=parent,
        mode=mode,
        created_at=created_at,
        creator=text(obj.get("creator"), "creator"),
        schema=schema,
        files=_files(obj.get("files"), schema),
        num_rows=count(obj.get("num_rows"), "num_rows"),
        stats={
            c: column_stats(s, f"stats[{c!r}]") for c, s in json_object(obj.get("stats"), "stats").items()
        },
        write=_write(obj.get("write")),
        meta=json_object(obj.get("meta", {}), "meta"),
    )


def arrow_schema(value: Any) -> pa.Schema:
    if not isinstance(value, str):
        raise Invalid(f"schema is not text but {short(value)}")
    try:
        return pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(value)))
    except (ValueError, pa.ArrowException):  # not hex, or not an Arrow schema
        raise Invalid("schema is not a serialized Arrow schema") from None


def _files(value: Any, schema: pa.Schema) -> tuple[ManifestFile, ...]:
    if not isinstance(value, list):
        raise Invalid(f"files is not a list but {short(value)}")
    # one path may be listed twice: appending the same rows again names the same file
    files = tuple(_file(entry, f"files[{i}]") for i, entry in enumerate(value))
    # A reader turns each partition value into its column's type to prune files; one that does
    # not convert would fail every read of the version. Checked once per distinct value.
    types = {f.name: f.type for f in schema}
    for column, raw in {(c, r) for f in files for c, r in f.partition.items() if c in types}:
        try:
            partition_value(raw, types[column])
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            raise Invalid(f"partition value {column}={short(raw)} is not a {types[column]}") from None
    return files


def _file(value: Any, where: str) -> ManifestFile:
    obj = json_object(value, where)
    relative = _relative(obj.get("relative"), f"{where}.relative")
    digest = _digest(obj.get("digest"), f"{where}.digest")
    named = relative.rsplit("/", 1)[-1].removeprefix("part-").removesuffix(".parquet")
    if digest.hexdigest[:32] != named:
        raise Invalid(f"{where}: {short(relative)} is not named after its digest")
    partition = json_object(obj.get("partition"), f"{where}.partition")
    if not all(isinstance(v, str) for v in partition.values()):
        raise Invalid(f"{where}.partition holds a value that is not a string: {short(partition)}")
    if partition != dict(s.split("=", 1) for s in relative.split("/")[:-1]):
        raise Invalid(f"{where}.partition {short(partition)} is not what its folders say")
    return ManifestFile(
        relative,
        digest,
        count(obj.get("size"), f"{where}.size"),
        count(obj.get("rows"), f"{where}.rows"),
        partition,
    )


def _relative(value: Any, where: str) -> str:
    """A path under the dataset's folder, as the writer makes one: ``<col>=<value>/`` folders,
    then ``part-<32 hex>.parquet``. Nothing else can name a place outside the folder (or a
    manifest inside it)."""
    if not isinstance(value, str) or not value:
        raise Invalid(f"{where} is not a path but {short(value)}")
    if _WRITTEN_PATH.fullmatch(value) and len(value.encode("utf-8", "surrogatepass")) <= _MAX_SEGMENT_BYTES:
        return value  # no segment can be too long either
    problem = _path_problem(value)
    if problem:
        raise Invalid(f"{where} {short(value)} {problem}")
    return value


def confinement_problem(path: str) -> str | None:
    """What stops ``path`` (relative, decoded) from naming a file under its folder, if
    anything: the checks every record path of a dataset goes through, whatever its format."""
    if len(path.encode("utf-8", "surrogatepass")) > _MAX_PATH_BYTES:
        return "is too long"
    if _CONTROL.search(path):
        return "holds NUL or a control character"
    if "\\" in path:
        return "holds a backslash"
    if path.startswith("/"):
        return "is an absolute path"
    segments = path.split("/")
    if any(s in ("", ".", "..") for s in segments):
        return "has an empty, '.' or '..' segment"
    if any(len(s.encode("utf-8", "surrogatepass")) > _MAX_SEGMENT_BYTES for s in segments):
        return "has a segment longer than a file name"
    return None


def _path_problem(path: str) -> str | None:
    problem = confinement_problem(path)
    if problem:
        return problem
    segments = path.split("/")
    if any(s.startswith("=") or "=" not in s for s in segments[:-1]):
        return "has a folder that is not <column>=<value>"
    if _DATA_FILE.fullmatch(segments[-1]) is None:
        return "does not end in a part-<digest>.parquet file"
    return None


def _digest(value: Any, where: str) -> Digest:
    match = _DIGEST.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise Invalid(f"{where} is not a digest but {short(value)}")
    return Digest(match[1], match[2])


_NUMBERS = frozenset({int, float})  # not bool


def _number(value: Any) -> TypeGuard[int | float]:
    return type(value) is int or type(value) is float  # not bool


def column_stats(value: Any, where: str) -> dict[str, Any]:
    """One column's statistics, with only the keys ``_stats`` reads, each of the type it reads."""
    obj = json_object(value, where)
    lo, hi = obj.get("min"), obj.get("max")
    for bound in (lo, hi):
        if not (bound is None or isinstance(bound, bool | int | float | str)):
            raise Invalid(f"{where}: min or max is not a value but {short(bound)}")
    out = {
        "type": text(obj.get("type"), f"{where}.type"),
        "count": count(obj.get("count"), f"{where}.count"),
        "nulls": count(obj.get("nulls"), f"{where}.nulls"),
        "min": lo,
        "max": hi,
    }
    if "sample" in obj:  # numeric columns: quantiles and a histogram between min and max
        sample = json_object(obj["sample"], f"{where}.sample")
        values = sample.get("values")
        # the types of 4,096 values at C speed: a call per value was most of opening a table
        if (
            not isinstance(values, list)
            or len(values) > SAMPLE_SIZE
            or not set(map(type, values)) <= _NUMBERS
        ):
            raise Invalid(f"{where}.sample.values is not a list of at most {SAMPLE_SIZE} numbers")
        if not ((lo is None and hi is None) or (_number(lo) and _number(hi) and lo <= hi)):
            raise Invalid(f"{where}: min and max are not an ordered pair of numbers")
        out["sample"] = {"seen": count(sample.get("seen"), f"{where}.sample.seen"), "values": values}
    return out


def _write(value: Any) -> dict[str, int]:
    obj = json_object(value, "write")
    return {"rows": count(obj.get("rows"), "write.rows"), "files": count(obj.get("files"), "write.files")}
