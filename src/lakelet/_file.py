"""``File``: a handle on a name in the lake; nothing is read until it is used."""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._errors import InvalidArgumentError
from ._names import validate_name
from ._refs import NameRecord
from ._scopes import LAKE

if TYPE_CHECKING:
    from ._lake import Lake


class File:
    """A lake name and the object it is bound to.

    ``File("raw/a.csv")`` refers to a name in the current lake (see
    ``lakelet.use``); ``lake.file(name)`` to one in a given lake.
    """

    __slots__ = ("_lake", "_name", "_record", "_scope")

    def __init__(
        self,
        name: str | None = None,
        *,
        lake: Lake | None = None,
        record: NameRecord | None = None,
        scope: str = LAKE,
    ) -> None:
        if name is None:  # an output of the running stage, named after its key
            from ._outputs import implicit_name

            name = implicit_name()
        self._name = validate_name(name)
        self._lake = lake
        self._record = record
        self._scope = record.scope if record is not None else scope

    @classmethod
    def _of(cls, record: NameRecord, lake: Lake) -> File:
        """The handle on a bound record: its name was validated when it was bound, and
        ``ls`` or a directory add builds one per name."""
        f = cls.__new__(cls)
        f._name, f._lake, f._record, f._scope = record.name, lake, record, record.scope
        return f

    def __repr__(self) -> str:
        return f"File({self._name!r})" if self._scope == LAKE else f"File({self._name!r}, {self._scope})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, File):
            return NotImplemented
        return (self._name, self._scope, self.lake.root) == (other._name, other._scope, other.lake.root)

    def __hash__(self) -> int:
        return hash((self._name, self._scope))

    @property
    def lake(self) -> Lake:
        if self._lake is None:
            from ._current import current_lake

            self._lake = current_lake()
        return self._lake

    @property
    def record(self) -> NameRecord:
        """The name's record; raises NotFoundError if the name is not bound."""
        if self._record is None:
            self._record = self.lake._record(self._scope, self._name)
        return self._record

    @property
    def name(self) -> str:
        return self._name

    @property
    def scope(self) -> str:
        return self._scope

    @property
    def digest(self) -> str:
        return self.record.digest

    @property
    def size(self) -> int:
        return self.record.size

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(self.record.created_at.replace("Z", "+00:00"))

    @property
    def creator(self) -> str:
        return self.record.creator

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.record.meta)

    @property
    def is_local(self) -> bool:
        """Whether the content is stored on this machine."""
        return self.lake._blob_path(self.record).is_file()

    @property
    def state(self) -> str:
        """'local' (content here), 'remote' (only on the remote: fetched on first open)
        or 'unpushed' (bound here, not yet on the remote: run ``lake.push()``)."""
        return self.lake._state_of(self.record)

    @property
    def path(self) -> Path:
        """The read-only local file holding the content (verified first)."""
        with self.lake._open_record(self.record):
            pass
        return self.lake._blob_path(self.record)

    def open(self, mode: str = "r", encoding: str | None = "utf-8") -> IO[Any]:
        """Open for reading ("r", "rb"; verified against the digest) or, for a name not bound
        yet, for writing ("w", "wb"): the name is bound when the file is closed, or, inside a
        stage, when the stage returns."""
        if mode in ("w", "wb", "wt"):
            from ._outputs import open_for_writing

            if self._scope != LAKE:
                raise InvalidArgumentError("write scoped names with put/puts")
            return open_for_writing(self.lake, self._name, "wb" if mode == "wb" else "w", encoding)
        if mode not in ("r", "rb", "rt"):
            raise InvalidArgumentError(
                f"File.open mode {mode!r}: use 'r' or 'rb' to read, 'w' or 'wb' to create"
            )
        binary = self.lake._open_record(self.record)
        if mode == "rb":
            return binary
        return io.TextIOWrapper(binary, encoding=encoding)  # type: ignore[arg-type]

    def lineage(self) -> dict[str, Any]:
        """How this file came to be: the run record of the stage that made it (inputs, code,
        source location with git commit and URL, parameters, versions, times), or, for an
        added file, where it was added from, by whom and when."""
        meta = self.meta
        if "run" in meta:
            record: dict[str, Any] = json.loads(self.lake.file(meta["run"]).read_bytes())
            return record
        return {
            "kind": "add",
            "outputs": [{"name": self.name, "digest": self.digest}],
            "source": meta.get("source"),
            "user": self.creator,
            "created_at": self.record.created_at,
            "environment": {k: meta[k] for k in ("host", "lakelet", "python") if k in meta},
        }

    def downstream(self) -> list[File]:
        """Every file made, directly or not, from this one (impact analysis)."""
        from ._lineage import downstream

        return downstream(self.lake, self.name)

    def read_bytes(self) -> bytes:
        with self.open("rb") as f:
            data: bytes = f.read()
            return data

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)
