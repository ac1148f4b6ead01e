"""PrivateLink over alibabacloud_privatelink20200415: what ``gwlb-fleet preflight`` reads of the
GWLB's endpoint service and the GWLB endpoints connected to it, with the deployer's credentials.

Read only, and never the functions': ``PREFLIGHT_RAM_ACTIONS``, no ``RAM_ACTIONS``.
"""

from __future__ import annotations

from alibabacloud_privatelink20200415 import models as privatelink_models
from alibabacloud_privatelink20200415.client import Client as PrivateLinkClient

from gwlb_fleet.alibaba.tea import RetryPolicy, SetupApi, TeaApi, setup_calls
from gwlb_fleet.settings import Settings

PREFLIGHT_CALLS = setup_calls(
    privatelink_models,
    "ListVpcEndpointServices",  # F-VPC-4
    "ListVpcEndpoints",  # F-VPC-2
    "ListVpcEndpointZones",  # F-VPC-2
)
PREFLIGHT_RAM_ACTIONS: frozenset[str] = frozenset(f"privatelink:{action}" for action in PREFLIGHT_CALLS)

GWLB_RESOURCE_TYPE = "gwlb"  # F-VPC-4: ListVpcEndpointServices ServiceResourceType
GWLB_ENDPOINT_TYPE = "GatewayLoadBalancer"  # F-VPC-2: ListVpcEndpoints EndpointType


def preflight_api(settings: Settings, retry_policy: RetryPolicy | None = None) -> SetupApi:
    return SetupApi(
        TeaApi.from_settings("privatelink", settings, PrivateLinkClient, retry_policy), PREFLIGHT_CALLS
    )
