"""Retries at the edge: inside adapters, on an allow-list of transient errors, within a deadline.

Flows never retry; an adapter call either succeeds, or raises a domain error after the retries
its service deserves. A retry never starts if its wait would run past the invocation's deadline:
then the transient error surfaces as ``TransientError`` and FC's async retry takes over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import DeadlineExceeded, TransientError

log = logging.getLogger("gwlb_fleet.retry")
T = TypeVar("T")


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
) -> T:
    """Run ``operation``, retrying what ``transient`` accepts with exponential backoff and jitter.

    Raises the last error as is when it is not transient; wraps a transient one that outlived
    its attempts (or the deadline) in ``TransientError``.
    """
    if deadline.expired:
        raise DeadlineExceeded(
            f"no time left for {service} {action}", code="DeadlineExceeded", service=service
        )
    wait = _SameWaitTwice(wait_exponential_jitter(multiplier=first_wait, max=max_wait, jitter=first_wait))

    def stop(state: RetryCallState) -> bool:
        if stop_after_attempt(attempts)(state):
            return True
        return not deadline.allows(wait(state))

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "transient error, retrying",
            extra={
                "service": service,
                "action": action,
                "attempt": state.attempt_number,
                "error": str(error),
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
        if transient(exc):
            code = getattr(exc, "code", "") or type(exc).__name__
            raise TransientError(f"{action} kept failing: {exc}", code=str(code), service=service) from exc
        raise


class _SameWaitTwice:
    """The jittered wait of an attempt, drawn once: ``stop`` checks it against the deadline and
    tenacity then sleeps it — the same number, or the sleep could run past what was checked."""

    def __init__(self, inner: Callable[[RetryCallState], float]) -> None:
        self._inner = inner
        self._drawn: dict[int, float] = {}

    def __call__(self, state: RetryCallState) -> float:
        attempt = state.attempt_number
        if attempt not in self._drawn:
            self._drawn[attempt] = self._inner(state)
        return self._drawn[attempt]
