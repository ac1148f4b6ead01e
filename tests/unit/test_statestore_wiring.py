"""Which state store the settings choose, how the Tablestore client is built, and which of its
errors are worth a retry."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import urllib3
from tablestore import NoRetryPolicy, OTSClientError, OTSServiceError

from gwlb_fleet.app import App
from gwlb_fleet.errors import PermanentError
from gwlb_fleet.settings import Settings
from gwlb_fleet.state.sqlite import SqliteStateStore
from gwlb_fleet.state.tablestore import SDK_LOGGER, TablestoreStateStore, is_transient


def settings(**extra: Any) -> Settings:
    return Settings(
        FLEET_REGION="cn-hangzhou",
        SCALING_GROUP_ID="asg-1",
        GWLB_SERVER_GROUP_ID="sgp-1",
        GWLB_LISTENER_ID="lsn-1",
        **extra,
    )


def test_sqlite_is_the_default(tmp_path: Path) -> None:
    store = App(settings(STATE_SQLITE_PATH=str(tmp_path / "s" / "state.db"))).state
    assert isinstance(store, SqliteStateStore) and store.path == tmp_path / "s" / "state.db"


def test_tablestore_client_from_the_functions_credentials() -> None:
    chosen = settings(
        STATE_STORE="tablestore",
        TABLESTORE_INSTANCE="fleet-state",
        STATE_TABLE_PREFIX="prod",
        ALIBABA_CLOUD_ACCESS_KEY_ID="STS.id",
        ALIBABA_CLOUD_ACCESS_KEY_SECRET="s3cr3t",
        ALIBABA_CLOUD_SECURITY_TOKEN="sts-token",
        API_TIMEOUT_S=4,
    )
    store = App(chosen).state
    assert isinstance(store, TablestoreStateStore)
    client: Any = store.client
    assert client.host == "https://fleet-state.cn-hangzhou.ots.aliyuncs.com"
    assert isinstance(client.retry_policy, NoRetryPolicy)  # ours retries, within a budget
    assert client.socket_timeout == 4 and store.call_budget_s == 4
    credentials = client.credentials_provider.get_credentials()
    assert (credentials.get_access_key_id(), credentials.get_security_token()) == ("STS.id", "sts-token")
    assert store.instances == "prod_instances" and store.idempotency == "prod_idempotency"
    # It logs signatures and STS tokens at DEBUG, and expected condition failures at ERROR.
    assert logging.getLogger(SDK_LOGGER).getEffectiveLevel() == logging.CRITICAL
    assert "s3cr3t" not in repr(chosen)


def test_a_local_tablestore_endpoint_takes_the_api_protocol() -> None:
    store = TablestoreStateStore.from_settings(
        settings(
            TABLESTORE_INSTANCE="lab",
            TABLESTORE_ENDPOINT="127.0.0.1:18080",
            API_PROTOCOL="http",
            ALIBABA_CLOUD_ACCESS_KEY_ID="id",
            ALIBABA_CLOUD_ACCESS_KEY_SECRET="secret",
        )
    )
    assert store.client.host == "http://127.0.0.1:18080"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "missing",
    [
        {"ALIBABA_CLOUD_ACCESS_KEY_ID": "id", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "secret"},
        {"TABLESTORE_INSTANCE": "fleet-state"},
    ],
    ids=["no-instance", "no-credentials"],
)
def test_tablestore_without_its_settings_is_a_permanent_error(missing: dict[str, str]) -> None:
    with pytest.raises(PermanentError, match=r"(is|are) not set"):
        TablestoreStateStore.from_settings(settings(**missing))


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (OTSServiceError(503, "OTSServerBusy", "Service is busy."), True),
        (OTSServiceError(403, "OTSNotEnoughCapacityUnit", "Remaining capacity unit is not enough."), True),
        (
            OTSServiceError(409, "OTSRowOperationConflict", "Data is being modified by the other request."),
            True,
        ),
        (OTSServiceError(503, "OTSTimeout", "Operation timeout."), True),
        (OTSServiceError(403, "OTSQuotaExhausted", "Too frequent table operations."), True),
        (OTSServiceError(403, "OTSQuotaExhausted", "Number of tables exceeded the quota."), False),
        (OTSServiceError(502, "SomethingNew", "Bad gateway."), True),
        (OTSServiceError(403, "OTSConditionCheckFail", "Condition check failed."), False),
        (OTSServiceError(403, "OTSAuthFailed", "Signature mismatch."), False),
        (OTSServiceError(400, "OTSParameterInvalid", "Invalid parameter."), False),
        (OTSClientError("HTTP status: 502, reason: Bad Gateway.", 502), True),
        (OTSClientError("primary key is not a list"), False),
        (urllib3.exceptions.NewConnectionError(None, "refused"), True),  # type: ignore[arg-type]
        (ConnectionResetError(), True),
        (ValueError("a bug"), False),
    ],
)
def test_which_tablestore_errors_are_retried(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient
