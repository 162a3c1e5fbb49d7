"""How a stage's return value becomes a file in the lake, and comes back as the same kind of value.

The kind of a value (``pandas``, ``polars``, ``arrow``, ``numpy``, ``python``)
is recorded beside the format, so a parquet file written from a Polars frame
loads back as a Polars frame. Table libraries are imported only when a value
of theirs is seen. A format takes only values it loads back as the same kind
(``Format.accepts``); ``choose_format`` alone decides, for a declared format and
an inferred one, before anything is written. Some values of an accepted type
still cannot be encoded (a pandas column mixing ints and strs, a lock under
pickle): ``dump`` turns the encoder's own refusal into one error line.

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

from lakelet.core._values import kind_of
from lakelet.core.errors import InvalidArgumentError
from lakelet.lake._run_record import INFERRED_FORMATS

__all__ = ["FORMATS", "Format", "choose_format", "dump", "get_format", "is_jsonable"]

IN_MEMORY_MAX = 1 << 20  # a value encoded in memory up to this size is stored from there


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


_JSON_VALUE = json.JSONEncoder(sort_keys=True, ensure_ascii=False, allow_nan=False)  # built once


def _json_text(value: Any) -> str:
    return _JSON_VALUE.encode(value)


def _encode_json(value: Any) -> bytes:
    return _json_text(value).encode()  # UTF-8 as it is read back, whatever the locale


def _decode_json(data: bytes, kind: str) -> Any:
    return json.loads(data.decode("utf-8"))


def _decode_text(data: bytes, kind: str) -> str:
    # the bytes as they are: a text file read in text mode would turn "\r\n" into "\n"
    return data.decode("utf-8")


def _dump_pickle(value: Any, path: Path) -> None:
    # to the file, in frames: a large value is not held twice in memory
    with open(path, "wb") as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)


def _load_pickle(path: Path, kind: str) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)  # noqa: S301 - only for stages declared format="pickle"


_TABLE_TYPES = {
    ("pandas", "DataFrame"),
    ("polars", "DataFrame"),
    ("pyarrow", "Table"),
    ("pyarrow", "RecordBatch"),
}


def _is_table(value: Any) -> bool:
    return (kind_of(value), type(value).__name__) in _TABLE_TYPES


def _is_array(value: Any) -> bool:
    # Exactly an ndarray: np.save turns a str, list or scalar into one (a cached call would return an
    # array where the first call returned the value) and drops a masked array's mask. Object arrays
    # need pickle.
    return kind_of(value) == "numpy" and type(value).__name__ == "ndarray" and value.dtype != object


def is_jsonable(value: Any) -> bool:
    try:
        _json_text(value)  # the file's own settings: sort_keys fails on a dict with both str and int keys
    except (TypeError, ValueError):
        return False
    return True


def _is_json(value: Any) -> bool:
    # not a tuple at the top: it would come back as a list
    return (value is None or isinstance(value, dict | list | str | int | float | bool)) and is_jsonable(value)


@dataclass(frozen=True)
class Format:
    """A way to store a value: json, text and bytes encode it in memory (``encode``), so that a
    map's small values reach the lake without a temp file; tables, arrays and pickles are written
    to a file (``dump``), which needs no second copy in memory."""

    name: str
    extension: str
    takes: str  # what it stores, for error messages
    accepts: Callable[[Any], bool]  # stores the value and loads back the same kind of value
    load: Callable[[Path, str], Any]  # (path, kind) -> value
    dump: Callable[[Any, Path], object] | None = None  # what it returns is ignored
    encode: Callable[[Any], bytes] | None = None
    decode: Callable[[bytes, str], Any] | None = None  # (content, kind) -> value: encode's inverse
    # what the encoder raises for a value it cannot encode (a function: pyarrow is imported lazily),
    # and what to do about it
    refusals: Callable[[], tuple[type[BaseException], ...]] = lambda: ()
    fix: str = ""

    def reads_from_memory(self, size: int) -> bool:
        """Whether a stored value of ``size`` bytes is read whole and decoded (``decode``)
        rather than loaded from its file."""
        return self.decode is not None and size <= IN_MEMORY_MAX


def _arrow_refusals() -> tuple[type[BaseException], ...]:
    import pyarrow as pa

    return pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError


# TypeError: "cannot pickle '_thread.lock' object"; AttributeError: "Can't pickle local object" (< 3.14)
_PICKLE_REFUSALS = (pickle.PicklingError, TypeError, AttributeError)
_TABLE_FIX = "give each column one type pyarrow can convert (e.g. df[column].astype(str))"
_UTF8_FIX = "return text UTF-8 can encode (no lone surrogates)"


def _utf8_refusals() -> tuple[type[BaseException], ...]:
    return (UnicodeEncodeError,)


_TABLES = "a DataFrame or an Arrow table"
FORMATS = {
    f.name: f
    for f in [
        Format(
            "parquet",
            "parquet",
            _TABLES,
            _is_table,
            _load_parquet,
            dump=_dump_parquet,
            refusals=_arrow_refusals,
            fix=_TABLE_FIX,
        ),
        Format(
            "arrow",
            "arrow",
            _TABLES,
            _is_table,
            _load_arrow,
            dump=_dump_arrow,
            refusals=_arrow_refusals,
            fix=_TABLE_FIX,
        ),
        Format(
            "csv",
            "csv",
            _TABLES,
            _is_table,
            _load_csv,
            dump=_dump_csv,
            refusals=_arrow_refusals,
            fix=_TABLE_FIX,
        ),
        Format("npy", "npy", "a numpy array (not of objects)", _is_array, _load_npy, dump=_dump_npy),
        Format(
            "json",
            "json",
            "JSON-able values",
            _is_json,
            lambda p, k: _decode_json(p.read_bytes(), k),
            encode=_encode_json,
            decode=_decode_json,
            refusals=_utf8_refusals,
            fix=_UTF8_FIX,
        ),
        Format(
            "text",
            "txt",
            "a str",
            lambda v: isinstance(v, str),
            lambda p, k: _decode_text(p.read_bytes(), k),
            encode=lambda v: v.encode("utf-8"),
            decode=_decode_text,
            refusals=_utf8_refusals,
            fix=_UTF8_FIX,
        ),
        # not what bytes() takes: bytes(5) is five zero bytes, and a list would come back as bytes
        Format(
            "bytes",
            "bin",
            "bytes",
            lambda v: isinstance(v, bytes | bytearray | memoryview),
            lambda p, k: p.read_bytes(),
            encode=bytes,
            decode=lambda data, k: data,
        ),
        Format(
            "pickle",
            "pkl",
            "any picklable value",
            lambda v: True,
            _load_pickle,
            dump=_dump_pickle,
            refusals=lambda: _PICKLE_REFUSALS,
            fix="return a value pickle can store (no locks, open files, "
            "lambdas or functions defined inside functions)",
        ),
    ]
}
_INFERRED = INFERRED_FORMATS  # never pickle; in this order: a str is text, not json


def _type_name(value: Any) -> str:
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def choose_format(value: Any, declared: Format | None, stage: str) -> Format:
    """The format that stores a stage's return value: the declared one, else one inferred from the value.

    Raises InvalidArgumentError when the declared format cannot store the value, or none is inferred.
    """
    if declared is not None:
        if declared.accepts(value):
            return declared
        takers = [f.name for f in FORMATS.values() if f.accepts(value)]
        raise InvalidArgumentError(
            f'stage {stage} declares format="{declared.name}", which takes {declared.takes}, but returned '
            f"a {_type_name(value)}: return {declared.takes}, or declare a format that takes a "
            f"{_type_name(value)}: {', '.join(takers)}"
        )
    for name in _INFERRED:
        if FORMATS[name].accepts(value):
            return FORMATS[name]
    raise InvalidArgumentError(
        f"stage {stage} returned a {_type_name(value)}, which lakelet "
        "cannot store by itself: return a DataFrame, an Arrow table, a numpy array, bytes, str, "
        "JSON-able values or a File, or declare "
        '@lakelet.stage(format="pickle") if this value may be unpickled from the lake'
    )


def dump(fmt: Format, value: Any, new_path: Callable[[], Path], stage: str) -> bytes | Path:
    """A stage's return value in ``fmt``: its bytes, when the format encodes in memory and they
    are at most ``IN_MEMORY_MAX``, else written to a file ``new_path()`` names (the caller
    removes it if this raises).

    Raises InvalidArgumentError, naming the encoder's reason, when ``fmt`` cannot encode the value.
    """
    try:
        if fmt.encode is None:
            assert fmt.dump is not None
            path = new_path()
            fmt.dump(value, path)
            return path
        data = fmt.encode(value)
        if len(data) <= IN_MEMORY_MAX:
            return data
        path = new_path()
        path.write_bytes(data)
        return path
    except fmt.refusals() as e:
        raise InvalidArgumentError(
            f'stage {stage} returned a {_type_name(value)} that format="{fmt.name}" cannot store '
            f"({_reason(e)}): {fmt.fix}"
        ) from None


def _reason(error: BaseException) -> str:
    # pyarrow's pandas conversion puts the value and the column in two str args: keep both
    args = error.args if len(error.args) > 1 and all(isinstance(a, str) for a in error.args) else [error]
    lines = [str(a).strip().splitlines()[0] for a in args if str(a).strip()]
    return "; ".join(lines) or type(error).__name__


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown format {name!r}: use one of {', '.join(sorted(FORMATS))}"
        ) from None
