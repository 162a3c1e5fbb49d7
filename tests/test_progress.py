"""Progress bars: drawn on a terminal for work that lasts, never into pipes."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

import lakelet

from .conftest import run_lakelet


def _run_on_terminal(
    *args: str, env: dict[str, str] | None = None, argv: list[str] | None = None
) -> tuple[int, bytes]:
    """Run the CLI (or ``argv``) with stdout and stderr on a pseudo-terminal; return (exit code,
    what the terminal got)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        argv or [sys.executable, "-m", "lakelet", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env={**os.environ, **(env or {})},
    )
    os.close(slave)
    screen = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer of the terminal has closed it
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    return proc.wait(timeout=120), bytes(screen)


def test_add_draws_a_bar_on_a_terminal_and_nothing_in_a_pipe(tmp_path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(64 << 20))
    env = {"LAKELET_HOME": str(lakelet.init(tmp_path / "lake").root), "LAKELET_PROGRESS_DELAY": "0"}

    code, screen = _run_on_terminal("add", str(big), "big.bin", env=env)
    assert code == 0, screen
    assert b"adding big.bin" in screen and b"MiB" in screen  # the bar: description and transfer size

    piped = run_lakelet("add", str(big), "big-again.bin", env=env)
    assert piped.returncode == 0
    assert piped.stderr == b"" and b"adding" not in piped.stdout


def test_no_bar_for_work_shorter_than_the_delay(tmp_path) -> None:
    small = tmp_path / "small.txt"
    small.write_bytes(b"x")
    env = {"LAKELET_HOME": str(lakelet.init(tmp_path / "lake").root), "LAKELET_PROGRESS_DELAY": "3600"}
    code, screen = _run_on_terminal("add", str(small), "small.txt", env=env)
    assert code == 0 and b"adding" not in screen and b"added small.txt" in screen


PIPELINE = """
import pytest

import lakelet

@lakelet.stage
def one():
    return 1

@lakelet.stage(x=one)
def two(x):
    return x + 1
"""


def test_lakelet_run_shows_stage_progress_on_a_terminal(tmp_path) -> None:
    (tmp_path / "run_display.py").write_text(PIPELINE)
    lake = lakelet.init(tmp_path / "lake")
    code, screen = _run_on_terminal(
        "--lake", str(lake.root), "run", str(tmp_path / "run_display.py:two"), "--run-id", "shown"
    )
    assert code == 0, screen
    assert b"run shown:" in screen and b"done" in screen and b"2" in screen
    assert b"run shown: 2 ran, 0 skipped, 0 failed" in screen  # the summary, once the line is gone


def test_a_library_run_and_map_draw_one_bar_for_a_person_and_nothing_else(tmp_path) -> None:
    """`lakelet.run` and `Stage.map` draw one bar of stages (items) on a terminal, never a line
    per call; `progress=False`, or a pipe, draws nothing."""
    script = tmp_path / "run_quietly.py"
    script.write_text(
        PIPELINE + "\n@lakelet.stage\ndef square(n):\n    return n * n\n\n"
        "import sys\nlakelet.use(lakelet.init(sys.argv[1]))\n"
        "show = {'None': None, 'False': False}[sys.argv[2]]\n"
        "print(lakelet.run(two, run_id='quiet', progress=show))\n"
        "print(sum(square.map(range(30), progress=show)))\n"
    )
    env = {"LAKELET_PROGRESS_DELAY": "0"}
    code, screen = _run_on_terminal(env=env, argv=[sys.executable, str(script), str(tmp_path / "a"), "None"])
    assert code == 0, screen
    assert b"running " in screen and b"2/2" in screen  # the run's bar: both stages ran
    assert b"30/30" in screen  # the map's bar, one for its 30 calls
    assert (
        b"lakelet:" not in screen and b"2\r\n" in screen and screen.endswith(b"8555\r\n")
    )  # no line per call

    code, screen = _run_on_terminal(env=env, argv=[sys.executable, str(script), str(tmp_path / "b"), "False"])
    assert code == 0 and screen == b"2\r\n8555\r\n"
    piped = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "c"), "None"],
        capture_output=True,
        env={**os.environ, **env},
    )
    assert piped.returncode == 0 and piped.stderr == b"" and piped.stdout == b"2\n8555\n"


NOTEBOOK_CELLS = [
    """import os, lakelet
os.environ["LAKELET_PROGRESS_DELAY"] = "0"
lake = lakelet.init({root!r})
lakelet.use(lake)
lake.add(os.urandom(8 << 20), "raw/<b>big</b>.bin").size""",
    """@lakelet.stage
def square(n):
    return n * n

sum(square.map(range(30)))""",
    """lake.add(b"quiet", "quiet.txt", progress=False).size""",
]


def test_a_jupyter_kernel_shows_one_bar_in_the_cell_without_ipywidgets(tmp_path) -> None:
    """In a real kernel (nbclient): the bar is HTML in the cell's output, updated in place and
    left at its end with the right count; rich's bar needed ipywidgets and, without them,
    printed a warning into the cell instead."""
    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell(c.format(root=str(tmp_path / "lake"))) for c in NOTEBOOK_CELLS]
    NotebookClient(book, timeout=120, kernel_name="python3").execute()
    added, mapped, quiet = (cell.outputs for cell in book.cells)

    assert all(o.output_type != "stream" for o in added + mapped + quiet), added + mapped  # no warning
    assert "ipywidgets" not in str(added + mapped)
    bars = [o for o in added if o.output_type == "display_data"]
    assert len(bars) == 1, added
    html = bars[0].data["text/html"]
    assert '<progress value="8388608" max="8388608">' in html and "8.0 MiB of 8.0 MiB in " in html
    assert "&lt;b&gt;big&lt;/b&gt;" in html and "<b>" not in html  # a name is anyone's text
    assert added[-1].data["text/plain"] == str(8 << 20)
    (bar,) = (o for o in mapped if o.output_type == "display_data")
    assert "30 of 30 items" in bar.data["text/plain"] and mapped[-1].data["text/plain"] == "8555"
    assert [o.output_type for o in quiet] == ["execute_result"]


class _Phases:
    """A Progress that keeps (description, total, done) of each step it is told of."""

    def __init__(self) -> None:
        self.steps = [["", 0, 0]]

    def phase(self, description: str) -> None:
        self.steps.append([description, 0, 0])

    def add_total(self, nbytes: int, /) -> None:
        self.steps[-1][1] += nbytes

    def advance(self, nbytes: int, /) -> None:
        self.steps[-1][2] += nbytes


@pytest.mark.parametrize("remote", ["s3"], indirect=True)
def test_an_add_to_a_remote_counts_each_byte_once_per_step(machine) -> None:
    """An add to an S3 lake stores, then uploads: a bar showed 2x the file (160.0/160.0 MB
    for 80 MB); each step now counts the file's size once."""
    lake = machine("a")
    steps = _Phases()
    lake.add(os.urandom(3 << 20), "big.bin", progress=steps)
    assert steps.steps == [["", 3 << 20, 3 << 20], ["uploading", 3 << 20, 3 << 20]]


LIBRARY_ADD = """
import os, sys, lakelet
lake = lakelet.open(sys.argv[1])
lake.add(os.urandom(8 << 20), sys.argv[2], progress={progress})
"""


LIBRARY_WRITE = """
import sys, lakelet, pyarrow as pa
lake = lakelet.open(sys.argv[1])
lake.write_dataset(sys.argv[2], pa.table({{"x": list(range(1000))}}), progress={progress})
"""


@pytest.mark.parametrize(
    ("script_text", "names", "drawn", "unit"),
    [
        pytest.param(LIBRARY_ADD, ("a.bin", "b.bin", "c.bin"), b"adding a.bin", b"MB", id="add"),
        pytest.param(
            LIBRARY_WRITE, ("a/one", "a/two", "a/three"), b"writing a/one", b"kB", id="write_dataset"
        ),
    ],
)
def test_library_progress_is_on_for_a_terminal_and_off_for_a_pipe(
    tmp_path, script_text, names, drawn, unit
) -> None:
    lake = lakelet.init(tmp_path / "lake")
    env = {"LAKELET_PROGRESS_DELAY": "0"}
    script = tmp_path / "library.py"
    script.write_text(script_text.format(progress="None"))
    code, screen = _run_on_terminal(env=env, argv=[sys.executable, str(script), str(lake.root), names[0]])
    assert code == 0, screen
    assert drawn in screen and unit in screen  # interactive: the default draws a bar
    piped = subprocess.run(
        [sys.executable, str(script), str(lake.root), names[1]],
        capture_output=True,
        env={**os.environ, **env},
    )
    assert piped.returncode == 0 and piped.stderr == b""  # a pipe: nothing
    script.write_text(script_text.format(progress="False"))
    code, screen = _run_on_terminal(env=env, argv=[sys.executable, str(script), str(lake.root), names[2]])
    assert code == 0 and drawn.split()[0] not in screen


@pytest.mark.parametrize("remote", ["s3"], indirect=True)
@pytest.mark.parametrize("mode", ["append", "merge"])
def test_write_dataset_counts_the_data_then_each_uploaded_byte_once(machine, mode) -> None:
    """A dataset write tells the table's bytes as the writer takes them, then, to a remote, the
    files' bytes as they are uploaded: each step from zero, each adding up to its total."""
    import pyarrow as pa

    lake = machine("a")
    table = pa.table({"k": list(range(2000)), "dt": ["2025-01-20", "2025-01-21"] * 1000})
    steps = _Phases()
    keys = ["k"] if mode == "merge" else None
    ds = lake.write_dataset("sales/orders", table, partition_by=["dt"], mode=mode, keys=keys, progress=steps)
    files = sum(os.path.getsize(f) for f in ds.files)
    assert len(ds.files) == 2 and steps.steps[1:] == [["uploading", files, files]]
    ((_, total, done),) = steps.steps[:1]
    if mode == "merge":  # the rows it writes in the table's schema, known as they are read
        assert total == done and table.nbytes <= total < 1.1 * table.nbytes
    else:
        assert total == done == table.nbytes


WRITING_PIPELINE = """
import sys

import pyarrow as pa

import lakelet

@lakelet.stage
def orders():
    lakelet.current_lake().write_dataset("sales/orders", pa.table({"x": list(range(1000))}))
    return 1

lakelet.use(lakelet.init(sys.argv[1]))
print(lakelet.run(orders, run_id="quiet"))
"""


def test_a_write_inside_a_stage_draws_no_bar_of_its_own(tmp_path) -> None:
    """A run draws its one bar of stages; a stage's dataset write adds no bar of its own."""
    script = tmp_path / "run_writing.py"
    script.write_text(WRITING_PIPELINE)
    env = {"LAKELET_PROGRESS_DELAY": "0"}
    code, screen = _run_on_terminal(env=env, argv=[sys.executable, str(script), str(tmp_path / "lake")])
    assert code == 0 and screen.endswith(b"1\r\n"), screen
    assert b"1/1" in screen and b"writing" not in screen
