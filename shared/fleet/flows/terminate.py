"""Terminate: drain, release, remove, commit — each verified — then let ESS have the instance.

Used by the scale-in hook, by an abandoned launch (ending in ABANDON), and by reconcile for
instances that vanished without a hook (no hook to finish). Drain: the member leaves the GWLB
server group with connection draining; then the appliance's own live flow count must reach zero
or the drain deadline pass. VM-Series: the licence is deactivated and read back as released, the
device leaves its device group, template stack and managed devices and is read back as gone,
and a Panorama commit must finish OK. A step that fails is retried and never recorded as done.
"""

from __future__ import annotations

from dataclasses import replace

from fleet.errors import VerificationFailed
from fleet.flows import hooks
from fleet.flows.context import FlowContext
from fleet.flows.steps import Done, Progress, Step, StepResult, Wait, run_steps
from fleet.ports import LifecycleResult
from fleet.state import InstanceRecord


def deregister(ctx: FlowContext, record: InstanceRecord) -> StepResult:
    group = ctx.settings.server_group_id
    members = {m.server_id: m for m in ctx.app.gwlb.list_members(group, ctx.deadline)}
    member = members.get(record.instance_id)
    if member is None:
        return Done("not a member of the server group (any more)")
    if member.status not in ("Draining", "Removing"):
        ctx.app.gwlb.remove_server(group, record.instance_id, member.server_ip, ctx.deadline)
        ctx.audit(
            "deregister_requested",
            "ok",
            "asked the GWLB to remove the member with draining",
            record.instance_id,
            server_group_id=group,
        )
    if _past_drain_deadline(ctx, record):
        return Done(
            f"the member is still {member.status} at the drain deadline; the GWLB finishes it",
            extra={"member_left_draining": True},
        )
    return Wait(f"the GWLB member is {member.status}")


def drain(ctx: FlowContext, record: InstanceRecord) -> StepResult:
    status = ctx.app.appliance.status(record.data_ip, record.serial, ctx.deadline) if record.data_ip else None
    if status is None:
        return Done("the appliance no longer answers: no live flows left on it")
    if status.active_flows == 0:
        return Done("no live flows left")
    if _past_drain_deadline(ctx, record):
        return Done(
            f"drain deadline passed with {status.active_flows} live flows",
            extra={"flows_cut": status.active_flows},
        )
    return Wait(f"{status.active_flows} live flows still on the appliance")


def release_licence(ctx: FlowContext, record: InstanceRecord) -> StepResult:
    if not _licensed_kind(ctx, record):
        return Done("nothing to release")
    if ctx.app.licensing.is_licensed(record.serial, ctx.deadline):
        ctx.app.licensing.deactivate(record.serial, ctx.deadline)
    if ctx.app.licensing.is_licensed(record.serial, ctx.deadline):
        raise VerificationFailed(f"the licence of {record.serial} still counts after deactivation")
    return Done(f"licence of {record.serial} released (read back)")


def remove_device(ctx: FlowContext, record: InstanceRecord) -> StepResult:
    if not _licensed_kind(ctx, record):
        return Done("no Panorama device")
    panorama = ctx.app.panorama
    device = next((d for d in panorama.devices(ctx.deadline) if d.serial == record.serial), None)
    if device is not None:
        if device.device_group:
            panorama.remove_from_device_group(record.serial, device.device_group, ctx.deadline)
        if device.template_stack:
            panorama.remove_from_template_stack(record.serial, device.template_stack, ctx.deadline)
        panorama.remove_managed_device(record.serial, ctx.deadline)
        if any(d.serial == record.serial for d in panorama.devices(ctx.deadline)):
            raise VerificationFailed(f"{record.serial} is still in Panorama's device list after removal")
    return Done(f"{record.serial} removed from Panorama (read back)")


def commit(ctx: FlowContext, record: InstanceRecord) -> StepResult:
    if not _licensed_kind(ctx, record):
        return Done("no Panorama commit needed")
    job_id = str(record.extra.get("commit_job", ""))
    attempts = int(record.extra.get("commit_attempts", 0))
    if not job_id:
        if attempts >= ctx.settings.commit_attempts:
            raise VerificationFailed(f"Panorama commit failed {attempts} times; an operator must look")
        job_id = ctx.app.panorama.commit(
            f"gwlb-fleet: remove {record.serial} ({record.instance_id})", ctx.deadline
        )
        return Wait(
            f"commit job {job_id} started", extra={"commit_job": job_id, "commit_attempts": attempts + 1}
        )
    job = ctx.app.panorama.job(job_id, ctx.deadline)
    if not job.finished:
        return Wait(f"commit job {job_id} is {job.status}")
    if not job.succeeded:
        ctx.audit(
            "commit", "failed", f"commit job {job_id} ended {job.result}: {job.details}", record.instance_id
        )
        return Wait(f"commit job {job_id} failed; committing again", extra={"commit_job": ""})
    return Done(f"commit job {job_id} finished OK", extra={"commit_job": job_id})


def finish_hook(ctx: FlowContext, record: InstanceRecord) -> StepResult:
    result: LifecycleResult = "ABANDON" if record.extra.get("abandoned") else "CONTINUE"
    if hooks.hook_open(record) and hooks.finish(ctx, record, result):
        return Done(f"lifecycle action completed: {result}")
    return Done("no lifecycle action to complete")


STEPS = (
    Step("deregistered", deregister),
    Step("drained", drain),
    Step("licence_released", release_licence),
    Step("device_removed", remove_device),
    Step("committed", commit, enters="delicensed"),
    Step("hook_completed", finish_hook, enters="gone"),
)


def start(ctx: FlowContext, record: InstanceRecord, reason: str) -> InstanceRecord | None:
    """Move an instance into draining (from wherever it was), with a drain deadline."""
    now = ctx.now()

    def change(r: InstanceRecord) -> InstanceRecord | None:
        if r.state in ("draining", "delicensed", "gone"):
            return None
        return replace(
            r.moved_to("draining"),
            phase_deadline=now + ctx.settings.drain_timeout_s,
            extra={**r.extra, "terminate_reason": reason},
        )

    return ctx.update(record.instance_id, change)


def advance(ctx: FlowContext, instance_id: str) -> Progress:
    return run_steps(ctx, instance_id, STEPS)


def _past_drain_deadline(ctx: FlowContext, record: InstanceRecord) -> bool:
    return bool(record.phase_deadline) and ctx.now() >= record.phase_deadline


def _licensed_kind(ctx: FlowContext, record: InstanceRecord) -> bool:
    return ctx.settings.appliance_kind == "vmseries" and bool(record.serial)
