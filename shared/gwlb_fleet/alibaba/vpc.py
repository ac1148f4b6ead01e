"""VPC over alibabacloud_vpc20160428: what ``gwlb-fleet preflight`` reads of the network (route
tables and their entries, the GWLB's vSwitches), with the deployer's credentials.

Read only, and never the functions': there is no ``RAM_ACTIONS`` here for their policy, only
``PREFLIGHT_RAM_ACTIONS`` (docs/deploy.md grants them to the deployer).
"""

from __future__ import annotations

from alibabacloud_vpc20160428 import models as vpc_models
from alibabacloud_vpc20160428.client import Client as VpcClient

from gwlb_fleet.alibaba.tea import RetryPolicy, SetupApi, TeaApi, setup_calls
from gwlb_fleet.settings import Settings

PREFLIGHT_CALLS = {
    **setup_calls(vpc_models, "DescribeRouteTableList", "DescribeRouteEntryList"),  # F-VPC-3, F-VPC-1
    # the SDK spells vSwitch as one word: describe_vswitches, DescribeVSwitchesRequest (F-VPC-3)
    "DescribeVSwitches": ("describe_vswitches_with_options", vpc_models.DescribeVSwitchesRequest),
}
PREFLIGHT_RAM_ACTIONS: frozenset[str] = frozenset(f"vpc:{action}" for action in PREFLIGHT_CALLS)

# F-VPC-1: the next hop types that reach a GWLB endpoint (a route target group's members are
# GWLB endpoints in active/standby).
GWLB_ENDPOINT_HOP_TYPES: frozenset[str] = frozenset({"GatewayLoadBalancerEndpoint", "RouteTargetGroup"})


def preflight_api(settings: Settings, retry_policy: RetryPolicy | None = None) -> SetupApi:
    return SetupApi(TeaApi.from_settings("vpc", settings, VpcClient, retry_policy), PREFLIGHT_CALLS)
