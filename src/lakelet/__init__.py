"""lakelet: a local-first data lake for Python pipelines.

Every file is immutable and stored once under its content digest; names are
bound once in the lake scope; user and pipeline scopes are scratch stores.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._current import current_lake, use
from ._errors import (
    ConfigError,
    IntegrityError,
    InvalidArgumentError,
    InvalidNameError,
    LakeletError,
    LakeNotFoundError,
    NameExistsError,
    NotFoundError,
    RemoteError,
    SecretError,
    SourceError,
)
from ._file import File
from ._fsck import FsckReport
from ._lake import Lake, init
from ._lake import open_lake as open
from ._scoped import PipelineStore, ScopedStore

if TYPE_CHECKING:
    from ._run import RunError, run
    from ._stage import Stage, stage
    from ._stage_key import raw

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "File",
    "FsckReport",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidNameError",
    "Lake",
    "LakeNotFoundError",
    "LakeletError",
    "NameExistsError",
    "NotFoundError",
    "PipelineStore",
    "RemoteError",
    "RunError",
    "ScopedStore",
    "SecretError",
    "SourceError",
    "Stage",
    "__version__",
    "current_lake",
    "init",
    "open",
    "raw",
    "run",
    "stage",
    "use",
]

# Pipeline machinery (code fingerprints, formats, executors) loads on first use, so
# that `lakelet ls` and a plain `import lakelet` do not pay for it.
_LAZY = {"RunError": "_run", "run": "_run", "Stage": "_stage", "stage": "_stage", "raw": "_stage_key"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
