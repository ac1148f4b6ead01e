"""An in-memory KMS Secrets Manager: secrets with versions and stages, GetSecretValue,
DescribeSecret and CreateSecret as the service answers them, and the SecretsPort over them.

Validation follows F-KMS-1 / F-KMS-2: ``SecretName`` is required (≤192 characters of
``[A-Za-z0-9_/+=.@-]``, or the ARN ``acs:kms:{region}:{account}:secret/{name}``), ``VersionStage``
is a stage label, booleans are ``true``/``false``; an unknown secret or version is
``Forbidden.ResourceNotFound`` (HTTP 404), a refused caller ``Forbidden.NoPermission`` (F-KMS-5).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gwlb_fleet.alibaba.errors import ApiError
from gwlb_fleet.alibaba.fakes.openapi import FakeOpenApiService
from gwlb_fleet.alibaba.secretcache import CachedSecrets
from gwlb_fleet.deadline import Deadline

NAME = re.compile(r"[A-Za-z0-9_/+=.@-]{1,192}")  # F-KMS-2
ARN = re.compile(r"acs:kms:[a-z0-9-]+:\d+:secret/(?P<name>.+)")  # F-KMS-1
CURRENT, PREVIOUS = "ACSCurrent", "ACSPrevious"
DATA_TYPES = ("text", "binary")  # F-KMS-1
MAX_DATA_BYTES = 30720  # F-KMS-2
MAX_VERSION_ID = 64  # F-KMS-2
SECRET_TYPES = ("Generic", "Rds", "Redis", "RAMCredentials", "ECS", "PolarDB")  # F-KMS-1


@dataclass
class FakeSecret:
    name: str
    versions: dict[str, str] = field(default_factory=dict)  # version id -> data
    stages: dict[str, str] = field(default_factory=dict)  # stage -> version id
    data_type: str = "text"
    created: str = "2026-01-01T00:00:00Z"


@dataclass
class FakeKms(FakeOpenApiService):
    service: ClassVar[str] = "kms"

    region: str = "cn-hangzhou"
    account_id: str = "1234567890123456"
    secrets: dict[str, FakeSecret] = field(default_factory=dict)
    denied: set[str] = field(default_factory=set)  # names the caller's role may not read
    _versions: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    # --- set-up and rotation (what an operator or `gwlb-fleet setup` does) -----------------------------

    def put_secret(self, name: str, data: str) -> str:
        """Create the secret, or add a version: the new one becomes ACSCurrent, the old one
        ACSPrevious (a rotation). The new version id."""
        if not NAME.fullmatch(name) or len(data.encode()) > MAX_DATA_BYTES:
            raise ValueError(f"not a valid secret: {name!r}")
        with self._lock:
            secret = self.secrets.setdefault(name, FakeSecret(name))
            version = f"v{next(self._versions)}"
            secret.versions[version] = data
            if CURRENT in secret.stages:
                secret.stages[PREVIOUS] = secret.stages[CURRENT]
            secret.stages[CURRENT] = version
            return version

    # --- the API ---------------------------------------------------------------------------------------

    def api_get_secret_value(self, params: Mapping[str, str]) -> dict[str, Any]:
        with self._api("GetSecretValue"):
            secret = self._secret(params)
            stage = params.get("VersionStage", "") or CURRENT
            _boolean(params, "FetchExtendedConfig")
            _boolean(params, "DryRun")
            version = params.get("VersionId", "")
            if not version:
                version = secret.stages.get(stage, "")
            elif version not in secret.versions or (
                params.get("VersionStage") and secret.stages.get(stage) != version
            ):
                version = ""
            if not version:
                raise self._fail("Forbidden.ResourceNotFound", "The resource is not found.")
            return {
                "SecretName": secret.name,
                "SecretType": "Generic",
                "SecretData": secret.versions[version],
                "SecretDataType": secret.data_type,
                "VersionId": version,
                "VersionStages": {"VersionStage": [s for s, v in secret.stages.items() if v == version]},
                "CreateTime": secret.created,
            }

    def api_create_secret(self, params: Mapping[str, str]) -> dict[str, Any]:
        """F-KMS-2: SecretName, SecretData, VersionId required; a Generic secret may not start
        ``acs/``; the name is unique (``Rejected.ResourceExist``, F-KMS-5). No message ever
        carries the value."""
        with self._api("CreateSecret"):
            for name in ("SecretName", "SecretData", "VersionId"):
                if not params.get(name):
                    raise self._fail("MissingParameter", f"{name} is mandatory for this action.")
            name, data, version = params["SecretName"], params["SecretData"], params["VersionId"]
            if not NAME.fullmatch(name) or name.startswith("acs/"):
                raise self._fail("InvalidParameter", "The specified parameter SecretName is not valid.")
            if len(version) > MAX_VERSION_ID:
                raise self._fail("InvalidParameter", "The specified parameter VersionId is not valid.")
            if len(data.encode()) > MAX_DATA_BYTES:
                raise self._fail("InvalidParameter", "The specified parameter SecretData is not valid.")
            data_type = params.get("SecretDataType", "") or "text"
            if data_type not in DATA_TYPES:
                raise self._fail("InvalidParameter", "The specified parameter SecretDataType is not valid.")
            secret_type = params.get("SecretType", "") or "Generic"
            if secret_type not in SECRET_TYPES:
                raise self._fail("InvalidParameter", "The specified parameter SecretType is not valid.")
            if name in self.denied:
                raise self._fail("Forbidden.NoPermission", "You are not authorized to perform the operation.")
            if name in self.secrets:
                raise self._fail("Rejected.ResourceExist", "The resource already exists.")
            self.secrets[name] = FakeSecret(
                name, versions={version: data}, stages={CURRENT: version}, data_type=data_type
            )
            return {
                "Arn": f"acs:kms:{self.region}:{self.account_id}:secret/{name}",
                "SecretName": name,
                "VersionId": version,
                "SecretType": secret_type,
            }

    def api_describe_secret(self, params: Mapping[str, str]) -> dict[str, Any]:
        """F-KMS-6: the secret's metadata, never its value."""
        with self._api("DescribeSecret"):
            secret = self._secret(params)
            _boolean(params, "FetchTags")
            return {
                "SecretName": secret.name,
                "Arn": f"acs:kms:{self.region}:{self.account_id}:secret/{secret.name}",
                "SecretType": "Generic",
                "CreateTime": secret.created,
                "UpdateTime": secret.created,
                "EncryptionKeyId": "",
                "Description": "",
            }

    def _secret(self, params: Mapping[str, str]) -> FakeSecret:
        name = params.get("SecretName", "")
        if not name:
            raise self._fail("MissingParameter", "SecretName is mandatory for this action.")
        arn = ARN.fullmatch(name)
        if arn is not None:
            name = arn["name"]
        if not NAME.fullmatch(name):
            raise self._fail("InvalidParameter", "The specified parameter is not valid.")
        if name in self.denied:
            raise self._fail("Forbidden.NoPermission", "You are not authorized to perform the operation.")
        secret = self.secrets.get(name)
        if secret is None:
            raise self._fail("Forbidden.ResourceNotFound", "The resource is not found.")
        return secret

    # --- SecretsPort --------------------------------------------------------------------------------------

    def port(self, ttl_s: float = 900.0, clock: Callable[[], float] | None = None) -> CachedSecrets:
        """The SecretsPort the functions would have over this KMS: cached like the adapter."""
        return CachedSecrets(self._read, ttl_s, clock or self.clock)

    def _read(self, name: str, deadline: Deadline) -> str:
        answer = self._port("GetSecretValue", lambda: self.api_get_secret_value({"SecretName": name}))
        return str(answer["SecretData"])


def _boolean(params: Mapping[str, str], name: str) -> None:
    value = params.get(name, "")
    if value and value.lower() not in ("true", "false"):
        raise ApiError("kms", "InvalidParameter", f"{name} {value!r} is not a boolean")
