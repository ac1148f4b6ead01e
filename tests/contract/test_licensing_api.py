"""LicensingApiClient against the local licensing API (gwlb_lab.panorama, HTTPS, private CA): the
OAuth2 client-credentials token, the ``token:`` header, the read back by auth code, the
deactivation (its path and body are an assumption: see gwlb_fleet.panos.licensing) and its errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gwlb_fleet.alibaba.fakes.kms import FakeKms
from gwlb_fleet.alibaba.secretcache import CachedSecrets
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import PermanentError, TransientError
from gwlb_fleet.panos.fakes import FakePanorama
from gwlb_fleet.panos.licensing import (
    DEACTIVATE_PATH,
    SERIALS_PATH,
    LicensingApiClient,
    PanoramaLicensing,
    licensing_from_settings,
)
from gwlb_fleet.settings import Settings
from gwlb_lab.panorama import LocalPanorama
from gwlb_lab.panorama.licensing import TOKEN_PATH

FW1, FW2 = "007951000123451", "007951000123452"
AUTH_CODE = "D1234567"
CLIENT_ID, CLIENT_SECRET = "lab-client", "lab-client-secret-do-not-print"


def no_sleep(seconds: float) -> None:
    pass


@pytest.fixture
def fake() -> FakePanorama:
    panorama = FakePanorama()
    panorama.add_firewall(FW1, "10.0.1.11", license_manager="", auth_code=AUTH_CODE)
    panorama.add_firewall(FW2, "10.0.1.12", license_manager="", auth_code=AUTH_CODE)
    return panorama


@pytest.fixture
def local(tmp_path: Path, fake: FakePanorama) -> Iterator[LocalPanorama]:
    with LocalPanorama(tmp_path, panorama=fake, licensing_client=(CLIENT_ID, CLIENT_SECRET)) as server:
        yield server


def settings_for(local: LocalPanorama, **env: str) -> Settings:
    values = {
        "FLEET_REGION": "cn-hangzhou",
        "SCALING_GROUP_ID": "asg-1",
        "GWLB_SERVER_GROUP_ID": "sgp-1",
        "GWLB_LISTENER_ID": "lsn-1",
        "LICENSING_CLIENT_ID": CLIENT_ID,
        "LICENSING_CLIENT_SECRET_SECRET": "licensing/client-secret",
        "LICENSING_AUTH_CODE_SECRET": "licensing/auth-code",
        "LICENSING_API_ENDPOINT": local.url,
        "LICENSING_TOKEN_URL": local.url + TOKEN_PATH,
        "LICENSING_CA_FILE": str(local.ca_file),
        "API_TIMEOUT_S": "5",
        **env,
    }
    return Settings.model_validate(values)  # the aliases: the environment's names


def secrets() -> CachedSecrets:
    """KMS's fake, holding the OAuth client secret and the auth code (F-KMS-1)."""
    kms = FakeKms()
    kms.put_secret("licensing/client-secret", CLIENT_SECRET)
    kms.put_secret("licensing/auth-code", AUTH_CODE)
    return kms.port()


@pytest.fixture
def client(local: LocalPanorama) -> LicensingApiClient:
    return LicensingApiClient.from_settings(settings_for(local), secrets(), sleep=no_sleep)


@pytest.fixture
def deadline() -> Deadline:
    return Deadline.after(30, margin=0)


def test_the_api_is_chosen_where_its_credentials_are_configured(local: LocalPanorama) -> None:
    chosen = licensing_from_settings(settings_for(local), panorama=object(), secrets=secrets())  # type: ignore[arg-type]
    assert isinstance(chosen, LicensingApiClient)
    with pytest.raises(PermanentError, match="neither is configured"):
        licensing_from_settings(
            settings_for(local, LICENSING_CLIENT_ID=""), panorama=object(), secrets=secrets()  # type: ignore[arg-type]
        )


def test_deactivation_and_read_back(
    client: LicensingApiClient, local: LocalPanorama, deadline: Deadline
) -> None:
    assert client.is_licensed(FW1, deadline)
    client.deactivate(FW1, deadline)
    assert not client.is_licensed(FW1, deadline)
    assert client.is_licensed(FW2, deadline)
    assert local.licensing.requests == [
        ("POST", TOKEN_PATH),  # one token serves every call until it nears expiry
        ("GET", SERIALS_PATH),
        ("POST", DEACTIVATE_PATH),
        ("GET", SERIALS_PATH),
        ("GET", SERIALS_PATH),
    ]


def test_a_released_licence_deactivates_as_success(
    client: LicensingApiClient, fake: FakePanorama, deadline: Deadline
) -> None:
    client.deactivate(FW1, deadline)
    client.deactivate(FW1, deadline)  # 404, then the read back says it is not licensed
    assert not fake.licensed(FW1)


def test_an_expired_token_is_replaced_once(
    client: LicensingApiClient, local: LocalPanorama, deadline: Deadline
) -> None:
    assert client.is_licensed(FW1, deadline)
    local.licensing.expire_tokens()
    assert client.is_licensed(FW1, deadline)
    assert [path for _, path in local.licensing.requests].count(TOKEN_PATH) == 2


def test_wrong_client_credentials_are_permanent(local: LocalPanorama, deadline: Deadline) -> None:
    kms = FakeKms()
    kms.put_secret("licensing/client-secret", "wrong")
    kms.put_secret("licensing/auth-code", AUTH_CODE)
    client = LicensingApiClient.from_settings(settings_for(local), kms.port(), sleep=no_sleep)
    with pytest.raises(PermanentError) as refused:
        client.is_licensed(FW1, deadline)
    assert refused.value.code == "HTTP401"
    assert CLIENT_SECRET not in str(refused.value) and "wrong" not in str(refused.value)


def test_server_errors_are_retried(
    client: LicensingApiClient, fake: FakePanorama, deadline: Deadline
) -> None:
    fake.fail_next = ["503", "500"]
    assert client.is_licensed(FW1, deadline)
    fake.fail_next = ["503"] * 5
    with pytest.raises(TransientError) as gave_up:
        client.is_licensed(FW1, deadline)
    assert gave_up.value.code == "HTTP503"


def test_an_unreachable_api_is_transient(
    client: LicensingApiClient, fake: FakePanorama, deadline: Deadline
) -> None:
    fake.unreachable = True
    with pytest.raises(TransientError):
        client.is_licensed(FW1, deadline)


def test_the_certificate_is_verified(local: LocalPanorama, deadline: Deadline) -> None:
    client = LicensingApiClient.from_settings(
        settings_for(local, LICENSING_CA_FILE=""), secrets(), sleep=no_sleep
    )
    with pytest.raises(PermanentError) as refused:
        client.is_licensed(FW1, deadline)
    assert refused.value.code == "TlsVerification"
    assert local.licensing.requests == []


def test_a_sticky_licence_shows_in_the_read_back(
    client: LicensingApiClient, fake: FakePanorama, deadline: Deadline
) -> None:
    fake.sticky_licences.add(FW1)
    client.deactivate(FW1, deadline)
    assert client.is_licensed(FW1, deadline)


def test_the_plugin_is_chosen_without_api_credentials(local: LocalPanorama) -> None:
    class Operations:
        def op(self, command: str, deadline: Deadline, target: str = "") -> None:
            return None

    settings = settings_for(local, LICENSING_CLIENT_ID="", PANORAMA_LICENSE_MANAGER="gwlb-lm")
    assert isinstance(licensing_from_settings(settings, Operations(), secrets()), PanoramaLicensing)  # type: ignore[arg-type]
