"""Reconcile (the timer): compare the four records — ESS instances, GWLB members, Panorama
devices, licences — with ours, and repair the drift.

- instances that vanished without a hook: their licence and Panorama entry are released (the
  terminate steps, with no hook to finish);
- instances in ESS we have no record of: adopted (a hook event we never got: the pending
  lifecycle action is found through the scaling activity and the flow resumes);
- GWLB members whose instance is gone: removed; in-service instances not registered: registered;
- Panorama devices that belong to no instance: their licence released, the device removed;
- flows that stopped half way (a lost continuation, a crash): advanced from where they stopped;
- the bootstrap vm-auth-key: renewed before it expires.

Drift counts go to CloudMonitor; every repair to the audit log.

Failures: each record is repaired on its own. When the flow reconcile runs for one instance
(vanished, adopted, resumed) raises (an API error that outlasted the adapter's retries, a lost
compare-and-set, a bug), that instance is
counted in ``failed``, audited (``repair_<kind>``, outcome "failed", with the error) and the
other instances are repaired all the same; a repair of the whole (listing GWLB members, the
orphan devices) that raises is treated alike, and the next repair runs. Drift and failures are
published and audited, and only then does the invocation raise ``RepairsFailed`` naming every
failure. Raising, rather than returning, makes the failure FC's to record (the
function's error count, its one async retry, then the dead letter: template.yml) instead of a
line no one reads; raising only at the end keeps one broken record from holding up every other.
A retry repeats the whole comparison, which is safe: every repair reads the records afresh and
the flows only move forward. What reconcile finds rather than what raised (a commit job that
failed, a licence still listed, an instance with no data interface) is counted and audited as
before and retried next round, without failing the invocation; so is a vm-auth-key renewal that
failed (audited "failed", the old key still valid until it is renewed next round).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from gwlb_fleet.errors import FleetError
from gwlb_fleet.events import TimerEvent
from gwlb_fleet.panos import bootstrap
from gwlb_fleet.ports import MetricPoint, ScalingInstance
from gwlb_fleet.state.records import AlreadyExists, GroupRecord, InstanceRecord, VersionConflict
from gwlb_fleet.workflows import launch, lifecycle, terminate
from gwlb_fleet.workflows.context import WorkflowContext, continuation_overdue

# ESS states in which an instance is, or is about to be, serving traffic.
LIVE_STATES = frozenset({"InService", "Protected", "Standby", "Pending", "Pending:Wait"})


@dataclass
class Drift:
    vanished: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    orphan_members: list[str] = field(default_factory=list)
    unregistered: list[str] = field(default_factory=list)
    orphan_devices: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    # What raised (also in ``failed``): the invocation raises at the end when any did.
    errors: list[str] = field(default_factory=list, repr=False)

    def counts(self) -> dict[str, int]:
        return {name: len(value) for name, value in self.__dict__.items() if name != "errors"}

    def reported(self) -> dict[str, list[str]]:
        return {name: value for name, value in self.__dict__.items() if value and name != "errors"}


class RepairsFailed(FleetError):
    """Some repairs raised; every other one was done, and all of it published and audited."""


def _isolated(
    ctx: WorkflowContext, drift: Drift, kind: str, instance_id: str, repair: Callable[[], None]
) -> None:
    """Run one record's (or one whole) repair; if it raises, count and audit the failure and go
    on with the next (see the module's docstring)."""
    try:
        repair()
    except Exception as exc:  # noqa: BLE001 - any failure is this record's alone; raised at the end
        message = f"{kind}: {instance_id}: {exc}" if instance_id else f"{kind}: {exc}"
        drift.failed.append(message)
        drift.errors.append(message)
        audit_kind = f"repair_{kind}" if instance_id else f"reconcile_{kind}"
        ctx.audit(audit_kind, "failed", str(exc) or type(exc).__name__, instance_id, error=type(exc).__name__)


def handle(event: TimerEvent, ctx: WorkflowContext) -> dict[str, Any]:
    drift = reconcile(ctx)
    if drift.errors:
        raise RepairsFailed(
            f"{len(drift.errors)} repairs failed, the others were done: {'; '.join(drift.errors)}"
        )
    return {"drift": drift.counts(), **drift.reported()}


def reconcile(ctx: WorkflowContext) -> Drift:
    settings, drift = ctx.settings, Drift()
    instances = {
        i.instance_id: i for i in ctx.app.ess.list_instances(settings.scaling_group_id, ctx.deadline)
    }
    records = {r.instance_id: r for r in ctx.app.state.list_instances(settings.scaling_group_id)}
    for repair in (_vanished, _adopt, _members, _devices, _resume):
        # one repair failing must not stop the others; it is reported
        _isolated(
            ctx,
            drift,
            repair.__name__.strip("_"),
            "",
            lambda: repair(ctx, instances, records, drift),  # noqa: B023 - run at once
        )
        records = {r.instance_id: r for r in ctx.app.state.list_instances(settings.scaling_group_id)}
    _renew_vm_auth_key(ctx, drift)
    _publish(ctx, drift)
    return drift


def _vanished(
    ctx: WorkflowContext,
    instances: dict[str, ScalingInstance],
    records: dict[str, InstanceRecord],
    drift: Drift,
) -> None:
    """Records of instances ESS no longer has and ECS no longer runs: terminated without a hook."""
    missing = [r for r in records.values() if r.state != "gone" and r.instance_id not in instances]
    if not missing:
        return
    alive = {
        i.instance_id
        for i in ctx.app.ecs.describe_instances([r.instance_id for r in missing], ctx.deadline)
        if i.status not in ("Stopped", "Deleted")
    }
    for record in missing:
        if record.instance_id in alive or record.state in ("draining", "delicensed"):
            continue  # still there (detached, standby), or already being cleaned up
        _isolated(ctx, drift, "vanished", record.instance_id, partial(_release_vanished, ctx, record, drift))


def _release_vanished(ctx: WorkflowContext, record: InstanceRecord, drift: Drift) -> None:
    ctx.update(record.instance_id, lambda r: replace(r, hook_id="", hook_token=""))
    terminate.start(ctx, record, "vanished from the scaling group without a hook")
    lifecycle.advance(ctx, record.instance_id)
    ctx.audit(
        "repair_vanished",
        "ok",
        "instance gone without a hook: releasing what it held",
        record.instance_id,
        state=record.state,
        serial=record.serial,
    )
    drift.vanished.append(record.instance_id)


def _adopt(
    ctx: WorkflowContext,
    instances: dict[str, ScalingInstance],
    records: dict[str, InstanceRecord],
    drift: Drift,
) -> None:
    """ESS instances we have no record of: a lost hook event, or a group we just took over."""
    for instance in instances.values():
        if instance.instance_id in records or instance.lifecycle_state not in LIVE_STATES:
            continue
        _isolated(ctx, drift, "adopted", instance.instance_id, partial(_adopt_one, ctx, instance, drift))


def _adopt_one(ctx: WorkflowContext, instance: ScalingInstance, drift: Drift) -> None:
    now = ctx.now()
    launching = instance.lifecycle_state.startswith("Pending")
    record = InstanceRecord(
        instance_id=instance.instance_id,
        scaling_group_id=ctx.settings.scaling_group_id,
        state="launching",
        zone=instance.zone,
        created=now,
        updated=now,
        hook_transition="SCALE_OUT" if launching else "",
        phase_deadline=now + ctx.settings.launch_timeout_s,
        adopted=instance.lifecycle_state,
    )
    try:
        # Its launch steps then verify it (ready, member, Available); a pending lifecycle
        # action, if it has one, is found through its scaling activity and completed.
        ctx.app.state.create_instance(record)
    except AlreadyExists:
        return  # created meanwhile by a hook event: nothing to adopt
    ctx.audit(
        "repair_adopted",
        "ok",
        f"ESS instance in {instance.lifecycle_state} with no record",
        instance.instance_id,
    )
    drift.adopted.append(instance.instance_id)
    lifecycle.advance(ctx, instance.instance_id)


def _members(
    ctx: WorkflowContext,
    instances: dict[str, ScalingInstance],
    records: dict[str, InstanceRecord],
    drift: Drift,
) -> None:
    """Members are compared by ENI (F-GWLB-2): a member whose ENI belongs to no instance of the
    group is removed; an in-service instance whose data ENI is not a member is registered."""
    group = ctx.settings.server_group_id
    members = {m.server_id: m for m in ctx.app.gwlb.list_members(group, ctx.deadline)}
    owners = {r.data_eni_id: r for r in records.values() if r.data_eni_id}
    for server_id, member in members.items():
        # An Ecs member (an older version's) is named by its instance id.
        record = owners.get(server_id) or (records.get(server_id) if member.server_type == "Ecs" else None)
        owner = (
            record.instance_id if record is not None else (server_id if member.server_type == "Ecs" else "")
        )
        leaving = record is not None and record.state in ("draining", "delicensed")
        if owner not in instances and not leaving and member.status not in ("Draining", "Removing"):
            ctx.app.gwlb.remove_server(group, server_id, member.server_ip, ctx.deadline, member.server_type)
            ctx.audit(
                "repair_orphan_member",
                "ok",
                "a GWLB member whose ENI belongs to no instance in the group",
                owner,
                server_id=server_id,
                server_type=member.server_type,
                server_ip=member.server_ip,
            )
            drift.orphan_members.append(server_id)
    for record in records.values():
        instance = instances.get(record.instance_id)
        if record.state != "in_service" or instance is None or instance.lifecycle_state != "InService":
            continue
        if record.data_eni_id in members:
            continue
        if not record.data_eni_id:
            chosen = launch.data_interface(ctx, record.instance_id)
            if isinstance(chosen, str):
                drift.failed.append(f"members: {record.instance_id}: {chosen}")
                continue
            eni_id, eni_ip = chosen.eni_id, chosen.private_ip
            record = (
                ctx.update(
                    record.instance_id,
                    lambda r: replace(r, data_eni_id=eni_id, data_ip=eni_ip),  # noqa: B023 - used at once
                )
                or record
            )
            if record.data_eni_id in members:
                continue
        ctx.app.gwlb.add_server(group, record.data_eni_id, record.data_ip, ctx.deadline)
        ctx.audit(
            "repair_unregistered",
            "ok",
            "in service but its data ENI is not a member of the server group",
            record.instance_id,
            server_id=record.data_eni_id,
            server_ip=record.data_ip,
        )
        drift.unregistered.append(record.instance_id)


def _devices(
    ctx: WorkflowContext,
    instances: dict[str, ScalingInstance],
    records: dict[str, InstanceRecord],
    drift: Drift,
) -> None:
    """Panorama devices no instance of ours owns: a licence and a device entry left behind.

    Released like a terminated instance's (F-PAN-3): deactivated through the plugin, removed,
    one partial commit (F-PAN-1) whose job is read in the next round (F-PAN-2); a licence counts
    as released only when that job ended OK and the plugin no longer lists the serial. Until then
    the serial is kept on the group record and released again."""
    if ctx.settings.appliance_kind != "vmseries":
        return
    group = ctx.app.state.get_group(ctx.settings.scaling_group_id) or GroupRecord(
        ctx.settings.scaling_group_id
    )
    if group.orphan_commit_job:
        job = ctx.app.panorama.job(group.orphan_commit_job, ctx.deadline)
        if not job.finished:
            return  # the last round's commit still runs: nothing new until it ends
        _after_orphan_commit(ctx, group.orphan_commit_job, job.succeeded, job.details, drift)
    owned = {r.serial for r in records.values() if r.serial and r.state != "gone"}
    owned |= {r.serial_seen for r in records.values() if r.serial_seen}
    live_ips = {r.private_ip for r in records.values() if r.state != "gone" and r.private_ip}
    orphans = [
        d
        for d in ctx.app.panorama.devices(ctx.deadline)
        if d.serial not in owned and d.ip not in live_ips and not d.connected
    ]
    group = ctx.app.state.get_group(ctx.settings.scaling_group_id) or group
    unreleased = [s for s in group.orphan_unreleased.split(",") if s and s not in owned]
    if not orphans and not unreleased:
        return
    serials = list(dict.fromkeys([*unreleased, *(d.serial for d in orphans)]))
    for serial in serials:
        if ctx.app.licensing.is_licensed(serial, ctx.deadline):
            ctx.app.licensing.deactivate(serial, ctx.deadline)
    for device in orphans:
        if device.device_group:
            ctx.app.panorama.remove_from_device_group(device.serial, device.device_group, ctx.deadline)
        if device.template_stack:
            ctx.app.panorama.remove_from_template_stack(device.serial, device.template_stack, ctx.deadline)
        ctx.app.panorama.remove_managed_device(device.serial, ctx.deadline)
        ctx.audit(
            "repair_orphan_device",
            "ok",
            "a disconnected Panorama device no instance owns: deactivated and removed, not yet committed",
            serial=device.serial,
            ip=device.ip,
        )
        drift.orphan_devices.append(device.serial)
    job_id = ctx.app.panorama.commit("gwlb-fleet: remove orphan devices", ctx.deadline)
    ctx.update_group(
        lambda g: replace(g, orphan_commit_job=job_id, orphan_serials=",".join(serials), orphan_unreleased="")
    )
    ctx.audit(
        "repair_orphan_device_commit",
        "ok",
        f"commit job {job_id} started; its result is read next round" if job_id else "nothing to commit",
        job_id=job_id,
        serials=serials,
    )
    if not job_id:  # nothing to commit: the plugin's list can be read at once
        _after_orphan_commit(ctx, job_id, True, "nothing to commit", drift)


def _after_orphan_commit(ctx: WorkflowContext, job_id: str, ok: bool, details: str, drift: Drift) -> None:
    group = ctx.app.state.get_group(ctx.settings.scaling_group_id) or GroupRecord(
        ctx.settings.scaling_group_id
    )
    serials = [s for s in group.orphan_serials.split(",") if s]
    unreleased: list[str] = []
    if not ok:
        # F-PAN-2: finished is not succeeded. The devices are still in Panorama's running
        # configuration, so the next round finds them again and commits again.
        ctx.audit(
            "repair_orphan_device_commit", "failed", f"commit job {job_id} failed: {details}", job_id=job_id
        )
        drift.failed.append(f"orphan devices: commit job {job_id} failed: {details}")
        unreleased = serials
    else:
        for serial in serials:
            if ctx.app.licensing.is_licensed(serial, ctx.deadline):  # F-PAN-3: still listed
                unreleased.append(serial)
                ctx.audit(
                    "repair_orphan_licence",
                    "failed",
                    f"the licence plugin still lists {serial} after commit job {job_id} ended OK",
                    serial=serial,
                    job_id=job_id,
                )
                drift.failed.append(f"orphan licence {serial}: still listed after the commit")
            else:
                ctx.audit(
                    "repair_orphan_licence", "ok", f"licence of {serial} released (read back)", serial=serial
                )
    ctx.update_group(
        lambda g: replace(g, orphan_commit_job="", orphan_serials="", orphan_unreleased=",".join(unreleased))
    )


def _resume(
    ctx: WorkflowContext,
    instances: dict[str, ScalingInstance],
    records: dict[str, InstanceRecord],
    drift: Drift,
) -> None:
    """Flows that stopped half way: a lost continuation, a crash, a token that never came."""
    for record in records.values():
        if record.state not in ("launching", "ready", "draining", "delicensed"):
            continue
        if not ctx.deadline.allows(4 * ctx.settings.api_timeout_s):
            break
        poll = ctx.settings.poll_interval_s
        if record.updated and ctx.now() - record.updated < poll:
            continue  # changed a moment ago: its invocation is still at it
        if not continuation_overdue(record, ctx.now(), grace_s=poll):
            continue  # waiting, and its continuation is on the way
        _isolated(
            ctx, drift, "resume", record.instance_id, partial(_resume_one, ctx, record.instance_id, drift)
        )


def _resume_one(ctx: WorkflowContext, instance_id: str, drift: Drift) -> None:
    progress = lifecycle.advance(ctx, instance_id)
    drift.resumed.append(f"{instance_id}:{progress.state}")


def _renew_vm_auth_key(ctx: WorkflowContext, drift: Drift) -> None:
    settings = ctx.settings
    if settings.appliance_kind != "vmseries" or not settings.scaling_configuration_id:
        return
    group_id, now = settings.scaling_group_id, ctx.now()
    record = ctx.app.state.get_group(group_id) or GroupRecord(group_id)
    if record.vm_auth_key_expires - now > settings.vm_auth_key_renew_before_s:
        return
    try:
        key = ctx.app.panorama.generate_vm_auth_key(settings.vm_auth_key_lifetime_hours, ctx.deadline)
        authcodes_secret = settings.bootstrap_authcodes_secret  # F-KMS-1: a KMS secret, by name
        authcodes = ctx.app.secrets.get(authcodes_secret, ctx.deadline) if authcodes_secret else ""
        init_cfg = bootstrap.InitCfg(
            panorama_server=settings.bootstrap_panorama_server or settings.panorama_host,
            template_stack=settings.template_stack,
            device_group=settings.device_group,
            vm_auth_key=key,
            authcodes=authcodes,
            plugin_op_commands=settings.bootstrap_plugin_op_commands,
        )
        ctx.app.ess.update_user_data(settings.scaling_configuration_id, init_cfg.user_data(), ctx.deadline)
        expires = now + settings.vm_auth_key_lifetime_hours * 3600
        ctx.app.state.put_group(replace(record, vm_auth_key_expires=expires))
    except (FleetError, VersionConflict) as exc:
        drift.failed.append(f"vm_auth_key: {exc}")
        ctx.audit("renew_vm_auth_key", "failed", str(exc))
        return
    ctx.audit(
        "renew_vm_auth_key", "ok", "new bootstrap vm-auth-key in the scaling configuration", expires=expires
    )  # the key itself is a secret: never in the audit log


def _publish(ctx: WorkflowContext, drift: Drift) -> None:
    group = {"scaling_group_id": ctx.settings.scaling_group_id}
    points = [
        MetricPoint(f"gwlb_fleet_drift_{name}", float(count), group) for name, count in drift.counts().items()
    ]
    ctx.app.monitor.put_custom_metrics(points, ctx.deadline)
    ctx.audit(
        "reconcile",
        "failed" if drift.errors else "ok",
        f"drift counted and published; {len(drift.errors)} repairs raised"
        if drift.errors
        else "drift counted and published",
        **drift.counts(),
    )
