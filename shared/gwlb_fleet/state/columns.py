"""How the state records become flat columns, the same way in both stores.

Numbers and strings are stored as they are (floats always as floats, so that a stored value keeps
its column type); the free-form dictionaries (``steps``, ``extra``) as JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, TypeVar, get_origin, get_type_hints

from gwlb_fleet.state.records import GroupRecord, InstanceRecord

Record = TypeVar("Record", InstanceRecord, GroupRecord)
ColumnValue = str | int | float


def _codecs_of(record_type: type) -> dict[str, tuple[Callable[[Any], ColumnValue], Callable[[Any], Any]]]:
    """Per field: (to column, from column)."""
    hints = get_type_hints(record_type)
    codecs: dict[str, tuple[Callable[[Any], ColumnValue], Callable[[Any], Any]]] = {}
    for field in fields(record_type):
        hint = hints[field.name]
        if get_origin(hint) is dict:
            codecs[field.name] = (lambda value: json.dumps(value, sort_keys=True), json.loads)
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


def to_columns(record: InstanceRecord | GroupRecord) -> dict[str, ColumnValue]:
    return {name: encode(getattr(record, name)) for name, (encode, _) in _CODECS[type(record)].items()}


def from_columns(record_type: type[Record], columns: Mapping[str, Any]) -> Record:
    """The record from stored columns; columns the record does not know are ignored, missing ones
    take the field's default (a column added by a later version of this code)."""
    codecs = _CODECS[record_type]
    known = {name: codecs[name][1](value) for name, value in columns.items() if name in codecs}
    return record_type(**known)
