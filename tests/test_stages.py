"""Stages skip themselves: the user's edit cycle, written as tests.

Each test writes a pipeline module, imports it, runs it, edits the file,
re-imports it and asserts exactly which stages ran (from the log lines).
"""

from __future__ import annotations

import datetime
import importlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import lakelet

from .conftest import snapshot

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
        "enrich",
        "read_raw",
        "total",
    ]
    m = pipeline.load()
    assert m.total() == 12 and pipeline.ran == []


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.replace('"""Parse the input."""', '"""Parse the input file, one int per line."""'),
        lambda s: s.replace("def scale(x):", "# scaling\ndef scale(x):  # by the rate"),
        lambda s: s.replace("return x * RATE", "return x   *   RATE"),
    ],
    ids=["docstring", "comments", "whitespace"],
)
def test_cosmetic_edits_run_nothing(pipeline, edit) -> None:
    pipeline.load().total()
    m = pipeline.load(edit)
    assert m.total() == 12 and pipeline.ran == []


@pytest.mark.parametrize(
    "edit, expected, value",
    [
        (lambda s: s.replace("return x * RATE", "return x * RATE + 1"), ["enrich", "total"], 15),
        (lambda s: s.replace("RATE = 2", "RATE = 3"), ["enrich", "total"], 18),
        (lambda s: s.replace("return sum(rows) + offset", "return sum(rows) + offset + 100"), ["total"], 112),
        # SPEC §1: a stage's key holds its upstream stages' keys, so downstream reruns
        (lambda s: s.replace("int(line)", "int(line.strip())"), ["read_raw", "enrich", "total"], 12),
    ],
    ids=["helper-body", "constant", "last-stage-body", "first-stage-body"],
)
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


def test_an_argument_is_keyed_alike_by_position_and_by_name(lake) -> None:
    def spread(a, b=2, /, *rest, c=3, **more):
        return [a, b, list(rest), c, more]

    def plain(a, b=2):
        return [a, b]

    lakelet.use(lake)
    s, p = lakelet.stage(spread), lakelet.stage(plain)

    def key(stage, *args, **kwargs):
        return stage.key(lake, args, kwargs)[0]

    assert key(p, 1, 5) == key(p, 1, b=5) == key(p, a=1, b=5) != key(p, 1, 6)
    assert key(s, 1, 5) != key(s, 1, 5, 7) != key(s, 1, 5, 7, c=3)  # *rest and c enter the key
    assert key(s, 1, 5, c=4) != key(s, 1, 5, c=3)
    assert s(1, 5, 7, c=4, d=0) == [1, 5, [7], 4, {"d": 0}]
    with pytest.raises(lakelet.InvalidArgumentError, match="multiple values"):
        p(1, a=1)


LAMBDAS = """

def register(f):
    return f


# inspect.getsource gives only a line of these, which does not parse on its own
OPS = {
    "double": lambda x: x * 2,
}
triple = register(
    lambda x: x * 3)


def make_stage():
    op = OPS["double"]

    @lakelet.stage
    def via_closure(n: int):
        return op(n)

    return via_closure


@lakelet.stage
def via_call(n: int):
    return triple(n)
"""


@pytest.mark.parametrize(
    "stage, edit, before, after",
    [
        ("via_closure", ("x * 2,", "x * 20,"), 6, 60),
        ("via_call", ("x * 3)", "x * 30)"), 9, 90),
    ],
    ids=["closure-over-dict-literal-lambda", "call-argument-lambda"],
)
def test_stages_using_lambdas_without_parsable_source(pipeline, stage, edit, before, after) -> None:
    def get(m):
        return m.make_stage() if stage == "via_closure" else m.via_call

    assert get(pipeline.load(lambda s: s + LAMBDAS))(3) == before and pipeline.ran == [stage]
    assert get(pipeline.load())(3) == before and pipeline.ran == []
    # keyed by bytecode: a comment inside the lambda's expression is invisible too
    m = pipeline.load(lambda s: s.replace(edit[0], edit[0] + "  # note", 1))
    assert get(m)(3) == before and pipeline.ran == []
    m = pipeline.load(lambda s: s.replace(edit[0], edit[1], 1))
    assert get(m)(3) == after and pipeline.ran == [stage]


def test_a_failing_stage_binds_nothing(pipeline, lake) -> None:
    m = pipeline.load(lambda s: s.replace("return word.upper()", "raise ValueError(word)"))
    before = [f.name for f in lake.ls()]
    with pytest.raises(ValueError, match="boom"):
        m.shout("boom")
    assert [f.name for f in lake.ls()] == before


@pytest.mark.parametrize("value", [object(), {1: "a", "b": 2}], ids=["object", "mixed-keys"])
def test_unsupported_return_values_name_the_format(lake, value) -> None:
    lakelet.use(lake)

    @lakelet.stage
    def makes_object():
        return value

    with pytest.raises(lakelet.InvalidArgumentError, match='format="pickle"'):
        makes_object()
    assert lake.ls() == []


MISMATCHES = [  # format, returned value, its type as named, the formats that take it
    ("text", None, "NoneType", "json, pickle"),
    ("text", 5, "int", "json, pickle"),
    ("text", b"x", "bytes", "bytes, pickle"),
    ("bytes", 5, "int", "json, pickle"),  # bytes(5) stored five zero bytes
    ("bytes", "x", "str", "json, text, pickle"),
    ("parquet", {"a": [1, 2]}, "dict", "json, pickle"),
    ("arrow", [1, 2], "list", "json, pickle"),
    ("csv", "a,b\n1,2\n", "str", "json, text, pickle"),
    ("npy", "abc", "str", "json, text, pickle"),  # stored as a 0-d array, loaded back as one
    ("npy", [1.0, 2.0], "list", "json, pickle"),
    ("json", object(), "object", "pickle"),
    ("json", {"when": datetime.date(2025, 1, 20)}, "dict", "pickle"),
    ("json", (1, 2), "tuple", "pickle"),  # would load back as a list
    ("json", np.arange(3), "numpy.ndarray", "npy, pickle"),
]


@pytest.mark.parametrize(
    "fmt, value, returned, takers",
    MISMATCHES,
    ids=[f"{fmt}-{returned}" for fmt, _, returned, _ in MISMATCHES],
)
def test_a_value_its_declared_format_cannot_store_binds_nothing(
    lake, make_file, fmt, value, returned, takers
) -> None:
    lakelet.use(lake)
    lake.add(make_file("kept.txt", "already here"), "kept.txt")

    def declared(value):
        @lakelet.stage(format=fmt)
        def out():
            with lakelet.File("side/notes.txt").open("w") as f:  # bound only with the return value
                f.write("written before returning")
            return value

        return out

    before, names = snapshot(lake.root), [f.name for f in lake.ls()]
    broken = declared(value)
    with pytest.raises(lakelet.InvalidArgumentError) as error:
        broken()
    message = str(error.value)
    assert "\n" not in message and broken.qualname in message and f'format="{fmt}"' in message
    assert f"returned a {returned}:" in message and message.endswith(f"takes a {returned}: {takers}")
    assert snapshot(lake.root) == before and [f.name for f in lake.ls()] == names

    fixed = declared(
        {"text": "ok", "bytes": b"ok", "npy": np.arange(2), "json": ["ok"]}.get(fmt, pa.table({"ok": [1]}))
    )
    assert fixed() is not None
    assert len(lake.ls()) == len(names) + 3  # the side file, the output and the run record


UNENCODABLE = [  # format declared (None: inferred), a value of a type it takes that it cannot encode, reason
    ("parquet", lambda: pd.DataFrame({"a": [1, "x"]}), "Conversion failed for column a with type object"),
    (None, lambda: pd.DataFrame({"a": [1, "x"]}), "Conversion failed for column a with type object"),
    ("arrow", lambda: pd.DataFrame({"a": [1, "x"]}), "Conversion failed for column a with type object"),
    ("csv", lambda: pd.DataFrame({"a": [1, "x"]}), "Conversion failed for column a with type object"),
    ("csv", lambda: pa.table({"a": [[1], [2]]}), "Unsupported Type:list"),  # a table, but not for csv
    ("pickle", threading.Lock, "cannot pickle '_thread.lock' object"),
    ("text", lambda: "half a pair \ud800", "surrogates not allowed"),
    ("json", lambda: ["half a pair \ud800"], "surrogates not allowed"),
]


@pytest.mark.parametrize(
    "fmt, make_value, reason",
    UNENCODABLE,
    ids=[
        "parquet-mixed",
        "inferred-mixed",
        "arrow-mixed",
        "csv-mixed",
        "csv-list",
        "pickle-lock",
        "text-surrogate",
        "json-surrogate",
    ],
)
def test_a_value_its_format_cannot_encode_binds_nothing(lake, make_file, fmt, make_value, reason) -> None:
    lakelet.use(lake)
    lake.add(make_file("kept.txt", "already here"), "kept.txt")

    @lakelet.stage(**({"format": fmt} if fmt else {}))
    def out():
        with lakelet.File("side/notes.txt").open("w") as f:  # bound only with the return value
            f.write("written before returning")
        return make_value()

    before, names = snapshot(lake.root), [f.name for f in lake.ls()]
    with pytest.raises(lakelet.InvalidArgumentError) as error:
        out()
    message = str(error.value)
    assert "\n" not in message and out.qualname in message and reason in message
    assert f'format="{fmt or "parquet"}" cannot store' in message
    assert snapshot(lake.root) == before and [f.name for f in lake.ls()] == names
    assert list((lake.root / "tmp").iterdir()) == []  # nor the half-written encoding


def test_outputs_are_lake_names_with_a_run_record(pipeline, lake) -> None:
    pipeline.load().total()
    names = [f.name for f in lake.ls("stages/")]
    records = [n for n in names if n.endswith(".json") and "/output." not in n]
    assert len(records) == 3 and len(names) == 6
    record = json.loads(lake.file(records[0]).read_bytes())
    assert {
        "stage",
        "key",
        "parts",
        "outputs",
        "source",
        "environment",
        "started_at",
        "ended_at",
        "duration_s",
    } <= set(record)
    assert record["source"]["line"] > 0 and record["environment"]["user"] == "tester@example.com"


CONCURRENT = """
import sys, time, lakelet
lake = lakelet.open(sys.argv[1])
lakelet.use(lake)

@lakelet.stage
def slow(n: int):
    with open(sys.argv[2], "a") as log:
        log.write("ran\\n")
    return n * 2

print(slow(21))
"""


def test_four_processes_same_key_compute_once(lake, tmp_path) -> None:
    script = tmp_path / "concurrent_stage.py"
    script.write_text(CONCURRENT)
    log = tmp_path / "runs.log"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(lake.root), str(log)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outputs == ["42"] * 4
    assert log.read_text().count("ran") == 1


RETURNS_NONE = """
import sys, lakelet
lakelet.use(lakelet.open(sys.argv[1]))

@lakelet.stage
def log_only(n: int):
    with open(sys.argv[2], "a") as log:
        log.write("ran\\n")

print(log_only(1), log_only(1))
"""


def _in_two_processes(lake, tmp_path, source: str) -> tuple[list[str], int]:
    """Run ``source`` (given the lake and a log its stages write "ran" to) in one process, then
    in another: what each printed, and how many times a stage ran."""
    script = tmp_path / "script.py"
    script.write_text(source)
    log = tmp_path / "runs.log"
    printed = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, str(script), str(lake.root), str(log)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        printed.append(out.stdout)
    return printed, log.read_text().count("ran")


def test_a_stored_none_is_a_hit_here_and_in_another_process(lake, tmp_path) -> None:
    printed, runs = _in_two_processes(lake, tmp_path, RETURNS_NONE)  # the second finds the first's
    assert [p.split() for p in printed] == [["None", "None"]] * 2
    assert runs == 1


EXACT_VALUES = """
import json, sys, lakelet
lakelet.use(lakelet.open(sys.argv[1]))

@lakelet.stage
def values(n: int):
    with open(sys.argv[2], "a") as log:
        log.write("ran\\n")
    return ["line\\r\\nnext\\rlast\\n", b"\\r\\n\\x00", {"k": [1.5, None, "\\r\\n"]}][n]

print(json.dumps([repr(values(n)) for n in range(3)]))
"""


def test_small_values_read_back_in_another_process_are_the_values_returned(lake, tmp_path) -> None:
    # The second process decodes what the first stored (a text file read in text mode turned
    # "\r\n" into "\n"); the first returns what its runs returned.
    printed, runs = _in_two_processes(lake, tmp_path, EXACT_VALUES)
    assert runs == 3  # the second process ran nothing
    expected = [repr("line\r\nnext\rlast\n"), repr(b"\r\n\x00"), repr({"k": [1.5, None, "\r\n"]})]
    assert [json.loads(p) for p in printed] == [expected, expected]


def test_why_reads_only_run_records(lake, make_file, capsys, monkeypatch) -> None:
    lakelet.use(lake)

    @lakelet.stage
    def listed(n: int):
        return [n]

    listed(1)
    # newer than the run record and in the stage's folder, but no run record
    lake.add(make_file("notes.json", "[]"), f"stages/{listed.qualname}/notes.json")
    monkeypatch.setenv("LAKELET_EXPLAIN", "1")
    assert listed(2) == [2]
    assert "changed: params" in capsys.readouterr().err


def test_explain_says_why(pipeline, capsys, monkeypatch) -> None:
    pipeline.load().total()
    monkeypatch.setenv("LAKELET_EXPLAIN", "1")
    pipeline.load(lambda s: s.replace("RATE = 2", "RATE = 5")).total()
    err = capsys.readouterr().err
    assert "running" in err and "enrich" in err and "RATE" in err
    assert "skipped" in err and "read_raw" in err


RADOPS = """
import lakelet


@lakelet.stage
def process(f: lakelet.File, output_uid: str) -> lakelet.File:
    out = lakelet.File(output_uid)
    with f.open("r") as i, out.open("w") as o:
        o.write(i.read() + " additional data")
    return out


@lakelet.stage
def split(f: lakelet.File):
    parts = []
    for word in f.read_text().split():
        part = lakelet.File()  # implicit name, derived from the key
        with part.open("w") as o:
            o.write(word)
        parts.append(part)
    return parts


@lakelet.stage
def broken(f: lakelet.File, output_uid: str):
    with lakelet.File(output_uid).open("w") as o:
        o.write("half")
    raise RuntimeError("broken stage")
"""


def _module(tmp_path, monkeypatch, source, name):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    (tmp_path / f"{name}.py").write_text(source)
    sys.modules.pop(name, None)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def test_radops_style_files_in_files_out(lake, make_file, tmp_path, monkeypatch) -> None:
    lakelet.use(lake)
    m = _module(tmp_path, monkeypatch, RADOPS, f"radops_{uuid.uuid4().hex[:8]}")
    f = lake.add(make_file("in.txt", "some data"), "name_in_lake.txt")
    out = m.process(f=f, output_uid="processed_file.txt")
    assert isinstance(out, lakelet.File) and out.read_text() == "some data additional data"
    assert lake.file("processed_file.txt").digest == out.digest
    again = m.process(f=lake.file("name_in_lake.txt"), output_uid="processed_file.txt")
    assert again.name == "processed_file.txt"  # a hit: the same name, nothing rebound

    parts = m.split(f=lake.file("processed_file.txt"))
    assert [p.read_text() for p in parts] == ["some", "data", "additional", "data"]
    names = [p.name for p in parts]
    assert all(n.startswith("stages/") and "/file-" in n for n in names)
    assert [p.name for p in m.split(f=lake.file("processed_file.txt"))] == names  # stable


def test_radops_failing_stage_binds_none_of_its_files(lake, make_file, tmp_path, monkeypatch) -> None:
    lakelet.use(lake)
    m = _module(tmp_path, monkeypatch, RADOPS, f"radops_{uuid.uuid4().hex[:8]}")
    f = lake.add(make_file("in.txt", "x"), "in.txt")
    with pytest.raises(RuntimeError, match="broken stage"):
        m.broken(f=f, output_uid="never.txt")
    assert not lake.exists("never.txt")
    assert not [p for p in (lake.root / "tmp").iterdir() if p.suffix == ".tmp"]


def test_a_stage_whose_later_output_is_taken_binds_none(lake, make_file) -> None:
    lakelet.use(lake)
    lake.add(make_file("taken.txt", "someone else's"), "out/taken.txt")

    @lakelet.stage
    def two_files():
        for name in ("out/first.txt", "out/taken.txt"):  # bound in this order, one by one, before
            with lakelet.File(name).open("w") as f:
                f.write("mine")
        return "done"

    before, names = snapshot(lake.root), [f.name for f in lake.ls()]
    with pytest.raises(lakelet.NameExistsError, match="out/taken.txt"):
        two_files()
    assert snapshot(lake.root) == before and [f.name for f in lake.ls()] == names
    assert list((lake.root / "tmp").iterdir()) == []


def test_a_returned_path_is_copied_and_the_files_written_beside_it_moved_in(lake, tmp_path) -> None:
    lakelet.use(lake)
    report = tmp_path / "report.csv"

    @lakelet.stage
    def export():
        with lakelet.File("side/notes.txt").open("w") as f:
            f.write("notes")
        report.write_text("a,b\n1,2\n")
        return report

    assert export() == report and report.read_text() == "a,b\n1,2\n"  # the user's file stays
    assert lake.file("side/notes.txt").read_text() == "notes"
    assert list((lake.root / "tmp").iterdir()) == []
    again = export()  # a hit: the lake's copy
    assert again != report and again.read_text() == report.read_text()


def _missing(kind, tmp):
    """What a stage returns that does not exist, by kind."""
    return {
        "file": lakelet.File("never/written.txt"),
        "files": [lakelet.File("side/notes.txt"), lakelet.File("never/written.txt")],
        "path": tmp / "missing.csv",
        "directory": tmp,
    }[kind]


@pytest.mark.parametrize(
    "kind, named",
    [
        ("file", "never/written.txt"),
        ("files", "never/written.txt"),
        ("path", "missing.csv"),
        ("directory", "which is not a file"),
    ],
)
def test_a_returned_file_that_does_not_exist_binds_nothing(lake, make_file, tmp_path, kind, named) -> None:
    lakelet.use(lake)
    kept = lake.add(make_file("kept.txt", "already here"), "kept.txt")

    @lakelet.stage
    def out():
        with lakelet.File("side/notes.txt").open("w") as f:  # bound only with the return value
            f.write("written before returning")
        return _missing(kind, tmp_path)

    before, names = snapshot(lake.root), [f.name for f in lake.ls()]
    with pytest.raises(lakelet.NotFoundError) as error:
        out()
    assert snapshot(lake.root) == before and [f.name for f in lake.ls()] == names
    assert list((lake.root / "tmp").iterdir()) == []
    message = str(error.value)
    assert "\n" not in message and out.qualname in message and named in message

    @lakelet.stage
    def passes_through(f: lakelet.File):  # a lake file it did not write is a fine return value
        return f

    assert passes_through(f=kept).read_text() == "already here"


def test_file_written_outside_a_stage_is_bound_on_close(lake) -> None:
    lakelet.use(lake)
    with lakelet.File("notes/today.txt").open("w") as o:
        o.write("hello")
    assert lake.file("notes/today.txt").read_text() == "hello"
    with pytest.raises(ZeroDivisionError), lakelet.File("notes/bad.txt").open("w") as o:
        o.write("partial")
        1 / 0  # noqa: B018
    assert not lake.exists("notes/bad.txt")
    with pytest.raises(lakelet.InvalidNameError):
        lakelet.File()  # an implicit name only exists inside a stage


SHARED = """
import lakelet


@lakelet.stage(raw=lakelet.raw("raw/numbers.txt"))
def parse(raw):
    with open(raw) as f:
        return [int(x) for x in f.read().split()]


@lakelet.stage(rows=parse)
def double(rows):
    return [r * 2 for r in rows]


@lakelet.stage(rows=double)
def total(rows):
    return sum(rows)
"""


def test_a_second_machine_skips_and_downloads_only_what_it_reads(tmp_path, monkeypatch, make_file) -> None:
    remote = (tmp_path / "remote").as_uri()
    a = lakelet.init(tmp_path / "a", remote=remote)
    b = lakelet.init(tmp_path / "b", remote=remote)
    a.add(make_file("numbers.txt", "1 2 3 4"), "raw/numbers.txt")
    m = _module(tmp_path, monkeypatch, SHARED, f"shared_{uuid.uuid4().hex[:8]}")
    runs = Runs()
    logging.getLogger("lakelet.stage").addHandler(runs)
    logging.getLogger("lakelet.stage").setLevel(logging.INFO)
    try:
        with lakelet.use(a):
            assert m.total() == 20
        assert sorted(runs.ran) == ["double", "parse", "total"]
        runs.ran.clear()
        with lakelet.use(b):
            assert m.total() == 20
        assert runs.ran == []  # every stage was skipped on b
    finally:
        logging.getLogger("lakelet.stage").removeHandler(runs)
    local = {f.name for f in b.ls() if f.is_local}
    assert len(local) == 2 and all(n.startswith(f"stages/{m.__name__}.total/") for n in local)
    assert not b.file("raw/numbers.txt").is_local  # its digest came from the record alone


def test_table_and_array_outputs_come_back_as_the_same_kind(lake) -> None:
    import numpy as np
    import pandas as pd
    import polars as pl
    import pyarrow as pa

    lakelet.use(lake)
    calls = []

    @lakelet.stage
    def frames(kind: str):
        calls.append(kind)
        data = {"id": [1, 2, 3], "amount": [9.5, 1.25, 3.0]}
        return {"pandas": pd.DataFrame, "polars": pl.DataFrame, "arrow": pa.table}[kind](data)

    @lakelet.stage
    def array():
        calls.append("numpy")
        return np.arange(6, dtype=np.int32).reshape(2, 3)

    @lakelet.stage(format="csv")
    def as_csv():
        calls.append("csv")
        return pd.DataFrame({"a": [1, 2]})

    for _ in range(2):  # first run stores, second loads from the lake
        assert isinstance(frames("pandas"), pd.DataFrame)
        assert frames("pandas")["amount"].tolist() == [9.5, 1.25, 3.0]
        assert isinstance(frames("polars"), pl.DataFrame) and frames("polars")["id"].to_list() == [1, 2, 3]
        assert isinstance(frames("arrow"), pa.Table) and frames("arrow").num_rows == 3
        assert array().tolist() == [[0, 1, 2], [3, 4, 5]] and array().dtype == np.int32
        assert as_csv()["a"].tolist() == [1, 2]
    assert sorted(calls) == ["arrow", "csv", "numpy", "pandas", "polars"]
    names = [f.name for f in lake.ls("stages/")]
    assert sum(n.endswith(".parquet") for n in names) == 3 and any(n.endswith(".npy") for n in names)


def test_pickle_only_when_asked(lake) -> None:
    lakelet.use(lake)

    @lakelet.stage(format="pickle")
    def pickled():
        return {"thing": (1, 2), "set": {1, 2}}

    assert pickled() == {"thing": (1, 2), "set": {1, 2}}
    assert pickled() == {"thing": (1, 2), "set": {1, 2}}  # loaded back: the stage asked for pickle
    with pytest.raises(lakelet.InvalidArgumentError, match="unknown format"):
        lakelet.stage(format="yaml")(lambda: 1)


RACE = """
import os, sys, lakelet
lake = lakelet.open(sys.argv[1])
lakelet.use(lake)

@lakelet.stage
def noisy(n: int):
    return os.urandom(16).hex() + str(sum(range(n)))  # not deterministic

print("ready", flush=True)
sys.stdin.readline()
print(noisy(200_000), flush=True)
"""


def test_two_machines_missing_together_both_succeed_one_result_wins(tmp_path) -> None:
    remote = (tmp_path / "remote").as_uri()
    roots = [lakelet.init(tmp_path / m, remote=remote).root for m in ("a", "b")]
    script = tmp_path / "race_stage.py"
    script.write_text(RACE)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in roots
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(out.strip())
    c = lakelet.init(tmp_path / "c", remote=remote)
    c.sync()
    outputs = [f for f in c.ls("stages/") if "/output." in f.name]
    assert len(outputs) == 1 and outputs[0].read_text() in results  # one result is bound


def test_a_raw_input_edited_in_place_with_its_size_and_mtime_put_back_runs_again(pipeline) -> None:
    m = pipeline.load()
    assert m.total() == 12
    before = os.stat(pipeline.raw)
    with open(pipeline.raw, "r+b") as f:  # same inode, same size: 1 2 3 -> 4 5 6
        f.write(b"4\n5\n6\n")
    os.utime(pipeline.raw, ns=(before.st_atime_ns, before.st_mtime_ns))  # the mtime put back
    after = os.stat(pipeline.raw)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    m = pipeline.load()
    assert m.total() == 30 and sorted(pipeline.ran) == ["enrich", "read_raw", "total"]
