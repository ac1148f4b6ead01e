"""An in-memory Function Compute scheduler: asynchronous invocations queued with their delay.

``due(now)`` hands back (and forgets) the calls whose time has come, so that a functional test
can run the continuation a flow scheduled: ``for call in fc.due(): handler(call.payload, ctx)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

from gwlb_fleet.alibaba.fakes.openapi import FakeOpenApiService
from gwlb_fleet.alibaba.fcdelay import HEADER, delay_header, header_error
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.events import CONTINUE_FUNCTION, continuation
from gwlb_fleet.ports import FollowUp

ACCEPTED = 202


@dataclass(frozen=True)
class ScheduledCall:
    function: str
    payload: bytes
    due_at: float  # the fake clock's seconds
    delay_s: int


@dataclass
class FakeFc(FakeOpenApiService):
    service: ClassVar[str] = "fc"

    functions: set[str] = field(default_factory=set)  # the functions that exist; empty: any name
    scheduled: list[ScheduledCall] = field(default_factory=list)
    invoked: list[ScheduledCall] = field(default_factory=list)  # synchronous invocations, for the record
    follow_ups_to: str = CONTINUE_FUNCTION  # the function a workflow's follow-ups go to

    # --- the API ----------------------------------------------------------------------------------

    def api_invoke_function(
        self,
        function_name: str,
        body: bytes,
        invocation_type: str = "Sync",
        async_delay: str | None = None,
    ) -> dict[str, Any]:
        """The answer's HTTP status and headers: 202 for an asynchronous invocation, queued.
        ``async_delay``: the ``x-fc-async-delay`` header's value, None when it was not sent."""
        with self._api("InvokeFunction"):
            if self.functions and function_name not in self.functions:
                raise self._fail("FunctionNotFound", f"function '{function_name}' does not exist")
            delay = 0
            if async_delay is not None:
                # F-FC-4: (0, 3600). Out of range is refused, not clamped: what FC does with it
                # is undocumented (gwlb_fleet.alibaba.fcdelay).
                problem = header_error(async_delay)
                if problem:
                    raise self._fail("InvalidArgument", problem)
                delay = int(async_delay)
            call = ScheduledCall(function_name, bytes(body), self.clock() + delay, delay)
            if invocation_type == "Async":
                self.scheduled.append(call)
                return {"status": ACCEPTED}
            self.invoked.append(call)
            return {"status": 200}

    # --- SchedulerPort ------------------------------------------------------------------------------------

    def follow_up(self, work: FollowUp, delay_s: int, deadline: Deadline) -> None:
        payload = continuation(work.instance_id, work.reason, work.event_id)
        self.call_later(self.follow_ups_to, payload, delay_s, deadline)

    def call_later(self, function: str, payload: bytes, delay_s: int, deadline: Deadline) -> None:
        header = delay_header(delay_s).get(HEADER)  # as gwlb_fleet.alibaba.fc sends it (F-FC-4)
        self._port("InvokeFunction", partial(self.api_invoke_function, function, payload, "Async", header))

    # --- for the tests -----------------------------------------------------------------------------------

    def due(self, now: float | None = None) -> list[ScheduledCall]:
        """The scheduled calls due at ``now`` (default: the clock's now), in order; they are
        removed from the queue, as FC runs each once (at least once, in fact)."""
        with self._lock:
            at = self.clock() if now is None else now
            ready = sorted((c for c in self.scheduled if c.due_at <= at), key=lambda c: c.due_at)
            self.scheduled = [c for c in self.scheduled if c.due_at > at]
            return ready
