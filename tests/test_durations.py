"""Durations: one parser for stage ttl=, gc --ttl and url --expires."""

from __future__ import annotations

from datetime import timedelta

import pytest

import lakelet
from lakelet.lake._expiry import parse_duration

from .conftest import run_lakelet


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("30s", 30),
        ("30m", 1800),
        ("12h", 43200),
        ("7d", 604800),
        ("2w", 1209600),
        (" 1.5H ", 5400),
        (timedelta(minutes=5), 300),
        (45, 45),
        (0.5, 0.5),
    ],
)
def test_durations(text, seconds) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize(
    "bad", ["", "7x", "-1d", "d", "1d2h", 0, -3, True, None, float("inf"), timedelta(0), "99999999999d"]
)
def test_bad_durations(bad) -> None:
    with pytest.raises(lakelet.InvalidArgumentError, match="invalid duration"):
        parse_duration(bad)


def test_the_cli_says_which_option_is_wrong(lake) -> None:
    bad = run_lakelet("gc", "--ttl", "7x", env={"LAKELET_HOME": str(lake.root)})
    assert bad.returncode == 1 and bad.stderr.decode().strip() == (
        "error: invalid --ttl '7x': use e.g. 30m, 12h, 7d (a number alone is seconds)"
    )
