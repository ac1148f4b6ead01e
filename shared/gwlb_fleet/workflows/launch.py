"""Launch: an ESS scale-out hook holds a new appliance until it is proven ready, registered in
the GWLB server group and Available; only then is the hook completed with CONTINUE.

Unlike Palo Alto's own automation, the hook is not completed before the firewall is ready; a
launch that does not become ready by its deadline is abandoned and cleaned up (licence, Panorama
entry, GWLB member) by the terminate steps, ending in ABANDON.
"""

from __future__ import annotations

from dataclasses import replace

from gwlb_fleet.errors import VerificationFailed
from gwlb_fleet.ports import NetworkInterface
from gwlb_fleet.state.records import InstanceRecord
from gwlb_fleet.workflows import hooks
from gwlb_fleet.workflows.context import WorkflowContext
from gwlb_fleet.workflows.steps import Done, Progress, Step, StepResult, Wait, run_steps


class InstanceGone(Exception):
    """The instance left the scaling group before its launch finished."""


def describe(ctx: WorkflowContext, record: InstanceRecord) -> StepResult:
    found = ctx.app.ecs.describe_instances([record.instance_id], ctx.deadline)
    instance = next((i for i in found if i.instance_id == record.instance_id), None)
    if instance is None:
        _check_still_in_group(ctx, record)
        if found:
            # An answer about another instance (or one without an id) is never taken for this one.
            answered = ", ".join(repr(i.instance_id) for i in found)
            raise VerificationFailed(
                f"DescribeInstances for {record.instance_id} answered about {answered}: not used"
            )
        return Wait("the instance is not visible in ECS yet")
    if instance.status != "Running":
        return Wait(f"the instance is {instance.status}")
    chosen = data_interface(ctx, record.instance_id)
    if isinstance(chosen, str):
        return Wait(chosen)
    return Done(
        f"{instance.private_ip} (data {chosen.private_ip} on {chosen.eni_id}) in {instance.zone}",
        fields={
            "private_ip": instance.private_ip,
            "data_ip": chosen.private_ip,
            "data_eni_id": chosen.eni_id,
            "zone": instance.zone,
        },
    )


def data_interface(ctx: WorkflowContext, instance_id: str) -> NetworkInterface | str:
    """The ENI the GWLB sends Geneve to (F-ECS-1, F-GWLB-2), or why it cannot be told yet.

    The data ENI is the instance's secondary ENI: the one with the lowest device index when there
    are several (VM-Series numbers its dataplane interfaces in attachment order, ethernet1/1
    first; several secondaries without a device index are refused, never guessed). A Linux NVA
    with a single ENI takes its traffic on the primary ENI, registered as ``Eni`` all the same;
    a VM-Series without a secondary ENI has no data interface yet (its primary is management)."""
    enis = ctx.app.ecs.network_interfaces(instance_id, ctx.deadline)
    secondary = [e for e in enis if e.type == "Secondary" and e.status in ("InUse", "") and e.private_ip]
    if len(secondary) == 1:
        return secondary[0]
    if secondary:
        if any(e.device_index is None for e in secondary):
            return f"{len(secondary)} secondary ENIs and no device index: the data ENI cannot be told"
        return min(secondary, key=lambda e: (e.device_index or 0, e.eni_id))
    primary = [e for e in enis if e.type == "Primary" and e.private_ip]
    if ctx.settings.appliance_kind != "vmseries" and primary:
        return primary[0]
    return "no data ENI (secondary) is attached to the instance yet"


def _check_still_in_group(ctx: WorkflowContext, record: InstanceRecord) -> None:
    members = {i.instance_id for i in ctx.app.ess.list_instances(record.scaling_group_id, ctx.deadline)}
    if record.instance_id not in members:
        raise InstanceGone(f"{record.instance_id} is no longer in the scaling group")


def appliance_ready(ctx: WorkflowContext, record: InstanceRecord) -> StepResult:
    serial = record.serial
    if ctx.settings.appliance_kind == "vmseries":
        device = next((d for d in ctx.app.panorama.devices(ctx.deadline) if d.ip == record.private_ip), None)
        if device is None:
            return Wait("the firewall has not registered with Panorama yet")
        if not device.connected:
            return Wait(
                f"the firewall {device.serial} is not connected to Panorama",
                fields={"serial_seen": device.serial},
            )
        serial = device.serial
    status = ctx.app.appliance.status(record.data_ip, serial, ctx.deadline)
    if status is None or not status.healthy:
        return Wait(
            "the appliance does not pass its health check on the data interface yet",
            fields={"serial_seen": serial} if serial else {},
        )
    return Done(
        f"ready (serial {serial})" if serial else "ready: health check passing", fields={"serial": serial}
    )


def register(ctx: WorkflowContext, record: InstanceRecord) -> StepResult:
    """Add the data ENI as a member (ServerType Eni, F-GWLB-1/F-GWLB-2) and wait, across
    invocations, for the GWLB to call it Available."""
    group = ctx.settings.server_group_id
    if not record.data_eni_id:  # described by an older version, which recorded no ENI
        chosen = data_interface(ctx, record.instance_id)
        if isinstance(chosen, str):
            return Wait(chosen)
        return Wait(
            f"data ENI {chosen.eni_id} found",
            fields={"data_eni_id": chosen.eni_id, "data_ip": chosen.private_ip},
        )
    members = {m.server_id: m for m in ctx.app.gwlb.list_members(group, ctx.deadline)}
    member = members.get(record.data_eni_id)
    if member is None:
        ctx.app.gwlb.add_server(group, record.data_eni_id, record.data_ip, ctx.deadline)
        ctx.audit(
            "register_requested",
            "ok",
            "asked the GWLB to add the data ENI as a member",
            record.instance_id,
            server_group_id=group,
            server_type="Eni",
            server_id=record.data_eni_id,
            server_ip=record.data_ip,
        )
        return Wait("the GWLB is adding the member")
    if member.status != "Available":
        return Wait(f"the member is {member.status}")
    return Done(
        f"the GWLB member {record.data_eni_id} is Available",
        fields={"server_group_id": group},
        audited=True,
    )


def continue_hook(ctx: WorkflowContext, record: InstanceRecord) -> StepResult:
    if hooks.finish(ctx, record, "CONTINUE"):
        return Done("lifecycle action completed: CONTINUE")
    return Done("in service (no lifecycle action was open)")


STEPS = (
    Step("described", describe),
    Step("appliance_ready", appliance_ready, enters="ready"),
    Step("registered", register),
    Step("hook_completed", continue_hook, enters="in_service"),
)


def advance(ctx: WorkflowContext, record: InstanceRecord) -> Progress:
    """One look at a launching instance: go as far as possible, or give up past its deadline."""
    if record.phase_deadline and ctx.now() > record.phase_deadline:
        return abandon(ctx, record, "not ready before the launch deadline")
    if record.hook_expired:
        # ESS gave up on the hook (its default result); if the instance went with it, clean up.
        try:
            _check_still_in_group(ctx, record)
        except InstanceGone as gone:
            return abandon(ctx, record, str(gone))
    try:
        return run_steps(ctx, record.instance_id, STEPS, while_waiting=hooks.keep_alive)
    except InstanceGone as gone:
        return abandon(ctx, ctx.app.state.get_instance(record.instance_id) or record, str(gone))


def abandon(ctx: WorkflowContext, record: InstanceRecord, reason: str) -> Progress:
    """Give up on a launch: clean up what it took (the terminate steps), then ABANDON the hook."""
    from gwlb_fleet.workflows import terminate

    ctx.audit(
        "abandon_launch", "ok", reason, record.instance_id, state=record.state, steps=sorted(record.steps)
    )
    now = ctx.now()
    # A firewall that registered with Panorama has taken a licence even if it never got ready.
    ctx.update(
        record.instance_id,
        lambda r: replace(
            r.moved_to("draining"),
            # Out of heartbeats (F-ESS-6): no drain to wait for, finish while the hook is open.
            phase_deadline=now if r.hook_budget_spent else now + ctx.settings.drain_timeout_s,
            serial=r.serial or r.serial_seen,
            abandoned=reason,
        ),
    )
    return terminate.advance(ctx, record.instance_id)
