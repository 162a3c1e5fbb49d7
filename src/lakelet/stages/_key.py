"""A stage call's cache key: what it is made of, and which part changed since the last run.

The key (SPEC §1) is a digest of: a format version; the stage's code identity
(``_codehash``) or its ``version=``; the content digests of its raw inputs and
``File`` arguments; the keys of its upstream stages; its parameters,
canonically encoded; its output format. Computing it runs nothing upstream.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakelet.core._digest import DEFAULT_ALGORITHM
from lakelet.core._names import validate_name
from lakelet.core.errors import CorruptRecordError, IntegrityError, InvalidArgumentError
from lakelet.facade._file import File
from lakelet.facade._lake import Lake
from lakelet.lake._expiry import is_run_record
from lakelet.lake._run_lookup import read_run_record
from lakelet.lake._run_record import KEY_FORMAT, key_of
from lakelet.stages._codehash import CodeIdentity, code_identity
from lakelet.stages._formats import is_jsonable
from lakelet.storage._objects import hash_stream

__all__ = [
    "KEY_FORMAT",
    "Key",
    "Raw",
    "Resolved",
    "identity_of",
    "make_key",
    "raw",
    "resolve_raw",
    "what_changed",
]


@dataclass(frozen=True)
class Raw:
    """A raw input: the lake name ``ref`` if the lake has it, else the local path ``ref``."""

    ref: str


def raw(ref: str | os.PathLike[str]) -> Raw:
    return Raw(os.fspath(ref))


@dataclass
class Resolved:
    """One input as the key sees it (an identity) and as the function gets it (a value)."""

    identity: dict[str, Any]
    load: Any  # () -> value passed to the function


@dataclass(frozen=True)
class Key:
    """A call's cache key, what it is made of, and the decorator's inputs ready to load."""

    digest: str
    parts: dict[str, Any]
    inputs: dict[str, Resolved]


@functools.cache
def identity_of(func: Any) -> CodeIdentity:
    # Functions are immutable once defined: an edit means a new import and a new object.
    return code_identity(func)


def make_key(
    stage: str, func: Any, version: Any, fmt: str | None, inputs: dict[str, Resolved], params: dict[str, Any]
) -> Key:
    """The key of one call; ``File`` values in ``params`` are inputs (radops style)."""
    identities = {arg: r.identity for arg, r in inputs.items()}
    params = dict(params)
    for arg, value in list(params.items()):
        if isinstance(value, File):
            identities[arg] = {"name": value.name, "digest": value.digest}
            del params[arg]
        else:
            params[arg] = _files_as_inputs(value, arg, identities)
    parts = {
        "key_format": KEY_FORMAT,
        "stage": stage,
        "code": {"version": str(version)} if version is not None else identity_of(func).parts,
        "inputs": identities,
        "params": json.loads(_canonical_params(params, stage)),
        "format": fmt,
    }
    return Key(key_of(parts), parts, inputs)


def _files_as_inputs(value: Any, label: str, identities: dict[str, Any], depth: int = 0) -> Any:
    """``value`` with each ``File`` in its lists, tuples and dicts replaced by the label of an
    input (``files[0]``, ``by_day["mon"]``) that holds its name and digest: the key covers every
    file's content, and gc and lineage see what the run read."""
    if isinstance(value, File):
        identities[label] = {"name": value.name, "digest": value.digest}
        return {"lakelet.File": label}
    if depth > 20:  # deeper is left to the JSON encoder, which refuses what it cannot encode
        return value
    if isinstance(value, list | tuple):
        return [_files_as_inputs(v, f"{label}[{i}]", identities, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {
            k: _files_as_inputs(v, f"{label}[{json.dumps(k)}]", identities, depth + 1)
            for k, v in value.items()
        }
    return value


_PARAMS = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)  # built once


def _canonical_params(params: dict[str, Any], stage: str) -> str:
    try:
        return _PARAMS.encode(params)
    except (TypeError, ValueError):
        bad = {k: type(v).__name__ for k, v in params.items() if not is_jsonable(v)}
        raise InvalidArgumentError(
            f"stage {stage}: parameters must be JSON-able values, lakelet.File, or lists, tuples "
            f"and dicts of them to enter the cache key; got {bad} (pass local files as "
            "lakelet.raw(...) or add them to the lake)"
        ) from None


def resolve_raw(lake: Lake, source: Raw, stage: str) -> Resolved:
    ref = source.ref
    if not os.path.isabs(ref):
        with contextlib.suppress(InvalidArgumentError):
            if lake.exists(validate_name(ref)):
                f = lake.file(ref)
                return Resolved({"name": ref, "digest": f.digest}, lambda: str(f.path))
    path = Path(ref).expanduser().resolve()
    if not path.is_file():
        raise InvalidArgumentError(
            f"stage {stage}: raw input {ref!r} is neither a lake name nor a local file"
        )
    return Resolved({"path": str(path), "digest": _local_file_digest(path)}, lambda: str(path))


# keyed as git keys its index: an edit in place that puts the size and mtime back still
# changes the ctime (which no call can set)
_file_digests: dict[tuple[str, int, int, int, int], str] = {}


def _local_file_digest(path: Path) -> str:
    st = path.stat()
    fingerprint = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    digest = _file_digests.get(fingerprint)
    if digest is None:  # touching a file re-hashes it; only a content change changes the key
        with open(path, "rb") as f:
            digest = str(hash_stream(f, DEFAULT_ALGORITHM)[0])
        _file_digests[fingerprint] = digest
    return digest


def what_changed(lake: Lake, stage: str, parts: dict[str, Any]) -> str:
    """Which part of the key changed since the last run of ``stage``, if any ran."""
    previous = [f for f in lake.ls(f"stages/{stage}/") if is_run_record(f.name)]
    old = None
    for f in sorted(previous, key=lambda f: f.record.created_at, reverse=True):
        # a refused record is not a previous run (the call that looks it up reports it)
        with contextlib.suppress(CorruptRecordError, IntegrityError):
            old = read_run_record(lake.context, f.record).lineage["parts"]
            break
    if old is None:
        return "never ran"
    changed = []
    old_code, new_code = old.get("code", {}), parts["code"]
    for name in sorted(set(old_code) | set(new_code)):
        if old_code.get(name) != new_code.get(name):
            if name == stage:
                changed.append("code")
            elif name.startswith(("constant:", "package:", "object:")):
                changed.append(name.replace(":", " ", 1))
            else:
                changed.append(f"helper {name}")
    old_inputs, new_inputs = old.get("inputs", {}), parts["inputs"]
    for arg in sorted(set(old_inputs) | set(new_inputs)):
        if old_inputs.get(arg) != new_inputs.get(arg):
            upstream = (new_inputs.get(arg) or {}).get("stage")
            changed.append(f"upstream {upstream}" if upstream else f"input {arg}")
    for section in ("params", "format"):
        if old.get(section) != parts.get(section):
            changed.append(section)
    return "changed: " + ", ".join(changed) if changed else "no previous run with this key"
