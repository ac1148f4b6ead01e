"""Issue 13, items 2 and 9: reconcile repairs each record on its own, and the health
replacement rate limit counts only the live fleet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import FleetError, TransientError
from gwlb_fleet.state.records import InstanceRecord
from gwlb_fleet.workflows import lifecycle
from tests.functional.world import GROUP, World


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return World(tmp_path, monkeypatch, kind="vmseries", warmup_s=0)


def fleet_of(world: World, size: int) -> list[str]:
    ids = []
    for _ in range(size):
        world.cloud.ess.scale_by(GROUP, 1, Deadline.after(60))
        (new,) = [i for a in world.cloud.ess.pending_actions(GROUP) for i in a.instance_ids]
        world.deliver_hooks()
        world.boot(new)
        world.settle()
        ids.append(new)
    assert all(world.record(i).state == "in_service" for i in ids)
    return ids


# --- item 2: one record's failure does not stop the others ------------------------------------------


@pytest.mark.parametrize("error", [TransientError("ECS said 503"), RuntimeError("a bug")])
def test_reconcile_resumes_every_other_flow_when_one_resume_raises(
    world: World, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    ids = sorted(fleet_of(world, 3))
    for instance_id in ids:
        world.appliances.set(world.record(instance_id).data_ip, active_flows=30)  # a long drain
    world.cloud.ess.remove_instances(GROUP, ids, Deadline.after(60))
    world.deliver_hooks()
    assert all(world.record(i).state == "draining" for i in ids)
    world.cloud.fc.scheduled.clear()  # every continuation lost
    world.clock.advance(2 * world.settings.poll_interval_s + 1)
    bad = ids[0]  # the first record reconcile comes to
    original = lifecycle.advance

    def advance(ctx: Any, instance_id: str) -> Any:
        if instance_id == bad:
            raise error
        return original(ctx, instance_id)

    monkeypatch.setattr(lifecycle, "advance", advance)
    audited = len(world.audit.events)
    raised: BaseException | None = None
    try:
        world.invoke("reconcile", world.timer())
    except Exception as exc:  # noqa: BLE001 - looked at below, once the others are checked
        raised = exc
    # the others resumed: each waiting again on a continuation of its own
    assert len(world.cloud.fc.scheduled) == 2
    # and the invocation failed after them, naming the one, so that FC records the failure
    assert isinstance(raised, FleetError) and bad in str(raised), raised
    resumed = [e for e in world.audit.events[audited:] if e.action == "repair_resume"]
    failed = [e for e in resumed if e.outcome == "failed"]
    assert [e.instance_id for e in failed] == [bad]
    assert str(error) in failed[0].reason and failed[0].inputs["error"] == type(error).__name__
    points = {p.name: p.value for p in world.cloud.cms.points}
    assert points["gwlb_fleet_drift_failed"] == 1.0 and points["gwlb_fleet_drift_resumed"] == 2.0
    summary = [e for e in world.audit.events[audited:] if e.action == "reconcile"]
    assert [(e.outcome, e.inputs["failed"], e.inputs["resumed"]) for e in summary] == [("failed", 1, 2)]
    # the failure cleared, the next tick resumes it too, and everything ends consistent
    monkeypatch.setattr(lifecycle, "advance", original)
    for instance_id in ids:
        world.appliances.set(world.record(instance_id).data_ip, active_flows=0)
    world.cloud.fc.scheduled.clear()
    world.clock.advance(2 * world.settings.poll_interval_s + 1)
    world.invoke("reconcile", world.timer())
    world.settle()
    assert all(world.record(i).state == "gone" for i in ids)
    world.consistent()


def test_reconcile_without_failures_returns_its_drift(world: World) -> None:
    fleet_of(world, 1)
    result = world.invoke("reconcile", world.timer())
    assert result["drift"]["failed"] == 0
    assert [e.outcome for e in world.audit.events if e.action == "reconcile"] == ["ok"]


# --- item 9: the replacement budget counts live instances only ----------------------------------------


def test_the_replacement_rate_limit_ignores_records_of_instances_long_gone(world: World) -> None:
    ids = fleet_of(world, 4)
    now = world.clock()
    for n in range(12):  # instances of months ago: their records stay, as "gone"
        world.state.create_instance(
            InstanceRecord(
                instance_id=f"i-old{n:04d}",
                scaling_group_id=GROUP,
                state="gone",
                created=now - 90 * 86400,
                updated=now - 80 * 86400,
            )
        )
    sick = ids[:3]
    for instance_id in sick:
        world.set_health(instance_id, "Unhealthy", "timeout")
    result: dict[str, Any] = {}
    for _ in range(world.settings.unhealthy_observations):
        result = world.invoke("health", world.timer())
        world.clock.advance(world.settings.unhealthy_spacing_s + 1)
    assert len(result["replaced"]) == 1, result  # 4 x 0.34: one at a time
    assert sorted(result["replaced"] + result["deferred"]) == sorted(sick)
    unhealthy_in_ess = {
        i.instance_id
        for i in world.cloud.ess.list_instances(GROUP, Deadline.after(5))
        if i.health_status == "Unhealthy"
    }
    assert unhealthy_in_ess == set(result["replaced"])
    decided = [e for e in world.audit.events if e.action == "replace_unhealthy"]
    assert {e.inputs["fleet"] for e in decided} == {4}
