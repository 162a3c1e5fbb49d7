"""Finding, creating and switching lakes."""

from __future__ import annotations

import pytest

import lakelet


def test_open_a_missing_lake_says_how_to_create_one(tmp_path) -> None:
    with pytest.raises(lakelet.LakeNotFoundError, match="lakelet init"):
        lakelet.open(tmp_path / "nowhere")


def test_resolution_order(tmp_path, monkeypatch) -> None:
    project = tmp_path / "project"
    deep = project / "src" / "pkg"
    deep.mkdir(parents=True)
    in_project = lakelet.init(project)
    monkeypatch.chdir(deep)
    assert lakelet.open().root == in_project.root  # nearest lakelet.toml upwards
    home = lakelet.init(tmp_path / "home-lake")
    monkeypatch.setenv("LAKELET_HOME", str(home.root))
    assert lakelet.open().root == home.root  # $LAKELET_HOME first
    assert lakelet.open(in_project.root / "lakelet.toml").root == in_project.root


def test_default_is_dot_lakelet_found_from_subdirectories(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    created = lakelet.init()
    assert created.root == (tmp_path / ".lakelet").resolve()
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert lakelet.open().root == created.root


def test_init_is_idempotent_and_keeps_data(tmp_path, make_file) -> None:
    lake = lakelet.init(tmp_path / "l")
    lake.add(make_file("a", "a"), "a")
    again = lakelet.init(tmp_path / "l")
    assert again.exists("a")


def test_invalid_config_is_a_clear_error(tmp_path) -> None:
    lake = lakelet.init(tmp_path / "l")
    (lake.root / "lakelet.toml").write_text("[lake\nbroken")
    with pytest.raises(lakelet.ConfigError, match="not valid TOML"):
        lakelet.open(lake.root)
    (lake.root / "lakelet.toml").write_text("[lake]\nformat = 99\n")
    with pytest.raises(lakelet.ConfigError, match="upgrade lakelet"):
        lakelet.open(lake.root)
    (lake.root / "lakelet.toml").write_text('[lake]\nformat = "2"\n')
    with pytest.raises(lakelet.ConfigError, match="format must be an integer"):
        lakelet.open(lake.root)


def test_file_without_a_lake_uses_the_current_lake(tmp_path, make_file, monkeypatch) -> None:
    first = lakelet.init(tmp_path / "first")
    second = lakelet.init(tmp_path / "second")
    first.add(make_file("a", "in first"), "a")
    second.add(make_file("b", "in second"), "a")
    monkeypatch.setenv("LAKELET_HOME", str(first.root))
    assert lakelet.File("a").read_text() == "in first"
    with lakelet.use(second):
        assert lakelet.current_lake() is second
        assert lakelet.File("a").read_text() == "in second"
    monkeypatch.setenv("LAKELET_HOME", str(second.root))  # a notebook switching lakes
    assert lakelet.File("a").read_text() == "in second"


def test_public_names_are_exactly_the_contract() -> None:
    assert set(lakelet.__all__) == {
        "ConfigError",
        "CorruptRecordError",
        "Dataset",
        "EvictReport",
        "File",
        "FsckReport",
        "GcReport",
        "IntegrityError",
        "InvalidArgumentError",
        "InvalidNameError",
        "Lake",
        "LakeNotFoundError",
        "LakeletError",
        "LineageGraph",
        "NameExistsError",
        "NotFoundError",
        "PipelineStore",
        "PushReport",
        "RemoteError",
        "RunError",
        "RunObserver",
        "RunReport",
        "RunStarted",
        "SchemaConflictError",
        "ScopedStore",
        "SecretError",
        "SecretInfo",
        "Secrets",
        "SourceError",
        "StorageError",
        "Stage",
        "StageFinished",
        "StageGraph",
        "StageNode",
        "StageStarted",
        "State",
        "SyncReport",
        "UnsupportedFeatureError",
        "__version__",
        "current_lake",
        "current_user",
        "init",
        "open",
        "parse_duration",
        "raw",
        "run",
        "stage",
        "use",
    }
    for name in lakelet.__all__:
        assert hasattr(lakelet, name)
    errors = [getattr(lakelet, n) for n in lakelet.__all__ if n.endswith("Error")]
    assert all(issubclass(e, lakelet.LakeletError) for e in errors)
