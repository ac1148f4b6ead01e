"""An RPC request's parameters as the Tea SDKs send them, read back into values.

The SDKs flatten lists and objects (``Servers.1.ServerId``, ``InstanceIds.2``), send booleans as
``True``/``False`` and numbers as text; some lists go as one JSON array (ECS ``InstanceIds``).
A missing or malformed parameter fails as the services do: ``MissingParameter`` /
``InvalidParameter``, HTTP 400.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from gwlb_fleet.alibaba.errors import ApiError

_INDEXED = re.compile(r"^(?P<index>\d+)(?:\.(?P<field>.+))?$")


class Params:
    def __init__(self, service: str, values: Mapping[str, str]) -> None:
        self.service = service
        self.values = dict(values)

    def text(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    def required(self, name: str) -> str:
        value = self.values.get(name, "")
        if not value:
            raise ApiError(self.service, "MissingParameter", f"{name} is mandatory for this action.")
        return value

    def integer(self, name: str, default: int) -> int:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise ApiError(self.service, "InvalidParameter", f"{name} {value!r} is not an integer") from None

    def boolean(self, name: str, default: bool) -> bool:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ApiError(self.service, "InvalidParameter", f"{name} {value!r} is not a boolean")

    def strings(self, name: str) -> list[str]:
        """``Name.1``, ``Name.2`` ... in index order."""
        return [value for _, value in sorted(self._indexed(name).items()) if isinstance(value, str)]

    def objects(self, name: str) -> list[dict[str, str]]:
        """``Name.1.Field``, ``Name.2.Field`` ... as one dict per index."""
        return [value for _, value in sorted(self._indexed(name).items()) if isinstance(value, dict)]

    def json_strings(self, name: str) -> list[str]:
        """A list sent as one JSON array in one parameter."""
        value = self.values.get(name, "")
        if not value:
            return []
        try:
            items = json.loads(value)
        except ValueError:
            raise ApiError(self.service, f"Invalid{name}.Malformed", f"{name} is not a JSON array") from None
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ApiError(self.service, f"Invalid{name}.Malformed", f"{name} is not a JSON array of strings")
        return items

    def _indexed(self, name: str) -> dict[int, Any]:
        found: dict[int, Any] = {}
        prefix = f"{name}."
        for key, value in self.values.items():
            if not key.startswith(prefix):
                continue
            match = _INDEXED.match(key[len(prefix) :])
            if match is None:
                continue
            index = int(match["index"])
            if match["field"]:
                entry = found.setdefault(index, {})
                if isinstance(entry, dict):
                    entry[match["field"]] = value
            else:
                found[index] = value
        return found
