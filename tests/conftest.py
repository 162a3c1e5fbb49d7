from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import lakelet
from lakelet.facade import _current

from . import servers

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's lake, user or working directory."""
    monkeypatch.delenv("LAKELET_HOME", raising=False)
    monkeypatch.setenv("LAKELET_USER", "tester@example.com")
    monkeypatch.chdir(tmp_path)
    _current._used.clear()
    _current._task_lake.set(None)
    _current._opened.clear()


@pytest.fixture
def lake(tmp_path: Path) -> lakelet.Lake:
    return lakelet.init(tmp_path / "lake")


@pytest.fixture
def make_file(tmp_path: Path):
    def make(relative: str, content: bytes | str) -> Path:
        path = tmp_path / "src" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    return make


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under a lake root except the index, temp files, the locks (empty: only flock'd)
    and views (links a read makes to name objects by suffix, docs/local-layout.md)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        derived = rel.startswith(("index.sqlite", "tmp/", "locks/", "views/"))
        if p.is_file() and not derived and p.name != ".lock":
            out[rel] = p.read_bytes()
    return out


def stage_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, marks_env: str
) -> tuple[Any, Path]:
    """``source`` as a fresh module that worker processes import too (by name, from
    ``PYTHONPATH``), and an empty folder named in ``marks_env`` for its stages to mark runs in."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv(marks_env, str(marks))
    name = f"stages_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(source)
    importlib.invalidate_caches()
    module = importlib.import_module(name)
    monkeypatch.setitem(sys.modules, name, module)  # forgotten after the test
    return module, marks


def run_lakelet(
    *args: str, env: dict[str, str] | None = None, input: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """The real CLI in a subprocess: real exit codes, real stdout/stderr."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "lakelet", *args],
        capture_output=True,
        env=full_env,
        input=input,
        cwd=cwd,
        timeout=120,
    )


# --- remotes: real servers on 127.0.0.1 (see tests/servers.py) --------------------------

REMOTE_KINDS = ["file", "s3", "azure", "gcs"]


@dataclass
class RemoteSpec:
    kind: str
    url: str
    storage_options: dict[str, object]
    env: dict[str, str]
    lake_options: dict[str, object] = field(default_factory=dict)  # extra [lake] settings


@pytest.fixture(scope="session")
def s3_server():
    with servers.moto_s3() as store:
        yield store


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory):
    with servers.azurite(tmp_path_factory.mktemp("azurite")) as store:
        yield store


@pytest.fixture(scope="session")
def gcs_server():
    with servers.gcs_emulator() as store:
        yield store


@pytest.fixture(params=REMOTE_KINDS)
def remote(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RemoteSpec:
    """A fresh, empty remote prefix on each kind of store."""
    if request.param == "file":
        return RemoteSpec("file", (tmp_path / "remote").as_uri(), {}, {})
    store = request.getfixturevalue(f"{request.param}_server")
    for key, value in store.env.items():
        monkeypatch.setenv(key, value)
    url = store.url(f"t-{uuid.uuid4().hex[:12]}")
    return RemoteSpec(request.param, url, dict(store.storage_options), dict(store.env))


@pytest.fixture
def machine(remote: RemoteSpec, tmp_path: Path):
    """``machine("a")`` is a lake on its own local root sharing ``remote``: another computer."""

    def make(name: str, upload: str = "write-through") -> lakelet.Lake:
        lake = lakelet.init(tmp_path / name, remote=remote.url, storage_options=remote.storage_options)
        settings = {"upload": upload, **remote.lake_options}
        config = lake.root / "lakelet.toml"
        lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
        config.write_text(config.read_text().replace('upload = "write-through"', "\n".join(lines)))
        return lakelet.open(lake.root)

    return make


class WhenDone:
    """A progress callback that calls ``then`` once, when the work it watches has accounted
    for every byte it announced: e.g. a gc run "by another process" after an add stored its
    objects or a push sent them, and before either binds their names. Its result: ``.result``."""

    def __init__(self, then: Callable[[], Any]) -> None:
        self.then = then
        self.total = self.done = 0
        self.result: Any = None

    def add_total(self, nbytes: int, /) -> None:
        self.total += nbytes

    def advance(self, nbytes: int, /) -> None:
        self.done += nbytes
        if self.result is None and self.done >= self.total:
            self.result = self.then()


@pytest.fixture(scope="module")
def dask_client():
    """A real Dask LocalCluster of two single-threaded worker processes, one per test module."""
    import dask
    from distributed import Client, LocalCluster

    # one task per worker thread: with the default 1.1 the scheduler may send both branches to
    # one single-threaded worker (docs/running.md)
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()
