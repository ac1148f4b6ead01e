"""The whole GWLB emulator in one object, for a process that hosts it (``python -m gwlb_lab.gwlb``, or
the lab cloud next to the control plane)::

    emulator = GwlbEmulator(EmulatorConfig(...), FakeGwlbMembers(cloud.gwlb, "sgp-fleet", "lsn-fleet"))
    emulator.start()          # inside the gwlb namespace: the tun must exist there
    emulator.status()         # members (status, health, reason, flows, packets/bytes), totals, drops
    emulator.unhealthy_count()  # acs_gwlb UnHealthyServerCount
    emulator.stop()

Threads: the data path (tun and Geneve sockets), the membership sync (reads the source every
``poll_interval``; new members are health-checked from their first sight, members the source no
longer lists are dropped) and one health-check thread per member. Health changes go back to the
source (``report_health``) as the API's words: Initial, Healthy, Unhealthy (with a reason code),
or Unavailable when health checks are off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from gwlb_fleet.ports import HealthStatus
from gwlb_lab.gwlb.config import EmulatorConfig
from gwlb_lab.gwlb.emulator import Emulator
from gwlb_lab.gwlb.health import HealthChecker, Probe, probe_for
from gwlb_lab.gwlb.members import API_HEALTH, Member, MemberChanges, MemberSet, MemberSource
from gwlb_lab.gwlb.status import StatusServer

log = logging.getLogger("gwlb_lab.gwlb")
HEALTH_OFF_REASON = "health check off"


class GwlbEmulator:
    def __init__(self, config: EmulatorConfig, source: MemberSource, probe: Probe | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``probe`` replaces the configured TCP/HTTP check (tests); ``clock`` must be
        monotonic-compatible once started (the data path measures drains with it)."""
        self.config = config
        self.source = source
        self.clock = clock
        self.members = MemberSet(seed=config.hash_seed, scheduler=config.scheduler)
        self.datapath = Emulator(config, self.members)
        self.checker = HealthChecker(probe or probe_for(config.health, config.local_address),
                                     config.health, on_change=self._report, clock=clock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._status_server: StatusServer | None = None
        self._reported: dict[str, tuple[HealthStatus, str]] = {}
        self._state = "new"
        self.data_path_error = ""
        self.syncs = 0
        self.source_errors = 0
        self.last_source_error = ""
        self.report_errors = 0

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Read the members, open the tun and sockets, start the threads. Raises OSError (no
        tun, address not ours, status port taken) with nothing left running."""
        if self._state != "new":
            raise RuntimeError(f"the emulator is {self._state}; start() runs once")
        self.sync()  # the members are known before the first packet
        try:
            self.datapath.open()
            if self.config.status_address is not None:
                self._status_server = StatusServer(self.config.status_address,
                                                   {"/status": self.status, "/flows": self.flows})
        except OSError:
            self.datapath.close()
            raise
        self._state = "running"
        self._threads = [
            threading.Thread(target=self._run_data_path, name="gwlb-datapath", daemon=True),
            threading.Thread(target=self._sync_forever, name="gwlb-members", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if self.config.health.enabled:
            self.checker.start()
        if self._status_server is not None:
            self._status_server.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every thread and close the tun and sockets; again is harmless."""
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return
        self._stop.set()
        self.checker.stop()
        for thread in self._threads:
            thread.join(timeout)
        if self._status_server is not None:
            self._status_server.stop()
        if not any(t.is_alive() for t in self._threads):
            self.datapath.close()
        self._state = "stopped"

    @property
    def failed(self) -> bool:
        """The data path stopped on an error (``data_path_error`` says which)."""
        return bool(self.data_path_error)

    def _run_data_path(self) -> None:
        try:
            self.datapath.run(self._stop)
        except Exception as exc:
            log.exception("data path failed")
            self.data_path_error = repr(exc)

    def _sync_forever(self) -> None:
        while not self._stop.wait(self.config.poll_interval):
            try:
                self.sync()
            except Exception as exc:  # the source is another component's; keep polling it
                self.source_errors += 1
                if repr(exc) != self.last_source_error:
                    log.exception("reading the members failed")
                self.last_source_error = repr(exc)

    # --- membership -----------------------------------------------------------------------------

    def sync(self) -> MemberChanges:
        """Reconcile the member set with the source once."""
        now = self.clock()
        changes = self.members.sync(self.source.members(), now)
        self.syncs += 1
        for member in changes.removed:
            self.checker.unwatch(member.member_id)
            self._reported.pop(member.member_id, None)
            log.info("member left the group", extra={
                "member": member.member_id, "address": member.address,
                "flows": member.counters.flows})
        for member in changes.added:
            log.info("member joined the group", extra={
                "member": member.member_id, "address": member.address, "status": member.status})
            if self.config.health.enabled:
                self.checker.watch(member)
            else:
                member.health, member.health_reason = "healthy", HEALTH_OFF_REASON
            self._report(member)
        for member, was in changes.status_changed:
            log.info("member status changed", extra={
                "member": member.member_id, "was": was, "status": member.status,
                "flows": member.counters.flows})
        return changes

    def _report(self, member: Member) -> None:
        """Tell the source what the checks found, when it changed (health-check threads and
        the sync thread call this)."""
        if self.members.get(member.member_id) is not member:
            return  # left the group while its last check ran
        status: HealthStatus = API_HEALTH[member.health] if self.config.health.enabled else "Unavailable"
        answer = (status, member.health_code)
        if self._reported.get(member.member_id) == answer:
            return
        try:
            self.source.report_health(member.member_id, *answer)
        except Exception:  # the source is another component's; the next change reports again
            self.report_errors += 1
            log.exception("reporting health failed", extra={"member": member.member_id})
            return
        self._reported[member.member_id] = answer

    # --- reporting ------------------------------------------------------------------------------

    def unhealthy_count(self) -> int:
        """Members whose checks fail (the acs_gwlb UnHealthyServerCount metric)."""
        return self.members.unhealthy_count()

    def health(self) -> list[dict[str, str]]:
        """Per member, what GetListenerHealthStatus would answer: server id, status, reason."""
        enabled = self.config.health.enabled
        return [{"server_id": m.member_id, "status": API_HEALTH[m.health] if enabled else "Unavailable",
                 "reason": m.health_code} for m in self.members]

    def status(self) -> dict[str, Any]:
        snapshot = self.datapath.snapshot()
        state = "failed" if self.failed else self._state
        return {
            **snapshot,
            "state": state,
            "data_path_error": self.data_path_error,
            "source": type(self.source).__name__,
            "syncs": self.syncs,
            "source_errors": self.source_errors,
            "last_source_error": self.last_source_error,
            "health_checks": self.checker.checks,
            "health_report_errors": self.report_errors,
        }

    def flows(self) -> list[dict[str, object]]:
        return self.datapath.flows.snapshot()
