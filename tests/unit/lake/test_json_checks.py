"""The checks every record read back goes through: what they take and what they refuse."""

from __future__ import annotations

import pytest

from lakelet.lake import _json_checks as check

KEY = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "value",
    [KEY.upper(), KEY[:-1] + "g", KEY[:-1], KEY + "0", "../" + KEY[3:], 7, None, ["a"], KEY[:-1] + "\u0660"],
)
def test_hex_text_refuses_anything_but_lowercase_hex_of_its_length(value: object) -> None:
    with pytest.raises(check.Invalid, match="key"):
        check.hex_text(value, "key", 64)


def test_hex_text_takes_lowercase_hex_of_its_length() -> None:
    assert check.hex_text(KEY, "key", 64) == KEY


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ({"host": 5}, "environment\\['host'\\] is not a string"),
        ({"host": ["x"]}, "is not a string"),
        ({"host": {"a": "b"}}, "is not a string"),
        ({"host": True}, "is not a string"),
        ({"host": "x" * ((1 << 20) + 1)}, "longer than"),
        (["host"], "environment is not an object"),
        ("host", "environment is not an object"),
    ],
)
def test_str_map_refuses_values_that_are_not_strings_naming_the_entry(value: object, refused: str) -> None:
    with pytest.raises(check.Invalid, match=refused):
        check.str_map(value, "environment")


def test_str_map_takes_strings_and_nulls_up_to_the_limit() -> None:
    value = {"host": "vm", "user": None, "long": "x" * (1 << 20), "": ""}
    assert check.str_map(value, "environment") is value
