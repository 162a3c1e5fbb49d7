"""Stage ttl=: checked when the stage is decorated, recorded with every run."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

import lakelet


def f() -> int:
    return 1


def test_ttl_is_checked_when_the_stage_is_decorated() -> None:
    assert lakelet.stage(ttl=timedelta(hours=1))(f).ttl == timedelta(hours=1)
    assert lakelet.stage(ttl="12h")(f).ttl == timedelta(hours=12)
    assert lakelet.stage(ttl=90)(f).ttl == timedelta(seconds=90)
    assert lakelet.stage(f).ttl is None
    with pytest.raises(lakelet.InvalidArgumentError, match=r"invalid ttl of stage .*'soon'"):
        lakelet.stage(ttl="soon")(f)
    with pytest.raises(lakelet.InvalidArgumentError, match="must be positive"):
        lakelet.stage(ttl=-5)(f)
    with pytest.raises(lakelet.InvalidArgumentError, match="ttl= cannot go with name="):
        lakelet.stage(ttl="7d", name="reports/daily.json")(f)


def test_the_expiry_is_in_the_run_record_and_the_outputs(lake) -> None:
    @lakelet.stage(ttl="2h")
    def fetched() -> dict:
        return {"rows": [1]}

    @lakelet.stage
    def kept() -> dict:
        return {"rows": [2]}

    with lakelet.use(lake):
        before = datetime.now(UTC)
        fetched()
        kept()
    record_name, output = [f.name for f in lake.ls("stages/") if ".fetched/" in f.name]
    record = json.loads(lake.file(record_name).read_bytes())
    assert record["ttl_s"] == 7200
    expires = datetime.fromisoformat(record["expires_at"])
    assert before + timedelta(hours=2) <= expires <= datetime.now(UTC) + timedelta(hours=2)
    assert lake.file(output).meta["expires_at"] == record["expires_at"]
    kept_record, kept_output = [f for f in lake.ls("stages/") if ".kept/" in f.name]
    assert not {"expires_at", "ttl_s"} & set(json.loads(kept_record.read_bytes()))
    assert "expires_at" not in kept_output.meta
