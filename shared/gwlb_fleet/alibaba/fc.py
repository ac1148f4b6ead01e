"""SchedulerPort over alibabacloud_fc20230330: call a function later, asynchronously.

A workflow's follow-up becomes a continuation event (gwlb_fleet.events.ContinueEvent) for the
function that continues workflows (``follow_ups_to``, by default ``events.CONTINUE_FUNCTION``).

FC runs an asynchronous invocation (``x-fc-invocation-type: Async``) after the delay in the
``x-fc-async-delay`` header, documented for FC 3.0 as (0, 3600) seconds (F-FC-4; the range and
its safe reading live in gwlb_fleet.alibaba.fcdelay). The SDK has no field for that header: it
goes in ``common_headers``. No header is sent for a follow-up due at once; a longer delay is
capped at 3599 s. A continuation that arrives before it is due (capped, or the header not
honoured) does not run the flow's steps: the lifecycle workflow sees it is early and leaves the
flow to the reconcile timer, so an ignored header cannot become a tight invocation loop.
Asynchronous invocations are delivered at least once, so the payload's handler must be
idempotent (they are: gwlb_fleet.handler).
"""

from __future__ import annotations

import io
import logging
from typing import Any

from alibabacloud_fc20230330 import models as fc_models
from alibabacloud_fc20230330.client import Client as FcClient

from gwlb_fleet.alibaba.fcdelay import delay_header, sent_delay
from gwlb_fleet.alibaba.tea import RetryPolicy, TeaApi
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import PermanentError
from gwlb_fleet.events import CONTINUE_FUNCTION, continuation
from gwlb_fleet.ports import FollowUp
from gwlb_fleet.settings import Settings

RAM_ACTIONS: frozenset[str] = frozenset({"fc:InvokeFunction"})

ACCEPTED = 202  # an asynchronous invocation is queued, not run

log = logging.getLogger("gwlb_fleet.alibaba.fc")


def deployed_name(function: str, prefix: str) -> str:
    """The wiring names a function by its role ("lifecycle"); FC knows it as "<prefix>-lifecycle"."""
    if not prefix or function.startswith(f"{prefix}-"):
        return function
    return f"{prefix}-{function}"


class FcScheduler:
    def __init__(
        self, api: TeaApi, function_prefix: str = "", follow_ups_to: str = CONTINUE_FUNCTION
    ) -> None:
        self.api = api
        self.function_prefix = function_prefix
        self.follow_ups_to = follow_ups_to

    @classmethod
    def from_settings(cls, settings: Settings, retry_policy: RetryPolicy | None = None) -> FcScheduler:
        return cls(TeaApi.from_settings("fc", settings, FcClient, retry_policy), settings.function_prefix)

    @property
    def client(self) -> Any:
        return self.api.client

    def follow_up(self, work: FollowUp, delay_s: int, deadline: Deadline) -> None:
        payload = continuation(work.instance_id, work.reason, work.event_id)
        self.call_later(self.follow_ups_to, payload, delay_s, deadline)

    def call_later(self, function: str, payload: bytes, delay_s: int, deadline: Deadline) -> None:
        """Invoke ``function`` (by its role, or its deployed name) asynchronously with ``payload``
        after ``delay_s`` seconds."""
        function = deployed_name(function, self.function_prefix)
        headers_sent = delay_header(delay_s)  # F-FC-4
        delay = sent_delay(delay_s)
        if delay != delay_s:
            log.info(
                "delay clamped to what FC accepts",
                extra={"function_name": function, "asked_s": delay_s, "delay_s": delay},
            )

        def invoke(runtime: Any) -> Any:
            # A fresh body for every attempt: a retry must not send an exhausted stream.
            request = fc_models.InvokeFunctionRequest(body=io.BytesIO(payload))
            headers = fc_models.InvokeFunctionHeaders(
                x_fc_invocation_type="Async", common_headers=dict(headers_sent)
            )
            return self.client.invoke_function_with_options(function, request, headers, runtime)

        response = self.api.call("InvokeFunction", invoke, deadline=deadline)
        status = int(response.status_code or 0)
        if status != ACCEPTED:
            raise PermanentError(
                f"InvokeFunction {function} answered {status}, not {ACCEPTED} (queued)",
                code=f"HTTP{status}",
                service="fc",
            )
