"""How the state records become flat columns, the same way in both stores.

Every declared field of a record is one column. Numbers, strings and flags are stored as they are
(floats always as floats, so that a stored value keeps its column type); ``steps`` as JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from typing import Any, TypeVar, get_origin, get_type_hints

from gwlb_fleet.state.records import GroupRecord, InstanceRecord

Record = TypeVar("Record", InstanceRecord, GroupRecord)
ColumnValue = str | int | float

# Before the records declared every field, the workflows kept theirs in one JSON column, "extra".
# A row written then is read with those keys as the fields they became.
LEGACY_EXTRA = "extra"


def _codecs_of(record_type: type) -> dict[str, tuple[Callable[[Any], ColumnValue], Callable[[Any], Any]]]:
    """Per field: (to column, from column)."""
    hints = get_type_hints(record_type)
    codecs: dict[str, tuple[Callable[[Any], ColumnValue], Callable[[Any], Any]]] = {}
    for field in fields(record_type):
        hint = hints[field.name]
        if get_origin(hint) is dict:
            codecs[field.name] = (lambda value: json.dumps(value, sort_keys=True), json.loads)
        elif hint is bool:
            codecs[field.name] = (bool, bool)
        elif hint is float:
            codecs[field.name] = (float, float)
        elif hint is int:
            codecs[field.name] = (int, int)
        else:  # str and Literal[str, ...]
            codecs[field.name] = (str, str)
    return codecs


_CODECS = {record_type: _codecs_of(record_type) for record_type in (InstanceRecord, GroupRecord)}


def field_names(record_type: type[Record]) -> tuple[str, ...]:
    return tuple(_CODECS[record_type])


def defaults(record_type: type[InstanceRecord] | type[GroupRecord]) -> dict[str, ColumnValue | None]:
    """Each field's default as a column value; None for the fields that have none (the keys)."""
    found: dict[str, ColumnValue | None] = {}
    for field in fields(record_type):
        encode = _CODECS[record_type][field.name][0]
        if field.default is not MISSING:
            found[field.name] = encode(field.default)
        elif field.default_factory is not MISSING:
            found[field.name] = encode(field.default_factory())
        else:
            found[field.name] = None
    return found


def to_columns(record: InstanceRecord | GroupRecord) -> dict[str, ColumnValue]:
    return {name: encode(getattr(record, name)) for name, (encode, _) in _CODECS[type(record)].items()}


def from_columns(record_type: type[Record], columns: Mapping[str, Any]) -> Record:
    """The record from stored columns; columns the record does not know are ignored, missing ones
    take the field's default (a column added by a later version of this code)."""
    codecs = _CODECS[record_type]
    known = {name: codecs[name][1](value) for name, value in columns.items() if name in codecs}
    for name, value in _legacy_extra(columns).items():
        if name in codecs and name not in known:
            known[name] = codecs[name][1](value)
    return record_type(**known)


def _legacy_extra(columns: Mapping[str, Any]) -> dict[str, Any]:
    raw = columns.get(LEGACY_EXTRA)
    if not isinstance(raw, str) or not raw:
        return {}
    try:
        decoded = json.loads(raw)
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}
