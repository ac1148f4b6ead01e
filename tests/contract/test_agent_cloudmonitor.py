"""The agent's CloudMonitor publisher with the real SDK against the local OpenAPI server."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gwlb_agent.cloudmonitor import monitor_publisher
from gwlb_agent.config import CloudMonitorSettings
from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.ports import MetricPoint
from gwlb_lab.api import LocalOpenApi


def publisher(api: LocalOpenApi, **more: Any) -> Callable[[list[MetricPoint]], None]:
    """The agent's publisher pointed at the local endpoint, with test keys."""
    return monitor_publisher(
        CloudMonitorSettings(
            region="cn-hangzhou",
            endpoint=api.endpoint,
            protocol="http",
            access_key_id="LTAI-test",
            access_key_secret="secret-test",
            **more,
        )
    )  # type: ignore[arg-type]


def test_points_arrive_as_put_custom_metric_calls_of_at_most_21() -> None:
    cloud = FakeCloud()
    with LocalOpenApi(cloud) as api:
        publish = publisher(api)
        points = [
            MetricPoint(
                f"active_flows_{i}", float(i), {"instanceId": "i-1", "groupId": "asg-1"}, 1_700_000_000_000
            )
            for i in range(21)
        ]
        publish(points)
        calls = [r for r in api.requests if r.action == "PutCustomMetric"]
    assert len(calls) == 1
    assert len(cloud.cms.points) == 21
    first = calls[0].params
    assert first["MetricList.1.MetricName"] == "active_flows_0"
    assert json.loads(first["MetricList.1.Dimensions"]) == {"instanceId": "i-1", "groupId": "asg-1"}
    assert "secret-test" not in json.dumps(first)


def test_the_group_id_goes_on_the_wire_as_put_custom_metric_group_id() -> None:
    """F-CMS-12: MetricList.N.GroupId is the application group the scaling rules address (F-CMS-11)."""
    cloud = FakeCloud()
    with LocalOpenApi(cloud) as api:
        publish = publisher(api, group_id=3000001)
        publish([MetricPoint("active_flows", 5.0, {"groupId": "asg-1"}, 1_700_000_000_000, 3000001)])
        [call] = [r for r in api.requests if r.action == "PutCustomMetric"]
    assert call.params["MetricList.1.GroupId"] == "3000001"
    assert [p.group_id for p in cloud.cms.points] == [3000001]
