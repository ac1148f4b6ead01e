"""Health: find the members the GWLB calls unhealthy, be sure, and hand them to ESS — each as
itself, a few at a time.

There is no GWLB backend-health event: an alarm on the acs_gwlb unhealthy-server metric (its rule
named with the health prefix, delivered through its MNS queue: F-CMS-14, F-FCT-4), and the timer,
bring us here, and ``GetListenerHealthStatus`` says which members. The alarm only says "look now":
a recovered alarm (``curLevel`` OK) looks as well, which clears the counts of members now healthy.
An instance is replaced only after ``unhealthy_observations`` consecutive unhealthy checks at least
``unhealthy_spacing_s`` apart (a blip is not a failure), and never more than
``max_replace_fraction`` of the fleet at once (a GWLB-wide problem must not empty the fleet). The
fleet is the live one: instances whose record is in service. Records of instances long gone stay
in the store, and launching or draining ones serve no traffic; none of them widens the budget.
Each unhealthy instance is matched by its own id — two at once are two separate decisions (where
Cisco's health doctor deregistered the wrong device). ESS is told the instance is unhealthy; it
replaces it, and the terminate flow cleans up through the scale-in hook.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial
from typing import Any

from gwlb_fleet.events import AlarmEvent, TimerEvent
from gwlb_fleet.settings import Settings
from gwlb_fleet.state.records import InstanceRecord
from gwlb_fleet.workflows.context import WorkflowContext


def handle(event: AlarmEvent | TimerEvent, ctx: WorkflowContext) -> dict[str, Any]:
    if isinstance(event, TimerEvent):
        return check(ctx, {"trigger": "timer", "timer": event.trigger_name})
    alarm = event.alarm
    inputs = {"trigger": "alarm", **event.audit_inputs}
    if not alarm.rule_name.startswith(ctx.settings.health_alarm_prefix):
        ctx.audit("health_ignored", "skipped", f"alarm {alarm.rule_name} is not a health alarm", **inputs)
        return {"unhealthy": {}, "replaced": [], "deferred": [], "reason": "not a health alarm"}
    return check(ctx, inputs)


def check(ctx: WorkflowContext, trigger: dict[str, Any] | None = None) -> dict[str, Any]:
    """``trigger``: what brought us here (the alarm's rule, level and value, or the timer), kept
    with every decision in the audit log."""
    settings, now = ctx.settings, ctx.now()
    records = [r for r in ctx.app.state.list_instances(settings.scaling_group_id) if r.state == "in_service"]
    # Members are the instances' data ENIs (F-GWLB-2): health by instance id.
    instance_of = {r.data_eni_id: r.instance_id for r in records if r.data_eni_id}
    health = {
        instance_of.get(h.server_id, h.server_id): h
        for h in ctx.app.gwlb.listener_health(settings.listener_id, ctx.deadline)
    }
    observed: dict[str, int] = {}
    for record in records:
        member = health.get(record.instance_id)
        if member is None:
            continue
        observe = partial(_observe, status=member.status, now=now, settings=settings)
        updated = ctx.update(record.instance_id, observe)
        if updated is not None and updated.unhealthy_seen:
            observed[record.instance_id] = updated.unhealthy_seen
    due = sorted(i for i, seen in observed.items() if seen >= settings.unhealthy_observations)
    replacing = [r.instance_id for r in records if r.replacing_since]
    # The fleet is what serves now: the in-service records. Records of instances long gone (kept
    # for the audit's sake), and those launching or draining, must not widen the budget.
    fleet = len(records) or 1
    budget = max(1, math.floor(settings.max_replace_fraction * fleet)) - len(replacing)
    replaced: list[str] = []
    deferred: list[str] = []
    for instance_id in due:
        if instance_id in replacing:
            continue
        reason = health[instance_id].reason or "unhealthy"
        inputs = {
            "observations": observed[instance_id],
            "gwlb_reason": reason,
            "fleet": fleet,
            "replacing": replacing + replaced,
            **(trigger or {}),
        }
        if len(replaced) >= budget:
            ctx.audit(
                "replace_unhealthy",
                "skipped",
                "rate limit: too much of the fleet is being replaced",
                instance_id,
                **inputs,
            )
            deferred.append(instance_id)
            continue
        ctx.app.ess.set_instance_health(instance_id, False, ctx.deadline)
        ctx.update(instance_id, lambda r: replace(r, replacing_since=now))
        ctx.audit(
            "replace_unhealthy",
            "ok",
            f"unhealthy in {observed[instance_id]} checks: {reason}",
            instance_id,
            **inputs,
        )
        replaced.append(instance_id)
    return {"unhealthy": observed, "replaced": replaced, "deferred": deferred}


def _observe(record: InstanceRecord, status: str, now: float, settings: Settings) -> InstanceRecord | None:
    if status == "Healthy":
        if not record.unhealthy_seen:
            return None
        return replace(record, unhealthy_seen=0)
    if status != "Unhealthy":
        return None  # Initial / Unused / Unavailable: not evidence either way
    if now - record.unhealthy_last_seen < settings.unhealthy_spacing_s:
        return None  # the same check seen twice (an alarm and the timer together)
    return replace(record, unhealthy_seen=record.unhealthy_seen + 1, unhealthy_last_seen=now)
