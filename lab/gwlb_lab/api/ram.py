"""RAM 2015-05-01 on the local endpoint: GetRole (query string, RPC)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gwlb_fleet.alibaba.fakes.ram import FakeRam
from gwlb_lab.api.params import Params

PRODUCT = "ram"
VERSION = "2015-05-01"

HANDLERS: dict[str, Callable[[FakeRam, Params], dict[str, Any]]] = {
    "GetRole": lambda ram, p: ram.api_get_role(p.required("RoleName")),
}
