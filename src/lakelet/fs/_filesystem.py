"""``LakeFileSystem``: a lake's names as an fsspec filesystem, protocol ``lakelet://``.

Paths are lake names (``lakelet://raw/orders.csv`` is the name ``raw/orders.csv``);
directories are implied by the names' prefixes and hold nothing of their own.
Reads go through ``File``: verified against the digest, fetched from the remote
on first use. Writes bind new names when the file is closed, write-once in the
lake scope: other content under a bound name is ``FileExistsError``, the same
content is a success. Options, behaviour and what fsspec verbs mean here:
docs/fsspec.md.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from fsspec import AbstractFileSystem
from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.utils import stringify_path

from lakelet.catalog import _bind
from lakelet.core._config import current_user
from lakelet.core._names import validate_name, validate_prefix
from lakelet.core.errors import InvalidArgumentError, NameExistsError, NotFoundError
from lakelet.facade._current import current_lake
from lakelet.facade._file import File
from lakelet.facade._lake import Lake, open_lake
from lakelet.fs import _datasets
from lakelet.fs._reader import Opened
from lakelet.fs._writer import NewFile
from lakelet.lake._pending import CURRENT
from lakelet.storage._scopes import LAKE, parse_scope, scope_id

__all__ = ["LakeFileSystem"]

PROTOCOL = "lakelet"
_COPY_CHUNK = 4 << 20
# fsspec's own options for a filesystem's listings cache: accepted, and unused (listings are
# one indexed query; there is nothing to cache)
_FSSPEC_OPTIONS = {"use_listings_cache", "listings_expiry_time", "max_paths"}


class LakeFileSystem(AbstractFileSystem):  # type: ignore[misc]  # fsspec ships no types
    """The names of one lake (and scope) as an fsspec filesystem.

    ``lake``: a lake's path (or a ``Lake``); None, the current lake at each call
    (``lakelet.use``, else what ``lakelet.open()`` resolves). ``scope``: 'lake' (the
    default, write-once), 'user' (yours), 'user/<id>' or 'pipeline/<run id>'.
    """

    protocol = PROTOCOL
    root_marker = ""

    def __init__(
        self, lake: str | os.PathLike[str] | Lake | None = None, scope: str = LAKE, **options: Any
    ) -> None:
        unknown = sorted(set(options) - _FSSPEC_OPTIONS)
        if unknown:
            raise InvalidArgumentError(
                f"lakelet:// takes the options lake= and scope=, not {', '.join(unknown)}"
            )
        super().__init__(lake=lake, scope=scope, **options)
        self._lake = lake if isinstance(lake, Lake) or lake is None else open_lake(lake)
        self._scope = scope_id("user", current_user()) if scope == "user" else parse_scope(scope)

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        text: str = stringify_path(path)
        for marker in (f"{PROTOCOL}://", f"{PROTOCOL}::"):
            text = text.removeprefix(marker)
        return text.strip("/")  # `lakelet:///a` and `a/` name `a`: names have no outer slashes

    @property
    def lake(self) -> Lake:
        """The lake this filesystem reads and writes now."""
        return self._lake if self._lake is not None else current_lake()

    @property
    def scope(self) -> str:
        return self._scope

    # reading

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        prefix = validate_prefix(f"{path}/" if path else "")
        entries: dict[str, dict[str, Any]] = {}
        for name, digest, size, created_at in self._listing(prefix):
            head, sep, _ = name[len(prefix) :].partition("/")
            if not sep:
                entries[name] = _file_entry(name, digest, size, created_at)
            elif prefix + head not in entries:
                entries[prefix + head] = _directory(prefix + head)
        if not entries and path:
            info = self.info(path)  # FileNotFoundError if nothing is there
            if info["type"] == "file":  # fsspec lists a file as itself
                entries[path] = info
        found = sorted(entries)
        return [entries[n] for n in found] if detail else found

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Every name under ``path`` (and, ``withdirs``, every implied directory), from one
        listing of the index rather than a walk of one listing per directory."""
        if maxdepth is not None and maxdepth < 1:
            raise ValueError("maxdepth must be at least 1")
        path = self._strip_protocol(path)
        prefix = validate_prefix(f"{path}/" if path else "")
        found: dict[str, dict[str, Any]] = {}
        for name, digest, size, created_at in self._listing(prefix):
            parts = name[len(prefix) :].split("/")
            if withdirs:
                for depth in range(1, len(parts) if maxdepth is None else min(len(parts), maxdepth + 1)):
                    folder = prefix + "/".join(parts[:depth])
                    if folder not in found:
                        found[folder] = _directory(folder)
            if maxdepth is None or len(parts) <= maxdepth:
                found[name] = _file_entry(name, digest, size, created_at)
        if withdirs and path and found:
            found.setdefault(path, _directory(path))
        if not found and path:
            with contextlib.suppress(FileNotFoundError):
                info = self.info(path)
                if info["type"] == "file":
                    found[path] = info
        names = sorted(found)
        return {n: found[n] for n in names} if detail else names

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        if not path:
            return _directory("")
        lake = self.lake
        f = self._bound(lake, validate_name(path), ask_remote=False)
        if f is None:
            if self._is_folder(lake, path):
                return _directory(path)
            if self._scope == LAKE:  # a dataset's file, or bound on another machine since the last sync?
                found = _datasets.dataset_file(lake, path)
                if found is not None:
                    return _file_entry(*found[1])
                f = self._bound(lake, path, ask_remote=True)
        if f is None:
            raise _not_found(path, f"no name {path!r} in {self._where()}")
        record = f.record
        return _file_entry(path, record.digest, record.size, record.created_at)

    def _bound(self, lake: Lake, name: str, ask_remote: bool) -> File | None:
        """The live file bound to ``name``, as this machine knows it or (``ask_remote``) as the
        remote does; None if there is none."""
        try:
            f = lake.file(name, self._scope, ask_remote=ask_remote)
            record = f.record
        except NotFoundError:
            return None
        return f if record.removed_at is None else None

    def _is_folder(self, lake: Lake, path: str) -> bool:
        if self._scope == LAKE:
            return lake.context.catalog.has_prefix(LAKE, f"{path}/") or bool(
                _datasets.dataset_entries(lake, f"{path}/")
            )
        return bool(lake.ls(f"{path}/", self._scope))

    def _listing(self, prefix: str) -> list[_datasets.Entry]:
        """(name, digest, size, created_at) of every live name under ``prefix``, as ``Lake.ls``
        finds them; from the index alone where that is what ``Lake.ls`` reads, since decoding
        each name's metadata would cost most of a 10,000-name listing. In the lake scope, the
        latest version's files of the datasets under ``prefix`` too (``_datasets``)."""
        lake = self.lake
        if self._scope != LAKE and lake.remote is not None:  # the remote holds every machine's puts
            return [(f.name, f.digest, f.size, f.record.created_at) for f in lake.ls(prefix, self._scope)]
        if self._scope != LAKE:
            return list(lake.context.catalog.listing(self._scope, prefix))
        _bind.catch_up(lake.context.catalog, lake.context.refs)  # names bound by a killed process
        names: list[_datasets.Entry] = list(lake.context.catalog.listing(LAKE, prefix))
        datasets = _datasets.dataset_entries(lake, prefix)
        if datasets:
            bound = {n[0] for n in names}
            names.extend(e for e in datasets if e[0] not in bound)
        return names

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        path = validate_name(self._strip_protocol(path))
        if mode == "rb":
            with _lakelet_errors(path):
                return Opened(self._reader(path))
        if mode == "xb" and self.exists(path):
            raise FileExistsError(errno.EEXIST, f"{path!r} is bound already", path)
        if mode in ("wb", "xb"):
            lake = self.lake
            return NewFile(self._binder(lake, path), lake.context.tmp, autocommit)
        raise InvalidArgumentError(
            f"lakelet:// opens files with 'rb', or 'wb' and 'xb' to bind a new name, not {mode!r}"
        )

    def _reader(self, path: str) -> IO[bytes]:
        """The verified content of the name ``path``, or of the dataset file there. As ``info``
        looks: a name this machine knows, then a dataset's file, then a name the remote knows (a
        dataset file read on a lake with a remote asks the remote nothing)."""
        lake = self.lake
        in_datasets = self._scope == LAKE and path.startswith(_datasets.PREFIX)
        if in_datasets and self._bound(lake, path, ask_remote=False) is None:
            found = _datasets.dataset_file(lake, path)
            if found is not None:
                return open(_datasets.local_path(*found), "rb")  # noqa: SIM115  # the caller closes it
        return lake.file(path, self._scope).open("rb")

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        with self.open(path, "rb") as f:
            first, stop, _ = slice(start, end).indices(f.size)
            f.seek(first)
            data: bytes = f.read(max(0, stop - first))
            return data

    def created(self, path: str) -> datetime:
        created: datetime = self._file_info(path)["mtime"]
        return created

    def modified(self, path: str) -> datetime:
        return self.created(path)  # what a name is bound to never changes

    def sign(self, path: str, expiration: int = 100, **kwargs: Any) -> str:
        """A URL another tool can read ``path`` from (``Lake.url``; presigned on cloud stores)."""
        name = validate_name(self._strip_protocol(path))
        with _lakelet_errors(name):
            if self._scope == LAKE:
                return self.lake.url(name, expires=expiration)
            return self.lake.context.scoped(self._scope).url(name, expires=int(expiration))

    def _file_info(self, path: str) -> dict[str, Any]:
        info = self.info(path)
        if info["type"] != "file":
            raise IsADirectoryError(errno.EISDIR, "a directory: only names have a time", info["name"])
        return info

    # writing

    def _binder(self, lake: Lake, name: str) -> Callable[[Path], None]:
        """What binds ``name`` to a finished temp file (and takes the temp file over)."""
        if self._scope != LAKE:
            store = lake.context.scoped(self._scope)

            def put(tmp: Path) -> None:
                try:
                    store.put(name, tmp)
                finally:
                    tmp.unlink(missing_ok=True)

            return put

        def bind(tmp: Path) -> None:
            pending = CURRENT.get()
            if pending is not None:  # inside a stage: bound with its outputs when it returns
                pending.written[name] = tmp
                return
            try:
                with _lakelet_errors(name):
                    lake.add(tmp, name, move=True, progress=False)
            finally:
                tmp.unlink(missing_ok=True)

        return bind

    def put_file(
        self,
        lpath: str | os.PathLike[str],
        rpath: str,
        callback: Callback = DEFAULT_CALLBACK,
        mode: str = "overwrite",
        **kwargs: Any,
    ) -> None:
        """Add the local file ``lpath`` under ``rpath`` (as ``lake.add``: its source is recorded)."""
        name = validate_name(self._strip_protocol(rpath))
        if os.path.isdir(lpath):
            return  # directories are implied by the names under them
        if mode == "create" and self.exists(name):
            raise FileExistsError(errno.EEXIST, f"{name!r} is bound already", name)
        lake = self.lake
        with _lakelet_errors(name):
            if self._scope == LAKE:
                lake.add(lpath, name, progress=_CallbackProgress(callback))
            else:
                lake.context.scoped(self._scope).put(name, lpath)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        with self.open(path1, "rb") as src, self.open(path2, "wb") as dst:
            shutil.copyfileobj(src, dst, _COPY_CHUNK)

    def rm_file(self, path: str) -> None:
        name = validate_name(self._strip_protocol(path))
        self._refuse_in_lake_scope(name, "removed")
        with _lakelet_errors(name):
            self.lake.context.scoped(self._scope).delete(name)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        paths = path if isinstance(path, list) else [path]
        for p in paths:  # before anything is removed
            self._refuse_in_lake_scope(self._strip_protocol(p), "removed")
        for p in reversed(self.expand_path(paths, recursive=recursive, maxdepth=maxdepth)):
            if self.isfile(p):  # directories go with the last name under them
                self.rm_file(p)

    def mv(
        self, path1: Any, path2: Any, recursive: bool = False, maxdepth: int | None = None, **kwargs: Any
    ) -> None:
        if self._scope == LAKE:
            self._refuse_in_lake_scope(self._strip_protocol(path1), "moved (copy it instead)")
        super().mv(path1, path2, recursive=recursive, maxdepth=maxdepth, **kwargs)

    def _refuse_in_lake_scope(self, name: str, verb: str) -> None:
        if self._scope == LAKE:
            info = self.info(name)  # FileNotFoundError first, for a name that is not there
            if info["type"] == "directory":
                what = f"the names under {name!r} are write-once lake names: they cannot be {verb}"
            else:
                what = f"{name!r} is a write-once lake name: it cannot be {verb}"
            raise PermissionError(
                errno.EPERM, f"{what} (lake.rm(name, force=True) removes one, keeping its lineage)", name
            )

    def _where(self) -> str:
        lake = self.lake
        return f"the lake at {lake.root}" + ("" if self._scope == LAKE else f" (scope {self._scope})")


def _directory(path: str) -> dict[str, Any]:
    return {"name": path, "size": 0, "type": "directory"}


def _file_entry(path: str, digest: str | None, size: int, created_at: str) -> dict[str, Any]:
    created = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    return {
        "name": path,
        "size": size,
        "type": "file",
        "digest": digest,
        "created": created.timestamp(),
        "mtime": created,  # pyarrow's and DuckDB's name for it; a name's content never changes
    }


def _not_found(path: str, message: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, message, path)


@contextlib.contextmanager
def _lakelet_errors(path: str) -> Iterator[None]:
    """lakelet's errors as the built-in ones fsspec's callers catch."""
    try:
        yield
    except NotFoundError as e:
        raise _not_found(path, str(e)) from e
    except NameExistsError as e:
        raise FileExistsError(errno.EEXIST, str(e), path) from e


class _CallbackProgress:
    """lakelet's progress reports, as an fsspec callback takes them."""

    def __init__(self, callback: Callback) -> None:
        self._callback = callback
        self._total = 0

    def add_total(self, nbytes: int, /) -> None:
        self._total += nbytes
        self._callback.set_size(self._total)

    def advance(self, nbytes: int, /) -> None:
        self._callback.relative_update(nbytes)
