"""Finding a stage key's run records in a lake: the generation a key binds now, many keys at
once (a map's window), and the records a process parsed, remembered for its later calls.

Every record is parsed by ``_run_record.parse_run_record``. A refused one must not make a key
fail for good: the reader treats it as absent and says so in one warning on the
``lakelet.records`` logger (``ignore``): ``current_run`` passes over it to the key's next
generation, where the stage runs again; lineage and gc leave it out.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

from lakelet.core.errors import CorruptRecordError, IntegrityError, LakeletError
from lakelet.lake._expiry import is_run_record, record_name
from lakelet.lake._run_record import (
    MAX_RUN_RECORD_BYTES,
    RunRecord,
    parse_run_record,
    refused,
    without_lineage,
)
from lakelet.storage._refs import NameRecord
from lakelet.storage._scopes import LAKE

if TYPE_CHECKING:
    from lakelet.lake._context import LakeContext

__all__ = [
    "current_run",
    "current_runs",
    "ignore",
    "read_run_cached",
    "read_run_record",
    "remember_run",
    "run_records",
]

_logger = logging.getLogger("lakelet.records")


def read_run_record(context: LakeContext, record: NameRecord, lineage: bool = True) -> RunRecord:
    """The content of the run record ``record``, parsed (``parse_run_record``); raises
    CorruptRecordError, and what reading any name raises (NotFoundError, IntegrityError,
    RemoteError)."""
    if not is_run_record(record.name):
        raise refused(record.name, "its name is not a run record's (stages/<stage>/<key>.json)")
    if record.size > MAX_RUN_RECORD_BYTES:  # its size is checked on open: no need to fetch it
        raise refused(record.name, f"it is more than {MAX_RUN_RECORD_BYTES >> 20} MiB")
    return parse_run_record(context.read(record), record.name, lineage)


def current_run(
    context: LakeContext,
    stage: str,
    key: str,
    passed: Collection[str] = (),
) -> tuple[str, RunRecord | None]:
    """(the run record name ``key`` binds now, its record, or None when the key is not cached).

    Passes over the generations gc retired (their tombstones stay as lineage), those whose
    record is refused (each reported in one warning) and those named in ``passed`` (refused by
    the caller): a run of the key binds the next generation, so no record fails a key for good.
    """
    generation = 1
    while True:
        name = record_name(stage, key, generation)
        found = context.lookup(LAKE, name)
        if found is None:
            return name, None
        if found.removed_at is None and name not in passed:
            try:
                return name, read_run_cached(context, found)
            except (CorruptRecordError, IntegrityError) as e:  # the bytes, not the network
                ignore(context, e, "the stage runs again")
        generation += 1


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
_PARSED_MAX = 1 << 14
_OUTPUTS_MAX = 64  # outputs of a record remembered: what each holds stays small


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
    return _remember((str(context.root), found.name, found.digest), without_lineage(run))


def _remember(key: tuple[str, str, str], run: RunRecord) -> RunRecord:
    if len(run.outputs) > _OUTPUTS_MAX:  # a record of many outputs is parsed again when called
        return run
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
