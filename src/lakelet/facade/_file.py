"""``File``: a handle on a name in the lake; nothing is read until it is used."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from lakelet.core._digest import Digest, is_digest
from lakelet.core._durable import check_replaceable, new_temp_path, publish_file
from lakelet.core._names import validate_name
from lakelet.core._progress import SILENT, Progress
from lakelet.core.errors import InvalidArgumentError, NotFoundError, StorageError
from lakelet.lake._expiry import is_run_record
from lakelet.storage._refs import NameRecord
from lakelet.storage._scopes import LAKE

if TYPE_CHECKING:
    from lakelet.facade._lake import Lake

__all__ = ["File"]


class File:
    """A lake name and the object it is bound to.

    ``File("raw/a.csv")`` refers to a name in the current lake (see
    ``lakelet.use``); ``lake.file(name)`` to one in a given lake. ``File("blake3:<hex>")``
    refers to content: on first use it becomes the first live name bound to it.
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
            from lakelet.lake._pending import implicit_name

            name = implicit_name()
        self._name = validate_name(name)
        self._lake = lake
        self._record = record
        self._scope = record.scope if record is not None else scope

    @classmethod
    def of(cls, record: NameRecord, lake: Lake) -> File:
        """The handle on a bound record: its name was validated when it was bound, and
        ``ls`` or a directory add builds one per name."""
        f = cls.__new__(cls)  # skips __init__'s validation; its own class, so its own slots
        f._name, f._lake, f._record, f._scope = record.name, lake, record, record.scope  # noqa: SLF001
        return f

    def __repr__(self) -> str:
        return f"File({self._name!r})" if self._scope == LAKE else f"File({self._name!r}, {self._scope})"

    def _repr_html_(self) -> str:
        """A notebook's view: the record, its state, how it was made, the user's meta (escaped)."""
        from lakelet.facade._display import file_card

        return file_card(self).html()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        from lakelet.facade._display import file_card

        file_card(self).pretty(p, cycle)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, File):
            return NotImplemented
        return (self.name, self._scope, self.lake.root) == (other.name, other._scope, other.lake.root)

    def __hash__(self) -> int:
        return hash((self.name, self._scope))

    @property
    def lake(self) -> Lake:
        if self._lake is None:
            from lakelet.facade._current import current_lake

            self._lake = current_lake()
        return self._lake

    @property
    def record(self) -> NameRecord:
        """The name's record; raises NotFoundError if the name is not bound."""
        if self._record is None and self._scope == LAKE and is_digest(self._name):
            holder = self.lake.file(self._name)  # NotFoundError naming the digest if none holds it
            self._name, self._record = holder.name, holder.record
        if self._record is None:
            self._record = self.lake.context.record(self._scope, self._name)
        return self._record

    @property
    def name(self) -> str:
        if self._record is None and self._scope == LAKE and is_digest(self._name):
            return self.record.name
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
    def kind(self) -> str:
        """'run record' (a stage run's lineage record), 'stage output' or 'added'."""
        if is_run_record(self.name):
            return "run record"
        return "stage output" if "stage" in self.record.meta else "added"

    @property
    def is_local(self) -> bool:
        """Whether the content is stored on this machine."""
        return self.lake.context.blob_path(self.record).is_file()

    @property
    def state(self) -> str:
        """'local' (content here), 'remote' (only on the remote: fetched on first open)
        or 'unpushed' (bound here, not yet on the remote: run ``lake.push()``)."""
        return self.lake.context.state_of(self.record)

    @property
    def path(self) -> Path:
        """The verified, read-only local copy of the content (fetched first if it is only on
        the remote), at a path ending with the name's suffix (``….csv``), so that tools which
        choose a reader by extension work: a link under the lake's ``views/`` to the stored
        object (docs/local-layout.md)."""
        context = self.lake.context
        record = self.record
        with context.open_record(record):  # verifies, and fetches what is not held here
            pass
        return _view(context.root, context.tmp, context.blob_path(record), record.digest, self._name)

    def __fspath__(self) -> str:
        """``open(f)``, ``pd.read_csv(f)``, ``shutil.copy(f, …)``: the path of ``path``."""
        return os.fspath(self.path)

    def open(
        self, mode: str = "r", encoding: str | None = "utf-8", *, meta: Mapping[str, Any] | None = None
    ) -> IO[Any]:
        """Open for reading ("r", "rb"; verified against the digest) or, for a name not bound
        yet, for writing ("w", "wb"): the name is bound when the file is closed, or, inside a
        stage, when the stage returns; ``meta``: your own JSON keys for its record."""
        if mode in ("w", "wb", "wt"):
            from lakelet.facade._writer import open_for_writing

            if self._scope != LAKE:
                raise InvalidArgumentError("write scoped names with put/puts")
            return open_for_writing(self.lake, self._name, "wb" if mode == "wb" else "w", encoding, meta)
        if meta is not None:
            raise InvalidArgumentError("meta= is for a file opened for writing ('w' or 'wb')")
        if mode not in ("r", "rb", "rt"):
            raise InvalidArgumentError(
                f"File.open mode {mode!r}: use 'r' or 'rb' to read, 'w' or 'wb' to create"
            )
        binary = self.lake.context.open_record(self.record)
        if mode == "rb":
            return binary
        return io.TextIOWrapper(binary, encoding=encoding)

    def lineage(self) -> dict[str, Any]:
        """How this file came to be: the run record of the stage that made it (inputs, code,
        source location with git commit and URL, parameters, versions, times), or, for an
        added file, where it was added from, by whom and when."""
        meta = self.meta
        if "run" in meta:
            # meta is a record's too: its "run" must be a run record's name, checked like one
            run = self.lake.context.record(LAKE, validate_name(meta["run"]))
            from lakelet.lake._run_lookup import read_run_record  # `lakelet ls` needs none of it

            return read_run_record(self.lake.context, run).lineage
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
        from lakelet.facade._lineage import downstream

        return downstream(self.lake, self.name)

    def export(self, dest: str | os.PathLike[str], progress: Progress = SILENT) -> Path:
        """Write the content to the local file ``dest`` (a directory: the name's last segment in
        it), replacing it at once; returns the path written. On any error ``dest`` keeps what it
        held and no temp file is left. Raises NotFoundError, InvalidArgumentError (also when
        the target is a FIFO, a device or a symlink: never replaced), StorageError."""
        target = dest = Path(dest)
        try:
            if dest.is_dir():
                target = dest / self.name.rsplit("/", 1)[-1]
            if not target.parent.is_dir():
                raise NotFoundError(f"directory {target.parent} does not exist", name=str(target.parent))
            check_replaceable(target)
        except OSError as e:  # a segment too long for the filesystem
            raise StorageError(f"cannot write {target}: {e.strerror or e}", path=str(target)) from None
        with self.open("rb") as src:
            progress.add_total(self.size)
            try:
                # the temp beside the target (one filesystem for the rename); gone on any error
                publish_file(target, _Advancing(src, progress), target.parent, replace=True)
            except IsADirectoryError:
                raise InvalidArgumentError(f"{target} is a directory; give a file path") from None
            except OSError as e:  # a full disk, a read-only folder, /proc
                raise StorageError(f"cannot write {target}: {e.strerror or e}", path=str(target)) from None
        return target

    def read_bytes(self) -> bytes:
        with self.open("rb") as f:
            data: bytes = f.read()
            return data

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)


# A view is one file name: the digest's hex (less the two characters of its folder) and the
# suffixes must fit the 255 bytes a local filesystem allows.
_MAX_FILE_NAME = 255


def _suffix(name: str, room: int) -> str:
    """The suffixes of the name's last segment ('.csv', '.csv.gz'), or its last one, that fit."""
    last = PurePosixPath(PurePosixPath(name).name)
    for suffix in ("".join(last.suffixes), last.suffix):
        if len(suffix.encode()) <= room:
            return suffix
    return ""


def _view(root: Path, tmp: Path, blob: Path, digest: str, name: str) -> Path:
    """``views/<algorithm>/<hh>/<rest of hex><suffix>``: a symlink to ``blob``.

    A symlink, not a hard link: gc deletes an object and its bytes are gone,
    whatever views point at it (a dangling view is remade by the next ``path``).
    Relative, so a lake folder that is moved keeps its views. Replaced by a
    rename, so a concurrent reader sees the old link or the new one.
    """
    parsed = Digest.parse(digest)
    hexdigest = parsed.hexdigest
    room = _MAX_FILE_NAME - len(hexdigest) + 2
    view = root / "views" / parsed.algorithm / hexdigest[:2] / (hexdigest[2:] + _suffix(name, room))
    target = os.path.relpath(blob, view.parent)
    with contextlib.suppress(OSError):  # missing, or not a link
        if os.readlink(view) == target:
            return view
    view.parent.mkdir(parents=True, exist_ok=True)
    link = new_temp_path(tmp)
    os.symlink(target, link)
    try:
        os.replace(link, view)
    except BaseException:
        link.unlink(missing_ok=True)
        raise
    return view


class _Advancing:
    """A binary reader that reports what is read from it as progress."""

    def __init__(self, reader: IO[bytes], progress: Progress) -> None:
        self._reader, self._progress = reader, progress

    def read(self, size: int = -1, /) -> bytes:
        data: bytes = self._reader.read(size)
        self._progress.advance(len(data))
        return data
