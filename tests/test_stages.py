"""Stages skip themselves: the user's edit cycle, written as tests.

Each test writes a pipeline module, imports it, runs it, edits the file,
re-imports it and asserts exactly which stages ran (from the log lines).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

import lakelet

PIPELINE = '''
import lakelet

RATE = 2


def scale(x):
    return x * RATE


@lakelet.stage(raw=lakelet.raw("{raw}"))
def read_raw(raw):
    """Parse the input."""
    with open(raw) as f:
        return [int(line) for line in f if line.strip()]


@lakelet.stage(rows=read_raw)
def enrich(rows):
    return [scale(r) for r in rows]


@lakelet.stage(rows=enrich)
def total(rows, offset: int = 0):
    return sum(rows) + offset


@lakelet.stage(format="text")
def shout(word: str):
    return word.upper()
'''


class Runs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.ran: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        what, name = record.getMessage().split(" ", 1)
        if what == "running":
            self.ran.append(name.rsplit(".", 1)[-1])


@pytest.fixture
def pipeline(tmp_path, monkeypatch, lake):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    raw_file = tmp_path / "input.txt"
    raw_file.write_text("1\n2\n3\n")
    module_name = f"pipe_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{module_name}.py"
    source = {"text": PIPELINE.replace("{raw}", str(raw_file))}
    runs = Runs()
    logger = logging.getLogger("lakelet.stage")
    logger.addHandler(runs)
    logger.setLevel(logging.INFO)
    lakelet.use(lake)

    class Pipeline:
        raw = raw_file

        def load(self, edit=None):
            if edit is not None:
                source["text"] = edit(source["text"])
            path.write_text(textwrap.dedent(source["text"]))
            sys.modules.pop(module_name, None)
            importlib.invalidate_caches()
            runs.ran.clear()
            return importlib.import_module(module_name)

        @property
        def ran(self):
            return list(runs.ran)

    yield Pipeline()
    logger.removeHandler(runs)


def test_first_run_runs_everything_and_the_second_nothing(pipeline) -> None:
    m = pipeline.load()
    assert m.total() == 12
    assert pipeline.ran == ["total", "enrich", "read_raw"] or sorted(pipeline.ran) == [
        "enrich", "read_raw", "total"]
    m = pipeline.load()
    assert m.total() == 12 and pipeline.ran == []


@pytest.mark.parametrize("edit", [
    lambda s: s.replace('"""Parse the input."""', '"""Parse the input file, one int per line."""'),
    lambda s: s.replace("def scale(x):", "# scaling\ndef scale(x):  # by the rate"),
    lambda s: s.replace("return x * RATE", "return x   *   RATE"),
], ids=["docstring", "comments", "whitespace"])
def test_cosmetic_edits_run_nothing(pipeline, edit) -> None:
    pipeline.load().total()
    m = pipeline.load(edit)
    assert m.total() == 12 and pipeline.ran == []


@pytest.mark.parametrize("edit, expected, value", [
    (lambda s: s.replace("return x * RATE", "return x * RATE + 1"), ["enrich", "total"], 15),
    (lambda s: s.replace("RATE = 2", "RATE = 3"), ["enrich", "total"], 18),
    (lambda s: s.replace("return sum(rows) + offset", "return sum(rows) + offset + 100"), ["total"], 112),
    # SPEC §1: a stage's key holds its upstream stages' keys, so downstream reruns
    (lambda s: s.replace("int(line)", "int(line.strip())"), ["read_raw", "enrich", "total"], 12),
], ids=["helper-body", "constant", "last-stage-body", "first-stage-body"])
def test_edits_rerun_exactly_what_they_touch(pipeline, edit, expected, value) -> None:
    pipeline.load().total()
    m = pipeline.load(edit)
    assert m.total() == value
    assert sorted(pipeline.ran) == sorted(expected)


def test_input_content_not_its_timestamp(pipeline) -> None:
    m = pipeline.load()
    m.total()
    os.utime(pipeline.raw, (1, 1))  # touched, same content
    m = pipeline.load()
    assert m.total() == 12 and pipeline.ran == []
    pipeline.raw.write_text("1\n2\n3\n4\n")
    m = pipeline.load()
    assert m.total() == 20 and sorted(pipeline.ran) == ["enrich", "read_raw", "total"]


def test_parameters_are_part_of_the_key(pipeline) -> None:
    m = pipeline.load()
    assert m.total(offset=5) == 17
    assert m.total(offset=5) == 17 and pipeline.ran.count("total") == 1
    assert m.total(offset=6) == 18 and pipeline.ran.count("total") == 2
    assert m.shout("hi") == "HI" and m.shout(word="hi") == "HI"
    assert pipeline.ran.count("shout") == 1


def test_a_failing_stage_binds_nothing(pipeline, lake) -> None:
    m = pipeline.load(lambda s: s.replace("return word.upper()", "raise ValueError(word)"))
    before = [f.name for f in lake.ls()]
    with pytest.raises(ValueError, match="boom"):
        m.shout("boom")
    assert [f.name for f in lake.ls()] == before


def test_unsupported_return_values_name_the_format(lake) -> None:
    lakelet.use(lake)

    @lakelet.stage
    def makes_object():
        return object()

    with pytest.raises(lakelet.InvalidArgumentError, match='format="pickle"'):
        makes_object()
    assert lake.ls() == []


def test_outputs_are_lake_names_with_a_run_record(pipeline, lake) -> None:
    pipeline.load().total()
    names = [f.name for f in lake.ls("stages/")]
    records = [n for n in names if n.endswith(".json") and "/output." not in n]
    assert len(records) == 3 and len(names) == 6
    record = json.loads(lake.file(records[0]).read_bytes())
    assert {"stage", "key", "parts", "outputs", "source", "environment", "started_at",
            "ended_at", "duration_s"} <= set(record)
    assert record["source"]["line"] > 0 and record["environment"]["user"] == "tester@example.com"


CONCURRENT = '''
import sys, time, lakelet
lake = lakelet.open(sys.argv[1])
lakelet.use(lake)

@lakelet.stage
def slow(n: int):
    with open(sys.argv[2], "a") as log:
        log.write("ran\\n")
    return n * 2

print(slow(21))
'''


def test_four_processes_same_key_compute_once(lake, tmp_path) -> None:
    script = tmp_path / "concurrent_stage.py"
    script.write_text(CONCURRENT)
    log = tmp_path / "runs.log"
    procs = [subprocess.Popen([sys.executable, str(script), str(lake.root), str(log)],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outputs == ["42"] * 4
    assert log.read_text().count("ran") == 1


def test_explain_says_why(pipeline, capsys, monkeypatch) -> None:
    pipeline.load().total()
    monkeypatch.setenv("LAKELET_EXPLAIN", "1")
    pipeline.load(lambda s: s.replace("RATE = 2", "RATE = 5")).total()
    err = capsys.readouterr().err
    assert "running" in err and "enrich" in err and "RATE" in err
    assert "skipped" in err and "read_raw" in err
