"""Start-up cost: every command and every `import lakelet` pays for what is imported up front."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import lakelet

# Each costs tens of milliseconds to import; only remotes, fsspec URLs and datasets need them.
HEAVY = ("fsspec", "pyarrow")


@pytest.mark.parametrize("module", ["lakelet", "lakelet.cli.main"])
def test_importing_lakelet_leaves_heavy_dependencies_unloaded(module: str) -> None:
    package_root = Path(lakelet.__file__).parents[1]  # this checkout, not whatever is installed
    probe = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(package_root)},
    ).stdout.split()
    assert out == [], f"import {module} loaded {', '.join(out)}"


def test_pipeline_names_load_on_first_use() -> None:
    assert {"stage", "run", "raw", "Stage", "RunError"} <= set(dir(lakelet))
    assert lakelet.stage is lakelet.__dict__["stage"]  # cached after the first lookup
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lakelet.nope  # noqa: B018
