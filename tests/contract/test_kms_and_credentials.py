"""KMS Secrets Manager through the real SDK (alibabacloud_kms20160120) against the lab's local
endpoint, and the function's STS credentials taken anew at each invocation (F-FC-1, F-FC-2): the
second invocation after FC replaced them signs with the new key, and the secret cache survives."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.alibaba.kms import kms_api, read_secret
from gwlb_fleet.alibaba.tea import RetryPolicy
from gwlb_fleet.app import App
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import NotFound, PermanentError
from gwlb_fleet.handler import _process_app
from gwlb_fleet.settings import Settings
from gwlb_lab.api.server import LocalOpenApi

NAME = "gwlb-fleet/panorama-api-key"
FLEET = {
    "FLEET_REGION": "cn-hangzhou",
    "SCALING_GROUP_ID": "asg-1",
    "GWLB_SERVER_GROUP_ID": "sgp-1",
    "GWLB_LISTENER_ID": "lsn-1",
    "API_TIMEOUT_S": "5",
}


def credentials(n: int) -> dict[str, str]:
    return {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": f"STS.key-{n}",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": f"secret-{n}",
        "ALIBABA_CLOUD_SECURITY_TOKEN": f"token-{n}",
    }


@pytest.fixture
def api() -> Iterator[LocalOpenApi]:
    cloud = FakeCloud()
    cloud.kms.put_secret(NAME, "the-panorama-key")
    with LocalOpenApi(cloud) as local:
        yield local


def settings_for(api: LocalOpenApi, **extra: str) -> Settings:
    return Settings.model_validate({**FLEET, **credentials(1), **api.env(), **extra})


def deadline() -> Deadline:
    return Deadline.after(30, margin=0)


def test_get_secret_value_sends_the_name_and_the_current_stage(api: LocalOpenApi) -> None:
    assert read_secret(kms_api(settings_for(api)), NAME, deadline()) == "the-panorama-key"
    (sent,) = api.recorded("GetSecretValue")
    assert (sent.version, sent.product, sent.status) == ("2016-01-20", "kms", 200)
    assert sent.params == {"SecretName": NAME, "VersionStage": "ACSCurrent"}  # F-KMS-1
    assert (sent.access_key_id, sent.security_token) == ("STS.key-1", "token-1")


def test_a_missing_secret_is_not_found_and_not_retried(api: LocalOpenApi) -> None:
    with pytest.raises(NotFound) as missing:
        read_secret(kms_api(settings_for(api)), "gwlb-fleet/absent", deadline())
    assert (missing.value.code, missing.value.service) == ("Forbidden.ResourceNotFound", "kms")
    assert [r.status for r in api.recorded("GetSecretValue")] == [404]  # F-KMS-5


def test_a_refused_read_is_permanent(api: LocalOpenApi) -> None:
    api.cloud.kms.denied.add(NAME)
    with pytest.raises(PermanentError) as refused:
        read_secret(kms_api(settings_for(api)), NAME, deadline())
    assert refused.value.code == "Forbidden.NoPermission"
    assert "the-panorama-key" not in str(refused.value)


def test_throttling_is_retried(api: LocalOpenApi) -> None:
    api.cloud.kms.fail_next = ["Rejected.Throttling", "ServiceUnavailableTemporary"]
    client = kms_api(settings_for(api), RetryPolicy(first_wait=0.0, max_wait=0.0, sleep=lambda s: None))
    assert read_secret(client, NAME, deadline()) == "the-panorama-key"
    assert [r.status for r in api.recorded("GetSecretValue")] == [429, 503, 200]


def test_a_binary_secret_is_refused(api: LocalOpenApi) -> None:
    api.cloud.kms.secrets[NAME].data_type = "binary"
    with pytest.raises(PermanentError, match="store it as text"):
        read_secret(kms_api(settings_for(api)), NAME, deadline())


def test_new_sts_credentials_sign_the_next_invocation(
    api: LocalOpenApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The App built from the environment re-reads the credentials at each invocation (the
    handler frame); a client built with the old ones is rebuilt, the secret cache is kept."""
    environ = {**FLEET, **api.env(), **credentials(1)}
    app = App(Settings.model_validate(environ), environ=environ)
    import gwlb_fleet.app

    monkeypatch.setattr(gwlb_fleet.app, "get_app", lambda: app)

    def invocation() -> None:
        frame_app = _process_app()  # what fc_handler does first
        frame_app.ecs.describe_instances(["i-1"], deadline())
        frame_app.secrets.get(NAME, deadline())

    invocation()
    environ.update(credentials(2))  # FC replaced the role's STS credentials between invocations
    invocation()
    described = api.recorded("DescribeInstances")
    assert [(r.access_key_id, r.security_token) for r in described] == [
        ("STS.key-1", "token-1"),
        ("STS.key-2", "token-2"),
    ]
    assert len(api.recorded("GetSecretValue")) == 1  # cached across the change
    app.secrets.refresh(NAME, deadline())
    assert api.recorded("GetSecretValue")[-1].access_key_id == "STS.key-2"
    assert app.refresh_credentials() is False  # unchanged: nothing rebuilt


def test_an_app_given_its_settings_keeps_their_credentials(api: LocalOpenApi) -> None:
    app = App(settings_for(api))  # tests, `gwlb-fleet invoke`: no environment to follow
    assert app.refresh_credentials() is False
    app.ecs.describe_instances(["i-1"], deadline())
    assert api.recorded("DescribeInstances")[-1].access_key_id == "STS.key-1"
