"""What every flow step works with: the ports, the deadline, the clock, and two habits —
every decision and side effect goes to the audit log, and every record change is a
compare-and-set that reloads and re-decides when another invocation got there first."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.events import continuation
from gwlb_fleet.sls.auditlog import AuditEvent, Outcome
from gwlb_fleet.state.records import InstanceRecord, VersionConflict

log = logging.getLogger("gwlb_fleet.workflows")

CAS_ATTEMPTS = 5
# In an instance record's ``extra``: the continuation the flow waits for, and when it is due.
NEXT_CONTINUATION = "next_continuation"
NEXT_CONTINUATION_DUE = "next_continuation_due"


@dataclass
class WorkflowContext:
    app: Any  # gwlb_fleet.app.App
    deadline: Deadline
    function: str
    correlation_id: str = ""
    request_id: str = ""
    clock: Callable[[], float] = time.time
    audited: list[AuditEvent] = field(default_factory=list)

    @classmethod
    def of(cls, invocation: Any, function: str) -> WorkflowContext:
        """The context of a handler invocation (gwlb_fleet.handler.Invocation)."""
        app = invocation.app
        return cls(
            app,
            invocation.deadline,
            function,
            invocation.event_id,
            invocation.request_id,
            clock=getattr(app, "clock", time.time),
        )

    @property
    def settings(self) -> Any:
        return self.app.settings

    def now(self) -> float:
        return self.clock()

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

    # --- records ------------------------------------------------------------------------------------

    def update(
        self, instance_id: str, change: Callable[[InstanceRecord], InstanceRecord | None]
    ) -> InstanceRecord | None:
        """Apply ``change`` to the stored record with compare-and-set; on a lost race, reload and
        apply it again to what the winner wrote. ``change`` returning None means nothing to do."""
        for _ in range(CAS_ATTEMPTS):
            current: InstanceRecord | None = self.app.state.get_instance(instance_id)
            if current is None:
                return None
            changed = change(current)
            if changed is None or changed == current:
                return current
            try:
                written: InstanceRecord = self.app.state.update_instance(_touched(changed, self.now()))
                return written
            except VersionConflict:
                continue
        raise VersionConflict(f"{instance_id}: {CAS_ATTEMPTS} writers in a row got there first")

    # --- waiting across invocations ----------------------------------------------------------------------

    def continue_later(self, instance_id: str, reason: str) -> None:
        """Look at this instance again after the poll interval, in a new invocation.

        The record names the one continuation it expects, written before it is scheduled: a flow
        woken a second time while it waits (a redelivered hook, reconcile resuming a long drain)
        supersedes the continuation already on its way, which then does nothing. Without this
        each wake-up would start a chain of continuations of its own, all doing the same steps."""
        event_id = f"{instance_id}/{uuid.uuid4().hex}"
        due = self.now() + self.settings.poll_interval_s
        expected = {NEXT_CONTINUATION: event_id, NEXT_CONTINUATION_DUE: due}
        if self.update(instance_id, lambda r: replace(r, extra={**r.extra, **expected})) is None:
            return  # no record: nothing to look at again
        payload = continuation(instance_id, reason, event_id)
        self.app.scheduler.call_later("lifecycle", payload, self.settings.poll_interval_s, self.deadline)


def superseded(record: InstanceRecord, continuation_id: str) -> bool:
    """Whether a later wake-up of the flow replaced this continuation (see ``continue_later``)."""
    expected = record.extra.get(NEXT_CONTINUATION)
    return bool(expected) and expected != continuation_id


def continuation_overdue(record: InstanceRecord, now: float, grace_s: float) -> bool:
    """Whether the continuation the record expects should have come by now (lost: a crash
    between writing the record and scheduling it, a dropped delivery), or none is expected."""
    due = float(record.extra.get(NEXT_CONTINUATION_DUE, 0.0))
    return now > due + grace_s


def _touched(record: InstanceRecord, now: float) -> InstanceRecord:
    return replace(record, updated=now)
