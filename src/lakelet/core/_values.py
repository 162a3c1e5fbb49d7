"""What library a value comes from, told by its type's module without importing any of them."""

from __future__ import annotations

from typing import Any

__all__ = ["VALUE_KINDS", "kind_of"]

VALUE_KINDS = ("pandas", "polars", "pyarrow", "numpy", "python")  # what kind_of returns


def kind_of(value: Any) -> str:
    """'pandas', 'polars', 'pyarrow', 'numpy', or 'python' for anything else."""
    top = type(value).__module__.split(".")[0]
    return top if top in VALUE_KINDS else "python"
