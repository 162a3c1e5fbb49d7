"""User metadata beyond ``add``: on ``File(name).open("wb")``, on stage outputs, on dataset
versions; and ``ls`` by pattern. Bad meta is refused before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import lakelet

from .conftest import run_lakelet, snapshot


def test_meta_on_a_file_opened_for_writing(lake: lakelet.Lake) -> None:
    with lakelet.use(lake), lakelet.File("out/a.txt").open("w", meta={"job": 7}) as fh:
        fh.write("hello")
    assert lake.file("out/a.txt").meta["job"] == 7
    before = snapshot(lake.root)
    with pytest.raises(lakelet.InvalidArgumentError), lake.file("out/b.txt").open("wb", meta={"run": "x"}):
        pass
    with pytest.raises(lakelet.InvalidArgumentError):
        lake.file("out/a.txt").open("r", meta={"job": 8})
    assert snapshot(lake.root) == before


def test_meta_on_stage_outputs(lake: lakelet.Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "meta_stages.py").write_text(
        textwrap.dedent(
            """
            import lakelet

            @lakelet.stage(meta={"team": "sales"}, format="json")
            def summary(day):
                return {"day": day}

            @lakelet.stage
            def report(day):
                out = lakelet.File(f"reports/{day}.txt")
                with out.open("w", meta={"audience": "ops"}) as fh:
                    fh.write(day)
                return out
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import meta_stages  # type: ignore[import-not-found]

    with lakelet.use(lake):
        out = meta_stages.summary.output("2025-01-20")
        assert isinstance(out, lakelet.File) and json.loads(Path(out).read_text()) == {"day": "2025-01-20"}
        assert out.meta["team"] == "sales" and out.meta["stage"].endswith("summary")
        assert meta_stages.summary.output("2025-01-20") == out  # the second call is a cache hit
        written = meta_stages.report.output("d1")
        assert written.name == "reports/d1.txt" and written.meta["audience"] == "ops"
    with pytest.raises(lakelet.InvalidArgumentError, match="reserved"):
        lakelet.stage(meta={"stage": "x"})(lambda: 1)


def test_a_plain_string_input_is_told_to_use_raw() -> None:
    def parse(some_raw_file):
        return some_raw_file

    with pytest.raises(lakelet.InvalidArgumentError, match=r"lakelet\.raw\('raw/input\.csv'\)"):
        lakelet.stage(some_raw_file="raw/input.csv")(parse)


def test_meta_on_dataset_versions(lake: lakelet.Lake) -> None:
    ds = lake.write_dataset("sales/orders", pd.DataFrame({"a": [1, 2]}), meta={"batch": "b1"})
    assert ds.meta == {"batch": "b1"}
    assert lake.dataset("sales/orders").meta == {"batch": "b1"}  # read back through the parser
    assert lake.write_dataset("sales/orders", pd.DataFrame({"a": [3]})).meta == {}
    info = run_lakelet("--lake", str(lake.root), "info", "datasets/sales/orders", "--json")
    assert json.loads(info.stdout)["meta"] == {}
    before = snapshot(lake.root)
    with pytest.raises(lakelet.InvalidArgumentError):
        lake.write_dataset("sales/orders", pd.DataFrame({"a": [4]}), meta={"x": {1, 2}})
    assert snapshot(lake.root) == before


def test_ls_by_pattern(lake: lakelet.Lake) -> None:
    for name in ["raw/a.csv", "raw/2025/b.csv", "raw/2025/01/c.csv", "raw/d.json", "other/e.csv"]:
        lake.add(name.encode(), name)

    def names(pattern: str) -> list[str]:
        return [f.name for f in lake.ls(glob=pattern)]

    assert names("raw/*.csv") == ["raw/a.csv"]
    assert names("raw/**/*.csv") == ["raw/2025/01/c.csv", "raw/2025/b.csv", "raw/a.csv"]
    assert names("**/*.json") == ["raw/d.json"]
    assert names("raw/202?/[bx].csv") == ["raw/2025/b.csv"]
    assert [f.name for f in lake.ls("raw/2025/", glob="**/*.csv")] == ["raw/2025/01/c.csv", "raw/2025/b.csv"]
    listed = run_lakelet("--lake", str(lake.root), "ls", "raw/**/*.csv", "--json")
    assert [f["name"] for f in json.loads(listed.stdout)] == names("raw/**/*.csv")


def test_a_names_meta_changed_in_memory_reaches_no_other_name_nor_the_disk(lake: lakelet.Lake) -> None:
    # two names added with equal metas: the index parses a batch's meta once for its records,
    # never handing two records one nested value
    lake.add(b"one", "a.txt", meta={"cfg": {"x": 1}})
    lake.add(b"two", "b.txt", meta={"cfg": {"x": 1}})
    lake.file("a.txt").meta["cfg"]["x"] = 99  # the caller's copy of a's meta
    assert lake.file("b.txt").meta["cfg"] == {"x": 1}
    assert lake.file("a.txt").meta["cfg"] == {"x": 1}
    lake.rm("b.txt", force=True)  # the tombstone writes b's meta as it is read
    read_back = (
        f"import json, lakelet; r = lakelet.open({str(lake.root)!r}).context.lookup('lake', 'b.txt'); "
        "print(json.dumps(r.meta))"
    )
    out = subprocess.run([sys.executable, "-c", read_back], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["cfg"] == {"x": 1}


@pytest.mark.parametrize("meta", ["null", '"x"', "[1]", "{"])
def test_a_damaged_meta_in_the_index_is_one_line_saying_to_run_fsck(lake: lakelet.Lake, meta: str) -> None:
    import sqlite3

    lake.add(b"x", "a.txt", meta={"damaged": meta})  # a meta of its own: not parsed before
    lake.context.catalog.close()
    with sqlite3.connect(lake.root / "index.sqlite") as db:
        db.execute(
            "UPDATE batches SET meta = ? WHERE id = (SELECT batch FROM name_rows WHERE name = 'a.txt')",
            (meta,),
        )
    out = run_lakelet("--lake", str(lake.root), "ls")
    assert out.returncode != 0 and b"damaged meta: run `lakelet fsck`" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert run_lakelet("--lake", str(lake.root), "fsck").returncode == 0
    assert run_lakelet("--lake", str(lake.root), "ls").returncode == 0
