"""Content digests that name their algorithm (``blake3:…``), and hashing in bounded chunks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import blake3

__all__ = ["CHUNK_SIZE", "DEFAULT_ALGORITHM", "Digest", "Hasher", "digest_bytes", "new_hasher"]

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


@dataclass(frozen=True, slots=True)
class Digest:
    """A content digest together with the algorithm that produced it."""

    algorithm: str
    hexdigest: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        algorithm, sep, hexdigest = text.partition(":")
        if not sep or algorithm not in _ALGORITHMS or not hexdigest or not _is_hex(hexdigest):
            raise ValueError(f"not a digest: {text!r}")
        return cls(algorithm, hexdigest)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


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
