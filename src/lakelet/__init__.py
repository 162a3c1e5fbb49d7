"""lakelet: a local-first data lake for Python pipelines.

Every file is immutable and stored once under its content digest; names are
bound once in the lake scope; user and pipeline scopes are scratch stores.
"""

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
from ._run import RunError, run
from ._scoped import PipelineStore, ScopedStore
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
