"""Health checks of the members, as the GWLB's server group does them (HealthCheckConfig).

Each member is probed every ``interval`` seconds (start to start) from the GWLB's own address, to
its data address: TCP (the connection opens) or HTTP (``GET path`` answers 2xx). A member starts
initial, becomes healthy after ``healthy_threshold`` passes in a row and unhealthy after
``unhealthy_threshold`` failures in a row. The cloud allows intervals of 1-50 s and thresholds of
2-10; the lab allows sub-second intervals so that tests run fast.

A failed check carries a reason code in the API's words (``Reason.ReasonCode`` of
GetListenerHealthStatus, modelled on the NLB/ALB codes: Alibaba's GWLB page lists no others):
CONNECT_TIMEOUT, CONNECT_FAIL, RECV_TIMEOUT, RECV_FAIL, RESPONSE_MISMATCH.

``HealthChecker`` runs one thread per watched member (``start``); without threads, ``run_due``
runs the checks that are due at a given time, which is how the thresholds are tested on a fake
clock.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

from gwlb_lab.gwlb.members import Member

log = logging.getLogger("gwlb_lab.gwlb.health")

HealthProtocol = Literal["http", "tcp"]
CONNECT_TIMEOUT, CONNECT_FAIL = "CONNECT_TIMEOUT", "CONNECT_FAIL"
RECV_TIMEOUT, RECV_FAIL, RESPONSE_MISMATCH = "RECV_TIMEOUT", "RECV_FAIL", "RESPONSE_MISMATCH"


class CheckResult(NamedTuple):
    passed: bool
    reason: str  # what the check saw, for people
    code: str = ""  # the API's ReasonCode when it failed


class Probe(Protocol):
    def __call__(self, member: Member) -> CheckResult | tuple[bool, str]: ...


@dataclass(frozen=True)
class HealthCheckSettings:
    """The server group's HealthCheckConfig."""

    enabled: bool = True
    protocol: HealthProtocol = "http"
    port: int = 8080
    path: str = "/health"
    interval: float = 2.0  # seconds, start to start
    timeout: float = 1.0  # seconds, per connect and per answer
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2

    def __post_init__(self) -> None:
        if self.protocol not in ("http", "tcp"):
            raise ValueError(f"health check protocol must be http or tcp, not {self.protocol!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"health check port {self.port} is not 1-65535")
        if not self.path.startswith("/"):
            raise ValueError(f"health check path {self.path!r} must start with /")
        if not 0 < self.interval <= 50:
            raise ValueError(f"health check interval {self.interval} s is not in (0, 50]")
        if not 0 < self.timeout <= 300:
            raise ValueError(f"health check timeout {self.timeout} s is not in (0, 300]")
        for name in ("healthy_threshold", "unhealthy_threshold"):
            value = getattr(self, name)
            if not 2 <= value <= 10:
                raise ValueError(f"{name} {value} is not 2-10")


def _source(source: str) -> tuple[str, int] | None:
    return (source, 0) if source else None


@dataclass(frozen=True)
class HttpProbe:
    port: int = 8080
    path: str = "/health"
    timeout: float = 1.0
    source: str = ""  # the GWLB's address: appliances answer only the GWLB's networks

    def __call__(self, member: Member) -> CheckResult:
        connection = http.client.HTTPConnection(member.address, self.port, timeout=self.timeout,
                                                source_address=_source(self.source))
        try:
            try:
                connection.connect()
            except TimeoutError:
                return CheckResult(False, f"http {self.port}: connect timed out", CONNECT_TIMEOUT)
            except OSError as exc:
                return CheckResult(False, f"http {self.port}: {exc.strerror or exc}", CONNECT_FAIL)
            try:
                connection.request("GET", self.path)
                response = connection.getresponse()
                body = response.read(200).decode(errors="replace").strip()
            except TimeoutError:
                return CheckResult(False, f"http {self.path}: no answer in {self.timeout:g} s",
                                   RECV_TIMEOUT)
            except (OSError, http.client.HTTPException) as exc:
                return CheckResult(False, f"http {self.path}: {exc or type(exc).__name__}", RECV_FAIL)
        finally:
            connection.close()
        reason = f"http {response.status} {body}".strip()
        if 200 <= response.status < 300:
            return CheckResult(True, reason)
        return CheckResult(False, reason, RESPONSE_MISMATCH)


@dataclass(frozen=True)
class TcpProbe:
    port: int = 8080
    timeout: float = 1.0
    source: str = ""

    def __call__(self, member: Member) -> CheckResult:
        try:
            with socket.create_connection((member.address, self.port), timeout=self.timeout,
                                          source_address=_source(self.source)):
                return CheckResult(True, f"tcp {self.port} open")
        except TimeoutError:
            return CheckResult(False, f"tcp {self.port}: connect timed out", CONNECT_TIMEOUT)
        except OSError as exc:
            return CheckResult(False, f"tcp {self.port}: {exc.strerror or exc}", CONNECT_FAIL)


def make_probe(protocol: HealthProtocol, port: int, path: str, timeout: float,
               source: str) -> HttpProbe | TcpProbe:
    if protocol == "http":
        return HttpProbe(port=port, path=path, timeout=timeout, source=source)
    return TcpProbe(port=port, timeout=timeout, source=source)


def probe_for(settings: HealthCheckSettings, source: str) -> HttpProbe | TcpProbe:
    return make_probe(settings.protocol, settings.port, settings.path, settings.timeout, source)


@dataclass(eq=False)
class _Watch:
    member: Member
    next_due: float
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class HealthChecker:
    """Checks the watched members; ``on_change(member)`` after each change of health or reason
    code (called from the checking thread)."""

    def __init__(self, probe: Probe, settings: HealthCheckSettings,
                 on_change: Callable[[Member], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.probe = probe
        self.settings = settings
        self.on_change = on_change
        self.clock = clock
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        self._running = False
        self.checks = 0

    # --- which members ---------------------------------------------------------------------------

    def watch(self, member: Member) -> None:
        """Check ``member`` from now on, first at once (a thread of its own once started)."""
        watch = _Watch(member, next_due=self.clock())
        with self._lock:
            old = self._watches.pop(member.member_id, None)
            self._watches[member.member_id] = watch
            if self._running:
                self._spawn(watch)
        if old is not None:
            old.stop.set()

    def unwatch(self, member_id: str) -> None:
        """Stop checking; its thread ends within one probe timeout (not waited for)."""
        with self._lock:
            watch = self._watches.pop(member_id, None)
        if watch is not None:
            watch.stop.set()

    def watched(self) -> list[Member]:
        with self._lock:
            return [w.member for w in self._watches.values()]

    # --- running ---------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._running = True
            for watch in self._watches.values():
                if watch.thread is None:
                    self._spawn(watch)

    def stop(self) -> None:
        with self._lock:
            self._running = False
            watches = list(self._watches.values())
        for watch in watches:
            watch.stop.set()
        for watch in watches:
            if watch.thread is not None:
                watch.thread.join(timeout=self.settings.timeout * 2 + 2)

    def _spawn(self, watch: _Watch) -> None:
        watch.thread = threading.Thread(target=self._check_forever, args=(watch,),
                                        name=f"health-{watch.member.member_id}", daemon=True)
        watch.thread.start()

    def _check_forever(self, watch: _Watch) -> None:
        while not watch.stop.is_set():
            now = self.clock()
            if now >= watch.next_due:
                self._check_due(watch, now)
            watch.stop.wait(max(0.0, watch.next_due - self.clock()))

    def run_due(self, now: float) -> int:
        """Run, here and now, every check due at ``now`` (tests, on a fake clock); how many."""
        with self._lock:
            due = [w for w in self._watches.values() if w.next_due <= now]
        for watch in due:
            self._check_due(watch, now)
        return len(due)

    def _check_due(self, watch: _Watch, now: float) -> None:
        # Start to start, as the cloud counts its interval; after an overrun (a slow probe, a
        # busy machine) the next check is an interval from now, not a burst of catch-up checks.
        watch.next_due += self.settings.interval
        if watch.next_due <= now:
            watch.next_due = now + self.settings.interval
        self.check(watch.member, now)

    # --- one check -------------------------------------------------------------------------------

    def check(self, member: Member, now: float | None = None) -> bool:
        """Probe once and record the result; True if health or reason code changed."""
        try:
            result = CheckResult(*self.probe(member))
        except Exception as exc:  # a probe's bug must not end the member's checks
            log.exception("health probe failed", extra={"member": member.member_id})
            result = CheckResult(False, f"probe error: {exc!r}", RECV_FAIL)
        self.checks += 1
        return self.record(member, result, self.clock() if now is None else now)

    def record(self, member: Member, result: CheckResult, now: float) -> bool:
        settings = self.settings
        if result.passed:
            member.passes, member.failures = member.passes + 1, 0
        else:
            member.passes, member.failures = 0, member.failures + 1
        member.health_reason = result.reason
        was, was_code = member.health, member.health_code
        if result.passed and member.passes >= settings.healthy_threshold:
            member.health, member.health_code = "healthy", ""
        elif not result.passed and member.failures >= settings.unhealthy_threshold:
            member.health, member.health_code = "unhealthy", result.code
        if member.health != was:
            member.health_since = now
            log.info("member %s", member.health, extra={
                "member": member.member_id, "address": member.address, "was": was,
                "reason": result.reason, "reason_code": member.health_code})
        changed = (member.health, member.health_code) != (was, was_code)
        if changed and self.on_change is not None:
            self.on_change(member)
        return changed
