"""ECS 2014-05-26 on the local endpoint: DescribeInstances (query string; ``InstanceIds`` is one
JSON array)."""

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


HANDLERS: dict[str, Callable[[FakeEcs, Params], dict[str, Any]]] = {"DescribeInstances": describe_instances}
