"""An in-memory audit log (AuditLogPort) that fails the way the SLS adapter does.

``fail_next`` takes SLS error codes, one per write: transient ones (``ServerBusy``,
``InternalServerError``, ``WriteQuotaExceed`` ...) raise TransientError as the adapter does once
its retries are spent; any other (``Unauthorized``, ``LogStoreNotExist``) PermanentError.
``fault`` fails every write with its code until cleared. Nothing is kept from a failed write.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from gwlb_fleet.errors import FleetError, PermanentError, TransientError
from gwlb_fleet.sls.auditlog import AuditEvent
from gwlb_fleet.sls.client import TRANSIENT_CODES


@dataclass
class FakeAuditLog:
    fail_next: list[str] = field(default_factory=list)
    fault: str | None = None
    events: list[AuditEvent] = field(default_factory=list)
    writes: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def write(self, events: Sequence[AuditEvent]) -> None:
        with self._lock:
            self.writes += 1
            code = self.fail_next.pop(0) if self.fail_next else self.fault
            if code:
                kind: type[FleetError] = TransientError if code in TRANSIENT_CODES else PermanentError
                raise kind(f"PutLogs fleet-audit: {code} (injected)", code=code, service="sls")
            self.events.extend(events)

    def actions(self, instance_id: str = "") -> list[str]:
        """The actions recorded, in order (of one instance, if given)."""
        return [e.action for e in self.events if not instance_id or e.instance_id == instance_id]

    def unique(self) -> list[AuditEvent]:
        """The events as a reader that deduplicates on event_id sees them."""
        seen: dict[str, AuditEvent] = {}
        for event in self.events:
            seen.setdefault(event.event_id, event)
        return list(seen.values())
