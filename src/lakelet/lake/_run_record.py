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
fail for good, the reader treats the record as absent and says so in one warning on the
``lakelet.records`` logger: ``current_run`` passes over it to the key's next generation, where
the stage runs again; lineage and gc leave it out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lakelet.core._digest import Digest
from lakelet.core._values import VALUE_KINDS
from lakelet.core.errors import CorruptRecordError, IntegrityError, LakeletError
from lakelet.lake import _json_checks as check
from lakelet.lake._expiry import is_run_record, record_name
from lakelet.storage._refs import NameRecord
from lakelet.storage._scopes import LAKE

if TYPE_CHECKING:
    from lakelet.lake._context import LakeContext

__all__ = [
    "FORMATS",
    "INFERRED_FORMATS",
    "KEY_FORMAT",
    "MAX_RUN_RECORD_BYTES",
    "Output",
    "Returned",
    "RunRecord",
    "current_run",
    "current_runs",
    "ignore",
    "key_names",
    "key_of",
    "output_kinds",
    "parse_run_record",
    "read_run_cached",
    "read_run_record",
    "remember_run",
    "run_records",
]

KEY_FORMAT = 1  # bumped when the rules of the key change (stages._key)
MAX_RUN_RECORD_BYTES = 16 << 20  # parameters and source included: far more than any stage writes
# the names of stages._formats.FORMATS; a test keeps the two lists equal
FORMATS = ("parquet", "arrow", "csv", "npy", "json", "text", "bytes", "pickle")
# the formats a stage declared with none may store, in the order they are tried (a str is text, not
# json): never pickle, which only a stage that asks for it by name stores and loads
INFERRED_FORMATS = ("parquet", "npy", "bytes", "text", "json")

_logger = logging.getLogger("lakelet.records")
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
        raise _refused(name, str(e)) from None


def read_run_record(context: LakeContext, record: NameRecord, lineage: bool = True) -> RunRecord:
    """The content of the run record ``record``, parsed (``parse_run_record``); raises
    CorruptRecordError, and what reading any name raises (NotFoundError, IntegrityError,
    RemoteError)."""
    if not is_run_record(record.name):
        raise _refused(record.name, "its name is not a run record's (stages/<stage>/<key>.json)")
    if record.size > MAX_RUN_RECORD_BYTES:  # its size is checked on open: no need to fetch it
        raise _refused(record.name, f"it is more than {MAX_RUN_RECORD_BYTES >> 20} MiB")
    return parse_run_record(context.read(record), record.name, lineage)


def current_run(
    context: LakeContext,
    stage: str,
    key: str,
    passed: Collection[str] = (),
    known: Mapping[str, NameRecord] | None = None,
) -> tuple[str, RunRecord | None]:
    """(the run record name ``key`` binds now, its record, or None when the key is not cached).

    Passes over the generations gc retired (their tombstones stay as lineage), those whose
    record is refused (each reported in one warning) and those named in ``passed`` (refused by
    the caller): a run of the key binds the next generation, so no record fails a key for good.
    ``known``: the key's names as ``key_names`` found them (a name not there is looked up).
    """
    generation = 1
    while True:
        name = record_name(stage, key, generation)
        found = known.get(name) if known else None
        if found is None:
            found = context.lookup(LAKE, name)
        if found is None:
            return name, None
        if found.removed_at is None and name not in passed:
            try:
                return name, read_run_cached(context, found)
            except (CorruptRecordError, IntegrityError) as e:  # the bytes, not the network
                ignore(context, e, "the stage runs again")
        generation += 1


def key_names(context: LakeContext, stage: str, key: str) -> dict[str, NameRecord]:
    """The records the index holds of every name of ``key``'s runs (each generation's run record
    and the outputs under it, removed ones too), by name: one range of the index, where a cached
    call looked its record and then its output up apart."""
    return context.catalog.few_records(LAKE, record_name(stage, key).removesuffix(".json"))


def current_runs(
    context: LakeContext, stage: str, keys: Collection[str], remember: bool = True
) -> dict[str, tuple[str, RunRecord | None]]:
    """``current_run`` of each of ``keys``, by key: their first generations are looked up
    together (``LakeContext.lookup_many``: one query, and the remote's log read once, where a
    map's 10,000 items paid a query each, and each new one a read of the log); a key whose first
    generation is there but removed or refused goes on through ``current_run``. ``remember``:
    as ``read_run_cached``'s."""
    names = {record_name(stage, key): key for key in keys}
    known = context.lookup_many(LAKE, names)
    out: dict[str, tuple[str, RunRecord | None]] = {}
    for name, key in names.items():
        found = known.get(name)
        if found is None:  # no generation: the key was never run
            out[key] = (name, None)
            continue
        if found.removed_at is None:
            with contextlib.suppress(CorruptRecordError, IntegrityError):  # current_run reports it
                out[key] = (name, read_run_cached(context, found, remember))
                continue
        out[key] = current_run(context, stage, key)
    return out


_parsed: dict[tuple[str, str, str], RunRecord] = {}  # (root, name, digest) -> its record, parsed
_LEFT_OUT: dict[str, Any] = {}  # the lineage of a remembered record (shared: nobody writes to it)
_PARSED_MAX = 1 << 14


def read_run_cached(context: LakeContext, found: NameRecord, remember: bool = True) -> RunRecord:
    """``read_run_record``, remembered by the record's name and digest: its bytes are immutable,
    so a cached call (one lookup per call, 10,000 calls in a map) need not open, verify and
    parse them again. Only for stage calls, which read the record and never hand it out: its
    ``lineage`` is left out (empty), which is most of a record and which no call reads, so
    what a process remembers does not grow by a whole record per item (``read_run_record``
    returns it whole). ``remember=False``: a record already remembered is used, a new one is
    not kept (a map, which holds no more than a window of items)."""
    key = (str(context.root), found.name, found.digest)
    run = _parsed.get(key)
    if run is None:
        run = read_run_record(context, found, lineage=False)
        if remember:
            _remember(key, run)
    return run


def remember_run(context: LakeContext, found: NameRecord, run: RunRecord) -> RunRecord:
    """Remember ``run`` as the parsed content of the record ``found`` (this process just bound
    it: the writer parsed those very bytes before binding them, ``Stage.check_record``, so the
    first cached call need not read them back and parse them a second time); returns what is
    remembered: ``run`` without its lineage."""
    return _remember((str(context.root), found.name, found.digest), replace(run, lineage=_LEFT_OUT))


def _remember(key: tuple[str, str, str], run: RunRecord) -> RunRecord:
    if len(_parsed) >= _PARSED_MAX:
        _parsed.clear()
    _parsed[key] = run
    return run


def run_records(context: LakeContext) -> list[RunRecord]:
    """Every live run record this lake knows that passes the checks; the others are reported
    (one warning each) and left out."""
    out = []
    for found in context.run_records():
        try:
            out.append(read_run_record(context, found))
        except (CorruptRecordError, IntegrityError) as e:
            ignore(context, e, "left out")
    return out


def ignore(context: LakeContext, error: LakeletError, then: str) -> None:
    """Report a record left aside: one line on the ``lakelet.records`` logger, once per process
    and lake (a stage called in a loop would repeat it at every call)."""
    seen = (str(context.root), str(error))
    if seen not in _reported:
        _reported.add(seen)
        _logger.warning("%s; %s", error, then)


_reported: set[tuple[str, str]] = set()  # (lake root, message) of the records reported so far


def _refused(name: str, reason: str) -> CorruptRecordError:
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
