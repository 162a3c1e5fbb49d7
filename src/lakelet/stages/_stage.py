"""``@lakelet.stage``: a function whose result is stored in the lake under a key of its code and inputs.

A call first computes the key (``_stage_key``: cheap, no upstream runs), and
only on a miss loads its inputs, which runs the upstream stages that miss.

Each run binds its outputs, write-once like any other lake name, and its run
record (``…/<key>.json``, which holds the lineage and is what a later call looks
for) all in one segment (all or none: ``_commit``): the files it wrote and its return
value (``stages/<module>.<function>/<key>/output.<ext>`` unless ``name=`` says
otherwise). A run killed before that binds nothing. Two machines that run the same
key bind the same run record name: one wins, the other adopts its result (its
outputs bound first, then its record: ``Stage.commit_alone``).
After ``gc`` retires an expired run (``ttl=``), the key binds a new
generation of names (``_expiry``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lakelet.core._config import ask_user_ahead
from lakelet.core._digest import Digest, digest_bytes
from lakelet.core._meta import check_user_meta
from lakelet.core._names import validate_name
from lakelet.core._values import kind_of
from lakelet.core.errors import (
    CorruptRecordError,
    InvalidArgumentError,
    NameExistsError,
    NotFoundError,
    RemoteError,
)
from lakelet.facade._current import current_lake
from lakelet.facade._file import File
from lakelet.facade._lake import Lake
from lakelet.facade._progress_bar import ProgressOption
from lakelet.lake import _pending
from lakelet.lake._add import bind_outputs
from lakelet.lake._expiry import expiry_fields, stage_ttl
from lakelet.lake._expiry import record_name as generation_name
from lakelet.lake._run_lookup import current_run, ignore
from lakelet.lake._run_record import (
    MAX_RUN_RECORD_BYTES,
    RunRecord,
    output_kinds,
    parse_run_record,
)
from lakelet.stages import _loaded, _provenance
from lakelet.stages._codehash import module_packages, qualified_name
from lakelet.stages._commit import Computed, Ran, commit, remember_bound
from lakelet.stages._formats import Format, choose_format, dump, get_format
from lakelet.stages._key import Key, Raw, Resolved, identity_of, make_key, resolve_raw, what_changed
from lakelet.stages._secret_env import secret_environment
from lakelet.storage._objects import hash_file
from lakelet.storage._refs import NameRecord
from lakelet.storage._scopes import LAKE

__all__ = ["MAPPER", "Outcome", "Stage", "stage"]

# Stage.map runs on lakelet.run's executors, a layer above: lakelet.runner fills this in
MAPPER: Callable[[Stage, tuple[Any, ...], Any, int | None, ProgressOption], list[Any]] | None = None

_OPTIONS = {"cache", "format", "name", "version", "secrets", "ttl", "explain", "meta"}
_Args = tuple[Any, ...]  # the positional arguments of a call


@dataclass(frozen=True)
class Outcome:
    """What one call of a stage did: its result, whether the function ran, and why."""

    value: Any
    ran: bool
    why: str  # "" for a run unless the reason was asked for: finding it costs a listing
    key: str  # whose run record holds the result
    record: str = ""  # the name of that run record


class Stage:
    """A decorated function. Calling it returns its (possibly cached) result."""

    def __init__(self, func: Any, inputs: dict[str, Raw | Stage], options: dict[str, Any]) -> None:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise InvalidArgumentError(_unknown_options(func, {k: options[k] for k in sorted(unknown)}))
        self.func = func
        self.inputs = inputs
        self.options = options
        self.qualname = qualified_name(func)
        self.format: Format | None = get_format(options["format"]) if options.get("format") else None
        if options.get("name") is not None:
            options["name"] = validate_name(options["name"])
        self.ttl = stage_ttl(self.qualname, options)
        self.meta = check_user_meta(options.get("meta"))  # the user's keys on every output; not in the key
        self._signature = inspect.signature(func)  # built once: key() runs on every call
        self._positional = _leading_positional(self._signature)
        functools.update_wrapper(self, func)
        self.__lakelet_function__ = func
        ask_user_ahead()  # the first call records who ran it: git's answer is ready by then
        _provenance.ask_git_ahead(func)  # and its commit

    def __repr__(self) -> str:
        return f"<lakelet.stage {self.qualname}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(current_lake(), args, kwargs)

    def map(
        self,
        *iterables: Any,
        executor: Any = None,
        max_workers: int | None = None,
        progress: ProgressOption = None,
    ) -> list[Any]:
        """Call the stage once per item (several iterables zip into positional arguments, as the
        builtin ``map``), each keyed as ``stage(*item)`` is; returns the results in input order.

        ``executor``: as ``lakelet.run``'s. ``progress``: one bar of items when a person
        watches (None, the default), none (False), always (True), or a Progress told the number
        of items (``add_total``) and advanced by one as each is done. Items that fail do not stop the
        others, which are kept; then raises RunError naming the failed items (``.failures``:
        their tracebacks, by ``module.qualname[index]``).
        """
        if MAPPER is None:  # filled when lakelet.runner is imported, as `import lakelet` does
            raise InvalidArgumentError("Stage.map needs lakelet.runner: import lakelet")
        return MAPPER(self, iterables, executor, max_workers, progress)

    # the key

    def key(
        self, lake: Lake, args: _Args = (), kwargs: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """(key, parts): parts are what the key is made of, kept in the run record."""
        key = self._key(lake, args, kwargs or {})
        return key.digest, key.parts

    def _key(
        self, lake: Lake, args: _Args, kwargs: dict[str, Any], keys: dict[Stage, Key] | None = None
    ) -> Key:
        """``keys``: the upstream keys worked out so far (by one call, or one run), added to here."""
        return make_key(
            self.qualname,
            self.func,
            self.options.get("version"),
            self.format.name if self.format else None,
            self._resolve(lake, {} if keys is None else keys),
            self._params(args, kwargs),
        )

    def key_for(self, lake: Lake, args: _Args, kwargs: dict[str, Any], keys: dict[Stage, Key]) -> Key:
        """The key of a call with these arguments; ``keys``: upstream keys worked out so far."""
        return self._key(lake, args, kwargs, keys)

    def key_in(self, lake: Lake, keys: dict[Stage, Key]) -> Key:
        """This stage's key (no arguments), worked out once per ``keys``: by the stage, not its name,
        which two stages made by one factory share."""
        if self not in keys:
            keys[self] = self._key(lake, (), {}, keys)
        return keys[self]

    def _params(self, args: _Args, kwargs: dict[str, Any]) -> dict[str, Any]:
        if not kwargs and len(args) <= len(self._positional):
            # what bind_partial makes of these, at a tenth of its cost (a map keys every item)
            params = dict(zip(self._positional, args, strict=False))  # fewer args: the first ones
        else:
            try:
                params = dict(self._signature.bind_partial(*args, **kwargs).arguments)
            except TypeError as e:
                raise InvalidArgumentError(f"stage {self.qualname}: {e}") from None
        if self.inputs and (clash := set(params) & set(self.inputs)):
            raise InvalidArgumentError(f"stage {self.qualname}: {sorted(clash)} are bound in the decorator")
        return params

    def _resolve(self, lake: Lake, keys: dict[Stage, Key]) -> dict[str, Resolved]:
        out = {}
        for arg, source in sorted(self.inputs.items()):
            if isinstance(source, Stage):
                key = source.key_in(lake, keys)  # once per call, even in a diamond; loading reuses it
                out[arg] = Resolved(
                    {"stage": source.qualname, "key": key.digest},
                    functools.partial(source.value_for, lake, key),
                )
            elif isinstance(source, Raw):
                out[arg] = resolve_raw(lake, source, self.qualname)
            else:
                raise InvalidArgumentError(
                    f"stage {self.qualname}: input {arg!r} must be lakelet.raw(...) or another stage"
                )
        return out

    # running

    def output(self, *args: Any, **kwargs: Any) -> File | list[File]:
        """The lake file holding this stage's result for these arguments (a list if it returned
        several Files), computed first if it is not stored, as a call would:
        ``pd.read_parquet(parse.output("2025-01-20"))``. Raises what a call raises."""
        lake = current_lake()
        outcome = self.call_in(lake, args, kwargs)
        _, run = current_run(lake.context, self.qualname, outcome.key)
        if run is None:  # cache=False binds a run record too: only a gc between could do this
            raise NotFoundError(f"stage {self.qualname}: no stored output for key {outcome.key}")
        files = [lake.file(n) for n in run.returned.names]
        return files if run.returned.kind == "files" and not run.returned.single else files[0]

    def run(self, lake: Lake, args: _Args, kwargs: dict[str, Any]) -> Any:
        return self.call_in(lake, args, kwargs).value

    def call_in(self, lake: Lake, args: _Args, kwargs: dict[str, Any], explain: bool = False) -> Outcome:
        """Returns the result, whether the function ran, and why (for a run: only if ``explain``)."""
        return self._outcome(lake, self._key(lake, args, kwargs), args, kwargs, explain)

    def value_for(self, lake: Lake, key: Key) -> Any:
        """The value a downstream stage reads. A ``cache=False`` stage is read from its latest
        run (in ``lakelet.run``, the one this run made), run first when it has none."""
        if not self.options.get("cache", True):
            latest = self.latest_run(lake, key.digest)
            if latest is not None:
                with contextlib.suppress(CorruptRecordError):
                    return self.load_output(lake, latest)
        return self._outcome(lake, key, (), {}, explain=False).value

    def latest_run(self, lake: Lake, key: str) -> RunRecord | None:
        """The last live generation of ``key`` whose record is valid (``cache=False`` binds one
        per call), or None."""
        found: RunRecord | None = None
        taken: set[str] = set()
        while True:
            name, run = current_run(lake.context, self.qualname, key, taken)
            if run is None:
                return found
            found = run
            taken.add(name)

    def free_generation(self, lake: Lake, key: str, taken: set[str]) -> str:
        """The name of the first generation of ``key`` that no record holds and that is not in
        ``taken`` (names a batch is about to bind): where a ``cache=False`` call binds its run."""
        generation = 1
        while True:
            name = generation_name(self.qualname, key, generation)
            if name not in taken and lake.context.lookup(LAKE, name) is None:
                return name
            generation += 1

    def _outcome(self, lake: Lake, key: Key, args: _Args, kwargs: dict[str, Any], explain: bool) -> Outcome:
        cache = self.options.get("cache", True)
        passed: set[str] = set()  # run records whose output could not be loaded: not the cache entry
        if cache and (hit := self._cached(lake, key, passed, "cached")):
            return hit
        with _key_lock(lake, key.digest):  # one process per machine computes a key; the others reuse
            if cache and (hit := self._cached(lake, key, passed, "computed meanwhile by another process")):
                return hit
            if cache:
                record_name, _ = current_run(lake.context, self.qualname, key.digest, passed)
            else:  # each call is a run of its own, kept as the key's next generation
                record_name = self.free_generation(lake, key.digest, set())
            # before the run: afterwards its own record is the latest
            reason = what_changed(lake, self.qualname, key.parts) if explain or _explaining(self) else ""
            _log(self, "running", reason)
            value = self._execute(lake, key, record_name, args, kwargs)
            return Outcome(value, True, reason, key.digest, record_name)

    def _cached(self, lake: Lake, key: Key, passed: set[str], reason: str) -> Outcome | None:
        """The stored result of ``key``, or None when it must run. A run record whose output cannot
        be loaded is reported and passed over (added to ``passed``): the run binds the next generation."""
        while True:
            name, run = current_run(lake.context, self.qualname, key.digest, passed)
            if run is None:
                return None
            try:
                value = self.load_output(lake, run)
            except CorruptRecordError as e:
                ignore(lake.context, e, "the stage runs again")
                passed.add(name)
                continue
            _log(self, "skipped", reason)
            return Outcome(value, False, reason, key.digest, name)

    def current_run(self, lake: Lake, key: str) -> tuple[str, RunRecord | None]:
        """(the run record ``key`` binds now, its checked record or None when the key is not cached)."""
        return current_run(lake.context, self.qualname, key)

    def load_output(
        self,
        lake: Lake,
        run: RunRecord,
        looked_up: Mapping[str, NameRecord] | None = None,
        remember: bool = True,
    ) -> Any:
        """The stored result of a run (which may be None: a hit is the record, not its value).
        ``looked_up``: records of output names the caller looked up together. ``remember``: keep
        the value for this process's later calls (``_loaded``; a map does not).

        Raises CorruptRecordError when it cannot be loaded: a record that does not match this
        stage's format, or an output its format cannot read back; RemoteError when the remote is
        down.
        """
        returned = run.returned
        declared = self.format.name if self.format else None
        # The parser ties the record's format to its key, and so to this stage's declaration;
        # checked again here, where the loading happens: never unpickle what the stage did not
        # ask to be pickled.
        if run.format != declared or returned.kind not in output_kinds(declared):
            raise CorruptRecordError(
                f"run record {run.name} stores a {returned.kind!r} output, which stage {self.qualname} "
                f"(format {declared or 'not declared'}) does not load",
                record=run.name,
            )
        try:
            if returned.kind == "files":
                files = [lake.file(n) for n in returned.names]
                return files[0] if returned.single else files
            if returned.kind == "path":
                return lake.file(returned.names[0]).path
            # the stored object itself (verified on open), not a view named with the suffix:
            # the format's loader needs none, and a view costs a link per output
            record = looked_up.get(returned.names[0]) if looked_up else None
            if record is None or record.removed_at is not None:
                record = lake.context.record(LAKE, returned.names[0])  # what is missing or removed raises
            memo = (str(lake.root), record.digest, returned.kind, returned.value_kind)
            value = _loaded.recall(memo)
            if value is _loaded.MISS:
                fmt = get_format(returned.kind)
                if fmt.reads_from_memory(record.size):
                    assert fmt.decode is not None
                    # verified from the bytes decoded: the object is opened once
                    value = fmt.decode(lake.context.read(record), returned.value_kind)
                else:
                    with lake.context.open_record(record):  # verified (fetched first if only remote)
                        pass
                    value = fmt.load(lake.context.blob_path(record), returned.value_kind)
                if remember:
                    _loaded.remember(memo, lake.context.blob_path_name(record), value)
            return value
        except RemoteError:
            raise  # the network, not the record: the next call may load it
        except Exception as e:  # any reader's refusal of the bytes: pyarrow, numpy, json, a missing name
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise CorruptRecordError(
                f"run record {run.name}: its output {returned.names[0]} cannot be loaded as "
                f"{returned.kind} ({reason})",
                record=run.name,
            ) from None

    def _execute(self, lake: Lake, key: Key, record_name: str, args: _Args, kwargs: dict[str, Any]) -> Any:
        done = self.compute(lake, key, record_name, args, kwargs)
        try:
            commit(lake, [done])
        finally:
            done.discard()
        if done.result_is_theirs:
            hit = self._cached(lake, key, set(), "computed meanwhile by another machine")
            if hit is not None:
                return hit.value
        return done.value

    def compute(
        self,
        lake: Lake,
        key: Key,
        record_name: str,
        args: _Args,
        kwargs: dict[str, Any],
        provenance: dict[str, Any] | None = None,
    ) -> Computed:
        """Run the function and prepare what to bind (its outputs and run record), binding
        nothing: ``commit`` binds one or many of these in one segment. The caller discards it
        once committed (or not). ``provenance``: see ``prepare``."""
        return self.prepare(lake, self.call_body(lake, key, record_name, args, kwargs), provenance)

    def call_body(self, lake: Lake, key: Key, record_name: str, args: _Args, kwargs: dict[str, Any]) -> Ran:
        """Run the function: what it returned and wrote, nothing stored or bound yet (an
        exception propagates, and what the function wrote is discarded)."""
        inputs = {arg: r.load() for arg, r in key.inputs.items()}
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        prefix = record_name.removesuffix(".json") + "/"  # the generation's folder
        declared = self.options.get("secrets")
        secret_values = lake.secrets.values(list(declared)) if declared else {}
        with _pending.collecting(prefix) as pending, secret_environment(secret_values):
            value = self.func(*args, **kwargs, **inputs)
        duration = time.perf_counter() - t0
        return Ran(key, record_name, prefix, value, pending, started, datetime.now(UTC), duration)

    def prepare(self, lake: Lake, ran: Ran, provenance: dict[str, Any] | None = None) -> Computed:
        """A run's outputs and run record, ready to bind: its value encoded, its record made and
        checked. Raises (and discards what the run wrote) when the value cannot be stored.
        ``provenance``: the record's source location and environment, filled in by the first
        run that finds it empty and shared by the runs of one group commit (asking git's files
        and the user again for each of 64 runs made them a tenth of a mapped item's cost).
        ``Stage.map`` prepares its runs together at each group commit rather than each after
        its own: the code and data this takes stay in the CPU's caches, where the function's
        own work between two runs evicted them (a third of a mapped item's overhead)."""
        key, record_name, prefix, value, pending = (
            ran.key,
            ran.record_name,
            ran.prefix,
            ran.value,
            ran.pending,
        )
        meta = {**self.meta, "stage": self.qualname, "run": record_name}
        expiry = expiry_fields(self.ttl)  # in the run record and the outputs: every machine knows
        if expiry:
            meta["expires_at"] = expiry["expires_at"]
        done = Computed(self, value, record_name, prefix, meta, pending)
        try:
            # before binding anything: a value its format cannot store must leave the lake as it was
            fmt, body = self._encode(
                lake, value, functools.partial(done.encoded_path, lake.context.tmp), pending
            )
            returned, from_value = self._returned(value, fmt, body, prefix)
            done.outputs = [*((n, tmp, True) for n, tmp in pending.written.items()), *from_value]
            _check_unique(self, [n for n, _, _ in done.outputs])
            written = {n: str(_digest_of(body)) for n, body, _ in done.outputs}
            passed_through = {n: lake.file(n).digest for n in returned["names"] if n not in written}
            done.record = {
                "kind": "stage",
                "stage": self.qualname,
                "key": key.digest,
                "parts": key.parts,
                "returned": returned,
                # a returned File the stage did not write (passed through) is an output too
                "outputs": [{"name": n, "digest": d} for n, d in {**written, **passed_through}.items()],
                "inputs": key.parts["inputs"],
                "datasets_written": pending.datasets,
                "code_digest": identity_of(self.func).digest,
                "code_source": _provenance.source_text(self.func),
                **_provenance_of(self.func, {} if provenance is None else provenance),
                "packages": module_packages(self.func)
                | {
                    k.removeprefix("package:"): v
                    for k, v in key.parts["code"].items()
                    if k.startswith("package:")
                },
                "started_at": ran.started.isoformat(),
                "ended_at": ran.ended.isoformat(),
                "duration_s": round(ran.duration, 6),
                **expiry,
            }
            done.write_record()
        except BaseException:
            done.discard()
            raise
        return done

    def commit_alone(self, lake: Lake, done: Computed, remember: bool = True) -> None:
        """Bind one run's outputs, then its record: the way when a group commit met a name bound
        by another machine (whose outputs, if they are under this key's names, are kept).
        ``remember``: as ``_commit.commit``'s."""
        bound, done.adopted = self._bind(lake, done.outputs, done.prefix, done.meta, done.pending.meta)
        returned = [lake.file(n) for n in done.record["returned"]["names"]]
        done.record["outputs"] = [{"name": f.name, "digest": f.digest} for f in _unique([*bound, *returned])]
        done.write_record()
        assert done.record_data is not None
        try:
            bound_record = bind_outputs(
                lake.context, [(done.record_name, done.record_data, True)], done.record_meta
            )
        except NameExistsError:  # bound by another machine first: the same key, its result stands
            done.adopted = True
            return
        if remember:
            remember_bound(lake, [done], bound_record)

    def check_record(self, data: bytes, record_name: str) -> RunRecord:
        """Refuse to bind a run record the readers would refuse: every later call would run the
        stage again and bind yet another generation. Raises InvalidArgumentError."""
        if len(data) > MAX_RUN_RECORD_BYTES:
            raise InvalidArgumentError(
                f"stage {self.qualname}: its run record would be {len(data) >> 20} MiB, more than the "
                f"{MAX_RUN_RECORD_BYTES >> 20} MiB lakelet reads back: pass large values as files "
                "(lakelet.raw or lakelet.File), not as parameters"
            )
        try:
            return parse_run_record(data, record_name)
        except CorruptRecordError as e:  # a bug of lakelet's: say so rather than bind it
            raise InvalidArgumentError(
                f"stage {self.qualname}: lakelet would not read back the run record it made, so it "
                f"binds none (please report this): {e}"
            ) from None

    def _encode(
        self, lake: Lake, value: Any, new_path: Callable[[], Path], pending: _pending.PendingOutputs
    ) -> tuple[Format | None, bytes | Path | None]:
        """The return value's format and its encoding (bytes, or written to a ``new_path()``: ``dump``);
        (None, None) for files and paths, bound as they are.

        Raises NotFoundError for a returned File or Path that does not exist.
        """
        files = [value] if isinstance(value, File) else list(value) if isinstance(value, list | tuple) else []
        if files and all(isinstance(v, File) for v in files):
            for f in files:
                if f.name not in pending.written and not lake.exists(f.name):
                    raise NotFoundError(
                        f"stage {self.qualname} returned lakelet.File({f.name!r}), which it did not write "
                        'and the lake does not have: write it (File(...).open("w")) before returning it'
                    )
            return None, None
        if isinstance(value, Path) and self.format is None:
            if not value.is_file():
                raise NotFoundError(
                    f"stage {self.qualname} returned the path {value}, which is not a file: "
                    "return the path of a file the stage wrote"
                )
            return None, None
        fmt = choose_format(value, self.format, self.qualname)
        return fmt, dump(fmt, value, new_path, self.qualname)

    def _returned(
        self, value: Any, fmt: Format | None, encoded: bytes | Path | None, prefix: str
    ) -> tuple[dict[str, Any], list[tuple[str, Path | bytes, bool]]]:
        """How to load the return value back (``encoded`` in ``fmt``), and what of it to bind:
        (name, path or bytes, whether to move the path in)."""
        if fmt is not None:
            assert encoded is not None
            name = self.options.get("name") or f"{prefix}output.{fmt.extension}"
            return {"kind": fmt.name, "names": [name], "type": kind_of(value)}, [(name, encoded, True)]
        if isinstance(value, Path):
            name = self.options.get("name") or f"{prefix}{value.name}"
            return {"kind": "path", "names": [name]}, [(name, value, False)]  # the user's file: copied
        if isinstance(value, File):
            return {"kind": "files", "names": [value.name], "single": True}, []
        return {"kind": "files", "names": [v.name for v in value]}, []

    def _bind(
        self,
        lake: Lake,
        outputs: list[tuple[str, Path | bytes, bool]],
        prefix: str,
        meta: dict[str, Any],
        meta_of: dict[str, dict[str, Any]],
    ) -> tuple[list[File], bool]:
        """Bind every output of one run in one segment, so a failure or a kill leaves all or none;
        the run record, bound after them, is what marks the run complete. Returns the outputs,
        and whether some are another machine's, adopted."""
        names = [name for name, _, _ in outputs]
        try:
            metas = {n: {**meta_of[n], **meta} for n, _, _ in outputs if n in meta_of}
            return [File.of(r, lake) for r in bind_outputs(lake.context, outputs, meta, metas)], False
        except NameExistsError:
            # Another machine ran this key first and bound other bytes under the key's own
            # names (a non-deterministic stage): its outputs are the ones kept, ours discarded.
            theirs = {n for n in names if n.startswith(prefix) and lake.exists(n)}
            if not theirs:
                raise
            mine = [o for o in outputs if o[0] not in theirs]
            metas = {n: {**meta_of[n], **meta} for n, _, _ in mine if n in meta_of}
            ours = [File.of(r, lake) for r in bind_outputs(lake.context, mine, meta, metas)]
            return [*ours, *(lake.file(n) for n in sorted(theirs))], True


def _leading_positional(signature: inspect.Signature) -> tuple[str, ...]:
    """The names of the parameters positional arguments fill, up to a ``*args`` or keyword-only one."""
    names = []
    for parameter in signature.parameters.values():
        if parameter.kind not in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            break
        names.append(parameter.name)
    return tuple(names)


def _provenance_of(func: Any, known: dict[str, Any]) -> dict[str, Any]:
    """A run record's "source" and "environment", worked out into ``known`` if it has none."""
    if not known:
        known["source"] = _provenance.source_location(func)
        known["environment"] = _provenance.environment()
    return known


def _unknown_options(func: Any, unknown: dict[str, Any]) -> str:
    """What to say of decorator arguments that are no option: an input given as a plain path
    (LWDP's ``@stage(raw_file="raw/input.csv")``) is told to use ``lakelet.raw``."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    for arg, value in unknown.items():
        if arg in params and isinstance(value, str | os.PathLike):
            return (
                f"stage {qualified_name(func)}: input {arg!r} is a plain string; bind a lake name or "
                f"local file with {arg}=lakelet.raw({os.fspath(value)!r}), or another stage"
            )
    return f"unknown stage options {sorted(unknown)}: use {sorted(_OPTIONS)}"


def _check_unique(stage: Stage, names: list[str]) -> None:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidArgumentError(
            f"stage {stage.qualname} has two outputs named {twice}: give each output its own name"
        )


def _digest_of(body: bytes | Path) -> Digest:
    return digest_bytes(body) if isinstance(body, bytes) else hash_file(body)[0]


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
    secrets, ttl, explain, meta (your own JSON keys on every output's record).
    """
    inputs = {k: v for k, v in options.items() if isinstance(v, Raw | Stage)}
    settings = {k: v for k, v in options.items() if k not in inputs}

    def decorate(f: Any) -> Stage:
        return Stage(f, inputs, settings)

    return decorate(func) if func is not None else decorate
