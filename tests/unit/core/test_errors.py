"""The error tree: fields a caller can act on, and errors that survive a trip between processes."""

from __future__ import annotations

import pickle

import pytest

import lakelet
from lakelet.core import errors

ERRORS = [getattr(errors, name) for name in errors.__all__]


def test_the_public_module_holds_every_error_and_lakelet_exports_them() -> None:
    assert all(issubclass(e, lakelet.LakeletError) for e in ERRORS)
    assert all(getattr(lakelet, e.__name__) is e for e in ERRORS)


@pytest.mark.parametrize(
    ("error", "field", "value"),
    [
        (errors.NotFoundError("no name 'a' in this lake", name="a"), "name", "a"),
        (errors.NameExistsError("'a' is bound", name="a"), "name", "a"),
        (errors.InvalidNameError("bad name '../x'", name="../x"), "name", "../x"),
        (errors.RemoteError("s3://b is down", url="s3://b"), "url", "s3://b"),
        (errors.IntegrityError("corrupt", digest="blake3:00"), "digest", "blake3:00"),
        (errors.LakeNotFoundError("no lake", path="/x"), "path", "/x"),
        (errors.SchemaConflictError("clash", dataset="sales"), "dataset", "sales"),
        (
            errors.UnsupportedFeatureError("deletion vectors", feature="deletionVectors"),
            "feature",
            "deletionVectors",
        ),
        (errors.RunError("1 stage failed", {"m.f": "Traceback…"}), "failures", {"m.f": "Traceback…"}),
    ],
)
def test_fields_and_message_survive_pickling(error: errors.LakeletError, field: str, value: object) -> None:
    # executors hand a worker's error back to the caller through pickle
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert getattr(copy, field) == value
    assert str(copy) == str(error)


def test_a_not_found_message_is_not_quoted_like_a_key_error() -> None:
    assert str(errors.NotFoundError("no name 'a'")) == "no name 'a'"
    assert isinstance(errors.NotFoundError("x"), KeyError)
    assert isinstance(errors.InvalidNameError("x"), ValueError)


def test_raised_errors_carry_what_was_asked_for(lake: lakelet.Lake, tmp_path) -> None:
    with pytest.raises(lakelet.NotFoundError) as missing:
        _ = lake.file("raw/nope.csv").digest
    assert missing.value.name == "raw/nope.csv"
    with pytest.raises(lakelet.InvalidNameError) as invalid:
        lake.file("raw/../etc")
    assert invalid.value.name == "raw/../etc"
    with pytest.raises(lakelet.LakeNotFoundError) as no_lake:
        lakelet.open(tmp_path / "nowhere")
    assert no_lake.value.path == str(tmp_path / "nowhere")
    (tmp_path / "no-lake-here").mkdir()
    with pytest.raises(lakelet.RemoteError, match="holds no lake") as no_remote_lake:
        lakelet.open(lake.root, remote=(tmp_path / "no-lake-here").as_uri()).sync()
    assert no_remote_lake.value.url is not None and "no-lake-here" in no_remote_lake.value.url
