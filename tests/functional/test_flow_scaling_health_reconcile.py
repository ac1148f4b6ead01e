"""Scaling, health and reconcile over the fakes, through the real handlers."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import ScalingConflict
from gwlb_fleet.panos import bootstrap
from gwlb_fleet.state.records import GroupRecord
from tests.functional.world import GROUP, SERVER_GROUP, World


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return World(tmp_path, monkeypatch, kind="vmseries", warmup_s=0)


def fleet_of(world: World, size: int) -> list[str]:
    ids = []
    for _ in range(size):  # one at a time, as alarms would: ESS spreads them over the zones
        world.cloud.ess.scale_by(GROUP, 1, Deadline.after(60))
        (new,) = [i for a in world.cloud.ess.pending_actions(GROUP) for i in a.instance_ids]
        world.deliver_hooks()
        world.boot(new)
        world.settle()
        ids.append(new)
    assert all(world.record(i).state == "in_service" for i in ids)
    return ids


# --- scale ----------------------------------------------------------------------------------------


def test_scale_out_on_alert_then_cooldown(world: World) -> None:
    fleet_of(world, 2)
    result = world.invoke("scale", world.alarm("gwlb-fleet-scale-out-flows"))
    assert result["decision"] == "out" and result["step"] == 1
    assert world.cloud.ess.groups[GROUP].desired == 3
    again = world.invoke("scale", world.alarm("gwlb-fleet-scale-out-flows"))  # a second alarm at once
    assert again["decision"] == "none" and "cooldown" in again["reason"]
    decision = next(e for e in world.audit.events if e.action == "scale_out" and e.outcome == "ok")
    assert decision.inputs["value"] == 100.0 and decision.inputs["alarm"] == "gwlb-fleet-scale-out-flows"


def test_the_same_alarm_event_twice_scales_once(world: World) -> None:
    fleet_of(world, 1)
    event = world.alarm("gwlb-fleet-scale-out-cpu", event_id="alarm-1")
    first = world.invoke("scale", event)
    world.clock.advance(3600)  # even long after, the same event id is the same decision
    second = world.invoke("scale", event)
    assert first == second and world.cloud.ess.groups[GROUP].desired == 2


def test_the_same_alarm_in_another_mns_message_scales_once(world: World) -> None:
    """F-FCT-5: a notification written twice (two MNS messages) is one decision, even past the
    cooldown; the audit keeps what the alarm said."""
    fleet_of(world, 1)
    event = world.alarm("gwlb-fleet-scale-out-flows", level="WARN", value=180000, batch_id="b-1")
    resent = {**event, "id": "another-message", "data": {**event["data"], "messageId": "ANOTHER"}}
    first = world.invoke("scale", event)
    world.clock.advance(3600)
    assert world.invoke("scale", resent) == first and world.cloud.ess.groups[GROUP].desired == 2
    decision = next(e for e in world.audit.events if e.action == "scale_out" and e.outcome == "ok")
    assert {k: decision.inputs[k] for k in ("alarm", "level", "previous_level", "metric", "value")} == {
        "alarm": "gwlb-fleet-scale-out-flows",
        "level": "WARN",
        "previous_level": "OK",
        "metric": "active_flows",
        "value": 180000.0,
    }
    assert decision.inputs["dimensions"] == {"groupId": GROUP} and decision.inputs["batch_id"] == "b-1"


def test_a_new_notification_of_the_same_rule_is_a_new_decision(world: World) -> None:
    fleet_of(world, 1)
    world.invoke("scale", world.alarm("gwlb-fleet-scale-out-flows", batch_id="b-1"))
    world.clock.advance(3600)
    assert (
        world.invoke("scale", world.alarm("gwlb-fleet-scale-out-flows", batch_id="b-2"))["decision"] == "out"
    )
    outs = [e for e in world.audit.events if e.action == "scale_out" and e.outcome == "ok"]
    assert [e.inputs["batch_id"] for e in outs] == ["b-1", "b-2"]


def test_scale_out_stops_at_the_maximum_and_ok_alarms_do_nothing(world: World) -> None:
    fleet_of(world, 4)
    assert world.invoke("scale", world.alarm("gwlb-fleet-scale-out-flows"))["decision"] == "none"
    assert "maximum" in world.audit.events[-1].reason
    world.clock.advance(1000)
    assert world.invoke("scale", world.alarm("gwlb-fleet-scale-out-flows", level="OK"))["decision"] == "none"
    assert world.invoke("scale", world.alarm("unrelated-alarm"))["decision"] == "none"
    assert world.cloud.ess.groups[GROUP].desired == 4


def test_ess_busy_with_another_activity_is_retried(world: World) -> None:
    fleet_of(world, 1)
    world.cloud.ess.scale_by(GROUP, 1, Deadline.after(60))  # an activity now waits on its hook
    with pytest.raises(ScalingConflict):
        world.invoke("scale", world.alarm("gwlb-fleet-scale-out-flows", event_id="busy"))
    assert world.cloud.ess.groups[GROUP].desired == 2
    # FC retries the same event once the activity is over; the decision is made then, once.
    for instance_id in [i for a in world.cloud.ess.pending_actions(GROUP) for i in a.instance_ids]:
        world.boot(instance_id)
    world.settle()
    world.clock.advance(200)
    assert (
        world.invoke("scale", world.alarm("gwlb-fleet-scale-out-flows", event_id="busy"))["decision"] == "out"
    )


def test_scale_in_picks_unhealthy_then_not_ready_then_fewest_flows_in_the_biggest_zone(world: World) -> None:
    ids = fleet_of(world, 4)
    flows = {ids[0]: 50, ids[1]: 5, ids[2]: 7, ids[3]: 90}
    for instance_id, count in flows.items():
        world.appliances.set(world.record(instance_id).data_ip, active_flows=count)
    world.clock.advance(1000)
    result = world.invoke("scale", world.alarm("gwlb-fleet-scale-in-flows"))
    zones = {i: world.record(i).zone for i in ids}
    # Zones are balanced 2/2: the fewest flows wins.
    assert result["victim"] == ids[1], (zones, flows)
    world.settle()
    assert ids[1] not in world.ess_instances() and world.record(ids[1]).state == "gone"
    world.consistent()
    # Next: an unhealthy member goes first whatever its flows.
    world.set_health(ids[3], "Unhealthy", "no answer on 8080")
    world.clock.advance(1000)
    assert world.invoke("scale", world.alarm("gwlb-fleet-scale-in-flows"))["victim"] == ids[3]
    world.settle()
    world.consistent()


def test_scale_in_keeps_zones_balanced(world: World) -> None:
    ids = fleet_of(world, 3)  # ESS spreads 2 + 1 over the two zones
    zones = {i: world.record(i).zone for i in ids}
    big = max(set(zones.values()), key=list(zones.values()).count)
    small_zone_id = next(i for i in ids if zones[i] != big)
    for instance_id in ids:  # the lone instance of the small zone carries the fewest flows
        world.appliances.set(
            world.record(instance_id).data_ip, active_flows=1 if instance_id == small_zone_id else 9
        )
    world.clock.advance(1000)
    victim = world.invoke("scale", world.alarm("gwlb-fleet-scale-in-flows"))["victim"]
    assert zones[victim] == big


def test_no_scale_in_while_an_appliance_launches_or_warms_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, kind="linux", warmup_s=600)
    fleet_of(world, 2)
    world.clock.advance(1000)
    world.cloud.ess.scale_by(GROUP, 1, Deadline.after(60))
    world.deliver_hooks()  # a third one launching
    result = world.invoke("scale", world.alarm("gwlb-fleet-scale-in-flows"))
    assert result["decision"] == "none" and "launching" in result["reason"]
    for instance_id in [i for a in world.cloud.ess.pending_actions(GROUP) for i in a.instance_ids]:
        world.boot(instance_id)
    world.settle()
    world.clock.advance(60)
    assert world.invoke("scale", world.alarm("gwlb-fleet-scale-in-flows"))["decision"] == "none"  # warming
    world.clock.advance(700)
    assert world.invoke("scale", world.alarm("gwlb-fleet-scale-in-flows"))["decision"] == "in"


def test_scale_in_stops_at_the_minimum(world: World) -> None:
    fleet_of(world, 1)
    world.cloud.ess.groups[GROUP].min_size = 1
    world.clock.advance(1000)
    assert world.invoke("scale", world.alarm("gwlb-fleet-scale-in-flows"))["decision"] == "none"


# --- health ---------------------------------------------------------------------------------------------


def test_two_unhealthy_members_are_each_replaced_as_themselves(world: World) -> None:
    ids = fleet_of(world, 4)
    sick = [ids[1], ids[3]]
    for instance_id in sick:
        world.set_health(instance_id, "Unhealthy", "timeout")
    for _ in range(2):
        assert world.invoke("health", world.timer())["replaced"] == []  # hysteresis
        world.clock.advance(20)
    result = world.invoke("health", world.timer())
    assert sorted(result["replaced"] + result["deferred"]) == sorted(sick)
    replaced = set(result["replaced"])
    assert replaced <= set(sick) and len(replaced) == 1  # 4 x 0.34: one at a time
    unhealthy_in_ess = {
        i.instance_id
        for i in world.cloud.ess.list_instances(GROUP, Deadline.after(5))
        if i.health_status == "Unhealthy"
    }
    assert unhealthy_in_ess == replaced  # the right ones, and only them
    for instance_id in ids:
        if instance_id not in sick:
            assert world.record(instance_id).replacing_since == 0.0


def test_a_blip_is_not_a_failure(world: World) -> None:
    ids = fleet_of(world, 2)
    world.set_health(ids[0], "Unhealthy")
    world.invoke("health", world.timer())
    world.clock.advance(20)
    world.invoke("health", world.timer())
    world.set_health(ids[0], "Healthy")
    world.clock.advance(20)
    world.invoke("health", world.timer())
    world.set_health(ids[0], "Unhealthy")
    world.clock.advance(20)
    assert world.invoke("health", world.timer())["replaced"] == []


def test_health_alarms_look_now_and_their_inputs_reach_the_audit(world: World) -> None:
    ids = fleet_of(world, 2)
    world.set_health(ids[0], "Unhealthy")
    for _ in range(world.settings.unhealthy_observations):
        alarm = world.alarm("gwlb-fleet-unhealthy-servers", metric="ServerGroupUnhealthyHostCount", value=1)
        world.invoke("health", alarm)
        world.clock.advance(world.settings.unhealthy_spacing_s + 1)
    replaced = next(e for e in world.audit.events if e.action == "replace_unhealthy" and e.outcome == "ok")
    assert replaced.instance_id == ids[0]
    assert (replaced.inputs["trigger"], replaced.inputs["level"], replaced.inputs["value"]) == (
        "alarm",
        "CRITICAL",
        1.0,
    )
    assert (
        replaced.inputs["namespace"] == "acs_gwlb"
        and replaced.inputs["metric"] == "ServerGroupUnhealthyHostCount"
    )


def test_an_alarm_not_named_for_health_checks_nothing(world: World) -> None:
    ids = fleet_of(world, 2)
    world.set_health(ids[0], "Unhealthy")
    result = world.invoke("health", world.alarm("gwlb-fleet-scale-out-flows"))
    assert result["reason"] == "not a health alarm" and world.record(ids[0]).unhealthy_seen == 0
    assert (world.audit.events[-1].action, world.audit.events[-1].outcome) == ("health_ignored", "skipped")


def test_a_recovered_health_alarm_clears_the_count(world: World) -> None:
    ids = fleet_of(world, 2)
    world.set_health(ids[0], "Unhealthy")
    world.invoke(
        "health", world.alarm("gwlb-fleet-unhealthy-servers", metric="ServerGroupUnhealthyHostCount")
    )
    assert world.record(ids[0]).unhealthy_seen == 1
    world.set_health(ids[0], "Healthy")
    world.clock.advance(60)
    world.invoke("health", world.alarm("gwlb-fleet-unhealthy-servers", level="OK"))
    assert world.record(ids[0]).unhealthy_seen == 0


def test_alarm_and_timer_at_the_same_moment_count_once(world: World) -> None:
    ids = fleet_of(world, 2)
    world.set_health(ids[0], "Unhealthy")
    for _ in range(3):
        world.invoke("health", world.timer())
        world.invoke("health", world.alarm("gwlb-fleet-unhealthy-servers", metric="UnHealthyServerCount"))
        world.clock.advance(5)
    assert world.record(ids[0]).unhealthy_seen == 1


# --- reconcile ------------------------------------------------------------------------------------------


def test_reconcile_releases_what_an_instance_terminated_without_a_hook_held(world: World) -> None:
    ids = fleet_of(world, 2)
    gone = ids[0]
    serial = world.record(gone).serial
    group = world.cloud.ess.groups[GROUP]
    del group.instances[gone]  # terminated behind our back (console, spot reclaim): no hook
    world.cloud.ecs.release(gone)
    result = world.invoke("reconcile", world.timer())
    assert gone in result["vanished"]
    world.settle()
    assert world.record(gone).state == "gone"
    assert not world.panorama.licensed(serial) and gone not in world.members()
    world.consistent()


def test_reconcile_repairs_members_devices_and_unregistered_instances(world: World) -> None:
    ids = fleet_of(world, 2)
    deadline = Deadline.after(60)
    stranger = world.cloud.ecs.launch("cn-hangzhou-h")  # an instance outside the scaling group
    world.cloud.gwlb.add_server(SERVER_GROUP, stranger.data_eni, stranger.data_ip, deadline)  # left behind
    world.cloud.gwlb.tick()
    lost = world.record(ids[1])
    world.cloud.gwlb.remove_server(SERVER_GROUP, lost.data_eni_id, lost.data_ip, deadline)  # lost
    for _ in range(5):
        world.cloud.gwlb.tick()
    world.panorama.add_firewall("007900055555", "10.0.9.9", connected=False)  # an orphan device + licence
    result = world.invoke("reconcile", world.timer())
    assert result["orphan_members"] == [stranger.data_eni]  # compared by ENI (F-GWLB-2)
    assert result["unregistered"] == [ids[1]]
    assert result["orphan_devices"] == ["007900055555"]
    # F-PAN-3: deactivated, but released only once the commit of the plugin's change ends OK
    assert world.panorama.licensed("007900055555")
    for _ in range(5):
        world.cloud.gwlb.tick()
    world.panorama.finish_jobs()
    assert not world.panorama.licensed("007900055555")
    assert stranger.instance_id not in world.members() and world.members()[ids[1]] == "Available"
    assert "007900055555" not in {d.serial for d in world.panorama.devices(deadline)}
    world.clock.advance(60)
    world.invoke("reconcile", world.timer())  # reads the commit's result and the plugin's list
    assert [e.outcome for e in world.audit.events if e.action == "repair_orphan_licence"] == ["ok"]
    points = {p.name for p in world.cloud.cms.points}
    assert {"gwlb_fleet_drift_orphan_members", "gwlb_fleet_drift_vanished"} <= points
    assert {"repair_orphan_member", "repair_unregistered", "repair_orphan_device"} <= set(
        world.audit.actions()
    )


def test_reconcile_adopts_an_instance_whose_hook_event_was_lost(world: World) -> None:
    fleet_of(world, 1)
    world.cloud.ess.scale_by(GROUP, 1, Deadline.after(60))
    (action,) = world.new_hook_actions()  # EventBridge lost it: never delivered
    (instance_id,) = action.instance_ids
    world.boot(instance_id)
    world.clock.advance(60)
    result = world.invoke("reconcile", world.timer())
    assert instance_id in result["adopted"]
    world.settle()
    assert world.record(instance_id).state == "in_service"
    assert world.ess_instances()[instance_id] == "InService"  # its hook was found and completed
    world.consistent()


def test_reconcile_renews_the_vm_auth_key_in_the_scaling_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(
        tmp_path,
        monkeypatch,
        kind="vmseries",
        scaling_configuration_id=f"asc-{GROUP}",
        bootstrap_panorama_server="10.0.0.5",
        panorama_template_stack="gwlb-stack",
        panorama_device_group="gwlb-fw",
    )
    world.invoke("reconcile", world.timer())
    user_data = world.cloud.ess.user_data[f"asc-{GROUP}"]
    init_cfg = bootstrap.parse(base64.b64decode(user_data).decode())
    assert init_cfg["vm-auth-key"] == world.panorama.vm_auth_keys[-1]
    assert init_cfg["panorama-server"] == "10.0.0.5" and init_cfg["op-command-modes"] == "jumbo-frame"
    assert init_cfg["tplname"] == "gwlb-stack" and init_cfg["dgname"] == "gwlb-fw"
    record = world.state.get_group(GROUP)
    assert isinstance(record, GroupRecord) and record.vm_auth_key_expires > world.clock()
    keys = len(world.panorama.vm_auth_keys)
    world.clock.advance(3600)
    world.invoke("reconcile", world.timer())
    assert len(world.panorama.vm_auth_keys) == keys  # not due yet
    events = [e for e in world.audit.events if e.action == "renew_vm_auth_key"]
    assert events and all(world.panorama.vm_auth_keys[-1] not in str(e.inputs) for e in events)


def test_a_throttled_scale_out_is_retried_by_fc_and_scales_once(world: World) -> None:
    from gwlb_fleet.errors import TransientError

    fleet_of(world, 1)
    event = world.alarm("gwlb-fleet-scale-out-flows", event_id="throttled")
    world.cloud.ess.fail_next = ["Throttling"]  # outlasting the adapter's retries: the call fails
    with pytest.raises(TransientError):
        world.invoke("scale", event)
    assert world.cloud.ess.groups[GROUP].desired == 1
    first = world.invoke("scale", event)  # FC's retry of the same event
    second = world.invoke("scale", event)  # and a duplicate delivery after it
    assert first == second and first["decision"] == "out"
    assert world.cloud.ess.groups[GROUP].desired == 2


def test_the_same_health_event_twice_counts_one_observation(world: World) -> None:
    ids = fleet_of(world, 2)
    world.set_health(ids[0], "Unhealthy")
    event = world.alarm("gwlb-fleet-unhealthy-servers", metric="UnHealthyServerCount", event_id="h-1")
    first = world.invoke("health", event)
    world.clock.advance(60)
    assert world.invoke("health", event) == first
    assert world.record(ids[0]).unhealthy_seen == 1


def test_every_decision_reaches_the_audit_log_with_its_inputs(world: World) -> None:
    fleet_of(world, 2)
    world.invoke("scale", world.alarm("gwlb-fleet-scale-out-flows", value=180000))
    world.invoke("scale", world.alarm("gwlb-fleet-scale-out-flows", value=190000))  # cooldown: skipped
    decisions = [e for e in world.audit.events if e.function == "scale"]
    assert [(e.action, e.outcome) for e in decisions] == [("scale_out", "ok"), ("scale_out", "skipped")]
    assert all(e.inputs.get("value") in (180000.0, 190000.0) and e.inputs.get("size") for e in decisions)
    assert all(e.correlation_id and e.scaling_group == GROUP for e in decisions)
