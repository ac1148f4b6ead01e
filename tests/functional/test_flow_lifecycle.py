"""Launch and terminate over the fakes, through the real handlers: the happy paths, events twice,
late and out of order, hook timeouts, throttling storms, crashes between steps, failures that must
never be recorded as done."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gwlb_fleet.deadline import Deadline
from tests.functional.world import GROUP, World


def scale_out(world: World, count: int = 1) -> list[str]:
    world.cloud.ess.scale_by(GROUP, count, Deadline.after(60))
    return [
        i
        for a in world.cloud.ess.pending_actions(GROUP)
        for i in a.instance_ids
        if a.token not in world.delivered
    ]


def launch(world: World, count: int = 1) -> list[str]:
    """Scale out and bring the new appliances all the way into service."""
    ids = scale_out(world, count)
    world.deliver_hooks()
    for instance_id in ids:
        world.boot(instance_id)
    world.settle()
    return ids


def test_launch_waits_for_ready_registers_then_continues(world: World) -> None:
    (instance_id,) = scale_out(world)
    world.deliver_hooks()
    record = world.record(instance_id)
    assert record.state == "launching" and record.done("described") and not record.done("appliance_ready")
    assert world.ess_instances()[instance_id] == "Pending:Wait"  # the hook holds it
    assert instance_id not in world.members()
    for _ in range(3):  # booting takes a while: continuations look again, the hook stays open
        world.clock.advance(20)
        world.run_continuations()
    assert world.record(instance_id).state == "launching"
    world.boot(instance_id)
    world.settle()
    record = world.record(instance_id)
    assert record.state == "in_service"
    assert [
        s for s in ("described", "appliance_ready", "registered", "hook_completed") if record.done(s)
    ] == ["described", "appliance_ready", "registered", "hook_completed"]
    assert world.ess_instances()[instance_id] == "InService"
    assert world.members()[instance_id] == "Available"
    if world.kind == "vmseries":
        assert record.serial and world.panorama.licensed(record.serial)
    world.consistent()
    # The member was Available before the hook was completed (Palo Alto's lambda got this wrong).
    actions = world.audit.actions(instance_id)
    assert actions.index("registered") < actions.index("hook_completed")


def test_a_long_boot_heartbeats_the_hook(world: World) -> None:
    (instance_id,) = scale_out(world)
    world.deliver_hooks()
    for _ in range(25):  # 25 minutes of booting (launch timeout 30), the hook's timeout is 15
        world.clock.advance(60)
        world.run_continuations()
    assert world.ess_instances()[instance_id] == "Pending:Wait"
    assert world.record(instance_id).last_heartbeat
    world.boot(instance_id)
    world.settle()
    assert world.record(instance_id).state == "in_service"


def test_the_same_hook_event_twice_and_a_late_copy_are_harmless(world: World) -> None:
    (instance_id,) = scale_out(world)
    (action,) = world.new_hook_actions()
    event = world.hook_event(action)
    world.invoke("lifecycle", event)
    world.invoke("lifecycle", event)  # EventBridge redelivers
    world.invoke("lifecycle", world.hook_event(action, event_id="another-id"))  # a copy with a new id
    world.boot(instance_id)
    world.settle()
    world.invoke("lifecycle", world.hook_event(action, event_id="late-copy"))  # long after
    assert world.record(instance_id).state == "in_service"
    assert world.audit.actions(instance_id).count("hook_completed") == 1
    world.consistent()


def test_an_event_without_its_token_recovers_it(world: World) -> None:
    (instance_id,) = scale_out(world)
    (action,) = world.new_hook_actions()
    world.invoke("lifecycle", world.hook_event(action, lifecycleActionToken=True))
    assert world.record(instance_id).hook_token == action.token
    assert "recover_hook_token" in world.audit.actions(instance_id)
    world.boot(instance_id)
    world.settle()
    assert world.ess_instances()[instance_id] == "InService"


@pytest.mark.parametrize("answered_id", ["i-someoneelse", ""])
def test_launch_uses_only_the_instance_it_asked_ecs_about(
    world: World, answered_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13 item 5: a DescribeInstances answer about another instance (or one without an id)
    is not taken for the instance asked about: the launch waits, audits it, and goes on once ECS
    answers about the right one."""
    (instance_id,) = scale_out(world)
    real = world.cloud.ecs.describe_instances
    stranger = replace(world.ecs_instance(instance_id), instance_id=answered_id, private_ip="10.99.99.99")
    wrong = [True]

    def describe(instance_ids: Any, deadline: Any) -> Any:
        return [stranger] if wrong[0] else real(instance_ids, deadline)

    monkeypatch.setattr(world.cloud.ecs, "describe_instances", describe)
    world.deliver_hooks()
    record = world.record(instance_id)
    assert record.state == "launching" and not record.done("described")
    assert record.private_ip != "10.99.99.99"
    failed = [e for e in world.audit.events if e.instance_id == instance_id and e.outcome == "failed"]
    assert [e.action for e in failed] == ["described"]
    assert repr(answered_id) in failed[0].reason and world.ess_instances()[instance_id] == "Pending:Wait"
    wrong[0] = False
    world.boot(instance_id)
    world.settle()
    record = world.record(instance_id)
    assert record.state == "in_service" and record.private_ip == world.ecs_instance(instance_id).private_ip
    assert world.ess_instances()[instance_id] == "InService"
    world.consistent()


def test_never_ready_is_abandoned_and_what_it_took_is_released(world: World) -> None:
    (instance_id,) = scale_out(world)
    world.deliver_hooks()
    instance = world.ecs_instance(instance_id)
    if world.kind == "vmseries":  # registered with Panorama (took a licence) but never healthy
        world.panorama.add_firewall("007900099999", instance.private_ip)
    world.appliances.set(instance.data_ip, healthy=False)
    world.settle(step_s=120, limit=40)
    record = world.record(instance_id)
    assert record.state == "gone" and record.abandoned
    assert instance_id not in world.ess_instances()  # ABANDON: ESS released it
    if world.kind == "vmseries":
        assert not world.panorama.licensed("007900099999")
        assert "007900099999" not in {d.serial for d in world.panorama.devices(Deadline.after(5))}
    world.consistent()


def test_terminate_drains_releases_verifies_then_continues(world: World) -> None:
    (instance_id,) = launch(world)
    data_ip = world.record(instance_id).data_ip
    world.appliances.script(data_ip, [world_status(40), world_status(12), world_status(0)])
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    world.deliver_hooks()
    assert world.record(instance_id).state == "draining"
    assert world.ess_instances()[instance_id] == "Removing:Wait"
    world.settle()
    record = world.record(instance_id)
    assert record.state == "gone"
    expected = [
        "deregistered",
        "drained",
        "deactivation_requested",
        "device_removal_requested",
        "committed",
        "licence_released",
        "device_removed",
        "handed_back",
    ]
    assert all(record.done(s) for s in expected)
    actions = world.audit.actions(instance_id)
    order = actions[actions.index("hook_completed") + 1 :]  # after the launch's own
    assert [order.index(s) for s in expected] == sorted(order.index(s) for s in expected)
    assert instance_id not in world.ess_instances() and instance_id not in world.members()
    world.consistent()


def world_status(flows: int) -> object:
    from gwlb_fleet.ports import ApplianceStatus

    return ApplianceStatus(True, True, flows)


def test_the_drain_deadline_ends_a_drain_that_does_not(world: World) -> None:
    (instance_id,) = launch(world)
    world.appliances.set(world.record(instance_id).data_ip, active_flows=500)
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    world.deliver_hooks()
    world.settle(step_s=30)
    record = world.record(instance_id)
    assert record.state == "gone" and record.flows_cut == 500


def test_a_licence_that_stays_is_never_recorded_as_released(vmseries: World) -> None:
    world = vmseries
    (instance_id,) = launch(world)
    serial = world.record(instance_id).serial
    world.panorama.sticky_licences.add(serial)  # deactivation answers OK, the licence stays
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    world.deliver_hooks()
    for _ in range(10):
        world.clock.advance(20)
        world.run_continuations()
    record = world.record(instance_id)
    assert record.state == "draining" and not record.done("licence_released")
    assert "licence" in record.last_error
    assert world.ess_instances()[instance_id] == "Removing:Wait"  # the hook is kept open
    failed = [e for e in world.audit.events if e.action == "licence_released" and e.outcome == "failed"]
    assert failed and not [
        e for e in world.audit.events if e.action == "licence_released" and e.outcome == "ok"
    ]
    world.panorama.sticky_licences.discard(serial)
    world.settle()
    assert world.record(instance_id).state == "gone" and not world.panorama.licensed(serial)


def test_a_failed_commit_is_retried_and_never_recorded_as_done(vmseries: World) -> None:
    world = vmseries
    (instance_id,) = launch(world)
    world.panorama.fail_commits = True
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    world.deliver_hooks()
    for _ in range(6):
        world.clock.advance(20)
        world.panorama.finish_jobs()
        world.run_continuations()
    record = world.record(instance_id)
    assert not record.done("committed") and record.state == "draining"
    commits = [e for e in world.audit.events if e.action == "commit" and e.outcome == "failed"]
    assert commits
    world.panorama.fail_commits = False
    world.settle()
    assert world.record(instance_id).state == "gone"


def test_panorama_unreachable_then_back(vmseries: World) -> None:
    world = vmseries
    (instance_id,) = launch(world)
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    world.panorama.unreachable = True
    world.deliver_hooks()
    for _ in range(5):
        world.clock.advance(20)
        world.run_continuations()
    assert world.record(instance_id).state == "draining"
    assert world.panorama.licensed(world.record(instance_id).serial)
    world.panorama.unreachable = False
    world.settle()
    assert world.record(instance_id).state == "gone"
    world.consistent()


def test_throttling_storms_are_ridden_out(world: World) -> None:
    """Throttling that outlasts the adapters' own retries fails the invocation; FC's retry (and
    the next continuation) carry the flow on, and nothing is done twice or left half done."""
    (instance_id,) = scale_out(world)
    world.boot(instance_id)
    for service in (world.cloud.gwlb, world.cloud.ess, world.cloud.ecs):
        service.fail_next = ["Throttling"] * 2
    world.settle()
    assert world.record(instance_id).state == "in_service"
    assert not world.dead_letters
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    for service in (world.cloud.gwlb, world.cloud.ess, world.cloud.ecs):
        service.fail_next = ["Throttling"] * 2
    world.settle()
    assert world.record(instance_id).state == "gone" and not world.dead_letters
    world.consistent()


def test_a_retry_after_the_hook_timed_out(world: World) -> None:
    """The launch hook expired (default ABANDON: ESS released the instance) while our event was
    stuck; the late retry must clean up, not register a ghost."""
    (instance_id,) = scale_out(world)
    (action,) = world.new_hook_actions()
    world.boot(instance_id)
    world.clock.advance(1000)  # past the 900 s hook timeout
    world.cloud.ess.tick()
    assert instance_id not in world.ess_instances()
    world.invoke("lifecycle", world.hook_event(action))
    world.settle(step_s=120)
    world.invoke("reconcile", world.timer())
    world.settle(step_s=120)
    record = world.record(instance_id)
    assert record.state == "gone"
    assert instance_id not in world.members()
    world.consistent()


def test_events_out_of_order_a_scale_in_before_the_launch_completed(world: World) -> None:
    (instance_id,) = scale_out(world)
    (launch_action,) = world.new_hook_actions()
    world.boot(instance_id)
    world.invoke("lifecycle", world.hook_event(launch_action))
    world.settle()
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    (terminate_action,) = world.new_hook_actions()
    world.invoke("lifecycle", world.hook_event(terminate_action))
    world.invoke("lifecycle", world.hook_event(launch_action, event_id="late-launch"))  # arrives after
    world.settle()
    assert world.record(instance_id).state == "gone"
    world.consistent()


STEPS = ["described", "appliance_ready", "registered", "hook_completed"]
TERMINATE_STEPS = [
    "deregistered",
    "drained",
    "deactivation_requested",
    "device_removal_requested",
    "committed",
    "licence_released",
    "device_removed",
    "handed_back",
]


def crash_once_before(step_name: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The process dies just before the step is recorded, its side effect already done."""
    from gwlb_fleet.workflows import steps as steps_module

    original = steps_module._record_done
    crashed: list[str] = []

    def crash(ctx, instance_id, step, result):  # type: ignore[no-untyped-def]
        if step.name == step_name and not crashed:
            crashed.append(step.name)
            raise RuntimeError("the process died")
        return original(ctx, instance_id, step, result)

    monkeypatch.setattr(steps_module, "_record_done", crash)
    return crashed


def recover(world: World, crashed: list[str], how: str) -> None:
    """After the crash: FC retries the event ("retry"), or the retry and the continuation are
    lost and only the timer's reconcile finds the flow half way ("reconcile")."""
    handled: list[bool] = []

    def after_crash() -> None:
        if crashed and not handled and how == "reconcile":
            handled.append(True)
            world.retries.clear()
            world.cloud.fc.scheduled.clear()
            world.clock.advance(60)
            world.invoke("reconcile", world.timer())

    world.settle(each=after_crash)
    if how == "reconcile" and crashed and not handled:
        after_crash()
        world.settle()


@pytest.mark.parametrize("how", ["retry", "reconcile"])
@pytest.mark.parametrize("crash_before", STEPS)
def test_a_crash_between_launch_steps(
    world: World, crash_before: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed = crash_once_before(crash_before, monkeypatch)
    (instance_id,) = scale_out(world)
    world.boot(instance_id)
    recover(world, crashed, how)
    assert crashed == [crash_before]
    record = world.record(instance_id)
    assert record.state == "in_service", (record.state, record.steps)
    assert world.audit.actions(instance_id).count("hook_completed") == 1
    assert not world.dead_letters
    world.consistent()


@pytest.mark.parametrize("how", ["retry", "reconcile"])
@pytest.mark.parametrize("crash_before", TERMINATE_STEPS)
def test_a_crash_between_terminate_steps(
    vmseries: World, crash_before: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = vmseries
    (instance_id,) = launch(world)
    crashed = crash_once_before(crash_before, monkeypatch)
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    recover(world, crashed, how)
    assert crashed == [crash_before]
    assert world.record(instance_id).state == "gone"
    assert not world.dead_letters
    world.consistent()


def test_a_drain_longer_than_the_hook_timeout_keeps_the_hook_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, kind="linux", drain_timeout_s=1800)  # hooks time out at 900 s
    (instance_id,) = launch(world)
    world.appliances.set(world.record(instance_id).data_ip, active_flows=3)
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    world.deliver_hooks()
    for _ in range(60):  # 20 minutes of draining
        world.clock.advance(20)
        world.cloud.ess.tick()
        world.run_continuations()
    assert world.ess_instances()[instance_id] == "Removing:Wait"  # not timed out: heartbeats
    assert world.record(instance_id).state == "draining"
    world.appliances.set(world.record(instance_id).data_ip, active_flows=0)
    world.settle()
    assert world.record(instance_id).state == "gone" and instance_id not in world.ess_instances()


def test_a_flow_woken_twice_while_it_waits_goes_on_as_one_chain(world: World) -> None:
    (instance_id,) = launch(world)
    data_ip = world.record(instance_id).data_ip
    world.appliances.set(data_ip, active_flows=30)  # a drain that takes a while
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    (action,) = world.new_hook_actions()
    world.invoke("lifecycle", world.hook_event(action))
    world.invoke("lifecycle", world.hook_event(action, event_id="ev-redelivered"))  # woken again
    assert len(world.cloud.fc.scheduled) == 2
    world.clock.advance(world.settings.poll_interval_s)
    results = [world.invoke("lifecycle", call.payload) for call in world.cloud.fc.due()]
    assert [bool(r.get("superseded")) for r in results] == [True, False]  # the first was replaced
    assert len(world.cloud.fc.scheduled) == 1  # one chain goes on, not two
    world.appliances.set(data_ip, active_flows=0)
    world.settle()
    assert world.record(instance_id).state == "gone"
    actions = world.audit.actions(instance_id)
    for step in ("drained", "deactivation_requested", "committed", "licence_released", "handed_back"):
        assert actions.count(step) == 1, (step, actions)
    world.consistent()


def test_reconcile_resumes_a_flow_whose_continuation_was_lost_once_it_is_overdue(world: World) -> None:
    (instance_id,) = launch(world)
    data_ip = world.record(instance_id).data_ip
    world.appliances.set(data_ip, active_flows=30)
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    world.deliver_hooks()
    world.cloud.fc.scheduled.clear()  # the continuation's delivery is lost
    world.appliances.set(data_ip, active_flows=0)
    world.invoke("reconcile", world.timer())
    assert world.cloud.fc.scheduled == []  # not yet overdue: it may still come, no second chain
    world.clock.advance(2 * world.settings.poll_interval_s + 1)
    world.invoke("reconcile", world.timer())
    assert len(world.cloud.fc.scheduled) == 1  # resumed, and waiting again on a chain of its own
    world.settle()
    assert world.record(instance_id).state == "gone"
    world.consistent()


def test_a_continuation_delivered_before_it_is_due_does_nothing_and_reconcile_resumes(world: World) -> None:
    """F-FC-4: should FC ignore (or cut short) the delay header, the continuation arrives at once.
    It must not run the flow's steps and schedule the next one, again and again: that would be a
    loop of invocations until the phase deadline. It does nothing; reconcile resumes the flow once
    its continuation is overdue."""
    (instance_id,) = launch(world)
    data_ip = world.record(instance_id).data_ip
    world.appliances.set(data_ip, active_flows=30)  # a drain that takes a while
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    world.deliver_hooks()
    [call] = world.cloud.fc.scheduled
    world.cloud.fc.scheduled.clear()
    before = world.record(instance_id)
    audited = len(world.audit.actions(instance_id))
    for _ in range(5):  # delivered at once, as if there were no delay, and redelivered
        result = world.invoke("lifecycle", call.payload)
        assert result.get("early") == before.next_continuation
    assert world.cloud.fc.scheduled == []  # no chain of its own
    assert world.record(instance_id) == before  # no step ran, nothing recorded
    # once: the handler answers a redelivered event from its idempotency record
    assert world.audit.actions(instance_id)[audited:] == ["continuation_early"]
    world.invoke("reconcile", world.timer())
    assert world.cloud.fc.scheduled == []  # not overdue yet
    world.clock.advance(2 * world.settings.poll_interval_s + 1)
    world.invoke("reconcile", world.timer())
    assert len(world.cloud.fc.scheduled) == 1  # resumed, waiting again on one chain
    world.appliances.set(data_ip, active_flows=0)
    world.settle()
    assert world.record(instance_id).state == "gone"
    world.consistent()


def test_a_continuation_on_time_runs_the_flow(world: World) -> None:
    """The guard above is no more than that: a continuation that comes when it is due (or a moment
    early, clocks differ) carries the flow on."""
    (instance_id,) = launch(world)
    data_ip = world.record(instance_id).data_ip
    world.appliances.set(data_ip, active_flows=30)
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    world.deliver_hooks()
    [call] = world.cloud.fc.scheduled
    world.cloud.fc.scheduled.clear()
    world.clock.advance(world.settings.poll_interval_s - 1)  # within the slack for clock skew
    result = world.invoke("lifecycle", call.payload)
    assert "early" not in result and result["state"] == "draining"
    assert len(world.cloud.fc.scheduled) == 1  # looked again, and scheduled the next look
