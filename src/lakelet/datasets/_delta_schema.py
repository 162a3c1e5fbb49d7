"""Arrow schemas as Delta Lake schema strings and back, and partition values as Delta spells them.

The Delta transaction log names types in its own JSON (the ``schemaString`` of
``metaData``): ``long``, ``string``, ``timestamp``, ``decimal(10,2)``, nested
``struct``/``array``/``map`` objects. Delta has no unsigned integers, no
nanosecond or zoned timestamps other than UTC microseconds, no time of day:
lakelet writes the nearest Delta type every reader understands and keeps the
exact Arrow schema in its own ``commitInfo`` (``_delta_log``), so a lakelet
reader gets back what was written. ``to_arrow`` is part of the commit parser:
a schema string that is not a Delta schema raises ``ValueError``.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

__all__ = ["delta_schema", "needs_timestamp_ntz", "partition_scalar", "partition_text", "to_arrow"]

_PRIMITIVE_TO_DELTA = (
    (pa.types.is_boolean, "boolean"),
    (pa.types.is_int8, "byte"),
    (pa.types.is_int16, "short"),
    (pa.types.is_int32, "integer"),
    (pa.types.is_int64, "long"),
    (pa.types.is_uint8, "short"),  # the next signed type that holds every value
    (pa.types.is_uint16, "integer"),
    (pa.types.is_uint32, "long"),
    (pa.types.is_uint64, "long"),  # Delta has no wider integer: values past 2**63 are refused (_files)
    (pa.types.is_float32, "float"),
    (pa.types.is_float64, "double"),
    (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t), "string"),
    (lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t), "binary"),
    (pa.types.is_date, "date"),
)
_DELTA_TO_ARROW = {
    "boolean": pa.bool_(),
    "byte": pa.int8(),
    "short": pa.int16(),
    "integer": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "string": pa.string(),
    "binary": pa.binary(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "timestamp_ntz": pa.timestamp("us"),
}
_DECIMAL = re.compile(r"decimal\(([0-9]{1,2}),\s*([0-9]{1,2})\)")
_MAX_DEPTH = 32


def _type(t: pa.DataType, column: str) -> Any:
    for test, name in _PRIMITIVE_TO_DELTA:
        if test(t):
            return name
    if pa.types.is_timestamp(t):
        return "timestamp" if t.tz is not None else "timestamp_ntz"
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_dictionary(t):
        return _type(t.value_type, column)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return {"type": "array", "elementType": _type(t.value_type, column), "containsNull": True}
    if pa.types.is_map(t):
        return {
            "type": "map",
            "keyType": _type(t.key_type, column),
            "valueType": _type(t.item_type, column),
            "valueContainsNull": True,
        }
    if pa.types.is_struct(t):
        return {"type": "struct", "fields": [_field(t.field(i)) for i in range(t.num_fields)]}
    raise TypeError(f"column {column!r} is {t}, which a Delta table cannot hold: cast it first")


def _field(f: pa.Field) -> dict[str, Any]:
    return {"name": f.name, "type": _type(f.type, f.name), "nullable": f.nullable, "metadata": {}}


def delta_schema(schema: pa.Schema) -> dict[str, Any]:
    """The Delta ``struct`` of ``schema``; TypeError names a column Delta cannot hold."""
    return {"type": "struct", "fields": [_field(f) for f in schema]}


def needs_timestamp_ntz(delta: dict[str, Any]) -> bool:
    """Whether the schema holds a timestamp without zone (table feature ``timestampNtz``)."""

    def holds(t: Any) -> bool:
        if isinstance(t, str):
            return t == "timestamp_ntz"
        if isinstance(t, dict):
            return any(
                holds(v) for k, v in t.items() if k in ("type", "elementType", "keyType", "valueType")
            ) or any(holds(f.get("type")) for f in t.get("fields", []))
        return False

    return holds(delta)


def to_arrow(delta: Any, depth: int = 0) -> pa.Schema:
    """The Arrow schema of a Delta ``struct``; ValueError says what is not a Delta schema."""
    return pa.schema(_arrow_fields(delta, depth))


def _arrow_fields(delta: Any, depth: int) -> list[pa.Field]:
    if (
        not isinstance(delta, dict)
        or delta.get("type") != "struct"
        or not isinstance(delta.get("fields"), list)
    ):
        raise ValueError("the schema is not a Delta struct")
    fields = []
    for f in delta["fields"]:
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"]:
            raise ValueError("a schema field has no name")
        nullable = f.get("nullable", True)
        if not isinstance(nullable, bool):
            raise ValueError(f"field {f['name']!r}: nullable is not true or false")
        fields.append(pa.field(f["name"], _arrow_type(f.get("type"), depth + 1), nullable=nullable))
    if len({f.name for f in fields}) != len(fields):
        raise ValueError("the schema names a column twice")
    return fields


def _arrow_type(t: Any, depth: int) -> pa.DataType:
    if depth > _MAX_DEPTH:
        raise ValueError("the schema is nested too deep")
    if isinstance(t, str):
        if t in _DELTA_TO_ARROW:
            return _DELTA_TO_ARROW[t]
        match = _DECIMAL.fullmatch(t)
        if match and 1 <= int(match[1]) <= 38 and int(match[2]) <= int(match[1]):
            return pa.decimal128(int(match[1]), int(match[2]))
        raise ValueError(f"unknown Delta type {t[:40]!r}")
    if isinstance(t, dict) and t.get("type") == "array":
        return pa.list_(_arrow_type(t.get("elementType"), depth + 1))
    if isinstance(t, dict) and t.get("type") == "map":
        return pa.map_(_arrow_type(t.get("keyType"), depth + 1), _arrow_type(t.get("valueType"), depth + 1))
    if isinstance(t, dict) and t.get("type") == "struct":
        return pa.struct(_arrow_fields(t, depth + 1))
    raise ValueError(f"not a Delta type: {str(t)[:40]!r}")


def partition_text(value: Any) -> str | None:
    """A partition value as the Delta log spells it (dates ISO, timestamps with a space)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return str(value.isoformat(sep=" ") if hasattr(value, "hour") else value.isoformat())
    return str(value)


def partition_scalar(text: str | None, type_: pa.DataType) -> pa.Scalar:
    """The typed value of a Delta partition value; ValueError if it is not one of ``type_``."""
    if text is None:
        return pa.scalar(None, type_)
    try:
        if pa.types.is_boolean(type_):
            if text not in ("true", "false"):
                raise ValueError(text)
            return pa.scalar(text == "true")
        return pa.scalar(text).cast(type_)
    except (pa.ArrowException, TypeError, OverflowError) as e:
        raise ValueError(str(e)) from None
