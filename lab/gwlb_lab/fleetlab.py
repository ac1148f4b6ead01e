"""The whole system on one machine, driven from the root namespace: ``FleetLab``.

::

    client ns  198.18.1.2  (gwlb_lab.load: connections, probes, ping)
        |
    gwlb ns    tun intercept, data bridge br0 198.19.0.1/24
               python -m gwlb_lab.cloud: OpenAPI, SLS, Panorama, GWLB emulator, EventBridge + FC
               running functions/*.py, ESS's instances as appliance namespaces
        |                              \\
    server ns  198.18.2.2 (gwlb_lab.appserver)   nva<N> ns  198.19.0.(10+N)  gwlb-agent  (made by the cloud)

The network is gwlb_lab.topology's (with no appliances of its own: the cloud makes them as ESS
launches instances). Every namespace is named ``gf<run>-...``: ``close()`` removes them all,
those the cloud made included, and ``scripts/lab down`` does the same after a crash.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gwlb_lab import control, netns
from gwlb_lab.cloud.config import CloudConfig, FleetPlan, Timings
from gwlb_lab.topology import APP_URL, REPO, SERVER, Lab, LabError, LabSpec, write_pids

CLOUD_READY_TIMEOUT_S = 60.0
KERNEL_TOOLS = ("nft", "conntrack")  # the appliances' ruleset, and the reaping of their conntrack tables


@dataclass
class FleetLabSpec:
    run_dir: Path
    run_id: str = field(default_factory=lambda: str(os.getpid()))
    owned: bool = True  # the cloud and the clients stop when this process is gone (not for ``up``)
    plan: FleetPlan = field(default_factory=FleetPlan)
    timings: Timings = field(default_factory=Timings)


class FleetLab:
    def __init__(self, spec: FleetLabSpec) -> None:
        self.spec = spec
        # A fresh directory: a state store or SLS database left by an earlier lab would be taken
        # for this fleet's.
        shutil.rmtree(spec.run_dir, ignore_errors=True)
        spec.run_dir.mkdir(parents=True)
        self.topo = netns.Topology(run_id=spec.run_id)
        self.base = Lab(self.topo, LabSpec(state_dir=spec.run_dir, appliances=0))
        self.cloud_process: subprocess.Popen[bytes] | None = None
        self.load_process: subprocess.Popen[bytes] | None = None
        self._roles: dict[int, str] = {}

    @property
    def cloud_socket(self) -> Path:
        return self.spec.run_dir / "cloud.sock"

    @property
    def load_socket(self) -> Path:
        return self.spec.run_dir / "load.sock"

    @property
    def prefix(self) -> str:
        return self.topo.prefix

    # --- bringing it up ---------------------------------------------------------------------------

    def create(self, on_step: Callable[[str], None] = lambda text: None) -> None:
        """Network, app server, the cloud (which launches the first appliances), the clients."""
        if self.spec.plan.inspection == "kernel":
            missing = [tool for tool in KERNEL_TOOLS if shutil.which(tool) is None]
            if missing:
                raise LabError(f"--kind kernel needs {' and '.join(missing)} (Debian: apt-get install "
                               "nftables conntrack)")
        base = self.base
        base.create_network()
        on_step(f"namespaces {self.prefix}client, server, gwlb: client 198.18.1.2, app server "
                "198.18.2.2, GWLB 198.19.0.1 (tun intercept, data bridge)")
        base.start_app_server()
        if base.server_process is not None:
            self._roles[base.server_process.pid] = "app-server"
        self.record_processes()
        on_step(f"app server answering on {APP_URL}")
        self.start_cloud()
        on_step("lab cloud up in the gwlb namespace: OpenAPI (GWLB, ESS, ECS, CloudMonitor, FC), SLS, "
                "Panorama (HTTPS), GWLB emulator, the control plane's functions")
        self.start_load()
        on_step("clients started in the client namespace (ping, probes; no connections yet)")

    def start_cloud(self) -> None:
        spec = self.spec
        config = CloudConfig(run_dir=spec.run_dir.resolve(), ns_prefix=self.prefix,
                             owner_pid=os.getpid() if spec.owned else 0, plan=spec.plan,
                             timings=spec.timings)
        # The runner's mount namespace: the cloud makes appliance namespaces in it (see
        # gwlb_lab.cloud.appliances); the descriptor is inherited through ip netns exec.
        mount_fd = os.open("/proc/self/ns/mnt", os.O_RDONLY)
        try:
            config = replace(config, host_mount_fd=mount_fd)
            path = spec.run_dir / "cloud.json"
            config.write(path)
            log = spec.run_dir / "cloud.log"
            with open(log, "ab") as err:
                process = self.topo.start(
                    self.base.gwlb, [sys.executable, "-m", "gwlb_lab.cloud", "--config", str(path.resolve())],
                    stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, cwd=str(REPO),
                    env=_child_env(), pass_fds=(mount_fd,))
        finally:
            os.close(mount_fd)
        self.cloud_process = process
        self._roles[process.pid] = "lab-cloud"
        self.record_processes()
        assert process.stdout is not None
        deadline = time.monotonic() + CLOUD_READY_TIMEOUT_S
        line = b""
        while time.monotonic() < deadline and process.poll() is None:
            ready, _, _ = select.select([process.stdout], [], [], 0.5)
            if ready:
                line = process.stdout.readline()
                break
        if line.strip() != b"ready":
            raise LabError(f"the lab cloud did not start (exit {process.poll()}); its log ends:\n"
                           f"{_tail(log)}")

    def start_load(self) -> None:
        spec = self.spec
        args = [sys.executable, "-m", "gwlb_lab.load", "--control", str(self.load_socket.resolve())]
        if spec.owned:
            args += ["--owner-pid", str(os.getpid())]
        process = self.topo.start(self.base.client, args, log_path=str(spec.run_dir / "load.log"),
                                  stdin=subprocess.DEVNULL, cwd=str(REPO), env=_child_env())
        self.load_process = process
        self._roles[process.pid] = "load"
        self.record_processes()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, control.ControlError):
                self.load_stats()
                return
            if process.poll() is not None:
                break
            time.sleep(0.2)
        raise LabError(f"the load generator did not start; its log ends:\n{_tail(spec.run_dir / 'load.log')}")

    def record_processes(self) -> None:
        """pids.json in the run directory: what ``scripts/lab down`` stops after a crash."""
        write_pids(self.spec.run_dir / "pids.json", self.topo, self._roles)

    # --- talking to it ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        self.check_processes()
        return dict(control.call(self.cloud_socket, "GET", "/status", timeout=15))

    def load_stats(self) -> dict[str, Any]:
        return dict(control.call(self.load_socket, "GET", "/stats"))

    def load_recent(self, since: float) -> dict[str, Any]:
        return dict(control.call(self.load_socket, "POST", "/recent", {"since": since}))

    def set_load(self, connections: int) -> None:
        control.call(self.load_socket, "POST", "/load", {"connections": connections})

    def set_quiet(self, quiet: bool) -> None:
        """No new client session while quiet (gwlb_lab.load); open connections close."""
        control.call(self.load_socket, "POST", "/quiet", {"quiet": quiet})

    def appliance(self, action: str, name: str) -> dict[str, Any]:
        return dict(control.call(self.cloud_socket, "POST", f"/{action}", {"appliance": name}))

    def audit(self, since: float) -> dict[str, Any]:
        return dict(control.call(self.cloud_socket, "POST", "/audit", {"since": since}, timeout=120))

    def flow_records(self) -> dict[str, Any]:
        """The flow records in SLS by action, rule and stage (gwlb_lab.cloud.cloud.flow_records)."""
        return dict(control.call(self.cloud_socket, "GET", "/flow-records", timeout=30))

    def connect_from_client(self, port: int, timeout: float = 2.0) -> str:
        """One connection attempt from the client to the app server's ``port``: "connected",
        "refused" (the server's RST came back: the SYN reached it) or "timeout" (dropped on the way)."""
        result = self.base.client.run(
            "curl", "-s", "-o", "/dev/null", "--connect-timeout", str(timeout), "--max-time", str(timeout),
            f"http://{SERVER}:{port}/", check=False, timeout=timeout + 10)
        return {7: "refused", 28: "timeout"}.get(result.returncode, "connected")

    def check_processes(self) -> None:
        for process, role, log in ((self.cloud_process, "the lab cloud", "cloud.log"),
                                   (self.load_process, "the load generator", "load.log")):
            if process is not None and process.poll() is not None:
                raise LabError(f"{role} exited with code {process.returncode}; its log ends:\n"
                               f"{_tail(self.spec.run_dir / log)}")

    # --- tearing down -----------------------------------------------------------------------------

    def close(self) -> list[str]:
        """Stop the clients and the cloud (agents flush their flow records), then remove every
        namespace of this run and whatever still runs in them. The namespaces left (none)."""
        for sock, process in ((self.load_socket, self.load_process), (self.cloud_socket, self.cloud_process)):
            if process is None or process.poll() is not None:
                continue
            with contextlib.suppress(OSError, control.ControlError):
                control.call(sock, "POST", "/stop", timeout=5)
            with contextlib.suppress(subprocess.TimeoutExpired):  # the topology's close() signals it
                process.wait(45)
        self.topo.close()
        netns.sweep(self.prefix)  # the appliance namespaces the cloud made
        left = netns.list_namespaces(self.prefix)
        if not left:
            (self.spec.run_dir / "pids.json").unlink(missing_ok=True)
        return left


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GWLB_AGENT_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
