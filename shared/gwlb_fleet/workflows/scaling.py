"""Scaling: CloudMonitor alarms in, one decision out — asymmetric, bounded, explained.

Alarms whose name starts with the scale-out prefix ask for more capacity (agent active flows or
packets/s, PAN-OS session utilisation or dataplane CPU, ECS CPU: whatever rules the operator
points at us), those with the scale-in prefix for less. Out is fast (a short cooldown, a step of
``scale_out_step``), in is slow (a long cooldown, one instance at a time, never while a new
appliance is still launching or warming up). Capacity stays within the group's min and max,
and it always changes through ESS, whose one-activity-at-a-time lock serialises us with itself.

Scale-in removes exactly the instance it chose: unhealthy first, then not ready, then the one
with the fewest live flows, from the zone with the most appliances so that zones stay balanced.
Every decision, taken or not, goes to the audit log with the inputs it was made from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Literal

from gwlb_fleet.errors import ScalingConflict
from gwlb_fleet.events import AlarmEvent
from gwlb_fleet.ports import ScalingInstance
from gwlb_fleet.state.records import GroupRecord, InstanceRecord
from gwlb_fleet.workflows.context import WorkflowContext

Intent = Literal["out", "in"]


@dataclass(frozen=True)
class Candidate:
    instance_id: str
    zone: str
    unhealthy: bool
    ready: bool
    flows: int
    zone_size: int

    def rank(self) -> tuple[int, int, int, int, str]:
        """Smaller goes first: unhealthy, not ready, the bigger zone, fewer flows, then id."""
        return (
            0 if self.unhealthy else 1,
            0 if not self.ready else 1,
            -self.zone_size,
            self.flows,
            self.instance_id,
        )


def handle(event: AlarmEvent, ctx: WorkflowContext) -> dict[str, Any]:
    alarm = event.alarm
    intent = _intent(ctx, alarm.rule_name)
    inputs = event.audit_inputs
    if intent is None:
        ctx.audit("scale_ignored", "skipped", f"alarm {alarm.rule_name} is not a scaling alarm", **inputs)
        return {"decision": "none", "reason": "not a scaling alarm"}
    if not alarm.alerting:  # F-CMS-14: the state is curLevel; OK = recovered
        ctx.audit(f"scale_{intent}", "skipped", f"alarm is {alarm.cur_level}, not alerting", **inputs)
        return {"decision": "none", "reason": f"alarm {alarm.cur_level}"}
    return scale_out(ctx, inputs) if intent == "out" else scale_in(ctx, inputs)


def _intent(ctx: WorkflowContext, rule_name: str) -> Intent | None:
    if rule_name.startswith(ctx.settings.scale_out_alarm_prefix):
        return "out"
    if rule_name.startswith(ctx.settings.scale_in_alarm_prefix):
        return "in"
    return None


def scale_out(ctx: WorkflowContext, inputs: dict[str, Any]) -> dict[str, Any]:
    settings, now = ctx.settings, ctx.now()
    group = ctx.app.ess.describe_group(settings.scaling_group_id, ctx.deadline)
    record = _group_record(ctx)
    inputs = {**inputs, "size": group.total, "max": group.max_size, "desired": group.desired}
    since = now - record.last_scale_out
    if since < settings.scale_out_cooldown_s:
        return _skip(ctx, "out", f"in cooldown ({since:.0f}s of {settings.scale_out_cooldown_s}s)", inputs)
    step = min(settings.scale_out_step, group.max_size - group.total)
    if step <= 0:
        return _skip(ctx, "out", f"at the group's maximum of {group.max_size}", inputs)
    try:
        activity = ctx.app.ess.scale_by(settings.scaling_group_id, step, ctx.deadline)
    except ScalingConflict as exc:
        ctx.audit("scale_out", "skipped", f"ESS is busy with another scaling activity: {exc}", **inputs)
        raise  # transient: FC retries the alarm after the activity
    ctx.update_group(lambda g: replace(g, last_scale_out=now))
    ctx.audit(
        "scale_out",
        "ok",
        f"+{step} appliance(s): {inputs['alarm']} at {inputs['level']}",
        activity_id=activity,
        step=step,
        **inputs,
    )
    return {"decision": "out", "step": step, "activity_id": activity}


def scale_in(ctx: WorkflowContext, inputs: dict[str, Any]) -> dict[str, Any]:
    settings, now = ctx.settings, ctx.now()
    group = ctx.app.ess.describe_group(settings.scaling_group_id, ctx.deadline)
    inputs = {**inputs, "size": group.total, "min": group.min_size, "desired": group.desired}
    record = _group_record(ctx)
    since = now - max(record.last_scale_in, record.last_scale_out)
    if since < settings.scale_in_cooldown_s:
        return _skip(ctx, "in", f"in cooldown ({since:.0f}s of {settings.scale_in_cooldown_s}s)", inputs)
    if group.total <= group.min_size:
        return _skip(ctx, "in", f"at the group's minimum of {group.min_size}", inputs)
    instances = ctx.app.ess.list_instances(settings.scaling_group_id, ctx.deadline)
    records = {r.instance_id: r for r in ctx.app.state.list_instances(settings.scaling_group_id)}
    busy = _warming_or_changing(ctx, instances, records, now)
    if busy:
        return _skip(ctx, "in", f"{busy} is launching, warming up or leaving", inputs)
    candidates = candidates_for_scale_in(ctx, instances, records)
    if not candidates:
        return _skip(ctx, "in", "no instance can be removed (all protected or not in service)", inputs)
    victim = min(candidates, key=Candidate.rank)
    inputs = {**inputs, "candidates": [c.__dict__ for c in candidates], "victim": victim.instance_id}
    try:
        activity = ctx.app.ess.remove_instances(settings.scaling_group_id, [victim.instance_id], ctx.deadline)
    except ScalingConflict as exc:
        ctx.audit("scale_in", "skipped", f"ESS is busy with another scaling activity: {exc}", **inputs)
        raise
    ctx.update_group(lambda g: replace(g, last_scale_in=now))
    why = (
        "unhealthy"
        if victim.unhealthy
        else "not ready"
        if not victim.ready
        else f"fewest live flows ({victim.flows}) in the largest zone {victim.zone}"
    )
    ctx.audit(
        "scale_in",
        "ok",
        f"removing {victim.instance_id}: {why}",
        victim.instance_id,
        activity_id=activity,
        **inputs,
    )
    return {"decision": "in", "victim": victim.instance_id, "activity_id": activity}


def candidates_for_scale_in(
    ctx: WorkflowContext, instances: list[ScalingInstance], records: dict[str, InstanceRecord]
) -> list[Candidate]:
    in_service = [i for i in instances if i.lifecycle_state == "InService"]
    zones = Counter(i.zone for i in in_service)
    # Members are the instances' data ENIs (F-GWLB-2): health by instance id.
    instance_of = {r.data_eni_id: r.instance_id for r in records.values() if r.data_eni_id}
    health = {
        instance_of.get(h.server_id, h.server_id): h.status
        for h in ctx.app.gwlb.listener_health(ctx.settings.listener_id, ctx.deadline)
    }
    candidates = []
    for instance in in_service:
        record = records.get(instance.instance_id)
        ready = record is not None and record.state == "in_service"
        flows = 0
        if ready and record is not None:
            status = ctx.app.appliance.status(record.data_ip, record.serial, ctx.deadline)
            ready = status is not None and status.healthy
            flows = status.active_flows if status is not None else 0
        unhealthy = instance.health_status == "Unhealthy" or health.get(instance.instance_id) == "Unhealthy"
        candidates.append(
            Candidate(instance.instance_id, instance.zone, unhealthy, ready, flows, zones[instance.zone])
        )
    return candidates


def _warming_or_changing(
    ctx: WorkflowContext, instances: list[ScalingInstance], records: dict[str, InstanceRecord], now: float
) -> str:
    """An instance whose numbers do not mean anything yet, or that is already on its way out."""
    for instance in instances:
        if instance.lifecycle_state not in ("InService", "Protected", "Standby"):
            return instance.instance_id
    for record in records.values():
        if record.state in ("launching", "ready", "draining", "delicensed"):
            return record.instance_id
        in_service_since = record.steps.get("hook_completed", 0.0)
        if record.state == "in_service" and now - in_service_since < ctx.settings.warmup_s:
            return record.instance_id
    return ""


def _skip(ctx: WorkflowContext, intent: Intent, reason: str, inputs: dict[str, Any]) -> dict[str, Any]:
    ctx.audit(f"scale_{intent}", "skipped", reason, **inputs)
    return {"decision": "none", "reason": reason}


def _group_record(ctx: WorkflowContext) -> GroupRecord:
    group_id = ctx.settings.scaling_group_id
    return ctx.app.state.get_group(group_id) or GroupRecord(group_id)
