"""The GWLB emulator's failover, end to end: client -> ``python -m gwlb_lab.gwlb`` -> gwlb-agent -> server.

Two real agents behind the emulator (the lab topology, lab/gwlb_lab/topology.py). One agent is killed
with SIGKILL: the emulator's health checks mark it unhealthy after about unhealthy_threshold x
interval (measured), new connections go through the other one, and an existing UDP stream moves
to the survivor under Rebalance and stays (and is lost) under NoRebalance. A member drained
through the members file keeps its open TCP connection while new connections go elsewhere.
Every wait is bounded; the namespaces and processes go with the module's topology.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gwlb_lab import netns
from gwlb_lab.topology import (
    CLIENT,
    GWLB_DATA,
    HEALTH_PORT,
    REPO,
    SERVER,
    STATUS_PORT,
    TUN,
    Appliance,
    Lab,
    LabError,
    LabSpec,
)

pytestmark = pytest.mark.timeout(120)

PEER = str(Path(__file__).with_name("stream_peer.py"))
INTERVAL, PROBE_TIMEOUT, THRESHOLD = 0.4, 1.0, 2  # health check: seconds, seconds, checks
TCP_ECHO, UDP_ECHO = 7000, 7001
POLICY = f"""
default_action = "deny"
internal_cidrs = ["{SERVER}/24"]

[[rules]]
id = "allow-web-and-echo"
action = "allow"
direction = "inbound"
protocol = "tcp"
dst = ["{SERVER}/24"]
dst_ports = [80, {TCP_ECHO}]

[[rules]]
id = "allow-udp-echo"
action = "allow"
direction = "inbound"
protocol = "udp"
dst = ["{SERVER}/24"]
dst_ports = [{UDP_ECHO}]
"""

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, every: float = 0.05) -> T:
    """Poll until ``probe`` gives something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def read_line(process: subprocess.Popen[bytes], timeout: float, what: str) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline().decode().strip() if ready else ""
    assert line, f"no answer within {timeout} s from {what} (exit {process.poll()})"
    return line


@dataclass
class GwlbLab:
    lab: Lab
    directory: Path
    emulator: subprocess.Popen[bytes] | None = None
    runs: int = 0

    # --- the emulator ------------------------------------------------------------------------

    @contextmanager
    def emulator_running(self, *flags: str) -> Iterator[None]:
        """``python -m gwlb_lab.gwlb`` in the gwlb namespace with the given flags, all members healthy."""
        self.runs += 1
        log = self.directory / f"gwlb-emulator-{self.runs}.log"
        args = [sys.executable, "-m", "gwlb_lab.gwlb", "--tun", TUN, "--local", GWLB_DATA,
                "--health-port", str(HEALTH_PORT), "--health-interval", str(INTERVAL),
                "--health-timeout", str(PROBE_TIMEOUT), "--healthy-threshold", str(THRESHOLD),
                "--unhealthy-threshold", str(THRESHOLD), "--poll-interval", "0.2",
                "--status", f"127.0.0.1:{STATUS_PORT}", *flags]
        if "--members-file" not in flags:
            args += [f"--member={a.appliance_id}={a.address}" for a in self.lab.appliances]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GWLB_AGENT_")}
        self.emulator = self.lab.topo.start(self.lab.gwlb, args, log_path=str(log), env=env,
                                            cwd=str(REPO), stdin=subprocess.DEVNULL)
        try:
            wait_for(self._all_healthy, 15, f"the emulator's members to be healthy (log {log})",
                     every=0.1)
            yield
        finally:
            self.emulator.terminate()
            try:
                self.emulator.wait(10)
            except subprocess.TimeoutExpired:
                self.emulator.kill()
                self.emulator.wait(5)
            assert self.emulator.returncode == 0, log.read_text()[-2000:]

    def _all_healthy(self) -> bool:
        assert self.emulator is not None and self.emulator.poll() is None, "the emulator exited"
        try:
            members = self.status()["members"]
        except LabError:
            return False
        return len(members) == len(self.lab.appliances) and all(m["health"] == "healthy" for m in members)

    def status(self) -> dict[str, Any]:
        return self.lab.emulator_status()

    def member(self, appliance: Appliance) -> dict[str, Any] | None:
        return next((m for m in self.status()["members"] if m["id"] == appliance.appliance_id), None)

    def flow(self, sport: int) -> dict[str, Any] | None:
        return next((f for f in self.lab.emulator_flows()
                     if f["src"] == CLIENT and f["sport"] == sport), None)

    def appliance(self, appliance_id: str) -> Appliance:
        return next(a for a in self.lab.appliances if a.appliance_id == appliance_id)

    def other(self, appliance: Appliance) -> Appliance:
        return next(a for a in self.lab.appliances if a is not appliance)

    # --- the agents --------------------------------------------------------------------------

    def ensure_agents(self) -> None:
        """Both agents running with the echo policy (a test before may have killed one)."""
        if all(a.process is not None and a.process.poll() is None for a in self.lab.appliances):
            return
        self.lab.stop_agents()
        self.start_agents()

    def start_agents(self) -> None:
        self.lab.start_agents()
        for appliance in self.lab.appliances:
            wait_for(partial(self._agent_answers, appliance), 15, f"{appliance.appliance_id} to start")
        self.lab.set_policy(POLICY)

    def _agent_answers(self, appliance: Appliance) -> bool:
        try:
            self.lab.agent_status(appliance)
        except LabError:
            return False
        return True

    def kill(self, appliance: Appliance) -> float:
        """SIGKILL the agent: no goodbye, its health endpoint just stops answering."""
        assert appliance.process is not None
        appliance.process.kill()
        killed = time.monotonic()
        appliance.process.wait(5)
        return killed

    # --- long-lived flows --------------------------------------------------------------------

    def start_peer(self, ns: netns.Namespace, *args: str) -> subprocess.Popen[bytes]:
        process = self.lab.topo.start(ns, [sys.executable, PEER, *args], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert read_line(process, 10, f"stream_peer {args[0]}") == "ready"
        return process

    def udp_stream(self, sport: int) -> subprocess.Popen[bytes]:
        return self.start_peer(self.lab.client, "udp-stream", f"{SERVER}:{UDP_ECHO}", str(sport),
                               "0.05", "30")


def stream_report(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    assert process.stdin is not None
    process.stdin.close()
    report = json.loads(read_line(process, 10, "the UDP stream's report"))
    process.wait(5)
    return dict(report)


class TcpSession:
    def __init__(self, glab: GwlbLab, sport: int) -> None:
        self.sport = sport
        self.process = glab.start_peer(glab.lab.client, "tcp-session", f"{SERVER}:{TCP_ECHO}",
                                       str(sport), "3")

    def send(self, command: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{command}\n".encode())
        self.process.stdin.flush()
        return read_line(self.process, 5, f"the TCP session's {command}")


@pytest.fixture(scope="module")
def glab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GwlbLab]:
    yield from running_lab(tmp_path_factory)


def running_lab(tmp_path_factory: pytest.TempPathFactory, agent_settings: str = "") -> Iterator[GwlbLab]:
    """The topology, the app and echo servers and two agents (``agent_settings``: added to their
    configs); gone when the module's tests are done."""
    directory = tmp_path_factory.mktemp("gwlb-emulator")
    with netns.topology() as topo:
        lab = Lab(topo, LabSpec(state_dir=directory, appliances=2, agent_settings=agent_settings))
        lab.create_network()
        lab.start_app_server()
        server = topo.start(lab.server, [sys.executable, PEER, "serve", SERVER, str(TCP_ECHO),
                                         str(UDP_ECHO)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        assert read_line(server, 10, "the echo server") == "ready"
        glab = GwlbLab(lab, directory)
        glab.start_agents()
        yield glab


def new_connections_go_to(glab: GwlbLab, appliance: Appliance, count: int = 3) -> None:
    for _ in range(count):
        result = glab.lab.curl(timeout=3)
        assert result.ok, result
        flow = glab.flow(result.client_port)
        assert flow is not None and flow["member"] == appliance.appliance_id, flow


def stream_on_a_member(glab: GwlbLab, sport: int) -> tuple[subprocess.Popen[bytes], Appliance]:
    stream = glab.udp_stream(sport)
    flow = wait_for(lambda: (f := glab.flow(sport)) and f["returned_rev"] > 3 and f, 5,
                    "the UDP stream's echoes")
    return stream, glab.appliance(flow["member"])


def wait_unhealthy(glab: GwlbLab, victim: Appliance, killed: float) -> float:
    wait_for(lambda: (m := glab.member(victim)) is not None and m["health"] == "unhealthy",
             THRESHOLD * INTERVAL + PROBE_TIMEOUT + 5, f"{victim.appliance_id} to be unhealthy")
    took = time.monotonic() - killed
    print(f"\n{victim.appliance_id} killed: unhealthy after {took:.2f} s "
          f"(unhealthy_threshold {THRESHOLD} x interval {INTERVAL} s = {THRESHOLD * INTERVAL:.2f} s)")
    # The first failed check comes within one interval of the kill, the last one
    # (threshold - 1) intervals later; the status is read every 50 ms.
    assert (THRESHOLD - 1) * INTERVAL - 0.1 <= took <= THRESHOLD * INTERVAL + 1.0
    member = glab.member(victim)
    assert member is not None and member["reason_code"] == "CONNECT_FAIL", member
    assert glab.status()["unhealthy_count"] == 1
    return took


def test_a_killed_appliance_goes_unhealthy_and_rebalance_moves_its_udp_stream(glab: GwlbLab) -> None:
    glab.ensure_agents()
    with glab.emulator_running("--failover-mode", "Rebalance"):
        stream, victim = stream_on_a_member(glab, sport=45001)
        survivor = glab.other(victim)
        killed_wall = time.time()
        wait_unhealthy(glab, victim, glab.kill(victim))

        moved = wait_for(lambda: (f := glab.flow(45001)) and f["member"] == survivor.appliance_id and f,
                         2, "the stream's flow to move to the survivor")
        assert moved["previous_members"] == [victim.appliance_id]
        new_connections_go_to(glab, survivor)
        before = moved["returned_rev"]
        wait_for(lambda: (f := glab.flow(45001)) and f["returned_rev"] > before + 5, 3,
                 "echoes through the survivor")
        report = stream_report(stream)
        status = glab.status()

    after_kill = [e for e in report["echoes"] if e[2] > killed_wall]
    assert len(after_kill) > 5, report
    gap = after_kill[0][2] - killed_wall
    print(f"UDP stream: first echo through {survivor.appliance_id} {gap:.2f} s after the kill; "
          f"{len(report['echoes'])} of {report['sent']} datagrams echoed")
    assert status["counters"]["rebalanced"] >= 1 and status["mismatches"] == 0, status


def test_norebalance_leaves_the_stream_on_the_dead_appliance_and_new_flows_avoid_it(
    glab: GwlbLab,
) -> None:
    glab.ensure_agents()
    with glab.emulator_running("--failover-mode", "NoRebalance"):
        stream, victim = stream_on_a_member(glab, sport=45002)
        survivor = glab.other(victim)
        killed_wall = time.time()
        wait_unhealthy(glab, victim, glab.kill(victim))

        first = glab.flow(45002)
        new_connections_go_to(glab, survivor)
        time.sleep(0.5)  # ten more datagrams of the stream
        later = glab.flow(45002)
        assert first is not None and later is not None
        assert later["member"] == victim.appliance_id and later["previous_members"] == []
        assert later["packets_fwd"] > first["packets_fwd"] + 5  # still sent to the dead one
        assert later["returned_rev"] == first["returned_rev"]  # and nothing comes back
        report = stream_report(stream)
        status = glab.status()

    assert not [e for e in report["echoes"] if e[2] > killed_wall + 0.5], report
    assert status["counters"]["rebalanced"] == 0 and status["mismatches"] == 0, status


def write_members(path: Path, glab: GwlbLab, statuses: dict[str, str]) -> None:
    members = [{"server_id": a.appliance_id, "ip": a.address, "status": statuses[a.appliance_id]}
               for a in glab.lab.appliances if a.appliance_id in statuses]
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(members))
    os.replace(partial, path)


def test_a_draining_member_keeps_its_tcp_connection_while_new_ones_go_elsewhere(
    glab: GwlbLab,
) -> None:
    glab.ensure_agents()
    members = glab.directory / "members.json"
    everyone = {a.appliance_id: "Available" for a in glab.lab.appliances}
    write_members(members, glab, everyone)
    with glab.emulator_running("--members-file", str(members), "--drain-timeout", "30"):
        session = TcpSession(glab, sport=46001)
        assert session.send("ping").startswith("ok")
        flow = glab.flow(46001)
        assert flow is not None
        draining = glab.appliance(flow["member"])
        other = glab.other(draining)

        write_members(members, glab, {**everyone, draining.appliance_id: "Draining"})
        wait_for(lambda: (m := glab.member(draining)) and m["status"] == "Draining", 3,
                 "the emulator to see the drain")
        new_connections_go_to(glab, other)
        for _ in range(3):
            assert session.send("ping").startswith("ok")  # the old connection still works
        member = glab.member(draining)
        assert member is not None and member["flows"] == 1, member

        assert session.send("close") == "closed b''"  # a clean FIN both ways, no reset
        wait_for(lambda: (m := glab.member(draining)) and m["flows"] == 0, 3,
                 "the drained member's last flow to end")
        write_members(members, glab, {other.appliance_id: "Available"})
        wait_for(lambda: glab.member(draining) is None, 3, "the drained member to be gone")
        status = glab.status()

    assert status["mismatches"] == 0 and sum(status["drops"].values()) == 0, status["drops"]
