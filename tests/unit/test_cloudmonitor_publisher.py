"""The agent's CloudMonitor publisher: rates from counters, batches of at most 21, failures counted."""

from __future__ import annotations

import json

import pytest

from gwlb_agent.cloudmonitor import MAX_POINTS_PER_CALL, MetricsPublisher, batches
from gwlb_agent.metrics import Snapshot
from gwlb_fleet.alibaba.fakes.cms import FakeCms
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.ports import MetricPoint


def snapshot(packets: int, flows: int, drops: int = 0) -> Snapshot:
    return Snapshot(
        packets_in=packets,
        packets_out=packets - drops,
        bytes_in=packets * 100,
        bytes_out=(packets - drops) * 100,
        drops={"policy_deny": drops},
        flows_active=flows,
        flows_created=flows,
        records_emitted=0,
        records_exported=0,
        records_dropped=3,
        sink_errors=0,
        policy_generation=1,
        policy_reloads_failed=0,
        healthy=True,
        draining=False,
        health_reason="forwarding",
    )


def test_counters_become_rates_and_gauges_stay() -> None:
    sent: list[list[MetricPoint]] = []
    clock = [100.0]
    samples = iter([snapshot(1000, 10), snapshot(7000, 40, drops=60)])
    publisher = MetricsPublisher(
        lambda: next(samples),
        sent.append,
        {"instanceId": "i-1", "groupId": "asg-1"},
        interval=60,
        clock=lambda: clock[0],
        wall_clock=lambda: 1.7e9,
    )
    publisher.publish_once()
    clock[0] += 60
    publisher.publish_once()
    last = {p.name: p.value for p in sent[-1]}
    assert last["active_flows"] == 40
    assert last["packets_in_per_second"] == pytest.approx(100.0)
    assert last["drops_per_second"] == pytest.approx(1.0)
    assert last["flow_records_lost"] == 3 and last["healthy"] == 1.0
    own = [p for p in sent[-1] if p.dimensions == {"instanceId": "i-1", "groupId": "asg-1"}]
    assert len(own) == 8
    # F-CMS-19: active_flows once more in the scale rules' series, exactly {"groupId": <asg>}
    group = [p for p in sent[-1] if p.dimensions == {"groupId": "asg-1"}]
    assert [(p.name, p.value) for p in group] == [("active_flows", 40.0)]
    assert len(sent[-1]) == len(own) + len(group)
    assert all(p.time_ms == 1_700_000_000_000 for p in sent[-1])


def test_batches_never_exceed_what_cloudmonitor_takes() -> None:
    points = [MetricPoint(f"m{i}", float(i)) for i in range(50)]
    assert [len(b) for b in batches(points)] == [21, 21, 8]
    cms = FakeCms()
    for batch in batches(points):
        cms.put_custom_metrics(batch, Deadline.after(5))
    assert len(cms.points) == 50 and MAX_POINTS_PER_CALL == 21


def test_a_failed_publish_is_counted_and_the_next_one_goes_out() -> None:
    calls = []

    def flaky(points: list[MetricPoint]) -> None:
        calls.append(points)
        if len(calls) == 1:
            raise OSError("CloudMonitor unreachable")

    publisher = MetricsPublisher(lambda: snapshot(10, 1), flaky, {"instanceId": "i-1"})
    assert publisher.publish_once() == 0 and publisher.failures == 1
    assert publisher.publish_once() == 8 and publisher.published == 8


def test_points_carry_the_application_group_the_rules_address() -> None:
    """F-CMS-11: the scaling rules read the group `gwlb-fleet setup` made; the agent publishes
    every point with that GroupId (its [cloudmonitor] group_id), 0 only when none is configured."""
    sent: list[list[MetricPoint]] = []
    MetricsPublisher(
        lambda: snapshot(10, 1), sent.append, {"instanceId": "i-1"}, group_id=3000001
    ).publish_once()
    assert sent and {p.group_id for batch in sent for p in batch} == {3000001}
    unset: list[list[MetricPoint]] = []
    MetricsPublisher(lambda: snapshot(10, 1), unset.append, {"instanceId": "i-1"}).publish_once()
    assert {p.group_id for batch in unset for p in batch} == {0}


def test_the_group_series_is_exactly_what_the_scale_rules_name() -> None:
    """F-CMS-19: the rules' dimension string equals the group series' (no subset matching)."""
    from gwlb_agent.cloudmonitor import GROUP_DIMENSION, GROUP_SERIES_METRICS
    from gwlb_fleet.deploy import plan
    from gwlb_fleet.settings import Settings
    from gwlb_lab.cloud.alarms import dimension_string

    settings = Settings.model_validate(
        {
            "FLEET_REGION": "cn-hangzhou",
            "SCALING_GROUP_ID": "asg-1",
            "GWLB_SERVER_GROUP_ID": "sgp-1",
            "GWLB_LISTENER_ID": "lsn-1",
            "ALARM_CONTACT_GROUP": "ops",
        }
    )
    for rule in plan.scale_rules(settings, "7"):
        [resource] = json.loads(rule.params["Resources"])
        assert rule.params["MetricName"] in GROUP_SERIES_METRICS and resource["groupId"] == 7
        assert resource["dimension"] == dimension_string({GROUP_DIMENSION: "asg-1"})
