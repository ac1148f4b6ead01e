"""ECS 2014-05-26 on the local endpoint: DescribeInstances (query string; ``InstanceIds`` is one
JSON array) and DescribeNetworkInterfaces (F-ECS-1: ``RegionId`` required, ``Type``
Primary|Secondary, ``NetworkInterfaceId.N`` 1..100, ``MaxResults``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gwlb_fleet.alibaba.fakes.ecs import FakeEcs
from gwlb_lab.api.params import Params

PRODUCT = "ecs"
VERSION = "2014-05-26"


def describe_instances(ecs: FakeEcs, p: Params) -> dict[str, Any]:
    p.required("RegionId")
    return ecs.api_describe_instances(
        p.json_strings("InstanceIds"), p.integer("MaxResults", 10), p.text("NextToken")
    )


def describe_network_interfaces(ecs: FakeEcs, p: Params) -> dict[str, Any]:
    p.required("RegionId")  # F-ECS-1
    return ecs.api_describe_network_interfaces(
        p.text("InstanceId"),
        p.text("Type"),
        p.strings("NetworkInterfaceId"),
        p.integer("MaxResults", 10),
        p.text("NextToken"),
    )


def describe_security_group_attribute(ecs: FakeEcs, p: Params) -> dict[str, Any]:
    p.required("RegionId")  # F-ECS-4
    return ecs.api_describe_security_group_attribute(
        p.required("SecurityGroupId"), p.text("Direction"), p.integer("MaxResults", 500), p.text("NextToken")
    )


HANDLERS: dict[str, Callable[[FakeEcs, Params], dict[str, Any]]] = {
    "DescribeInstances": describe_instances,
    "DescribeNetworkInterfaces": describe_network_interfaces,
    "DescribeSecurityGroupAttribute": describe_security_group_attribute,
    "DescribeInstanceTypes": lambda ecs, p: ecs.api_describe_instance_types(
        p.strings("InstanceTypes"), p.integer("MaxResults", 1600)
    ),
}
