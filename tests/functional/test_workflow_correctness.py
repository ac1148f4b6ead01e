"""Issue 12, part C over the fakes: the heartbeat budget of a lifecycle action (F-ESS-6), the
appliance's data ENI as the GWLB member (F-GWLB-1/2, F-ECS-1), the Panorama commit's result and
partial commit by admin (F-PAN-1/2), and the licence release read back from the plugin (F-PAN-3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gwlb_fleet.alibaba.errors import ApiError
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import LimitExceeded
from gwlb_fleet.panos.fakes import PanoramaConfig
from tests.functional.world import GROUP, SERVER_GROUP, World, eni_of


def scale_out(world: World) -> str:
    world.cloud.ess.scale_by(GROUP, 1, Deadline.after(60))
    (action,) = [a for a in world.cloud.ess.pending_actions(GROUP) if a.token not in world.delivered]
    return action.instance_ids[0]


def launch(world: World) -> str:
    instance_id = scale_out(world)
    world.deliver_hooks()
    world.boot(instance_id)
    world.settle()
    assert world.record(instance_id).state == "in_service"
    return instance_id


def heartbeats(world: World, instance_id: str) -> list[int]:
    """Heartbeats ESS accepted, per lifecycle action that held the instance."""
    return [a.heartbeats for a in world.cloud.ess.actions.values() if instance_id in a.instance_ids]


def run_for(world: World, seconds: float, step_s: float = 20.0) -> None:
    for _ in range(int(seconds // step_s)):
        world.clock.advance(step_s)
        world.cloud.ess.tick()
        world.cloud.gwlb.tick()
        world.run_continuations()


# --- the heartbeat budget (F-ESS-6) ---------------------------------------------------------------------


def test_a_slow_boot_spreads_its_heartbeats_and_never_sends_one_per_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, kind="linux", launch_timeout_s=3 * 3600)
    instance_id = scale_out(world)
    world.deliver_hooks()
    run_for(world, 2.5 * 3600)  # 450 polls
    assert world.ess_instances()[instance_id] == "Pending:Wait"  # held all along
    sent = heartbeats(world, instance_id)
    assert sent and 0 < sent[0] <= 19
    assert world.record(instance_id).heartbeats == sent[0]
    world.boot(instance_id)
    world.settle()
    assert world.record(instance_id).state == "in_service"
    assert world.ess_instances()[instance_id] == "InService"


def test_a_long_drain_stays_within_twenty_heartbeats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path, monkeypatch, kind="linux", drain_timeout_s=5 * 3600, hook_heartbeat_s=300)
    instance_id = launch(world)
    world.appliances.set(world.record(instance_id).data_ip, active_flows=5)
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    world.deliver_hooks()
    run_for(world, 5.5 * 3600, step_s=60)
    assert all(n <= 20 for n in heartbeats(world, instance_id))
    world.settle()
    record = world.record(instance_id)
    assert record.state == "gone" and instance_id not in world.ess_instances()
    # the drain ended at its deadline (or earlier, when the budget ran out), never by ESS's timeout
    assert not record.hook_expired
    scale_in = [a for a in world.cloud.ess.actions.values() if a.hook.transition == "SCALE_IN"]
    assert [a.status for a in scale_in] == ["Proceed"]


@pytest.mark.parametrize("code", ["LifecycleAction.RecordTimesExceeded", "LifecycleAction.TimeExceeded"])
def test_ess_refusing_a_heartbeat_ends_the_drain_before_the_hook_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    world = World(tmp_path, monkeypatch, kind="linux", drain_timeout_s=7200)
    instance_id = launch(world)
    world.appliances.set(world.record(instance_id).data_ip, active_flows=5)  # never drains by itself
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    world.deliver_hooks()
    world.cloud.ess.fail_next = [code]  # the next call (the first heartbeat) is refused
    run_for(world, 900)
    record = world.record(instance_id)
    assert record.hook_budget_spent
    spent = [e for e in world.audit.events if e.action == "heartbeat_budget_spent"]
    assert len(spent) == 1 and spent[0].outcome == "failed" and spent[0].inputs["code"] == code
    world.settle()
    record = world.record(instance_id)
    assert record.state == "gone" and not record.hook_expired  # CONTINUE sent by us, not a timeout
    (action,) = [a for a in world.cloud.ess.actions.values() if a.hook.transition == "SCALE_IN"]
    assert action.status == "Proceed"


def test_a_launch_out_of_heartbeats_is_abandoned_before_the_hook_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, kind="vmseries", launch_timeout_s=5 * 3600)
    instance_id = scale_out(world)
    world.deliver_hooks()
    world.cloud.ess.fail_next = ["LifecycleAction.TimeExceeded"]
    world.settle(step_s=20, limit=400)  # never boots
    record = world.record(instance_id)
    assert record.state == "gone" and record.abandoned and not record.hook_expired
    (action,) = [a for a in world.cloud.ess.actions.values() if a.hook.transition == "SCALE_OUT"]
    assert (action.status, action.result) == ("Abandon", "ABANDON")  # ours, not the default result


def test_the_ess_fake_enforces_the_limits(world: World) -> None:
    scale_out(world)
    (action,) = world.cloud.ess.pending_actions(GROUP)
    ess, deadline = world.cloud.ess, Deadline.after(60)
    ess.heartbeat(action.hook.hook_id, action.token, 21600, deadline)  # to 6 h from its start: allowed
    world.clock.advance(3600)
    with pytest.raises(LimitExceeded) as too_long:  # 1 h + 5 h 30 min > 6 h from its start
        ess.heartbeat(action.hook.hook_id, action.token, 19800, deadline)
    assert too_long.value.code == "LifecycleAction.TimeExceeded"
    for _ in range(19):  # with the first: 20
        ess.heartbeat(action.hook.hook_id, action.token, 60, deadline)
    with pytest.raises(LimitExceeded) as refused:
        ess.heartbeat(action.hook.hook_id, action.token, 60, deadline)
    assert refused.value.code == "LifecycleAction.RecordTimesExceeded"
    assert action.heartbeats == 20


# --- the data ENI is the member (F-GWLB-1, F-GWLB-2, F-ECS-1) -------------------------------------------


def test_the_data_eni_is_registered_and_deregistered(world: World) -> None:
    instance_id = launch(world)
    record = world.record(instance_id)
    ecs = world.cloud.ecs.instances[instance_id]
    assert (
        (record.data_eni_id, record.data_ip)
        == (ecs.data_eni, ecs.data_ip)
        == (eni_of(instance_id), ecs.data_ip)
    )
    (member,) = world.cloud.gwlb.server_groups[SERVER_GROUP].members.values()
    assert (member.server_type, member.server_id, member.server_ip) == ("Eni", ecs.data_eni, ecs.data_ip)
    assert record.private_ip != record.data_ip  # not the primary (management) ENI
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    world.settle()
    assert world.record(instance_id).state == "gone"
    assert not world.cloud.gwlb.server_groups[SERVER_GROUP].members
    removals = [e for e in world.audit.events if e.action == "deregister_requested"]
    assert removals[0].inputs["server_type"] == "Eni" and removals[0].inputs["server_id"] == ecs.data_eni


def test_a_single_nic_linux_nva_registers_its_primary_eni(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, kind="linux")
    world.cloud.ecs.data_interface = False
    instance_id = launch(world)
    record = world.record(instance_id)
    ecs = world.cloud.ecs.instances[instance_id]
    assert (record.data_eni_id, record.data_ip) == (ecs.primary_eni, ecs.private_ip)
    (member,) = world.cloud.gwlb.server_groups[SERVER_GROUP].members.values()
    assert (member.server_type, member.server_id) == ("Eni", ecs.primary_eni)


def test_a_vmseries_without_a_data_eni_is_not_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, kind="vmseries")
    world.cloud.ecs.data_interface = False
    instance_id = scale_out(world)
    world.deliver_hooks()
    record = world.record(instance_id)
    assert not record.done("described") and not world.cloud.gwlb.server_groups[SERVER_GROUP].members


def test_the_gwlb_fake_checks_an_eni_member(world: World) -> None:
    instance_id = launch(world)
    ecs = world.cloud.ecs.instances[instance_id]
    gwlb = world.cloud.gwlb
    with pytest.raises(ApiError, match=r"ResourceNotFound\.Eni"):
        gwlb.api_add_servers_to_server_group(
            SERVER_GROUP, [{"ServerId": "eni-nothere", "ServerType": "Eni", "ServerIp": "10.1.0.9"}]
        )
    with pytest.raises(ApiError, match=r"IllegalParam\.ServerIp"):
        gwlb.api_add_servers_to_server_group(
            SERVER_GROUP, [{"ServerId": ecs.primary_eni, "ServerType": "Eni", "ServerIp": ecs.data_ip}]
        )


# --- Panorama: the commit's result, partial commit by admin, the licence read back (F-PAN-1/2/3) ----------


def test_a_commit_that_finishes_fail_is_not_recorded_as_done(vmseries: World) -> None:
    world = vmseries
    instance_id = launch(world)
    world.panorama.fail_commits = True
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    world.deliver_hooks()
    run_for(world, 200)
    world.panorama.finish_jobs()
    run_for(world, 100)
    record = world.record(instance_id)
    assert not record.done("committed") and record.commit_failures >= 1
    assert "commit" in record.last_error and "fail" in record.last_error  # the record says why
    failed = [e.reason for e in world.audit.events if e.action == "commit" and e.outcome == "failed"]
    assert failed and all("ended FAIL: Validation Error" in reason for reason in failed)
    assert world.panorama.licensed(record.serial)  # nothing released without an OK commit
    world.panorama.fail_commits = False
    world.settle(step_s=120, limit=100)
    assert world.record(instance_id).state == "gone"
    world.consistent()


def test_another_admins_pending_change_is_not_committed_by_us(vmseries: World) -> None:
    world = vmseries
    instance_id = launch(world)
    other = launch(world)
    other_serial = world.record(other).serial

    def alices_edit(config: PanoramaConfig) -> bool:
        config.device_groups["gwlb-fw"].discard(other_serial)
        return True

    world.panorama.stage_change("alice", "moves a firewall out of gwlb-fw", alices_edit)
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    world.settle()
    assert world.record(instance_id).state == "gone"
    assert [c.admin for c in world.panorama.pending] == ["alice"]  # still pending
    groups = {d.serial: d.device_group for d in world.panorama.devices(Deadline.after(60))}
    assert groups[other_serial] == "gwlb-fw"
    assert all(job.user == "gwlb-fleet" for job in world.panorama.jobs.values())


def test_a_licence_the_plugin_still_lists_is_not_recorded_as_released(vmseries: World) -> None:
    world = vmseries
    instance_id = launch(world)
    serial = world.record(instance_id).serial
    world.panorama.sticky_licences.add(serial)  # deactivation answers success, the plugin keeps it
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    world.deliver_hooks()
    run_for(world, 300)  # within the release's attempts (LICENCE_RELEASE_ATTEMPTS, backing off)
    record = world.record(instance_id)
    assert record.done("deactivation_requested") or record.done("committed") or record.last_error
    assert not record.done("licence_released") and record.state == "draining"
    assert "still counts" in record.last_error
    world.panorama.sticky_licences.discard(serial)
    world.settle(step_s=60, limit=100)
    assert world.record(instance_id).state == "gone" and not world.panorama.licensed(serial)
