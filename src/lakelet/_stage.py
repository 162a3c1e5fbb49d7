"""``@lakelet.stage``: a function whose result is stored in the lake under a key of its code and inputs.

The key (SPEC §1) is a digest of: a format version; the stage's code identity
(``_codehash``) or its ``version=``; the content digests of its raw inputs;
the keys of its upstream stages; its parameters, canonically encoded; its
output format. A call first computes the key (cheap: no upstream runs), and
only on a miss loads its inputs, which runs the upstream stages that miss.

Each run binds two lake names, write-once like any other: the output
(``stages/<module>.<function>/<key>/output.<ext>`` unless ``name=`` says
otherwise) and the run record beside it (``…/<key>.json``), which holds the
lineage and is what a later call looks for. Two machines that run the same
key bind the same run record name: one wins, the other adopts its result.
After ``gc`` retires an expired run (``ttl=``), the key binds a new
generation of names (``_expiry``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import inspect
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import _lineage, _outputs
from ._codehash import CodeIdentity, code_identity, module_packages, qualified_name
from ._current import current_lake
from ._digest import DEFAULT_ALGORITHM
from ._environ import patched_environ
from ._errors import InvalidArgumentError, NameExistsError
from ._expiry import current_run_record, expiry_fields, is_run_record, stage_ttl
from ._file import File
from ._formats import Format, get_format, infer_format, is_jsonable, kind_of
from ._lake import Lake
from ._names import validate_name
from ._objects import hash_stream, new_temp_path

KEY_FORMAT = 1
_OPTIONS = {"cache", "format", "name", "version", "secrets", "ttl", "explain"}


@dataclass(frozen=True)
class Raw:
    """A raw input: the lake name ``ref`` if the lake has it, else the local path ``ref``."""

    ref: str


def raw(ref: str | os.PathLike[str]) -> Raw:
    return Raw(os.fspath(ref))


@dataclass
class _Resolved:
    """One input as the key sees it (an identity) and as the function gets it (a value)."""

    identity: dict[str, Any]
    load: Any  # () -> value passed to the function


@dataclass(frozen=True)
class _Key:
    """A call's cache key, what it is made of, and the decorator's inputs ready to load."""

    digest: str
    parts: dict[str, Any]
    inputs: dict[str, _Resolved]


@dataclass(frozen=True)
class Outcome:
    """What one call of a stage did: its result, whether the function ran, and why."""

    value: Any
    ran: bool
    why: str  # "" for a run unless the reason was asked for: finding it costs a listing


def _canonical_params(params: dict[str, Any], stage: str) -> str:
    try:
        return json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        bad = {k: type(v).__name__ for k, v in params.items() if not is_jsonable(v)}
        raise InvalidArgumentError(
            f"stage {stage}: parameters must be JSON-able values to enter the cache key; "
            f"got {bad} (pass files as lakelet.raw(...) or lakelet.File)"
        ) from None


@functools.cache
def _identity_of(func: Any) -> CodeIdentity:
    # Functions are immutable once defined: an edit means a new import and a new object.
    return code_identity(func)


_file_digests: dict[tuple[str, int, int, int], str] = {}


def _local_file_digest(path: Path) -> str:
    st = path.stat()
    fingerprint = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    digest = _file_digests.get(fingerprint)
    if digest is None:  # touching a file re-hashes it; only a content change changes the key
        with open(path, "rb") as f:
            digest = str(hash_stream(f, DEFAULT_ALGORITHM)[0])
        _file_digests[fingerprint] = digest
    return digest


class Stage:
    """A decorated function. Calling it returns its (possibly cached) result."""

    def __init__(self, func: Any, inputs: dict[str, Raw | Stage], options: dict[str, Any]) -> None:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise InvalidArgumentError(f"unknown stage options {sorted(unknown)}: use {sorted(_OPTIONS)}")
        self.func = func
        self.inputs = inputs
        self.options = options
        self.qualname = qualified_name(func)
        self.format: Format | None = get_format(options["format"]) if options.get("format") else None
        if options.get("name") is not None:
            validate_name(options["name"])
        self.ttl = stage_ttl(self.qualname, options)
        self._signature = inspect.signature(func)  # built once: key() runs on every call
        functools.update_wrapper(self, func)
        self.__lakelet_function__ = func

    def __repr__(self) -> str:
        return f"<lakelet.stage {self.qualname}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(current_lake(), args, kwargs)

    # the key

    def key(self, lake: Lake, args: tuple = (), kwargs: dict[str, Any] | None = None) -> tuple[str, dict]:
        """(key, parts): parts are what the key is made of, kept in the run record."""
        key = self._key(lake, args, kwargs or {})
        return key.digest, key.parts

    def _key(self, lake: Lake, args: tuple, kwargs: dict[str, Any]) -> _Key:
        params = self._params(args, kwargs)
        inputs = self._resolve(lake)
        identities = {arg: r.identity for arg, r in inputs.items()}
        for arg, value in list(params.items()):  # radops style: File arguments are inputs
            if isinstance(value, File):
                identities[arg] = {"name": value.name, "digest": value.digest}
                del params[arg]
        version = self.options.get("version")
        code = {"version": str(version)} if version is not None else _identity_of(self.func).parts
        parts = {
            "key_format": KEY_FORMAT,
            "stage": self.qualname,
            "code": code,
            "inputs": identities,
            "params": json.loads(_canonical_params(params, self.qualname)),
            "format": self.format.name if self.format else None,
        }
        blob = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
        return _Key(hashlib.sha256(blob).hexdigest(), parts, inputs)

    def _params(self, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            bound = self._signature.bind_partial(*args, **kwargs)
        except TypeError as e:
            raise InvalidArgumentError(f"stage {self.qualname}: {e}") from None
        clash = set(bound.arguments) & set(self.inputs)
        if clash:
            raise InvalidArgumentError(f"stage {self.qualname}: {sorted(clash)} are bound in the decorator")
        return dict(bound.arguments)

    def _resolve(self, lake: Lake) -> dict[str, _Resolved]:
        out = {}
        for arg, source in sorted(self.inputs.items()):
            if isinstance(source, Stage):
                key = source._key(lake, (), {})  # loading it reuses this key: computed once per call
                out[arg] = _Resolved({"stage": source.qualname, "key": key.digest},
                                     functools.partial(source._value, lake, key))
            elif isinstance(source, Raw):
                out[arg] = self._resolve_raw(lake, source)
            else:
                raise InvalidArgumentError(
                    f"stage {self.qualname}: input {arg!r} must be lakelet.raw(...) or another stage"
                )
        return out

    def _resolve_raw(self, lake: Lake, source: Raw) -> _Resolved:
        ref = source.ref
        if not os.path.isabs(ref):
            with contextlib.suppress(InvalidArgumentError):
                if lake.exists(validate_name(ref)):
                    f = lake.file(ref)
                    return _Resolved({"name": ref, "digest": f.digest}, lambda: str(f.path))
        path = Path(ref).expanduser().resolve()
        if not path.is_file():
            raise InvalidArgumentError(
                f"stage {self.qualname}: raw input {ref!r} is neither a lake name nor a local file"
            )
        return _Resolved({"path": str(path), "digest": _local_file_digest(path)}, lambda: str(path))

    # running

    def run(self, lake: Lake, args: tuple, kwargs: dict[str, Any]) -> Any:
        return self._call(lake, args, kwargs).value

    def _call(self, lake: Lake, args: tuple, kwargs: dict[str, Any], why: bool = False) -> Outcome:
        """Returns the result, whether the function ran, and why (for a run: only if ``why``)."""
        return self._outcome(lake, self._key(lake, args, kwargs), args, kwargs, why)

    def _value(self, lake: Lake, key: _Key) -> Any:
        return self._outcome(lake, key, (), {}, why=False).value

    def _outcome(self, lake: Lake, key: _Key, args: tuple, kwargs: dict[str, Any], why: bool) -> Outcome:
        cache = self.options.get("cache", True)
        record_name, found = current_run_record(lake, self.qualname, key.digest)  # the cache entry
        if cache and found is not None:
            return self._hit(lake, File(record_name, lake=lake, record=found), "cached")
        with _key_lock(lake, key.digest):  # one process per machine computes a key; the others reuse
            record_name, found = current_run_record(lake, self.qualname, key.digest)
            if cache and found is not None:
                return self._hit(lake, File(record_name, lake=lake, record=found),
                                 "computed meanwhile by another process")
            # before the run: afterwards its own record is the latest
            reason = self._why(lake, key.parts) if why or _explaining(self) else ""
            _log(self, "running", reason)
            return Outcome(self._execute(lake, key, record_name, args, kwargs), True, reason)

    def _hit(self, lake: Lake, run_record: File, reason: str) -> Outcome:
        _log(self, "skipped", reason)
        return Outcome(self._load(lake, run_record), False, reason)

    def _load(self, lake: Lake, run_record: File) -> Any:
        """The stored result of a run (which may be None: a hit is the record, not its value)."""
        returned = json.loads(run_record.read_bytes())["returned"]
        if returned["kind"] == "files":
            files = [lake.file(n) for n in returned["names"]]
            return files[0] if returned.get("single") else files
        if returned["kind"] == "path":
            return lake.file(returned["names"][0]).path
        path = lake.file(returned["names"][0]).path
        return get_format(returned["kind"]).load(path, returned.get("type", "python"))

    def _execute(self, lake: Lake, key: _Key, record_name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        parts = key.parts
        inputs = {arg: r.load() for arg, r in key.inputs.items()}
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        prefix = record_name.removesuffix(".json") + "/"  # the generation's folder
        secret_values = lake.secrets.values(list(self.options.get("secrets") or ()))
        with _outputs.collecting(prefix) as pending, _secret_environment(secret_values):
            value = self.func(*args, **kwargs, **inputs)  # an exception propagates; nothing is bound
        duration = time.perf_counter() - t0
        meta = {"stage": self.qualname, "run": record_name}
        expiry = expiry_fields(self.ttl)  # in the run record and the outputs: every machine knows
        if expiry:
            meta["expires_at"] = expiry["expires_at"]
        try:
            written = [lake._bind_output(tmp, name, meta) for name, tmp in pending.written.items()]
        finally:
            pending.discard()
        returned, outputs = self._store_returned(lake, value, prefix, meta)
        record = {
            "kind": "stage",
            "stage": self.qualname,
            "key": key.digest,
            "parts": parts,
            "returned": returned,
            "outputs": [{"name": f.name, "digest": f.digest} for f in _unique([*written, *outputs])],
            "inputs": parts["inputs"],
            "datasets_written": pending.datasets,
            "code_digest": _identity_of(self.func).digest,
            "code_source": _lineage.source_text(self.func),
            "source": _lineage.source_location(self.func),
            "environment": _lineage.environment(),
            "packages": module_packages(self.func) | {
                k.removeprefix("package:"): v for k, v in parts["code"].items() if k.startswith("package:")},
            "started_at": started.isoformat(),
            "ended_at": datetime.now(UTC).isoformat(),
            "duration_s": round(duration, 6),
            **expiry,
        }
        tmp = new_temp_path(lake.root / "tmp")
        try:
            tmp.write_bytes(json.dumps(record, sort_keys=True, indent=1).encode())
            with contextlib.suppress(NameExistsError):  # bound by another machine first: same key
                lake.add(tmp, record_name, move=True)
        finally:
            tmp.unlink(missing_ok=True)
        return value

    def _store_returned(
        self, lake: Lake, value: Any, prefix: str, meta: dict[str, str]
    ) -> tuple[dict, list[File]]:
        """Bind the return value; returns (how to load it back, the files it is)."""
        if isinstance(value, File):
            return {"kind": "files", "names": [value.name], "single": True}, [_bound(value)]
        if isinstance(value, list | tuple) and value and all(isinstance(v, File) for v in value):
            return {"kind": "files", "names": [v.name for v in value]}, [_bound(v) for v in value]
        if isinstance(value, Path) and self.format is None:
            name = self.options.get("name") or f"{prefix}{value.name}"
            f = lake._bind_output(value, name, meta, move=False)
            return {"kind": "path", "names": [f.name]}, [f]
        fmt = self.format or infer_format(value, self.qualname)
        name = self.options.get("name") or f"{prefix}output.{fmt.extension}"
        tmp = new_temp_path(lake.root / "tmp")
        try:
            fmt.dump(value, tmp)
            f = lake._bind_output(tmp, name, meta)
        except NameExistsError:
            if self.options.get("name"):
                raise
            # another machine ran this key first and its bytes differ (a non-deterministic
            # stage): its output is the one bound, ours is discarded
            f = lake.file(name)
        finally:
            tmp.unlink(missing_ok=True)
        return {"kind": fmt.name, "names": [f.name], "type": kind_of(value)}, [f]

    def _why(self, lake: Lake, parts: dict) -> str:
        """Which part of the key changed since the last run of this stage, if any ran."""
        previous = [f for f in lake.ls(f"stages/{self.qualname}/") if is_run_record(f.name)]
        if not previous:
            return "never ran"
        latest = max(previous, key=lambda f: f.record.created_at)
        old = json.loads(latest.read_bytes())["parts"]
        changed = []
        old_code, new_code = old.get("code", {}), parts["code"]
        for name in sorted(set(old_code) | set(new_code)):
            if old_code.get(name) != new_code.get(name):
                if name == self.qualname:
                    changed.append("code")
                elif name.startswith(("constant:", "package:")):
                    changed.append(name.replace(":", " ", 1))
                else:
                    changed.append(f"helper {name}")
        old_inputs, new_inputs = old.get("inputs", {}), parts["inputs"]
        for arg in sorted(set(old_inputs) | set(new_inputs)):
            if old_inputs.get(arg) != new_inputs.get(arg):
                stage = (new_inputs.get(arg) or {}).get("stage")
                changed.append(f"upstream {stage}" if stage else f"input {arg}")
        for section in ("params", "format"):
            if old.get(section) != parts.get(section):
                changed.append(section)
        return "changed: " + ", ".join(changed) if changed else "no previous run with this key"


class _Mask(logging.Filter):
    """Replaces secret values in log records while a stage that holds them runs."""

    def __init__(self, values: list[str]) -> None:
        super().__init__()
        self.values = sorted(values, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = message
        for value in self.values:
            masked = masked.replace(value, "***")
        if masked != message:
            record.msg, record.args = masked, None
        return True


@contextlib.contextmanager
def _secret_environment(values: dict[str, str]) -> Iterator[None]:
    """The stage's secrets in os.environ for its run only, with log records masked."""
    if not values:
        yield
        return
    mask = _Mask(list(values.values()))
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(mask)
    try:
        with patched_environ(values):
            yield
    finally:
        for handler in handlers:
            handler.removeFilter(mask)


def _bound(f: File) -> File:
    _ = f.digest  # NotFoundError if the stage returned a File it never wrote
    return f


def _unique(files: list[File]) -> list[File]:
    return list({f.name: f for f in files}.values())


def _explaining(stage: Stage) -> bool:
    return bool(stage.options.get("explain")) or os.environ.get("LAKELET_EXPLAIN", "") not in ("", "0")


_logger = logging.getLogger("lakelet.stage")


def _log(stage: Stage, what: str, why: str) -> None:
    _logger.info("%s %s", what, stage.qualname)
    if _explaining(stage):
        print(f"lakelet: {what} {stage.qualname} ({why})", file=sys.stderr)


@contextlib.contextmanager
def _key_lock(lake: Lake, key: str) -> Iterator[None]:
    locks = lake.root / "locks"
    locks.mkdir(exist_ok=True)
    fd = os.open(locks / f"{key[:40]}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def stage(func: Any = None, /, **options: Any) -> Any:
    """Decorate a function as a lakelet stage, with or without options.

    Keyword arguments that are ``lakelet.raw(...)`` or other stages bind inputs
    (LWDP style); the others are options: cache, format, name, version,
    secrets, ttl, explain.
    """
    inputs = {k: v for k, v in options.items() if isinstance(v, Raw | Stage)}
    settings = {k: v for k, v in options.items() if k not in inputs}

    def decorate(f: Any) -> Stage:
        return Stage(f, inputs, settings)

    return decorate(func) if func is not None else decorate
