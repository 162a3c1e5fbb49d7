"""Secrets reach stages and nothing else: not files, not lineage, not listings, not logs."""

from __future__ import annotations

import base64
import json
import logging
import os

import pytest

import lakelet

from .conftest import run_lakelet

VALUE = "hunter2-" + "s3cr3t-value-that-must-not-leak"


@pytest.fixture(params=["local", "aws-ssm"])
def secret_lake(request, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    lake = lakelet.init(tmp_path / "lake", remote=(tmp_path / "remote").as_uri())
    if request.param == "aws-ssm":
        store = request.getfixturevalue("s3_server")  # moto serves SSM on the same port
        for key, value in store.env.items():
            monkeypatch.setenv(key, value)
        config = lake.root / "lakelet.toml"
        path = f"/lakelet/t-{os.getpid()}-{id(lake)}"
        config.write_text(config.read_text() + f'\n[secrets]\nbackend = "aws-ssm"\npath = "{path}"\n')
        lake = lakelet.open(lake.root)
    return lake


def _files_contain(root, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_set_list_delete_never_show_values(secret_lake) -> None:
    secret_lake.secrets.set("DB_PASSWORD", VALUE)
    secret_lake.secrets.set("API_TOKEN", "org-token", org=True)
    infos = secret_lake.secrets.list()
    assert [(i.name, i.scope, i.set_by) for i in infos] == [
        ("API_TOKEN", "org", "tester@example.com"),
        ("DB_PASSWORD", "user", "tester@example.com"),
    ]
    assert VALUE not in repr(infos)
    secret_lake.secrets.delete("DB_PASSWORD")
    assert [i.name for i in secret_lake.secrets.list()] == ["API_TOKEN"]
    with pytest.raises(lakelet.NotFoundError):
        secret_lake.secrets.delete("DB_PASSWORD")
    with pytest.raises(lakelet.InvalidNameError):
        secret_lake.secrets.set("not a name", "x")


def test_a_user_secret_shadows_the_org_one_and_other_users_cannot_read_it(secret_lake, monkeypatch) -> None:
    secret_lake.secrets.set("TOKEN", "org-value", org=True)
    secret_lake.secrets.set("TOKEN", VALUE)
    assert secret_lake.secrets.values(["TOKEN"]) == {"TOKEN": VALUE}
    monkeypatch.setenv("LAKELET_USER", "someone-else@example.com")
    assert secret_lake.secrets.values(["TOKEN"]) == {"TOKEN": "org-value"}
    assert [(i.name, i.scope) for i in secret_lake.secrets.list()] == [("TOKEN", "org")]
    secret_lake.secrets.delete("TOKEN", org=True)
    with pytest.raises(lakelet.NotFoundError, match="TOKEN"):
        secret_lake.secrets.values(["TOKEN"])


def test_stages_get_secrets_in_their_environment_only(secret_lake, tmp_path, caplog) -> None:
    secret_lake.secrets.set("DB_PASSWORD", VALUE)
    lakelet.use(secret_lake)
    seen = {}

    @lakelet.stage(secrets=["DB_PASSWORD"])
    def connect(host: str):
        seen["password"] = os.environ["DB_PASSWORD"]
        logging.getLogger("user.code").warning("connecting with %s", os.environ["DB_PASSWORD"])
        return {"host": host, "connected": True}

    @lakelet.stage(secrets=["DB_PASSWORD"])
    def fails():
        raise RuntimeError("no luck")

    assert "DB_PASSWORD" not in os.environ
    with caplog.at_level(logging.WARNING):
        assert connect("db.internal") == {"host": "db.internal", "connected": True}
    assert seen["password"] == VALUE and "DB_PASSWORD" not in os.environ
    assert VALUE not in caplog.text and "connecting with ***" in caplog.text
    with pytest.raises(RuntimeError, match="no luck"):
        fails()
    assert "DB_PASSWORD" not in os.environ

    needle = VALUE.encode()
    assert _files_contain(secret_lake.root, needle) == []
    assert _files_contain(tmp_path / "remote", needle) == []
    record = next(f for f in secret_lake.ls("stages/") if "/output." in f.name).lineage()
    assert VALUE not in json.dumps(record)


def test_wrong_key_is_one_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LAKELET_SECRET_KEY", base64.b64encode(b"k" * 32).decode())
    lake = lakelet.init(tmp_path / "lake")
    lake.secrets.set("A", VALUE)
    monkeypatch.setenv("LAKELET_SECRET_KEY", base64.b64encode(b"x" * 32).decode())
    with pytest.raises(lakelet.SecretError, match="another key"):
        lake.secrets.values(["A"])
    monkeypatch.setenv("LAKELET_SECRET_KEY", "short")
    with pytest.raises(lakelet.ConfigError, match="32 bytes"):
        lake.secrets.values(["A"])


def test_cli_reads_values_from_stdin_never_argv(tmp_path) -> None:
    lake = lakelet.init(tmp_path / "lake")
    env = {"LAKELET_HOME": str(lake.root), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    out = run_lakelet("secrets", "set", "DB_PASSWORD", env=env, input=VALUE.encode() + b"\n")
    assert out.returncode == 0 and VALUE.encode() not in out.stdout + out.stderr
    listed = run_lakelet("secrets", "list", "--json", env=env)
    assert [i["name"] for i in json.loads(listed.stdout)] == ["DB_PASSWORD"]
    assert VALUE.encode() not in listed.stdout
    assert VALUE.encode() not in run_lakelet("secrets", "list", env=env).stdout
    assert run_lakelet("secrets", "rm", "DB_PASSWORD", env=env).returncode == 0
    missing = run_lakelet("secrets", "rm", "DB_PASSWORD", env=env)
    assert missing.returncode == 1 and missing.stderr.decode().startswith("error: no user secret")
    assert _files_contain(lake.root, VALUE.encode()) == []


def test_unreachable_parameter_store_is_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    lake = lakelet.init(tmp_path / "lake")
    config = lake.root / "lakelet.toml"
    config.write_text(config.read_text() + '\n[secrets]\nbackend = "aws-ssm"\n')
    with pytest.raises(lakelet.SecretError, match="Parameter Store") as info:
        lakelet.open(lake.root).secrets.set("A", "b")
    assert "\n" not in str(info.value)
