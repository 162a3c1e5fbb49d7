"""Publishing a whole file under a name: durable before it is visible, all or nothing.

``publish_file`` writes a temp file on the name's filesystem, fsyncs it, gives it the
name, then fsyncs the directory holding the name. Two ways to give the name:

- create-once (``os.link``): the first writer takes the name, a later one gets
  FileExistsError; for write-once names (segments, manifests, a new lake's config).
- replace (``os.replace``): the name moves from the old content to the new at once.

The fsync before matters because a link or rename is metadata, which a filesystem may
commit before the file's data: a power cut could then leave the name on a file that
was never written (empty, or zeros). The fsync after makes the name itself survive the
power cut, so a caller may report the write as done.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import stat
from pathlib import Path

from lakelet.core import _faults
from lakelet.core._streams import Readable
from lakelet.core.errors import InvalidArgumentError

__all__ = [
    "check_replaceable",
    "fsync_dir",
    "make_dirs",
    "new_temp_name",
    "new_temp_path",
    "publish_file",
    "write_all",
]


def write_all(fd: int, data: bytes | memoryview) -> None:
    written = os.write(fd, data)  # a file on disk takes it whole: no view to slice then
    if written < len(data):
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


def fsync_dir(path: Path) -> None:
    """Make a rename or link inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_temp_path(tmp_dir: Path) -> Path:
    return Path(new_temp_name(os.fspath(tmp_dir)))


_TEMP_TAG = secrets.token_hex(4)  # with the pid, unique even if a dead process's pid comes back
_temp_numbers = itertools.count()  # next() is atomic under the GIL, so threads share it


def new_temp_name(tmp_dir: str) -> str:
    # The pid first: fsck removes the temp files of processes that are gone. A counter, not
    # random bytes per file: a getrandom call per object adds up over a directory add.
    return f"{tmp_dir}/{os.getpid()}-{_TEMP_TAG}{next(_temp_numbers):x}.tmp"


def publish_file(
    path: Path,
    content: bytes | Path | Readable,
    tmp_dir: Path,
    *,
    replace: bool = False,
    mode: int = 0o666,
    point: str | None = None,
    sync: bool = True,
) -> None:
    """Give ``path`` the bytes ``content`` (or a copy of the file at ``content``, or what is
    left to read from the binary file ``content``), durably. On any error, the temp file goes
    and ``path`` keeps what it held.

    ``tmp_dir`` must be on the filesystem of ``path``; missing parent directories of
    ``path`` are created, durably. ``mode`` goes through the umask, as ``open``'s does.
    ``point`` names the ``_faults`` point reached once the temp file is durable.
    Raises FileExistsError if ``path`` exists, unless ``replace``. ``sync=False`` skips both
    fsyncs: still all or nothing against a kill, but a power cut may lose or tear the file
    (for recomputable data: docs/local-layout.md, "Durability by kind").
    """
    make_dirs(path.parent)
    tmp = new_temp_path(tmp_dir)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            if isinstance(content, bytes | bytearray | memoryview):
                write_all(fd, content)
            else:
                with contextlib.ExitStack() as stack, open(fd, "wb", closefd=False) as target:
                    source = content
                    if isinstance(source, Path):
                        source = stack.enter_context(open(source, "rb"))
                    shutil.copyfileobj(source, target, 1 << 20)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if point is not None:
            _faults.reached(point)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # unlike a rename, fails if the name is taken
    finally:
        tmp.unlink(missing_ok=True)  # the temp name of a linked file; nothing after a replace
    if sync:
        fsync_dir(path.parent)


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFLNK: "a symlink",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def check_replaceable(path: Path) -> None:
    """Raise InvalidArgumentError unless ``path`` is absent or a regular file: what a user
    names as a destination is replaced by a rename, which would put a regular file in place
    of a FIFO, a device (``/dev/null``, as root) or a symlink rather than write through it."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode):
        return
    kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    raise InvalidArgumentError(f"{path} is {kind}: give the path of a regular file (or of a new one)")


def make_dirs(directory: Path) -> None:
    """``mkdir -p``, each new directory's entry durable (else a power cut could lose a
    new folder and every file published in it)."""
    if directory.is_dir():
        return
    make_dirs(directory.parent)
    with contextlib.suppress(FileExistsError):
        directory.mkdir()
        fsync_dir(directory.parent)
