"""The UI's own link filter: the run-record parser refuses a record whose code link is not
http(s), so the hostile-record tests no longer reach the filter. These links start with
http(s):// and pass the parser, yet are no link a page may draw."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import lakelet
from lakelet.lake._run_record import parse_run_record
from lakelet.ui import _queries


@lakelet.stage
def made() -> dict[str, int]:
    return {"v": 1}


SLIPPING = {
    "a blank, then javascript:": "https:// javascript:alert(document.cookie)",
    "no host": "https://",
    "an unclosed IPv6 host": "http://[::1/x.py",
    "a blank in the host": "https://exa mple.com/x.py",
    "a C1 control": "https://example.com/\x85javascript:alert(1)",
}


def _record_with_link(tmp_path: Path, url: str) -> tuple[str, dict[str, Any]]:
    lake = lakelet.init(tmp_path / "lake")
    with lakelet.use(lake):
        made()
    name = next(f.name for f in lake.ls("stages/") if f.name.endswith(".json"))
    record: dict[str, Any] = json.loads(lake.file(name).read_bytes())
    lake.close()
    record["source"]["git"] = {"commit": "0" * 40, "remote": None, "path": "x.py", "dirty": False, "url": url}
    return name, record


@pytest.mark.parametrize("url", SLIPPING.values(), ids=SLIPPING.keys())
def test_a_link_the_run_record_parser_lets_through_is_dropped_by_the_ui(tmp_path, url) -> None:
    name, record = _record_with_link(tmp_path, url)
    lineage = parse_run_record(json.dumps(record).encode(), name).lineage  # the parser lets it by
    assert lineage["source"]["git"]["url"] == url
    assert _queries._linked(lineage)["source"]["git"]["url"] is None
    assert _queries.web_link(url) is None


def test_an_http_link_is_kept(tmp_path) -> None:
    url = "https://github.com/org/repo/blob/0123abc/x.py#L3"
    name, record = _record_with_link(tmp_path, url)
    lineage = parse_run_record(json.dumps(record).encode(), name).lineage
    assert _queries._linked(lineage)["source"]["git"]["url"] == url
