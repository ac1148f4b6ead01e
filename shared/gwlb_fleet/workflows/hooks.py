"""ESS lifecycle hooks: keep them open while a workflow waits, recover a lost token, finish them."""

from __future__ import annotations

from dataclasses import replace

from gwlb_fleet.errors import NotFound
from gwlb_fleet.ports import LifecycleResult
from gwlb_fleet.state.records import InstanceRecord
from gwlb_fleet.workflows.context import WorkflowContext


def hook_open(record: InstanceRecord) -> bool:
    """A lifecycle action still holds the instance: its hook's finishing step is not done
    (launch: ``hook_completed``; scale-in or an abandoned launch: ``handed_back``)."""
    finishing = (
        "handed_back" if record.hook_transition == "SCALE_IN" or record.abandoned else "hook_completed"
    )
    return bool(record.hook_id) and not record.done(finishing)


def keep_alive(ctx: WorkflowContext, record: InstanceRecord) -> None:
    """Heartbeat the hook when half of its timeout has passed since the last one, so that ESS
    never applies the default result while we are still working on the instance."""
    if not hook_open(record) or not record.hook_token:
        return
    timeout = ctx.settings.hook_heartbeat_s
    last = record.last_heartbeat or record.created
    if ctx.now() < last + timeout / 2:
        return
    try:
        ctx.app.ess.heartbeat(record.hook_id, record.hook_token, timeout, ctx.deadline)
    except NotFound:
        expired(ctx, record, "the lifecycle action is no longer pending (timed out)")
        return
    now = ctx.now()
    ctx.update(
        record.instance_id,
        lambda r: replace(r, hook_deadline=now + timeout, last_heartbeat=now),
    )


def expired(ctx: WorkflowContext, record: InstanceRecord, reason: str) -> None:
    """ESS finished the action without us (its timeout applied the default result): forget the
    token; what ESS did with the instance, the flow's next look finds out."""
    now = ctx.now()
    ctx.update(record.instance_id, lambda r: replace(r, hook_token="", hook_expired=now))
    ctx.audit("hook_expired", "ok", reason, record.instance_id, hook_id=record.hook_id)


def recover_token(ctx: WorkflowContext, record: InstanceRecord, activity_id: str = "") -> InstanceRecord:
    """An event without its token (or a token lost with a crash): find the pending lifecycle
    action for this instance through its scaling activity."""
    if record.hook_token:
        return record
    activities = (
        [activity_id]
        if activity_id
        else [
            a.activity_id for a in ctx.app.ess.in_progress_activities(record.scaling_group_id, ctx.deadline)
        ]
    )
    for activity in activities:
        for action in ctx.app.ess.lifecycle_actions(activity, ctx.deadline):
            if record.instance_id in action.instance_ids and action.token:
                updated = _take_token(ctx, record.instance_id, action.hook_id, action.token)
                ctx.audit(
                    "recover_hook_token",
                    "ok",
                    "the lifecycle action's token was missing",
                    record.instance_id,
                    activity_id=activity,
                )
                return updated or record
    return record


def finish(ctx: WorkflowContext, record: InstanceRecord, result: LifecycleResult) -> bool:
    """Complete the lifecycle action; False if the instance has none open (adopted by
    reconcile, or vanished). One ESS already finished (a retry after the hook timed out) is
    success in the adapter; what ESS did with the instance, the next steps find out."""
    record = recover_token(ctx, record)
    if not record.hook_token:
        return False
    ctx.app.ess.complete(record.hook_id, record.hook_token, result, ctx.deadline)
    return True


def _take_token(ctx: WorkflowContext, instance_id: str, hook_id: str, token: str) -> InstanceRecord | None:
    return ctx.update(instance_id, lambda r: replace(r, hook_id=r.hook_id or hook_id, hook_token=token))
