"""Packs: many small objects sent to the remote as one immutable object.

An object store charges per request far more than per byte for small
objects (moto serves ~8 ms per request here whatever its size; S3 adds a
round trip), so a push of 2,000 files of 4 KiB sent as 2,000 PUTs spends its
time on requests. Objects up to ``MEMBER_MAX`` therefore travel in packs of
about ``TARGET`` bytes: one PUT per pack, one (ranged) GET per pack on a pull.

A pack is the plain concatenation of its members, stored at
``packs/<algorithm>/<hh>/<rest of hex>.pack`` under the digest of its own
bytes. Its index (digest, offset and size of every member) is not in the pack:
it is written in the log entry that binds the names using it (``_log``), so a
machine that knows only the remote URL learns where every object is from the
log alone, and a pack that no entry mentions (an interrupted push) holds
nothing anyone can reach. Members are verified one by one when they are read.
A pack that a push sends because a gc may be deleting the key its objects had
(``_sync``) ends with a few random bytes that no member covers, so that its
key is new.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakelet.core._digest import CHUNK_SIZE, DEFAULT_ALGORITHM, Digest, is_digest, new_hasher
from lakelet.core._durable import new_temp_path
from lakelet.core._records import MAX_COUNT, check_count, shown
from lakelet.core.errors import CorruptRecordError, NotFoundError

__all__ = ["MEMBER_MAX", "Member", "Pack", "TARGET", "key_of", "plan", "slices", "write"]

MEMBER_MAX = 1 << 20  # bigger objects go alone: one request is then a small part of their cost
TARGET = 8 << 20  # a pack closes before it would grow past this (one member may exceed it)


@dataclass(frozen=True, slots=True)
class Member:
    """Where one object lies inside a pack."""

    digest: str
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True, slots=True)
class Pack:
    """A pack's digest (which names its key on the remote) and its index."""

    digest: str
    members: tuple[Member, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"pack": self.digest, "members": [[m.digest, m.offset, m.size] for m in self.members]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pack:
        """The one validating parser of a pack line (a log entry's, or a snapshot's): the pack
        and every member named by a strict digest (a digest chooses a key and a local path),
        offsets and sizes counts. Raises CorruptRecordError saying what is wrong."""
        if data.keys() != _PACK_FIELDS:
            raise CorruptRecordError(f"a pack line with the fields {shown(sorted(data))}")
        pack, members = data["pack"], data["members"]
        _check_digest(pack)
        if not isinstance(members, list):
            raise CorruptRecordError(f"the members of pack {shown(pack)} are not a list")
        return cls(pack, tuple(_member(m, pack) for m in members))


_PACK_FIELDS = {"pack", "members"}


def _member(item: object, pack: str) -> Member:
    if not isinstance(item, list) or len(item) != 3:
        raise CorruptRecordError(f"a member of pack {pack} is {shown(item)}, not [digest, offset, size]")
    digest, offset, size = item
    _check_digest(digest)
    for value in (offset, size):
        if type(value) is not int or not 0 <= value <= MAX_COUNT:  # (check_count's message on failure)
            check_count(value, f"the offset or size of {digest} in pack {pack}")
    return Member(digest, offset, size)


def _check_digest(text: object) -> None:
    if not is_digest(text):
        raise CorruptRecordError(f"not a digest: {shown(text)}")


def key_of(pack_digest: str) -> str:
    digest = Digest.parse(pack_digest)
    return f"packs/{digest.algorithm}/{digest.hexdigest[:2]}/{digest.hexdigest[2:]}.pack"


def plan(sizes: dict[str, int]) -> list[list[tuple[str, int]]]:
    """Group objects (digest -> size) into packs of about TARGET bytes.

    Sorted by digest, so that pushing the same set again (after an
    interrupted push) makes the same packs under the same keys.
    """
    groups: list[list[tuple[str, int]]] = []
    current: list[tuple[str, int]] = []
    filled = 0
    for digest in sorted(sizes):
        size = sizes[digest]
        if current and filled + size > TARGET:
            groups.append(current)
            current, filled = [], 0
        current.append((digest, size))
        filled += size
    if current:
        groups.append(current)
    return groups


def write(
    group: list[tuple[str, int]], path_of: Callable[[Digest], Path], tmp_dir: Path, tail: bytes = b""
) -> tuple[Path, Pack]:
    """Concatenate the local objects of ``group``, then ``tail``, into a temp file; returns it
    and its Pack.

    The file is only a staging copy for the upload, so it is not fsynced.
    """
    tmp = new_temp_path(tmp_dir)
    hasher = new_hasher(DEFAULT_ALGORITHM)
    members: list[Member] = []
    offset = 0
    try:
        with open(tmp, "wb") as out:
            for digest, size in group:
                try:
                    source = open(path_of(Digest.parse(digest)), "rb")  # noqa: SIM115
                except FileNotFoundError:
                    raise NotFoundError(
                        f"object {digest} is not stored locally, so it cannot be pushed"
                    ) from None
                with source:
                    copied = 0
                    while chunk := source.read(CHUNK_SIZE):
                        hasher.update(chunk)
                        out.write(chunk)
                        copied += len(chunk)
                if copied != size:
                    raise NotFoundError(f"object {digest} is {copied} bytes locally, expected {size}")
                members.append(Member(digest, offset, size))
                offset += size
            hasher.update(tail)
            out.write(tail)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, Pack(str(Digest(DEFAULT_ALGORITHM, hasher.hexdigest())), tuple(members))


def slices(data: bytes, start: int, members: list[Member]) -> Iterator[tuple[Member, memoryview]]:
    """Each member's bytes out of ``data``, the pack's bytes from offset ``start`` on.

    A member cut short (a truncated pack) comes out short: its digest check fails.
    """
    view = memoryview(data)
    for member in members:
        yield member, view[max(member.offset - start, 0) : max(member.end - start, 0)]
