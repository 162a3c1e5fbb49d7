"""Run records (``stages/<stage>/<key>[-g<n>].json``): the one validating parser every reader uses.

A run record is an ordinary lake name, so anyone who can bind names (a peer with write
access to the remote, buggy or hostile) can bind it to any bytes. Before anything acts on
one — a stage loading its stored output, lineage, gc expiring runs — it goes through
``parse_run_record``: its size is bounded, every name is checked by the rules names are
bound by, every digest is parsed strictly, and its key must be the digest of its own parts
and the name it is bound under, so the output format it states is the one that key was made
with. A stage declared with no format never stores a pickle, so a record whose output kind
is ``pickle`` is refused unless its stage declared ``format="pickle"``: loading one runs code.

A refused record raises ``CorruptRecordError`` (one line). Where that must not make a key
fail for good, the reader treats the record as absent (``_run_lookup``, which finds a key's
records in a lake, reads and remembers them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from lakelet.core._digest import Digest
from lakelet.core._values import VALUE_KINDS
from lakelet.core.errors import CorruptRecordError
from lakelet.lake import _json_checks as check

__all__ = [
    "FORMATS",
    "INFERRED_FORMATS",
    "KEY_FORMAT",
    "MAX_RUN_RECORD_BYTES",
    "Output",
    "Returned",
    "RunRecord",
    "key_of",
    "output_kinds",
    "parse_run_record",
    "refused",
    "without_lineage",
]

KEY_FORMAT = 1  # bumped when the rules of the key change (stages._key)
MAX_RUN_RECORD_BYTES = 16 << 20  # parameters and source included: far more than any stage writes
# the names of stages._formats.FORMATS; a test keeps the two lists equal
FORMATS = ("parquet", "arrow", "csv", "npy", "json", "text", "bytes", "pickle")
# the formats a stage declared with none may store, in the order they are tried (a str is text, not
# json): never pickle, which only a stage that asks for it by name stores and loads
INFERRED_FORMATS = ("parquet", "npy", "bytes", "text", "json")

_KEY_HEX = 64  # a key is a SHA-256
_FILE_KINDS = ("files", "path")  # returned Files and Paths: bound as they are, in no format
_SOURCE_TEXT = 4 << 20  # characters of a stage's source kept in its record


# canonical JSON; one encoder for every key (json.dumps with options builds one per call)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def key_of(parts: Mapping[str, Any]) -> str:
    """The key a stage call's parts make: SHA-256 of their canonical JSON."""
    return hashlib.sha256(_CANONICAL.encode(parts).encode()).hexdigest()


def output_kinds(fmt: str | None) -> frozenset[str]:
    """The kinds of stored output a stage declared with ``format=fmt`` (None: none) writes."""
    known = _OUTPUT_KINDS.get(fmt)
    if known is not None:
        return known
    if fmt is None:  # a returned Path is ingested only when no format is declared
        return frozenset({*INFERRED_FORMATS, *_FILE_KINDS})
    return frozenset({fmt, "files"})  # a returned File is bound as it is, whatever the format


_OUTPUT_KINDS: dict[str | None, frozenset[str]] = {}  # made once: every cached call asks twice
_OUTPUT_KINDS.update({fmt: output_kinds(fmt) for fmt in (None, *FORMATS)})


@dataclass(frozen=True, slots=True)
class Returned:
    """How a run's return value is stored: in a format, as the Files it returned, or a Path."""

    kind: str  # a format's name, "files" or "path"
    names: tuple[str, ...]  # one, unless the stage returned a list of Files
    value_kind: str  # the library of the value (core._values.kind_of): what to load it back as
    single: bool  # "files": one File was returned, not a list


@dataclass(frozen=True, slots=True)
class Output:
    name: str
    digest: Digest


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run record that passed every check. ``lineage`` is its body as ``File.lineage()``
    returns it: the checked fields only (empty when parsed for a stage call, ``lineage=False``)."""

    name: str  # the lake name it is bound under
    stage: str  # module.qualname
    key: str
    format: str | None  # the format the stage declared (part of the key)
    returned: Returned
    outputs: tuple[Output, ...]
    inputs: dict[str, dict[str, str]]  # argument -> {name, digest} | {path, digest} | {stage, key}
    wrote_datasets: bool
    expires_at: datetime | None
    lineage: dict[str, Any]


def parse_run_record(data: bytes, name: str, lineage: bool = True) -> RunRecord:
    """The run record bound as ``name`` with content ``data``; raises CorruptRecordError.
    ``lineage=False``: every field is checked, but the record's ``lineage`` is left empty
    (a stage call reads the rest, and need not build it)."""
    try:
        return _parse(check.load_json(data, MAX_RUN_RECORD_BYTES, "run record"), name, lineage)
    except check.Invalid as e:
        raise refused(name, str(e)) from None


def without_lineage(run: RunRecord) -> RunRecord:
    """``run`` with its lineage left out (what ``parse_run_record(lineage=False)`` gives)."""
    return replace(run, lineage=_LEFT_OUT)


_LEFT_OUT: dict[str, Any] = {}  # a record's lineage left out (shared: nobody writes to it)


def refused(name: str, reason: str) -> CorruptRecordError:
    """The error refusing the run record ``name``, for ``reason``."""
    return CorruptRecordError(
        f"run record {name} is invalid: {reason} (damaged, or written by a buggy or hostile peer: "
        f"`lakelet rm --force {name}` removes it)",
        record=name,
    )


# the checks


def _parse(value: object, name: str, keep_lineage: bool) -> RunRecord:
    body = check.obj(value, "the record")
    if body.get("kind") != "stage":
        raise check.Invalid(f"its kind is {check.shown(body.get('kind'))}, not 'stage'")
    stage = check.segment(body.get("stage"), "stage")
    key = check.hex_text(body.get("key"), "key", _KEY_HEX)
    parts = _parts(body.get("parts"), stage, key)
    if not _bound_as(name, stage, key):
        raise check.Invalid(
            f"it is the record of {check.shown(stage)} key {key[:12]}…, bound under another name"
        )
    fmt = parts["format"]
    returned = _returned(body.get("returned"), fmt)
    outputs = tuple(_output(o, f"outputs[{i}]") for i, o in enumerate(_list(body.get("outputs"), "outputs")))
    missing = set(returned.names) - {o.name for o in outputs}
    if missing:
        raise check.Invalid(f"it returned {check.shown(sorted(missing))}, which are not among its outputs")
    if body.get("inputs") != parts["inputs"]:
        raise check.Invalid("its inputs are not those of its key")
    datasets = [
        _dataset(d, f"datasets_written[{i}]")
        for i, d in enumerate(_list(body.get("datasets_written", []), "datasets_written"))
    ]
    expires_at = None
    if "expires_at" in body or "ttl_s" in body:
        expires_at = check.timestamp(body.get("expires_at"), "expires_at")
        check.number(body.get("ttl_s"), "ttl_s")
    check.timestamp(body.get("started_at"), "started_at")
    check.timestamp(body.get("ended_at"), "ended_at")
    check.number(body.get("duration_s"), "duration_s")
    code_digest = check.line(body.get("code_digest"), "code_digest", 200)
    code_source = check.optional_text(body.get("code_source"), "code_source", _SOURCE_TEXT)
    source = _source(body.get("source"))
    environment = check.str_map(body.get("environment"), "environment")
    packages = _packages(body.get("packages"))
    lineage = _LEFT_OUT
    if keep_lineage:
        lineage = {
            "kind": "stage",
            "stage": stage,
            "key": key,
            "parts": parts,
            "returned": {"kind": returned.kind, "names": list(returned.names), "type": returned.value_kind}
            | ({"single": True} if returned.single else {}),
            "outputs": [{"name": o.name, "digest": str(o.digest)} for o in outputs],
            "inputs": parts["inputs"],
            "datasets_written": datasets,
            "code_digest": code_digest,
            "code_source": code_source,
            "source": source,
            "environment": environment,
            "packages": packages,
            "started_at": body["started_at"],
            "ended_at": body["ended_at"],
            "duration_s": body["duration_s"],
        }
        if expires_at is not None:
            lineage |= {"ttl_s": body["ttl_s"], "expires_at": body["expires_at"]}
    return RunRecord(
        name,
        stage,
        key,
        fmt,
        returned,
        outputs,
        parts["inputs"],
        bool(datasets),
        expires_at,
        lineage,
    )


def _bound_as(name: str, stage: str, key: str) -> bool:
    """Whether ``name`` is a generation of this stage's key: a record cannot stand in for another."""
    stem = f"stages/{stage}/{key[:40]}"
    if name == f"{stem}.json":
        return True
    generation = name.removeprefix(f"{stem}-g").removesuffix(".json")
    return name.startswith(f"{stem}-g") and name.endswith(".json") and generation.isdecimal()


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise check.Invalid(f"{where} is not a list: {check.shown(value)}")
    return value


def _parts(value: object, stage: str, key: str) -> dict[str, Any]:
    parts = check.obj(value, "parts")
    if parts.get("key_format") != KEY_FORMAT:
        raise check.Invalid(
            f"its key format is {check.shown(parts.get('key_format'))}, not {KEY_FORMAT}: "
            "written by another version of lakelet"
        )
    try:
        made = key_of(parts)
    except (TypeError, ValueError, RecursionError):
        raise check.Invalid("its parts cannot be encoded as a key is") from None
    if made != key:  # what binds the format (and all else below) to the key a stage looks up
        raise check.Invalid("its key is not the digest of its parts")
    if parts.get("stage") != stage:
        raise check.Invalid(f"its parts are those of stage {check.shown(parts.get('stage'))}")
    check.str_map(parts.get("code"), "parts.code")
    inputs = check.obj(parts.get("inputs"), "parts.inputs")
    for arg, identity in inputs.items():
        _identity(identity, f"input {check.shown(arg)}")
    fmt = parts.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise check.Invalid(f"its format {check.shown(fmt)} is unknown")
    return parts


def _identity(value: object, where: str) -> None:
    """An input as the key holds it: a lake name, a local file or an upstream stage's key."""
    identity = check.obj(value, where)
    if set(identity) == {"name", "digest"}:
        check.name(identity["name"], f"{where} name")
        check.digest(identity["digest"], f"{where} digest")
    elif set(identity) == {"path", "digest"}:  # the local file's path: a label, never opened
        check.line(identity["path"], f"{where} path")
        check.digest(identity["digest"], f"{where} digest")
    elif set(identity) == {"stage", "key"}:
        check.segment(identity["stage"], f"{where} stage")
        check.hex_text(identity["key"], f"{where} key", _KEY_HEX)
    else:
        raise check.Invalid(f"{where} is neither a name, a path nor a stage: {check.shown(identity)}")


def _returned(value: object, fmt: str | None) -> Returned:
    returned = check.obj(value, "returned")
    kind = returned.get("kind")
    if kind not in (*FORMATS, *_FILE_KINDS):
        raise check.Invalid(f"its output kind {check.shown(kind)} is unknown")
    if kind not in output_kinds(fmt):
        declared = f'format="{fmt}"' if fmt else "no format"
        runs_code = " (loading a pickle runs code)" if kind == "pickle" else ""
        raise check.Invalid(f"its output kind {kind!r} is not one a stage with {declared} stores{runs_code}")
    names = tuple(check.name(n, "returned.names") for n in _list(returned.get("names"), "returned.names"))
    if not names or (kind != "files" and len(names) != 1):
        raise check.Invalid(f"its output kind {kind!r} has {len(names)} names")
    value_kind = returned.get("type", "python")
    if value_kind not in VALUE_KINDS:
        raise check.Invalid(f"its value type {check.shown(value_kind)} is unknown")
    single = returned.get("single", False)
    if not isinstance(single, bool):
        raise check.Invalid(f"returned.single is not true or false: {check.shown(single)}")
    return Returned(kind, names, value_kind, single)


def _output(value: object, where: str) -> Output:
    output = check.obj(value, where)
    return Output(
        check.name(output.get("name"), f"{where}.name"), check.digest(output.get("digest"), f"{where}.digest")
    )


def _dataset(value: object, where: str) -> dict[str, Any]:
    written = check.obj(value, where)
    out: dict[str, Any] = {
        "dataset": check.name(written.get("dataset"), f"{where}.dataset"),
        "version": check.integer(written.get("version"), f"{where}.version", 1),
    }
    if written.get("rows") is not None:
        out["rows"] = check.integer(written["rows"], f"{where}.rows")
    return out


def _source(value: object) -> dict[str, Any]:
    source = check.obj(value, "source")
    line = source.get("line")
    if line is not None:
        check.integer(line, "source.line")
    out = {"file": check.optional_text(source.get("file"), "source.file", 4096), "line": line, "git": None}
    if source.get("git") is not None:
        out["git"] = _git(source["git"])
    return out


def _git(value: object) -> dict[str, Any]:
    git = check.obj(value, "source.git")
    out: dict[str, Any] = {
        "commit": check.optional_text(git.get("commit"), "source.git.commit", 200),
        "remote": check.optional_text(git.get("remote"), "source.git.remote", 4096),
        "path": check.optional_text(git.get("path"), "source.git.path", 4096),
        "dirty": git.get("dirty"),
    }
    if not isinstance(out["dirty"], bool):
        raise check.Invalid(f"source.git.dirty is not true or false: {check.shown(out['dirty'])}")
    url = git.get("url")
    if url is not None:
        # shown as a link: only the web addresses lakelet makes (stages._provenance), never a
        # javascript: or data: URL a peer chose
        if not check.line(url, "source.git.url").startswith(("https://", "http://")):
            raise check.Invalid(f"source.git.url is not an http(s) address: {check.shown(url)}")
        out["url"] = url
    return out


def _packages(value: object) -> dict[str, str]:
    packages = check.obj(value, "packages")
    for package, version in packages.items():
        check.text(version, f"packages[{check.shown(package)}]", 200)
    return packages
