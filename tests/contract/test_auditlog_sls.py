"""SlsAuditLog through the real SDK's request path (gwlb_fleet.sls.client) against the local SLS
(gwlb_lab.sls): what lands in the fleet-audit logstore, retries on SLS's transient errors, none on the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gwlb_fleet.errors import PermanentError, TransientError
from gwlb_fleet.settings import Settings
from gwlb_fleet.sls.auditlog import AuditEvent
from gwlb_fleet.sls.auditwriter import LocalAuditLog, SlsAuditLog, audit_log_from_settings
from gwlb_fleet.sls.client import Sls
from gwlb_lab.sls import Fault, LocalSls
from gwlb_lab.sls.client import set_up, sls_config

KEY_ID, SECRET = "LTAI-audit-log-test", "audit-log-secret-do-not-print"
PROJECT = "gwlb-audit-log"
LOGSTORE = "fleet-audit"


def no_sleep(seconds: float) -> None:
    pass


def event(n: int, **extra: object) -> AuditEvent:
    values: dict[str, object] = {
        "event_id": f"evt-{n}",
        "time": 1_700_000_000.25 + n,
        "function": "lifecycle",
        "action": "deactivate_licence",
        "outcome": "ok",
        "reason": "scale-in of an idle appliance",
        "correlation_id": "cloudevent-1",
        "instance_id": f"i-{n}",
        "inputs": {"serial": "007951000123451", "flows": 0},
        **extra,
    }
    return AuditEvent(**values)  # type: ignore[arg-type]


@pytest.fixture
def local() -> Iterator[LocalSls]:
    with LocalSls(keys={KEY_ID: SECRET}) as server:
        set_up(server, PROJECT)
        yield server


@pytest.fixture
def audit(local: LocalSls) -> SlsAuditLog:
    return SlsAuditLog(Sls(sls_config(local, PROJECT)), LOGSTORE, source="fc-test", sleep=no_sleep)


def stored(local: LocalSls) -> list[dict[str, str]]:
    return [log.contents for log in local.store.logs(PROJECT, LOGSTORE)]


def test_events_land_in_the_logstore(audit: SlsAuditLog, local: LocalSls) -> None:
    audit.write([event(1), event(2, outcome="failed", detail="VerificationFailed")])
    rows = stored(local)
    assert [row["event_id"] for row in rows] == ["evt-1", "evt-2"]
    assert rows[0]["kind"] == "audit"
    assert json.loads(rows[0]["inputs"]) == {"flows": 0, "serial": "007951000123451"}
    assert rows[1]["detail"] == "VerificationFailed"
    assert {log.topic for log in local.store.logs(PROJECT, LOGSTORE)} == {"fleet-audit"}


def test_nothing_to_write_sends_nothing(audit: SlsAuditLog, local: LocalSls) -> None:
    before = local.snapshot()["operations"].get("PutLogs", 0)
    audit.write([])
    assert local.snapshot()["operations"].get("PutLogs", 0) == before


def test_server_errors_are_retried(audit: SlsAuditLog, local: LocalSls) -> None:
    local.fault = Fault("5xx", status=503, times=2)
    audit.write([event(1)])
    assert [row["event_id"] for row in stored(local)] == ["evt-1"]


def test_a_dead_sls_surfaces_as_transient(audit: SlsAuditLog, local: LocalSls) -> None:
    local.fault = Fault("refuse")
    with pytest.raises(TransientError) as gave_up:
        audit.write([event(1)])
    assert gave_up.value.service == "sls"


def test_a_refusal_is_permanent_and_not_retried(audit: SlsAuditLog, local: LocalSls) -> None:
    local.fault = Fault("403", times=1)
    with pytest.raises(PermanentError) as refused:
        audit.write([event(1)])
    assert refused.value.code == "Unauthorized"
    assert SECRET not in str(refused.value)
    assert stored(local) == []


def test_a_missing_logstore_is_permanent(local: LocalSls) -> None:
    audit = SlsAuditLog(Sls(sls_config(local, PROJECT)), "no-such-logstore", sleep=no_sleep)
    with pytest.raises(PermanentError) as refused:
        audit.write([event(1)])
    assert refused.value.code == "LogStoreNotExist"


def test_settings_choose_sls_or_a_local_file(local: LocalSls, tmp_path: Path) -> None:
    base = {
        "FLEET_REGION": "cn-hangzhou",
        "SCALING_GROUP_ID": "asg-1",
        "GWLB_SERVER_GROUP_ID": "sgp-1",
        "GWLB_LISTENER_ID": "lsn-1",
        "AUDIT_LOG_PATH": str(tmp_path / "audit.jsonl"),
    }
    with_sls = Settings.model_validate(
        {
            **base,
            "SLS_ENDPOINT": local.endpoint,
            "SLS_PROJECT": PROJECT,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
        }
    )
    to_sls = audit_log_from_settings(with_sls)
    assert isinstance(to_sls, SlsAuditLog)
    to_sls.write([event(7)])
    assert [row["event_id"] for row in stored(local)] == ["evt-7"]

    to_file = audit_log_from_settings(Settings.model_validate(base))
    assert isinstance(to_file, LocalAuditLog)
    to_file.write([event(8), event(9)])
    to_file.write([event(10)])
    assert [e.event_id for e in to_file.read()] == ["evt-8", "evt-9", "evt-10"]
    assert to_file.read()[0] == event(8)
