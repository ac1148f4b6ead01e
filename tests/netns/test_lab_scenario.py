"""The lab's scenario end to end (``scripts/lab run``), and its commands (``up`` ... ``down``).

The scenario runs with a VM-Series fleet (the default: the stand-in firewalls forward PAN-OS logs
to the intake function, and the audit answers come from those), with a Linux fleet (the agents
ship their own flow records to SLS) and with a Linux fleet whose kernels inspect (an nftables
ruleset in each appliance decides; the agents in tun mode ship the kernel's flow records).

Everything is real: namespaces this test creates (198.18.0.0/15 only), the lab cloud running the
control plane's functions against local endpoints, appliance namespaces running ``gwlb-agent``,
the GWLB emulator, clients. Each step of the scenario waits within its own bound (gwlb_lab.scenario);
the lab is torn down whatever happens, and the test then checks nothing of it is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gwlb_lab import netns
from gwlb_lab.cloud.config import FleetPlan, LabKind
from gwlb_lab.fleetlab import FleetLab, FleetLabSpec
from gwlb_lab.scenario import Measurements, Scenario

REPO = Path(__file__).resolve().parents[2]


class RecordingView:
    """The scenario's view, remembered instead of drawn (the report is asserted on, not read)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def phase(self, title: str) -> None:
        self.lines.append(f"# {title}")

    def ok(self, text: str) -> None:
        self.lines.append(f"ok {text}")

    def fail(self, text: str) -> None:
        self.lines.append(f"FAIL {text}")

    def info(self, text: str) -> None:
        self.lines.append(f"info {text}")

    def update(self, status: dict[str, Any], load: dict[str, Any], waiting: str) -> None:
        pass


def _processes_in(prefix: str) -> dict[int, int]:
    """pid -> start time of every process running in the namespaces named ``prefix``*."""
    found = {}
    for name in netns.list_namespaces(prefix):
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False)
        for pid in map(int, pids.stdout.split()):
            started = netns.start_time(pid)
            if started is not None:
                found[pid] = started
    return found


Run = tuple[Measurements, list[str], list[str]]


def _scenario(tmp_path_factory: pytest.TempPathFactory, kind: LabKind) -> Iterator[Run]:
    run_dir = tmp_path_factory.mktemp(f"lab-{kind}") / "run"
    lab = FleetLab(FleetLabSpec(run_dir=run_dir, run_id=f"t{os.getpid()}{kind[0]}",
                                plan=FleetPlan.of_kind(kind)))
    view = RecordingView()
    scenario = Scenario(lab, view)
    try:
        scenario.run()
    except Exception as exc:  # noqa: BLE001 - a failed step is asserted on, with what was seen
        view.fail(f"{type(exc).__name__}: {exc}")
    finally:
        left = lab.close()
    yield scenario.m, view.lines, left
    netns.sweep(lab.prefix)


@pytest.fixture(scope="module")
def scenario_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    yield from _scenario(tmp_path_factory, "vmseries")


@pytest.fixture(scope="module")
def linux_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    yield from _scenario(tmp_path_factory, "linux")


@pytest.fixture(scope="module")
def kernel_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    yield from _scenario(tmp_path_factory, "kernel")


@pytest.mark.timeout(900)
def test_every_step_of_the_scenario_happens(scenario_run: tuple[Measurements, list[str], list[str]]) -> None:
    _, lines, left = scenario_run
    failures = [line for line in lines if line.startswith("FAIL")]
    assert not failures, "\n".join(lines)
    assert left == []
    assert [phase for phase in lines if phase.startswith("# ")] == [
        "# 1. Bring-up: the network, the lab cloud, two appliances launched by ESS",
        "# 2. Traffic: 18 HTTP connections, probes, ping, a denied port",
        "# 3. Load rises to 54 connections: scale out",
        "# 4. An appliance fails: its agent is killed",
        "# 5. Load falls to 2 connections: scale in, with draining",
        "# 6. The audit queries, against SLS",
    ]


@pytest.mark.timeout(900)
def test_scale_out_puts_a_third_appliance_in_service_that_takes_flows(
    scenario_run: tuple[Measurements, list[str], list[str]],
) -> None:
    m, _, _ = scenario_run
    assert m.scale_out, "the scenario did not get to the scale-out"
    assert m.scale_out["decision"]["function"] == "scale"
    assert m.scale_out["alarm"]["name"].startswith("gwlb-fleet-scale-out")
    assert m.scale_out["flows_created"] >= 10
    assert m.scale_out["instance_id"] not in ("i-fake00000001", "i-fake00000002")


@pytest.mark.timeout(900)
def test_a_killed_appliance_is_failed_over_replaced_and_released(
    scenario_run: tuple[Measurements, list[str], list[str]],
) -> None:
    m, _, _ = scenario_run
    f = m.failover
    assert f, "the scenario did not get to the failure"
    # Measured, not asserted against the 3 s target (the machine is shared): traffic recovered,
    # the emulator's health check saw it, the health function acted, the replacement came.
    assert f["failover_s"] is not None and f["unhealthy_after_s"] > 0
    assert f["decision"]["action"] == "replace_unhealthy" and f["decision"]["instance_id"] == f["instance_id"]
    assert f["replacement"] != f["instance_id"]
    assert f["licence_released"] and f["device_removed"]


@pytest.mark.timeout(900)
def test_scale_in_drains_without_a_reset_and_releases_the_licence(
    scenario_run: tuple[Measurements, list[str], list[str]],
) -> None:
    m, _, _ = scenario_run
    s = m.scale_in
    assert s, "the scenario did not get to the scale-in"
    assert s["connection_errors"] == {} and s["probe_errors"] == {}
    assert s["requests_ok"] > 0
    assert s["licence_released"] and s["device_removed"]
    assert s["drained_after_s"] >= 0


@pytest.mark.timeout(900)
def test_every_audit_query_answers_from_sls(scenario_run: tuple[Measurements, list[str], list[str]]) -> None:
    m, _, _ = scenario_run
    assert set(m.audit) >= {"conversations", "denied", "appliance-traffic", "lost-records",
                            "control-plane", "control-plane-summary"}
    assert all(not answer.get("error") for answer in m.audit.values())
    assert m.audit["conversations"]["rows"] and m.audit["denied"]["rows"]
    actions = {row["action"] for row in m.audit["control-plane"]["rows"]}
    assert {"scale_out", "scale_in", "replace_unhealthy", "licence_released", "device_removed",
            "handed_back", "hook_completed"} <= actions
    assert m.sls["flow-logs"] > 0 and m.sls["fleet-audit"] > 0
    assert m.dead_letters == []


@pytest.mark.timeout(900)
def test_a_vmseries_fleet_answers_the_audit_from_the_pan_os_logs_its_firewalls_forwarded(
    scenario_run: Run,
) -> None:
    """Set-up wrote the log forwarding into Panorama; the stand-in firewalls read it and posted their
    traffic and threat logs to the intake through the HTTP trigger; every answer is from those
    logs and matches what the firewalls sent and the clients did (gwlb_lab.scenario.panlogs_checks)."""
    m, lines, _ = scenario_run
    judged = [line for line in lines if "PAN-OS logs:" in line]
    assert len(judged) == 6 and all(line.startswith("ok ") for line in judged), "\n".join(lines)
    serials = {a["serial"] for a in m.status["appliances"]}
    firewalls = m.panlogs["firewalls"]
    assert len(firewalls) >= 4 and set(firewalls) <= serials  # two, a third, a replacement
    assert all(c["pending"] == 0 and not c.get("traffic_refused") for c in firewalls.values())
    assert m.panlogs["intake"]["200"] == sum(c["traffic_sent"] + c.get("threat_sent", 0)
                                              for c in firewalls.values())
    # Only PAN-OS logs in flow-logs: the agents of a VM-Series fleet ship nothing themselves.
    assert {row["serial"] for row in m.audit["appliance-traffic"]["rows"]} <= serials
    assert all(row["stage"] == "panos" for row in m.audit["denied"]["rows"])
    denied = m.audit["denied"]["rows"]
    assert any(row["rule"] == "gwlb-deny-admin" and row["dst_port"] == "8443" for row in denied)
    [high] = m.audit["threats-blocked-by-severity"]["rows"]
    assert high["severity"] == "high" and int(high["threats"]) > 0
    assert {row["serial"] for row in m.audit["threats-blocked-by-firewall"]["rows"]} <= serials


@pytest.mark.timeout(900)
def test_a_linux_fleet_runs_the_scenario_and_answers_the_audit_from_its_agents_records(
    linux_run: Run,
) -> None:
    m, lines, left = linux_run
    failures = [line for line in lines if line.startswith("FAIL")]
    assert not failures, "\n".join(lines)
    assert left == []
    assert m.status["panorama"]["ever_registered"] == []  # no Panorama for Linux appliances
    assert m.panlogs == {}
    agents = {a["name"] for a in m.status["appliances"]}
    assert {row["appliance_id"] for row in m.audit["appliance-traffic"]["rows"]} <= agents
    assert any(row["rule"] == "gwlb-deny-admin" for row in m.audit["denied"]["rows"])
    assert m.audit["threats-blocked-by-severity"]["rows"] == []
    assert m.dead_letters == []


@pytest.mark.timeout(900)
def test_a_kernel_fleet_enforces_its_nftables_ruleset_fails_over_and_records_from_the_kernel(
    kernel_run: Run,
) -> None:
    """The appliances' nftables rulesets decide (the agents in tun mode): the denied attempts never
    reach the app server, the denials and the allowed flows are in SLS as the kernel recorded them
    (stage nftables, the inline policy's rule names, the GWLB's identity), and a killed agent is
    failed over and replaced as in the other fleets."""
    m, lines, left = kernel_run
    failures = [line for line in lines if line.startswith("FAIL")]
    assert not failures, "\n".join(lines)
    assert left == []
    judged = [line for line in lines if line.startswith(("ok kernel:", "FAIL kernel:"))]
    assert len(judged) == 5 and all(line.startswith("ok ") for line in judged), "\n".join(lines)
    # Enforcement: the app server has neither port, so a SYN that reached it would be answered.
    assert m.ssh_attempt == "timeout"
    denied = m.load["denied"]
    assert denied["attempts"] > 0 and denied["answered"] == 0
    rows = m.audit["denied"]["rows"]
    assert {row["stage"] for row in rows} == {"nftables"}
    assert any(row["rule"] == "gwlb-deny-admin" and row["dst_port"] == "8443" for row in rows)
    assert any(row["rule"] == "gwlb-deny-ssh" and row["dst_port"] == "22" for row in rows)
    # Failover: the killed appliance stopped taking traffic, was replaced, and traffic recovered.
    f = m.failover
    assert f["failover_s"] is not None and f["unhealthy_after_s"] > 0
    assert f["decision"]["action"] == "replace_unhealthy" and f["replacement"] != f["instance_id"]
    # Flow records from the kernel, carrying the GWLB's identity, from the agents of this fleet.
    groups = {(g["action"], g["rule"], g["stage"]): g for g in m.flow_records["groups"]}
    web = groups[("allow", "gwlb-allow-web", "nftables")]
    assert web["records"] > 0 and web["gwlb_identity"] == web["records"]
    assert {stage for _, _, stage in groups} == {"nftables"}
    agents = {a["name"] for a in m.status["appliances"]}
    assert {row["appliance_id"] for row in m.audit["appliance-traffic"]["rows"]} <= agents
    assert m.status["panorama"]["ever_registered"] == [] and m.panlogs == {}
    assert m.dead_letters == []


# --- the commands ----------------------------------------------------------------------------------

def _lab(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gwlb_lab", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture
def nothing_up() -> Iterator[None]:
    if netns.list_namespaces(f"{netns.PREFIX}up-"):
        pytest.skip("a lab brought up by scripts/lab up is running on this machine")
    try:
        yield
    finally:
        _lab("down", timeout=120)


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("nothing_up")
def test_up_then_load_pause_kill_audit_and_down_leave_nothing() -> None:
    up = _lab("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "The lab is running" in up.stdout
    status = _lab("status")
    assert status.returncode == 0 and "nva-1" in status.stdout and "nva-2" in status.stdout, status.stdout
    assert _lab("load", "24").returncode == 0
    for action, name in (("pause", "nva-1"), ("resume", "nva-1"), ("kill", "nva-2")):
        done = _lab(action, name)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith(f"{action}: {name} ("), done.stdout
    unknown = _lab("kill", "nva-9")
    assert unknown.returncode == 1 and "nva-9" in unknown.stderr
    audit = _lab("audit")
    assert audit.returncode == 0 and "conversations:" in audit.stdout and "control-plane:" in audit.stdout

    down = _lab("down", timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert netns.list_namespaces(f"{netns.PREFIX}up-") == []
    assert _lab("status").returncode == 1


@pytest.mark.timeout(300)
def test_down_after_the_runner_crashed_removes_every_namespace_and_process() -> None:
    runner = subprocess.Popen([sys.executable, "-m", "gwlb_lab", "run", "--plain"], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    prefix = f"{netns.PREFIX}{runner.pid}-"
    try:
        assert runner.stdout is not None
        deadline = time.monotonic() + 120
        seen = []
        for line in runner.stdout:  # bounded: the runner's own step limits end it
            seen.append(line)
            if ("appliances in service" in line and "✓" in line) or time.monotonic() > deadline:
                break
        assert any("appliances in service" in line for line in seen), "".join(seen)
        appliances = [n for n in netns.list_namespaces(prefix) if "nva" in n]
        assert appliances, netns.list_namespaces(prefix)
        processes = _processes_in(prefix)  # the cloud, the agents, the clients, the app server
        assert len(processes) >= 5, processes
        runner.send_signal(signal.SIGKILL)  # no teardown of its own
        runner.wait(10)

        down = _lab("down", timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert netns.list_namespaces(prefix) == []
        assert [pid for pid, started in processes.items() if netns.start_time(pid) == started] == []
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait(10)
        netns.sweep(prefix)
