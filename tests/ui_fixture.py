"""A lake for the `lakelet ui` tests: a raw file, three chained stages (one holding a secret, one
writing a dataset), a pipeline run and a second dataset version."""

from __future__ import annotations

import importlib
import sys
import uuid
from pathlib import Path

import lakelet

SECRET = "ui-" + "s3cr3t-that-no-page-may-show"

PIPELINE = """
import os
import pyarrow as pa
import pyarrow.csv
import lakelet


@lakelet.stage(raw=lakelet.raw("raw/orders.csv"))
def load(raw):
    return pyarrow.csv.read_csv(raw)


@lakelet.stage(orders=load, secrets=["API_TOKEN"])
def clean(orders):
    assert os.environ["API_TOKEN"]  # used, never stored
    return orders.filter(pa.compute.greater(orders["amount"], 0))


@lakelet.stage(orders=clean)
def daily(orders):
    table = orders.group_by("dt").aggregate([("amount", "sum")])
    lakelet.current_lake().write_dataset("sales/daily", orders, partition_by=["dt"])
    return table
"""


def build(root: Path) -> tuple[lakelet.Lake, object]:
    """The lake and the pipeline module; the caller's environment needs LAKELET_SECRET_KEY or a config dir."""
    root.mkdir(parents=True, exist_ok=True)
    lake = lakelet.init(root / "lake")
    regions = ["north", "south", "east"]
    lines = ["dt,region,amount"] + [
        f"2026-11-{1 + i % 3:02d},{regions[i % 3]},{(i * 37) % 500 - 20}" for i in range(300)
    ]
    csv = root / "orders.csv"
    csv.write_text("\n".join(lines) + "\n")
    lake.add(csv, "raw/orders.csv")
    lake.secrets.set("API_TOKEN", SECRET)
    name = f"ui_pipeline_{uuid.uuid4().hex[:8]}"
    (root / f"{name}.py").write_text(PIPELINE)
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    module = importlib.import_module(name)
    with lakelet.use(lake):
        lakelet.run(module.daily, run_id="nightly-1")
        first = lake.dataset("sales/daily").to_arrow()
        lake.write_dataset("sales/daily", first.slice(0, 5), partition_by=["dt"])  # version 2
    return lake, module
