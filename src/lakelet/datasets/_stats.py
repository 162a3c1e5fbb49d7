"""Column statistics for dataset manifests.

Count and nulls are counted as the batches stream past (Arrow keeps a null
count per array: free). Min and max come from the statistics the Parquet
writer records for every row group anyway (``parquet_min_max``), so the data
is not scanned a second time; a partition column, absent from the files,
takes them from its partition values. All four are exact and merge exactly
across appends. For numeric columns a uniform reservoir sample (at most
``SAMPLE_SIZE`` values, merged across appends in proportion to rows) gives the
quantiles and the histogram: exact up to that many rows, an estimate with a
standard error of about 1/sqrt(SAMPLE_SIZE) of the rank beyond
(docs/datasets.md).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "ColumnStats",
    "HISTOGRAM_BINS",
    "QUANTILES",
    "SAMPLE_SIZE",
    "merge",
    "orderable",
    "parquet_min_max",
    "summary",
]

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
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t))


def orderable(t: pa.DataType) -> bool:
    """Whether the column gets a min and max."""
    return not (pa.types.is_nested(t) or pa.types.is_boolean(t) or pa.types.is_dictionary(t))


class ColumnStats:
    """One column's statistics for one write. ``update`` sees every batch; min and max are
    folded in with ``observe`` unless ``min_max_from_data`` asks ``update`` to scan for them."""

    def __init__(self, name: str, type_: pa.DataType, seed: int = 0, min_max_from_data: bool = False) -> None:
        self.name = name
        self.type = type_
        self.count = 0
        self.nulls = 0
        self.min: Any = None
        self.max: Any = None
        self.min_max_from_data = min_max_from_data and orderable(type_)
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
        if self.min_max_from_data:
            mm = pc.min_max(array)
            self.observe(mm["min"].as_py(), mm["max"].as_py())
        if _numeric(self.type):
            self._offer(pc.drop_null(array) if nulls else array)

    def observe(self, lo: Any, hi: Any) -> None:
        """Fold in a min and max found elsewhere (Parquet statistics, a partition value).
        NaN is skipped, as Parquet statistics skip it: min/max order the numbers."""
        if lo is not None and lo == lo and (self.min is None or lo < self.min):
            self.min = lo
        if hi is not None and hi == hi and (self.max is None or hi > self.max):
            self.max = hi

    def _offer(self, values: pa.Array) -> None:
        """Reservoir sampling with Li's Algorithm L: the gaps between replacements are drawn,
        so a batch costs O(replacements), about SAMPLE_SIZE·ln(rows/SAMPLE_SIZE) in all; the
        values replaced in a batch are fetched with one ``take``, not one boxed scalar each."""
        start, n = self.seen, len(values)
        self.seen += n
        fill = min(n, SAMPLE_SIZE - len(self.sample))
        if fill > 0:
            self.sample += [float(v) for v in values.slice(0, fill).to_pylist()]
            if len(self.sample) == SAMPLE_SIZE:
                # W = U^(1/k) with U in (0, 1]; W must stay below 1 for log(1 - W)
                w = min((1.0 - self._rng.random()) ** (1.0 / SAMPLE_SIZE), math.nextafter(1.0, 0.0))
                self._w = w
                self._next = SAMPLE_SIZE + int(math.log(1.0 - self._rng.random()) / math.log(1.0 - w))
        if len(self.sample) < SAMPLE_SIZE:
            return
        # The loop runs ~20,000 times for the first million rows: locals, inlined steps and
        # a power for W instead of exp(log(u)/k) halve its cost. 1 - rand() is in (0, 1]: its
        # log is finite.
        rand, w, taken, end = self._rng.random, self._w, self._next, start + n
        slots: list[int] = []
        picks: list[int] = []
        while taken < end:
            slots.append(int(rand() * SAMPLE_SIZE))
            picks.append(taken - start)
            w *= (1.0 - rand()) ** (1.0 / SAMPLE_SIZE)
            taken += int(math.log(1.0 - rand()) / math.log(1.0 - w)) + 1
        self._w, self._next = w, taken
        if picks:
            for slot, value in zip(slots, values.take(pa.array(picks, pa.int64())).to_pylist(), strict=True):
                self.sample[slot] = float(value)  # in draw order: a slot drawn twice keeps the later

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": str(self.type),
            "count": self.count,
            "nulls": self.nulls,
            "min": _plain(self.min),
            "max": _plain(self.max),
        }
        if _numeric(self.type):
            out["sample"] = {"seen": self.seen, "values": self.sample}
        return out


def parquet_min_max(
    metadata: pq.FileMetaData, types: dict[str, pa.DataType], read_back: Callable[[int, str], pa.ChunkedArray]
) -> Iterator[tuple[str, Any, Any]]:
    """(column, min, max) for each row group of one written Parquet file and each orderable
    column of ``types``, from the statistics the writer recorded: no pass over the data.

    The Parquet writer leaves out min/max for a chunk whose extreme is longer than 4 KiB and
    for an all-NaN float chunk; such a chunk, if it holds values, is read back
    (``read_back(row_group, column)``, one column of one row group) and scanned.
    """
    index = {metadata.schema.column(j).path: j for j in range(metadata.num_columns)}
    wanted = [(name, t, index[name]) for name, t in types.items() if orderable(t) and name in index]
    for r in range(metadata.num_row_groups):
        group = metadata.row_group(r)
        for name, type_, j in wanted:
            stats = group.column(j).statistics
            if stats is not None and stats.null_count == group.num_rows:
                continue  # nulls only: nothing to order
            found = _recorded_min_max(stats, type_)
            if found is None:
                try:
                    mm = pc.min_max(read_back(r, name))
                except pa.ArrowNotImplementedError:  # no ordering kernel for this type
                    continue
                found = mm["min"].as_py(), mm["max"].as_py()
            yield name, *found


def _recorded_min_max(stats: pq.Statistics | None, type_: pa.DataType) -> tuple[Any, Any] | None:
    if (
        stats is None
        or not stats.has_min_max
        or not getattr(stats, "is_min_value_exact", True)
        or not getattr(stats, "is_max_value_exact", True)
    ):  # a truncated bound is no min
        return None
    try:
        # Parquet statistics come back as Python values of the Parquet logical type (UTC for a
        # zoned timestamp, a coerced unit); as the column's Arrow type they read as the data
        # does (its zone, its unit), so both ways give the same min and max.
        lo, hi = pa.scalar(stats.min, type=type_).as_py(), pa.scalar(stats.max, type=type_).as_py()
    except (pa.ArrowException, TypeError, ValueError):  # a type pyarrow does not map back
        return None
    if pa.types.is_floating(type_):  # Parquet writes a zero min as -0.0 whatever the data held
        lo, hi = lo + 0.0, hi + 0.0
    return lo, hi


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
        values = rng.sample(a["values"], min(take_a, len(a["values"]))) + rng.sample(
            b["values"], min(SAMPLE_SIZE - take_a, len(b["values"]))
        )
        out["sample"] = {"seen": seen, "values": values}
    return out


def summary(stats: dict[str, Any]) -> dict[str, Any]:
    """What ``Dataset.stats()`` shows: the sample turned into quantiles and a histogram."""
    out = {k: v for k, v in stats.items() if k != "sample"}
    values = stats.get("sample", {}).get("values", [])
    sample = sorted(v for v in values if v == v)  # NaN has no rank and no bin
    if sample and stats.get("min") is not None:
        n = len(sample)
        out["quantiles"] = {str(q): sample[min(n - 1, int(q * n))] for q in QUANTILES}
        lo, hi = float(stats["min"]), float(stats["max"])
        if math.isfinite(hi - lo):  # an infinite value leaves no finite bins to count in
            out["histogram"] = _histogram(sample, lo, hi, stats["count"] / len(values))
        out["exact"] = stats["sample"]["seen"] <= SAMPLE_SIZE
    return out


def _histogram(sample: list[float], lo: float, hi: float, scale: float) -> dict[str, list[Any]]:
    """``HISTOGRAM_BINS`` bins between ``lo`` and ``hi``; ``scale``: rows per sampled value, so
    the bins estimate rows (NaN rows are in none)."""
    width = (hi - lo) / HISTOGRAM_BINS or 1.0
    counts = [0] * HISTOGRAM_BINS
    for v in sample:
        # the sample lies between min and max; a manifest that says otherwise (a peer's) is
        # clamped, and an infinite value has no bin
        if math.isfinite(v):
            counts[max(0, min(HISTOGRAM_BINS - 1, int((v - lo) / width)))] += 1
    return {
        "edges": [lo + i * width for i in range(HISTOGRAM_BINS + 1)],
        "counts": [round(c * scale) for c in counts],
    }
