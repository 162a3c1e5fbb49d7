"""Datasets against a hostile peer and a killed writer.

A write killed before its manifest leaves a staging folder that the next
``fsck`` removes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa

import lakelet

WRITE = """
import sys, lakelet, pyarrow as pa
lake = lakelet.open(sys.argv[1])
lake.write_dataset("orders", pa.table({"dt": ["2025-01-21"], "id": [3]}), partition_by=["dt"])
"""


def test_fsck_removes_the_staging_folder_of_a_killed_dataset_write(lake) -> None:
    lake.write_dataset("orders", pa.table({"dt": ["2025-01-20"], "id": [1]}), partition_by=["dt"])
    killed = subprocess.run(
        [sys.executable, "-c", WRITE, str(lake.root)],
        capture_output=True,
        env={**os.environ, "LAKELET_CRASH_AT": "dataset-files-staged"},
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr.decode()
    staged = [p for p in (lake.root / "tmp").iterdir() if "-dataset-" in p.name]
    assert len(staged) == 1 and list(staged[0].rglob("*.parquet")), staged
    running = lake.root / "tmp" / f"{os.getpid()}-dataset-0123456789ab"  # a live writer's: kept
    (running / "dt=2025-01-22").mkdir(parents=True)

    report = lakelet.open(lake.root).fsck()
    assert report.ok and not staged[0].exists() and running.is_dir()
    fresh = lakelet.open(lake.root)
    assert fresh.dataset("orders").version == 1
    again = subprocess.run([sys.executable, "-c", WRITE, str(lake.root)], capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    assert sorted(lakelet.open(lake.root).dataset("orders").to_arrow().column("id").to_pylist()) == [1, 3]
