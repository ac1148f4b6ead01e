"""What every workflow step works with: the ports, the deadline, the clock, and two habits —
every decision and side effect goes to the audit log, and every record change is a
compare-and-set that reloads and re-decides when another invocation got there first."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import FleetError
from gwlb_fleet.ports import STEP_FAILURE_DIMENSION, FollowUp, MetricPoint
from gwlb_fleet.ports import STEP_FAILURE_METRIC as STEP_FAILURE_METRIC  # re-exported: its old home
from gwlb_fleet.sls.auditlog import AuditEvent, Outcome
from gwlb_fleet.state.records import GroupRecord, InstanceRecord, VersionConflict

if TYPE_CHECKING:
    from gwlb_fleet.app import App
    from gwlb_fleet.settings import Settings

log = logging.getLogger("gwlb_fleet.workflows")

CAS_ATTEMPTS = 5

Record = TypeVar("Record", InstanceRecord, GroupRecord)


@dataclass
class WorkflowContext:
    """One invocation of a workflow: built by the FC handler frame (gwlb_fleet.handler), or by
    whatever else runs a workflow (a test, a script)."""

    app: App
    deadline: Deadline
    function: str  # the FC function, for the audit log
    correlation_id: str = ""  # the event's id
    request_id: str = ""
    audited: list[AuditEvent] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.app.settings

    def now(self) -> float:
        return self.app.clock()

    # --- the audit log ---------------------------------------------------------------------------

    def audit(
        self,
        action: str,
        outcome: Outcome,
        reason: str,
        instance_id: str = "",
        /,
        **inputs: Any,
    ) -> None:
        """Record a decision or a side effect. Written at once: an audit log that lags behind
        what the fleet did is no audit log."""
        event = AuditEvent(
            event_id=uuid.uuid4().hex,
            time=self.now(),
            function=self.function,
            action=action,
            outcome=outcome,
            reason=reason,
            correlation_id=self.correlation_id,
            request_id=self.request_id,
            scaling_group=self.settings.scaling_group_id,
            instance_id=instance_id,
            inputs=inputs,
        )
        self.app.audit.write([event])
        self.audited.append(event)
        level = logging.WARNING if outcome == "failed" else logging.INFO
        log.log(level, f"{action}: {reason}", extra={"instance_id": instance_id, "outcome": outcome})

    def alarm(self, action: str, reason: str, instance_id: str = "") -> None:
        """A failure an operator must see: audited, and counted in the step-failure metric that
        setup's alarm rule watches (``STEP_FAILURE_METRIC``). Publishing it is best effort on top
        of the audit event: a CloudMonitor outage is logged, never raised over the failure itself."""
        self.audit(action, "failed", reason, instance_id)
        # in no application group (GroupId 0): the rule setup puts reads that group's points (F-CMS-11)
        point = MetricPoint(
            STEP_FAILURE_METRIC, 1.0, {STEP_FAILURE_DIMENSION: self.settings.scaling_group_id}, group_id=0
        )
        try:
            self.app.monitor.put_custom_metrics([point], self.deadline)
        except FleetError as exc:
            log.error(
                "could not publish the step-failure metric",
                extra={"instance_id": instance_id, "action": action, "error": str(exc)},
            )

    # --- records ------------------------------------------------------------------------------------

    def update(
        self, instance_id: str, change: Callable[[InstanceRecord], InstanceRecord | None]
    ) -> InstanceRecord | None:
        """Apply ``change`` to the instance's stored record (see ``compare_and_set``); None when
        the instance has no record."""
        state = self.app.state
        return compare_and_set(
            lambda: state.get_instance(instance_id),
            lambda changed: state.update_instance(replace(changed, updated=self.now())),
            change,
            f"{instance_id}: {CAS_ATTEMPTS} writers in a row got there first",
        )

    def update_group(self, change: Callable[[GroupRecord], GroupRecord | None]) -> GroupRecord:
        """Apply ``change`` to our scaling group's record, created on its first write."""
        state, group_id = self.app.state, self.settings.scaling_group_id
        written = compare_and_set(
            lambda: state.get_group(group_id) or GroupRecord(group_id),
            state.put_group,
            change,
            "the group record kept changing under us",
        )
        assert written is not None  # the load above never gives None
        return written

    # --- waiting across invocations ----------------------------------------------------------------------

    def continue_later(self, instance_id: str, reason: str) -> None:
        """Look at this instance again after the poll interval, in a new invocation.

        The record names the one continuation it expects, written before it is scheduled: a
        workflow woken a second time while it waits (a redelivered hook, reconcile resuming a long
        drain) supersedes the continuation already on its way, which then does nothing. Without
        this each wake-up would start a chain of continuations of its own, all doing the same steps."""
        event_id = f"{instance_id}/{uuid.uuid4().hex}"
        delay = self.settings.poll_interval_s
        due = self.now() + delay
        expecting = self.update(
            instance_id, lambda r: replace(r, next_continuation=event_id, next_continuation_due=due)
        )
        if expecting is None:
            return  # no record: nothing to look at again
        self.app.scheduler.follow_up(FollowUp(instance_id, reason, event_id), delay, self.deadline)


def compare_and_set(
    load: Callable[[], Record | None],
    write: Callable[[Record], Record],
    change: Callable[[Record], Record | None],
    exhausted: str,
) -> Record | None:
    """Apply ``change`` to the stored record with compare-and-set (``write`` raises
    VersionConflict when the record moved on since ``load``); on a lost race, reload and apply it
    again to what the winner wrote. ``change`` returning None (or the record as it is) means
    nothing to do. None when there is no record; VersionConflict(``exhausted``) when
    CAS_ATTEMPTS writers in a row got there first."""
    for _ in range(CAS_ATTEMPTS):
        current = load()
        if current is None:
            return None
        changed = change(current)
        if changed is None or changed == current:
            return current
        try:
            return write(changed)
        except VersionConflict:
            continue
    raise VersionConflict(exhausted)


def superseded(record: InstanceRecord, continuation_id: str) -> bool:
    """Whether a later wake-up of the workflow replaced this continuation (see ``continue_later``)."""
    expected = record.next_continuation
    return bool(expected) and expected != continuation_id


# How early a continuation may arrive and still run: clocks of different FC instances differ a
# little, and FC counts the delay from when it took the call, after the record's due was written.
EARLY_SLACK_S = 2.0


def arrived_early(record: InstanceRecord, continuation_id: str, now: float, poll_s: float) -> bool:
    """Whether the continuation the record expects came well before it was due: FC ran it before
    the delay it was asked for (the ``x-fc-async-delay`` header capped, or not honoured, F-FC-4).
    Running the flow's steps then, and scheduling the next continuation, would turn an ignored
    delay into a loop of invocations; such a continuation does nothing, and reconcile resumes the
    flow once its continuation is overdue (``continuation_overdue``)."""
    if record.next_continuation != continuation_id:
        return False
    return now < record.next_continuation_due - min(EARLY_SLACK_S, poll_s / 2)


def continuation_overdue(record: InstanceRecord, now: float, grace_s: float) -> bool:
    """Whether the continuation the record expects should have come by now (lost: a crash
    between writing the record and scheduling it, a dropped delivery), or none is expected."""
    return now > record.next_continuation_due + grace_s
