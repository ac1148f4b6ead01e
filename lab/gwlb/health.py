"""Health checks of the members, as the GWLB's server group does them.

Each member is probed every ``interval`` seconds from the GWLB's own address. A member becomes
healthy after ``healthy_threshold`` passes in a row and unhealthy after ``unhealthy_threshold``
failures in a row (the cloud allows 1-50 s and 2-10; the lab allows shorter intervals to start
fast). An HTTP check passes on a 2xx answer, a TCP check when the connection opens.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Literal, Protocol

from lab.gwlb.members import Member, MemberSet

log = logging.getLogger("lab.gwlb.health")


class Probe(Protocol):
    def __call__(self, member: Member) -> tuple[bool, str]:
        """(passed, reason)."""
        ...


@dataclass(frozen=True)
class HttpProbe:
    port: int = 8080
    path: str = "/health"
    timeout: float = 1.0
    source: str = ""  # the GWLB's address: appliances answer only the GWLB's networks

    def __call__(self, member: Member) -> tuple[bool, str]:
        connection = http.client.HTTPConnection(member.address, self.port, timeout=self.timeout,
                                                source_address=(self.source, 0) if self.source else None)
        try:
            connection.request("GET", self.path)
            response = connection.getresponse()
            body = response.read(200).decode(errors="replace").strip()
        except (OSError, http.client.HTTPException) as exc:
            return False, f"http {self.path}: {exc or type(exc).__name__}"
        finally:
            connection.close()
        passed = 200 <= response.status < 300
        return passed, f"http {response.status} {body}".strip()


@dataclass(frozen=True)
class TcpProbe:
    port: int = 8080
    timeout: float = 1.0
    source: str = ""

    def __call__(self, member: Member) -> tuple[bool, str]:
        try:
            with socket.create_connection((member.address, self.port), timeout=self.timeout,
                                          source_address=(self.source, 0) if self.source else None):
                return True, f"tcp {self.port} open"
        except OSError as exc:
            return False, f"tcp {self.port}: {exc.strerror or exc}"


def make_probe(protocol: Literal["http", "tcp"], port: int, path: str, timeout: float,
               source: str) -> Probe:
    if protocol == "http":
        return HttpProbe(port=port, path=path, timeout=timeout, source=source)
    return TcpProbe(port=port, timeout=timeout, source=source)


class HealthChecker:
    """One thread per member; ``stop()`` ends them all within one probe timeout."""

    def __init__(self, members: MemberSet, probe: Probe, interval: float = 2.0,
                 healthy_threshold: int = 2, unhealthy_threshold: int = 2) -> None:
        if interval <= 0 or healthy_threshold < 1 or unhealthy_threshold < 1:
            raise ValueError("interval must be positive and thresholds at least 1")
        self.members = members
        self.probe = probe
        self.interval = interval
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}

    def start(self) -> None:
        for member in self.members:
            self.watch(member)

    def watch(self, member: Member) -> None:
        thread = threading.Thread(target=self._check_forever, args=(member,),
                                  name=f"health-{member.member_id}", daemon=True)
        self._threads[member.member_id] = thread
        thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads.values():
            thread.join(timeout=self.interval + 2)

    def _check_forever(self, member: Member) -> None:
        passes = failures = 0
        while not self._stop.is_set():
            passed, reason = self.probe(member)
            if passed:
                passes, failures = passes + 1, 0
            else:
                passes, failures = 0, failures + 1
            member.health_reason = reason
            if passed and passes >= self.healthy_threshold and member.health != "healthy":
                self._transition(member, "healthy", reason)
            elif not passed and failures >= self.unhealthy_threshold and member.health != "unhealthy":
                self._transition(member, "unhealthy", reason)
            self._stop.wait(self.interval)

    @staticmethod
    def _transition(member: Member, state: Literal["healthy", "unhealthy"], reason: str) -> None:
        log.info("member %s", state, extra={"member": member.member_id,
                                            "address": member.address, "was": member.health,
                                            "reason": reason})
        member.health = state
