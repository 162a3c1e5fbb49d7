"""Incremental bookmarks and run logs of a pipeline, kept as DataSpoc Pipe keeps them, in the lake.

``state/<pipeline>/state.json`` holds the bookmark (replaced atomically on
``set``); ``logs/<pipeline>/<UTC time>.json`` holds one immutable record per
run. Both live under the lake root and, for a lake with a remote, on the
remote, which is the one read first so every machine resumes from the same
bookmark.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lakelet.core._names import validate_name, validate_path_name
from lakelet.core.errors import InvalidArgumentError
from lakelet.lake._mirror import MirroredFiles

if TYPE_CHECKING:
    from lakelet.lake._context import LakeContext

__all__ = ["State", "run_logs", "write_run_log"]


class State:
    """``lake.state(pipeline)``: ``get()`` the bookmark dict, ``set(dict)`` a new one."""

    def __init__(self, context: LakeContext, pipeline: str) -> None:
        self._files = MirroredFiles(context)
        self.pipeline = validate_path_name(pipeline, "pipeline name")
        self._key = f"state/{pipeline}/state.json"

    def __repr__(self) -> str:
        return f"<State {self.pipeline}>"

    def get(self) -> dict[str, Any]:
        raw = self._files.read(self._key)
        return json.loads(raw) if raw is not None else {}

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
    return [json.loads(files.read(key) or b"{}") for key in keys]
