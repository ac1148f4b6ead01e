"""VPC 2016-04-28 on the local endpoint: preflight's reads (RPC, query string), answered by
gwlb_fleet.alibaba.fakes.vpc.FakeVpc (F-VPC-1, F-VPC-3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gwlb_fleet.alibaba.fakes.vpc import FakeVpc
from gwlb_lab.api.params import Params

PRODUCT = "vpc"
VERSION = "2016-04-28"

HANDLERS: dict[str, Callable[[FakeVpc, Params], dict[str, Any]]] = {
    "DescribeVSwitches": lambda vpc, p: vpc.api_describe_vswitches(
        p.values, p.integer("PageNumber", 1), p.integer("PageSize", 10)
    ),
    "DescribeRouteTableList": lambda vpc, p: vpc.api_describe_route_table_list(
        p.values, p.integer("PageNumber", 1), p.integer("PageSize", 10)
    ),
    "DescribeRouteEntryList": lambda vpc, p: vpc.api_describe_route_entry_list(
        p.values, p.integer("MaxResult", 10)
    ),
}
