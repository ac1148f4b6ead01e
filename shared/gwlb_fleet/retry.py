"""Retries at the edge: inside adapters, on an allow-list of transient errors, within a deadline.

Flows never retry; an adapter call either succeeds, or raises a domain error after the retries
its service deserves. A retry never starts if its wait would run past the invocation's deadline:
then the transient error surfaces as ``TransientError`` and FC's async retry takes over.

When the service says how long to wait (Alibaba Cloud's ``x-acs-retry-after``, F-API-1), the
next wait is at least that long; if that wait and the call after it do not fit in the time the
invocation has left, there is no point in sleeping at all: the error surfaces at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import DeadlineExceeded, TransientError

log = logging.getLogger("gwlb_fleet.retry")
T = TypeVar("T")


def no_retry_after(exc: BaseException) -> float | None:
    """For services that never say how long to wait."""
    return None


def call(
    operation: Callable[[], T],
    *,
    deadline: Deadline,
    transient: Callable[[BaseException], bool],
    service: str,
    action: str,
    attempts: int = 5,
    first_wait: float = 0.5,
    max_wait: float = 8.0,
    sleep: Callable[[float], None] = time.sleep,
    retry_after: Callable[[BaseException], float | None] = no_retry_after,
    call_time: float = 0.0,
) -> T:
    """Run ``operation``, retrying what ``transient`` accepts with exponential backoff and jitter.

    ``retry_after`` reads, from an error, the seconds the service asked to wait (None when it did
    not say): the next wait is then at least that. ``call_time`` is what one more call needs
    after the wait; a retry whose wait leaves less than that before the deadline is not made.

    Raises the last error as is when it is not transient; wraps a transient one that outlived
    its attempts (or the deadline) in ``TransientError``.
    """
    if deadline.expired:
        raise DeadlineExceeded(
            f"no time left for {service} {action}", code="DeadlineExceeded", service=service
        )
    wait = _SameWaitTwice(
        wait_exponential_jitter(multiplier=first_wait, max=max_wait, jitter=first_wait), retry_after
    )

    # the wait that did not fit before the deadline, and the time that was left then
    beyond_deadline: list[tuple[_PlannedWait, float]] = []

    def stop(state: RetryCallState) -> bool:
        if stop_after_attempt(attempts)(state):
            return True
        planned = wait.planned(state)
        left = deadline.remaining()
        if left >= planned.seconds + call_time:
            return False
        beyond_deadline.append((planned, left))
        return True

    def before_sleep(state: RetryCallState) -> None:
        planned = wait.planned(state)
        log.warning(
            "transient error, retrying",
            extra={
                "service": service,
                "action": action,
                "attempt": state.attempt_number,
                "error": str(_error_of(state)),
                "delay_s": round(state.upcoming_sleep, 3),  # what tenacity sleeps next
                "delay_from": "retry-after" if planned.asked_by_service else "backoff",
            },
        )

    retrying = Retrying(
        retry=retry_if_exception(transient),
        wait=wait,
        stop=stop,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(operation)
    except Exception as exc:
        if not transient(exc):
            raise
        code = str(getattr(exc, "code", "") or type(exc).__name__)
        if beyond_deadline and beyond_deadline[-1][0].asked_by_service:
            planned, left = beyond_deadline[-1]
            raise _no_time_for_retry_after(
                action, exc, code, service, planned.seconds, left, call_time
            ) from exc
        raise TransientError(f"{action} kept failing: {exc}", code=code, service=service) from exc


def _no_time_for_retry_after(
    action: str, exc: BaseException, code: str, service: str, asked: float, left: float, call_time: float
) -> TransientError:
    """The service asked for a wait the invocation cannot afford: say so, and leave the retry to
    FC (a later invocation has its whole timeout ahead of it)."""
    log.warning(
        "retry-after beyond the deadline, not waiting",
        extra={
            "service": service,
            "action": action,
            "retry_after_s": asked,
            "remaining_s": round(left, 3),
            "error": str(exc),
        },
    )
    return TransientError(
        f"{action}: the service asks to retry after {asked:.3f} s, but only {left:.3f} s are left "
        f"(a call needs {call_time:.3f} s of them): not waiting, FC's retry takes over: {exc}",
        code=code,
        service=service,
    )


def _error_of(state: RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome else None


@dataclass(frozen=True)
class _PlannedWait:
    """The wait before the next attempt, and what the service asked for, if it did."""

    seconds: float
    retry_after: float | None

    @property
    def asked_by_service(self) -> bool:
        return self.retry_after is not None and self.seconds == self.retry_after


class _SameWaitTwice:
    """The wait of an attempt, decided once: ``stop`` checks it against the deadline and
    tenacity then sleeps it — the same number, or the sleep could run past what was checked.

    The wait is the jittered backoff, or the service's retry-after when that is longer: never
    shorter than the service asked, and never shorter than our own backoff (a retry-after read
    in the wrong unit then costs at most a wait too short by the service's measure, not a
    retry storm)."""

    def __init__(
        self,
        backoff: Callable[[RetryCallState], float],
        retry_after: Callable[[BaseException], float | None],
    ) -> None:
        self._backoff = backoff
        self._retry_after = retry_after
        self._planned: dict[int, _PlannedWait] = {}

    def __call__(self, state: RetryCallState) -> float:
        return self.planned(state).seconds

    def planned(self, state: RetryCallState) -> _PlannedWait:
        attempt = state.attempt_number
        if attempt not in self._planned:
            error = _error_of(state)
            asked = self._retry_after(error) if error is not None else None
            backoff = self._backoff(state)
            self._planned[attempt] = _PlannedWait(max(backoff, asked or 0.0), asked)
        return self._planned[attempt]
