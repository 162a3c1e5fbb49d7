"""Who the user is when git was asked ahead (``core._config.ask_user_ahead``, started when a
stage is decorated): the same answer as asking at the call, in the folder of the call."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os, sys
from lakelet.core import _config
os.chdir(sys.argv[1])
_config.ask_user_ahead()
os.chdir(sys.argv[2])
print(_config.current_user())
"""


def _repository(path: Path, email: str) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "config", "user.email", email], check=True)
    return path


def _user(asked_in: Path, called_in: Path, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "LAKELET_USER"} | env
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(asked_in), str(called_in)],
        capture_output=True,
        text=True,
        env=environ,
        check=True,
    )
    return done.stdout.strip()


def test_an_answer_asked_ahead_is_the_answer_of_the_folder_the_call_runs_in(tmp_path) -> None:
    a = _repository(tmp_path / "a", "ann@example.com")
    b = _repository(tmp_path / "b", "bob@example.com")
    assert _user(a, a) == "ann@example.com"  # asked ahead, taken
    assert _user(a, b) == "bob@example.com"  # the call moved: asked again where it runs
    assert _user(a, a, LAKELET_USER="carol") == "carol"
