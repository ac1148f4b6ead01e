"""Fixtures for agent data-plane tests: two namespaces, the real agent, a Geneve peer.

    gwlb ns  gw0 198.18.50.1/24 (+ 198.18.50.99, a stranger)  ==veth mtu 9000==  ag0 198.18.50.2/24  agent ns

The agent runs as ``ip netns exec AGENT .venv/bin/gwlb-agent run ...``; the GWLB side is
``geneve_peer.py`` run in the gwlb namespace. The health endpoint is reached with curl from
inside a namespace (loopback in the agent's, or the GWLB's address). Every wait is bounded, and
the topology (namespaces and every process in them) is removed even when a test fails.

For flow-log shipping, ``start_local_sls`` runs the real local SLS endpoint (``python -m gwlb_lab.sls``)
inside a namespace with its SQLite file in the test's directory: faults are set through its
``/_lab/fault`` API from inside the namespace, results read from the SQLite file or through the
real SDK (``sls_reader.py``, run in the namespace).
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gwlb_fleet.geneve import GENEVE_PORT
from gwlb_lab.netns import Namespace, Topology

REPO = Path(__file__).resolve().parents[2]
AGENT_BIN = str(Path(sys.executable).with_name("gwlb-agent"))
PEER_SCRIPT = str(Path(__file__).with_name("geneve_peer.py"))
SLS_READER_SCRIPT = str(Path(__file__).with_name("sls_reader.py"))

GWLB_IP = "198.18.50.1"
STRANGER_IP = "198.18.50.99"
AGENT_IP = "198.18.50.2"
GWLB_PORT = 40001  # the GWLB's source port in every test
STRANGER_PORT = 40002


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
    env: dict[str, str] = field(default_factory=dict)

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

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 5.0,
                 interval: float = 0.02) -> float:
        """Poll ``predicate`` until true; seconds it took. Fails the test after ``timeout``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if predicate():
                return time.monotonic() - start
            if self.process.poll() is not None:
                raise AssertionError(f"agent exited {self.process.returncode} waiting for {what}:\n"
                                     f"{self.log_text()}")
            time.sleep(interval)
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

    def kill(self) -> int:
        """SIGKILL, as systemd does after TimeoutStopSec, or a crash: nothing runs at exit."""
        self.signal(signal.SIGKILL)
        return self.process.wait(10)

    def restart(self, timeout: float = 15.0) -> None:
        """Start the agent again, once it has exited, exactly as before (same argv, environment,
        flow log, spool): the same appliance coming back."""
        assert self.process.poll() is not None, "restart() needs the agent stopped first"
        self.process = self.lab.topology.start(self.lab.agent, self.argv, log_path=str(self.log),
                                               env=self.env)
        self.wait_for(lambda: self.health() == 200, "healthy after restart", timeout=timeout)

    def flow_records(self) -> list[dict[str, object]]:
        if not self.flow_log.exists():
            return []
        # Only whole lines: the agent may be writing the last one as we read.
        text = self.flow_log.read_text()
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line]

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

    def start(policy: str, *, listen_port: int | None = None, extra: Sequence[str] = (),
              env: dict[str, str] | None = None) -> AgentProcess:
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
        environment = {k: v for k, v in os.environ.items() if not k.startswith("GWLB_AGENT_")}
        environment.update(env or {})
        process = lab.topology.start(lab.agent, argv, log_path=str(log), env=environment)
        agent = AgentProcess(lab, process, listen, health, policy_path, flow_log, log, argv,
                             environment)
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


# --- the local SLS endpoint ------------------------------------------------------------------------

SLS_PROJECT = "gwlb-lab"
SLS_KEY_ID, SLS_KEY_SECRET = "lab-access-key", "lab-secret"  # any key: it does not verify


@dataclass
class StoredLog:
    """One log as the local SLS stored it (a row of its SQLite ``logs`` table)."""

    time: int
    topic: str
    source: str
    tags: dict[str, str]
    contents: dict[str, str]


@dataclass
class LocalSlsProcess:
    """``python -m gwlb_lab.sls`` running in a namespace, with its SQLite file on the host side."""

    ns: Namespace
    process: subprocess.Popen[bytes]
    endpoint: str  # http://ADDR:PORT, as seen from inside ``ns``
    db: Path
    log: Path
    project: str = SLS_PROJECT

    def _control(self, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
        args = ["curl", "-s", "--max-time", "5", "-w", "\n%{http_code}"]
        if body is not None:
            args += ["-X", "POST", "-H", "Content-Type: application/json", "-d", json.dumps(body)]
        result = self.ns.run(*args, f"{self.endpoint}{path}", check=False, timeout=10)
        text, _, code = result.stdout.rpartition("\n")
        assert code == "200", f"local SLS {path} answered {code or 'nothing'}: {text} {result.stderr}"
        return json.loads(text)  # type: ignore[no-any-return]

    def set_fault(self, mode: str, **settings: object) -> None:
        """none, refuse, reset, 5xx (status 500/503), slow (delay), hang, 403; see
        lab/gwlb_lab/sls/server.py. SLS down (connection refused): ``stop()`` then ``restart``."""
        answer = self._control("/_lab/fault", {"mode": mode, **settings})
        assert answer["mode"] == mode, answer

    def stats(self) -> dict[str, object]:
        return self._control("/_lab/stats")

    def stored(self, logstore: str = "flow-logs", kind: str | None = None) -> list[StoredLog]:
        """What the endpoint stored, in arrival order, duplicates included (read-only)."""
        sql = ("SELECT time, topic, source, tags, contents FROM logs"
               " WHERE project = ? AND logstore = ?")
        params: list[object] = [self.project, logstore]
        if kind is not None:
            sql += " AND json_extract(contents, '$.kind') = ?"
            params.append(kind)
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute(sql + " ORDER BY id", params).fetchall()
        return [StoredLog(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4])) for r in rows]

    def record_ids(self, kind: str = "flow") -> list[str]:
        """record_id of every stored log of ``kind`` (duplicates included): cheap to poll."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute(
                "SELECT json_extract(contents, '$.record_id') FROM logs WHERE project = ?"
                " AND logstore = 'flow-logs' AND json_extract(contents, '$.kind') = ?",
                (self.project, kind)).fetchall()
        return [r[0] for r in rows]

    def read(self, job: dict[str, object]) -> list[dict[str, str]]:
        """Rows of a query, through the real SDK (gwlb_fleet.sls.client.Sls) from inside the namespace."""
        full = {"endpoint": self.endpoint, "project": self.project,
                "access_key_id": SLS_KEY_ID, "access_key_secret": SLS_KEY_SECRET, **job}
        result = subprocess.run(
            ["ip", "netns", "exec", self.ns.name, sys.executable, SLS_READER_SCRIPT],
            input=json.dumps(full), capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, f"sls_reader failed: {result.stderr}"
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def get_logs(self, query: str, logstore: str = "flow-logs") -> list[dict[str, str]]:
        return self.read({"logstore": logstore, "query": query})

    def audit(self, name: str) -> list[dict[str, str]]:
        """One of gwlb_fleet.sls.queries's saved questions (they deduplicate on record_id)."""
        return self.read({"audit": name})

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def restart(self, lab: Lab) -> None:
        """Start the endpoint again after ``stop()``: same port, same database."""
        assert self.process.poll() is not None, "restart() needs the endpoint stopped first"
        again = start_local_sls(lab, self.db.parent, self.ns, listen=self.endpoint.removeprefix("http://"))
        assert again.endpoint == self.endpoint, (again.endpoint, self.endpoint)
        self.process = again.process

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_local_sls(lab: Lab, directory: Path, ns: Namespace | None = None,
                    listen: str = "127.0.0.1:0", timeout: float = 20.0) -> LocalSlsProcess:
    """The local SLS endpoint in ``ns`` (the agent's by default), with gwlb-fleet's logstores,
    indexes and saved searches set up in ``SLS_PROJECT``. Stopped by the topology at the latest."""
    ns = ns or lab.agent
    db, log = directory / "sls.db", directory / "sls.log"
    with open(log, "ab") as log_file:  # the child keeps its own copy of the descriptor
        process = lab.topology.start(
            ns, [sys.executable, "-m", "gwlb_lab.sls", "--listen", listen, "--db", str(db),
                 "--setup", SLS_PROJECT],
            stdout=subprocess.PIPE, stderr=log_file, cwd=str(REPO))
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline().decode() if ready else ""
    match = re.match(r"listening on (http://\S+)", line)
    if not match:
        local = LocalSlsProcess(ns, process, "", db, log)
        local.stop()
        raise AssertionError(f"local SLS did not start within {timeout}s: {line!r}\n{local.log_text()}")
    return LocalSlsProcess(ns, process, match[1], db, log)
