"""A clumsy user, a hostile environment and a failing disk on one machine: bad input is one
clear line and changes nothing; a killed or failing add loses no file and binds nothing it
did not finish; a bound add reports success."""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import lakelet
from lakelet.core._digest import Digest

from .conftest import run_lakelet, snapshot

# --- the user: one rule for every place it becomes a path ---------------------------------


@pytest.fixture
def key_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A secret key outside the lake, the same for this process and the CLI it runs."""
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.mark.parametrize("user", ["../org", "..", "a/b", "x\ny", "/abs", "\udcff"])
def test_an_invalid_lakelet_user_cannot_overwrite_the_org_secret(lake, key_env, user) -> None:
    lake.secrets.set("API", "org-value", org=True)
    before = snapshot(lake.root)
    done = run_lakelet(
        "--lake",
        str(lake.root),
        "secrets",
        "set",
        "API",
        input=b"evil\n",
        env={**key_env, "LAKELET_USER": user},
    )
    assert done.returncode == 1
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "LAKELET_USER" in lines[0], lines
    assert snapshot(lake.root) == before
    assert lake.secrets.values(["API"]) == {"API": "org-value"}


@pytest.mark.parametrize("user", ["../org", "a/b"])
def test_an_invalid_lakelet_user_is_one_error_in_every_api_that_uses_it(
    lake, key_env, make_file, monkeypatch, user
) -> None:
    lake.secrets.set("API", "org-value", org=True)
    src = make_file("a.txt", "a")
    before = snapshot(lake.root)
    monkeypatch.setenv("LAKELET_USER", user)
    for call in (
        lambda: lake.secrets.set("API", "evil"),
        lambda: lake.secrets.values(["API"]),
        lambda: lake.secrets.list(),
        lambda: lake.secrets.delete("API"),
        lambda: lake.user.puts("x", b"x"),
        lambda: lake.add(src, "a.txt"),
        lambda: lakelet.current_user(),
    ):
        with pytest.raises(lakelet.InvalidNameError, match="LAKELET_USER"):
            call()
    assert snapshot(lake.root) == before
    monkeypatch.setenv("LAKELET_USER", "tester@example.com")
    assert lake.secrets.values(["API"]) == {"API": "org-value"}


# --- add --move: the sources survive until their names are bound ---------------------------

MOVE_SCRIPT = """
import sys, lakelet
lake = lakelet.open(sys.argv[1])
lake.add(sys.argv[2], sys.argv[3], move=True)
print("done", flush=True)
"""

# every step of a move-add from the first file stored to the names bound
MOVE_POINTS = ["blob-after-rename", "objects-stored", "segment-written", "names-bound"]


def _move_in_subprocess(
    lake_root: Path, src: Path, name: str, crash_at: str
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", MOVE_SCRIPT, str(lake_root), str(src), name],
        env={**os.environ, "LAKELET_CRASH_AT": crash_at},
        capture_output=True,
        timeout=120,
    )


def _assert_no_file_lost(lake_root: Path, contents: dict[Path, bytes], names: dict[Path, str]) -> None:
    """Each source is at its path with its content, or its name reads back that content."""
    lake = lakelet.open(lake_root)
    for path, content in contents.items():
        if path.exists():
            assert path.read_bytes() == content, path
        else:
            assert lake.exists(names[path]), f"{path} is gone and {names[path]} is not bound"
            assert lake.file(names[path]).read_bytes() == content


@pytest.mark.parametrize("point", MOVE_POINTS)
def test_a_move_add_killed_before_its_names_are_bound_loses_no_source(lake, tmp_path, point) -> None:
    directory = tmp_path / "incoming"
    contents = {}
    for i in range(12):
        # small files, and one over a chunk (4 MiB), which is streamed rather than read whole
        path = directory / f"sub{i % 3}" / f"f{i:02}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        contents[path] = os.urandom((5 << 20) if i == 4 else 100 + i)
        path.write_bytes(contents[path])
    names = {p: "in/" + p.relative_to(directory).as_posix() for p in contents}

    crashed = _move_in_subprocess(lake.root, directory, "in", point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    _assert_no_file_lost(lake.root, contents, names)
    # a day later, gc drops what no name refers to: never the only copy of a source
    lakelet.open(lake.root).gc(now=datetime.now(UTC) + timedelta(days=2))
    _assert_no_file_lost(lake.root, contents, names)

    again = _move_in_subprocess(lake.root, directory, "in", "")
    assert again.returncode == 0, again.stderr.decode()
    reopened = lakelet.open(lake.root)
    assert {f.name: f.read_bytes() for f in reopened.ls("in/")} == {names[p]: c for p, c in contents.items()}
    assert not any(p.exists() for p in contents)
    assert reopened.fsck().ok


@pytest.mark.parametrize("point", ["blob-after-rename", "objects-stored"])
def test_a_single_file_move_killed_before_it_is_bound_keeps_the_source(lake, make_file, point) -> None:
    content = os.urandom(9 << 20)
    src = make_file("big.bin", content)
    crashed = _move_in_subprocess(lake.root, src, "big.bin", point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    assert src.read_bytes() == content
    lakelet.open(lake.root).gc(now=datetime.now(UTC) + timedelta(days=2))
    assert src.read_bytes() == content
    again = _move_in_subprocess(lake.root, src, "big.bin", "")
    assert again.returncode == 0, again.stderr.decode()
    assert not src.exists()
    assert lakelet.open(lake.root).file("big.bin").read_bytes() == content


def test_moving_a_file_with_another_name_keeps_the_stored_content_apart(lake, make_file) -> None:
    src = make_file("linked.bin", b"original content")
    other = src.with_name("other-name.bin")
    os.link(src, other)
    f = lake.add(src, "linked.bin", move=True)
    assert not src.exists()
    other.chmod(0o644)
    other.write_bytes(b"changed by its owner")  # in place: same inode
    assert lakelet.open(lake.root).file("linked.bin").read_bytes() == b"original content"
    assert os.stat(f.path).st_nlink == 1


def test_moving_a_symlink_stores_its_content_and_removes_the_link(lake, make_file) -> None:
    target = make_file("target.bin", b"original content")
    link = target.with_name("link.bin")
    link.symlink_to(target)
    f = lake.add(link, "link.bin", move=True)
    assert not os.path.lexists(link) and target.read_bytes() == b"original content"
    stored = lake.context.objects.path(Digest.parse(f.digest))  # f.path is a view: a symlink to it
    assert not os.path.islink(stored) and os.path.realpath(f.path) == str(stored)
    target.chmod(0o644)
    target.write_bytes(b"changed by its owner")
    assert lakelet.open(lake.root).file("link.bin").read_bytes() == b"original content"


# --- add from http: a body shorter than announced binds nothing -----------------------------


@pytest.fixture
def lying_server() -> Iterator[str]:
    """Announces 100,000 bytes, sends 5,000 and closes (``/short``); ``/chunked`` stops a
    chunked body mid-chunk; ``/ok`` sends what it announces."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            if self.path == "/chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"1388\r\n" + b"c" * 3000)  # 0x1388 = 5000 announced, 3000 sent
            else:
                self.send_header("Content-Length", "5000" if self.path == "/ok" else "100000")
                self.end_headers()
                self.wfile.write(b"x" * 5000)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/short", "/chunked"])
def test_a_download_shorter_than_announced_fails_and_binds_nothing(lake, lying_server, path) -> None:
    before = snapshot(lake.root)
    with pytest.raises(lakelet.SourceError, match="cannot download") as raised:
        lake.add(lying_server + path, "web.bin")
    assert "\n" not in str(raised.value)
    assert lake.ls() == [] and snapshot(lake.root) == before
    assert list((lake.root / "tmp").iterdir()) == []
    done = run_lakelet("--lake", str(lake.root), "add", lying_server + path, "web.bin")
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: cannot download"), lines
    assert lakelet.open(lake.root).ls() == [] and snapshot(lake.root) == before
    # what the server announces and sends whole is added
    assert lake.add(lying_server + "/ok", "ok.bin").read_bytes() == b"x" * 5000


# --- a full disk: a failed add binds nothing, a bound add reports success --------------------


def _cli(lake_root: Path, *args: str, fault: str = "") -> subprocess.CompletedProcess[bytes]:
    return run_lakelet("--lake", str(lake_root), *args, env={"LAKELET_FAULT": fault})


def _one_error_line(done: subprocess.CompletedProcess[bytes]) -> str:
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr.decode()
    return lines[0]


def _names_and_config(lake_root: Path) -> dict[str, bytes]:
    return {k: v for k, v in snapshot(lake_root).items() if not k.startswith("objects/")}


# where an add writes before its names are bound: a big file's copy, a small file's blob,
# the segment that binds the names
@pytest.mark.parametrize(
    "point, size", [("blob-partly-written", 5 << 20), ("blob-before-rename", 100), ("segment-written", 100)]
)
def test_a_full_disk_before_the_names_are_bound_is_one_line_and_binds_nothing(
    lake, make_file, point, size
) -> None:
    src = make_file("data.bin", os.urandom(size))
    before = _names_and_config(lake.root)
    line = _one_error_line(_cli(lake.root, "add", str(src), "data.bin", fault=f"{point}:ENOSPC"))
    assert "No space left on device" in line
    # an object stored before the failure may stay, bound to nothing, for gc
    assert _names_and_config(lake.root) == before and list((lake.root / "tmp").iterdir()) == []
    assert lakelet.open(lake.root).ls() == []
    assert _cli(lake.root, "add", str(src), "data.bin").returncode == 0  # once there is room
    assert lakelet.open(lake.root).file("data.bin").read_bytes() == src.read_bytes()


def test_a_full_disk_at_the_index_after_the_bind_reports_success(lake, make_file) -> None:
    src = make_file("data.bin", b"bound before the index filled up")
    done = _cli(lake.root, "add", str(src), "data.bin", fault="segment-indexed:ENOSPC")
    assert done.returncode == 0 and done.stdout.startswith(b"added data.bin"), done.stderr.decode()
    # the index catches up from the segment
    assert _cli(lake.root, "cat", "data.bin").stdout == src.read_bytes()
    assert lakelet.open(lake.root).fsck().ok


@pytest.mark.parametrize("point", ["blob-before-rename", "segment-written"])
def test_a_move_that_fails_on_a_full_disk_gives_the_file_back(lake, make_file, point) -> None:
    content = os.urandom(5000)
    src = make_file("mine.bin", content)
    src.chmod(0o640)
    _one_error_line(_cli(lake.root, "add", "--move", str(src), "mine.bin", fault=f"{point}:ENOSPC"))
    st = src.stat()
    assert src.read_bytes() == content and st.st_nlink == 1 and st.st_mode & 0o777 == 0o640
    assert lakelet.open(lake.root).ls() == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs, mounted for the test (needs root, as in CI)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)  # lakes opened here hold files


def _fill(directory: Path) -> Path:
    """Take every free byte of ``directory``'s filesystem."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        for chunk in (1 << 20, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as e:
                assert e.errno == 28  # ENOSPC
    finally:
        os.close(fd)
    return filler


def test_an_object_larger_than_the_free_space_is_one_line_and_binds_nothing(small_disk, tmp_path) -> None:
    lake = lakelet.init(small_disk / "lake")
    src = tmp_path / "too-big.bin"
    src.write_bytes(os.urandom(4 << 20))
    line = _one_error_line(_cli(lake.root, "add", str(src), "big.bin"))
    assert "No space left on device" in line
    assert lakelet.open(lake.root).ls() == [] and list((lake.root / "tmp").iterdir()) == []
    directory = tmp_path / "many"  # small files: written whole, synced once
    for i in range(60):
        (directory / f"f{i:02}.bin").parent.mkdir(exist_ok=True)
        (directory / f"f{i:02}.bin").write_bytes(os.urandom(64 << 10))
    _one_error_line(_cli(lake.root, "add", str(directory), "many"))
    assert lakelet.open(lake.root).ls() == [] and list((lake.root / "tmp").iterdir()) == []


def test_a_disk_that_fills_up_after_the_bind_reports_success(small_disk, tmp_path) -> None:
    """The real index on a real full disk: SQLite's own error, after the segment is durable."""
    lake = lakelet.init(small_disk / "lake")
    src = tmp_path / "data.bin"
    src.write_bytes(b"bound before the disk filled up")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lakelet", "--lake", str(lake.root), "add", str(src), "data.bin"],
        env={**os.environ, "LAKELET_FAULT": "names-bound:stop"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, status = os.waitpid(proc.pid, os.WUNTRACED)  # until it stops at the point
    if not os.WIFSTOPPED(status):
        pytest.fail(f"the add ended before the names were bound: {proc.stderr.read().decode()}")
    try:
        filler = _fill(small_disk)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.startswith(b"added data.bin"), err.decode()
    filler.unlink()
    assert _cli(lake.root, "cat", "data.bin").stdout == src.read_bytes()
    assert lakelet.open(lake.root).fsck().ok


# --- get: only ever a regular file at the destination ---------------------------------------


def _specials(tmp_path: Path) -> dict[str, Path]:
    """A FIFO, a character device like /dev/null, a symlink to a file and a dangling one."""
    places = tmp_path / "places"
    places.mkdir()
    os.mkfifo(places / "fifo")
    with contextlib.suppress(PermissionError):  # not root: the other kinds still make the point
        os.mknod(places / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
    (places / "victim.txt").write_text("not yours to replace")
    (places / "link").symlink_to(places / "victim.txt")
    (places / "dangling").symlink_to(places / "nowhere")
    return {p.name: p for p in places.iterdir() if p.name != "victim.txt"}


def _kinds(paths: dict[str, Path]) -> dict[str, int]:
    return {name: os.lstat(p).st_mode for name, p in paths.items()}


def test_get_refuses_a_fifo_a_device_or_a_symlink_as_its_destination(lake, make_file, tmp_path) -> None:
    lake.add(make_file("x.txt", "content"), "x.txt")
    specials = _specials(tmp_path)
    before = _kinds(specials)
    for name, path in specials.items():
        line = _one_error_line(_cli(lake.root, "get", "x.txt", str(path)))
        assert str(path) in line and "regular file" in line, (name, line)
    assert _kinds(specials) == before
    assert (tmp_path / "places" / "victim.txt").read_text() == "not yours to replace"
    assert not (tmp_path / "places" / "nowhere").exists()
    assert [p.name for p in (tmp_path / "places").iterdir() if p.name.endswith(".tmp")] == []


def test_export_and_scoped_get_refuse_what_is_not_a_regular_file(lake, make_file, tmp_path) -> None:
    f = lake.add(make_file("x.txt", "content"), "x.txt")
    lake.user.puts("x.txt", b"content")
    specials = _specials(tmp_path)
    before = _kinds(specials)
    for path in specials.values():
        with pytest.raises(lakelet.InvalidArgumentError, match="regular file"):
            f.export(path)
        with pytest.raises(lakelet.InvalidArgumentError, match="regular file"):
            lake.user.get("x.txt", path)
    assert _kinds(specials) == before
    assert (tmp_path / "places" / "victim.txt").read_text() == "not yours to replace"
    # a regular file is replaced, and a directory given keeps the name's last segment
    (tmp_path / "places" / "plain.txt").write_text("old")
    assert f.export(tmp_path / "places" / "plain.txt").read_text() == "content"
    assert f.export(tmp_path / "places") == tmp_path / "places" / "x.txt"


def test_get_into_a_place_that_refuses_files_is_one_line(lake, make_file) -> None:
    lake.add(make_file("x.txt", "content"), "x.txt")
    lake.user.puts("x.txt", b"content")
    assert "cannot write /proc/version" in _one_error_line(_cli(lake.root, "get", "x.txt", "/proc/version"))
    with pytest.raises(lakelet.StorageError, match="cannot write /proc/version"):
        lake.user.get("x.txt", "/proc/version")


# --- where the lake is: a file where a folder should be, a folder where a file should be ----


def test_a_lake_path_that_is_a_file_is_one_line_and_changes_nothing(tmp_path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for args in (["init", str(afile)], ["init", str(afile / "sub")], ["--lake", str(afile), "ls"]):
        line = _one_error_line(run_lakelet(*args))
        assert str(afile) in line and "a file" in line, (args, line)
    assert afile.read_text() == "mine"
    with pytest.raises(lakelet.InvalidArgumentError, match="a file"):
        lakelet.init(afile)
    with pytest.raises(lakelet.LakeNotFoundError, match="a file"):
        lakelet.open(afile)


def test_a_lakelet_toml_that_is_a_directory_is_one_line(tmp_path) -> None:
    root = tmp_path / "lake"
    (root / "lakelet.toml").mkdir(parents=True)
    for args in (["--lake", str(root), "ls"], ["init", str(root)]):
        line = _one_error_line(run_lakelet(*args))
        assert "lakelet.toml is a directory" in line, (args, line)
    with pytest.raises(lakelet.ConfigError, match="is a directory"):
        lakelet.open(root)


# --- the index and the name records, damaged on disk: fsck repairs, nothing else dies -------


def _lake_of_three(lake: lakelet.Lake, make_file) -> dict[str, bytes]:
    contents = {"a.txt": b"alpha", "b.txt": b"bravo", "c.txt": b"charlie"}
    for name, content in contents.items():
        lake.add(make_file(name, content), name)
    lake.close()  # the WAL checkpointed into index.sqlite
    return contents


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        os.truncate(path, path.stat().st_size // 2)
    else:
        path.write_bytes(b"not a database at all " * 200)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_an_unreadable_index_is_one_line_everywhere_and_fsck_sets_it_aside_and_rebuilds_it(
    lake, make_file, tmp_path, how
) -> None:
    contents = _lake_of_three(lake, make_file)
    index = lake.root / "index.sqlite"
    _damage(index, how)
    damaged = index.read_bytes()
    make_file("d.txt", "delta")
    for args in (["ls"], ["cat", "a.txt"], ["add", str(tmp_path / "src" / "d.txt"), "d.txt"]):
        line = _one_error_line(_cli(lake.root, *args))
        assert "index" in line and "unreadable" in line and "`lakelet fsck`" in line, (args, line)
    with pytest.raises(lakelet.StorageError, match="lakelet fsck"):
        lakelet.open(lake.root).ls()

    done = _cli(lake.root, "fsck")
    assert done.returncode == 1 and b"indexed 3 names" in done.stdout, done.stderr
    [line] = done.stderr.decode().splitlines()
    moved = Path(line.split("moved to ", 1)[1].split(" and rebuilt")[0])
    assert moved.parent == lake.root / "quarantine" and moved.read_bytes() == damaged  # kept, as it was
    assert _cli(lake.root, "fsck").returncode == 0
    reopened = lakelet.open(lake.root)
    assert [f.name for f in reopened.ls()] == sorted(contents)
    assert {name: reopened.file(name).read_bytes() for name in contents} == contents


def test_a_segment_cut_mid_line_or_holding_garbage_is_quarantined_by_fsck_and_the_rest_indexed(
    lake, make_file, tmp_path
) -> None:
    (tmp_path / "dir").mkdir()
    for name in ("one.txt", "two.txt", "three.txt"):
        (tmp_path / "dir" / name).write_text(name)
    lake.add(tmp_path / "dir", "d")  # segment 1: three names
    lake.add(make_file("x.txt", "xray"), "x.txt")  # segment 2
    lake.close()
    first, second = sorted((lake.root / "names" / "segments").iterdir())
    whole = first.read_bytes()
    cut = whole[: whole.index(b"\n") + 1 + 40]  # the first record, then 40 bytes of the second
    for segment, body in ((first, cut), (second, second.read_bytes() + b"{not json\n\x00\xff garbage\n")):
        segment.chmod(0o644)
        segment.write_bytes(body)
    (lake.root / "index.sqlite").unlink()  # rebuilt from the damaged segments
    originals = {p.name: p.read_bytes() for p in (first, second)}

    listed = _cli(lake.root, "ls")
    assert listed.returncode == 0 and b"Traceback" not in listed.stderr
    done = _cli(lake.root, "fsck")
    assert done.returncode == 1, done.stderr
    problems = done.stderr.decode().splitlines()
    assert len(problems) == 3 and all(p.startswith("invalid name record: ") for p in problems), problems
    assert f"{first}, line 2" in problems[0] and f"{second}, line 2" in problems[1]
    kept = lake.root / "quarantine" / "names" / "segments"
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == originals
    assert _cli(lake.root, "fsck").returncode == 0  # the segments now hold their valid lines only
    reopened = lakelet.open(lake.root)
    first_name = sorted(n for n in ("d/one.txt", "d/two.txt", "d/three.txt") if n.encode() in cut)
    assert [f.name for f in reopened.ls()] == [*first_name, "x.txt"]
    assert reopened.file("x.txt").read_bytes() == b"xray"


# --- untyped errors: one `error:` line in the CLI, a LakeletError in the API ----------------

LONG_SEGMENT = "s" * 300  # past the 255 bytes a Linux filesystem takes in one path segment


def _damage_config(root: Path) -> None:
    config = root / "lakelet.toml"
    config.write_text(config.read_text().replace("[lake]", "[lake]\nremote = 5"))


def _damage_marker(root: Path) -> None:
    remote = root.parent / "remote"
    (remote / "lakelet-remote.json").write_text('{"format": "two"}')
    config = root / "lakelet.toml"
    config.write_text(config.read_text().replace("[lake]", f'[lake]\nremote = "{remote.as_uri()}"'))


def _damage_secret(root: Path) -> None:
    [secret] = (root / "secrets").rglob("*.json")
    secret.chmod(0o600)
    secret.write_text('{"nonce": 5}')


UNTYPED = {
    # case: (damage the lake, the CLI command, what its one line says)
    "get-long-segment": (None, ["get", "x.txt", f"/tmp/{LONG_SEGMENT}"], "File name too long"),
    "get-under-long-segment": (None, ["get", "x.txt", f"/tmp/{LONG_SEGMENT}/x"], "File name too long"),
    # a name may have a segment of any length; a folder given takes it as the file's name
    "get-long-name-into-a-folder": (None, ["get", f"n/{LONG_SEGMENT}", "/tmp"], f"/tmp/{LONG_SEGMENT}:"),
    "config-remote-not-a-string": (_damage_config, ["ls"], "remote must be a URL"),
    "remote-marker-damaged": (_damage_marker, ["sync"], "format marker"),
}


@pytest.mark.parametrize("case", UNTYPED)
def test_a_hostile_input_is_one_error_line(lake, make_file, tmp_path, key_env, case) -> None:
    damage, args, says = UNTYPED[case]
    lake.add(make_file("x.txt", "content"), "x.txt")
    lake.add(make_file("long.txt", "content"), f"n/{LONG_SEGMENT}")
    lake.secrets.set("API", "value")
    (tmp_path / "remote").mkdir()
    if damage is not None:
        damage(lake.root)
    line = _one_error_line(run_lakelet("--lake", str(lake.root), *args, env=key_env))
    assert says in line, line


def test_a_damaged_secret_file_is_one_warning_and_the_others_stay_listed(lake, key_env) -> None:
    lake.secrets.set("API", "value")
    _damage_secret(lake.root)
    lake.secrets.set("OTHER", "value")
    done = run_lakelet("--lake", str(lake.root), "secrets", "list", env=key_env)
    [line] = done.stderr.decode().splitlines()
    assert done.returncode == 0 and line.startswith("warning: secret file ") and "is damaged" in line
    assert b"OTHER" in done.stdout and b"API" not in done.stdout


def test_the_same_inputs_are_lakelet_errors_in_the_api(lake, make_file, tmp_path, key_env) -> None:
    f = lake.add(make_file("x.txt", "content"), "x.txt")
    lake.user.puts("ten.bin", b"0123456789")
    with pytest.raises(lakelet.StorageError, match="File name too long"):
        f.export(tmp_path / LONG_SEGMENT)
    with pytest.raises(lakelet.StorageError, match="File name too long"):
        lake.user.get("ten.bin", tmp_path / LONG_SEGMENT / "x")
    # a range past the end is empty, as a slice is
    assert lake.user.gets("ten.bin", byte_range=[100, 200]) == b""
    assert lake.user.gets("ten.bin", byte_range=[8, 200]) == b"89"
    lake.secrets.set("API", "value")
    _damage_secret(lake.root)
    with pytest.raises(lakelet.CorruptRecordError, match="is damaged"):
        lake.secrets.values(["API"])
    assert lake.secrets.list() == []  # skipped (and logged), the listing still works
    _damage_config(lake.root)
    with pytest.raises(lakelet.ConfigError, match="remote must be a URL"):
        lakelet.open(lake.root)


@pytest.mark.parametrize("name", ["x[bold]y", "[red]q", "a[/red]b", "[link=javascript:alert(1)]z[/link]"])
def test_names_print_as_they_are_never_as_markup(lake, make_file, name) -> None:
    src = make_file("x.txt", "content")
    added = run_lakelet("--lake", str(lake.root), "add", str(src), name)
    assert added.returncode == 0 and added.stdout.decode().startswith(f"added {name} "), added
    listed = run_lakelet("--lake", str(lake.root), "ls")
    assert name in listed.stdout.decode().split(), listed.stdout
    missing = _one_error_line(run_lakelet("--lake", str(lake.root), "cat", name + "-missing"))
    assert repr(name + "-missing") in missing


def test_a_missing_path_while_publishing_to_a_file_remote_is_named(lake, make_file, tmp_path) -> None:
    """Not "its bucket does not exist": the remote's folder exists, a path under it went."""
    remote = tmp_path / "remote"
    shared = lakelet.init(tmp_path / "shared", remote=remote.as_uri())
    src = make_file("data.bin", "content")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lakelet", "--lake", str(shared.root), "add", str(src), "data.bin"],
        env={**os.environ, "LAKELET_FAULT": "remote-file-written:stop"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, status = os.waitpid(proc.pid, os.WUNTRACED)  # its temp file is written in the remote's tmp/
    if not os.WIFSTOPPED(status):
        pytest.fail(f"the add ended before it published to the remote: {proc.stderr.read().decode()}")
    try:
        shutil.rmtree(remote / "tmp")  # removed under it (a clean-up of the shared folder)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    [line] = err.decode().splitlines()
    assert proc.returncode == 1 and line.startswith("error: "), err
    assert "bucket" not in line and f"{remote / 'tmp'}/" in line and "No such file or directory" in line
    assert lakelet.open(shared.root).ls() == []


# --- a directory add: what it follows out of the folder, and what it leaves out, is said ----


def _odd_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    (tmp_path / "outside.txt").write_text("outside")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "b.txt").write_text("b")
    (folder / "link_in").symlink_to(folder / "a.txt")
    (folder / "link_out").symlink_to(tmp_path / "outside.txt")
    (folder / "linkdir").symlink_to(tmp_path / "elsewhere")
    (folder / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(folder / "fifo")
    return folder


def test_a_directory_add_reports_symlinks_out_and_entries_left_out(lake, tmp_path, caplog) -> None:
    folder = _odd_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lakelet"):
        files = lake.add(folder, "d")
    assert {f.name: f.read_text() for f in files} == {
        "d/a.txt": "a",
        "d/link_in": "a",
        "d/link_out": "outside",
    }
    out, left = (r.getMessage() for r in caplog.records)
    assert f"link_out -> {tmp_path / 'outside.txt'}" in out and "link_in" not in out
    for entry in ("dangling (a symlink to nothing)", "fifo (a FIFO)", "linkdir (a symlink to a folder"):
        assert entry in left, left

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lakelet"):
        files = lake.add(folder, "strict", follow_symlinks=False)
    assert [f.name for f in files] == ["strict/a.txt"]
    [left] = (r.getMessage() for r in caplog.records)
    assert "link_in (a symlink, not followed)" in left and "link_out (a symlink, not followed)" in left

    done = run_lakelet("--lake", str(lake.root), "add", "--no-follow", str(folder), "cli")
    [line] = done.stderr.decode().splitlines()
    assert done.returncode == 0 and line.startswith("warning: adding ") and "not followed" in line
    assert done.stdout.startswith(b"added cli/a.txt ")
