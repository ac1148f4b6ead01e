"""The emulator's health checks on a fake clock: interval, consecutive thresholds, reason codes."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from gwlb_fleet.clock import FakeClock
from gwlb_lab.gwlb.health import CONNECT_FAIL, CheckResult, HealthChecker, HealthCheckSettings
from gwlb_lab.gwlb.members import Member


@dataclass
class SwitchProbe:
    """Passes or fails as the test says, and records when it was asked."""

    passing: bool = True
    asked: list[float] = field(default_factory=list)
    clock: FakeClock = field(default_factory=lambda: FakeClock(0.0))

    def __call__(self, member: Member) -> CheckResult:
        self.asked.append(self.clock.now)
        if self.passing:
            return CheckResult(True, "http 200 ok")
        return CheckResult(False, "tcp 8080: Connection refused", CONNECT_FAIL)


class Run:
    """A checker over one member, driven in 0.25 s steps of a fake clock."""

    def __init__(self, **settings: object) -> None:
        self.clock = FakeClock(0.0)
        self.probe = SwitchProbe(clock=self.clock)
        self.member = Member("nva-1", "198.19.0.11")
        self.changes: list[tuple[float, str, str]] = []
        self.checker = HealthChecker(self.probe, HealthCheckSettings(**settings),  # type: ignore[arg-type]
                                     on_change=self._changed, clock=self.clock)
        self.checker.watch(self.member)

    def _changed(self, member: Member) -> None:
        self.changes.append((self.clock.now, member.health, member.health_code))

    def until(self, t: float) -> None:
        while self.clock.now < t:
            self.checker.run_due(self.clock.now)
            self.clock.now = round(self.clock.now + 0.25, 2)

    def when(self, health: str) -> float:
        """When the member last became ``health``."""
        return [t for t, h, _ in self.changes if h == health][-1]


def test_thresholds_count_consecutive_checks_at_the_interval() -> None:
    run = Run(interval=5.0, healthy_threshold=2, unhealthy_threshold=3)
    run.until(4.9)
    assert run.member.health == "initial" and run.probe.asked == [0.0]  # first check at once
    run.until(20.0)
    assert run.when("healthy") == 5.0  # the second pass in a row
    assert run.probe.asked == [0.0, 5.0, 10.0, 15.0]  # one check per interval

    run.probe.passing = False  # the appliance dies at t=20
    run.until(40.0)
    # failures at 20, 25 and 30: unhealthy at the third, (threshold - 1) x interval after the first
    assert run.when("unhealthy") == 30.0
    assert (run.member.health_code, run.member.health_reason) == (CONNECT_FAIL,
                                                                  "tcp 8080: Connection refused")
    assert run.member.health_since == 30.0

    run.probe.passing = True  # back at t=40
    run.until(60.0)
    assert run.when("healthy") == 45.0  # passes at 40 and 45
    assert run.changes == [(5.0, "healthy", ""), (30.0, "unhealthy", CONNECT_FAIL),
                           (45.0, "healthy", "")]


def test_results_that_never_repeat_enough_change_nothing() -> None:
    run = Run(interval=1.0, healthy_threshold=3, unhealthy_threshold=3)
    for t in range(12):
        run.probe.passing = t % 3 != 2  # pass, pass, fail, ...
        run.until(t + 1.0)
    assert run.member.health == "initial" and run.changes == []


def test_an_initial_member_that_never_passes_becomes_unhealthy() -> None:
    run = Run(interval=2.0, unhealthy_threshold=2)
    run.probe.passing = False
    run.until(10.0)
    assert run.changes[0] == (2.0, "unhealthy", CONNECT_FAIL)


def test_a_slow_check_is_followed_by_the_next_an_interval_later_not_a_burst() -> None:
    run = Run(interval=1.0)
    run.clock.now = 0.0
    run.checker.run_due(0.0)
    assert run.checker.run_due(7.5) == 1  # the clock jumped (a slow probe): one check, not seven
    assert run.checker.run_due(8.0) == 0 and run.checker.run_due(8.5) == 1


def test_an_unwatched_member_is_not_checked() -> None:
    run = Run(interval=1.0)
    run.until(2.0)
    run.checker.unwatch("nva-1")
    asked = len(run.probe.asked)
    run.until(10.0)
    assert len(run.probe.asked) == asked and run.checker.watched() == []


def test_a_probe_that_raises_is_a_failed_check() -> None:
    def broken(member: Member) -> CheckResult:
        raise RuntimeError("bug")

    member = Member("nva-1", "198.19.0.11")
    checker = HealthChecker(broken, HealthCheckSettings(unhealthy_threshold=2))
    assert checker.check(member, 0.0) is False and member.failures == 1
    assert checker.check(member, 1.0) is True and member.health == "unhealthy"
    assert "probe error" in member.health_reason


@pytest.mark.parametrize(("bad", "why"), [
    ({"interval": 0}, "health check interval 0 s"),
    ({"interval": 51}, "health check interval 51 s"),
    ({"healthy_threshold": 1}, "healthy_threshold 1"),
    ({"unhealthy_threshold": 11}, "unhealthy_threshold 11"),
    ({"timeout": 0}, "health check timeout 0 s"),
    ({"port": 0}, "health check port 0"),
    ({"path": "health"}, "health check path 'health'"),
    ({"protocol": "udp"}, "health check protocol must be"),
])
def test_settings_outside_the_cloud_ranges_are_refused(bad: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        HealthCheckSettings(**bad)  # type: ignore[arg-type]
