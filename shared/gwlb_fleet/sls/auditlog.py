"""The control plane's audit log: what it did to the fleet, when, and why.

One event per decision or side effect, written to the SLS logstore ``fleet-audit`` (see
scripts/sls-setup). ``inputs`` holds what the decision was made from (alarm values, member
health, flow counts) as JSON, so that an auditor can replay the reasoning.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol

Outcome = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class AuditEvent:
    event_id: str  # unique per event: deduplicate on it
    time: float  # epoch seconds
    function: str  # lifecycle | scale | health | reconcile
    action: str  # e.g. scale_out, scale_in, register, drain, deactivate_licence, remove_device
    outcome: Outcome
    reason: str  # why, in words
    correlation_id: str = ""  # the triggering event's id
    request_id: str = ""  # the FC request id
    scaling_group: str = ""
    instance_id: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    detail: str = ""

    def log_time(self) -> int:
        return int(self.time)

    def log_contents(self) -> list[tuple[str, str]]:
        contents = [("kind", "audit")]
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "inputs":
                value = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
            elif not isinstance(value, str):
                value = repr(value)
            if value != "":
                contents.append((f.name, value))
        return contents


LOG_KEY_TYPES: dict[str, Literal["text", "long", "double"]] = {
    "kind": "text",
    "event_id": "text",
    "time": "double",
    "function": "text",
    "action": "text",
    "outcome": "text",
    "reason": "text",
    "correlation_id": "text",
    "request_id": "text",
    "scaling_group": "text",
    "instance_id": "text",
    "inputs": "text",
    "detail": "text",
}


class AuditLogPort(Protocol):
    def write(self, events: Sequence[AuditEvent]) -> None:
        """Write the events, or raise: a decision not written to the audit log is an error."""
        ...
