"""An in-memory ECS: instances with a state, a zone, a primary ENI (management) and, for
appliances with a data interface, a secondary ENI (device index 1). ESS's fake launches and
releases them here; DescribeNetworkInterfaces lists their ENIs (F-ECS-1) and the GWLB fake checks
an ``Eni`` member against them (F-GWLB-1).

Addresses are 10.0.x.y (primary) and 10.1.x.y (data) by default; ``private_ip_for`` and
``data_ip_for`` choose them instead (the lab gives each instance's data ENI its appliance
namespace's address)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

from gwlb_fleet.alibaba.fakes.openapi import FakeOpenApiService
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.ports import EcsInstance, NetworkInterface

MAX_IDS = 100
ENI_TYPES = ("Primary", "Secondary")  # F-ECS-1
ENI_PAGE = (10, 500)  # F-ECS-1 MaxResults


@dataclass
class FakeInstance:
    instance_id: str
    zone: str
    private_ip: str
    data_ip: str = ""  # the secondary ENI's address; "" = a single-NIC instance
    status: str = "Running"  # Pending | Starting | Running | Stopping | Stopped
    vswitch_id: str = "vsw-fake-mgmt"
    data_vswitch_id: str = "vsw-fake-data"

    @property
    def primary_eni(self) -> str:
        return f"eni-{self.instance_id[2:]}a"

    @property
    def data_eni(self) -> str:
        """The secondary ENI's id; "" for a single-NIC instance."""
        return f"eni-{self.instance_id[2:]}b" if self.data_ip else ""

    def enis(self) -> list[dict[str, Any]]:
        """DescribeNetworkInterfaces' NetworkInterfaceSet entries (F-ECS-1)."""
        found = [self._eni(self.primary_eni, "Primary", self.private_ip, self.vswitch_id, 0)]
        if self.data_ip:
            found.append(self._eni(self.data_eni, "Secondary", self.data_ip, self.data_vswitch_id, 1))
        return found

    def _eni(self, eni_id: str, kind: str, ip: str, vswitch: str, index: int) -> dict[str, Any]:
        return {
            "NetworkInterfaceId": eni_id,
            "InstanceId": self.instance_id,
            "Type": kind,
            "Status": "InUse",
            "PrivateIpAddress": ip,
            "PrivateIpSets": {"PrivateIpSet": [{"PrivateIpAddress": ip, "Primary": True}]},
            "VSwitchId": vswitch,
            "ZoneId": self.zone,
            "Attachment": {"InstanceId": self.instance_id, "DeviceIndex": index},
        }

    def wire(self) -> dict[str, Any]:
        interfaces = [
            {
                "NetworkInterfaceId": self.primary_eni,
                "Type": "Primary",
                "PrimaryIpAddress": self.private_ip,
                "MacAddress": "00:16:3e:00:00:01",
            }
        ]
        if self.data_ip:
            interfaces.append(
                {
                    "NetworkInterfaceId": self.data_eni,
                    "Type": "Secondary",
                    "PrimaryIpAddress": self.data_ip,
                    "MacAddress": "00:16:3e:00:00:02",
                }
            )
        return {
            "InstanceId": self.instance_id,
            "Status": self.status,
            "ZoneId": self.zone,
            "InstanceNetworkType": "vpc",
            "VpcAttributes": {"PrivateIpAddress": {"IpAddress": [self.private_ip]}},
            "NetworkInterfaces": {"NetworkInterface": interfaces},
        }


@dataclass
class FakeEcs(FakeOpenApiService):
    service: ClassVar[str] = "ecs"

    instances: dict[str, FakeInstance] = field(default_factory=dict)
    data_interface: bool = True  # launched instances get a secondary ENI (VM-Series); False: single NIC
    private_ip_for: Callable[[int], str] | None = None  # the n-th launch's primary address
    data_ip_for: Callable[[int], str] | None = None  # the n-th launch's data ENI address
    # What preflight reads (F-ECS-2/3/4/6), as the service answers it: each security group's rules
    # (Permissions.Permission[]) and DescribeInstanceTypes' entries by type.
    security_groups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    instance_types: dict[str, dict[str, Any]] = field(default_factory=dict)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    def launch(self, zone: str) -> FakeInstance:
        """A new instance, as ESS creates one for a scale-out."""
        with self._lock:
            n = next(self._numbers)
            private_ip = self.private_ip_for(n) if self.private_ip_for else f"10.0.{n // 250}.{n % 250 + 4}"
            instance = FakeInstance(
                instance_id=f"i-fake{n:08d}",
                zone=zone,
                private_ip=private_ip,
                data_ip=(self.data_ip_for(n) if self.data_ip_for else f"10.1.{n // 250}.{n % 250 + 4}")
                if self.data_interface
                else "",
            )
            self.instances[instance.instance_id] = instance
            return instance

    def release(self, instance_id: str) -> None:
        with self._lock:
            self.instances.pop(instance_id, None)

    # --- the API -------------------------------------------------------------------------------------

    def api_describe_instances(
        self, instance_ids: Sequence[str], max_results: int = 10, next_token: str = ""
    ) -> dict[str, Any]:
        with self._api("DescribeInstances"):
            if len(instance_ids) > MAX_IDS:
                raise self._fail("InvalidInstanceIds.ValueNotSupported", f"at most {MAX_IDS} instance ids")
            found = [self.instances[i] for i in dict.fromkeys(instance_ids) if i in self.instances]
            start = int(next_token or 0)
            end = start + max(1, int(max_results))
            return {
                "Instances": {"Instance": [instance.wire() for instance in found[start:end]]},
                "NextToken": str(end) if end < len(found) else "",
                "TotalCount": len(found),
            }

    def api_describe_network_interfaces(
        self,
        instance_id: str = "",
        type: str = "",
        network_interface_ids: Sequence[str] = (),
        max_results: int = 10,
        next_token: str = "",
    ) -> dict[str, Any]:
        """F-ECS-1 (RegionId is the endpoint's check)."""
        with self._api("DescribeNetworkInterfaces"):
            if type and type not in ENI_TYPES:
                raise self._fail("InvalidParameter", f"Type {type!r} is not one of {', '.join(ENI_TYPES)}")
            if len(network_interface_ids) > MAX_IDS:
                raise self._fail("InvalidParameter", f"at most {MAX_IDS} NetworkInterfaceId")
            low, high = ENI_PAGE
            size = min(max(int(max_results), low), high)  # the SDK model: below 10 is 10, above 500 is 500
            found = [
                eni
                for instance in self.instances.values()
                if not instance_id or instance.instance_id == instance_id
                for eni in instance.enis()
                if (not type or eni["Type"] == type)
                and (not network_interface_ids or eni["NetworkInterfaceId"] in network_interface_ids)
            ]
            start = int(next_token or 0)
            end = start + size
            return {
                "NetworkInterfaceSets": {"NetworkInterfaceSet": found[start:end]},
                "NextToken": str(end) if end < len(found) else "",
                "TotalCount": len(found),
            }

    def api_describe_security_group_attribute(
        self, group_id: str, direction: str, max_results: int, next_token: str
    ) -> dict[str, Any]:
        """F-ECS-4: Direction egress|ingress|all, MaxResults 10..1000; a missing group is
        ``InvalidSecurityGroupId.NotFound`` (F-ECS-6)."""
        with self._api("DescribeSecurityGroupAttribute"):
            if direction not in ("", "egress", "ingress", "all"):
                raise self._fail("InvalidParameter", f"Direction {direction!r}")
            if not 10 <= max_results <= 1000:
                raise self._fail("InvalidParameter", f"MaxResults {max_results}: 10 to 1000")
            if group_id not in self.security_groups:
                raise self._fail(
                    "InvalidSecurityGroupId.NotFound", "The specified SecurityGroupId does not exist."
                )
            rules = [
                r
                for r in self.security_groups[group_id]
                if direction in ("", "all") or r.get("Direction", "ingress") == direction
            ]
            start = int(next_token or 0)
            end = start + max_results
            return {
                "SecurityGroupId": group_id,
                "Permissions": {"Permission": rules[start:end]},
                "NextToken": str(end) if end < len(rules) else "",
            }

    def api_describe_instance_types(self, types: Sequence[str], max_results: int) -> dict[str, Any]:
        """F-ECS-2: InstanceTypes.N, 1..10 of them; MaxResults at most 1600."""
        with self._api("DescribeInstanceTypes"):
            if len(types) > 10:
                raise self._fail("InvalidParameter", "InstanceTypes: at most 10")
            if not 1 <= max_results <= 1600:
                raise self._fail("InvalidParameter", f"MaxResults {max_results}: at most 1600")
            rows = [t for name, t in self.instance_types.items() if not types or name in types]
            return {"InstanceTypes": {"InstanceType": rows[:max_results]}, "NextToken": ""}

    def eni(self, eni_id: str) -> dict[str, Any] | None:
        """The ENI with this id, as DescribeNetworkInterfaces lists it (the GWLB fake's check)."""
        with self._lock:
            for instance in self.instances.values():
                for eni in instance.enis():
                    if eni["NetworkInterfaceId"] == eni_id:
                        return eni
            return None

    # --- EcsPort --------------------------------------------------------------------------------------------

    def describe_instances(self, instance_ids: Sequence[str], deadline: Deadline) -> list[EcsInstance]:
        ids = list(dict.fromkeys(instance_ids))
        found: list[EcsInstance] = []
        for start in range(0, len(ids), MAX_IDS):
            token = ""
            while True:
                answer = self._port(
                    "DescribeInstances",
                    partial(self.api_describe_instances, ids[start : start + MAX_IDS], 100, token),
                )
                found.extend(_ecs_instance(item) for item in answer["Instances"]["Instance"])
                token = answer["NextToken"]
                if not token:
                    break
        return found

    def network_interfaces(self, instance_id: str, deadline: Deadline) -> list[NetworkInterface]:
        found: list[NetworkInterface] = []
        token = ""
        while True:
            answer = self._port(
                "DescribeNetworkInterfaces",
                partial(self.api_describe_network_interfaces, instance_id, "", (), 100, token),
            )
            found.extend(
                _network_interface(item) for item in answer["NetworkInterfaceSets"]["NetworkInterfaceSet"]
            )
            token = answer["NextToken"]
            if not token:
                return found


def _network_interface(item: dict[str, Any]) -> NetworkInterface:
    attachment = item.get("Attachment") or {}
    index = attachment.get("DeviceIndex")
    return NetworkInterface(
        eni_id=item["NetworkInterfaceId"],
        instance_id=item.get("InstanceId", ""),
        type="Primary" if item["Type"] == "Primary" else "Secondary",
        private_ip=item.get("PrivateIpAddress", ""),
        status=item.get("Status", ""),
        device_index=int(index) if index is not None else None,
        vswitch_id=item.get("VSwitchId", ""),
    )


def _ecs_instance(item: dict[str, Any]) -> EcsInstance:
    interfaces = item["NetworkInterfaces"]["NetworkInterface"]
    private_ip = item["VpcAttributes"]["PrivateIpAddress"]["IpAddress"][0]
    secondary = [eni["PrimaryIpAddress"] for eni in interfaces if eni["Type"] == "Secondary"]
    return EcsInstance(
        instance_id=item["InstanceId"],
        status=item["Status"],
        private_ip=private_ip,
        zone=item["ZoneId"],
        data_ip=secondary[0] if secondary else private_ip,
    )
