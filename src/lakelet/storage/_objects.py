"""Content-addressed blobs on local disk: written once, atomically, and verified on read.

A blob is written by hashing and copying in one pass, in bounded chunks, into
a temporary file in the same filesystem, then fsynced and renamed into place
(``os.replace`` is atomic), so a reader or a crash never sees a partial blob.
Blobs are read-only on disk. A read re-hashes a blob unless its stat
fingerprint (inode, size, mtime, ctime) is the one recorded when it was last
verified: writing to a file, chmod-ing it or replacing it changes its ctime,
which user space cannot set back. Blobs under 8 KiB are always re-hashed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import io
import mmap
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lakelet.core import _faults
from lakelet.core._digest import CHUNK_SIZE, DEFAULT_ALGORITHM, Digest, Hasher, digest_bytes, new_hasher
from lakelet.core._durable import fsync_dir, new_temp_name, new_temp_path, write_all
from lakelet.core._progress import SILENT, Progress
from lakelet.core._streams import Reader
from lakelet.core.errors import IntegrityError

__all__ = [
    "Fingerprint",
    "ObjectStore",
    "StoredBlob",
    "VerifiedCache",
    "VerifiedReader",
    "adopt_file",
    "fingerprint_of",
    "hash_file",
    "hash_stream",
    "is_cross_device",
    "is_fingerprinted",
    "link_file",
    "start_writeback",
    "sync_filesystem",
    "write_blob",
    "write_small_blob",
]

Fingerprint = tuple[int, int, int, int]


class VerifiedCache(Protocol):
    """Remembers the stat fingerprint of blobs whose content was verified."""

    def verified_fingerprint(self, key: str) -> Fingerprint | None: ...
    def record_verified(self, key: str, fingerprint: Fingerprint) -> None: ...


@dataclass(frozen=True, slots=True)
class StoredBlob:
    digest: Digest
    size: int
    location: str  # its path; a directory add stores 10,000 of these and reads few ``path``s
    fingerprint: Fingerprint | None  # None when too small to be fingerprinted (is_fingerprinted)
    created: bool  # False when identical content was already in place

    @property
    def path(self) -> Path:
        return Path(self.location)


def fingerprint_of(st: os.stat_result) -> Fingerprint:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def sync_filesystem(path: Path) -> None:
    """Flush everything written to the filesystem holding ``path``.

    One ``syncfs`` after a batch costs what a single fsync does, where an
    fsync per small file costs ~0.5 ms each (measured here): a 10,000-file
    add would spend 5 s in fsync alone.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if getattr(_libc, "syncfs", None) is None or _libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


_SYNC_FILE_RANGE_WRITE = 2  # start writeback of a range without waiting for it
_WRITEBACK_AFTER = 16 << 20


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Let the disk write a big file while we are still copying it, so the closing fsync
    waits for the tail only: the copy and the disk overlap instead of adding up."""
    sync_file_range = getattr(_libc, "sync_file_range", None)
    if sync_file_range is not None:
        sync_file_range(fd, ctypes.c_int64(offset), ctypes.c_int64(length), _SYNC_FILE_RANGE_WRITE)


def start_writeback(path: Path | str) -> None:
    """Start writing a just-closed file to disk without waiting for it, so that the sync
    which later makes it durable waits for less (or overlaps with work done meanwhile)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        _start_writeback(fd, 0, 0)  # 0: to the end of the file
    finally:
        os.close(fd)


_buffers = threading.local()


def _chunk_buffer() -> tuple[bytearray, memoryview]:
    """One CHUNK_SIZE buffer per thread: allocating (and zeroing) 4 MiB per small file would
    cost more than the file itself."""
    cached = getattr(_buffers, "buffer", None)
    if cached is None:
        buffer = bytearray(CHUNK_SIZE)
        cached = _buffers.buffer = (buffer, memoryview(buffer))
    return cached


def hash_stream(
    reader: Reader, algorithm: str = DEFAULT_ALGORITHM, progress: Progress = SILENT
) -> tuple[Digest, int]:
    """Digest and size of everything ``reader`` yields, read in bounded chunks."""
    hasher = new_hasher(algorithm)
    buffer, view = _chunk_buffer()
    size = 0
    while n := reader.readinto(buffer):
        hasher.update(view[:n])
        size += n
        progress.advance(n)
    return Digest(algorithm, hasher.hexdigest()), size


def hash_file(path: Path | str, algorithm: str = DEFAULT_ALGORITHM) -> tuple[Digest, int]:
    """Digest and size of a local file nobody is writing. blake3 maps it into memory rather
    than copying it through a buffer: for a file just written (in the page cache) that is
    about half the time of ``hash_stream``."""
    hasher = new_hasher(algorithm)
    update_mmap = getattr(hasher, "update_mmap", None)
    if update_mmap is None:
        with open(path, "rb") as f:
            return hash_stream(f, algorithm)
    size = os.stat(path).st_size
    update_mmap(path)
    return Digest(algorithm, hasher.hexdigest()), size


def write_blob(
    reader: Reader,
    tmp_dir: Path,
    place: Callable[[Digest], Path],
    *,
    algorithm: str = DEFAULT_ALGORITHM,
    durable: bool = True,
    progress: Progress = SILENT,
) -> StoredBlob:
    """Copy ``reader`` to the path ``place(digest)`` while hashing it, atomically.

    With ``durable=False`` the caller owes one ``sync_filesystem`` before it
    publishes a name pointing at the blob.
    """
    tmp = new_temp_path(tmp_dir)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        hasher = new_hasher(algorithm)
        size = _copy_in_kernel(reader, fd, hasher, durable, progress)
        if size is None:
            size = _copy_through_buffer(reader, fd, hasher, durable, progress)
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        return _place(tmp, Digest(algorithm, hasher.hexdigest()), size, place, durable)
    except BaseException:
        tmp.unlink(missing_ok=True)  # not placed (a full disk): gone after the rename
        raise


def _copy_through_buffer(reader: Reader, fd: int, hasher: Hasher, durable: bool, progress: Progress) -> int:
    buffer, view = _chunk_buffer()
    size = flushed = 0
    while n := reader.readinto(buffer):
        chunk = view[:n]
        hasher.update(chunk)
        write_all(fd, chunk)
        size += n
        progress.advance(n)
        if durable and size - flushed >= _WRITEBACK_AFTER:
            _start_writeback(fd, flushed, size - flushed)
            flushed = size
        _faults.reached("blob-partly-written")
    return size


_KERNEL_COPY_SPAN = 32 << 20
# copy_file_range refuses these pairs of files (another filesystem on an older kernel, a
# filesystem without support): the buffered copy takes over.
_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}


def _copy_in_kernel(reader: Reader, fd: int, hasher: Hasher, durable: bool, progress: Progress) -> int | None:
    """Copy a local file with ``copy_file_range`` and hash what was written, span by span;
    None (nothing written) when the reader is not a plain file or the kernel cannot.

    The bytes never pass through Python: for a 1 GiB file this takes half the time of
    reading and writing 4 MiB chunks (bench/ingest.py). The digest is taken from the
    copy itself (its pages are still in memory), so a source that changes meanwhile
    cannot leave a blob that differs from its digest.
    """
    if not isinstance(reader, io.FileIO):  # a buffered reader may hold bytes ahead of its fd
        return None
    source = reader.fileno()
    if not stat.S_ISREG(os.fstat(source).st_mode):
        return None
    size = 0
    while True:
        try:
            n = os.copy_file_range(source, fd, _KERNEL_COPY_SPAN)
        except OSError as e:
            if size == 0 and e.errno in _NO_KERNEL_COPY:
                return None
            raise
        if n == 0:
            return size
        if durable:
            _start_writeback(fd, size, n)
        _hash_span(fd, size, n, hasher)
        size += n
        progress.advance(n)
        _faults.reached("blob-partly-written")


def _hash_span(fd: int, offset: int, length: int, hasher: Hasher) -> None:
    base = offset - offset % mmap.ALLOCATIONGRANULARITY  # mmap offsets are page-aligned
    with (
        mmap.mmap(fd, offset + length - base, offset=base, access=mmap.ACCESS_READ) as span,
        memoryview(span) as view,
    ):
        hasher.update(view[offset - base :])


def write_small_blob(
    data: bytes | memoryview,
    tmp_dir: str,
    store: ObjectStore,
    *,
    algorithm: str = DEFAULT_ALGORITHM,
    digest: Digest | None = None,
) -> StoredBlob:
    """Store ``data``, a small file read whole, under its digest, atomically.

    Written to an unnamed file (``O_TMPFILE``) that is linked in under its digest
    once complete: a crash leaves nothing to clean up, and it costs one directory
    entry where a named temp file and a rename cost three. Content already stored
    writes no object. Not durable: the caller owes one ``sync_filesystem`` before
    it publishes a name pointing at the blob. Paths are plain strings here: a
    10,000-file add would otherwise build and parse some 50,000 ``Path`` objects.
    ``digest``: the digest of ``data``, when the caller has just computed it.
    """
    if digest is None:
        digest = digest_bytes(data, algorithm)
    final = store.path_name(digest)
    fd = _open_unnamed(tmp_dir)
    if fd is None:
        return _write_small_named(data, digest, final, tmp_dir)
    try:
        write_all(fd, data)
        _faults.reached("blob-before-rename")
        try:
            _link_unnamed(fd, final)
        except FileExistsError:
            st = os.stat(final)
            if st.st_size != len(data):  # a damaged copy: replace it
                return _write_small_named(data, digest, final, tmp_dir)
            return StoredBlob(digest, len(data), final, fingerprint_of(st), created=False)
        # after the link, which sets the ctime a reader will see
        fingerprint = fingerprint_of(os.fstat(fd)) if is_fingerprinted(len(data)) else None
    finally:
        os.close(fd)
    _faults.reached("blob-after-rename")
    return StoredBlob(digest, len(data), final, fingerprint, created=True)


def _write_small_named(data: bytes | memoryview, digest: Digest, final: str, tmp_dir: str) -> StoredBlob:
    """``write_small_blob`` through a named temp file and a rename, where unnamed files fail."""
    if os.access(final, os.F_OK) and (st := os.stat(final)).st_size == len(data):
        return StoredBlob(digest, len(data), final, fingerprint_of(st), created=False)
    tmp = new_temp_name(tmp_dir)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        write_all(fd, data)
        _faults.reached("blob-before-rename")
        _replace_creating_parent(tmp, final)
        st = os.fstat(fd)  # after the rename, which sets the ctime a reader will see
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    _faults.reached("blob-after-rename")
    return StoredBlob(digest, len(data), final, fingerprint_of(st), created=True)


# Whether a directory takes O_TMPFILE (ext4, xfs, btrfs, tmpfs do; some network and FUSE
# filesystems do not), learnt on first use; and /proc/self/fd, which links an unnamed file
# in by its descriptor without needing CAP_DAC_READ_SEARCH (as AT_EMPTY_PATH would).
_unnamed_ok: dict[str, bool] = {}
_proc_fd_dir: int | None = None


def _open_unnamed(tmp_dir: str) -> int | None:
    global _proc_fd_dir
    if _unnamed_ok.get(tmp_dir) is False:
        return None
    try:
        if _proc_fd_dir is None:
            _proc_fd_dir = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fd = os.open(tmp_dir, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o444)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            raise
        _unnamed_ok[tmp_dir] = False
        return None
    _unnamed_ok[tmp_dir] = True
    return fd


def _link_unnamed(fd: int, final: str) -> None:
    """Give the unnamed file ``fd`` the name ``final``; FileExistsError if it is taken."""
    try:
        os.link(str(fd), final, src_dir_fd=_proc_fd_dir, follow_symlinks=True)
    except FileNotFoundError:  # the fan-out directory's first object
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.link(str(fd), final, src_dir_fd=_proc_fd_dir, follow_symlinks=True)


def _forget_proc_fd_dir() -> None:
    # A forked child inherits a descriptor for its parent's /proc/<pid>/fd: its own
    # descriptors are not there.
    global _proc_fd_dir
    if _proc_fd_dir is not None:
        with contextlib.suppress(OSError):
            os.close(_proc_fd_dir)
        _proc_fd_dir = None


os.register_at_fork(after_in_child=_forget_proc_fd_dir)


def _replace_creating_parent(tmp: str | Path, final: str | Path) -> None:
    # The fan-out directories exist after the first few hundred objects: try the rename
    # first rather than pay a mkdir (and, with exist_ok, a stat) for every object.
    try:
        os.replace(tmp, final)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.replace(tmp, final)


def adopt_file(
    path: Path,
    digest: Digest,
    size: int,
    place: Callable[[Digest], Path],
    *,
    durable: bool = True,
) -> StoredBlob:
    """Move an already hashed file into the store (``add --move`` on one filesystem).

    When identical content is already stored, ``path`` is left in place
    (``created=False``) for the caller to remove once the name is bound.
    """
    final = place(digest)
    if final.is_file() and final.stat().st_size == size:
        return StoredBlob(digest, size, os.fspath(final), fingerprint_of(final.stat()), created=False)
    os.chmod(path, 0o444)
    if durable:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    return _place(path, digest, size, place, durable)


def link_file(
    path: Path,
    digest: Digest,
    size: int,
    place: Callable[[Digest], Path],
    tmp_dir: Path,
    *,
    durable: bool = True,
) -> StoredBlob | None:
    """Store an already hashed file by giving it a second name in the store (``add --move`` on
    one filesystem); None when this filesystem cannot link it there (the caller copies).

    ``path`` stays where it is, read-only, for the caller to unlink once the name is bound:
    a process killed before the bind leaves the user's file in place, never only in the
    store, where a gc would delete it as unreferenced. When identical content is already
    stored, ``path`` is not touched (``created=False``).
    """
    final = place(digest)
    if final.is_file() and final.stat().st_size == size:
        return StoredBlob(digest, size, os.fspath(final), fingerprint_of(final.stat()), created=False)
    tmp = new_temp_path(tmp_dir)  # linked under a temp name first: os.link cannot replace
    try:
        os.link(path, tmp, follow_symlinks=False)
    except OSError:  # another filesystem, no hard links, or linking a file we do not own
        return None
    st = os.lstat(tmp)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 2 or st.st_size != size:
        # A symlink (the store would hold the link), or a file with other names that would
        # stay writable beside the blob, or one that changed since it was hashed: copy it.
        tmp.unlink()
        return None
    try:
        os.chmod(tmp, 0o444)  # one inode: the user's file is read-only until it is unlinked
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        return _place(tmp, digest, size, place, durable)
    except BaseException:
        if os.path.lexists(tmp):  # not placed: the user's file is theirs again, as it was
            tmp.unlink()
            with contextlib.suppress(OSError):
                os.chmod(path, stat.S_IMODE(st.st_mode))
        raise


def _place(
    tmp: Path, digest: Digest, size: int, place: Callable[[Digest], Path], durable: bool
) -> StoredBlob:
    final = place(digest)
    try:
        st = final.stat()
    except FileNotFoundError:
        pass
    else:
        if st.st_size == size:
            # Same content is already stored: keep the existing blob.
            tmp.unlink(missing_ok=True)
            return StoredBlob(digest, size, os.fspath(final), fingerprint_of(st), created=False)
    _faults.reached("blob-before-rename")
    _replace_creating_parent(tmp, final)
    if durable:
        fsync_dir(final.parent)
    _faults.reached("blob-after-rename")
    return StoredBlob(digest, size, os.fspath(final), fingerprint_of(final.stat()), created=True)


# Hashing a blob this small (~3 us for 4 KiB here) costs less than looking its fingerprint up
# in the index (~8 us), and recording one costs a write: small blobs are re-hashed on every
# read instead, and a 10,000-file add writes no fingerprint rows for them.
_FINGERPRINT_FROM = 8 << 10


def is_fingerprinted(size: int) -> bool:
    """Whether reads of a blob of ``size`` bytes trust a recorded fingerprint (else re-hash)."""
    return size >= _FINGERPRINT_FROM


class VerifiedReader:
    """Opens blobs for reading after checking they still hold their digest."""

    def __init__(self, root: Path, cache: VerifiedCache) -> None:
        self._root = root
        self._cache = cache

    def open(self, path: Path, digest: Digest, size: int) -> io.BufferedReader:
        """A binary file positioned at 0. Raises IntegrityError, FileNotFoundError."""
        f = open(path, "rb")  # noqa: SIM115 - handed to the caller
        try:
            self.check(f, path, digest, size)
        except BaseException:
            f.close()
            raise
        return f

    def check(self, f: io.BufferedReader, path: Path, digest: Digest, size: int) -> None:
        st = os.fstat(f.fileno())
        if st.st_size != size:
            raise _altered_size(digest, st.st_size, size)
        cached = is_fingerprinted(size)
        key = self._key(path) if cached else ""
        fingerprint = fingerprint_of(st)
        if cached and self._cache.verified_fingerprint(key) == fingerprint:
            return
        actual, _ = hash_stream(f, digest.algorithm)
        f.seek(0)
        if actual != digest:
            raise _altered_content(digest, actual)
        if cached:
            self._cache.record_verified(key, fingerprint)

    @staticmethod
    def read(path: str, digest: Digest, size: int) -> bytes:
        """The whole content of a small blob, read at once and hashed from memory (a run record,
        a stage's small value: no buffered file object, no fingerprint row, ~3x cheaper than
        ``open`` and a read). Raises IntegrityError, FileNotFoundError."""
        fd = os.open(path, os.O_RDONLY)
        try:
            found = os.fstat(fd).st_size
            if found != size:  # checked before reading: an altered blob may be any size
                raise _altered_size(digest, found, size)
            data = os.read(fd, size)
            while len(data) < size and (more := os.read(fd, size - len(data))):
                data += more
        finally:
            os.close(fd)
        if len(data) != size:  # cut while read
            raise _altered_size(digest, len(data), size)
        actual = digest_bytes(data, digest.algorithm)
        if actual != digest:
            raise _altered_content(digest, actual)
        return data

    def remember(self, blob: StoredBlob) -> None:
        if blob.fingerprint is not None and is_fingerprinted(blob.size):
            self._cache.record_verified(self._key(blob.path), blob.fingerprint)

    def _key(self, path: Path) -> str:
        return path.relative_to(self._root).as_posix()


def _altered_size(digest: Digest, found: int, size: int) -> IntegrityError:
    return IntegrityError(
        f"stored object {digest} is {found} bytes, expected {size}: "
        "it was altered on disk; run `lakelet fsck`",
        digest=str(digest),
    )


def _altered_content(digest: Digest, found: Digest) -> IntegrityError:
    return IntegrityError(
        f"stored object {digest} does not match its digest (found {found}): "
        "it was altered on disk; run `lakelet fsck`",
        digest=str(digest),
    )


class ObjectStore:
    """The lake's shared blobs: ``objects/<algorithm>/<hh>/<rest of hex>``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._prefix = os.path.join(directory, "")

    def path(self, digest: Digest) -> Path:
        return Path(self.path_name(digest))

    def path_name(self, digest: Digest) -> str:
        """``path`` as a string, for the small-file path of a directory add."""
        h = digest.hexdigest
        return f"{self._prefix}{digest.algorithm}/{h[:2]}/{h[2:]}"

    def has(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def remove(self, digest: Digest) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def digests(self) -> Iterator[Digest]:
        if not self.directory.is_dir():
            return
        for algorithm_dir in sorted(self.directory.iterdir()):
            for prefix_dir in sorted(algorithm_dir.iterdir()):
                for entry in sorted(prefix_dir.iterdir()):
                    yield Digest(algorithm_dir.name, prefix_dir.name + entry.name)


def is_cross_device(error: OSError) -> bool:
    return error.errno == errno.EXDEV
