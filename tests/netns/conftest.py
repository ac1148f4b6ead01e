"""Fixtures for agent data-plane tests: two namespaces, the real agent, a Geneve peer.

    gwlb ns  gw0 198.18.50.1/24 (+ 198.18.50.99, a stranger)  ==veth mtu 9000==  ag0 198.18.50.2/24  agent ns

The agent runs as ``ip netns exec AGENT .venv/bin/gwlb-agent run ...``; the GWLB side is
``geneve_peer.py`` run in the gwlb namespace. The health endpoint is reached with curl from
inside a namespace (loopback in the agent's, or the GWLB's address). Every wait is bounded, and
the topology (namespaces and every process in them) is removed even when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lab.netns import Namespace, Topology

REPO = Path(__file__).resolve().parents[2]
AGENT_BIN = str(Path(sys.executable).with_name("gwlb-agent"))
PEER_SCRIPT = str(Path(__file__).with_name("geneve_peer.py"))

GWLB_IP = "198.18.50.1"
STRANGER_IP = "198.18.50.99"
AGENT_IP = "198.18.50.2"
GWLB_PORT = 40001  # the GWLB's source port in every test
STRANGER_PORT = 40002
GENEVE_PORT = 6081


@dataclass
class Lab:
    topology: Topology
    gwlb: Namespace
    agent: Namespace


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    topo = Topology()
    try:
        gwlb = topo.namespace("dp-gwlb")
        agent = topo.namespace("dp-agent")
        topo.link(gwlb, "gw0", agent, "ag0", mtu=9000)
        gwlb.add_address("gw0", f"{GWLB_IP}/24")
        gwlb.add_address("gw0", f"{STRANGER_IP}/24")
        agent.add_address("ag0", f"{AGENT_IP}/24")
        yield Lab(topo, gwlb, agent)
    finally:
        topo.close()


# --- the GWLB side ------------------------------------------------------------------------------


@dataclass
class Sent:
    data: bytes
    src: str = GWLB_IP
    sport: int = GWLB_PORT


@dataclass
class Reply:
    src: str
    dst: str
    sport: int
    dport: int
    checksum: int
    payload: bytes


@dataclass
class PeerResult:
    sent: int
    send_errors: list[str]
    replies: list[Reply]

    @property
    def payloads(self) -> list[bytes]:
        return [reply.payload for reply in self.replies]


class PeerRun:
    """A running geneve_peer.py; ``result()`` waits (bounded) for its report."""

    def __init__(self, ns: Namespace, job: dict[str, object], bound: float) -> None:
        self.bound = bound
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, sys.executable, PEER_SCRIPT],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(job).encode())
        self.process.stdin.close()
        self.process.stdin = None  # communicate() would flush the closed pipe
        ready, _, _ = select.select([self.process.stdout], [], [], 10)
        line = self.process.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.kill()
            err = self.process.stderr.read().decode() if self.process.stderr else ""
            raise AssertionError(f"geneve peer did not start: {line!r} {err}")

    def result(self) -> PeerResult:
        try:
            out, err = self.process.communicate(timeout=self.bound)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"geneve peer still running after {self.bound:.1f}s") from None
        if self.process.returncode != 0:
            raise AssertionError(f"geneve peer failed ({self.process.returncode}): {err.decode()}")
        report = json.loads(out.decode().strip().splitlines()[-1])
        replies = [Reply(r["src"], r["dst"], r["sport"], r["dport"], r["checksum"],
                         bytes.fromhex(r["payload"])) for r in report["replies"]]
        return PeerResult(report["sent"], report["send_errors"], replies)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def _packet(item: Sent | bytes) -> dict[str, object]:
    sent = item if isinstance(item, Sent) else Sent(item)
    return {"hex": sent.data.hex(), "src": sent.src, "sport": sent.sport}


def start_peer(lab: Lab, packets: Sequence[Sent | bytes], *, expect: int = 0,
               interval: float = 0.0, timeout: float = 3.0, linger: float = 0.1,
               agent_port: int = GENEVE_PORT) -> PeerRun:
    job = {"agent": AGENT_IP, "agent_port": agent_port, "listen_port": GENEVE_PORT,
           "packets": [_packet(p) for p in packets], "interval": interval, "expect": expect,
           "timeout": timeout, "linger": linger}
    bound = len(packets) * interval + timeout + linger + 10
    return PeerRun(lab.gwlb, job, bound)


def exchange(lab: Lab, packets: Sequence[Sent | bytes], *, expect: int | None = None,
             **kwargs: object) -> PeerResult:
    """Send ``packets`` from the GWLB namespace; wait for ``expect`` replies (default: all)."""
    count = len(packets) if expect is None else expect
    result = start_peer(lab, packets, expect=count, **kwargs).result()  # type: ignore[arg-type]
    assert result.send_errors == []
    return result


# --- the agent ------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^(gwlb_agent_\w+)(\{[^}]*\})?\s+(\S+)$")


@dataclass
class AgentProcess:
    lab: Lab
    process: subprocess.Popen[bytes]
    listen_port: int
    health_port: int
    policy: Path
    flow_log: Path
    log: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def http(self, path: str, method: str = "GET", *, via: Namespace | None = None,
             host: str = "127.0.0.1", interface: str | None = None) -> tuple[int, str]:
        """(status, body) of an HTTP call to the health endpoint; status 0 if none came."""
        ns = via or self.lab.agent
        args = ["curl", "-s", "--max-time", "2", "-X", method, "-w", "\n%{http_code}"]
        if interface:
            args += ["--interface", interface]
        result = ns.run(*args, f"http://{host}:{self.health_port}{path}", check=False, timeout=10)
        body, _, code = result.stdout.rpartition("\n")
        return int(code or 0), body.strip()

    def health(self) -> int:
        return self.http("/health")[0]

    def metrics(self) -> dict[str, float]:
        status, body = self.http("/metrics")
        assert status == 200, f"/metrics answered {status}: {body}"
        samples = {}
        for line in body.splitlines():
            match = _SAMPLE.match(line)
            if match:
                samples[match[1] + (match[2] or "")] = float(match[3])
        return samples

    def drops(self) -> dict[str, float]:
        prefix = 'gwlb_agent_drops_total{reason="'
        return {k[len(prefix):-2]: v for k, v in self.metrics().items() if k.startswith(prefix)}

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> float:
        """Poll ``predicate`` until true; seconds it took. Fails the test after ``timeout``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if predicate():
                return time.monotonic() - start
            if self.process.poll() is not None:
                raise AssertionError(f"agent exited {self.process.returncode} waiting for {what}:\n"
                                     f"{self.log_text()}")
            time.sleep(0.02)
        raise AssertionError(f"not {what} within {timeout}s\n{self.log_text()}")

    def wait_metric(self, name: str, value: float, timeout: float = 5.0) -> None:
        self.wait_for(lambda: self.metrics().get(name) == value, f"{name} == {value}", timeout)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.lab.agent.run(AGENT_BIN, *args, "--health", f"127.0.0.1:{self.health_port}",
                                  check=False, timeout=15)

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait for the exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent still running {timeout}s after SIGTERM:\n"
                                 f"{self.log_text()}") from None

    def flow_records(self) -> list[dict[str, object]]:
        if not self.flow_log.exists():
            return []
        return [json.loads(line) for line in self.flow_log.read_text().splitlines() if line]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def write_policy(self, text: str) -> None:
        """Replace the policy file atomically, so that a reload never reads half of it."""
        tmp = self.policy.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.policy)


AgentFactory = Callable[..., AgentProcess]


@pytest.fixture(scope="module")
def agent_factory(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentFactory]:
    """Start agents in the agent namespace; each on its own ports; all stopped at the end."""
    started: list[AgentProcess] = []
    ports = iter(range(1, 100))

    def start(policy: str, *, listen_port: int | None = None, extra: Sequence[str] = ()) -> AgentProcess:
        n = next(ports)
        directory = tmp_path_factory.mktemp(f"agent{n}")
        policy_path = directory / "policy.toml"
        policy_path.write_text(policy)
        (directory / "agent.toml").write_text("")  # never the host's /etc/gwlb-agent/agent.toml
        flow_log = directory / "flows.jsonl"
        log = directory / "agent.log"
        listen = listen_port or GENEVE_PORT + 100 + n
        health = 8100 + n
        argv = [AGENT_BIN, "run", "--config", str(directory / "agent.toml"),
                "--listen", f"0.0.0.0:{listen}", "--health", f"0.0.0.0:{health}",
                "--gwlb-cidr", f"{GWLB_IP}/32", "--policy", str(policy_path),
                "--flow-log", str(flow_log), "--appliance-id", f"nva-{n}", *extra]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GWLB_AGENT_")}
        process = lab.topology.start(lab.agent, argv, log_path=str(log), env=env)
        agent = AgentProcess(lab, process, listen, health, policy_path, flow_log, log, argv)
        started.append(agent)
        agent.wait_for(lambda: agent.health() == 200, "healthy after start", timeout=15)
        return agent

    try:
        yield start
    finally:
        for agent in started:
            if agent.process.poll() is None:
                agent.process.terminate()
                try:
                    agent.process.wait(10)
                except subprocess.TimeoutExpired:
                    agent.process.kill()
                    agent.process.wait(5)
