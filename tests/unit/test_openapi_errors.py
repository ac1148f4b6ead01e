"""One code -> error mapping for the Tea adapters and the fakes: the same service answer is the
same domain error whether the real SDK raised it or a fake did."""

from __future__ import annotations

import pytest
from alibabacloud_tea_openapi import exceptions as tea_exceptions
from darabonba.exceptions import RetryError, UnretryableException
from darabonba.policy.retry import RetryPolicyContext

from gwlb_fleet.alibaba.errors import (
    ALREADY_DONE,
    COMMON_TRANSIENT,
    CONFLICT,
    NOT_FOUND,
    SERVICE_TRANSIENT,
    ApiError,
    error_for,
)
from gwlb_fleet.alibaba.tea import domain_error, is_transient
from gwlb_fleet.errors import NotFound, PermanentError, ScalingConflict, TransientError

CASES = [
    ("gwlb", "Throttling.User", 400, TransientError),
    ("gwlb", "Conflict.Lock", 400, TransientError),
    ("gwlb", "IncorrectStatus.ServerGroup", 400, TransientError),
    ("gwlb", "ResourceNotFound.BackendServer", 404, NotFound),
    ("gwlb", "Forbidden.NoPermission", 403, PermanentError),
    ("ess", "ScalingActivityInProgress", 400, ScalingConflict),
    ("ess", "IncorrectCapacity.MinSize", 400, PermanentError),
    ("ess", "LifecycleHookIdAndLifecycleActionToken.Invalid", 400, NotFound),
    ("ess", "InvalidScalingGroupId.NotFound", 404, NotFound),
    ("ecs", "OperationConflict", 400, TransientError),
    ("ecs", "InternalError", 500, TransientError),
    ("ecs", "SomethingNew", 503, TransientError),  # any 5xx
    ("cms", "InvalidParameter", 400, PermanentError),
    ("fc", "TooManyRequests", 429, TransientError),
    ("fc", "FunctionNotFound", 404, NotFound),
]


def client_error(code: str, status: int) -> tea_exceptions.AlibabaCloudException:
    kind = tea_exceptions.ServerException if status >= 500 else tea_exceptions.ClientException
    return kind(status_code=status, code=code, message=f"{code} message", request_id="R")


@pytest.mark.parametrize(("service", "code", "status", "expected"), CASES)
def test_sdk_and_fake_answers_map_alike(service: str, code: str, status: int, expected: type) -> None:
    from_sdk = domain_error(service, "Action", client_error(code, status))  # type: ignore[arg-type]
    from_fake = ApiError(service, code, "", status).domain("Action")
    assert type(from_sdk) is type(from_fake) is expected
    assert from_sdk.code == from_fake.code == code and from_sdk.service == service
    transient = issubclass(expected, TransientError) and expected is not ScalingConflict
    assert is_transient(client_error(code, status), service) is transient


def test_throttling_exception_and_no_answer_are_transient() -> None:
    throttled = tea_exceptions.ThrottlingException(status_code=400, code="Anything", retry_after=3)
    assert is_transient(throttled, "ess")
    refused = UnretryableException(RetryPolicyContext(retries_attempted=1, exception=RetryError("refused")))
    assert is_transient(refused, "ecs")
    garbled = UnretryableException(RetryPolicyContext(retries_attempted=1, exception=ValueError("not JSON")))
    assert not is_transient(garbled, "ecs")
    assert domain_error("ecs", "DescribeInstances", garbled).code == "BadAnswer"
    assert isinstance(domain_error("ecs", "DescribeInstances", refused), TransientError)
    assert not is_transient(KeyError("bug"), "ecs")
    assert type(domain_error("ecs", "DescribeInstances", KeyError("bug"))) is PermanentError


def test_the_tables_agree_with_each_other() -> None:
    transient = set(COMMON_TRANSIENT).union(*SERVICE_TRANSIENT.values())
    conflicts = set().union(*CONFLICT.values())
    gone = set().union(*NOT_FOUND.values())
    assert not transient & conflicts and not transient & gone and not conflicts & gone
    for (service, _action), codes in ALREADY_DONE.items():
        assert codes <= NOT_FOUND[service]  # "already done" answers are answers of absence
    assert all(reason for table in SERVICE_TRANSIENT.values() for reason in table.values())


def test_status_without_a_known_code() -> None:
    assert isinstance(error_for("gwlb", "X", "Whatever", "m", 404), NotFound)
    assert isinstance(error_for("gwlb", "X", "Whatever", "m", 500), TransientError)
    assert type(error_for("gwlb", "X", "Whatever", "m", 400)) is PermanentError
    assert ApiError("ess", "ScalingActivityInProgress").status == 400
    assert ApiError("gwlb", "ResourceNotFound.BackendServer").status == 404
    assert ApiError("ecs", "ServiceUnavailable").status == 503
