"""Tea SDK clients built from the settings, and every call through them: retried when transient,
bounded by the invocation's deadline, failing with a domain error.

The Alibaba Cloud Tea SDKs (alibabacloud_gwlb20240415, _ess20220222, _ecs20140526,
_cms20190101, _fc20230330) share one core (alibabacloud_tea_openapi on darabonba). Their
failures come in three shapes:

- ``ThrottlingException``: the answer carried ``x-acs-retry-after``. Always transient; its
  ``retry_after`` (milliseconds, F-API-1) is the least the next wait may be.
- ``ClientException`` (4xx) / ``ServerException`` (5xx), with the service's ``code``: transient
  when the code is on the allow-list (fleet/adapters/openapi_errors.py) or the status is 5xx/429.
- ``UnretryableException`` with no answer at all: the SDK wraps the connection's ``IOError``
  (refused, reset, timed out) in a ``RetryError``. Transient; anything else wrapped there (a body
  that is not JSON) is not.

The SDKs do not retry by themselves (no ``retry_options`` is set); retries happen here, once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

from alibabacloud_tea_openapi import exceptions as tea_exceptions
from alibabacloud_tea_openapi.utils_models import Config
from darabonba.exceptions import RetryError as DaraRetryError
from darabonba.runtime import RuntimeOptions
from Tea.exceptions import RetryError as TeaRetryError
from Tea.exceptions import UnretryableException

from gwlb_fleet import retry
from gwlb_fleet.alibaba.errors import Service, error_for, is_already_done, is_transient_code
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import FleetError, PermanentError, TransientError
from gwlb_fleet.settings import Settings

# The SDKs' own loggers: each adds a StreamHandler at DEBUG when imported, and with $DEBUG set
# they print every request and answer, signed headers and security token included.
SDK_LOGGERS = ("alibabacloud-tea", "darabonba-core", "credentials")
CONNECT_TIMEOUT_S = 5.0
MIN_CALL_TIMEOUT_S = 0.2  # a call with less time than this left is not worth starting


def quiet_sdk_loggers() -> None:
    """Remove the SDKs' handlers and keep their loggers at WARNING: what they still say goes
    through the root logger, as JSON, like everything else (gwlb_fleet.logs)."""
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = True


quiet_sdk_loggers()  # the imports above ran the SDKs' logging setup


@dataclass(frozen=True)
class RetryPolicy:
    """How an adapter retries transient failures (always within the deadline too)."""

    attempts: int = 5
    first_wait: float = 0.5
    max_wait: float = 8.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)


def sdk_config(service: Service, settings: Settings) -> Config:
    """The Tea ``Config`` for ``service``: credentials, endpoint, protocol and timeouts."""
    secret = settings.access_key_secret.get_secret_value() if settings.access_key_secret else ""
    if not settings.access_key_id or not secret:
        raise PermanentError(
            "no Alibaba Cloud credentials: ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET "
            "are not set (FC 3.0 sets them from the function's role)",
            code="InvalidCredentials",
            service=service,
        )
    token = settings.security_token.get_secret_value() if settings.security_token else ""
    endpoint, protocol = _endpoint_and_protocol(service, settings)
    timeout_ms = int(settings.api_timeout_s * 1000)
    return Config(
        access_key_id=settings.access_key_id,
        access_key_secret=secret,
        security_token=token or None,
        region_id=settings.region,
        endpoint=endpoint,
        protocol=protocol,
        read_timeout=timeout_ms,
        connect_timeout=min(timeout_ms, int(CONNECT_TIMEOUT_S * 1000)),
    )


def _endpoint_and_protocol(service: Service, settings: Settings) -> tuple[str | None, str]:
    """A configured endpoint wins (the lab's local server). Without one the SDK picks the
    region's endpoint from its own table, which knows what a pattern cannot (ESS answers on
    ``ess.aliyuncs.com`` in the central regions, CloudMonitor on ``metrics.<region>``, FC 3.0 on
    ``fcv3.<region>``). A scheme in the configured value sets the protocol."""
    configured: str = getattr(settings, f"{service}_endpoint")
    protocol = settings.api_protocol.upper()
    if not configured:
        return None, protocol
    if "://" in configured:
        parts = urlsplit(configured)
        return parts.netloc, parts.scheme.upper()
    return configured.rstrip("/"), protocol


def is_transient(exc: BaseException, service: str) -> bool:
    """Worth another try: throttled, briefly unavailable, a lock held, or no answer at all."""
    if isinstance(exc, tea_exceptions.ThrottlingException):
        return True
    if isinstance(exc, tea_exceptions.AlibabaCloudException):
        status = int(exc.status_code or 0)
        return status >= 500 or status == 429 or is_transient_code(service, str(exc.code or ""))
    if isinstance(exc, UnretryableException):
        return isinstance(exc.inner_exception, DaraRetryError | TeaRetryError)
    return False


def retry_after_s(exc: BaseException) -> float | None:
    """The wait the service asked for, in seconds: the SDK's ``ThrottlingException.retry_after``,
    the ``x-acs-retry-after`` header as the integer it sent, in milliseconds (F-API-1). None when
    the answer carried none (the SDK raises ClientException/ServerException then)."""
    if not isinstance(exc, tea_exceptions.ThrottlingException):
        return None
    milliseconds = exc.retry_after
    if not isinstance(milliseconds, int) or milliseconds <= 0:
        return None
    return milliseconds / 1000.0


def domain_error(service: Service, action: str, exc: BaseException) -> FleetError:
    """The domain error for a vendor exception that is not (or no longer) worth retrying."""
    if isinstance(exc, tea_exceptions.AlibabaCloudException):
        message = str(exc.message or exc.code or "")
        return error_for(service, action, str(exc.code or ""), message, int(exc.status_code or 0))
    if isinstance(exc, UnretryableException) and isinstance(
        exc.inner_exception, DaraRetryError | TeaRetryError
    ):
        return error_for(service, action, "NetworkError", str(exc.inner_exception), 503)
    if isinstance(exc, UnretryableException):  # an answer the SDK could not read
        return PermanentError(f"{action}: {exc.inner_exception!r}", code="BadAnswer", service=service)
    return PermanentError(f"{action}: {exc!r}", code=type(exc).__name__, service=service)


class TeaApi:
    """One product's Tea client, and how every call to it is made."""

    def __init__(
        self, service: Service, client: Any, timeout_s: float, retry_policy: RetryPolicy | None = None
    ) -> None:
        self.service = service
        self.client = client
        self.timeout_s = timeout_s
        self.retry_policy = retry_policy or RetryPolicy()

    @classmethod
    def from_settings(
        cls,
        service: Service,
        settings: Settings,
        client_class: Callable[[Config], Any],
        retry_policy: RetryPolicy | None = None,
    ) -> TeaApi:
        client = client_class(sdk_config(service, settings))
        quiet_sdk_loggers()  # credential providers are imported lazily, with their own handler
        return cls(service, client, settings.api_timeout_s, retry_policy)

    def call(self, action: str, method: Callable[..., Any], *args: Any, deadline: Deadline) -> Any:
        """``method(*args, runtime)``: one SDK ``*_with_options`` call; the SDK's response.

        Transient failures are retried (RetryPolicy, never past the deadline) and then raised as
        TransientError; others are raised at once as the domain error for their code.
        """
        policy = self.retry_policy
        try:
            return retry.call(
                lambda: method(*args, self._runtime(deadline)),
                deadline=deadline,
                transient=lambda exc: is_transient(exc, self.service),
                service=self.service,
                action=action,
                attempts=policy.attempts,
                first_wait=policy.first_wait,
                max_wait=policy.max_wait,
                sleep=policy.sleep,
                retry_after=retry_after_s,
                call_time=MIN_CALL_TIMEOUT_S,
            )
        except TransientError as exc:
            if isinstance(exc.__cause__, UnretryableException):  # no answer: say so, not the class name
                raise TransientError(str(exc), code="NetworkError", service=self.service) from exc.__cause__
            raise
        except FleetError:
            raise
        except Exception as exc:
            raise domain_error(self.service, action, exc) from exc

    def act(self, action: str, method: Callable[..., Any], *args: Any, deadline: Deadline) -> bool:
        """A call for its side effect. An answer that means "already done" for this action is
        success (fleet/adapters/openapi_errors.py ALREADY_DONE). True when the call itself
        took effect, False when it was already done."""
        try:
            self.call(action, method, *args, deadline=deadline)
        except FleetError as exc:
            if is_already_done(self.service, action, exc.code):
                return False
            raise
        return True

    def call_map(
        self,
        action: str,
        method: Callable[..., Any],
        request_class: Callable[[], Any],
        params: Mapping[str, Any],
        deadline: Deadline,
    ) -> dict[str, Any]:
        """One call with its parameters by their wire names (``RuleId``, ``Targets: [{Id, Arn}]``),
        as docs/api-facts.md names them: the SDK model reads them with ``from_map`` and flattens
        them as it always does. The answer's body as the wire's JSON, without the SDK's model.

        ``from_map`` drops, without a word, a key its model has no field for: a misspelt or
        undocumented parameter would never reach the service, and a lab that read the same
        params would agree. Such a key fails here, before any call (PermanentError
        ``UnknownParameter``), as a refused parameter fails in the cloud."""
        request = request_class().from_map(dict(params))
        unknown = dropped_keys(params, request.to_map() or {})
        if unknown:
            model = getattr(request_class, "__name__", type(request).__name__)
            raise PermanentError(
                f"{action}: {model} has no parameter {', '.join(unknown)}: the SDK would drop "
                f"{'it' if len(unknown) == 1 else 'them'} without sending",
                code="UnknownParameter",
                service=self.service,
            )
        response = self.call(action, method, request, deadline=deadline)
        model = body_of(response)
        if model is None:
            raise PermanentError(f"{action}: no body in the answer", code="BadAnswer", service=self.service)
        body: dict[str, Any] = model.to_map()
        return body

    def _runtime(self, deadline: Deadline) -> RuntimeOptions:
        """Per-request timeouts: never wait on one request past the invocation's deadline."""
        seconds = max(MIN_CALL_TIMEOUT_S, min(self.timeout_s, deadline.remaining()))
        milliseconds = int(seconds * 1000)
        return RuntimeOptions(
            autoretry=False,
            read_timeout=milliseconds,
            connect_timeout=min(milliseconds, int(CONNECT_TIMEOUT_S * 1000)),
        )


def dropped_keys(params: Mapping[str, Any], read: Mapping[str, Any], where: str = "") -> list[str]:
    """The keys of ``params`` (nested, as ``Targets.1.Arn``) that are missing from ``read``, what
    the request model gives back (``to_map``) after reading ``params`` (``from_map``). A key whose
    value is None is sent by no one and is not counted."""
    dropped: list[str] = []
    for key, value in params.items():
        if value is None:
            continue
        name = f"{where}{key}"
        if key not in read:
            dropped.append(name)
            continue
        got = read[key]
        if isinstance(value, Mapping) and isinstance(got, Mapping):
            dropped += dropped_keys(value, got, f"{name}.")
        elif isinstance(value, list | tuple) and isinstance(got, list | tuple):
            for index, (item, item_read) in enumerate(zip(value, got, strict=False), start=1):
                if isinstance(item, Mapping) and isinstance(item_read, Mapping):
                    dropped += dropped_keys(item, item_read, f"{name}.{index}.")
    return dropped


def body_of(response: Any) -> Any:
    """The parsed body of a Tea response model (typed Any: the SDKs ship no type information)."""
    return cast(Any, response).body


def setup_calls(models: Any, *actions: str) -> dict[str, tuple[str, Callable[[], Any]]]:
    """action -> (the SDK's ``<snake_case>_with_options`` method, its ``<Action>Request`` model)."""
    return {
        action: (
            re.sub(r"(?<!^)(?=[A-Z])", "_", action).lower() + "_with_options",
            getattr(models, f"{action}Request"),
        )
        for action in actions
    }


class SetupApi:
    """The set-up calls of one product (gwlb_fleet.deploy), by action name: ``calls`` maps each
    action to the SDK method and request model that make it. ``body_verdict`` (CloudMonitor)
    turns a 200 answer whose body says it failed into the error it is (F-CMS-6)."""

    def __init__(
        self,
        api: TeaApi,
        calls: Mapping[str, tuple[str, Callable[[], Any]]],
        body_verdict: Callable[[str, Mapping[str, Any]], None] | None = None,
    ) -> None:
        self.api = api
        self.calls = calls
        self.body_verdict = body_verdict

    @property
    def service(self) -> Service:
        return self.api.service

    def invoke(self, action: str, params: Mapping[str, Any], deadline: Deadline) -> dict[str, Any]:
        if action not in self.calls:
            raise PermanentError(f"{action}: not a set-up call of {self.service}", code="UnknownAction")
        method_name, request_class = self.calls[action]
        method = getattr(self.api.client, method_name)
        body = self.api.call_map(action, method, request_class, params, deadline)
        if self.body_verdict is not None:
            self.body_verdict(action, body)
        return body
