"""VPC's describe calls in memory, for ``gwlb-fleet preflight``: vSwitches, route tables and their
entries, as the service answers them (F-VPC-1, F-VPC-3).

``DescribeRouteEntryList`` refuses a ``NextHopType`` filter outside the values its SDK model lists
(F-VPC-1: ``GatewayLoadBalancerEndpoint`` is not among them, so preflight filters client-side).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gwlb_fleet.alibaba.fakes.openapi import FakeOpenApiService

PAGE_SIZE_MAX = 50  # F-VPC-3: DescribeRouteTableList, DescribeVSwitches
ENTRY_PAGE = (1, 100)  # F-VPC-1: DescribeRouteEntryList MaxResult
# F-VPC-1: the NextHopType filter's values in DescribeRouteEntryListRequest.next_hop_type
FILTER_HOP_TYPES = (
    "Instance",
    "HaVip",
    "VpnGateway",
    "NatGateway",
    "NetworkInterface",
    "RouterInterface",
    "VpcPeer",
    "Attachment",
    "Ipv4Gateway",
)


@dataclass
class FakeRouteTable:
    route_table_id: str
    vpc_id: str
    table_type: str = "Custom"
    vswitch_ids: list[str] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(
        default_factory=list
    )  # RouteEntrys.RouteEntry[] as the wire has them

    def wire(self) -> dict[str, Any]:
        return {
            "RouteTableId": self.route_table_id,
            "VpcId": self.vpc_id,
            "RouteTableType": self.table_type,
            "VSwitchIds": {"VSwitchId": list(self.vswitch_ids)},
        }


@dataclass
class FakeVpc(FakeOpenApiService):
    service: ClassVar[str] = "vpc"

    vswitches: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # id -> {VSwitchId, VpcId, ZoneId, CidrBlock}
    route_tables: dict[str, FakeRouteTable] = field(default_factory=dict)

    def api_describe_vswitches(self, params: Mapping[str, str], page: int, size: int) -> dict[str, Any]:
        """F-VPC-3: RegionId or VpcId (at least one), PageSize at most 50."""
        with self._api("DescribeVSwitches"):
            if not params.get("RegionId") and not params.get("VpcId"):
                raise self._fail("MissingParameter", "RegionId or VpcId is mandatory for this action.")
            _page_size(self, page, size)
            rows = [
                v
                for v in self.vswitches.values()
                if all(not params.get(k) or v.get(k) == params[k] for k in ("VSwitchId", "VpcId", "ZoneId"))
            ]
            start = (page - 1) * size
            return {
                "VSwitches": {"VSwitch": rows[start : start + size]},
                "TotalCount": len(rows),
                "PageNumber": page,
                "PageSize": size,
            }

    def api_describe_route_table_list(
        self, params: Mapping[str, str], page: int, size: int
    ) -> dict[str, Any]:
        """F-VPC-3: RegionId required, PageSize at most 50, RouteTableType System|Custom."""
        with self._api("DescribeRouteTableList"):
            if not params.get("RegionId"):
                raise self._fail("MissingParameter", "RegionId is mandatory for this action.")
            if params.get("RouteTableType", "") not in ("", "System", "Custom"):
                raise self._fail("InvalidParameter", f"RouteTableType {params['RouteTableType']!r}")
            _page_size(self, page, size)
            rows = [
                t.wire()
                for t in self.route_tables.values()
                if (not params.get("VpcId") or t.vpc_id == params["VpcId"])
                and (not params.get("RouteTableId") or t.route_table_id == params["RouteTableId"])
            ]
            start = (page - 1) * size
            return {
                "RouterTableList": {"RouterTableListType": rows[start : start + size]},
                "TotalCount": len(rows),
                "PageNumber": page,
                "PageSize": size,
            }

    def api_describe_route_entry_list(self, params: Mapping[str, str], max_result: int) -> dict[str, Any]:
        """F-VPC-1: RegionId and RouteTableId required, MaxResult 1..100, NextToken; a NextHopType
        filter only from the model's list."""
        with self._api("DescribeRouteEntryList"):
            for name in ("RegionId", "RouteTableId"):
                if not params.get(name):
                    raise self._fail("MissingParameter", f"{name} is mandatory for this action.")
            if not ENTRY_PAGE[0] <= max_result <= ENTRY_PAGE[1]:
                raise self._fail("InvalidParameter", f"MaxResult {max_result}: 1 to 100")
            hop_type = params.get("NextHopType", "")
            if hop_type and hop_type not in FILTER_HOP_TYPES:
                raise self._fail("InvalidParameter", f"NextHopType {hop_type!r}")
            table = self.route_tables.get(params["RouteTableId"])
            if table is None:  # F-VPC-3 (code UNDOCUMENTED in the stored pages)
                raise self._fail("InvalidRouteTableId.NotFound", "The specified route table does not exist.")
            rows = [e for e in table.entries if not hop_type or e.get("NextHopType") == hop_type]
            start = int(params.get("NextToken") or 0)
            end = start + max_result
            return {
                "RouteEntrys": {"RouteEntry": rows[start:end]},
                "NextToken": str(end) if end < len(rows) else "",
                "TotalCount": len(rows),
            }


def _page_size(vpc: FakeVpc, page: int, size: int) -> None:
    if page < 1 or not 1 <= size <= PAGE_SIZE_MAX:
        raise vpc._fail("InvalidParameter", f"PageNumber {page} / PageSize {size}: at most {PAGE_SIZE_MAX}")
