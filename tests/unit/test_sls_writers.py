"""The audit log and flow log writers share one PutLogs-with-retries (gwlb_fleet.sls.putlogs): each
retries SLS's transient errors within its budget, raises a permanent one at once naming the
logstore, and gives up with TransientError; the flow writer's serial tag is an indexed key."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import PermanentError, TransientError
from gwlb_fleet.sls import putlogs
from gwlb_fleet.sls.auditlog import AuditEvent
from gwlb_fleet.sls.auditwriter import SlsAuditLog
from gwlb_fleet.sls.client import Sls, SlsError
from gwlb_fleet.sls.flowwriter import SERIAL_TAG, SlsFlowLog
from gwlb_fleet.sls.queries import FLOW_LOGSTORE
from gwlb_fleet.sls.setup import TAG_KEYS, logstore_specs
from tests.panlog_lines import line


class FlakySls:
    """Answers PutLogs with the errors given, in order, then stores."""

    def __init__(self, *errors: SlsError) -> None:
        self.errors = list(errors)
        self.stored: list[tuple[str, bytes]] = []
        self.attempts = 0

    def put_log_group(self, logstore: str, log_group: bytes) -> None:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        self.stored.append((logstore, log_group))


THROTTLED = SlsError("WriteQuotaExceed", "slow down", 403)
UNAVAILABLE = SlsError("InternalServerError", "try again", 500)
REFUSED = SlsError("LogStoreNotExist", "logstore flow-logs does not exist", 404)


def audit_write(sls: FlakySls, budget_s: float) -> None:
    writer = SlsAuditLog(
        cast(Sls, sls), "fleet-audit", source="test", budget_s=budget_s, sleep=lambda s: None
    )
    writer.write([AuditEvent("evt-1", 1.0, "lifecycle", "drain", "ok", "scale-in")])


def flow_write(sls: FlakySls, budget_s: float) -> None:
    from gwlb_fleet.panos.panlogs import parse_body

    writer = SlsFlowLog(cast(Sls, sls), FLOW_LOGSTORE, budget_s=budget_s, sleep=lambda s: None)
    writer.write(parse_body(line("traffic", "11.1"), "text/plain", 2.0), "192.0.2.1")


WRITERS: dict[str, Callable[[FlakySls, float], None]] = {"audit": audit_write, "flow": flow_write}


@pytest.mark.parametrize("writer", WRITERS)
def test_transient_errors_are_retried_then_stored(writer: str) -> None:
    sls = FlakySls(THROTTLED, UNAVAILABLE)
    WRITERS[writer](sls, 60.0)
    assert (sls.attempts, len(sls.stored)) == (3, 1)


@pytest.mark.parametrize("writer", WRITERS)
def test_a_permanent_error_is_raised_at_once_naming_the_logstore(writer: str) -> None:
    sls = FlakySls(REFUSED)
    with pytest.raises(PermanentError) as error:
        WRITERS[writer](sls, 60.0)
    assert sls.attempts == 1 and error.value.code == "LogStoreNotExist"
    assert "PutLogs " in str(error.value) and "does not exist" in str(error.value)


@pytest.mark.parametrize("writer", WRITERS)
def test_transient_errors_that_outlast_the_attempts_are_transient(writer: str) -> None:
    sls = FlakySls(*[UNAVAILABLE] * 10)
    with pytest.raises(TransientError):
        WRITERS[writer](sls, 60.0)
    assert not sls.stored


def test_the_shared_put_names_the_logstore_and_keeps_slss_code() -> None:
    sls = FlakySls(REFUSED)
    with pytest.raises(PermanentError) as error:
        putlogs.put_log_group(cast(Sls, sls), "some-store", b"group", Deadline.after(10.0, margin=0.0))
    assert "PutLogs some-store: " in str(error.value) and error.value.code == "LogStoreNotExist"
    sls = FlakySls(THROTTLED)
    putlogs.put_log_group(
        cast(Sls, sls), "some-store", b"group", Deadline.after(10.0, margin=0.0), lambda s: None
    )
    assert sls.stored == [("some-store", b"group")]


def test_every_tag_the_flow_writer_sets_is_an_indexed_key() -> None:
    flow = next(spec for spec in logstore_specs() if spec.name == FLOW_LOGSTORE)
    assert TAG_KEYS[f"__tag__:{SERIAL_TAG}"] == "text"  # SLS indexes tags as text only (F-SLS-5)
    assert flow.keys[f"__tag__:{SERIAL_TAG}"] == "text"
