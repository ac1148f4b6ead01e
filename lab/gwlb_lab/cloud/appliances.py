"""ECS instances as appliance namespaces: when ECS (the fake, driven by ESS through the real SDK)
launches an instance, an appliance namespace appears on the data bridge with the instance's
address and the real ``gwlb-agent`` runs in it; when ESS releases the instance, the agent is
stopped (SIGTERM: it writes its flow records) and the namespace goes.

The appliances' data plane is the real agent. PAN-OS's management side is played here, as a
bootstrapped VM-Series would behave towards Panorama: once its agent answers, the "firewall"
registers with the lab's Panorama (``FakePanorama.add_firewall``: managed, in the device group
and template stack, licensed by the licence manager), and Panorama's session count for its
serial follows the agent's live flows (``/status`` ``flows_active``, copied every second). A
dead agent's firewall shows disconnected; a paused one keeps its last count, as a firewall whose
data plane hangs but whose management plane still answers would.

A VM-Series also forwards PAN-OS traffic and threat logs for the sessions it handles, to the
intake through the profiles ``gwlb-fleet setup`` wrote in Panorama (gwlb_lab.cloud.logforwarding:
its sessions are the agent's flows, read from the agent's local flow log; the agent itself sends
nothing to SLS then, as nothing of ours runs on a real VM-Series). A Linux appliance (the plan's
``appliance_kind`` linux) is the agent alone: it ships its flow records to SLS and has no Panorama.

A Linux appliance whose kernel inspects (the plan's ``inspection`` kernel, ``scripts/lab --kind
kernel``) gets the nftables ruleset of ``ruleset_text`` in its namespace, the inline policy's rules
in the kernel's words, and its agent runs in tun mode: the ruleset decides, conntrack and NFLOG give
the flow records, shipped to SLS as the inline agent's are. The namespace's conntrack settings are
the lab's (``CONNTRACK_SETTINGS``), and the lab reaps its expired entries every second (a
``conntrack -L`` dump evicts them): see ``ApplianceHost._reap_conntrack``. The ruleset, the tun,
the agent's policy rule and the sysctls all live in the namespace and go with it.

Namespaces are made in the runner's mount namespace (``nsenter --mount`` on a descriptor the
runner passed): this process runs inside ``ip netns exec``'s own mount namespace, where a new
namespace's bind mount would be invisible to the host, and to ``scripts/lab down``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gwlb_agent.config import TunSettings
from gwlb_fleet.alibaba.fakes.ecs import FakeEcs
from gwlb_fleet.geneve import GENEVE_PORT
from gwlb_fleet.panos.fakes import FakePanorama
from gwlb_lab.cloud.config import (
    AGENT_HEALTH_PORT,
    GWLB_ADDRESS,
    LAB_ACCESS_KEY,
    OPENAPI_PORT,
    SLS_PORT,
    SLS_PROJECT,
    CloudConfig,
)
from gwlb_lab.cloud.logforwarding import (
    FirewallLogForwarding,
    ForwardingConfig,
    HttpPoster,
    LogSender,
    Signature,
    read_forwarding,
)
from gwlb_lab.netns import NetnsError, check_address

log = logging.getLogger("gwlb_lab.cloud.appliances")

SERVER_NETWORK = "198.18.2.0/24"
APP_PORT = 80
DENIED_PORT = 8443
# The rules' names are those of the device group's security rules in the lab's Panorama (the stand-in's
# rulebase), named with set-up's PANLOGS_RULE_PREFIX so that set-up attaches log forwarding to them.
ALLOW_WEB, ALLOW_PING, DENY_ADMIN = "gwlb-allow-web", "gwlb-allow-ping", "gwlb-deny-admin"
POLICY_RULES = (DENY_ADMIN, ALLOW_WEB, ALLOW_PING)
# Kernel inspection only (the inline policy leaves SSH to its default deny): the "SSH denied".
SSH_PORT, DENY_SSH = 22, "gwlb-deny-ssh"
NFLOG_GROUP = 1  # each appliance is its own namespace: the agent's default group does
# The lab's conntrack settings in a kernel appliance's namespace (net.netfilter.nf_conntrack_*;
# timeouts in seconds). conntrack reports a flow's counters only when it destroys the flow, and the
# agents' scaling metric counts the flows conntrack still holds: with the kernel's TIME_WAIT of 120 s
# each closed probe connection would count for two minutes (the inline mode lets a closed flow go
# after 0.2 s), so the scale-in alarm would never fire and records would come minutes late. TIME_WAIT
# 0 and CLOSE 1 end a closed flow's count and write its record as promptly as the inline mode does;
# ICMP 5 s is the inline agent's idle timeout here (the pinger takes a new identifier every few
# seconds). With no TIME_WAIT, a closing packet that comes late finds no entry: tcp_loose 0 makes it
# invalid (dropped unlogged, as a stray of a decided flow) instead of a new flow picked up mid-stream,
# which would be logged and recorded a second time. The price: a stateful ruleset does not take over
# another appliance's connections mid-stream after a failover (their clients time out and reconnect),
# as a real stateful firewall does not.
CONNTRACK_SETTINGS = {"tcp_timeout_time_wait": 0, "tcp_timeout_close": 1, "icmp_timeout": 5, "tcp_loose": 0}
REAP_TIMEOUT_S = 5.0
STATUS_TIMEOUT_S = 0.5
LOG_FLUSH_S = 5.0  # a released firewall's last logs: sent within this, or counted as pending
# The stand-in's threat prevention: every attempt at the app server's admin port is taken for a
# brute-force attempt (a lab signature of its own, not a Palo Alto one), blocked with a reset.
ADMIN_PORT_BRUTE_FORCE = Signature(threat_id=41000, name="gwlb-lab admin port brute force",
                                   category="vulnerability", severity="high", action="reset-both",
                                   port=DENIED_PORT)


def policy_text() -> str:
    """The appliances' policy: the app server takes HTTP and ping; its admin port is denied."""
    return (
        "# gwlb-fleet lab policy (written by gwlb_lab.cloud)\n"
        'default_action = "deny"\n'
        f'internal_cidrs = ["{SERVER_NETWORK}"]\n\n'
        f'[[rules]]\nid = "{DENY_ADMIN}"\naction = "deny"\nprotocol = "tcp"\ndst_ports = [{DENIED_PORT}]\n\n'
        f'[[rules]]\nid = "{ALLOW_WEB}"\naction = "allow"\ndirection = "inbound"\nprotocol = "tcp"\n'
        f'dst = ["{SERVER_NETWORK}"]\ndst_ports = [{APP_PORT}]\n\n'
        f'[[rules]]\nid = "{ALLOW_PING}"\naction = "allow"\ndirection = "inbound"\nprotocol = "icmp"\n'
        f'dst = ["{SERVER_NETWORK}"]\n'
    )


def ruleset_text() -> str:
    """A kernel appliance's ruleset: the policy of ``policy_text`` (and SSH denied), each decision
    logged to NFLOG with the prefix convention of docs/kernel-records.md, so that the agent's
    records carry the inline policy's rule names and the audit's answers read the same. Drops, never
    rejects: a reject's answer would leave by the main table, not back through the tun."""
    probe = TunSettings()
    log_to = f"log group {NFLOG_GROUP} prefix"
    return "\n".join([
        "# gwlb-fleet lab appliance ruleset (written by gwlb_lab.cloud): the kernel decides, the agent",
        "# (tun mode) carries the packets and reads the decisions from NFLOG and conntrack.",
        "table inet gwlb_lab {",
        "    chain forward {",
        "        type filter hook forward priority filter; policy drop;",
        f"        ip saddr {probe.probe_source} ip daddr {probe.probe_destination}"
        f' udp dport {probe.probe_port} accept comment "the agent\'s health probe round the kernel path"',
        "        ct state established,related accept",
        # Strays of flows already decided (a late retransmit): no decision, so not logged.
        "        ct state invalid counter drop",
        f'        tcp dport {DENIED_PORT} counter {log_to} "deny {DENY_ADMIN}" drop',
        f'        tcp dport {SSH_PORT} counter {log_to} "deny {DENY_SSH}" drop',
        f"        ip daddr {SERVER_NETWORK} tcp dport {APP_PORT} ct state new counter"
        f' {log_to} "allow {ALLOW_WEB}" accept',
        f"        ip daddr {SERVER_NETWORK} icmp type echo-request ct state new counter"
        f' {log_to} "allow {ALLOW_PING}" accept',
        f'        counter {log_to} "deny default" drop',
        "    }",
        "}",
        "",
    ])


def agent_toml(config: CloudConfig, appliance: Appliance, policy: Path, monitor_group_id: int = 0) -> str:
    """``monitor_group_id``: the application group `gwlb-fleet setup` made (F-CMS-11), which the
    scaling rules address: the agents publish into it."""
    t, plan = config.timings, config.plan
    kernel = plan.inspection == "kernel"
    return "\n".join([
        "# gwlb-agent for a lab appliance (written by gwlb_lab.cloud); secrets come from the environment",
        f'appliance_id = "{appliance.name}"',
        f'instance_id = "{appliance.instance_id}"',
        f'zone = "{appliance.zone}"',
        f'listen = "{appliance.address}:{GENEVE_PORT}"',
        f'health = "{appliance.address}:{AGENT_HEALTH_PORT}"',
        f'gwlb_cidrs = ["{GWLB_ADDRESS}/32"]',
        f'policy = "{policy}"',
        'log_level = "info"',
        *(['mode = "tun"                # the ruleset in the namespace decides (ruleset.nft)', "",
           "[tun]", f"nflog_group = {NFLOG_GROUP}"] if kernel else []),
        "",
        "[flows]",
        "close_linger = 0.2",
        "idle_timeout = 5.0        # ICMP: the lab's pinger takes a new identifier every few seconds",
        "tcp_idle_timeout = 60.0",
        "export_interval = 15.0",
        "denied_idle_timeout = 5.0",
        "",
        "[flow_log]",
        f'path = "{flow_log_path(config, appliance)}"',
        *(_sls_shipping(config, appliance) if plan.appliance_kind == "linux" else
          ["# a VM-Series: PAN-OS forwards the session logs (gwlb_lab.cloud.logforwarding), not the agent"]),
        "",
        "[cloudmonitor]",
        f'region = "{plan.region}"',
        f'endpoint = "{GWLB_ADDRESS}:{OPENAPI_PORT}"',
        'protocol = "http"',
        f"interval = {t.metric_interval_s}",
        f'scaling_group_id = "{plan.scaling_group_id}"',
        f"group_id = {monitor_group_id}",
        f'access_key_id = "{LAB_ACCESS_KEY[0]}"',
        "",
    ])


def flow_log_path(config: CloudConfig, appliance: Appliance) -> Path:
    return config.run_dir / f"flows-{appliance.name}.jsonl"


def _sls_shipping(config: CloudConfig, appliance: Appliance) -> list[str]:
    return [
        f'sls_endpoint = "http://{GWLB_ADDRESS}:{SLS_PORT}"',
        f'sls_project = "{SLS_PROJECT}"',
        'sls_logstore = "flow-logs"',
        f'access_key_id = "{LAB_ACCESS_KEY[0]}"',
        f'spool_dir = "{config.run_dir / f"spool-{appliance.name}"}"',
        "batch_delay = 1.0",
        "retry_max_delay = 5.0",
    ]


def agent_command() -> list[str]:
    script = Path(sys.executable).parent / "gwlb-agent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gwlb_agent"]


@dataclass
class Appliance:
    number: int
    instance_id: str
    zone: str
    address: str
    ns: str
    serial: str
    state: str = "booting"  # booting | running | killed | paused | stopping | gone | failed
    process: subprocess.Popen[bytes] | None = None
    launched_at: float = field(default_factory=time.time)
    management_ip: str = ""  # the primary ENI's address (Panorama's view); ``address`` is the data ENI's
    answered_at: float = 0.0  # the agent's /health first answered 200
    registered_at: float = 0.0  # the firewall registered with Panorama
    changed_at: float = 0.0  # killed, paused, resumed
    gone_at: float = 0.0
    status: dict[str, Any] = field(default_factory=dict)  # the agent's last /status
    status_at: float = 0.0
    error: str = ""
    logs: FirewallLogForwarding | None = None  # a VM-Series' log forwarding

    @property
    def name(self) -> str:
        return f"nva-{self.number}"

    def snapshot(self) -> dict[str, Any]:
        s = self.status
        return {
            "name": self.name, "instance_id": self.instance_id, "address": self.address,
            "zone": self.zone, "namespace": self.ns, "serial": self.serial, "state": self.state,
            "pid": self.process.pid if self.process else None,
            "launched_at": self.launched_at, "answered_at": self.answered_at,
            "registered_at": self.registered_at, "changed_at": self.changed_at,
            "gone_at": self.gone_at, "error": self.error,
            "agent": {k: s.get(k) for k in ("healthy", "draining", "flows_active", "packets_in",
                                            "packets_out", "bytes_in", "records_exported")
                      if k in s},
            "status_age_s": round(time.time() - self.status_at, 1) if self.status_at else None,
            "panlogs": self.logs.snapshot() if self.logs else None,
        }


class ApplianceHost:
    def __init__(self, config: CloudConfig, ecs: FakeEcs, panorama: FakePanorama,
                 env: dict[str, str] | None = None) -> None:
        self.config = config
        self.vmseries = config.plan.appliance_kind == "vmseries"
        self.intake_ca: Path | None = None  # the intake's CA: set before the first launch (VM-Series)
        self.ecs = ecs
        self.panorama = panorama
        self.policy = config.run_dir / "policy.toml"
        self.policy.write_text(policy_text(), encoding="utf-8")
        self.kernel = config.plan.inspection == "kernel"
        self.ruleset = config.run_dir / "ruleset.nft"
        if self.kernel:
            self.ruleset.write_text(ruleset_text(), encoding="utf-8")
        self.appliances: dict[str, Appliance] = {}  # by instance id, gone ones kept for the report
        self.monitor_group_id = 0  # set from `gwlb-fleet setup`'s result before the first launch
        self._lock = threading.Lock()
        self._env = {k: v for k, v in (env if env is not None else os.environ).items()
                     if not k.startswith("GWLB_AGENT_")}
        secret = LAB_ACCESS_KEY[1]
        self._env.update({"GWLB_AGENT_FLOW_LOG__ACCESS_KEY_SECRET": secret,
                          "GWLB_AGENT_CLOUDMONITOR__ACCESS_KEY_SECRET": secret,
                          "PYTHONUNBUFFERED": "1"})
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # --- following ECS -----------------------------------------------------------------------

    def sync(self) -> None:
        """Start an appliance for every new ECS instance; stop those whose instance is gone."""
        with self.ecs._lock:
            # The namespace takes the data ENI's address; Panorama sees the management one.
            running = {i.instance_id: (i.zone, i.data_ip or i.private_ip, i.private_ip)
                       for i in self.ecs.instances.values()}
        for instance_id, (zone, address, management_ip) in running.items():
            if instance_id not in self.appliances:
                self._launch(instance_id, zone, address, management_ip)
        for appliance in list(self.appliances.values()):
            if appliance.instance_id not in running and appliance.state not in ("stopping", "gone"):
                appliance.state = "stopping"
                threading.Thread(target=self._release, args=(appliance,), name=f"release-{appliance.name}",
                                 daemon=True).start()

    def _launch(self, instance_id: str, zone: str, address: str, management_ip: str) -> None:
        number = int(instance_id.removeprefix("i-fake"))
        appliance = Appliance(number, instance_id, zone, address,
                              ns=f"{self.config.ns_prefix}nva{number}", serial=f"00790000{number:04d}",
                              management_ip=management_ip)
        with self._lock:
            self.appliances[instance_id] = appliance
        try:
            self._create_namespace(appliance)
            if self.kernel:
                self._install_ruleset(appliance)
            self._start_agent(appliance)
            if self.vmseries:
                appliance.logs = self._log_forwarding(appliance).start()
        except (NetnsError, OSError, subprocess.SubprocessError) as exc:
            appliance.state, appliance.error = "failed", str(exc)
            log.error("appliance did not start", extra={"instance_id": instance_id, "error": str(exc)})
            return
        log.info("appliance launched", extra={"appliance": appliance.name, "instance_id": instance_id,
                                              "address": address, "namespace": appliance.ns})

    def _host(self, *args: str) -> None:
        """A command in the runner's mount namespace (namespaces made there are everyone's)."""
        fd = self.config.host_mount_fd
        prefix = ["nsenter", f"--mount=/proc/self/fd/{fd}"] if fd >= 0 else []
        _run([*prefix, *args], pass_fds=(fd,) if fd >= 0 else ())

    def _create_namespace(self, appliance: Appliance) -> None:
        check_address(f"{appliance.address}/24")
        ns, veth = appliance.ns, f"d{appliance.number}"
        self._host("ip", "netns", "add", ns)
        for key in ("all", "default"):
            _run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1"],
                 check=False)
        _run(["ip", "link", "add", veth, "mtu", "9000", "type", "veth", "peer", "name", "eth0",
              "netns", ns, "mtu", "9000"])
        _run(["ip", "link", "set", veth, "master", "br0", "up"])
        _run(["sysctl", "-qw", f"net.ipv4.conf.{veth}.rp_filter=0"], check=False)
        for args in (["link", "set", "lo", "up"], ["link", "set", "eth0", "up"],
                     ["addr", "add", f"{appliance.address}/24", "dev", "eth0"]):
            _run(["ip", "-n", ns, *args])

    def _install_ruleset(self, appliance: Appliance) -> None:
        """The ruleset first: it brings conntrack into the namespace, whose settings are then made."""
        _run(["ip", "netns", "exec", appliance.ns, "nft", "-f", str(self.ruleset)])
        _run(["ip", "netns", "exec", appliance.ns, "sysctl", "-qw",
              *(f"net.netfilter.nf_conntrack_{name}={value}" for name, value in CONNTRACK_SETTINGS.items())])

    def _reap_conntrack(self, appliance: Appliance) -> None:
        """The kernel removes an expired conntrack entry (and reports its DESTROY, with the
        counters the flow record needs) only when its garbage collector gets to it, which it
        schedules from the average timeout of every entry on the machine: tens of seconds here,
        however short the namespace's timeouts. A dump of the table evicts expired entries at once,
        so the lab dumps each kernel appliance's table every second: closed flows leave the scaling
        metric and get their records as promptly as in the inline mode."""
        try:
            _run(["ip", "netns", "exec", appliance.ns, "conntrack", "-L"], timeout=REAP_TIMEOUT_S)
        except (NetnsError, subprocess.SubprocessError) as exc:
            # A namespace being taken down refuses; for a running appliance it delays its records.
            if appliance.state == "running":
                log.warning("conntrack reap failed: closed flows wait for the kernel's collector",
                            extra={"appliance": appliance.name, "error": str(exc)})

    def _start_agent(self, appliance: Appliance) -> None:
        run = self.config.run_dir
        conf = run / f"agent-{appliance.name}.toml"
        conf.write_text(agent_toml(self.config, appliance, self.policy, self.monitor_group_id),
                        encoding="utf-8")
        log_path = run / f"agent-{appliance.name}.log"
        with open(log_path, "ab") as out:
            appliance.process = subprocess.Popen(
                ["ip", "netns", "exec", appliance.ns, *agent_command(), "run", "--config", str(conf)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self._env,
                start_new_session=True)

    def _log_forwarding(self, appliance: Appliance) -> FirewallLogForwarding:
        plan = self.config.plan

        def pushed() -> ForwardingConfig:
            return read_forwarding(self.panorama, plan.template, plan.device_group)

        return FirewallLogForwarding(appliance.serial, flow_log_path(self.config, appliance), pushed,
                                     LogSender(HttpPoster(self.intake_ca)), (ADMIN_PORT_BRUTE_FORCE,))

    def forward_logs(self) -> None:
        """Each VM-Series reads its agent's new sessions and queues their logs (every second)."""
        for appliance in list(self.appliances.values()):
            if appliance.logs is not None and appliance.state not in ("gone",):
                appliance.logs.poll()

    def _release(self, appliance: Appliance) -> None:
        """ESS released the instance: stop its agent (flow records flushed), remove the namespace;
        a VM-Series sends its last logs."""
        process = appliance.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGCONT)  # a paused agent must see its SIGTERM
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(8)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        self.remove_namespace(appliance)
        if appliance.logs is not None:
            appliance.logs.stop(LOG_FLUSH_S)
        appliance.state, appliance.gone_at = "gone", time.time()
        log.info("appliance released", extra={"appliance": appliance.name,
                                              "instance_id": appliance.instance_id})

    def remove_namespace(self, appliance: Appliance) -> None:
        pids = _run(["ip", "netns", "pids", appliance.ns], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 3
        while _run(["ip", "netns", "pids", appliance.ns], check=False).stdout.split() and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(NetnsError):
            self._host("ip", "netns", "del", appliance.ns)

    def stop_all(self) -> None:
        threads = []
        for appliance in list(self.appliances.values()):
            if appliance.state not in ("gone", "stopping"):
                appliance.state = "stopping"
                thread = threading.Thread(target=self._release, args=(appliance,), daemon=True)
                thread.start()
                threads.append(thread)
        for thread in threads:
            thread.join(15)

    # --- the appliances' side: health, Panorama, sessions ----------------------------------------

    def watch(self) -> None:
        """One look at every live appliance (a thread calls this every second)."""
        for appliance in list(self.appliances.values()):
            if appliance.state in ("gone", "stopping", "failed"):
                continue
            process = appliance.process
            alive = process is not None and process.poll() is None
            if not alive and appliance.state not in ("killed",):
                appliance.state = "killed" if appliance.state != "booting" else "failed"
                code = process.returncode if process else "?"
                appliance.error = appliance.error or f"agent exited ({code})"
            if self.kernel:
                self._reap_conntrack(appliance)
            status = self._agent_status(appliance) if alive and appliance.state != "paused" else None
            if status is not None:
                appliance.status, appliance.status_at = status, time.time()
                if appliance.state == "booting" and status.get("healthy"):
                    appliance.state, appliance.answered_at = "running", time.time()
            self._panorama_side(appliance, alive)

    def _agent_status(self, appliance: Appliance) -> dict[str, Any] | None:
        url = f"http://{appliance.address}:{AGENT_HEALTH_PORT}/status"
        try:
            with self._opener.open(url, timeout=STATUS_TIMEOUT_S) as response:
                data = json.loads(response.read(1 << 16))
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _panorama_side(self, appliance: Appliance, alive: bool) -> None:
        if not self.vmseries:
            return  # a Linux appliance has no Panorama
        registered = appliance.serial in self.panorama.firewalls
        if not registered:
            if appliance.registered_at or appliance.state != "running":
                return  # not up yet, or released by the control plane: it does not come back
            # A VM-Series registers from its management interface (the primary ENI).
            management_ip = appliance.management_ip or appliance.address
            self.panorama.add_firewall(appliance.serial, management_ip,
                                       hostname=f"lab-{appliance.name}")
            appliance.registered_at = time.time()
            log.info("firewall registered with Panorama", extra={
                "appliance": appliance.name, "serial": appliance.serial, "ip": management_ip})
        self.panorama.set_connected(appliance.serial, alive)
        flows = appliance.status.get("flows_active")
        if isinstance(flows, int):
            self.panorama.set_sessions(appliance.serial, flows)

    # --- operator actions ---------------------------------------------------------------------

    def find(self, name: str) -> Appliance:
        for appliance in self.appliances.values():
            if name in (appliance.name, appliance.instance_id, appliance.address) and \
                    appliance.state not in ("gone",):
                return appliance
        raise KeyError(name)

    def signal(self, name: str, action: str) -> dict[str, Any]:
        appliance = self.find(name)
        process = appliance.process
        if process is None or process.poll() is not None:
            raise ProcessLookupError(f"{appliance.name}'s agent is not running")
        signum = {"kill": signal.SIGKILL, "pause": signal.SIGSTOP, "resume": signal.SIGCONT}[action]
        at = time.time()
        os.killpg(process.pid, signum)
        appliance.changed_at = at
        appliance.state = {"kill": "killed", "pause": "paused", "resume": "running"}[action]
        log.warning("appliance agent %s", action, extra={"appliance": appliance.name,
                                                          "instance_id": appliance.instance_id})
        return {"appliance": appliance.name, "instance_id": appliance.instance_id, "action": action,
                "at": at}

    def snapshot(self) -> list[dict[str, Any]]:
        return [a.snapshot() for a in sorted(self.appliances.values(), key=lambda a: a.number)]


def _run(args: list[str], check: bool = True, pass_fds: tuple[int, ...] = (),
         timeout: float = 20) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, pass_fds=pass_fds,
                            check=False)
    if check and result.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: exit {result.returncode}: {result.stderr.strip()}")
    return result

