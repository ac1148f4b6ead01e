"""EcsPort over alibabacloud_ecs20140526: the instances' state, zone and addresses.

An appliance has a management interface (the primary ENI) and a data interface (a secondary ENI,
where the GWLB sends Geneve). A single-NIC appliance (a Linux NVA in the lab) uses its primary
address for both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient

from gwlb_fleet.alibaba.tea import RetryPolicy, SetupApi, TeaApi, body_of, setup_calls
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import PermanentError
from gwlb_fleet.ports import EcsInstance, NetworkInterface
from gwlb_fleet.settings import Settings

RAM_ACTIONS: frozenset[str] = frozenset({"ecs:DescribeInstances", "ecs:DescribeNetworkInterfaces"})

IDS_PER_CALL = 100  # InstanceIds takes a JSON array of at most 100
PAGE_SIZE = 100  # DescribeInstances; also DescribeNetworkInterfaces' MaxResults, 10..500 (F-ECS-1)
MAX_PAGES = 20


class EcsAdapter:
    def __init__(self, api: TeaApi, region: str) -> None:
        self.api = api
        self.region = region

    @classmethod
    def from_settings(cls, settings: Settings, retry_policy: RetryPolicy | None = None) -> EcsAdapter:
        return cls(TeaApi.from_settings("ecs", settings, EcsClient, retry_policy), settings.region)

    def describe_instances(self, instance_ids: Sequence[str], deadline: Deadline) -> list[EcsInstance]:
        ids = list(dict.fromkeys(instance_ids))  # unique, in order
        found: list[EcsInstance] = []
        for start in range(0, len(ids), IDS_PER_CALL):
            found.extend(self._describe(ids[start : start + IDS_PER_CALL], deadline))
        return found

    def network_interfaces(self, instance_id: str, deadline: Deadline) -> list[NetworkInterface]:
        """F-ECS-1: DescribeNetworkInterfaces by InstanceId, every page."""
        found: list[NetworkInterface] = []
        next_token: str | None = None
        for _ in range(MAX_PAGES):
            request = ecs_models.DescribeNetworkInterfacesRequest(
                region_id=self.region, instance_id=instance_id, max_results=PAGE_SIZE, next_token=next_token
            )
            body = body_of(
                self.api.call(
                    "DescribeNetworkInterfaces",
                    self.api.client.describe_network_interfaces_with_options,
                    request,
                    deadline=deadline,
                )
            )
            sets = body.network_interface_sets
            found.extend(
                _eni(item) for item in (sets.network_interface_set if sets is not None else None) or []
            )
            next_token = body.next_token
            if not next_token:
                return [eni for eni in found if eni.instance_id == instance_id]
        raise PermanentError(
            f"DescribeNetworkInterfaces did not end after {MAX_PAGES} pages", code="Paging", service="ecs"
        )

    def _describe(self, ids: list[str], deadline: Deadline) -> list[EcsInstance]:
        found: list[EcsInstance] = []
        next_token: str | None = None
        for _ in range(MAX_PAGES):
            request = ecs_models.DescribeInstancesRequest(
                region_id=self.region,
                instance_ids=json.dumps(ids),
                max_results=PAGE_SIZE,
                next_token=next_token,
            )
            body = body_of(
                self.api.call(
                    "DescribeInstances",
                    self.api.client.describe_instances_with_options,
                    request,
                    deadline=deadline,
                )
            )
            instances = body.instances.instance if body.instances is not None else None
            found.extend(_instance(item) for item in instances or [])
            next_token = body.next_token
            if not next_token:
                return found
        raise PermanentError(
            f"DescribeInstances did not end after {MAX_PAGES} pages", code="Paging", service="ecs"
        )


def _instance(item: Any) -> EcsInstance:
    interfaces = item.network_interfaces.network_interface if item.network_interfaces is not None else None
    interfaces = list(interfaces or [])
    private_ip = _primary_address(item, interfaces)
    secondary = [eni for eni in interfaces if eni.type == "Secondary" and eni.primary_ip_address]
    return EcsInstance(
        instance_id=str(item.instance_id),
        status=str(item.status or ""),
        private_ip=private_ip,
        zone=str(item.zone_id or ""),
        data_ip=str(secondary[0].primary_ip_address) if secondary else private_ip,
    )


def _primary_address(item: Any, interfaces: list[Any]) -> str:
    vpc = item.vpc_attributes
    addresses = vpc.private_ip_address.ip_address if vpc is not None and vpc.private_ip_address else None
    if addresses:
        return str(addresses[0])
    primary = [eni for eni in interfaces if eni.type == "Primary" and eni.primary_ip_address]
    return str(primary[0].primary_ip_address) if primary else ""


def _eni(item: Any) -> NetworkInterface:
    attachment = item.attachment
    index = attachment.device_index if attachment is not None else None
    return NetworkInterface(
        eni_id=str(item.network_interface_id),
        instance_id=str(item.instance_id or ""),
        type="Primary" if item.type == "Primary" else "Secondary",
        private_ip=str(item.private_ip_address or ""),  # F-ECS-1: PrivateIpAddress, not PrimaryIpAddress
        status=str(item.status or ""),
        device_index=int(index) if index is not None else None,
        vswitch_id=str(item.v_switch_id or ""),
    )


# --- preflight (gwlb-fleet preflight, the deployer's credentials; read only, not in the functions'
# policy) ---------------------------------------------------------------------------------------------

PREFLIGHT_CALLS = setup_calls(
    ecs_models,
    "DescribeSecurityGroupAttribute",  # F-ECS-4
    "DescribeInstanceTypes",  # F-ECS-2, F-ECS-3
)
PREFLIGHT_RAM_ACTIONS: frozenset[str] = frozenset(f"ecs:{action}" for action in PREFLIGHT_CALLS)


def preflight_api(settings: Settings, retry_policy: RetryPolicy | None = None) -> SetupApi:
    return SetupApi(TeaApi.from_settings("ecs", settings, EcsClient, retry_policy), PREFLIGHT_CALLS)
