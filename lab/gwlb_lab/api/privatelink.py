"""PrivateLink 2020-04-15 on the local endpoint: preflight's reads (RPC), answered by
gwlb_fleet.alibaba.fakes.privatelink.FakePrivateLink (F-VPC-2, F-VPC-4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gwlb_fleet.alibaba.fakes.privatelink import FakePrivateLink
from gwlb_lab.api.params import Params

PRODUCT = "privatelink"
VERSION = "2020-04-15"

HANDLERS: dict[str, Callable[[FakePrivateLink, Params], dict[str, Any]]] = {
    "ListVpcEndpointServices": lambda pl, p: pl.api_list_vpc_endpoint_services(
        p.values, p.integer("MaxResults", 50)
    ),
    "ListVpcEndpoints": lambda pl, p: pl.api_list_vpc_endpoints(p.values, p.integer("MaxResults", 50)),
    "ListVpcEndpointZones": lambda pl, p: pl.api_list_vpc_endpoint_zones(
        p.values, p.integer("MaxResults", 50)
    ),
}
