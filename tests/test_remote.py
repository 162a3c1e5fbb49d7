"""Sharing a lake through a remote, on every kind of store (file://, S3, Azure, GCS servers)."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import fsspec
import pytest

import lakelet

from .conftest import run_lakelet


def _remote_fs(remote):
    fs, root = fsspec.core.url_to_fs(remote.url, **remote.storage_options)
    return fs, root.rstrip("/")


def test_a_second_machine_sees_names_after_sync_and_fetches_lazily(machine, make_file) -> None:
    a, b = machine("a"), machine("b")
    a.add(make_file("orders.csv", "id\n1\n"), "raw/orders.csv")
    make_file("day/1.txt", "one")
    a.add(make_file("day/2.txt", "two").parent, "raw/day")

    assert b.ls() == []  # b has not synced yet
    report = b.sync()
    assert report.new_names == 3 and report.pushed.names == 0
    states = {f.name: f.state for f in b.ls()}
    assert states == dict.fromkeys(["raw/day/1.txt", "raw/day/2.txt", "raw/orders.csv"], "remote")
    assert not list((b.root / "objects").rglob("*")) or not any(
        p.is_file() for p in (b.root / "objects").rglob("*")
    ), "sync must not download content"

    f = b.file("raw/orders.csv")
    assert not f.is_local
    assert f.read_text() == "id\n1\n"  # first open downloads and verifies
    assert f.is_local and f.state == "local"
    assert f.digest == a.file("raw/orders.csv").digest


def test_an_unknown_name_is_looked_up_on_the_remote(machine, make_file) -> None:
    a, b = machine("a"), machine("b")
    a.add(make_file("x.txt", "x"), "x.txt")
    assert b.exists("x.txt")  # no sync: the remote is consulted before saying no
    assert b.file("x.txt").read_bytes() == b"x"
    with pytest.raises(lakelet.NotFoundError):
        _ = b.file("never-bound.txt").digest


def test_same_name_other_content_is_refused_across_machines(machine, make_file) -> None:
    a, b = machine("a"), machine("b")
    a.add(make_file("one.txt", "one"), "shared.txt")
    before = sorted(p.relative_to(b.root).as_posix() for p in (b.root / "names").rglob("*.json*"))
    with pytest.raises(lakelet.NameExistsError, match="remote"):
        b.add(make_file("two.txt", "two"), "shared.txt")
    assert sorted(p.relative_to(b.root).as_posix() for p in (b.root / "names").rglob("*.json*")) == before
    b.sync()
    assert b.file("shared.txt").read_text() == "one"
    b.add(make_file("one-again.txt", "one"), "shared.txt")  # same content: fine everywhere


def test_a_conflict_inside_a_directory_binds_nothing_anywhere(machine, make_file) -> None:
    a, b = machine("a"), machine("b")
    a.add(make_file("taken.txt", "a's"), "dir/b.txt")
    make_file("d/a.txt", "a")
    make_file("d/c.txt", "c")
    with pytest.raises(lakelet.NameExistsError):
        b.add(make_file("d/b.txt", "b's").parent, "dir")
    c = machine("c")
    c.sync()
    assert [f.name for f in c.ls()] == ["dir/b.txt"]  # b's dir/a.txt and dir/c.txt were undone
    assert not c.exists("dir/a.txt")
    assert b.ls() == [] or [f.name for f in b.ls()] == ["dir/b.txt"]


def test_deferred_upload_waits_for_push(machine, make_file) -> None:
    a, b = machine("a", upload="deferred"), machine("b")
    a.add(make_file("x.txt", "x"), "x.txt")
    assert a.file("x.txt").state == "unpushed"
    b.sync()
    assert not b.exists("x.txt")
    report = a.push()
    assert (report.names, report.objects, report.conflicts) == (1, 1, [])
    assert a.file("x.txt").state == "local"
    assert a.push().names == 0  # nothing left
    b.sync()
    assert b.file("x.txt").read_text() == "x"


def test_push_reports_conflicts_and_keeps_them_local_only(machine, make_file) -> None:
    a, b = machine("a", upload="deferred"), machine("b")
    a.add(make_file("mine.txt", "a's version"), "n.txt")
    a.add(make_file("other.txt", "fine"), "fine.txt")
    b.add(make_file("theirs.txt", "b's version"), "n.txt")  # b writes through first
    report = a.push()
    assert report.conflicts == ["n.txt"] and report.names == 1
    assert a.file("n.txt").state == "unpushed"
    c = machine("c")
    c.sync()
    assert c.file("n.txt").read_text() == "b's version" and c.exists("fine.txt")


def test_corrupt_remote_object_is_detected_and_never_cached(remote, machine, make_file) -> None:
    a, b = machine("a"), machine("b")
    digest = a.add(make_file("x.bin", b"good bytes"), "x.bin").digest
    fs, root = _remote_fs(remote)
    algo, hexdigest = digest.split(":")
    fs.pipe_file(f"{root}/objects/{algo}/{hexdigest[:2]}/{hexdigest[2:]}", b"evil bytes")
    b.sync()
    with pytest.raises(lakelet.IntegrityError, match="corrupt"):
        b.file("x.bin").read_bytes()
    assert not b.file("x.bin").is_local
    assert not any(p.is_file() for p in (b.root / "objects").rglob("*"))
    assert not any(p.is_file() for p in (b.root / "tmp").rglob("*"))
    fs.pipe_file(f"{root}/objects/{algo}/{hexdigest[:2]}/{hexdigest[2:]}", b"good by")  # truncated
    with pytest.raises(lakelet.IntegrityError):
        b.file("x.bin").read_bytes()


def test_evict_drops_only_what_the_remote_holds(machine, make_file) -> None:
    a = machine("a", upload="deferred")
    a.add(make_file("pushed.txt", "p"), "pushed.txt")
    a.push()
    a.add(make_file("pending.txt", "q"), "pending.txt")
    report = a.evict()
    assert report.files == 1 and report.kept_unpushed == ["pending.txt"]
    assert a.file("pushed.txt").state == "remote" and a.file("pending.txt").state == "unpushed"
    assert a.file("pushed.txt").read_text() == "p"  # fetched back on demand
    assert a.file("pending.txt").read_text() == "q"


def test_url_gives_a_link_other_tools_can_read(remote, machine, make_file) -> None:
    a = machine("a")
    if remote.kind == "gcs":  # signing needs a service account key; the emulator runs anonymous
        a.add(make_file("x.txt", "hello"), "x.txt")
        with pytest.raises(lakelet.RemoteError, match="private key"):
            a.url("x.txt")
        return
    a.add(make_file("x.txt", "hello"), "x.txt")
    url = a.url("x.txt", expires=600)
    if remote.kind == "file":
        assert url.startswith("file://") and Path(url.removeprefix("file://")).read_bytes() == b"hello"
    else:
        assert "Signature=" in url or "sig=" in url  # presigned: S3 query signature, Azure SAS
        assert urllib.request.urlopen(url, timeout=10).read() == b"hello"


def test_rm_force_is_seen_by_other_machines(machine, make_file) -> None:
    a, b = machine("a"), machine("b")
    a.add(make_file("x.txt", "x"), "x.txt")
    b.sync()
    a.rm("x.txt", force=True)
    b.sync()
    assert not b.exists("x.txt")
    with pytest.raises(lakelet.NameExistsError, match="removed"):
        b.add(make_file("x2.txt", "x"), "x.txt")


def test_many_names_and_entries_across_log_folders(remote, machine, make_file) -> None:
    """2,600 names in one batch (one log entry), then 1,000 entries written by other writers
    in the documented format: the log crosses into its second folder of 1,000, and both a
    reader and the next writer find their way past it."""
    a, b = machine("a"), machine("b")
    for i in range(2600):  # one content: the cost under test is names, not objects
        make_file(f"many/{i:05d}.txt", "same")
    digest = a.add(make_file("many/last.txt", "last").parent, "many")[0].digest
    b.sync()
    assert len(b.ls("many/")) == 2601
    assert b.file("many/02599.txt").read_text() == "same"

    fs, root = _remote_fs(remote)
    record = {
        "format": 1,
        "scope": "lake",
        "digest": digest,
        "size": 4,
        "created_at": "2025-01-01T00:00:00Z",
        "creator": "elsewhere@example.com",
        "meta": {},
    }
    entries = {  # entry 1 is a's batch
        f"{root}/log/{seq // 1000:09d}/{seq:012d}.jsonl": json.dumps(
            {**record, "name": f"far/{seq}"}
        ).encode()
        for seq in range(2, 1002)
    }
    if remote.kind == "file":  # a directory tree; object stores have no folders to make
        fs.makedirs(f"{root}/log/000000001", exist_ok=True)
    fs.pipe(entries)
    report = b.sync()
    assert (report.new_names, report.entries_read) == (1000, 1000)
    assert b.file("far/1001").read_text() == "same" and len(b.ls("far/")) == 1000
    # b wrote one (1,000 entries since none), of format 3: Parquet shards, the manifest last
    assert fs.exists(f"{root}/snapshots/000000001001/manifest.json")
    a.add(make_file("after.txt", "after"), "after.txt")  # a appends entry 1002, in folder 1
    assert fs.exists(f"{root}/log/000000001/000000001002.jsonl")
    assert b.sync().new_names == 1 and b.file("after.txt").read_text() == "after"

    c = machine("c")  # a new machine: the snapshot, then the one entry after it
    report = c.sync()
    assert (report.new_names, report.entries_read) == (2601 + 1000 + 1, 1)
    assert c.file("many/00007.txt").read_text() == "same" and c.file("after.txt").read_text() == "after"


def test_cli_ls_marks_states_and_warns(remote, machine, make_file, tmp_path) -> None:
    a, b = machine("a"), machine("b", upload="deferred")
    a.add(make_file("remote-only.txt", "r"), "remote-only.txt")
    b.add(make_file("unpushed.txt", "u"), "unpushed.txt")
    env = {**remote.env, "LAKELET_HOME": str(b.root)}
    out = run_lakelet("ls", env=env)
    assert out.returncode == 0
    assert "not on" in out.stderr.decode() and "never synced" in out.stderr.decode()
    assert run_lakelet("sync", env=env).returncode == 0
    listing = json.loads(run_lakelet("ls", "--json", env=env).stdout)
    assert {e["name"]: e["state"] for e in listing} == {"remote-only.txt": "remote", "unpushed.txt": "local"}
    out = run_lakelet("ls", env=env)
    assert "remote-only.txt" in out.stdout.decode() and out.stderr.decode() == ""
    got = tmp_path / "got.txt"
    assert run_lakelet("get", "remote-only.txt", str(got), env=env).returncode == 0
    assert got.read_text() == "r"


def test_local_reads_work_while_the_remote_is_unreachable(machine, make_file, tmp_path, remote) -> None:
    a = machine("a")
    a.add(make_file("x.txt", "x"), "x.txt")
    config = a.root / "lakelet.toml"
    unreachable = {
        "file": (tmp_path / "gone").as_uri(),
        "s3": "s3://no-such-bucket-here/x",
        "azure": "az://no-such-container/x",
        "gcs": "gs://no-such-bucket/x",
    }[remote.kind]
    config.write_text(config.read_text().replace(remote.url, unreachable))
    lake = lakelet.open(a.root)
    assert lake.file("x.txt").read_text() == "x"  # local content needs no remote
    assert [f.name for f in lake.ls()] == ["x.txt"]
    with pytest.raises(lakelet.RemoteError, match="no lake|failed"):
        lake.sync()
    env = {**remote.env, "LAKELET_HOME": str(a.root)}
    out = run_lakelet("sync", env=env)
    err = out.stderr.decode()
    assert out.returncode == 1 and len(err.strip().splitlines()) == 1 and unreachable.split("/")[2] in err
    assert run_lakelet("cat", "x.txt", env=env).stdout == b"x"


def test_init_against_a_bad_remote_changes_nothing(tmp_path, remote, monkeypatch) -> None:
    if remote.kind == "s3":
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    elif remote.kind == "azure":
        conn = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
        bad_key = conn.replace("AccountKey=Eby8", "AccountKey=Xby8")
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", bad_key)
    url = remote.url
    if remote.kind == "gcs":  # gcsfs retries a dead endpoint for 30 s: use a missing bucket
        url = "gs://no-such-bucket/x"
    elif remote.kind == "file":
        url = (tmp_path / "not-a-dir-file").as_uri() + "/x"
    if remote.kind == "file":
        (tmp_path / "not-a-dir-file").write_text("a file where the remote directory should be")
    with pytest.raises(lakelet.RemoteError) as info:
        lakelet.init(tmp_path / "lake", remote=url, storage_options=remote.storage_options)
    assert "\n" not in str(info.value) and url.split("://")[0] in str(info.value)
    assert not (tmp_path / "lake" / "lakelet.toml").exists()


@pytest.mark.parametrize("remote", ["s3"], indirect=True)
def test_a_second_sync_on_s3_reads_each_new_entry_with_one_request(machine, monkeypatch) -> None:
    """s3fs reads an object of unknown size with a HEAD first; the log's entries and marker
    are small, so each is one GET: a sync after 3 adds is 4 requests, not 7."""
    import s3fs

    a, b = machine("a"), machine("b")
    a.add(b"first", "first.txt")
    b.sync()
    for k in range(3):  # three adds: three log entries
        a.add(b"new %d" % k, f"new/{k}.txt")
    calls: list[str] = []
    call_s3 = s3fs.S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        calls.append(method)
        return await call_s3(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counted)  # (s3fs's, observed, not ours)
    assert b.sync().new_names == 3
    assert sorted(calls) == ["get_object"] * 3 + ["list_objects_v2"], calls  # a listing, 3 entries
