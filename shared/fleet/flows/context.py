"""What every flow step works with: the ports, the deadline, the clock, and two habits —
every decision and side effect goes to the audit log, and every record change is a
compare-and-set that reloads and re-decides when another invocation got there first."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleet.auditlog import AuditEvent, Outcome
from fleet.deadline import Deadline
from fleet.events import continuation
from fleet.state import InstanceRecord, VersionConflict

log = logging.getLogger("fleet.flows")

CAS_ATTEMPTS = 5


@dataclass
class FlowContext:
    app: Any  # fleet.app.App
    deadline: Deadline
    function: str
    correlation_id: str = ""
    request_id: str = ""
    clock: Callable[[], float] = time.time
    audited: list[AuditEvent] = field(default_factory=list)

    @classmethod
    def of(cls, invocation: Any, function: str) -> FlowContext:
        """The context of a handler invocation (fleet.handler.Invocation)."""
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
        """Look at this instance again after the poll interval, in a new invocation."""
        payload = continuation(instance_id, reason, f"{instance_id}/{uuid.uuid4().hex}")
        self.app.scheduler.call_later("lifecycle", payload, self.settings.poll_interval_s, self.deadline)


def _touched(record: InstanceRecord, now: float) -> InstanceRecord:
    from dataclasses import replace

    return replace(record, updated=now)
