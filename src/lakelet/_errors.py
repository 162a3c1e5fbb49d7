"""The lakelet exception tree.

Every error lakelet raises on purpose is a ``LakeletError``; its message is
one line that says what went wrong and what to do::

    LakeletError
    ├── LakeNotFoundError      no lake at the resolved path (run `lakelet init`)
    ├── ConfigError            lakelet.toml is unreadable or invalid
    ├── InvalidArgumentError   an argument lakelet cannot act on                 (also ValueError)
    │                          (also: a stage's return value its format cannot store)
    │   └── InvalidNameError   a name, scope, user or run id fails validation
    ├── NotFoundError          a name or source file that does not exist         (also KeyError)
    ├── NameExistsError        a write-once name already bound to other content
    ├── IntegrityError         stored bytes no longer match their digest
    ├── SourceError            a source to add cannot be read
    └── RemoteError            an object store cannot be reached or refused us
"""

from __future__ import annotations


class LakeletError(Exception):
    """Base class of every error lakelet raises on purpose."""


class LakeNotFoundError(LakeletError):
    """No lake exists where one was looked for."""


class ConfigError(LakeletError):
    """The lake's configuration cannot be read or is invalid."""


class InvalidArgumentError(LakeletError, ValueError):
    """An argument lakelet cannot act on (a bad range, mode or option)."""


class InvalidNameError(InvalidArgumentError):
    """A name (or scope, user, run id) does not pass validation."""


class NotFoundError(LakeletError, KeyError):
    """A name, scope entry or source does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NameExistsError(LakeletError):
    """A write-once name is already bound to different content."""


class IntegrityError(LakeletError):
    """Stored bytes do not match the digest they were stored under."""


class SourceError(LakeletError):
    """A source given to `add` or `put` cannot be read."""


class RemoteError(LakeletError):
    """The remote object store is unreachable or refused the request."""


class SecretError(LakeletError):
    """A secret cannot be read: wrong key, or its backend refused."""
