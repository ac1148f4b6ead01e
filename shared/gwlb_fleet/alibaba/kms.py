"""SecretsPort over alibabacloud_kms20160120: KMS Secrets Manager's GetSecretValue.

The functions read Panorama's API key and the licence auth codes at run time, through the
function's role (``kms:GetSecretValue``, F-KMS-3), by the names the settings give
(``PANORAMA_API_KEY_SECRET``, ...); template.yml holds only those names. Values are cached per
instance for at most ``SECRET_CACHE_TTL_S`` (gwlb_fleet.alibaba.secretcache, F-KMS-4) and read
anew when Panorama refuses a key (a rotation).

A secret protected by a customer-managed key also needs ``kms:Decrypt`` on that key (F-KMS-1); the
fleet's secrets use the default (service) key, so the policy does not grant it.
"""

from __future__ import annotations

from collections.abc import Callable

from alibabacloud_kms20160120 import models as kms_models
from alibabacloud_kms20160120.client import Client as KmsClient

from gwlb_fleet.alibaba.secretcache import CachedSecrets
from gwlb_fleet.alibaba.tea import RetryPolicy, SetupApi, TeaApi, body_of, setup_calls
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import PermanentError
from gwlb_fleet.settings import Settings

RAM_ACTIONS: frozenset[str] = frozenset({"kms:GetSecretValue"})  # F-KMS-3

CURRENT = "ACSCurrent"  # F-KMS-1: the stage a rotation moves to the new version


def kms_api(settings: Settings, retry_policy: RetryPolicy | None = None) -> TeaApi:
    return TeaApi.from_settings("kms", settings, KmsClient, retry_policy)


def read_secret(api: TeaApi, name: str, deadline: Deadline) -> str:
    """The text of secret ``name``'s current version (F-KMS-1). Missing: NotFound
    (``Forbidden.ResourceNotFound``, F-KMS-5); refused: PermanentError (``Forbidden.NoPermission``)."""
    if not name:
        raise PermanentError("no secret name configured", code="NotConfigured", service="kms")
    request = kms_models.GetSecretValueRequest(secret_name=name, version_stage=CURRENT)
    body = body_of(
        api.call("GetSecretValue", api.client.get_secret_value_with_options, request, deadline=deadline)
    )
    if body.secret_data_type not in (None, "", "text"):  # F-KMS-1: text | binary
        raise PermanentError(
            f"secret {name} holds {body.secret_data_type} data; store it as text",
            code="BadSecret",
            service="kms",
        )
    if not body.secret_data:
        raise PermanentError(f"secret {name} is empty", code="BadSecret", service="kms")
    return str(body.secret_data)


class KmsSecrets(CachedSecrets):
    """SecretsPort. ``api`` gives the current client: the App rebuilds it when the function's
    credentials change (F-FC-2), while the cache here lives on."""

    def __init__(self, api: Callable[[], TeaApi], ttl_s: float, clock: Callable[[], float]) -> None:
        super().__init__(lambda name, deadline: read_secret(api(), name, deadline), ttl_s, clock)

    @classmethod
    def from_settings(cls, settings: Settings, clock: Callable[[], float]) -> KmsSecrets:
        api = kms_api(settings)
        return cls(lambda: api, settings.secret_cache_ttl_s, clock)


# --- preflight (gwlb-fleet preflight, the deployer's credentials): is the secret there, without
# reading its value. Not the functions' (kms:DescribeSecret is deployer only, F-KMS-6).

PREFLIGHT_CALLS = setup_calls(kms_models, "DescribeSecret")  # F-KMS-6
PREFLIGHT_RAM_ACTIONS: frozenset[str] = frozenset(f"kms:{action}" for action in PREFLIGHT_CALLS)


def preflight_api(settings: Settings, retry_policy: RetryPolicy | None = None) -> SetupApi:
    return SetupApi(kms_api(settings, retry_policy), PREFLIGHT_CALLS)


# --- set-up (gwlb-fleet setup, the deployer's credentials): a missing secret entry created from the
# value the deployer put in set-up's environment (gwlb_fleet.deploy.plan.secret_variable). Never
# deleted by teardown; never the functions' (they only read, F-KMS-3).

SETUP_CALLS = setup_calls(kms_models, "DescribeSecret", "CreateSecret")  # F-KMS-6, F-KMS-2
# and GetSecretValue (F-KMS-3): set-up puts the intake's token in Panorama (gwlb_fleet.deploy.panlogs)
SETUP_RAM_ACTIONS: frozenset[str] = frozenset(f"kms:{action}" for action in SETUP_CALLS) | RAM_ACTIONS


def setup_api(settings: Settings, retry_policy: RetryPolicy | None = None) -> SetupApi:
    return SetupApi(kms_api(settings, retry_policy), SETUP_CALLS)
