"""The audit log (AuditLogPort): SLS's ``fleet-audit`` logstore, or a local JSON-lines file.

``SlsAuditLog`` writes through ``gwlb_fleet.sls.client.Sls`` (one attempt per HTTP request, the SDK's own
10-attempt loop removed) with the hand-encoded LogGroup of ``gwlb_fleet.sls.loggroup``; retries happen
in ``gwlb_fleet.sls.putlogs`` (shared with the flow log writer), on SLS's transient errors only,
with backoff, within ``AUDIT_WRITE_BUDGET_S`` — the port
takes no deadline, and an audit write must not eat the invocation. A write that cannot be made
raises: a decision not in the audit log is an error (AuditLogPort).

``LocalAuditLog`` (no ``SLS_ENDPOINT``): one JSON object a line in ``AUDIT_LOG_PATH``, for the
lab and for running the functions locally.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import PermanentError
from gwlb_fleet.settings import Settings
from gwlb_fleet.sls import loggroup, putlogs
from gwlb_fleet.sls.auditlog import AuditEvent, AuditLogPort
from gwlb_fleet.sls.client import Sls, SlsConfig

RAM_ACTIONS: frozenset[str] = frozenset({"log:PostLogStoreLogs"})

SERVICE = "sls"
AUDIT_TOPIC = "fleet-audit"
MAX_LOGS_PER_GROUP = 4096  # SLS refuses a LogGroup of more (InvalidLogSize)


class SlsAuditLog:
    def __init__(
        self,
        sls: Sls,
        logstore: str,
        source: str = "",
        budget_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._sls = sls
        self._logstore = logstore
        self._source = source or socket.gethostname()
        self._budget_s = budget_s
        self._sleep = sleep

    def write(self, events: Sequence[AuditEvent]) -> None:
        deadline = Deadline.after(self._budget_s, margin=0.0)
        for start in range(0, len(events), MAX_LOGS_PER_GROUP):
            chunk = events[start : start + MAX_LOGS_PER_GROUP]
            group = loggroup.encode_log_group(
                [loggroup.encode_log(event.log_time(), event.log_contents()) for event in chunk],
                topic=AUDIT_TOPIC,
                source=self._source,
            )
            self._put(group, deadline)

    def _put(self, group: bytes, deadline: Deadline) -> None:
        putlogs.put_log_group(self._sls, self._logstore, group, deadline, self._sleep)


class LocalAuditLog:
    """AuditLogPort on a local file: one JSON object per event and line, appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, events: Sequence[AuditEvent]) -> None:
        if not events:
            return
        lines = "".join(json.dumps(asdict(event), sort_keys=True, default=str) + "\n" for event in events)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(lines)
                out.flush()

    def read(self) -> list[AuditEvent]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as lines:
            return [AuditEvent(**json.loads(line)) for line in lines if line.strip()]


def audit_log_from_settings(settings: Settings) -> AuditLogPort:
    if not settings.sls_endpoint:
        return LocalAuditLog(settings.audit_log_path)
    if not settings.sls_project:
        raise PermanentError(
            "SLS_ENDPOINT is set but SLS_PROJECT is not", code="NotConfigured", service=SERVICE
        )
    config = sls_config_of(settings, timeout=settings.api_timeout_s)
    return SlsAuditLog(Sls(config), settings.audit_logstore, budget_s=settings.audit_write_budget_s)


def sls_config_of(settings: Settings, **options: Any) -> SlsConfig:
    """Where the control plane's SLS is and whose keys reach it: the functions' audit log and
    set-up read the same settings."""
    return SlsConfig(
        endpoint=settings.sls_endpoint,
        project=settings.sls_project,
        access_key_id=settings.access_key_id or None,
        access_key_secret=settings.access_key_secret,
        security_token=settings.security_token,
        **options,
    )
