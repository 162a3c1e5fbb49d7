"""A clumsy user, a hostile environment and a failing disk on one machine: bad input is one
clear line and changes nothing; a killed or failing add loses no file and binds nothing it
did not finish; a bound add reports success."""

from __future__ import annotations

from pathlib import Path

import pytest

import lakelet

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
