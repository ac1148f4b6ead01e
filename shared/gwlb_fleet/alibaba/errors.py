"""Alibaba Cloud OpenAPI error codes, and what each means to the control plane.

One table for the adapters (fleet/adapters/tea.py maps the Tea SDK's exceptions through it), the
fakes (fleet/fakes/*: they raise what the service would, mapped the same way) and the lab's local
endpoints (lab/api: the HTTP status each code is answered with). No SDK import here, so that the
fakes stay light.

Sources: the products' API reference error tables (ESS: RemoveInstances, DetachInstances,
CompleteLifecycleAction, lifecycle hooks; NLB, GWLB's sibling in the same API family:
RemoveServersFromServerGroup), and what Alibaba's own Terraform provider retries for GWLB/NLB
server groups (``NeedRetry``: ``Throttling*``, ``ServiceUnavailable``, any 5xx; plus
``Conflict.Lock``, ``IncorrectStatus.serverGroup``, ``SystemBusy``,
``OperationFailed.ResourceIsConfiguring``).
"""

from __future__ import annotations

from typing import Literal

from gwlb_fleet.errors import (
    FleetError,
    LimitExceeded,
    NotFound,
    PermanentError,
    ScalingConflict,
    TransientError,
)

Service = Literal["gwlb", "ess", "ecs", "cms", "fc", "mns", "ram", "kms", "vpc", "privatelink"]

# --- worth retrying (inside the adapter, within the invocation's deadline) ----------------------------

# Every product: the gateway's flow control and the service's own transient failures.
COMMON_TRANSIENT: dict[str, str] = {
    "Throttling": "request throttled (gateway flow control)",
    "Throttling.User": "request throttled: the account's own rate limit",
    "Throttling.Api": "request throttled: the API's rate limit",
    "Throttling.Resource": "request throttled: too many calls on one resource",
    "ServiceUnavailable": "503: the service is briefly unavailable",
    "InternalError": "500: an internal error; the request is safe to replay (ClientToken)",
    "UnknownError": "500 class: the service could not say what went wrong",
    "SystemBusy": "the system is busy, please try again later",
}

SERVICE_TRANSIENT: dict[str, dict[str, str]] = {
    "gwlb": {
        "Conflict.Lock": "another change holds the server group's lock (seconds)",
        "IncorrectStatus.ServerGroup": "the group is Configuring after another change",
        "IncorrectStatus.serverGroup": "the same, as NLB spells it",
        "OperationFailed.ResourceIsConfiguring": "the group is Configuring after another change",
        "IdempotenceProcessing": "the first request with this ClientToken is still being processed",
    },
    "ess": {
        # Not ScalingActivityInProgress: an activity can wait hours on lifecycle hooks, so it is
        # a ScalingConflict for the flow to decide on, never retried in place.
    },
    "ecs": {
        "OperationConflict": "the request conflicts with one still running on the instance",
        "LastTokenProcessing": "the first request with this ClientToken is still being processed",
    },
    "cms": {},
    "kms": {  # F-KMS-5
        "Rejected.Throttling": "429: the account's KMS request rate is exceeded",
        "ServiceUnavailableTemporary": "KMS is briefly unavailable",
        "InternalFailure": "500: KMS's own failure",
    },
    "mns": {},
    "ram": {},
    "fc": {
        "TooManyRequests": "429: the function's or account's invocation rate limit",
        "ResourceThrottled": "429: the account's concurrency is exhausted",
        "ResourceExhausted": "the region is short of resources for now",
        "ServiceError": "500: FC's own failure",
        "InternalServerError": "500: FC's own failure",
    },
}

# --- ESS's activity lock: another scaling activity runs -------------------------------------------------

CONFLICT: dict[str, dict[str, str]] = {
    "ess": {
        "ScalingActivityInProgress": "another scaling activity runs in the group (400)",
    },
}

# --- a per-resource quota used up: asking again fails the same way ---------------------------------------

LIMITS: dict[str, frozenset[str]] = {
    # F-ESS-6: RecordLifecycleActionHeartbeat, at most 20 per lifecycle action and 6 hours in all.
    "ess": frozenset({"LifecycleAction.RecordTimesExceeded", "LifecycleAction.TimeExceeded"}),
}

# --- the thing is gone -------------------------------------------------------------------------------------

NOT_FOUND: dict[str, frozenset[str]] = {
    "gwlb": frozenset(
        {
            "ResourceNotFound.ServerGroup",
            "ResourceNotFound.serverGroup",
            "ResourceNotFound.BackendServer",
            "ResourceNotFound.Listener",
        }
    ),
    "ess": frozenset(
        {
            "InvalidScalingGroupId.NotFound",
            "InvalidInstanceId.NotFound",
            "InvalidLifecycleHookId.NotExist",  # F-ESS-10: a hook named by its id
            "InvalidLifecycleHookName.NotExist",  # F-ESS-10: by ScalingGroupId + LifecycleHookName
            "InvalidScalingConfigurationId.NotFound",
            # the token matches no lifecycle action in progress: finished, expired, or never was
            "LifecycleHookIdAndLifecycleActionToken.Invalid",
        }
    ),
    "ecs": frozenset({"InvalidInstanceId.NotFound", "InvalidSecurityGroupId.NotFound"}),  # F-ECS-6
    "vpc": frozenset({"InvalidRouteTableId.NotFound"}),  # F-VPC-3 (assumed)
    "privatelink": frozenset({"EndpointNotFound"}),  # F-VPC-2 (assumed)
    "cms": frozenset(),
    "fc": frozenset({"FunctionNotFound"}),
    "kms": frozenset({"Forbidden.ResourceNotFound"}),  # F-KMS-5
    "mns": frozenset({"QueueNotExist"}),  # F-MNS-4
    "ram": frozenset({"EntityNotExist.Role"}),  # F-RAM-1
}

# --- answers that mean "already done": success for an idempotent call -----------------------------------

ALREADY_DONE: dict[tuple[str, str], frozenset[str]] = {
    # removing a member that is not in the group (any more)
    ("gwlb", "RemoveServersFromServerGroup"): frozenset({"ResourceNotFound.BackendServer"}),
    # the action is no longer in progress: completed before (a retried event) or timed out, when
    # ESS already applied the hook's default result. A wrong token answers the same; the flows
    # read the action back (DescribeLifecycleActions) where that matters.
    ("ess", "CompleteLifecycleAction"): frozenset({"LifecycleHookIdAndLifecycleActionToken.Invalid"}),
    # set-up (gwlb_fleet.deploy): creating what exists, deleting what is gone
    ("mns", "DeleteQueue"): frozenset({"QueueNotExist"}),  # F-MNS-4
    ("ess", "DeleteLifecycleHook"): frozenset(  # F-ESS-10
        {"InvalidLifecycleHookId.NotExist", "InvalidLifecycleHookName.NotExist"}
    ),
}

# GWLB's code for adding a server that is already a member is not in any reference found; the
# adapter does not rely on it (it reads the member back), and the fakes answer with this one.
ASSUMED_ALREADY_MEMBER = "ResourceAlreadyExist.Server"

# --- HTTP status each code is answered with (the lab's endpoints answer as the services do) -----------

WIRE_STATUS: dict[str, int] = {
    "Throttling": 400,
    "Throttling.User": 400,
    "Throttling.Api": 400,
    "Throttling.Resource": 400,
    "ServiceUnavailable": 503,
    "InternalError": 500,
    "UnknownError": 500,
    "SystemBusy": 400,
    "Conflict.Lock": 400,
    "IncorrectStatus.ServerGroup": 400,
    "IncorrectStatus.serverGroup": 400,
    "IdempotenceProcessing": 400,
    "ScalingActivityInProgress": 400,
    "IncorrectScalingGroupStatus": 400,
    "IncorrectCapacity.MinSize": 400,
    "IncorrectCapacity.MaxSize": 400,
    "LifecycleHookIdAndLifecycleActionToken.Invalid": 400,
    "LifecycleAction.RecordTimesExceeded": 400,  # F-ESS-6
    "LifecycleAction.TimeExceeded": 400,  # F-ESS-6
    "InvalidLifecycleHookId.NotExist": 400,  # F-ESS-10: the hook error tables, all 400
    "InvalidLifecycleHookName.NotExist": 400,
    "InvalidLifecycleHookName.Duplicate": 400,
    "QuotaExceeded.LifecycleHook": 400,
    "InvalidNotificationArn": 400,
    "UnsupportedNotificationType.CurrentRegion": 400,
    "InvalidParamter": 400,  # sic: ESS's spelling in its error tables
    "Forbidden.Unauthorized": 403,
    "Forbidden.RAM": 403,
    "Forbidden.NoPermission": 403,
    "InvalidAccessKeyId.NotFound": 404,
    "SignatureDoesNotMatch": 400,
    "MissingParameter": 400,
    "InvalidParameter": 400,
    "UnsupportedOperation": 400,
    "TooManyRequests": 429,
    "ResourceThrottled": 429,
    "FunctionNotFound": 404,
    "Forbidden.ResourceNotFound": 404,  # F-KMS-5
    "Rejected.Throttling": 429,
    "Rejected.ResourceExist": 409,  # F-KMS-5
    "InvalidQueryParameter": 400,  # F-CMS-11
    "InternalFailure": 500,
    "QueueAlreadyExist": 409,  # F-MNS-4
    "QueueNotExist": 404,
    "EntityNotExist.Role": 404,  # F-RAM-1
}


def is_transient_code(service: str, code: str) -> bool:
    if code in COMMON_TRANSIENT or code.startswith("Throttling"):
        return True
    return code in SERVICE_TRANSIENT.get(service, {})


def is_conflict_code(service: str, code: str) -> bool:
    return code in CONFLICT.get(service, {})


def is_already_done(service: str, action: str, code: str) -> bool:
    return code in ALREADY_DONE.get((service, action), frozenset())


def error_for(service: str, action: str, code: str, message: str, status: int = 0) -> FleetError:
    """The domain error for a service's answer ``code`` (HTTP ``status`` when known)."""
    text = f"{action}: {message}" if message else action
    if is_conflict_code(service, code):
        return ScalingConflict(text, code=code, service=service)
    if is_transient_code(service, code) or status >= 500 or status == 429:
        return TransientError(text, code=code, service=service)
    if code in LIMITS.get(service, frozenset()):
        return LimitExceeded(text, code=code, service=service)
    if code in NOT_FOUND.get(service, frozenset()) or status == 404:
        return NotFound(text, code=code, service=service)
    return PermanentError(text, code=code, service=service)


def wire_status(service: str, code: str) -> int:
    """The HTTP status a service answers ``code`` with."""
    if code in WIRE_STATUS:
        return WIRE_STATUS[code]
    if code in NOT_FOUND.get(service, frozenset()):
        return 404
    if is_transient_code(service, code):
        return 503
    return 400


class ApiError(Exception):
    """What a service answers when it refuses a request: its code, message and HTTP status.

    The fakes' ``api_*`` methods (the service's own API, as the lab's endpoints serve it) fail
    with this; their port methods turn it into the domain error ``error_for`` gives, as the real
    adapters do with the SDK's exceptions."""

    def __init__(self, service: str, code: str, message: str = "", status: int = 0) -> None:
        super().__init__(f"{service}: {code}: {message}")
        self.service = service
        self.code = code
        self.message = message or code
        self.status = status or wire_status(service, code)

    def domain(self, action: str) -> FleetError:
        return error_for(self.service, action, self.code, self.message, self.status)
