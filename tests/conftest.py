from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import lakelet
from lakelet import _current

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's lake, user or working directory."""
    monkeypatch.delenv("LAKELET_HOME", raising=False)
    monkeypatch.setenv("LAKELET_USER", "tester@example.com")
    monkeypatch.chdir(tmp_path)
    _current._used.clear()
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
    """Every file under a lake root except the index, temp files and the scope locks."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(("index.sqlite", "tmp/")) and p.name != ".lock":
            out[rel] = p.read_bytes()
    return out


def run_lakelet(*args: str, env: dict[str, str] | None = None, input: bytes | None = None,
                cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """The real CLI in a subprocess: real exit codes, real stdout/stderr."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "lakelet", *args], capture_output=True, env=full_env,
        input=input, cwd=cwd, timeout=120,
    )
