"""lakelet: a local-first data lake for Python pipelines.

Every file is immutable and stored once under its content digest; names are
bound once in the lake scope; user and pipeline scopes are scratch stores.

This module is the public API: the CLI and the UI use nothing else. The
layers beneath it are described in docs/architecture.md.
"""

import importlib
from typing import TYPE_CHECKING, Any

from lakelet.core._config import current_user
from lakelet.core._version import __version__
from lakelet.core.errors import (
    ConfigError,
    CorruptRecordError,
    IntegrityError,
    InvalidArgumentError,
    InvalidNameError,
    LakeletError,
    LakeNotFoundError,
    NameExistsError,
    NotFoundError,
    RemoteError,
    RunError,
    SchemaConflictError,
    SecretError,
    SourceError,
    StorageError,
    UnsupportedFeatureError,
)
from lakelet.facade._current import current_lake, use
from lakelet.facade._file import File
from lakelet.facade._lake import Lake, init
from lakelet.facade._lake import open_lake as open
from lakelet.lake._expiry import parse_duration
from lakelet.lake._scoped import PipelineStore, ScopedStore
from lakelet.remote._sync import EvictReport, PushReport, SyncReport
from lakelet.secrets._secrets import SecretInfo, Secrets

if TYPE_CHECKING:
    from lakelet.datasets._datasets import Dataset
    from lakelet.datasets._state import State
    from lakelet.facade._graph import LineageGraph
    from lakelet.lake._fsck import FsckReport
    from lakelet.lake._gc import GcReport
    from lakelet.runner._events import RunObserver, RunReport, RunStarted, StageFinished, StageStarted
    from lakelet.runner._graph import StageGraph, StageNode
    from lakelet.runner._run import run
    from lakelet.stages._key import raw
    from lakelet.stages._stage import Stage, stage

__all__ = [
    "ConfigError",
    "CorruptRecordError",
    "Dataset",
    "EvictReport",
    "File",
    "FsckReport",
    "GcReport",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidNameError",
    "Lake",
    "LakeNotFoundError",
    "LakeletError",
    "LineageGraph",
    "NameExistsError",
    "NotFoundError",
    "PipelineStore",
    "PushReport",
    "RemoteError",
    "RunError",
    "RunObserver",
    "RunReport",
    "RunStarted",
    "SchemaConflictError",
    "ScopedStore",
    "SecretError",
    "SecretInfo",
    "Secrets",
    "SourceError",
    "StorageError",
    "Stage",
    "StageFinished",
    "StageGraph",
    "StageNode",
    "StageStarted",
    "State",
    "SyncReport",
    "UnsupportedFeatureError",
    "__version__",
    "current_lake",
    "current_user",
    "init",
    "open",
    "parse_duration",
    "raw",
    "run",
    "stage",
    "use",
]

# Pipeline machinery (code fingerprints, formats, executors), pyarrow and what only some
# commands need load on first use, so that `lakelet ls` and a plain `import lakelet` do not pay for them.
_LAZY = {
    "Dataset": "datasets._datasets",
    "FsckReport": "lake._fsck",
    "GcReport": "lake._gc",
    "LineageGraph": "facade._graph",
    "State": "datasets._state",
    "run": "runner._run",
    "RunObserver": "runner._events",
    "RunReport": "runner._events",
    "RunStarted": "runner._events",
    "StageFinished": "runner._events",
    "StageStarted": "runner._events",
    "StageGraph": "runner._graph",
    "StageNode": "runner._graph",
    "Stage": "stages._stage",
    "stage": "stages._stage",
    "raw": "stages._key",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if _LAZY[name].startswith("stages."):
        # Stage.map runs on the runner's executors, a layer above stages: it fills their hook
        importlib.import_module(".runner._map", __name__)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
