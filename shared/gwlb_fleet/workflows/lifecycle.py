"""The lifecycle function: ESS hooks (launch, terminate) and the continuations of both.

A hook event records the instance (or takes the newer token of a redelivered one) and then
advances its flow as far as it can in this invocation; a continuation advances it again. Events
for an instance whose flow is further along than the event — late, duplicate or out of order —
change nothing: the state machine only moves forward.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gwlb_fleet.events import ContinueEvent, LifecycleEvent
from gwlb_fleet.state.records import AlreadyExists, InstanceRecord
from gwlb_fleet.workflows import launch, terminate
from gwlb_fleet.workflows.context import WorkflowContext, arrived_early, superseded
from gwlb_fleet.workflows.steps import Progress


def handle(event: LifecycleEvent | ContinueEvent, ctx: WorkflowContext) -> dict[str, Any]:
    if isinstance(event, ContinueEvent):
        instance_id = event.work.instance_id
        record = ctx.app.state.get_instance(instance_id)
        if record is not None and superseded(record, event.envelope.id):
            # A later wake-up scheduled its own continuation: that one carries the flow on.
            return {"instance_id": instance_id, "state": record.state, "superseded": event.envelope.id}
        if record is not None and arrived_early(
            record, event.envelope.id, ctx.now(), ctx.settings.poll_interval_s
        ):
            # F-FC-4: delivered before its delay; reconcile resumes the flow when it is overdue.
            ctx.audit(
                "continuation_early",
                "skipped",
                f"arrived {record.next_continuation_due - ctx.now():.0f} s before it was due",
                instance_id,
                continuation=event.envelope.id,
            )
            return {"instance_id": instance_id, "state": record.state, "early": event.envelope.id}
        return _result(advance(ctx, instance_id))
    hook = event.hook
    if hook.transition == "TEST":
        ctx.audit("hook_test", "skipped", "ESS test notification", hook_id=hook.hook_id)
        return {"test": True}
    if hook.scaling_group_id != ctx.settings.scaling_group_id:
        ctx.audit("hook_ignored", "skipped", f"scaling group {hook.scaling_group_id} is not ours")
        return {"ignored": hook.scaling_group_id}
    progress = []
    for instance_id in hook.instance_ids or _instances_of_activity(ctx, hook.activity_id):
        record = _record_hook(ctx, instance_id, event)
        if hook.transition == "SCALE_IN":
            terminate.start(ctx, record, "ESS scale-in")
        progress.append(advance(ctx, instance_id))
    return {"instances": [_result(p) for p in progress]}


def advance(ctx: WorkflowContext, instance_id: str) -> Progress:
    record = ctx.app.state.get_instance(instance_id)
    if record is None:
        return Progress(instance_id, "unknown")
    if record.state in ("launching", "ready"):
        return launch.advance(ctx, record)
    if record.state in ("draining", "delicensed"):
        return terminate.advance(ctx, instance_id)
    return Progress(instance_id, record.state)


def _record_hook(ctx: WorkflowContext, instance_id: str, event: LifecycleEvent) -> InstanceRecord:
    hook, now = event.hook, ctx.now()
    fresh = InstanceRecord(
        instance_id=instance_id,
        scaling_group_id=hook.scaling_group_id,
        hook_id=hook.hook_id,
        hook_token=hook.token,
        hook_transition=hook.transition,
        created=now,
        updated=now,
        hook_deadline=now + ctx.settings.hook_heartbeat_s,
        hook_started=now,
        phase_deadline=now + ctx.settings.launch_timeout_s,
        hook_event=event.envelope.id,
        activity_id=hook.activity_id,
    )
    if hook.transition == "SCALE_OUT":
        try:
            record: InstanceRecord = ctx.app.state.create_instance(fresh)
            ctx.audit(
                "launch_recorded",
                "ok",
                "ESS scale-out hook",
                instance_id,
                hook_id=hook.hook_id,
                activity_id=hook.activity_id,
            )
            return launch_token(ctx, record, hook.activity_id)
        except AlreadyExists:
            pass  # a redelivery, or the timer found it first
    existing = ctx.app.state.get_instance(instance_id)
    if existing is None:  # a scale-in for an instance we never saw launch (or lost): adopt it
        existing = ctx.app.state.create_instance(replace(fresh, state="in_service", hook_token=""))
        ctx.audit("adopted", "ok", "a hook for an instance with no record", instance_id)
    updated = ctx.update(instance_id, lambda r: _take_hook(r, event, now, ctx.settings.hook_heartbeat_s))
    return launch_token(ctx, updated or existing, hook.activity_id)


def _take_hook(
    record: InstanceRecord, event: LifecycleEvent, now: float, timeout_s: float
) -> InstanceRecord | None:
    """Take the event's hook if it is a newer one (a scale-in after a launch); a redelivered or
    late copy of an older hook changes nothing."""
    hook = event.hook
    if (
        record.hook_transition == hook.transition
        and record.hook_id == hook.hook_id
        and (record.hook_token == hook.token or not hook.token)
    ):
        return None
    if hook.transition == "SCALE_OUT" and record.state not in ("launching", "ready"):
        return None  # a late scale-out hook for an instance long past its launch
    taken = record.with_action(
        hook.hook_id, hook.token, now, timeout_s
    )  # a new action: a new heartbeat budget
    return replace(taken, hook_transition=hook.transition)


def launch_token(ctx: WorkflowContext, record: InstanceRecord, activity_id: str) -> InstanceRecord:
    from gwlb_fleet.workflows import hooks

    return hooks.recover_token(ctx, record, activity_id)


def _instances_of_activity(ctx: WorkflowContext, activity_id: str) -> list[str]:
    """A hook event without instance ids: the pending actions of its activity name them."""
    if not activity_id:
        return []
    return sorted(
        {i for a in ctx.app.ess.lifecycle_actions(activity_id, ctx.deadline) for i in a.instance_ids}
    )


def _result(progress: Progress) -> dict[str, Any]:
    return {
        "instance_id": progress.instance_id,
        "state": progress.state,
        "waiting_for": progress.waiting_for,
        "steps_done": list(progress.steps_done),
    }
