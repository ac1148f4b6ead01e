from __future__ import annotations

import pytest

from gwlb_fleet import retry
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
