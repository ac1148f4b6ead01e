"""One encoded LogGroup to a logstore (SLS PutLogs), retried on SLS's transient errors: what the
audit log and the flow log writers (gwlb_fleet.sls.auditwriter, gwlb_fleet.sls.flowwriter) share.

``Sls`` makes one attempt per HTTP request (the SDK's own retry loop removed); retries happen here,
with backoff, within the caller's deadline. An error becomes ``TransientError`` (worth writing again
later) or ``PermanentError`` by SLS's own verdict (``SlsError.transient``), with SLS's code. PutLogs
has no idempotency key (F-SLS-4): a request that failed may still have been stored, so a retried
group may be stored twice; readers deduplicate on the records' ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gwlb_fleet import retry
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import PermanentError, TransientError
from gwlb_fleet.sls.client import Sls, SlsError

SERVICE = "sls"


def put_log_group(
    sls: Sls,
    logstore: str,
    group: bytes,
    deadline: Deadline,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Store ``group`` in ``logstore``, or raise TransientError / PermanentError naming the logstore."""

    def attempt() -> None:
        try:
            sls.put_log_group(logstore, group)
        except SlsError as exc:
            kind = TransientError if exc.transient else PermanentError
            raise kind(f"PutLogs {logstore}: {exc.message}", code=exc.code, service=SERVICE) from exc

    retry.call(
        attempt,
        deadline=deadline,
        transient=lambda exc: isinstance(exc, TransientError),
        service=SERVICE,
        action="PutLogs",
        sleep=sleep,
    )
