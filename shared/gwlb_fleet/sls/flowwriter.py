"""Records to the flow logstore from the control plane (the PAN-OS log intake): FlowLogPort.

The same LogGroup encoding as the agent's shipper (``gwlb_fleet.sls.loggroup``, a record's
``log_contents``), one LogGroup per firewall serial, tagged with it, split within SLS's limits for
one PutLogs request (4096 logs, and we keep the raw group under ``MAX_GROUP_BYTES``, well inside
SLS's 5 MB: F-SLS-*). Each request is tried a few times on SLS's transient errors within
``budget_s`` (``gwlb_fleet.sls.putlogs``, as the audit log writer does); then ``TransientError``
(the caller answers so that the sender retries) or ``PermanentError``. A request that failed may
or may not have been stored by SLS, and a multi-group write that fails part way has stored its
first groups: a resent log then arrives twice under the same record_id, which the audit queries
count once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import PermanentError
from gwlb_fleet.settings import Settings
from gwlb_fleet.sls import loggroup, putlogs
from gwlb_fleet.sls.client import Sls
from gwlb_fleet.sls.flowrecord import FlowRecord, ThreatRecord

RAM_ACTIONS: frozenset[str] = frozenset({"log:PostLogStoreLogs"})

SERVICE = "sls"
MAX_LOGS_PER_GROUP = 4096  # SLS refuses a LogGroup of more
MAX_GROUP_BYTES = 3 << 20  # raw LogGroup bytes per request: SLS takes 5 MB, keep headroom
SERIAL_TAG = "serial"

Record = FlowRecord | ThreatRecord


class FlowLogPort(Protocol):
    def write(self, records: Sequence[Record], source: str) -> int:
        """Store every record, or raise (TransientError: worth sending again later). ``source``:
        the LogGroup's source (the sender's address). Returns the number of PutLogs requests."""
        ...


def encode_groups(records: Sequence[Record], source: str) -> Iterator[bytes]:
    """The LogGroups for ``records``: one firewall serial each (tagged), each within the limits."""
    by_serial: dict[str, list[bytes]] = {}
    for record in records:
        by_serial.setdefault(record.serial, []).append(
            loggroup.encode_log(record.log_time(), record.log_contents())
        )
    for serial, logs in by_serial.items():
        tags = [(SERIAL_TAG, serial)] if serial else []
        batch: list[bytes] = []
        size = 0
        for log in logs:
            if batch and (len(batch) == MAX_LOGS_PER_GROUP or size + len(log) + 8 > MAX_GROUP_BYTES):
                yield loggroup.encode_log_group(batch, source=source, tags=tags)
                batch, size = [], 0
            batch.append(log)
            size += len(log) + 8  # the Log's own tag and length, with room to spare
        if batch:
            yield loggroup.encode_log_group(batch, source=source, tags=tags)


class SlsFlowLog:
    def __init__(
        self,
        sls: Sls,
        logstore: str,
        budget_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._sls = sls
        self._logstore = logstore
        self._budget_s = budget_s
        self._sleep = sleep

    def write(self, records: Sequence[Record], source: str) -> int:
        deadline = Deadline.after(self._budget_s, margin=0.0)
        requests = 0
        for group in encode_groups(records, source):
            self._put(group, deadline)
            requests += 1
        return requests

    def _put(self, group: bytes, deadline: Deadline) -> None:
        putlogs.put_log_group(self._sls, self._logstore, group, deadline, self._sleep)


def flow_log_from_settings(settings: Settings) -> FlowLogPort:
    from gwlb_fleet.sls.auditwriter import sls_config_of

    if not settings.sls_endpoint or not settings.sls_project:
        raise PermanentError(
            "the PAN-OS log intake writes to SLS: SLS_ENDPOINT and SLS_PROJECT must be set",
            code="NotConfigured",
            service=SERVICE,
        )
    config = sls_config_of(settings, timeout=settings.api_timeout_s)
    return SlsFlowLog(Sls(config), settings.flow_logstore, budget_s=settings.flow_write_budget_s)
