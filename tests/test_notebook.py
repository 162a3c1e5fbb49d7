"""How a lake, a file and a dataset look in a notebook: ``_repr_html_`` and IPython's text
form (``_repr_pretty_``). Names, creators, meta and columns are anyone's text: escaped."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import lakelet

HOSTILE = "<script>alert(1)</script>"


class _Printer:
    """What IPython hands ``_repr_pretty_``: only ``text`` is used."""

    def __init__(self) -> None:
        self.out = ""

    def text(self, text: str) -> None:
        self.out += text


def _pretty(obj: object) -> str:
    printer = _Printer()
    obj._repr_pretty_(printer, False)  # type: ignore[attr-defined]
    return printer.out


@pytest.fixture
def filled(lake: lakelet.Lake) -> lakelet.Lake:
    lake.add(b"a,b\n1,2\n", "raw/orders.csv", meta={"config_id": "c1", "note": HOSTILE})
    lake.add(b"x", f"raw/{HOSTILE}.txt")
    lake.write_dataset("sales/orders", pd.DataFrame({"a": [1, 2, 3], HOSTILE: ["p", "q", HOSTILE]}))
    return lake


def test_lake_shows_root_counts_and_recent_names(filled: lakelet.Lake) -> None:
    html = filled._repr_html_()
    assert str(filled.root) in html and ">2 (9 B)</td>" in html and "none (embedded)" in html
    assert "raw/orders.csv" in html and "sales/orders" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    text = _pretty(filled)
    assert text.startswith(f"lakelet Lake at {filled.root}") and "raw/orders.csv" in text


def test_file_shows_its_record_how_it_was_made_and_user_meta(filled: lakelet.Lake) -> None:
    f = filled.file("raw/orders.csv")
    html = f._repr_html_()
    assert f.digest in html and "lakelet add from &lt;bytes&gt;" in html and "config_id" in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    text = _pretty(f)
    assert any(line.split() == ["config_id", "c1"] for line in text.splitlines())
    assert "not bound" in filled.file("raw/absent.csv")._repr_html_()
    assert "error" in _pretty(lakelet.File("blake3:" + "0" * 64, lake=filled))


def test_dataset_shows_version_schema_and_first_rows(filled: lakelet.Lake) -> None:
    ds = filled.dataset("sales/orders")
    html = ds._repr_html_()
    assert "version 1 of 1" in html and "<td>int64</td>" in html
    assert "<script>" not in html and html.count("&lt;script&gt;") >= 2  # a column and a value
    assert "first rows" in _pretty(ds)


def test_use_shows_the_lake_it_made_current(lake: lakelet.Lake) -> None:
    used = lakelet.use(lake)
    assert repr(used) == f"lakelet.use(<Lake {lake.root}>)"
    assert str(lake.root) in used._repr_html_()


@lakelet.stage
def counted() -> int:
    return 1


@lakelet.stage(n=counted)
def broken(n: int) -> int:
    raise ValueError(f"{HOSTILE} after {n}")


def test_a_run_report_shows_its_stages_failures_first(lake: lakelet.Lake) -> None:
    seen: list[lakelet.RunReport] = []

    class Keep(lakelet.RunObserver):
        def finished(self, report: lakelet.RunReport) -> None:
            seen.append(report)

    with lakelet.use(lake), pytest.raises(lakelet.RunError):
        lakelet.run(broken, run_id="shown-run", observer=Keep())
    (saved,) = lake.runs()
    assert json.loads(json.dumps(saved)) == saved  # still the plain dict it was
    for report in (saved, seen[0]):
        html = report._repr_html_()  # type: ignore[union-attr]
        assert "lakelet run shown-run" in html and "1 ran, 0 skipped, 1 failed, 0 not run" in html
        assert html.index(broken.qualname) < html.index(counted.qualname)  # the failure first
        assert "<script>" not in html and "ValueError: &lt;script&gt;alert(1)&lt;/script&gt; after 1" in html
        text = _pretty(report)
        assert text.startswith("lakelet run shown-run") and "duration" in text and "failed" in text


def test_a_peer_s_run_report_cannot_bring_markup_or_a_link(lake: lakelet.Lake) -> None:
    """A report on the remote is anyone's: its stage ids and reasons reach the page as text."""
    link = '<a href="javascript:alert(document.cookie)">see the log</a>'
    forged = {
        "run_id": "forged",
        "started_at": "2025-01-20T10:00:00+00:00",
        "ended_at": "2025-01-20T10:00:02+00:00",
        "ran": [HOSTILE],
        "failed": ["x.y"],
        "stages": {
            HOSTILE: {"status": "ran", "duration_s": 1.5, "why": link, "key": "ab" * 32},
            "x.y": {"status": "failed", "duration_s": 0.5, "why": f"[link=javascript:alert(1)]{link}[/link]"},
        },
    }
    (lake.root / "runs").mkdir(exist_ok=True)
    (lake.root / "runs" / "forged.json").write_text(json.dumps(forged))
    (report,) = lake.runs()
    html = report._repr_html_()  # type: ignore[attr-defined]
    assert "<script>" not in html and "<a " not in html and 'href="' not in html  # only as text:
    assert "&lt;a href=&quot;javascript:alert(document.cookie)&quot;&gt;see the log&lt;/a&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "abababababab…" in html and "1.5 s" in html
    assert "2.0 s" in html and "2025-01-20 10:00:00 UTC" in html
