"""ESS lifecycle hooks: keep them open while a workflow waits, recover a lost token, finish them."""

from __future__ import annotations

from dataclasses import replace

from gwlb_fleet.errors import LimitExceeded, NotFound, TransientError
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


# F-ESS-6: RecordLifecycleActionHeartbeat may be called 20 times per lifecycle action, and the
# action's timeouts may add up to 6 hours. One call is kept back (a heartbeat ESS counted but whose
# answer was lost is counted here too), and the cap is kept with a margin.
MAX_HEARTBEATS = 19
ACTION_CAP_S = 6 * 3600
CAP_MARGIN_S = 300
HEARTBEAT_RANGE_S = (30, 21600)  # F-ESS-6 heartbeatTimeout


def cover_s(ctx: WorkflowContext) -> float:
    """How long the hook must stay open beyond now for the workflow's next look to find it open:
    two poll intervals (a continuation can come late) and a few calls' time."""
    return 2 * ctx.settings.poll_interval_s + 4 * ctx.settings.api_timeout_s


def keep_alive(ctx: WorkflowContext, record: InstanceRecord) -> None:
    """Keep the lifecycle action open while the workflow waits, within ESS's heartbeat budget.

    A heartbeat is sent only when the action would otherwise time out before the workflow's next
    look (never one per poll), and each asks for a timeout that spreads the heartbeats left over
    the time the workflow may still need: its phase deadline (readiness, drain) plus one hook
    timeout to finish, never past 6 hours from the action's start. When the budget is spent, or
    ESS says so, no more heartbeats: the workflow is made to finish before the action times out
    (``budget_spent``), rather than let ESS apply the default result behind its back."""
    if not hook_open(record) or not record.hook_token or record.hook_budget_spent:
        return
    now, cover = ctx.now(), cover_s(ctx)
    if record.hook_deadline and record.hook_deadline - now > cover:
        return  # open past the next look: no heartbeat needed yet
    started = record.hook_started or record.created
    cap = started + ACTION_CAP_S - CAP_MARGIN_S
    left = MAX_HEARTBEATS - record.heartbeats
    if left <= 0:
        budget_spent(ctx, record, f"{record.heartbeats} heartbeats sent: the budget for this action is spent")
        return
    if cap - now < cover:
        budget_spent(ctx, record, "the lifecycle action is close to ESS's 6-hour cap")
        return
    needed_until = min(cap, max(record.phase_deadline, now) + ctx.settings.hook_heartbeat_s)
    spread = -(-(needed_until - now) // left)  # ceil
    low, high = HEARTBEAT_RANGE_S
    timeout = int(min(max(spread, ctx.settings.hook_heartbeat_s, low), cap - now, high))
    if timeout < low:
        budget_spent(ctx, record, "the lifecycle action is close to ESS's 6-hour cap")
        return
    # Counted before the call: a heartbeat whose answer is lost may have been counted by ESS.
    counted = ctx.update(record.instance_id, lambda r: replace(r, heartbeats=r.heartbeats + 1))
    record = counted or record
    try:
        ctx.app.ess.heartbeat(record.hook_id, record.hook_token, timeout, ctx.deadline)
    except LimitExceeded as exc:  # F-ESS-6: RecordTimesExceeded / TimeExceeded
        budget_spent(ctx, record, f"ESS refused the heartbeat: {exc.code}", code=exc.code)
        return
    except NotFound:
        expired(ctx, record, "the lifecycle action is no longer pending (timed out)")
        return
    except TransientError as exc:
        # Not extended; the next look tries again while the action is still open.
        error = f"heartbeat: {exc}"[:500]
        ctx.update(record.instance_id, lambda r: replace(r, last_error=error))
        ctx.audit("heartbeat", "failed", str(exc), record.instance_id, hook_id=record.hook_id)
        return
    ctx.update(
        record.instance_id,
        lambda r: replace(r, hook_deadline=now + timeout, last_heartbeat=now),
    )
    ctx.audit(
        "heartbeat",
        "ok",
        f"lifecycle action extended by {timeout}s",
        record.instance_id,
        hook_id=record.hook_id,
        heartbeats=record.heartbeats,
        timeout_s=timeout,
    )


def budget_spent(ctx: WorkflowContext, record: InstanceRecord, reason: str, code: str = "") -> None:
    """No more heartbeats for this action: bring the workflow's phase deadline forward so that it
    finishes while the action is still open — a drain ends early, a launch that is not ready by
    then is abandoned (ABANDON, its licence released) — instead of ESS's default result."""
    now = ctx.now()
    finish_by = max(now, record.hook_deadline - cover_s(ctx))

    def change(r: InstanceRecord) -> InstanceRecord:
        deadline = min(r.phase_deadline, finish_by) if r.phase_deadline else finish_by
        return replace(r, hook_budget_spent=now, phase_deadline=deadline)

    ctx.update(record.instance_id, change)
    ctx.audit(
        "heartbeat_budget_spent",
        "failed" if code else "ok",
        f"{reason}; finishing by {finish_by:.0f} (the action times out at {record.hook_deadline:.0f})",
        record.instance_id,
        hook_id=record.hook_id,
        heartbeats=record.heartbeats,
        code=code,
        finish_by=finish_by,
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
    now, timeout = ctx.now(), ctx.settings.hook_heartbeat_s
    return ctx.update(instance_id, lambda r: r.with_action(r.hook_id or hook_id, token, now, timeout))
