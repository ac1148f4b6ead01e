"""The lab cloud's own parts: CloudMonitor's alarm evaluation, FC's at-least-once invocation,
ESS's health replacement, the failover measurement, and telling a live process from its zombie."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gwlb_fleet.alibaba.fakes.cms import FakeCms
from gwlb_fleet.alibaba.fakes.ess import FakeEss
from gwlb_fleet.clock import FakeClock
from gwlb_fleet.events import AlarmEvent, parse_event
from gwlb_fleet.ports import MetricPoint
from gwlb_lab import netns
from gwlb_lab.cloud.alarms import AlarmEvaluator, aggregate
from gwlb_lab.cloud.functions import FunctionRunner
from gwlb_lab.scenario import failover_time

GROUP = {"groupId": "asg-1"}
INSTANCE_SERIES = {"groupId": "asg-1", "instanceId": "i-1"}


def _alarms(
    threshold: float = 24, times: int = 2, period_s: int = 10
) -> tuple[FakeCms, AlarmEvaluator, FakeClock]:
    cms, clock = FakeCms(contact_groups=["ops"]), FakeClock(1_000_000.0)
    # as gwlb-fleet setup puts it (F-CMS-4): symbols, Period 60 s, which the lab runs in period_s
    cms.api_put_custom_metric_rule(
        {
            "RuleId": "scale-out",
            "RuleName": "gwlb-fleet-scale-out-flows",
            "MetricName": "ActiveFlows",
            "Resources": '[{"groupId":0,"dimension":"groupId=asg-1"}]',
            "ContactGroups": "ops",
            "ComparisonOperator": ">",
            "Threshold": f"{threshold:g}",
            "Statistics": "Average",
            "EvaluationCount": str(times),
            "Level": "CRITICAL",
            "Period": "60",
        }
    )
    return cms, AlarmEvaluator(cms, clock=clock, time_scale=period_s / 60), clock


def _point(
    cms: FakeCms, clock: FakeClock, appliance: str, value: float, group: str = "asg-1", app_group: int = 0
) -> None:
    """As an agent publishes it: its own series and the group's series (F-CMS-19)."""
    for dimensions in ({"groupId": group, "instanceId": appliance}, {"groupId": group}):
        cms.points.append(MetricPoint("ActiveFlows", value, dimensions, int(clock.now * 1000), app_group))


# --- CloudMonitor -------------------------------------------------------------------------------------


def _alarm(event: dict[str, Any]) -> Any:
    """The alarm the scale function reads from the lab's event (gwlb_fleet.events parses it)."""
    parsed = parse_event(event)
    assert isinstance(parsed, AlarmEvent)
    return parsed.alarm


def test_a_rule_without_points_has_insufficient_data_and_sends_nothing() -> None:
    _, alarms, _ = _alarms()
    assert alarms.evaluate() == []
    assert alarms.snapshot()[0]["state"] == "INSUFFICIENT_DATA"


def test_alert_needs_times_breaching_periods_in_a_row_then_ok_is_sent_once() -> None:
    cms, alarms, clock = _alarms(threshold=24, times=2, period_s=10)
    sent: list[tuple[str, str]] = []
    for values in ([30, 40], [30, 10], [50, 40], [50, 40], [50, 40], [1, 3], [1, 3]):
        clock.now += 5  # points in the middle of each period
        for n, value in enumerate(values):
            _point(cms, clock, f"i-{n}", value)
        clock.now += 5
        sent += [(n.state, _alarm(n.event("cn-hangzhou")).value) for n in alarms.evaluate()]
    # 35 breaches, 20 does not (the run restarts), 45 and 45 make two in a row: ALERT, once
    # (silence: a day by default); 2 ends it: OK, once.
    assert sent == [("ALERT", 45.0), ("OK", 2.0)]


def test_the_group_statistic_is_the_mean_of_each_appliances_mean() -> None:
    assert aggregate("Average", [[10, 30], [40]]) == 30  # not the mean of all points (26.7)
    assert aggregate("Maximum", [[1, 5], [3]]) == 5


def test_points_of_another_group_or_outside_the_period_do_not_count() -> None:
    cms, alarms, clock = _alarms(times=1, period_s=10)
    _point(cms, clock, "i-1", 99)  # evaluated 20 s later: outside the period
    clock.now += 20
    _point(cms, clock, "i-2", 99, group="asg-other")
    _point(cms, clock, "i-3", 5)
    assert alarms.evaluate() == []
    assert alarms.snapshot()[0]["state"] == "OK" and alarms.snapshot()[0]["value"] == 5


def test_an_alarm_event_has_the_fields_the_scale_function_reads() -> None:
    cms, alarms, clock = _alarms(times=1)
    clock.now += 60
    _point(cms, clock, "i-1", 30)
    (notification,) = alarms.evaluate()
    alarm = _alarm(notification.event("cn-hangzhou"))
    assert alarm.rule_name == "gwlb-fleet-scale-out-flows" and alarm.alerting
    assert alarm.dimensions == {"groupId": "asg-1"} and alarm.value == 30.0


# --- Function Compute ---------------------------------------------------------------------------------


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the time limit"
        time.sleep(0.01)


def test_a_failed_invocation_is_retried_with_the_same_bytes_until_it_succeeds() -> None:
    seen: list[bytes] = []
    lock = threading.Lock()

    def flaky(payload: bytes, context: Any) -> dict[str, Any]:
        with lock:
            seen.append(payload)
            if len(seen) < 3:
                raise RuntimeError("Throttling")
        assert context.get_remaining_time_in_millis() > 0
        return {"ok": True}

    runner = FunctionRunner({"scale": flaky}, timeout_s=5, retry_delays_s=(0.01,))
    runner.start()
    try:
        runner.submit("scale", b'{"id": 1}', "alarm")
        _wait(lambda: runner.counts["scale ok"] == 1)
    finally:
        runner.stop()
    assert seen == [b'{"id": 1}'] * 3
    assert runner.counts["scale error"] == 2 and runner.dead_letters == []
    assert [r["attempt"] for r in runner.recent] == [1, 2, 3]


def test_an_event_that_fails_every_attempt_becomes_a_dead_letter_with_its_error() -> None:
    def broken(payload: bytes, context: Any) -> dict[str, Any]:
        raise ValueError("bad event")

    runner = FunctionRunner({"health": broken}, timeout_s=5, attempts=4, retry_delays_s=(0.01,))
    runner.start()
    try:
        runner.submit("health", json.dumps({"triggerName": "t"}).encode(), "timer")
        _wait(lambda: runner.dead_letters)
    finally:
        runner.stop()
    (letter,) = runner.dead_letters
    assert letter["attempts"] == 4 and letter["error"] == "ValueError: bad event"
    assert letter["event"] == "timer t"


def test_an_unknown_function_is_refused_at_submit() -> None:
    with pytest.raises(KeyError, match="nope"):
        FunctionRunner({}, timeout_s=1).submit("nope", b"{}", "timer")


# --- ESS's health replacement -----------------------------------------------------------------------


def test_ess_removes_an_unhealthy_instance_through_the_hook_and_keeps_the_desired_capacity() -> None:
    ess = FakeEss()
    ess.create_group("asg-1", min_size=2, max_size=3, desired=2)
    hook = ess.add_hook("asg-1", "SCALE_IN")
    sick = sorted(ess.groups["asg-1"].instances)[0]
    assert ess.replace_unhealthy("asg-1") == ""  # all healthy: nothing to do
    ess.api_set_instance_health(sick, "Unhealthy")

    removal = ess.replace_unhealthy("asg-1")
    assert removal and ess.groups["asg-1"].instances[sick].lifecycle_state == "Removing:Wait"
    assert ess.replace_unhealthy("asg-1") == ""  # one activity at a time
    (action,) = ess.pending_actions("asg-1")
    ess.api_complete_lifecycle_action(hook.hook_id, action.token, "CONTINUE")
    assert sick not in ess.groups["asg-1"].instances and ess.groups["asg-1"].desired == 2

    launch = ess.replace_unhealthy("asg-1")  # back to the desired capacity
    assert launch and len(ess.groups["asg-1"].instances) == 2
    assert "the desired capacity" in ess.activities[launch].description


# --- the failover measurement ---------------------------------------------------------------------------


def test_failover_lasts_until_the_first_probe_of_a_lasting_run_of_successes() -> None:
    kill = 100.0
    probes = [
        (99.5, 99.6, True),
        (100.2, 101.2, False),
        (100.5, 101.5, False),
        (101.0, 101.1, True),
        (101.3, 102.3, False),
        *((101.6 + 0.5 * n, 101.7 + 0.5 * n, True) for n in range(10)),
    ]
    seconds, lost = failover_time(probes, kill, streak_s=3.0)
    assert seconds == pytest.approx(1.6) and lost == 3  # the success at 101.0 did not last


def test_failover_is_zero_without_a_failure_and_unknown_without_recovery() -> None:
    assert failover_time([(101.0, 101.1, True)], 100.0) == (0.0, 0)
    assert failover_time([(101.0, 102.0, False), (102.0, 102.1, True)], 100.0) == (None, 1)


# --- processes ---------------------------------------------------------------------------------------


def test_a_zombie_is_not_a_running_process() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        _wait(lambda: netns.start_time(pid) is None)  # exited, not yet reaped: a zombie
        assert os.path.exists(f"/proc/{pid}")
    finally:
        os.waitpid(pid, 0)
    assert netns.start_time(os.getpid()) is not None


def test_a_rule_in_an_application_group_counts_only_that_groups_points() -> None:
    """F-CMS-11: a custom rule with GroupId N reads the points published with GroupId N; the
    same metric and dimensions published with GroupId 0 (an agent without group_id) do not count."""
    cms, alarms, clock = _alarms(times=1, period_s=10)
    group_id = cms.api_create_monitor_group({"GroupName": "gwlb-fleet"})["GroupId"]
    params = dict(
        cms.rules["scale-out"],
        GroupId=str(group_id),
        Resources=f'[{{"groupId":{group_id},"dimension":"groupId=asg-1"}}]',
    )
    cms.api_put_custom_metric_rule(params)
    clock.now += 5
    _point(cms, clock, "i-1", 99)  # no application group: not this rule's
    _point(cms, clock, "i-2", 5, app_group=group_id)
    clock.now += 5
    assert alarms.evaluate() == []
    assert alarms.snapshot()[0]["value"] == 5
    clock.now += 5
    _point(cms, clock, "i-2", 99, app_group=group_id)
    clock.now += 5
    [alert] = alarms.evaluate()
    assert alert.state == "ALERT" and alert.value == 99


def test_the_agents_config_carries_the_group_setup_made(tmp_path: Path) -> None:
    """The lab writes `gwlb-fleet setup`'s GroupId into each appliance agent's [cloudmonitor]
    section (F-CMS-11): the agent loads it and publishes with it."""
    import tomllib

    from gwlb_agent.config import load_config
    from gwlb_lab.cloud.appliances import Appliance, agent_toml
    from gwlb_lab.cloud.config import CloudConfig

    config = CloudConfig(run_dir=tmp_path, ns_prefix="t-")
    appliance = Appliance(1, "i-1", "cn-hangzhou-a", "10.1.0.11", "t-a1", "007")
    text = agent_toml(config, appliance, tmp_path / "policy.toml", monitor_group_id=3000001)
    data = tomllib.loads(text)
    assert data["cloudmonitor"]["group_id"] == 3000001
    secrets = {
        "GWLB_AGENT_FLOW_LOG__ACCESS_KEY_SECRET": "x",
        "GWLB_AGENT_CLOUDMONITOR__ACCESS_KEY_SECRET": "x",
    }
    assert load_config(None, data, secrets).cloudmonitor.group_id == 3000001


def test_a_custom_rule_matches_only_the_series_whose_dimension_string_is_its_own() -> None:
    """F-CMS-19: ``groupId=asg-1`` is not a subset match of {groupId, instanceId}; the per-instance
    series matches a rule only with its full, key-ordered string."""
    cms, alarms, clock = _alarms(times=1, period_s=10)
    clock.now += 5
    cms.points.append(
        MetricPoint("ActiveFlows", 99, {"groupId": "asg-1", "instanceId": "i-1"}, int(clock.now * 1000), 0)
    )
    clock.now += 5
    assert alarms.evaluate() == [] and alarms.snapshot()[0]["state"] == "INSUFFICIENT_DATA"
    for dimension, fires in (("instanceId=i-1&groupId=asg-1", False), ("groupId=asg-1&instanceId=i-1", True)):
        cms.api_put_custom_metric_rule(
            dict(cms.rules["scale-out"], Resources=f'[{{"groupId":0,"dimension":"{dimension}"}}]')
        )
        clock.now += 5
        cms.points.append(MetricPoint("ActiveFlows", 99, INSTANCE_SERIES, int(clock.now * 1000), 0))
        clock.now += 5
        assert [n.state for n in alarms.evaluate()] == (["ALERT"] if fires else [])
