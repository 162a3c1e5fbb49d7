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
