"""read_ahead: a snapshot's next piece is read while the caller loads this one, never more than
one ahead, and a reader's error or an early stop reaches the right thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from lakelet.core._ahead import read_ahead


def test_the_next_item_is_made_while_the_caller_holds_this_one() -> None:
    second_made = threading.Event()

    def items() -> Iterator[int]:
        yield 0
        second_made.set()
        yield 1

    got = []
    for item in read_ahead(items()):
        if item == 0:  # made in the worker meanwhile: one thread doing both would wait forever
            assert second_made.wait(timeout=30)
        got.append(item)
    assert got == [0, 1]


def test_the_worker_makes_at_most_one_item_past_the_one_the_caller_holds() -> None:
    taken: list[int] = []
    ahead: list[int] = []

    def items() -> Iterator[int]:
        for i in range(200):
            ahead.append(i - len(taken))  # items made, less those the caller has had
            yield i

    for item in read_ahead(items()):
        taken.append(item)
    assert taken == list(range(200))
    assert max(ahead) == 1


def test_an_error_of_the_items_reaches_the_caller_after_the_items_before_it() -> None:
    def items() -> Iterator[int]:
        yield 0
        yield 1
        raise ValueError("row 2 is bad")

    got = []
    with pytest.raises(ValueError, match="row 2 is bad"):
        for item in read_ahead(items()):
            got.append(item)
    assert got == [0, 1]


def test_stopping_early_closes_the_items_in_the_worker_and_ends_it() -> None:
    closed: list[str] = []

    def items() -> Iterator[int]:
        try:
            yield from range(1_000_000)
        finally:
            closed.append(threading.current_thread().name)

    ahead = read_ahead(items())
    assert next(ahead) == 0
    ahead.close()
    assert closed == ["lakelet-read-ahead"]
    assert not any(t.name == "lakelet-read-ahead" for t in threading.enumerate())
