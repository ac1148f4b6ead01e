"""The secrets cache (F-KMS-4) over a FakeClock, and KMS's fake checking GetSecretValue as KMS
does (F-KMS-1, F-KMS-5)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gwlb_fleet.alibaba.errors import ApiError
from gwlb_fleet.alibaba.fakes.kms import FakeKms
from gwlb_fleet.alibaba.secretcache import CachedSecrets
from gwlb_fleet.clock import FakeClock
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import NotFound, PermanentError
from gwlb_fleet.settings import Settings

NAME = "gwlb-fleet/panorama-api-key"


def deadline() -> Deadline:
    return Deadline.after(30, margin=0)


@pytest.fixture
def kms() -> FakeKms:
    kms = FakeKms(clock=FakeClock())
    kms.put_secret(NAME, "key-1")
    return kms


def test_a_value_is_kept_for_the_ttl_and_read_anew_after_it(kms: FakeKms) -> None:
    clock = FakeClock()
    secrets = kms.port(ttl_s=900, clock=clock)
    assert secrets.get(NAME, deadline()) == "key-1"
    kms.put_secret(NAME, "key-2")
    clock.advance(899)
    assert secrets.get(NAME, deadline()) == "key-1"
    assert kms.calls == ["GetSecretValue"]
    clock.advance(1)
    assert secrets.get(NAME, deadline()) == "key-2"
    assert kms.calls == ["GetSecretValue"] * 2


def test_refresh_reads_past_the_cache_and_refills_it(kms: FakeKms) -> None:
    clock = FakeClock()
    secrets = kms.port(ttl_s=900, clock=clock)
    secrets.get(NAME, deadline())
    kms.put_secret(NAME, "key-2")
    assert secrets.refresh(NAME, deadline()) == "key-2"
    assert secrets.get(NAME, deadline()) == "key-2"
    assert kms.calls == ["GetSecretValue"] * 2


def test_ttl_zero_reads_every_time(kms: FakeKms) -> None:
    secrets = kms.port(ttl_s=0, clock=FakeClock())
    secrets.get(NAME, deadline())
    secrets.get(NAME, deadline())
    assert kms.calls == ["GetSecretValue"] * 2


def test_no_cache_longer_than_an_hour() -> None:
    with pytest.raises(ValueError, match="F-KMS-4"):
        CachedSecrets(lambda name, deadline: "", 3601, FakeClock())
    fleet = {"FLEET_REGION": "r", "SCALING_GROUP_ID": "a", "GWLB_SERVER_GROUP_ID": "b"}
    fleet["GWLB_LISTENER_ID"] = "c"
    with pytest.raises(ValidationError, match="SECRET_CACHE_TTL_S"):
        Settings.from_environ({**fleet, "SECRET_CACHE_TTL_S": "3601"})
    assert Settings.from_environ(fleet).secret_cache_ttl_s <= 3600


def test_a_failed_read_is_not_cached(kms: FakeKms) -> None:
    secrets = kms.port(ttl_s=900, clock=FakeClock())
    kms.fail_next = ["Rejected.Throttling"]
    with pytest.raises(Exception, match=r"Rejected\.Throttling"):
        secrets.get(NAME, deadline())
    assert secrets.get(NAME, deadline()) == "key-1"


def test_the_port_maps_kms_codes_to_domain_errors(kms: FakeKms) -> None:
    secrets = kms.port(clock=FakeClock())
    with pytest.raises(NotFound) as missing:
        secrets.get("gwlb-fleet/nothing-here", deadline())
    assert missing.value.code == "Forbidden.ResourceNotFound"
    kms.denied.add(NAME)
    with pytest.raises(PermanentError) as refused:
        secrets.get(NAME, deadline())
    assert refused.value.code == "Forbidden.NoPermission"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, "MissingParameter"),
        ({"SecretName": "has spaces"}, "InvalidParameter"),
        ({"SecretName": "x" * 193}, "InvalidParameter"),
        ({"SecretName": NAME, "FetchExtendedConfig": "yes"}, "InvalidParameter"),
        ({"SecretName": "unknown"}, "Forbidden.ResourceNotFound"),
        ({"SecretName": NAME, "VersionStage": "ACSPrevious"}, "Forbidden.ResourceNotFound"),
        ({"SecretName": NAME, "VersionId": "v99"}, "Forbidden.ResourceNotFound"),
    ],
)
def test_get_secret_value_checks_its_parameters(kms: FakeKms, params: dict[str, str], code: str) -> None:
    with pytest.raises(ApiError) as refused:
        kms.api_get_secret_value(params)
    assert refused.value.code == code


def test_a_rotation_keeps_the_previous_version(kms: FakeKms) -> None:
    kms.put_secret(NAME, "key-2")
    current = kms.api_get_secret_value({"SecretName": NAME})
    previous = kms.api_get_secret_value({"SecretName": NAME, "VersionStage": "ACSPrevious"})
    assert (current["SecretData"], previous["SecretData"]) == ("key-2", "key-1")
    by_arn = kms.api_get_secret_value({"SecretName": f"acs:kms:cn-hangzhou:1234567890123456:secret/{NAME}"})
    assert by_arn["SecretData"] == "key-2"
    assert "SecretData" not in kms.api_describe_secret({"SecretName": NAME})  # metadata only
