"""Column statistics for dataset manifests, gathered while the batches stream past.

Count, nulls, min and max are exact and merge exactly across appends. For
numeric columns a uniform reservoir sample (at most ``SAMPLE_SIZE`` values,
merged across appends in proportion to rows) gives the quantiles and the
histogram: exact up to that many rows, an estimate with a standard error of
about 1/sqrt(SAMPLE_SIZE) of the rank beyond (docs/datasets.md).
"""

from __future__ import annotations

import math
import random
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

SAMPLE_SIZE = 4096
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 10


def _plain(value: Any) -> Any:
    """A JSON-able form of a scalar (timestamps and dates as ISO strings)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


class ColumnStats:
    def __init__(self, name: str, type_: pa.DataType, seed: int = 0) -> None:
        self.name = name
        self.type = type_
        self.count = 0
        self.nulls = 0
        self.min: Any = None
        self.max: Any = None
        self.seen = 0  # non-null values offered to the sample
        self.sample: list[float] = []
        self._rng = random.Random(seed)
        self._w = 0.0
        self._next = 0  # index (among non-null values) of the next value to take

    def update(self, array: pa.Array) -> None:
        nulls = array.null_count
        self.nulls += nulls
        self.count += len(array) - nulls
        if len(array) == nulls:
            return
        orderable = not (pa.types.is_nested(self.type) or pa.types.is_boolean(self.type)
                         or pa.types.is_dictionary(self.type))
        if orderable:
            mm = pc.min_max(array)
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            self.min = lo if self.min is None or lo < self.min else self.min
            self.max = hi if self.max is None or hi > self.max else self.max
        if _numeric(self.type):
            self._offer(pc.drop_null(array))

    def _offer(self, values: pa.Array) -> None:
        """Reservoir sampling with Li's Algorithm L: the skips between replacements are drawn,
        so a batch costs O(replacements), about SAMPLE_SIZE·ln(rows/SAMPLE_SIZE) in all."""
        start, n = self.seen, len(values)
        self.seen += n
        fill = min(n, SAMPLE_SIZE - len(self.sample))
        if fill > 0:
            self.sample += [float(v) for v in values.slice(0, fill).to_pylist()]
            if len(self.sample) == SAMPLE_SIZE:
                self._w = math.exp(math.log(self._rng.random()) / SAMPLE_SIZE)
                self._next = SAMPLE_SIZE - 1 + self._skip()
        if len(self.sample) < SAMPLE_SIZE:
            return
        while self._next < start + n:
            self.sample[self._rng.randrange(SAMPLE_SIZE)] = float(values[self._next - start].as_py())
            self._w *= math.exp(math.log(self._rng.random()) / SAMPLE_SIZE)
            self._next += self._skip()

    def _skip(self) -> int:
        return int(math.log(self._rng.random()) / math.log(1 - self._w)) + 1

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": str(self.type), "count": self.count, "nulls": self.nulls,
                               "min": _plain(self.min), "max": _plain(self.max)}
        if _numeric(self.type):
            out["sample"] = {"seen": self.seen, "values": self.sample}
        return out


def merge(older: dict[str, Any] | None, newer: dict[str, Any], rng_seed: int = 0) -> dict[str, Any]:
    """Statistics of two writes together (an append)."""
    if not older:
        return newer
    out = dict(newer)
    out["count"] = older["count"] + newer["count"]
    out["nulls"] = older["nulls"] + newer["nulls"]
    for key, pick in (("min", min), ("max", max)):
        values = [v for v in (older.get(key), newer.get(key)) if v is not None]
        try:
            out[key] = pick(values) if values else None
        except TypeError:  # a type changed between writes: keep the newer
            out[key] = newer.get(key)
    if "sample" in older and "sample" in newer:
        a, b = older["sample"], newer["sample"]
        seen = a["seen"] + b["seen"]
        rng = random.Random(rng_seed)
        take_a = round(SAMPLE_SIZE * a["seen"] / seen) if seen else 0
        values = (rng.sample(a["values"], min(take_a, len(a["values"])))
                  + rng.sample(b["values"], min(SAMPLE_SIZE - take_a, len(b["values"]))))
        out["sample"] = {"seen": seen, "values": values}
    return out


def summary(stats: dict[str, Any]) -> dict[str, Any]:
    """What ``Dataset.stats()`` shows: the sample turned into quantiles and a histogram."""
    out = {k: v for k, v in stats.items() if k != "sample"}
    sample = sorted(stats.get("sample", {}).get("values", []))
    if sample and stats.get("min") is not None:
        n = len(sample)
        out["quantiles"] = {str(q): sample[min(n - 1, int(q * n))] for q in QUANTILES}
        lo, hi = float(stats["min"]), float(stats["max"])
        width = (hi - lo) / HISTOGRAM_BINS or 1.0
        counts = [0] * HISTOGRAM_BINS
        for v in sample:
            counts[min(HISTOGRAM_BINS - 1, int((v - lo) / width))] += 1
        scale = stats["count"] / n
        out["histogram"] = {
            "edges": [lo + i * width for i in range(HISTOGRAM_BINS + 1)],
            "counts": [round(c * scale) for c in counts],
        }
        out["exact"] = stats["sample"]["seen"] <= SAMPLE_SIZE
    return out
