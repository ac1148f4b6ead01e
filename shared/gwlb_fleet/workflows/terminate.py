"""Terminate: drain, release, remove, commit — each verified — then let ESS have the instance.

Used by the scale-in hook, by an abandoned launch (ending in ABANDON), and by reconcile for
instances that vanished without a hook (no hook to finish). Drain: the member leaves the GWLB
server group with connection draining; then the appliance's own live flow count must reach zero
or the drain deadline pass. VM-Series: the licence is deactivated (the sw_fw_license plugin) and the
device taken out of its device group, template stack and managed devices; a Panorama commit must
finish OK; then both are read back — the licence no longer counted, the device gone. What reading
back contradicts is requested and committed again; a step that fails is never recorded as done.

An instance the control plane never recorded (launched before deployment, or its record lost) is
identified first, from the cloud: its addresses from ECS, its GWLB member among its own ENIs, its
serial from Panorama by its management address. It then goes through the same verified steps.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Unpack

from gwlb_fleet.errors import VerificationFailed
from gwlb_fleet.ports import LifecycleResult
from gwlb_fleet.state.records import InstanceRecord
from gwlb_fleet.workflows import hooks, launch
from gwlb_fleet.workflows.context import WorkflowContext
from gwlb_fleet.workflows.steps import Done, GiveUp, Progress, Step, StepFields, StepResult, Wait, run_steps


def identify(ctx: WorkflowContext, record: InstanceRecord) -> StepResult:
    """What the other steps need to know of the instance, read from the cloud where the record
    lacks it: never a guess — a step that cannot tell skips nothing it should have done."""
    if _identified(ctx, record):
        return Done("known: addresses, data ENI and serial on record")
    found = ctx.app.ecs.describe_instances([record.instance_id], ctx.deadline)
    instance = next((i for i in found if i.instance_id == record.instance_id), None)
    if instance is None:
        if found:
            answered = ", ".join(repr(i.instance_id) for i in found)
            raise VerificationFailed(
                f"DescribeInstances for {record.instance_id} answered about {answered}: not used"
            )
        # Released already: its member and device, if any, are reconcile's orphans (by ENI, and
        # by a disconnected device no instance owns).
        return Done("the instance is gone from ECS: nothing left to find by its address", audited=True)
    fields = StepFields(
        private_ip=record.private_ip or instance.private_ip, zone=record.zone or instance.zone
    )
    fields.update(_data_member(ctx, record))
    if _vmseries(ctx) and not record.serial:
        serial = record.serial_seen or _serial_at(ctx, fields["private_ip"])
        if serial:
            fields["serial"] = serial
    note = ", ".join(f"{k} {v}" for k, v in fields.items() if v and getattr(record, k) != v)
    return Done(f"identified from the cloud: {note or 'nothing more to find'}", fields=fields, audited=True)


def _identified(ctx: WorkflowContext, record: InstanceRecord) -> bool:
    network = bool(record.private_ip and record.data_ip and record.data_eni_id)
    return network and (bool(record.serial) or not _vmseries(ctx))


def _data_member(ctx: WorkflowContext, record: InstanceRecord) -> StepFields:
    """The data ENI: the one of the instance's ENIs that is a member of our server group (that is
    what must leave it), else the one launch would have registered (for the drain's status)."""
    if record.data_eni_id and record.data_ip:
        return StepFields()
    enis = {e.eni_id: e for e in ctx.app.ecs.network_interfaces(record.instance_id, ctx.deadline)}
    for member in ctx.app.gwlb.list_members(ctx.settings.server_group_id, ctx.deadline):
        if member.server_id in enis:
            return StepFields(data_eni_id=member.server_id, data_ip=enis[member.server_id].private_ip)
    chosen = launch.data_interface(ctx, record.instance_id)
    if isinstance(chosen, str):
        return StepFields()  # not a member, and no data interface to ask about flows
    return StepFields(data_eni_id=chosen.eni_id, data_ip=chosen.private_ip)


def _serial_at(ctx: WorkflowContext, management_ip: str) -> str:
    """A VM-Series registers with Panorama from its management interface (the primary ENI)."""
    if not management_ip:
        return ""
    devices = [d for d in ctx.app.panorama.devices(ctx.deadline) if d.ip == management_ip]
    if len(devices) > 1:
        serials = ", ".join(d.serial for d in devices)
        raise VerificationFailed(
            f"Panorama lists {serials} at {management_ip}: which one is ours cannot be told"
        )
    return devices[0].serial if devices else ""


def deregister(ctx: WorkflowContext, record: InstanceRecord) -> StepResult:
    group = ctx.settings.server_group_id
    members = {m.server_id: m for m in ctx.app.gwlb.list_members(group, ctx.deadline)}
    # The data ENI (F-GWLB-2); an Ecs member by instance id is one an older version registered.
    member = members.get(record.data_eni_id) if record.data_eni_id else None
    if member is None:
        legacy = members.get(record.instance_id)
        member = legacy if legacy is not None and legacy.server_type == "Ecs" else None
    if member is None:
        return Done("not a member of the server group (any more)")
    if member.status not in ("Draining", "Removing"):
        ctx.app.gwlb.remove_server(
            group, member.server_id, member.server_ip, ctx.deadline, member.server_type
        )
        ctx.audit(
            "deregister_requested",
            "ok",
            "asked the GWLB to remove the member with draining",
            record.instance_id,
            server_group_id=group,
            server_type=member.server_type,
            server_id=member.server_id,
        )
    if _past_drain_deadline(ctx, record):
        return Done(
            f"the member is still {member.status} at the drain deadline; the GWLB finishes it",
            fields={"member_left_draining": True},
            audited=True,
        )
    return Wait(f"the GWLB member is {member.status}")


def drain(ctx: WorkflowContext, record: InstanceRecord) -> StepResult:
    status = ctx.app.appliance.status(record.data_ip, record.serial, ctx.deadline) if record.data_ip else None
    if status is None:
        return Done("the appliance no longer answers: no live flows left on it")
    if status.active_flows == 0:
        return Done("no live flows left")
    if _past_drain_deadline(ctx, record):
        return Done(
            f"drain deadline passed with {status.active_flows} live flows",
            fields={"flows_cut": status.active_flows},
            audited=True,
        )
    return Wait(f"{status.active_flows} live flows still on the appliance")


def request_deactivation(ctx: WorkflowContext, record: InstanceRecord) -> StepResult:
    if not _licensed_kind(ctx, record):
        return Done("no licence to release")
    if ctx.now() < record.release_retry_at:
        return Wait(
            f"the licence still counted after {record.release_attempts} deactivations; "
            f"deactivating again in {record.release_retry_at - ctx.now():.0f}s"
        )
    if ctx.app.licensing.is_licensed(record.serial, ctx.deadline):
        ctx.app.licensing.deactivate(record.serial, ctx.deadline)
        return Done(f"licence deactivation of {record.serial} accepted; read back after the commit")
    return Done(f"{record.serial} holds no licence")


def request_device_removal(ctx: WorkflowContext, record: InstanceRecord) -> StepResult:
    if not _licensed_kind(ctx, record):
        return Done("no Panorama device")
    panorama = ctx.app.panorama
    device = next((d for d in panorama.devices(ctx.deadline) if d.serial == record.serial), None)
    if device is None:
        return Done(f"{record.serial} is not a managed device (any more)")
    if device.device_group:
        panorama.remove_from_device_group(record.serial, device.device_group, ctx.deadline)
    if device.template_stack:
        panorama.remove_from_template_stack(record.serial, device.template_stack, ctx.deadline)
    panorama.remove_managed_device(record.serial, ctx.deadline)
    return Done(
        f"{record.serial} removed from its device group, template stack and managed devices; "
        "read back after the commit"
    )


def commit(ctx: WorkflowContext, record: InstanceRecord) -> StepResult:
    if not _licensed_kind(ctx, record):
        return Done("no Panorama commit needed")
    job_id = record.commit_job
    failures = record.commit_failures
    if not job_id:
        failed_at = record.commit_failed_at
        if failures >= ctx.settings.commit_attempts and ctx.now() - failed_at < COMMIT_PAUSE_S:
            # Something in Panorama keeps commits failing (another admin's change, a validation
            # error): keep the hook open, say so loudly, and try again every few minutes.
            raise VerificationFailed(
                f"the Panorama commit failed {failures} times in a row; trying again in "
                f"{COMMIT_PAUSE_S - (ctx.now() - failed_at):.0f}s; see Panorama's job log"
            )
        job_id = ctx.app.panorama.commit(
            f"gwlb-fleet: release {record.serial} ({record.instance_id})", ctx.deadline
        )
        if not job_id:
            return Done("nothing to commit: Panorama already holds this")
        return Wait(f"commit job {job_id} started", fields={"commit_job": job_id})
    job = ctx.app.panorama.job(job_id, ctx.deadline)
    if not job.finished:
        return Wait(f"commit job {job_id} is {job.status}")
    if not job.succeeded:
        ctx.audit(
            "commit",
            "failed",
            f"commit job {job_id} ended {job.result}: {job.details}",
            record.instance_id,
            job_id=job_id,
        )
        # F-PAN-2: finished is not succeeded; a FAIL is never recorded as committed.
        return Wait(
            f"commit job {job_id} failed; committing again",
            fields={
                "commit_job": "",
                "commit_failures": failures + 1,
                "commit_failed_at": ctx.now(),
                "last_error": f"commit job {job_id} ended {job.result}: {job.details}"[:500],
            },
        )
    return Done(
        f"commit job {job_id} finished OK",
        fields={"commit_job": "", "commit_failures": 0, "last_commit_job": job_id},
        audited=True,
    )


COMMIT_PAUSE_S = 600

REQUESTED = ("deactivation_requested", "device_removal_requested", "committed")


def verify_licence_released(ctx: WorkflowContext, record: InstanceRecord) -> StepResult:
    """F-PAN-3: released = the deactivation was accepted (``deactivation_requested``), the commit
    of the plugin's change finished OK (``committed``), and the plugin no longer lists the serial —
    read from the plugin, never from the device's presence in Panorama's device list."""
    if not _licensed_kind(ctx, record):
        return Done("nothing to release")
    if not ctx.app.licensing.is_licensed(record.serial, ctx.deadline):
        return Done(f"licence of {record.serial} released (read back)")
    attempts = record.release_attempts + 1
    still = f"the licence of {record.serial} still counts after deactivation and commit ({attempts} times)"
    if attempts >= ctx.settings.licence_release_attempts:
        # The licence server disagrees with the plugin's answer, again and again: more commits
        # will not change that. The instance goes; the licence is left to an operator, alarmed.
        return GiveUp(f"{still}; left for an operator", fields={"release_attempts": attempts})
    backoff = min(ctx.settings.licence_release_backoff_s * 2 ** (attempts - 1), LICENCE_BACKOFF_MAX_S)
    _redo(ctx, record, release_attempts=attempts, release_retry_at=ctx.now() + backoff)
    raise VerificationFailed(f"{still}; deactivating again in {backoff:.0f}s")


LICENCE_BACKOFF_MAX_S = 1800.0


def verify_device_removed(ctx: WorkflowContext, record: InstanceRecord) -> StepResult:
    if not _licensed_kind(ctx, record):
        return Done("no Panorama device")
    if any(d.serial == record.serial for d in ctx.app.panorama.devices(ctx.deadline)):
        _redo(ctx, record)
        raise VerificationFailed(
            f"{record.serial} is still in Panorama's devices after the commit; removing again"
        )
    return Done(f"{record.serial} gone from Panorama (read back)")


def _redo(ctx: WorkflowContext, record: InstanceRecord, **fields: Unpack[StepFields]) -> None:
    """Reading back says the requests did not take: forget them, so that they are made again."""
    ctx.update(
        record.instance_id,
        lambda r: replace(r, steps={k: v for k, v in r.steps.items() if k not in REQUESTED}, **fields),
    )


def hand_back(ctx: WorkflowContext, record: InstanceRecord) -> StepResult:
    """Let ESS have the instance: finish the hook that holds it (scale-in: CONTINUE; an abandoned
    launch: ABANDON). An instance that vanished has no hook left to finish."""
    abandoned = bool(record.abandoned)
    result: LifecycleResult = "ABANDON" if abandoned else "CONTINUE"
    holding = record.hook_id and (abandoned or record.hook_transition == "SCALE_IN")
    if holding and hooks.finish(ctx, record, result):
        return Done(f"lifecycle action completed: {result}")
    return Done("no lifecycle action holds it")


STEPS = (
    Step("identified", identify),
    Step("deregistered", deregister),
    Step("drained", drain),
    Step("deactivation_requested", request_deactivation),
    Step("device_removal_requested", request_device_removal),
    Step("committed", commit),
    Step("licence_released", verify_licence_released),
    Step("device_removed", verify_device_removed, enters="delicensed"),
    Step("handed_back", hand_back, enters="gone"),
)


def start(ctx: WorkflowContext, record: InstanceRecord, reason: str) -> InstanceRecord | None:
    """Move an instance into draining (from wherever it was), with a drain deadline."""
    now = ctx.now()

    def change(r: InstanceRecord) -> InstanceRecord | None:
        if r.state in ("draining", "delicensed", "gone"):
            return None
        return replace(
            r.moved_to("draining"),
            phase_deadline=now + ctx.settings.drain_timeout_s,
            terminate_reason=reason,
        )

    return ctx.update(record.instance_id, change)


def advance(ctx: WorkflowContext, instance_id: str) -> Progress:
    return run_steps(ctx, instance_id, STEPS, while_waiting=hooks.keep_alive)


def _past_drain_deadline(ctx: WorkflowContext, record: InstanceRecord) -> bool:
    return bool(record.phase_deadline) and ctx.now() >= record.phase_deadline


def _licensed_kind(ctx: WorkflowContext, record: InstanceRecord) -> bool:
    return _vmseries(ctx) and bool(record.serial)


def _vmseries(ctx: WorkflowContext) -> bool:
    return ctx.settings.appliance_kind == "vmseries"
