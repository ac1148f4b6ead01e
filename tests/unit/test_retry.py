from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from alibabacloud_tea_openapi import exceptions as tea_exceptions

from gwlb_fleet import retry
from gwlb_fleet.alibaba.tea import retry_after_s
from gwlb_fleet.clock import FakeClock
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import DeadlineExceeded, TransientError


class Flaky(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def transient(exc: BaseException) -> bool:
    return isinstance(exc, Flaky) and exc.code == "Throttling"


def test_transient_errors_are_retried_then_succeed() -> None:
    clock = FakeClock(0.0)
    calls = iter([Flaky("Throttling"), Flaky("Throttling"), "ok"])

    def operation() -> str:
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert (
        retry.call(
            operation,
            deadline=Deadline.after(60, clock=clock),
            transient=transient,
            service="ess",
            action="RemoveInstances",
            sleep=clock.sleep,
        )
        == "ok"
    )
    assert 0 < clock.now < 5


def test_other_errors_are_raised_at_once() -> None:
    clock = FakeClock(0.0)
    count = 0

    def operation() -> None:
        nonlocal count
        count += 1
        raise Flaky("InvalidParameter")

    with pytest.raises(Flaky):
        retry.call(
            operation,
            deadline=Deadline.after(60, clock=clock),
            transient=transient,
            service="ess",
            action="X",
            sleep=clock.sleep,
        )
    assert count == 1


def test_retries_stop_at_the_deadline_and_surface_as_transient() -> None:
    clock = FakeClock(0.0)
    count = 0

    def operation() -> None:
        nonlocal count
        count += 1
        raise Flaky("Throttling")

    with pytest.raises(TransientError) as err:
        retry.call(
            operation,
            deadline=Deadline.after(4.0, margin=1.0, clock=clock),
            transient=transient,
            service="gwlb",
            action="AddServersToServerGroup",
            attempts=50,
            sleep=clock.sleep,
        )
    assert err.value.code == "Throttling" and err.value.service == "gwlb"
    assert clock.now <= 3.0 and 1 < count < 50


def test_no_call_without_time_left() -> None:
    clock = FakeClock(0.0)
    deadline = Deadline.after(1.0, margin=2.0, clock=clock)
    with pytest.raises(DeadlineExceeded):
        retry.call(lambda: None, deadline=deadline, transient=transient, service="s", action="a")


# --- the service's retry-after (x-acs-retry-after, F-API-1) --------------------------------------


class Throttled(Flaky):
    """A throttling answer that says how long to wait (the SDK's ThrottlingException.retry_after)."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("Throttling")
        self.retry_after_s = retry_after_s


def asked_wait(exc: BaseException) -> float | None:
    return exc.retry_after_s if isinstance(exc, Throttled) else None


class SleepRecorder:
    """Sleeps on the fake clock, and remembers each wait."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.sleep(seconds)


class Answers:
    """An operation that raises or returns each outcome in turn, counting its calls."""

    def __init__(self, *outcomes: object) -> None:
        self.pending = list(outcomes)
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        outcome = self.pending.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def call_with_retry_after(
    operation: Callable[[], object], clock: FakeClock, seconds_left: float, **options: Any
) -> tuple[object, SleepRecorder]:
    sleep = SleepRecorder(clock)
    result = retry.call(
        operation,
        deadline=Deadline.after(seconds_left, margin=0.0, clock=clock),
        transient=transient,
        service="ess",
        action="DescribeScalingGroups",
        sleep=sleep,
        retry_after=asked_wait,
        **options,
    )
    return result, sleep


def test_the_wait_is_at_least_the_retry_after_the_service_asked_for() -> None:
    clock = FakeClock(0.0)
    operation = Answers(Throttled(7.0), "ok")
    result, sleep = call_with_retry_after(operation, clock, 60.0, first_wait=0.5, max_wait=8.0)
    assert result == "ok"
    assert sleep.waits == [7.0]  # the backoff alone would have waited at most 1 s


def test_a_backoff_longer_than_the_retry_after_is_kept() -> None:
    clock = FakeClock(0.0)
    operation = Answers(Throttled(0.001), "ok")
    _, sleep = call_with_retry_after(operation, clock, 60.0, first_wait=2.0, max_wait=8.0)
    assert len(sleep.waits) == 1 and sleep.waits[0] >= 2.0


def test_a_retry_after_beyond_the_deadline_raises_at_once_without_sleeping() -> None:
    clock = FakeClock(0.0)
    operation = Answers(Throttled(30.0), "never reached")
    sleep = SleepRecorder(clock)
    with pytest.raises(TransientError) as err:
        retry.call(
            operation,
            deadline=Deadline.after(10.0, margin=0.0, clock=clock),
            transient=transient,
            service="ess",
            action="DescribeScalingGroups",
            sleep=sleep,
            retry_after=asked_wait,
        )
    assert sleep.waits == [] and operation.calls == 1
    assert err.value.code == "Throttling" and err.value.service == "ess"
    assert "retry after 30.000 s" in str(err.value) and "10.000 s are left" in str(err.value)


def test_a_retry_after_that_leaves_no_time_for_the_call_is_not_waited() -> None:
    clock = FakeClock(0.0)
    with pytest.raises(TransientError):
        call_with_retry_after(Answers(Throttled(9.9), "ok"), clock, 10.0, call_time=0.2)
    assert clock.now == 0.0

    result, sleep = call_with_retry_after(Answers(Throttled(9.7), "ok"), clock, 10.0, call_time=0.2)
    assert result == "ok" and sleep.waits == [9.7]


def test_the_retry_after_checked_against_the_deadline_is_the_one_slept() -> None:
    """The wait is decided once per attempt: a second reading (here a different number) must not
    replace the one the deadline was checked with."""
    clock = FakeClock(0.0)
    readings = iter([5.0, 50.0, 50.0, 50.0])

    def changing_retry_after(exc: BaseException) -> float | None:
        return next(readings)

    sleep = SleepRecorder(clock)
    result = retry.call(
        Answers(Throttled(0.0), "ok"),
        deadline=Deadline.after(10.0, margin=0.0, clock=clock),
        transient=transient,
        service="gwlb",
        action="ListServerGroupServers",
        sleep=sleep,
        retry_after=changing_retry_after,
    )
    assert result == "ok" and sleep.waits == [5.0]


def test_the_retry_line_shows_the_delay_slept_and_where_it_came_from(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(0.0)
    operation = Answers(Throttled(7.0), Flaky("Throttling"), "ok")
    with caplog.at_level(logging.WARNING, logger="gwlb_fleet.retry"):
        _, sleep = call_with_retry_after(operation, clock, 60.0, first_wait=0.5, max_wait=8.0)
    lines = [r for r in caplog.records if r.getMessage() == "transient error, retrying"]
    assert [(r.__dict__["delay_s"], r.__dict__["delay_from"]) for r in lines] == [
        (7.0, "retry-after"),
        (round(sleep.waits[1], 3), "backoff"),
    ]
    assert sleep.waits[0] == 7.0


def test_the_sdk_retry_after_is_read_in_milliseconds() -> None:
    throttled = tea_exceptions.ThrottlingException(status_code=400, code="Throttling", retry_after=1500)
    assert retry_after_s(throttled) == 1.5
    assert retry_after_s(tea_exceptions.ClientException(status_code=400, code="Throttling")) is None
    assert retry_after_s(Flaky("Throttling")) is None
