"""Adding a large file streams: memory stays flat, one pass hashes and copies."""

from __future__ import annotations

import subprocess
import sys

import lakelet

MEASURE = """
import resource, sys, lakelet
lake = lakelet.open(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
lake.add(sys.argv[2], "big.bin")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) // 1024)
"""


def test_adding_512_mib_grows_memory_by_less_than_64_mib(lake, tmp_path) -> None:
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        f.truncate(512 << 20)  # sparse: cheap to create, 512 MiB to read
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(lake.root), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    grown_mib = int(out.stdout.strip())
    assert grown_mib < 64, f"peak RSS grew by {grown_mib} MiB while adding 512 MiB"
    assert lakelet.open(lake.root).file("big.bin").size == 512 << 20
