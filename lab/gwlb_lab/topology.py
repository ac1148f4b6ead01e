"""The lab's network and processes: client, app server, GWLB emulator and appliances.

::

    client ns                gwlb ns                                   server ns
    eth0 198.18.1.2/24 ---- c0 198.18.1.1    s0 198.18.2.1 ---- eth0 198.18.2.2/24
                               |  ip rule iif c0/s0 -> table 100:           (gwlb_lab.appserver :80)
                               |  default dev gwlb0 (tun) -> python -m gwlb_lab.gwlb
                              br0 198.19.0.1/24, MTU 9000 (Geneve from here)
                               |-- d1 ---- eth0 198.19.0.11  nva1 ns  (gwlb-agent, nva-1)
                               |-- d2 ---- eth0 198.19.0.12  nva2 ns  (gwlb-agent, nva-2)

Packets between client and server arrive on c0/s0 and are routed into the tun; the emulator
wraps them in Geneve to an appliance, and writes what comes back into the tun, from where the
main table routes them on. Everything lives in namespaces named by the run (``gwlb_lab.netns``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gwlb_fleet.geneve import GENEVE_PORT
from gwlb_lab.netns import Namespace, Topology, start_time

CLIENT, CLIENT_GW = "198.18.1.2", "198.18.1.1"
SERVER, SERVER_GW = "198.18.2.2", "198.18.2.1"
GWLB_DATA = "198.19.0.1"
APP_PORT = 80
HEALTH_PORT = 8080
STATUS_PORT = 8081
TUN = "gwlb0"
INTERCEPT_TABLE = "100"
APP_URL = f"http://{SERVER}/"
APP_BODY = f"Hello from the gwlb-fleet lab app server ({SERVER})\n"
REPO = Path(__file__).resolve().parents[2]


def appliance_address(index: int) -> str:
    return f"198.19.0.{10 + index}"


def policy_text() -> str:
    """The appliances' policy: HTTP in to the app server, nothing else."""
    return (
        "# gwlb-fleet lab policy: the app server takes HTTP, everything else is denied.\n"
        'default_action = "deny"\n'
        f'internal_cidrs = ["{SERVER}/24"]\n'
        f'\n[[rules]]\nid = "allow-web"\naction = "allow"\ndirection = "inbound"\n'
        f'protocol = "tcp"\ndst = ["{SERVER}/24"]\ndst_ports = [{APP_PORT}]\n'
    )


class LabError(RuntimeError):
    pass


@dataclass(frozen=True)
class LabSpec:
    state_dir: Path
    appliances: int = 2
    first_client_port: int = 40000
    # Top-level settings added to every agent's config, e.g. 'dataplane = "auto"' (a test runs
    # the same scenario with the XDP fast path).
    agent_settings: str = ""


@dataclass
class Appliance:
    appliance_id: str
    address: str
    ns: Namespace
    policy: Path
    flow_log: Path
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None


@dataclass(frozen=True)
class CurlResult:
    exit_code: int
    status: int
    body: str
    error: str
    client_port: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.status == 200


@dataclass
class Lab:
    """One lab in one ``Topology``: build it step by step, drive it, read what it recorded."""

    topo: Topology
    spec: LabSpec
    appliances: list[Appliance] = field(default_factory=list)
    server_process: subprocess.Popen[bytes] | None = None
    client: Namespace = field(init=False)
    server: Namespace = field(init=False)
    gwlb: Namespace = field(init=False)

    def __post_init__(self) -> None:
        self.spec.state_dir.mkdir(parents=True, exist_ok=True)
        self._next_port = self.spec.first_client_port
        self._roles: dict[int, str] = {}  # pid -> role, while it is expected to run
        self._logs: dict[int, Path] = {}

    # --- building ------------------------------------------------------------------------------

    def create_network(self) -> None:
        topo = self.topo
        self.client = topo.namespace("client")
        self.server = topo.namespace("server")
        self.gwlb = g = topo.namespace("gwlb")
        for index in range(1, self.spec.appliances + 1):
            ns = topo.namespace(f"nva{index}")
            appliance_id = f"nva-{index}"
            state = self.spec.state_dir
            self.appliances.append(Appliance(
                appliance_id, appliance_address(index), ns,
                policy=state / f"policy-{appliance_id}.toml",
                flow_log=state / f"flows-{appliance_id}.jsonl",
                config=state / f"agent-{appliance_id}.toml",
                log=state / f"agent-{appliance_id}.log"))
        for ns in self.namespaces:
            # IPv6 would only add router solicitations to the intercepted traffic.
            ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", check=False)
            ns.run("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", check=False)
        g.sysctl("net.ipv4.ip_forward", "1")
        # Packets come back out of the tun with the client's or server's source address: a
        # reverse-path filter would drop them.
        g.sysctl("net.ipv4.conf.all.rp_filter", "0")
        g.sysctl("net.ipv4.conf.default.rp_filter", "0")

        topo.link(g, "c0", self.client, "eth0")
        g.add_address("c0", f"{CLIENT_GW}/24")
        self.client.add_address("eth0", f"{CLIENT}/24")
        self.client.ip("route", "add", "default", "via", CLIENT_GW)
        topo.link(g, "s0", self.server, "eth0")
        g.add_address("s0", f"{SERVER_GW}/24")
        self.server.add_address("eth0", f"{SERVER}/24")
        self.server.ip("route", "add", "default", "via", SERVER_GW)

        # The data network: jumbo frames, since Geneve adds 68 bytes to a full-size packet.
        g.ip("link", "add", "br0", "mtu", "9000", "type", "bridge")
        g.ip("link", "set", "br0", "up")
        g.add_address("br0", f"{GWLB_DATA}/24")
        for index, appliance in enumerate(self.appliances, start=1):
            topo.link(g, f"d{index}", appliance.ns, "eth0", mtu=9000)
            g.ip("link", "set", f"d{index}", "master", "br0")
            appliance.ns.add_address("eth0", f"{appliance.address}/24")

        # Interception: what arrives from client or server goes to the tun; what the emulator
        # writes into the tun arrives on it and follows the main table to c0 or s0.
        g.ip("tuntap", "add", "dev", TUN, "mode", "tun")
        g.ip("link", "set", TUN, "mtu", "1500", "up")
        for device in ("c0", "s0", "br0", TUN):
            g.sysctl(f"net.ipv4.conf.{device}.rp_filter", "0")
        g.ip("route", "add", "default", "dev", TUN, "table", INTERCEPT_TABLE)
        for device in ("c0", "s0"):
            g.ip("rule", "add", "iif", device, "lookup", INTERCEPT_TABLE, "pref", "100")

    @property
    def namespaces(self) -> list[Namespace]:
        return [self.client, self.server, self.gwlb, *(a.ns for a in self.appliances)]

    def start_app_server(self, timeout: float = 10.0) -> None:
        www = self.spec.state_dir / "www"
        www.mkdir(exist_ok=True)
        (www / "index.html").write_text(APP_BODY, encoding="utf-8")
        self.server_process = self._start(
            "app-server", self.server,
            [sys.executable, "-m", "gwlb_lab.appserver", "--bind", SERVER, "--port", str(APP_PORT),
             "--directory", str(www)], self.spec.state_dir / "app-server.log")

        def answering() -> bool:
            result = self.server.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                     "--max-time", "1", APP_URL, check=False, timeout=5)
            return result.stdout == "200"

        self._wait(answering, timeout, "the app server to answer on " + APP_URL)

    def start_agents(self) -> None:
        for appliance in self.appliances:
            appliance.policy.write_text(policy_text(), encoding="utf-8")
            # An explicit config file keeps a machine's /etc/gwlb-agent/agent.toml out of the lab.
            appliance.config.write_text(f'log_level = "info"\n{self.spec.agent_settings}\n\n'
                                        '[flows]\nclose_linger = 1.0\n', encoding="utf-8")
            appliance.flow_log.unlink(missing_ok=True)
            appliance.process = self._start(appliance.appliance_id, appliance.ns, [
                *agent_command(), "run", "--config", str(appliance.config),
                "--gwlb-cidr", f"{GWLB_DATA}/32",
                "--listen", f"{appliance.address}:{GENEVE_PORT}",
                "--health", f"{appliance.address}:{HEALTH_PORT}",
                "--policy", str(appliance.policy), "--flow-log", str(appliance.flow_log),
                "--appliance-id", appliance.appliance_id,
            ], appliance.log)

    # --- processes -----------------------------------------------------------------------------

    def _start(self, role: str, ns: Namespace, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GWLB_AGENT_")}
        env["PYTHONUNBUFFERED"] = "1"
        log.unlink(missing_ok=True)
        process = self.topo.start(ns, args, log_path=str(log), env=env, cwd=str(REPO),
                                  stdin=subprocess.DEVNULL)
        self._roles[process.pid] = role
        self._logs[process.pid] = log
        self.record_processes()
        return process

    def record_processes(self) -> None:
        """pids.json in the state dir: what ``down`` stops if this lab's owner is gone."""
        write_pids(self.spec.state_dir / "pids.json", self.topo, self._roles)

    def _check_processes(self) -> None:
        for process in self.topo.processes:
            code = process.poll()
            if code is not None and process.pid in self._roles:
                role = self._roles[process.pid]
                log = self._logs.get(process.pid)
                tail = _tail(log) if log else ""
                ending = f"; its log ends:\n{tail}" if tail else ""
                raise LabError(f"{role} exited with code {code}{ending}")

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_processes()
            if condition():
                return
            if time.monotonic() > deadline:
                raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.1)

    def _stop(self, process: subprocess.Popen[bytes] | None, grace: float = 8.0) -> int | None:
        """SIGTERM and wait (the agents flush their flow records on the way out)."""
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(grace)
        self._roles.pop(process.pid, None)  # exited on purpose: not a failure
        return process.returncode

    def stop_agents(self) -> dict[str, int | None]:
        return {a.appliance_id: self._stop(a.process) for a in self.appliances}

    # --- driving -------------------------------------------------------------------------------

    def _get_json(self, url: str) -> Any:
        result = self.gwlb.run("curl", "-sS", "--max-time", "2", url, check=False, timeout=10)
        if result.returncode != 0:
            raise LabError(f"GET {url}: {result.stderr.strip() or result.returncode}")
        try:
            return json.loads(result.stdout)
        except ValueError:
            raise LabError(f"GET {url}: not JSON: {result.stdout[:200]!r}") from None

    def emulator_status(self) -> dict[str, Any]:
        return dict(self._get_json(f"http://127.0.0.1:{STATUS_PORT}/status"))

    def emulator_flows(self) -> list[dict[str, Any]]:
        return list(self._get_json(f"http://127.0.0.1:{STATUS_PORT}/flows"))

    def agent_status(self, appliance: Appliance) -> dict[str, Any]:
        return dict(self._get_json(f"http://{appliance.address}:{HEALTH_PORT}/status"))

    def next_client_port(self) -> int:
        port = self._next_port
        self._next_port += 1
        return port

    def curl(self, client_port: int | None = None, timeout: float = 5.0) -> CurlResult:
        """GET the app page from the client, from ``client_port`` (a fresh one by default)."""
        port = client_port or self.next_client_port()
        started = time.monotonic()
        result = self.client.run(
            "curl", "-sS", "--max-time", str(timeout), "--local-port", str(port),
            "-o", "-", "-w", "\n%{http_code}", APP_URL, check=False, timeout=timeout + 10)
        body, _, code = result.stdout.rpartition("\n")
        return CurlResult(exit_code=result.returncode, status=int(code) if code.isdigit() else 0,
                          body=body, error=result.stderr.strip(), client_port=port,
                          seconds=time.monotonic() - started)

    def set_policy(self, text: str, appliances: list[Appliance] | None = None,
                   timeout: float = 10.0) -> dict[str, int]:
        """Write a policy, SIGHUP the agents, wait until each runs it; their new generations."""
        targets = appliances or self.appliances
        before = {a.appliance_id: self.agent_status(a)["policy_generation"] for a in targets}
        for appliance in targets:
            # Atomically: an agent reloading (on a signal from anyone) never reads half a file.
            partial = appliance.policy.with_suffix(".partial")
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, appliance.policy)
            assert appliance.process is not None
            appliance.process.send_signal(signal.SIGHUP)
        after: dict[str, int] = {}

        def reloaded() -> bool:
            for appliance in targets:
                status = self.agent_status(appliance)
                if status["policy_reloads_failed"]:
                    raise LabError(f"{appliance.appliance_id} refused the policy; see {appliance.log}")
                after[appliance.appliance_id] = status["policy_generation"]
            return all(after[k] > before[k] for k in before)

        self._wait(reloaded, timeout, "the agents to reload their policy")
        return after

def agent_command() -> list[str]:
    """The agent as installed beside this interpreter, else as a module."""
    script = Path(sys.executable).parent / "gwlb-agent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gwlb_agent"]


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def write_pids(path: Path, topo: Topology, roles: dict[int, str]) -> None:
    """The running processes of ``topo`` (pid, start time, role) for ``scripts/lab down`` to stop
    after a crash; with the start time, a pid reused since is not mistaken for ours."""
    records = []
    for process in topo.processes:
        started = start_time(process.pid)
        if started is not None and process.poll() is None:
            records.append({"pid": process.pid, "start_time": started, "role": roles.get(process.pid, "?")})
    path.write_text(json.dumps({"owner": topo.run_id, "prefix": topo.prefix, "processes": records},
                               indent=1) + "\n", encoding="utf-8")
