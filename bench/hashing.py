"""Hash throughput on this machine: which digest should lakelet use?

Hashes one 512 MiB buffer of random bytes fed in 4 MiB chunks (lakelet's
CHUNK_SIZE) and reports the median of 5 runs in GB/s (10^9 bytes/s).

    .venv/bin/python bench/hashing.py [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import ssl

import blake3
from _common import MiB, machine, median, table, timed

CHUNK = 4 * MiB  # lakelet.core._digest.CHUNK_SIZE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64 MiB buffer, 2 repetitions")
    args = ap.parse_args()
    size = 64 * MiB if args.quick else 512 * MiB
    reps = 2 if args.quick else 5

    from lakelet.core._digest import CHUNK_SIZE

    assert CHUNK_SIZE == CHUNK, "lakelet's chunk size changed: update bench/hashing.py"

    buf = os.urandom(size)
    view = memoryview(buf)
    chunks = [view[i : i + CHUNK] for i in range(0, size, CHUNK)]

    candidates = [
        # (label, factory, cryptographic?)
        ("sha256 (hashlib)", hashlib.sha256, True),
        ("blake2b (hashlib)", hashlib.blake2b, True),
        ("md5 (hashlib; DVC's digest)", hashlib.md5, False),
        ("blake3 1 thread", lambda: blake3.blake3(), True),
        ("blake3 max_threads=AUTO (lakelet)", lambda: blake3.blake3(max_threads=blake3.blake3.AUTO), True),
    ]

    def run(factory):
        h = factory()
        for c in chunks:
            h.update(c)
        h.digest()

    print(f"# hashing: {size // MiB} MiB buffer in {CHUNK // MiB} MiB chunks, median of {reps}")
    print(f"# {machine()}")
    print(f"# blake3 {blake3.__version__}, hashlib via {ssl.OPENSSL_VERSION}")
    results = []
    for label, factory, crypto in candidates:
        run(factory)  # warm-up
        times = [timed(lambda f=factory: run(f)) for _ in range(reps)]
        results.append((label, size / median(times) / 1e9, crypto, times))
        print(f"  {label}: {[round(t, 4) for t in times]} s")

    base = next(r[1] for r in results if r[0].startswith("sha256"))
    rows = [
        (label, f"{gbs:.2f}", f"{gbs / base:.2f}x", "yes" if crypto else "no (broken)")
        for label, gbs, crypto, _ in results
    ]
    print()
    print(table(["hash", "GB/s (median)", "vs sha256", "cryptographic"], rows))
    best = max((r for r in results if r[2]), key=lambda r: r[1])
    print(f"\nfastest cryptographic hash here: {best[0]} at {best[1]:.2f} GB/s")


if __name__ == "__main__":
    main()
