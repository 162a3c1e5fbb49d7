"""The lakelet exception tree: every error lakelet raises on purpose, in one public module.

Each message is one line that says what went wrong and what to do; fields carry
what a caller may act on::

    LakeletError
    ├── LakeNotFoundError      no lake at the resolved path (run `lakelet init`)        .path
    ├── ConfigError            lakelet.toml is unreadable or invalid, or no remote set
    ├── InvalidArgumentError   an argument lakelet cannot act on                 (also ValueError)
    │   │                      (also: a stage's return value its format cannot store)
    │   ├── InvalidNameError   a name, scope, user or run id fails validation           .name
    │   └── SchemaConflictError  an append whose columns clash with the dataset's types .dataset
    ├── NotFoundError          a name or source file that does not exist  (also KeyError) .name
    ├── NameExistsError        a write-once name already bound to other content         .name
    ├── IntegrityError         stored bytes no longer match their digest              .digest
    │   └── CorruptRecordError a record read back (manifest, log entry, snapshot, name
    │                          record, run record or report) is invalid (damaged, or
    │                          written so by a peer): nothing was done with it        .record
    ├── SourceError            a source to add cannot be read
    ├── UnsupportedFeatureError  a Delta table uses a feature lakelet cannot read or write .feature
    ├── StorageError           a file cannot be written: disk full, read-only, refused    .path
    │                          (also: the index is unreadable; `lakelet fsck` rebuilds it)
    ├── RemoteError            an object store cannot be reached or refused us           .url
    ├── SecretError            a secret cannot be read: wrong key, or its backend refused
    └── RunError               stages failed; the others finished, their results kept .failures

Errors cross process boundaries (executors), so fields are keyword arguments
with defaults: pickle rebuilds an error from its message and restores them.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CorruptRecordError",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidNameError",
    "LakeNotFoundError",
    "LakeletError",
    "NameExistsError",
    "NotFoundError",
    "RemoteError",
    "RunError",
    "SchemaConflictError",
    "SecretError",
    "SourceError",
    "StorageError",
    "UnsupportedFeatureError",
]


class LakeletError(Exception):
    """Base class of every error lakelet raises on purpose."""


class LakeNotFoundError(LakeletError):
    """No lake exists where one was looked for."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path  # where a lake was looked for


class ConfigError(LakeletError):
    """The lake's configuration cannot be read or is invalid."""


class InvalidArgumentError(LakeletError, ValueError):
    """An argument lakelet cannot act on (a bad range, mode or option)."""


class InvalidNameError(InvalidArgumentError):
    """A name (or scope, user, run id) does not pass validation."""

    def __init__(self, message: str, *, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name  # the rejected text, when there is one


class SchemaConflictError(InvalidArgumentError):
    """An append whose columns clash with the dataset's types."""

    def __init__(self, message: str, *, dataset: str | None = None) -> None:
        super().__init__(message)
        self.dataset = dataset


class NotFoundError(LakeletError, KeyError):
    """A name, scope entry or source does not exist."""

    def __init__(self, message: str, *, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name  # the name (or path) that was looked for, when known

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NameExistsError(LakeletError):
    """A write-once name is already bound to different content."""

    def __init__(self, message: str, *, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class IntegrityError(LakeletError):
    """Stored bytes do not match the digest they were stored under."""

    def __init__(self, message: str, *, digest: str | None = None) -> None:
        super().__init__(message)
        self.digest = digest  # the digest the bytes were expected to have


class CorruptRecordError(IntegrityError):
    """A record lakelet wrote and reads back (a dataset manifest, a remote log entry or snapshot,
    a name record, a run record or report) is unreadable or invalid: damaged on disk, or written
    so by a peer with access to the remote. Nothing was read from it: readers of many records skip
    it and report it."""

    def __init__(self, message: str, *, record: str | None = None) -> None:
        super().__init__(message)
        self.record = record  # the record's key (its path under the lake root and the remote)


class SourceError(LakeletError):
    """A source given to `add` or `put` cannot be read."""


class UnsupportedFeatureError(LakeletError):
    """A Delta table uses a feature (deletion vectors, column mapping, …) lakelet does not support."""

    def __init__(self, message: str, *, feature: str | None = None) -> None:
        super().__init__(message)
        self.feature = feature


class StorageError(LakeletError):
    """A file lakelet writes cannot be written: the lake's own (the disk is full, read-only,
    or refuses access), or a destination given to ``get``. An add that raises it bound
    nothing in this lake. Also: the lake's index is unreadable (run ``lakelet fsck``)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path  # the file or folder that could not be written, when known


class RemoteError(LakeletError):
    """The remote object store is unreachable or refused the request."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url  # the remote (or key) that failed


class SecretError(LakeletError):
    """A secret cannot be read: wrong key, or its backend refused."""


class RunError(LakeletError):
    """Stages failed; the others finished and their results are kept."""

    def __init__(self, message: str, failures: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.failures = failures or {}  # stage -> traceback text
