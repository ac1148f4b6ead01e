"""PrivateLink's list calls in memory, for ``gwlb-fleet preflight``: endpoint services (their
resource), endpoints and their zones, as the service answers them (F-VPC-2, F-VPC-4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gwlb_fleet.alibaba.fakes.openapi import FakeOpenApiService

RESOURCE_TYPES = ("slb", "alb", "nlb", "gwlb")  # F-VPC-4
ENDPOINT_TYPES = ("Interface", "Reverse", "GatewayLoadBalancer")  # F-VPC-2
PAGE = (1, 1000)  # F-VPC-2, F-VPC-4: MaxResults


@dataclass
class FakePrivateLink(FakeOpenApiService):
    service: ClassVar[str] = "privatelink"

    # ServiceId -> {ServiceId, ServiceName, ServiceType, ServiceResourceType; ResourceId: matched only}
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    # EndpointId -> {EndpointId, EndpointType, VpcId, ServiceName, ConnectionStatus, EndpointStatus}
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    zones: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # EndpointId -> Zones[]

    def api_list_vpc_endpoint_services(self, params: Mapping[str, str], max_results: int) -> dict[str, Any]:
        with self._api("ListVpcEndpointServices"):
            self._common(params, max_results)
            kind = params.get("ServiceResourceType", "")
            if kind and kind not in RESOURCE_TYPES:
                raise self._fail("InvalidParameter", f"ServiceResourceType {kind!r}")
            rows = [
                {k: v for k, v in s.items() if k != "ResourceId"}
                for s in self.services.values()
                if (not kind or s.get("ServiceResourceType") == kind)
                and all(
                    not params.get(k) or s.get(k) == params[k]
                    for k in ("ResourceId", "ServiceId", "ServiceName")
                )
            ]
            return _paged("Services", rows, params, max_results)

    def api_list_vpc_endpoints(self, params: Mapping[str, str], max_results: int) -> dict[str, Any]:
        with self._api("ListVpcEndpoints"):
            self._common(params, max_results)
            kind = params.get("EndpointType", "")
            if kind and kind not in ENDPOINT_TYPES:
                raise self._fail("InvalidParameter", f"EndpointType {kind!r}")
            rows = [
                e
                for e in self.endpoints.values()
                if all(
                    not params.get(k) or e.get(k) == params[k]
                    for k in ("EndpointType", "VpcId", "ServiceName", "EndpointId")
                )
            ]
            return _paged("Endpoints", rows, params, max_results)

    def api_list_vpc_endpoint_zones(self, params: Mapping[str, str], max_results: int) -> dict[str, Any]:
        with self._api("ListVpcEndpointZones"):
            self._common(params, max_results)
            endpoint_id = params.get("EndpointId", "")
            if not endpoint_id:
                raise self._fail("MissingParameter", "EndpointId is mandatory for this action.")
            if endpoint_id not in self.endpoints:  # code UNDOCUMENTED (F-VPC-2): assumed
                raise self._fail("EndpointNotFound", f"The endpoint {endpoint_id} is not found.")
            return _paged("Zones", self.zones.get(endpoint_id, []), params, max_results)

    def _common(self, params: Mapping[str, str], max_results: int) -> None:
        if not params.get("RegionId"):
            raise self._fail("MissingParameter", "RegionId is mandatory for this action.")
        if not PAGE[0] <= max_results <= PAGE[1]:
            raise self._fail("InvalidParameter", f"MaxResults {max_results}: 1 to 1000")


def _paged(key: str, rows: list[dict[str, Any]], params: Mapping[str, str], size: int) -> dict[str, Any]:
    start = int(params.get("NextToken") or 0)
    end = start + size
    return {key: rows[start:end], "NextToken": str(end) if end < len(rows) else "", "TotalCount": len(rows)}
