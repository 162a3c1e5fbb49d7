"""Binding runs: a stage's runs, done but not bound (``Ran``, then ``Computed``), and the group
commit that binds the outputs and run records of one or many of them in one segment (``commit``).

A single call commits its one run; ``Stage.map`` (``_many``) commits up to 64 at a time. Either
way a kill leaves every run of a commit bound or none, and the record is what marks a run
complete. When a name of the group is already bound to other bytes (another machine ran the
same key), the runs are bound one by one (``Stage.commit_alone``): the other machine's outputs
and record are adopted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakelet.core._durable import new_temp_path
from lakelet.core.errors import NameExistsError
from lakelet.lake import _pending
from lakelet.lake._add import bind_outputs
from lakelet.lake._run_lookup import remember_run
from lakelet.lake._run_record import RunRecord
from lakelet.stages import _loaded

if TYPE_CHECKING:
    from lakelet.facade._lake import Lake
    from lakelet.stages._key import Key
    from lakelet.stages._stage import Stage
    from lakelet.storage._refs import NameRecord

__all__ = ["Computed", "Ran", "commit", "remember_bound"]


@dataclass(frozen=True)
class Ran:
    """A call of a stage's function that returned: what ``Stage.prepare`` makes a run of."""

    key: Key
    record_name: str
    prefix: str  # the generation's folder
    value: Any
    pending: _pending.PendingOutputs  # the files it wrote
    started: datetime
    ended: datetime
    duration: float

    def discard(self) -> None:
        self.pending.discard()


@dataclass
class Computed:
    """One run of a stage, done but not bound yet: its value, and its outputs (in temp files or
    in memory) and run record."""

    stage: Stage
    value: Any
    record_name: str
    prefix: str  # the generation's folder
    meta: dict[str, Any]  # of its outputs (lakelet's keys and the stage's meta=)
    pending: _pending.PendingOutputs
    # (name, path or bytes, move the path in)
    outputs: list[tuple[str, Path | bytes, bool]] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    record_data: bytes | None = None
    encoded: Path | None = None  # the temp file of the return value, if its format writes one
    run: RunRecord | None = None  # ``record`` as the readers parse it
    # another run of the key (another machine's, another map's) was bound first and is what the
    # lake keeps (``Stage.commit_alone``, ``_commit_apart``)
    adopted: bool = False

    def encoded_path(self, tmp_dir: Path) -> Path:
        """A temp file for the return value, made only by a format that writes one."""
        self.encoded = new_temp_path(tmp_dir)
        return self.encoded

    def meta_of(self, name: str) -> dict[str, Any]:
        """The record meta of output ``name``: the user's keys of a file it wrote (``File.open(
        "wb", meta=...)``) under lakelet's own, which they cannot override."""
        return {**self.pending.meta.get(name, {}), **self.meta}

    @property
    def result_is_theirs(self) -> bool:
        """Whether the call's result is the run the lake kept rather than ``value``: another run of
        the key was bound first. Not for a cache=False call: each call is a run of its own."""
        return self.adopted and self.stage.options.get("cache", True)

    @property
    def record_meta(self) -> dict[str, str]:
        return {"stage": self.stage.qualname}

    def write_record(self) -> None:
        data = _RECORD.encode(self.record).encode()
        self.run = self.stage.check_record(data, self.record_name)
        self.record_data = data

    def discard(self) -> None:
        self.pending.discard()
        if self.encoded is not None:
            self.encoded.unlink(missing_ok=True)


_RECORD = json.JSONEncoder(sort_keys=True)  # a run record's JSON; built once, not per record


def commit(lake: Lake, runs: list[Computed], remember: bool = True) -> None:
    """Bind the outputs and run records of ``runs`` in one segment (a group commit: one catalog
    transaction, no fsync, as for all derived data), so a kill leaves every run bound or none.
    Two runs naming one output, or a name another machine bound first, fall back to
    ``_commit_apart``. ``remember``: hand the records and values to this process's later
    cached calls (``remember_bound``, ``_remember_values``)."""
    outputs = [o for done in runs for o in done.outputs]
    records: list[tuple[str, Path | bytes, bool]] = [
        (d.record_name, d.record_data, True) for d in runs if d.record_data is not None
    ]
    names = [n for n, _, _ in [*outputs, *records]]
    if len(set(names)) == len(names):
        metas = {n: done.meta_of(n) for done in runs for n, _, _ in done.outputs}
        metas |= {d.record_name: d.record_meta for d in runs}
        try:
            bound = bind_outputs(
                lake.context, [*outputs, *records], {}, metas, apart={n for n, _, _ in records}
            )
        except NameExistsError:
            pass  # nothing of it is bound: sort it out run by run
        else:
            if remember:
                _remember_values(lake, runs, bound)
                remember_bound(lake, runs, bound)
            return
    _commit_apart(lake, runs, remember)


def _commit_apart(lake: Lake, runs: list[Computed], remember: bool) -> None:
    """Bind the outputs of ``runs`` in one segment, then their run records in a second: runs whose
    names clash, among themselves (each is bound alone) or with a name another machine bound to
    other bytes (the run whose names it took adopts its outputs; a record it bound under the same
    key stands)."""
    outputs = [o for done in runs for o in done.outputs]
    metas = {n: done.meta_of(n) for done in runs for n, _, _ in done.outputs}
    names = [n for n, _, _ in outputs]
    alone: list[Computed] = []
    if len(set(names)) != len(names):
        alone = runs
    elif outputs:
        try:
            bound = bind_outputs(lake.context, outputs, {}, metas)
        except NameExistsError:
            alone = runs  # each alone: the one whose names another machine took adopts its outputs
        else:
            if remember:
                _remember_values(lake, runs, bound)
    for done in alone:
        done.stage.commit_alone(lake, done, remember)
    grouped = [done for done in runs if done not in alone]
    records: list[tuple[str, Path | bytes, bool]] = [
        (d.record_name, d.record_data, True) for d in grouped if d.record_data is not None
    ]
    record_metas = {d.record_name: d.record_meta for d in grouped}
    if not records:
        return
    try:
        bound = bind_outputs(lake.context, records, {}, record_metas)
    except NameExistsError:  # another machine bound one first: the same key, so its result stands
        for done in grouped:
            if done.record_data is None:
                continue
            try:
                bind_outputs(lake.context, [(done.record_name, done.record_data, True)], {}, record_metas)
            except NameExistsError:
                done.adopted = True
    else:
        if remember:
            remember_bound(lake, grouped, bound)


def remember_bound(lake: Lake, runs: list[Computed], bound: list[NameRecord]) -> None:
    """Hand the run records just bound, as their writer parsed them, to the cached calls."""
    by_name = {r.name: r for r in bound}
    for done in runs:
        if done.run is not None and done.record_name in by_name:
            remember_run(lake.context, by_name[done.record_name], done.run)


def _remember_values(lake: Lake, runs: list[Computed], bound: list[NameRecord]) -> None:
    """Hand the values the runs returned to the cached calls, where their format stores them
    exactly (``_loaded``): a first run returns its value, not one loaded back."""
    by_name = {r.name: r for r in bound}
    for done in runs:
        returned = done.record.get("returned", {})
        names = returned.get("names") or []
        if returned.get("kind") in ("files", "path") or len(names) != 1 or names[0] not in by_name:
            continue
        record = by_name[names[0]]
        memo = (str(lake.root), record.digest, returned["kind"], returned["type"])
        _loaded.remember_written(memo, lake.context.blob_path_name(record), done.value)
