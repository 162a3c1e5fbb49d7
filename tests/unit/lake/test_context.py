"""LakeContext: the parts of one opened lake, and the record lookups add, gc and fsck share."""

from __future__ import annotations

import pytest

import lakelet
from lakelet.storage._scopes import LAKE


def test_a_record_bound_by_a_process_killed_before_it_indexed_it_is_found(lake: lakelet.Lake) -> None:
    lake.add(_write(lake, "a.txt"), "a.txt")
    record = lake.context.record(LAKE, "a.txt")
    lake.context.catalog.rebuild([], segments_applied=0)  # the index forgot it; the segment has it
    assert lake.context.lookup(LAKE, "a.txt") == record
    assert lake.context.catalog.get(LAKE, "a.txt") == record  # and the index is repaired


def test_missing_and_removed_names_say_which_name(lake: lakelet.Lake) -> None:
    with pytest.raises(lakelet.NotFoundError) as missing:
        lake.context.record(LAKE, "nope.txt")
    assert missing.value.name == "nope.txt"
    lake.add(_write(lake, "gone.txt"), "gone.txt")
    lake.rm("gone.txt", force=True)
    with pytest.raises(lakelet.NotFoundError, match="was removed") as removed:
        lake.context.record(LAKE, "gone.txt")
    assert removed.value.name == "gone.txt"


def test_scoped_stores_come_in_the_kind_asked_for(lake: lakelet.Lake) -> None:
    store = lake.context.scoped("pipeline/r1", lakelet.PipelineStore)
    store.puts("x", b"1")
    assert isinstance(store, lakelet.PipelineStore) and store.gets("x") == b"1"
    assert [layout.scope for layout in lake.context.layouts()] == [LAKE, "pipeline/r1"]


def test_an_embedded_lake_has_no_remote_to_require(lake: lakelet.Lake) -> None:
    assert lake.context.syncer() is None
    with pytest.raises(lakelet.ConfigError, match="cannot gc --remote: this lake has no remote"):
        lake.context.require_remote("gc --remote")


def _write(lake: lakelet.Lake, name: str) -> str:
    path = lake.root.parent / name
    path.write_bytes(name.encode())
    return str(path)
