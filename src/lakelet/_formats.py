"""How a stage's return value becomes a file in the lake, and comes back as the same kind of value.

The kind of a value (``pandas``, ``polars``, ``arrow``, ``numpy``, ``python``)
is recorded beside the format, so a parquet file written from a Polars frame
loads back as a Polars frame. Table libraries are imported only when a value
of theirs is seen.

Never unpickle from the lake unless the stage asked for ``format="pickle"``:
loading a pickle runs code, and a shared lake is written by other machines.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import InvalidArgumentError


def kind_of(value: Any) -> str:
    top = type(value).__module__.split(".")[0]
    return top if top in ("pandas", "polars", "pyarrow", "numpy") else "python"


def _to_arrow(value: Any) -> Any:
    import pyarrow as pa

    kind = kind_of(value)
    if kind == "pandas":
        return pa.Table.from_pandas(value, preserve_index=False)
    if kind == "polars":
        return value.to_arrow()
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value])
    return value


def _from_arrow(table: Any, kind: str) -> Any:
    if kind == "pandas":
        return table.to_pandas()
    if kind == "polars":
        import polars as pl

        return pl.from_arrow(table)
    return table


def _dump_parquet(value: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(_to_arrow(value), path, compression="zstd")


def _load_parquet(path: Path, kind: str) -> Any:
    import pyarrow.parquet as pq

    return _from_arrow(pq.read_table(path), kind)


def _dump_arrow(value: Any, path: Path) -> None:
    import pyarrow as pa

    table = _to_arrow(value)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _load_arrow(path: Path, kind: str) -> Any:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return _from_arrow(pa.ipc.open_file(source).read_all(), kind)


def _dump_csv(value: Any, path: Path) -> None:
    import pyarrow.csv as pc

    pc.write_csv(_to_arrow(value), path)


def _load_csv(path: Path, kind: str) -> Any:
    import pyarrow.csv as pc

    return _from_arrow(pc.read_csv(path), kind)


def _dump_npy(value: Any, path: Path) -> None:
    import numpy as np

    with open(path, "wb") as f:
        np.save(f, value, allow_pickle=False)


def _load_npy(path: Path, kind: str) -> Any:
    import numpy as np

    return np.load(path, allow_pickle=False)


def _dump_json(value: Any, path: Path) -> None:
    path.write_text(json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False))


def _dump_pickle(value: Any, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)


def _load_pickle(path: Path, kind: str) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)  # noqa: S301 - only for stages declared format="pickle"


@dataclass(frozen=True)
class Format:
    name: str
    extension: str
    dump: Callable[[Any, Path], None]
    load: Callable[[Path, str], Any]  # (path, kind) -> value


FORMATS = {
    f.name: f
    for f in [
        Format("parquet", "parquet", _dump_parquet, _load_parquet),
        Format("arrow", "arrow", _dump_arrow, _load_arrow),
        Format("csv", "csv", _dump_csv, _load_csv),
        Format("npy", "npy", _dump_npy, _load_npy),
        Format("json", "json", _dump_json, lambda p, k: json.loads(p.read_text(encoding="utf-8"))),
        Format("text", "txt", lambda v, p: p.write_text(v, encoding="utf-8"),
               lambda p, k: p.read_text(encoding="utf-8")),
        Format("bytes", "bin", lambda v, p: p.write_bytes(bytes(v)), lambda p, k: p.read_bytes()),
        Format("pickle", "pkl", _dump_pickle, _load_pickle),
    ]
}

_TABLE_TYPES = {("pandas", "DataFrame"), ("polars", "DataFrame"), ("pyarrow", "Table"),
                ("pyarrow", "RecordBatch")}


def is_jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def infer_format(value: Any, stage: str) -> Format:
    """The format for a return value, or an error naming the ``format=`` to use."""
    kind = kind_of(value)
    if (kind, type(value).__name__) in _TABLE_TYPES:
        return FORMATS["parquet"]
    if kind == "numpy" and type(value).__name__ == "ndarray" and value.dtype != object:
        return FORMATS["npy"]
    if isinstance(value, bytes | bytearray | memoryview):
        return FORMATS["bytes"]
    if isinstance(value, str):
        return FORMATS["text"]
    if (isinstance(value, dict | list | int | float | bool) or value is None) and is_jsonable(value):
        return FORMATS["json"]
    raise InvalidArgumentError(
        f"stage {stage} returned a {type(value).__module__}.{type(value).__qualname__}, which lakelet "
        "cannot store by itself: return a DataFrame, an Arrow table, a numpy array, bytes, str, "
        "JSON-able values or a File, or declare "
        '@lakelet.stage(format="pickle") if this value may be unpickled from the lake'
    )


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown format {name!r}: use one of {', '.join(sorted(FORMATS))}"
        ) from None
