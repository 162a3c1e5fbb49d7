"""Incremental bookmarks and run logs of a pipeline, kept as DataSpoc Pipe keeps them, in the lake.

``state/<pipeline>/state.json`` holds the bookmark (replaced atomically on
``set``); ``logs/<pipeline>/<UTC time>.json`` holds one immutable record per
run. Both live under the lake root and, for a lake with a remote, on the
remote, which is the one read first so every machine resumes from the same
bookmark.

Both are read back from a store any peer with write access may have written: each goes
through one validating parser (``parse_state``, ``parse_run_log``) that takes only a
JSON object of plain values (no NaN, bounded size and depth). A bad bookmark raises
``CorruptRecordError`` naming its key, so a run never resumes from a forged position
without saying so; a bad run log is left out of ``run_logs`` with a warning of the
``lakelet`` logger.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lakelet.core._names import validate_name, validate_path_name
from lakelet.core.errors import CorruptRecordError, InvalidArgumentError
from lakelet.lake._mirror import MirroredFiles

if TYPE_CHECKING:
    from lakelet.lake._context import LakeContext

__all__ = ["State", "parse_run_log", "parse_state", "run_logs", "write_run_log"]

_MAX_BYTES = 16 << 20
_MAX_DEPTH = 64
_log = logging.getLogger("lakelet")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any, depth: int = 0) -> int:
    if depth > _MAX_DEPTH:
        return depth
    if isinstance(value, dict):
        return max((_depth(v, depth + 1) for v in value.values()), default=depth)
    if isinstance(value, list):
        return max((_depth(v, depth + 1) for v in value), default=depth)
    return depth


def _object(data: bytes, key: str, what: str) -> dict[str, Any]:
    """A JSON object of plain values from ``data``; CorruptRecordError naming ``key`` otherwise."""
    problem = None
    value: Any = None
    if len(data) > _MAX_BYTES:
        problem = f"larger than {_MAX_BYTES >> 20} MiB"
    else:
        try:
            value = json.loads(data, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
            problem = f"not JSON ({str(e)[:80]})"
    if problem is None and not isinstance(value, dict):
        problem = f"not a JSON object but {type(value).__name__}"
    if problem is None and _depth(value) > _MAX_DEPTH:
        problem = f"nested deeper than {_MAX_DEPTH}"
    if problem is not None:
        raise CorruptRecordError(f"invalid {what} {key}: {problem}", record=key)
    return dict(value)


def parse_state(data: bytes, key: str) -> dict[str, Any]:
    """A pipeline's bookmark: any JSON object (the tap's own STATE)."""
    return _object(data, key, "pipeline state")


def parse_run_log(data: bytes, key: str) -> dict[str, Any]:
    """One run's log: a JSON object; its pipeline name, if any, text, and its ok flag a boolean."""
    log = _object(data, key, "run log")
    if not isinstance(log.get("pipeline", ""), str) or not isinstance(log.get("ok", True), bool):
        raise CorruptRecordError(
            f"invalid run log {key}: pipeline is not text or ok not a boolean", record=key
        )
    return log


class State:
    """``lake.state(pipeline)``: ``get()`` the bookmark dict, ``set(dict)`` a new one."""

    def __init__(self, context: LakeContext, pipeline: str) -> None:
        self._files = MirroredFiles(context)
        self.pipeline = validate_path_name(pipeline, "pipeline name")
        self._key = f"state/{pipeline}/state.json"

    def __repr__(self) -> str:
        return f"<State {self.pipeline}>"

    def get(self) -> dict[str, Any]:
        raw = self._files.read(self._key, limit=_MAX_BYTES)
        return parse_state(raw, self._key) if raw is not None else {}

    def set(self, value: dict[str, Any]) -> None:
        if not isinstance(value, dict):
            raise InvalidArgumentError(f"a state is a dict, not {type(value).__name__}")
        try:
            body = json.dumps(value, sort_keys=True, allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(f"state of {self.pipeline!r} must be JSON-able: {e}") from None
        self._files.replace(self._key, body, point="state-written")


def write_run_log(context: LakeContext, pipeline: str, record: dict[str, Any]) -> str:
    """Store one run's log; returns its key."""
    validate_name(pipeline)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    key = f"logs/{pipeline}/{stamp}-{secrets.token_hex(3)}.json"
    body = json.dumps(record, sort_keys=True, indent=1, default=str).encode()
    MirroredFiles(context).create(key, body, point="run-log-written")
    return key


def run_logs(context: LakeContext, pipeline: str) -> list[dict[str, Any]]:
    """Every run log of ``pipeline``, oldest first (from the remote when there is one)."""
    validate_name(pipeline)
    files = MirroredFiles(context)
    keys = files.keys(f"logs/{pipeline}/", ".json", remote_only=True)
    logs = []
    for key in keys:
        data = files.read(key, limit=_MAX_BYTES)
        if data is None:
            continue
        try:
            logs.append(parse_run_log(data, key))
        except CorruptRecordError as e:
            _log.warning("skipped %s", e)
    return logs
