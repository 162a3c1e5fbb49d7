"""``Lake.add``'s batch ingest: hash and store the content, then bind the names.

The order is what makes a crash harmless: every object is durable before any
name points at it, names are compared with what is already bound before
anything is written, and all the names of one call are bound by one segment
(``_bind``): all of them or none. A moved source is linked into the store, not
renamed, and unlinked only once its name is bound: a kill in between leaves the
user's file where it was (and an unbound blob for gc), never only in the store.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from lakelet.catalog import _bind
from lakelet.core import _config, _faults
from lakelet.core._digest import CHUNK_SIZE, DEFAULT_ALGORITHM, Digest
from lakelet.core._durable import new_temp_path
from lakelet.core._meta import check_user_meta
from lakelet.core._names import validate_name
from lakelet.core._progress import SILENT, Progress, begin_phase
from lakelet.core._version import __version__
from lakelet.core.errors import InvalidArgumentError, InvalidNameError, SourceError, StorageError
from lakelet.storage._objects import (
    ObjectStore,
    StoredBlob,
    hash_stream,
    is_fingerprinted,
    link_file,
    sync_filesystem,
    write_blob,
    write_small_blob,
)
from lakelet.storage._refs import NameRecord, check_same_content, utc_now
from lakelet.storage._scopes import LAKE
from lakelet.storage._sources import AddSource, Source, from_memory, read_small, redact, resolve

if TYPE_CHECKING:
    from lakelet.lake._context import LakeContext

__all__ = ["add", "add_environment", "bind_outputs", "ingest"]


def add(
    context: LakeContext,
    src: AddSource,
    name: str,
    *,
    move: bool,
    progress: Progress,
    meta: Mapping[str, Any] | None = None,
    follow_symlinks: bool = True,
) -> tuple[list[NameRecord], bool]:
    """Store ``src`` (a path, directory, http(s) URL, fsspec URL, bytes, a binary file object or
    an iterable of bytes) under ``name``; a directory's files under ``name/<relative path>``;
    ``meta``: the user's own keys for the records. Returns the records, and whether ``src``
    was one file."""
    name = validate_name(name)
    user_meta = check_user_meta(meta)
    in_memory = from_memory(src)
    if in_memory is not None:
        if move:
            raise InvalidArgumentError("move=True needs a path: data in memory can only be copied")
        sources, label = [in_memory[0]], in_memory[1]
    else:
        path = cast("str | os.PathLike[str]", src)
        sources, label = resolve(path, follow_symlinks), redact(os.fspath(path))
        if not sources:
            raise SourceError(f"{os.fspath(path)} holds no files to add")
    single = len(sources) == 1 and sources[0].relative == ""
    names = [name] if single else [validate_name(f"{name}/{s.relative}") for s in sources]
    if len(set(names)) != len(names):
        raise InvalidNameError(f"{label} maps two files to one name")
    # the lineage of an add: where it came from, and with what (user and time are in the record)
    record_meta = {**user_meta, "source": label, **add_environment()}
    return ingest(context, list(zip(names, sources, strict=True)), record_meta, move, progress), single


def add_environment() -> dict[str, str]:
    """Where and with what a file was added or made: host, lakelet and Python versions."""
    return {"host": socket.gethostname(), "lakelet": __version__, "python": platform.python_version()}


def bind_outputs(
    context: LakeContext,
    outputs: list[tuple[str, Path | bytes, bool]],
    meta: dict[str, Any],
    metas: dict[str, dict[str, Any]] | None = None,
    apart: Collection[str] = (),
) -> list[NameRecord]:
    """Bind stage outputs (name, path or the bytes themselves, whether to move the path in): all
    in one segment, or none.
    ``metas``: the metadata of some names, in place of ``meta`` (one segment for many runs).
    ``apart``: names a write-through remote is sent in a batch of their own (run records: a
    remote packs the small objects of a batch together, and a record outlives its outputs).

    What a stage derived is recomputable, so its objects are not fsynced (docs/local-layout.md,
    "Durability by kind"): the segment that binds them is. A power cut may then leave a name on
    a torn object, which every read verifies: the run record or output fails to load, and the
    stage runs again under the key's next generation."""
    items = [
        (validate_name(name), Source.of_bytes(body) if isinstance(body, bytes) else resolve(body)[0])
        for name, body, _ in outputs
    ]
    moved = [name for name, body, move in outputs if move and not isinstance(body, bytes)]
    return ingest(context, items, meta, moved, SILENT, derived=True, metas=metas, apart=apart)


def ingest(
    lake: LakeContext,
    items: list[tuple[str, Source]],
    meta: dict[str, Any],
    move: bool | Collection[str],
    progress: Progress,
    *,
    derived: bool = False,
    metas: dict[str, dict[str, Any]] | None = None,
    apart: Collection[str] = (),
) -> list[NameRecord]:
    """Bind ``items`` (name, source) in one segment; ``move``: every source is moved in, or
    only those of these names (a stage's temp files beside a file it returned, which is copied).
    ``derived``: stage outputs, whose objects need not be durable (``bind_outputs``).
    Raises StorageError when the lake's disk refuses a write (nothing is bound here then)."""
    try:
        return _ingest(lake, items, meta, move, progress, derived, metas or {}, set(apart))
    except OSError as e:  # the full disk of C1 was a raw traceback
        where = e.filename if isinstance(e.filename, str) else os.fspath(lake.root)
        raise StorageError(f"cannot add: {e.strerror or e} ({where})", path=where) from None


def _ingest(
    lake: LakeContext,
    items: list[tuple[str, Source]],
    meta: dict[str, Any],
    move: bool | Collection[str],
    progress: Progress,
    derived: bool,
    metas: dict[str, dict[str, Any]],
    apart: set[str],
) -> list[NameRecord]:
    moved = {n for n, _ in items} if move is True else set(move or ())
    progress.add_total(sum(s.size or 0 for _, s in items))
    catalog, refs = lake.catalog, lake.refs
    # Names already bound are compared by hash only, before anything is written,
    # so a conflict anywhere in a directory changes nothing and an unchanged
    # re-add costs no copy.
    _bind.catch_up(catalog, refs)
    bound = catalog.get_many(LAKE, [n for n, _ in items])
    existing: dict[str, NameRecord] = {}
    for n, source in items:
        record = bound.get(n)
        if record is None:
            continue
        if record.removed_at is None:
            with source.open() as reader:
                digest, _ = hash_stream(reader, _algorithm_of(record), progress)
            record_check = NameRecord(LAKE, n, str(digest), 0, "", "")
        else:
            record_check = record
        check_same_content(record, record_check)
        existing[n] = record

    durable = not derived and len(items) - len(existing) <= 1
    creator = _config.current_user()
    stored: list[tuple[str, Source, StoredBlob]] = []  # filled as they are stored
    modes: dict[str, int] = {}  # the permissions of moved sources, given back on failure
    try:
        todo = [(n, s) for n, s in items if n not in existing]
        _store_objects(lake, todo, moved, durable, progress, stored, modes)
        if not durable and not derived:
            sync_filesystem(lake.root)
        _faults.reached("objects-stored")

        now = utc_now()
        wanted = [
            NameRecord(LAKE, n, str(b.digest), b.size, now, creator, metas.get(n, meta)) for n, _, b in stored
        ]
        syncer = lake.syncer() if lake.config.upload == "write-through" else None
        if syncer is not None and wanted:
            begin_phase(progress, "uploading")
            # the remote decides who owns a name; ``apart`` goes in a second batch
            batches = [[r for r in wanted if r.name not in apart], [r for r in wanted if r.name in apart]]
            wanted = [r for batch in batches if batch for r in syncer.publish(batch, progress)]
        root = len(os.fspath(lake.root)) + 1  # blobs are under the root: cut, not relative_to
        verified = [
            (b.location[root:], fp)
            for _, _, b in stored
            if (fp := b.fingerprint) is not None and is_fingerprinted(b.size)
        ]
        on_disk = [(n, b.location) for n, _, b in stored]  # a gc may delete them until bound
        created, same = _bind.bind_once(catalog, refs, wanted, verified, on_disk, durable=not derived)
    except BaseException:
        _give_back_moved(lake, stored, modes)
        raise
    existing.update((r.name, r) for r in same)
    _remove_moved_sources([s for n, s in items if n in moved])
    by_name = {r.name: r for r in [*created, *existing.values()]}
    return [by_name[n] for n, _ in items]


def _store_objects(
    lake: LakeContext,
    items: list[tuple[str, Source]],
    moved: set[str],
    durable: bool,
    progress: Progress,
    stored: list[tuple[str, Source, StoredBlob]],
    modes: dict[str, int],
) -> None:
    """Store the content of ``items`` into ``stored``, moving in the sources of ``moved`` (their
    permissions into ``modes``); durable only if ``durable``."""
    objects = lake.objects
    assert objects is not None
    for n, source in items:
        move = n in moved
        if move and source.location is not None:
            modes[n] = os.stat(source.location).st_mode & 0o7777
        if not durable and source.held is not None:
            # a stage's small results: ~5 system calls, where a temp file moved in took ~20
            blob = write_small_blob(source.held, os.fspath(lake.tmp), objects)
            progress.advance(blob.size)
        elif durable or move or source.location is None or (source.size or 0) >= CHUNK_SIZE:
            blob = _store_lake_object(lake, source, move, durable, progress)
        else:
            # Most of a directory is small files, where per-file overhead, not bytes, is the cost.
            blob = _store_small(lake, source, objects)
            progress.advance(blob.size)
        if durable and not blob.created:
            # the same bytes stored before, maybe by a stage, whose objects are not synced:
            # what the user adds must survive a power cut before its name does
            _fsync_file(blob.location)
        stored.append((n, source, blob))


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _store_small(lake: LakeContext, source: Source, objects: ObjectStore) -> StoredBlob:
    data = read_small(source, CHUNK_SIZE)
    if data is not None:
        return write_small_blob(data, os.fspath(lake.tmp), objects)
    with source.open() as reader:  # it grew past a chunk since it was listed: stream it
        return write_blob(reader, lake.tmp, objects.path, durable=False)


def _store_lake_object(
    lake: LakeContext, source: Source, move: bool, durable: bool, progress: Progress
) -> StoredBlob:
    objects = lake.objects
    assert objects is not None
    if move and (path := source.local_path) is not None:
        with source.open() as reader:
            digest, size = hash_stream(reader, DEFAULT_ALGORITHM, progress)
        # Linked in, not renamed: the source keeps its name until ours is bound, so a kill
        # in between leaves it in place (D1: renamed files were lost to the next gc).
        blob = link_file(path, digest, size, objects.path, lake.tmp, durable=durable)
        if blob is not None:
            return blob
    with source.open() as reader:
        return write_blob(reader, lake.tmp, objects.path, durable=durable, progress=progress)


def _give_back_moved(
    lake: LakeContext, stored: list[tuple[str, Source, StoredBlob]], modes: dict[str, int]
) -> None:
    """After a failed move-add, give the user back each file that was linked into the store
    as a file of its own, with its permissions: the blob may be bound by then (a failure after
    the bind, or another process adding the same content), so it stays as it is."""
    for n, source, blob in stored:
        path = source.local_path
        if n not in modes or not blob.created or path is None:
            continue
        with contextlib.suppress(OSError):  # then the file stays read-only, its content intact
            if not os.path.samefile(path, blob.path):
                continue
            copy = new_temp_path(lake.tmp)  # the lake's filesystem is the file's: it was linked
            try:
                shutil.copyfile(path, copy)
                os.chmod(copy, modes[n])
                os.replace(copy, path)
            finally:
                copy.unlink(missing_ok=True)


def _remove_moved_sources(sources: list[Source]) -> None:
    """Unlink the sources of a move once their names are bound. The add is done by then:
    a source that cannot be removed stays where it is (a copy of bound content)."""
    for source in sources:
        if source.location is not None:
            with contextlib.suppress(OSError):
                os.unlink(source.location)
    for source in sources:  # then the directories they leave empty
        if source.location is None or not source.relative:
            continue
        parent = Path(source.location).parent
        for _ in source.relative.split("/"):
            with contextlib.suppress(OSError):
                parent.rmdir()
            parent = parent.parent


def _algorithm_of(record: NameRecord) -> str:
    return Digest.parse(record.digest).algorithm
