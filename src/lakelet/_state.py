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

from ._durable import publish_file
from ._errors import InvalidArgumentError
from ._names import validate_name, validate_path_name

if TYPE_CHECKING:
    from ._lake import Lake


class State:
    """``lake.state(pipeline)``: ``get()`` the bookmark dict, ``set(dict)`` a new one."""

    def __init__(self, lake: Lake, pipeline: str) -> None:
        self._lake = lake
        self.pipeline = validate_path_name(pipeline, "pipeline name")
        self._key = f"state/{pipeline}/state.json"

    def __repr__(self) -> str:
        return f"<State {self.pipeline}>"

    def get(self) -> dict[str, Any]:
        syncer = self._lake._syncer()
        raw = syncer.remote.read_bytes(self._key) if syncer is not None else None
        if raw is None:
            local = self._lake.root / self._key
            raw = local.read_bytes() if local.is_file() else None
        return json.loads(raw) if raw is not None else {}

    def set(self, value: dict[str, Any]) -> None:
        if not isinstance(value, dict):
            raise InvalidArgumentError(f"a state is a dict, not {type(value).__name__}")
        try:
            body = json.dumps(value, sort_keys=True, allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(f"state of {self.pipeline!r} must be JSON-able: {e}") from None
        syncer = self._lake._syncer()
        if syncer is not None:
            syncer.remote.put_bytes(self._key, body)
        publish_file(self._lake.root / self._key, body, self._lake._tmp, replace=True, point="state-written")


def write_run_log(lake: Lake, pipeline: str, record: dict[str, Any]) -> str:
    """Store one run's log; returns its key."""
    validate_name(pipeline)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    key = f"logs/{pipeline}/{stamp}-{secrets.token_hex(3)}.json"
    body = json.dumps(record, sort_keys=True, indent=1, default=str).encode()
    syncer = lake._syncer()
    if syncer is not None:
        syncer.remote.create(key, body)
    publish_file(lake.root / key, body, lake._tmp, replace=True, point="run-log-written")
    return key


def run_logs(lake: Lake, pipeline: str) -> list[dict[str, Any]]:
    """Every run log of ``pipeline``, oldest first (from the remote when there is one)."""
    validate_name(pipeline)
    syncer = lake._syncer()
    if syncer is not None:
        keys = sorted(syncer.remote.find(f"logs/{pipeline}/"))
        return [json.loads(syncer.remote.read_bytes(k) or b"{}") for k in keys]
    folder = lake.root / "logs" / pipeline
    return [json.loads(p.read_bytes()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
