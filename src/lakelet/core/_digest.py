"""Content digests that name their algorithm (``blake3:…``), and hashing in bounded chunks."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import blake3

from lakelet.core._records import shown
from lakelet.core.errors import InvalidArgumentError

__all__ = [
    "BLOB_ALGORITHMS",
    "CHUNK_SIZE",
    "DEFAULT_ALGORITHM",
    "Digest",
    "Hasher",
    "digest_bytes",
    "is_digest",
    "new_hasher",
]

DEFAULT_ALGORITHM = "blake3"  # chosen by bench/hashing.py: fastest cryptographic hash here
CHUNK_SIZE = 4 << 20


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...
    def hexdigest(self) -> str: ...


def _blake3() -> Hasher:
    # blake3 hashes a large buffer on several threads; small ones stay single-threaded.
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


_ALGORITHMS: dict[str, Callable[[], Hasher]] = {
    "blake3": _blake3,
    "sha256": hashlib.sha256,
}
# hex digits of each algorithm's digest: a digest names a path (objects/<algo>/<hh>/<rest>), so
# one read back from a record must be exactly this, never '../' or an empty rest
_HEX_LENGTHS = {"blake3": 64, "sha256": 64}
_LOWER_HEX = re.compile("[0-9a-f]+")
# A digest as 33 bytes (what the index stores, and what a snapshot is loaded as): one byte naming
# the algorithm, 1 + its place here, then the raw digest. Stored: append, never reorder.
BLOB_ALGORITHMS = ("blake3", "sha256")


@dataclass(frozen=True, slots=True)
class Digest:
    """A content digest together with the algorithm that produced it."""

    algorithm: str
    hexdigest: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """``algorithm:hex`` with a known algorithm and lowercase hex of its length; raises
        InvalidArgumentError (a ValueError) otherwise."""
        if not is_digest(text):
            raise InvalidArgumentError(f"not a digest: {shown(text)}")
        algorithm, _, hexdigest = text.partition(":")
        return cls(algorithm, hexdigest)


def is_digest(text: object) -> bool:
    """Whether ``text`` is a digest ``Digest.parse`` takes (for parsers that keep the string:
    no object made, no exception raised, ~0.3 us)."""
    if type(text) is not str:
        return False
    algorithm, _, hexdigest = text.partition(":")
    return _HEX_LENGTHS.get(algorithm) == len(hexdigest) and _LOWER_HEX.fullmatch(hexdigest) is not None


def new_hasher(algorithm: str = DEFAULT_ALGORITHM) -> Hasher:
    try:
        return _ALGORITHMS[algorithm]()
    except KeyError:
        raise ValueError(f"unknown digest algorithm {algorithm!r}") from None


def digest_bytes(data: bytes | memoryview, algorithm: str = DEFAULT_ALGORITHM) -> Digest:
    if algorithm == "blake3" and len(data) < CHUNK_SIZE:
        # one thread: a thread pool for a small buffer costs more than it saves, and a
        # directory add hashes 10,000 of them
        return Digest(algorithm, blake3.blake3(data).hexdigest())
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return Digest(algorithm, hasher.hexdigest())
