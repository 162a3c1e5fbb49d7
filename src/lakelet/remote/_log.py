"""The remote's commit log: how lake names are bound on a shared remote, and learned from it.

Every change to the lake scope's names is one immutable entry, numbered 1, 2,
3, … at ``log/<seq // 1000, 9 digits>/<seq, 12 digits>.jsonl``. A writer
appends entry n + 1 only after it has applied entries 1..n and checked its
names against them, and it creates the entry with the store's conditional
create: of two writers racing for n + 1 exactly one succeeds; the other learns
the winner's entry, checks its names again and tries n + 2. So a name is bound
by the first entry that holds it, every machine agrees on which entry that is,
and a batch of any number of names is bound by one request.

An entry is JSON lines of two kinds: name records (bindings and tombstones,
``NameRecord.to_json``) and pack lines ``{"pack": digest, "members": [[digest,
offset, size], …]}`` saying where the small objects of those records lie
(``_packs``). Entries are grouped 1,000 to a folder, so learning what changed
after entry n is one listing (one page) of n's folder and one read per new
entry, whatever the size of the lake. ``snapshots/<seq>.jsonl.gz`` holds, in
the same line format, the state after entry ``seq``: a new machine reads the
latest snapshot and the entries after it. A remote gc also writes sweep lines
(``_sweeps``): what it is about to delete, and when it is done.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Iterable
from dataclasses import dataclass

from lakelet.remote._remote import Remote
from lakelet.storage._packs import Pack
from lakelet.storage._refs import NameRecord
from lakelet.storage._sweeps import Sweep

__all__ = ["Entry", "FOLDER", "Log", "SNAPSHOT_EVERY", "decode", "encode", "entry_key"]

FOLDER = 1000  # entries per folder: one listing page on every store
SNAPSHOT_EVERY = 1000  # entries between snapshots: a new machine reads at most ~2 folders after one


@dataclass(frozen=True)
class Entry:
    seq: int
    records: list[NameRecord]
    packs: list[Pack]
    sweeps: list[Sweep]


def entry_key(seq: int) -> str:
    return f"log/{seq // FOLDER:09d}/{seq:012d}.jsonl"


def encode(records: Iterable[NameRecord], packs: Iterable[Pack], sweeps: Iterable[Sweep] = ()) -> bytes:
    # pack lines first: a reader learns where the objects are before the names using them
    lines = [json.dumps(p.to_dict(), separators=(",", ":")).encode() for p in packs]
    lines += [json.dumps(s.to_dict(), separators=(",", ":")).encode() for s in sweeps]
    lines += [r.to_json() for r in records]
    return b"".join(line + b"\n" for line in lines)


def decode(body: bytes, seq: int) -> tuple[list[NameRecord], list[Pack], list[Sweep]]:
    """The lines of entry (or snapshot) ``seq``."""
    records: list[NameRecord] = []
    packs: list[Pack] = []
    sweeps: list[Sweep] = []
    for line in body.splitlines():
        if not line.strip():
            continue
        data = json.loads(line)
        if Sweep.is_line(data):  # before "pack": a sweep line has one too (see _sweeps)
            sweeps.append(Sweep.from_dict(data, seq))
        elif "pack" in data:
            packs.append(Pack.from_dict(data))
        else:
            records.append(NameRecord.from_dict(data))
    return records, packs, sweeps


def _numbers(names: list[str], suffix: str) -> list[int]:
    stems = (n.removesuffix(suffix) for n in names if n.endswith(suffix))
    return sorted(int(s) for s in stems if s.isdigit())


class Log:
    """The commit log and snapshots of one remote."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote

    def append(
        self, seq: int, records: list[NameRecord], packs: list[Pack], sweeps: list[Sweep] | None = None
    ) -> None:
        """Create entry ``seq``; FileExistsError if another writer created it first."""
        self.remote.create(entry_key(seq), encode(records, packs, sweeps or []))

    def entries_after(self, seq: int) -> list[Entry]:
        """Every entry numbered above ``seq``, in order: a listing per folder, a read per entry."""
        wanted: list[int] = []
        folder = (seq + 1) // FOLDER
        while True:
            numbers = _numbers(self.remote.list_dir(f"log/{folder:09d}"), ".jsonl")
            wanted += [n for n in numbers if n > seq]
            if not numbers or numbers[-1] != folder * FOLDER + FOLDER - 1:
                break  # the folder is not full: nothing has been written past it
            folder += 1
        bodies = self.remote.read_many([entry_key(n) for n in wanted])
        return [Entry(n, *decode(bodies[entry_key(n)], n)) for n in wanted]

    def snapshots(self) -> list[int]:
        """The numbers of the entries the snapshots were taken after, oldest first."""
        return _numbers(self.remote.list_dir("snapshots"), ".jsonl.gz")

    def read_snapshot(self, seq: int) -> tuple[list[NameRecord], list[Pack], list[Sweep]]:
        body = self.remote.read_bytes(f"snapshots/{seq:012d}.jsonl.gz")
        if body is None:
            raise FileNotFoundError(f"snapshots/{seq:012d}.jsonl.gz")
        return decode(gzip.decompress(body), seq)

    def write_snapshot(
        self, seq: int, records: Iterable[NameRecord], packs: Iterable[Pack], sweeps: Iterable[Sweep] = ()
    ) -> None:
        """``sweeps``: those not done by entry ``seq`` (a push after it must still see them)."""
        body = gzip.compress(encode(records, packs, sweeps), mtime=0)
        with contextlib.suppress(FileExistsError):  # another machine took the same one: same content
            self.remote.create(f"snapshots/{seq:012d}.jsonl.gz", body)
