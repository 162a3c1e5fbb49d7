"""How a stage's return value becomes a file in the lake, and comes back as the same kind of value.

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


@dataclass(frozen=True)
class Format:
    name: str
    extension: str
    dump: Callable[[Any, Path], None]
    load: Callable[[Path], Any]


def _dump_json(value: Any, path: Path) -> None:
    path.write_text(json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False))


def _dump_pickle(value: Any, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)


def _load_pickle(path: Path) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)  # noqa: S301 - only for stages declared format="pickle"


FORMATS = {
    f.name: f
    for f in [
        Format("bytes", "bin", lambda v, p: p.write_bytes(bytes(v)), lambda p: p.read_bytes()),
        Format("text", "txt", lambda v, p: p.write_text(v, encoding="utf-8"),
               lambda p: p.read_text(encoding="utf-8")),
        Format("json", "json", _dump_json, lambda p: json.loads(p.read_text(encoding="utf-8"))),
        Format("pickle", "pkl", _dump_pickle, _load_pickle),
    ]
}


def _is_jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def infer_format(value: Any, stage: str) -> Format:
    """The format for a return value, or an error naming the ``format=`` to use."""
    if isinstance(value, bytes | bytearray | memoryview):
        return FORMATS["bytes"]
    if isinstance(value, str):
        return FORMATS["text"]
    if (isinstance(value, dict | list | int | float | bool) or value is None) and _is_jsonable(value):
        return FORMATS["json"]
    raise InvalidArgumentError(
        f"stage {stage} returned a {type(value).__module__}.{type(value).__qualname__}, which lakelet "
        "cannot store by itself: return bytes, str, JSON-able values or a File, or declare "
        '@lakelet.stage(format="pickle") if this value may be unpickled from the lake'
    )


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown format {name!r}: use one of {', '.join(sorted(FORMATS))}"
        ) from None
