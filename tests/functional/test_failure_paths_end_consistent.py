"""Issue 13's control-plane failure paths, each through the real handlers over the fake cloud:
an instance the control plane never recorded, a licence that never releases, a step that fails
for good, and the orphan-licence cleanup's commit and read back. Every one ends with the four
records (ESS, GWLB, Panorama, licences) agreeing with the state store (``World.consistent``)."""

from __future__ import annotations

import itertools
import json

import pytest

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import PermanentError
from gwlb_fleet.ports import ApplianceStatus
from gwlb_fleet.workflows.context import STEP_FAILURE_METRIC
from tests.functional.world import GROUP, World


def fleet_of(world: World, size: int) -> list[str]:
    world.cloud.ess.scale_by(GROUP, size, Deadline.after(60))
    ids = sorted(i for a in world.cloud.ess.pending_actions(GROUP) for i in a.instance_ids)
    world.deliver_hooks()
    for instance_id in ids:
        world.boot(instance_id)
    world.settle()
    return ids


def scale_in(world: World, instance_id: str) -> None:
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    world.deliver_hooks()


def step_failure_points(world: World) -> int:
    return sum(1 for p in world.cloud.cms.points if p.name == STEP_FAILURE_METRIC)


# --- 1: scale-in of an instance with no record ---------------------------------------------------------


def test_scale_in_of_an_instance_never_recorded_does_every_verified_step_before_continue(
    world: World,
) -> None:
    keep, unknown = fleet_of(world, 2)
    member_before = world.members()[unknown]
    serial = world.boot_serials.get(unknown, "")
    data_ip = world.ecs_instance(unknown).data_ip
    world.lose_record(unknown)
    world.appliances.script(data_ip, [ApplianceStatus(True, True, 30), ApplianceStatus(True, True, 0)])
    scale_in(world, unknown)
    world.settle()

    record = world.record(unknown)
    assert record.state == "gone" and record.data_ip == data_ip and record.serial == serial
    assert member_before == "Available" and unknown not in world.members()
    assert unknown not in world.ess_instances()
    drained = [e for e in world.audit.events if e.action == "drained" and e.instance_id == unknown]
    assert [e.reason for e in drained] == ["no live flows left"]  # asked the appliance, waited
    if world.kind == "vmseries":
        assert serial and not world.panorama.licensed(serial)
        assert serial not in {d.serial for d in world.panorama.devices(Deadline.after(60))}
    actions = world.audit.actions(unknown)
    verified = ["identified", "deregistered", "drained", "licence_released", "device_removed"]
    assert all(a in actions for a in verified)
    assert max(actions.index(a) for a in verified) < actions.index("handed_back")
    assert world.record(keep).state == "in_service"
    world.consistent()


# --- 3: a licence the read back keeps counting -------------------------------------------------------


def test_a_licence_that_never_releases_is_given_up_after_bounded_backed_off_attempts(vmseries: World) -> None:
    world = vmseries
    (instance_id,) = fleet_of(world, 1)
    serial = world.record(instance_id).serial
    world.panorama.sticky_licences.add(serial)  # deactivation answers success; the licence stays
    scale_in(world, instance_id)
    world.settle(step_s=30, limit=400)

    deactivations = [c for c in world.panorama.calls if c.startswith("op deactivate") and serial in c]
    attempts = world.settings.licence_release_attempts
    assert len(deactivations) == attempts  # then no more
    record = world.record(instance_id)
    assert record.state == "gone" and record.gave_up("licence_released")
    assert not record.done("licence_released") and "left for an operator" in record.last_error
    failed = [e for e in world.audit.events if e.action == "licence_released" and e.outcome == "failed"]
    assert len(failed) == attempts and "given up" in failed[-1].reason
    assert step_failure_points(world) == 1
    assert world.panorama.licensed(serial)  # the truth, and the record says so
    retries = [e.time for e in world.audit.events if e.action == "deactivation_requested"]
    gaps = [b - a for a, b in itertools.pairwise(retries)]
    assert gaps == sorted(gaps) and gaps[0] >= world.settings.licence_release_backoff_s
    assert instance_id not in world.ess_instances()  # the scale-in was not held hostage
    world.consistent()


# --- 6: a step that fails for good ---------------------------------------------------------------------


def test_a_permanent_failure_says_why_on_the_record_audits_and_alarms(world: World) -> None:
    (instance_id,) = fleet_of(world, 1)
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    (action,) = world.new_hook_actions()
    world.cloud.gwlb.fail_next = ["Forbidden.RAM"]  # the function's role lost a permission
    event = world.hook_event(action)
    with pytest.raises(PermanentError, match=r"Forbidden\.RAM"):
        world.invoke("lifecycle", event)

    record = world.record(instance_id)
    assert record.state == "draining" and not record.done("deregistered")
    assert record.last_error.startswith("deregistered: ") and "Forbidden.RAM" in record.last_error
    failed = [e for e in world.audit.events if e.action == "deregistered" and e.outcome == "failed"]
    assert len(failed) == 1 and "Forbidden.RAM" in failed[0].reason
    assert step_failure_points(world) == 1
    world.retries.append(("lifecycle", json.dumps(event).encode(), 1))  # FC's async retry
    world.settle()  # the permission is back: the retry finishes the flow
    assert world.record(instance_id).state == "gone" and world.record(instance_id).last_error == ""
    world.consistent()


# --- 4: the orphan-licence cleanup's commit and read back -----------------------------------------------


def orphan(world: World) -> str:
    serial = "007900055555"
    world.panorama.add_firewall(serial, "10.0.9.9", connected=False)
    return serial


def orphan_audits(world: World, action: str) -> list[str]:
    return [e.outcome for e in world.audit.events if e.action == action]


def test_an_orphan_licence_is_released_only_after_its_commit_job_ended_ok(vmseries: World) -> None:
    world = vmseries
    fleet_of(world, 1)
    serial = orphan(world)
    world.panorama.fail_commits = True
    world.invoke("reconcile", world.timer())
    world.panorama.finish_jobs()
    world.clock.advance(60)
    result = world.invoke("reconcile", world.timer())  # reads the job: FAIL
    assert "failed" in orphan_audits(world, "repair_orphan_device_commit")
    assert "repair_orphan_licence" not in world.audit.actions()  # never read back as released
    assert any("commit job" in f for f in result["failed"]) and world.panorama.licensed(serial)
    world.panorama.fail_commits = False  # the round above already started a job that fails
    for _ in range(3):  # read that FAIL and commit again; read the OK and the plugin's list
        world.panorama.finish_jobs()
        world.clock.advance(60)
        world.invoke("reconcile", world.timer())
    assert orphan_audits(world, "repair_orphan_licence") == ["ok"]
    assert not world.panorama.licensed(serial)
    world.consistent()


def test_an_orphan_licence_the_plugin_still_lists_after_the_commit_is_kept_and_released_again(
    vmseries: World,
) -> None:
    world = vmseries
    fleet_of(world, 1)
    serial = orphan(world)
    world.panorama.sticky_licences.add(serial)
    for _ in range(2):
        world.invoke("reconcile", world.timer())
        world.panorama.finish_jobs()
        world.clock.advance(60)
    world.invoke("reconcile", world.timer())
    assert orphan_audits(world, "repair_orphan_licence")[0] == "failed"
    group = world.state.get_group(GROUP)
    assert group is not None and serial in group.orphan_unreleased.split(",")
    world.panorama.sticky_licences.discard(serial)
    for _ in range(2):
        world.clock.advance(60)
        world.invoke("reconcile", world.timer())
        world.panorama.finish_jobs()
    world.clock.advance(60)
    world.invoke("reconcile", world.timer())
    assert orphan_audits(world, "repair_orphan_licence")[-1] == "ok" and not world.panorama.licensed(serial)
    world.consistent()
