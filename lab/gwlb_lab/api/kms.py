"""KMS 2016-01-20 on the local endpoint: Secrets Manager's GetSecretValue, DescribeSecret and
CreateSecret (RPC, query string), answered by gwlb_fleet.alibaba.fakes.kms.FakeKms, which checks the
parameters F-KMS-1/F-KMS-2/F-KMS-6 list and answers KMS's codes (F-KMS-5)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gwlb_fleet.alibaba.fakes.kms import FakeKms
from gwlb_lab.api.params import Params

PRODUCT = "kms"
VERSION = "2016-01-20"


def get_secret_value(kms: FakeKms, p: Params) -> dict[str, Any]:
    return kms.api_get_secret_value(p.values)


def describe_secret(kms: FakeKms, p: Params) -> dict[str, Any]:
    return kms.api_describe_secret(p.values)


def create_secret(kms: FakeKms, p: Params) -> dict[str, Any]:
    return kms.api_create_secret(p.values)


HANDLERS: dict[str, Callable[[FakeKms, Params], dict[str, Any]]] = {
    "GetSecretValue": get_secret_value,
    "DescribeSecret": describe_secret,
    "CreateSecret": create_secret,
}
