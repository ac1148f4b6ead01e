"""An in-memory ECS: instances with a state, a zone, a primary (management) address and, for
appliances with a data interface, a secondary ENI. ESS's fake launches and releases them here.

Addresses are 10.0.x.y (primary) and 10.1.x.y (data) by default; ``private_ip_for`` chooses the
primary address instead (the lab gives each instance its appliance namespace's address)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

from gwlb_fleet.alibaba.fakes.openapi import FakeOpenApiService
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.ports import EcsInstance

MAX_IDS = 100


@dataclass
class FakeInstance:
    instance_id: str
    zone: str
    private_ip: str
    data_ip: str = ""  # the secondary ENI's address; "" = a single-NIC instance
    status: str = "Running"  # Pending | Starting | Running | Stopping | Stopped

    def wire(self) -> dict[str, Any]:
        interfaces = [
            {
                "NetworkInterfaceId": f"eni-{self.instance_id[2:]}a",
                "Type": "Primary",
                "PrimaryIpAddress": self.private_ip,
                "MacAddress": "00:16:3e:00:00:01",
            }
        ]
        if self.data_ip:
            interfaces.append(
                {
                    "NetworkInterfaceId": f"eni-{self.instance_id[2:]}b",
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
                data_ip=f"10.1.{n // 250}.{n % 250 + 4}" if self.data_interface else "",
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
