"""The PAN-OS log intake through its real FC entry point (gwlb_functions.panlogs.handler), with FC's
HTTP trigger event (F-FCT-9), the real SLS client against the local SLS (gwlb_lab.sls) and the
token in a KMS fake: what lands in flow-logs, and every refusal — bad token, bad log, a body too
large — and SLS down (503, nothing lost: the same request sent again once SLS is back is written,
with the same record ids)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gwlb_fleet import intake
from gwlb_fleet.alibaba.fakes.kms import FakeKms
from gwlb_fleet.app import App, serving
from gwlb_fleet.intake import WRITE_FAILURE_KEY
from gwlb_fleet.panos.panlogs import INTAKE_PATH
from gwlb_fleet.settings import Settings
from gwlb_functions.panlogs import handler
from gwlb_lab.sls import Fault, LocalSls
from gwlb_lab.sls.client import set_up
from tests.panlog_lines import line

PROJECT = "gwlb-panlogs"
LOGSTORE = "flow-logs"
TOKEN_SECRET = "gwlb-fleet/panlogs-token"
TOKEN = "tok-7b1e0c5d9a-do-not-print"
HEADER = "X-Gwlb-Fleet-Token"


@pytest.fixture
def local() -> Iterator[LocalSls]:
    with LocalSls() as server:
        set_up(server, PROJECT)
        yield server


@pytest.fixture
def kms() -> FakeKms:
    kms = FakeKms()
    kms.put_secret(TOKEN_SECRET, TOKEN)
    return kms


@pytest.fixture
def app(local: LocalSls, kms: FakeKms, tmp_path: Path) -> Iterator[App]:
    key_id, secret = local.credentials()
    settings = Settings.model_validate(
        {
            "FLEET_REGION": "cn-hangzhou",
            "SCALING_GROUP_ID": "asg-1",
            "GWLB_SERVER_GROUP_ID": "sgp-1",
            "GWLB_LISTENER_ID": "lsn-1",
            "STATE_SQLITE_PATH": str(tmp_path / "state.db"),
            "SLS_ENDPOINT": local.endpoint,
            "SLS_PROJECT": PROJECT,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": key_id,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": secret,
            "FLOW_LOGSTORE": LOGSTORE,
            "FLOW_WRITE_BUDGET_S": 0.3,  # SLS down: give up fast and answer 503
            "PANLOGS_TOKEN_SECRET": TOKEN_SECRET,
            "PANLOGS_AUTH_HEADER": HEADER,
            "PANLOGS_MAX_BODY_BYTES": 64 * 1024,
        }
    )
    # The flow log is the real one the settings build: gwlb_fleet.sls.flowwriter over the SDK.
    with serving(App(settings, secrets=kms.port(60.0))) as served:
        yield served


def request(
    body: str | bytes,
    token: str | None = TOKEN,
    content_type: str = "text/plain",
    path: str = INTAKE_PATH,
    method: str = "POST",
    binary: bool = False,
) -> bytes:
    """FC's HTTP trigger event for one request (F-FCT-9): header keys capitalised as FC does."""
    data = body.encode() if isinstance(body, str) else body
    headers = {"Content-Type": content_type, "User-Agent": "PAN-OS"}
    if token is not None:
        headers[HEADER] = token
    event = {
        "version": "v1",
        "rawPath": path,
        "body": base64.b64encode(data).decode() if binary else data.decode(),
        "isBase64Encoded": binary,
        "headers": headers,
        "queryParameters": {},
        "requestContext": {
            "accountId": "1234567890123456",
            "domainName": "panlogs.cn-hangzhou.fcapp.run",
            "domainPrefix": "panlogs",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "10.0.1.20",
                "userAgent": "PAN-OS",
            },
            "requestId": "1-6750-req",
            "time": "2026-12-04T10:00:06Z",
            "timeEpoch": "1796378406000",
        },
    }
    return json.dumps(event).encode()


def post(event: bytes) -> tuple[int, dict[str, Any]]:
    answer = handler(event, None)
    assert set(answer) == {"statusCode", "headers", "body", "isBase64Encoded"}
    return answer["statusCode"], json.loads(answer["body"])


def stored(local: LocalSls) -> list[dict[str, str]]:
    return [log.contents for log in local.store.logs(PROJECT, LOGSTORE)]


BODY = "\n".join(
    [
        line("traffic", "10.1", header="<14>Dec  4 10:00:05 fw1 "),
        line("threat", "11.1", header="<14>Dec  4 10:00:05 fw1 "),
        line("traffic", "11.1", Serial_Number="007951000999999", Sequence_Number="12"),
    ]
)


def test_logs_land_in_the_flow_logstore(app: App, local: LocalSls) -> None:
    assert post(request(BODY)) == (200, {"records": 3})
    rows = stored(local)
    assert [(r["kind"], r["record_id"]) for r in rows] == [
        ("flow", "007951000123456-traffic-7001"),
        ("threat", "007951000123456-threat-7002"),
        ("flow", "007951000999999-traffic-12"),
    ]
    assert rows[1]["threat_name"] == "Eicar Test File" and rows[1]["severity"] == "medium"
    assert rows[0]["src_ip"] == "10.1.0.5" and rows[0]["bytes_rev"] == "3920"
    tags = {log.contents["record_id"]: dict(log.tags) for log in local.store.logs(PROJECT, LOGSTORE)}
    assert tags["007951000999999-traffic-12"]["serial"] == "007951000999999"


def test_a_base64_body_and_a_json_payload(app: App, local: LocalSls) -> None:
    from tests.unit.test_panlogs import payload

    body = payload("traffic") + "\n" + payload("threat")
    assert post(request(body, content_type="application/json", binary=True)) == (200, {"records": 2})
    assert len(stored(local)) == 2


@pytest.mark.parametrize("token", [None, "", "tok-wrong", TOKEN + "x"])
def test_no_or_a_wrong_token_is_401_and_writes_nothing(
    app: App, local: LocalSls, token: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    status, body = post(request(BODY, token=token))
    assert (status, body) == (401, {"error": "unauthorized"})
    assert stored(local) == []
    assert TOKEN not in caplog.text


def test_a_bad_log_is_400_naming_field_and_line_and_nothing_is_written(app: App, local: LocalSls) -> None:
    body = BODY + "\n" + line("traffic", "10.1", Destination_Port="https")
    status, answer = post(request(body))
    assert status == 400
    assert (answer["field"], answer["line"]) == ("Destination Port", 4)
    assert "'https'" in answer["error"]
    assert stored(local) == []  # all or nothing


def test_a_body_over_the_limit_is_413(app: App, local: LocalSls) -> None:
    big = "\n".join([BODY] * 200)
    assert post(request(big))[0] == 413
    assert stored(local) == []


@pytest.mark.parametrize(("path", "method", "status"), [("/other", "POST", 404), (INTAKE_PATH, "GET", 405)])
def test_other_paths_and_methods(app: App, path: str, method: str, status: int) -> None:
    assert post(request(BODY, path=path, method=method))[0] == status


def test_not_an_http_event_is_400(app: App) -> None:
    assert post(b"not json")[0] == 400


@pytest.mark.parametrize("fault", [Fault("refuse"), Fault("5xx", status=503), Fault("reset")])
def test_sls_down_is_503_counted_and_the_retry_writes_the_same_records(
    app: App, local: LocalSls, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    local.fault = fault
    caplog.set_level(logging.ERROR, logger="gwlb_fleet.intake")
    status, _ = post(request(BODY))
    assert status == 503
    failures = [r for r in caplog.records if getattr(r, WRITE_FAILURE_KEY, 0) == 1]
    assert len(failures) == 1 and failures[0].records_not_written == 3  # type: ignore[attr-defined]
    assert stored(local) == []

    local.fault = Fault()  # SLS is back; PAN-OS sends the same request again
    assert post(request(BODY)) == (200, {"records": 3})
    assert sorted(r["record_id"] for r in stored(local)) == sorted(
        ["007951000123456-traffic-7001", "007951000123456-threat-7002", "007951000999999-traffic-12"]
    )


def test_a_refused_write_is_never_2xx(app: App, local: LocalSls) -> None:
    local.fault = Fault("403")
    assert post(request(BODY))[0] == 500
    assert stored(local) == []


def test_a_rotated_token_is_read_anew_once_a_minute_at_most(
    app: App, kms: FakeKms, local: LocalSls, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(intake, "_tokens", intake.TokenCheck(clock=lambda: clock[0]))
    assert post(request(BODY))[0] == 200
    kms.put_secret(TOKEN_SECRET, "tok-rotated")
    assert post(request(BODY, token="tok-rotated"))[0] == 200  # cached value refused: read anew
    reads = kms.calls.count("GetSecretValue")
    for _ in range(5):  # wrong tokens: at most one more read in the minute
        assert post(request(BODY, token="tok-guess"))[0] == 401
    assert kms.calls.count("GetSecretValue") == reads
    clock[0] += intake.TOKEN_REFRESH_INTERVAL_S
    assert post(request(BODY, token="tok-guess"))[0] == 401
    assert kms.calls.count("GetSecretValue") == reads + 1
