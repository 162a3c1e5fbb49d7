"""A lake for the `lakelet ui` tests: a raw file, three chained stages (one holding a secret, one
writing a dataset), a pipeline run and a second dataset version; and a hostile peer that binds
run records whose links and texts are attacks on the page."""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import uuid
from pathlib import Path

import lakelet
from lakelet.lake._add import bind_outputs

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


def build(root: Path, remote: str | None = None) -> tuple[lakelet.Lake, object]:
    """The lake and the pipeline module; the caller's environment needs LAKELET_SECRET_KEY or a config dir."""
    root.mkdir(parents=True, exist_ok=True)
    lake = lakelet.init(root / "lake", remote=remote)
    regions = ["north", "south", "east"]
    lines = ["dt,region,amount"] + [
        f"2026-11-{1 + i % 3:02d},{regions[i % 3]},{(i * 37) % 500 - 20}" for i in range(300)
    ]
    csv = root / "orders.csv"
    csv.write_text("\n".join(lines) + "\n")
    lake.add(csv, "raw/orders.csv", meta={"ticket": "<b>OPS-12</b>"})  # user meta: text on the page
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


# What a peer writes as `source.git.url` of its run records: a browser runs each of these in the
# page's origin when it is an <a href> and clicked (it ignores case, leading blanks and tabs).
HOSTILE_URLS = {
    "plain": "javascript:void(window.__pwned='plain')",
    "spaced": " JavaScript:void(window.__pwned='spaced')",
    "tabbed": "java\tscript:void(window.__pwned='tabbed')",
    "data": "data:text/html,<script>window.__pwned='data'</script>",
}
FORGE_URL = "https://github.com/o/r/blob/0123456/pipeline.py#L3"  # a genuine forge link: stays a link
MARKUP = "<img src=x onerror=\"window.__pwned='markup'\">"


def hostile_peer(root: Path, remote: str) -> list[str]:
    """A peer sharing ``remote`` binds one run record per URL above, each with an output that
    points at it as a stage's outputs do, with markup in every free text; returns the outputs."""
    peer = lakelet.init(root / "peer", remote=remote)
    outputs = []
    for variant, url in [*HOSTILE_URLS.items(), ("forge", FORGE_URL)]:
        key = hashlib.sha1(variant.encode()).hexdigest()
        stage = f"evil.{variant}"
        run, output = f"stages/{stage}/{key}.json", f"stages/{stage}/{key}/{MARKUP}.csv"
        data = root / f"{variant}.csv"
        data.write_text("a\n1\n")
        (made,) = bind_outputs(peer.context, [(output, data, False)], {"stage": stage, "run": run})
        record = {
            "kind": "stage",
            "stage": stage,
            "key": key,
            "parts": {"inputs": {}},
            "returned": {"kind": "files", "names": [output], "single": True},
            "outputs": [{"name": output, "digest": made.digest}],
            "inputs": {"orders": {"name": "raw/orders.csv"}, "notes": {"path": f"/tmp/{MARKUP}"}},
            "datasets_written": [],
            "code_digest": key,
            "code_source": f"def {variant}():\n    return '{MARKUP}'\n",
            "source": {
                "file": f"/src/{MARKUP}.py",
                "line": 3,
                "git": {
                    "commit": key,
                    "remote": "git@github.com:o/r.git",
                    "path": "pipeline.py",
                    "dirty": False,
                    "url": url,
                },
            },
            "environment": {"user": MARKUP, "host": MARKUP, "python": MARKUP, "lakelet": "0"},
            "packages": {MARKUP: MARKUP},
            "started_at": "2026-11-04T00:00:00+00:00",
            "ended_at": "2026-11-04T00:00:01+00:00",
            "duration_s": 1.0,
        }
        path = root / f"{variant}.json"
        path.write_text(json.dumps(record))
        peer.add(path, run)
        outputs.append(output)
    peer.sync()
    return outputs
