"""The try-it scenario (``scripts/lab run``), and ``up`` / ``down`` for a lab left running.

``run``: build the lab, curl the app server through the appliances, add a deny rule and show the
curl blocked, restore it, summarise the flow records and what the emulator saw, tear down.
Every step prints one line, ✓ or ✗; the processes' own logs stay in the state directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from gwlb_fleet.sls.flowrecord import FlowRecord
from gwlb_lab import netns
from gwlb_lab.gwlb.encap import Layout
from gwlb_lab.topology import (
    ALLOW_RULE_ID,
    APP_PORT,
    APP_URL,
    CLIENT,
    DENY_RULE_ID,
    GWLB_DATA,
    REPO,
    SERVER,
    STATUS_PORT,
    Lab,
    LabError,
    LabSpec,
    policy_text,
)

STATE_ROOT = REPO / ".lab"
UP_RUN_ID = "up"


class Steps:
    """Step-by-step output for a person: ✓/✗ lines under short section titles."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.color = out.isatty() and os.environ.get("NO_COLOR") is None
        self.failures = 0

    def _paint(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def title(self, text: str) -> None:
        self._print(self._paint("1", text))

    def section(self, text: str) -> None:
        self._print("\n" + self._paint("1", text))

    def ok(self, text: str) -> None:
        self._print(f"  {self._paint('32', '✓')} {text}")

    def fail(self, text: str) -> None:
        self.failures += 1
        self._print(f"  {self._paint('31', '✗')} {text}")

    def check(self, passed: bool, text: str, failed_text: str | None = None) -> bool:
        if passed:
            self.ok(text)
        else:
            self.fail(failed_text or text)
        return passed

    def info(self, text: str) -> None:
        self._print(f"    {text}")

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP end the scenario like Ctrl-C: through the teardown."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# --- run -------------------------------------------------------------------------------------


def run(appliances: int = 2, layout: Layout = "aws", requests: int = 4,
        out: TextIO = sys.stdout) -> int:
    steps = Steps(out)
    run_id = str(os.getpid())
    _prune_state_dirs()
    state = STATE_ROOT / f"run-{run_id}"
    spec = LabSpec(state_dir=state, appliances=appliances, layout=layout)
    steps.title("gwlb-fleet lab: a client, an app server and "
                f"{appliances} appliances behind an emulated GWLB")
    with _signals_interrupt():
        topo = netns.Topology(run_id=run_id)
        try:
            lab = Lab(topo, spec)
            bring_up(lab, steps)
            scenario(lab, steps, requests)
        except LabError as exc:
            steps.fail(str(exc))
        except KeyboardInterrupt:
            steps.fail("interrupted")
        except Exception as exc:  # noqa: BLE001 - reported as a failed step, then torn down
            (state / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
            steps.fail(f"{type(exc).__name__}: {exc} (traceback in {_relative(state)}/error.log)")
        finally:
            steps.section("Teardown")
            topo.close()
            left = netns.list_namespaces(topo.prefix)
            if not left:
                (state / "pids.json").unlink(missing_ok=True)
            steps.check(not left, "namespaces and processes removed",
                        f"namespaces left behind: {', '.join(left)} (run scripts/lab down)")
    steps.info(f"logs, policies and flow records: {_relative(state)}")
    if steps.failures:
        steps.section(f"✗ {steps.failures} step(s) failed")
        return 1
    steps.section("✓ all steps passed")
    return 0


def bring_up(lab: Lab, steps: Steps) -> None:
    steps.section("Bring-up")
    started = time.monotonic()
    lab.create_network()
    names = ", ".join(f"{a.appliance_id} {a.address}" for a in lab.appliances)
    steps.ok(f"network namespaces {lab.topo.prefix}*: client {CLIENT}, app server {SERVER}, "
             f"gwlb {GWLB_DATA}, {names}")
    lab.start_app_server()
    steps.ok(f"app server answering on {APP_URL}")
    lab.start_agents()
    steps.ok(f"gwlb-agent started on {', '.join(a.appliance_id for a in lab.appliances)} "
             f"(policy: allow tcp/{APP_PORT} to the app server, deny the rest)")
    lab.start_emulator()
    steps.ok(f"GWLB emulator intercepting client <-> server: Geneve to UDP 6081, "
             f"32 bytes of {lab.spec.layout} options")
    status = lab.wait_healthy()
    health = ", ".join(f"{m['id']} {m['health']}" for m in status["members"])
    steps.ok(f"health checks ({lab.spec.health_interval:g} s interval): {health} "
             f"({time.monotonic() - started:.1f} s after start)")


def scenario(lab: Lab, steps: Steps, requests: int) -> None:
    steps.section(f"curl {APP_URL} from the client, through the appliances")
    for port, member in lab.client_ports(requests):
        _curl_allowed(lab, steps, port, member)

    steps.section("A deny rule")
    generations = lab.set_policy(policy_text(deny_http=True))
    steps.ok(f'rule "{DENY_RULE_ID}" (deny tcp/{APP_PORT}) put first in every policy; '
             f"agents reloaded on SIGHUP (generation {max(generations.values())})")
    port = lab.next_client_port()
    blocked = lab.curl(port, timeout=2)
    flow = lab.flow_of_port(port)
    where = f"; {flow['member']} dropped it" if flow else ""
    steps.check(not blocked.ok and blocked.exit_code == 28,
                f"curl from port {port} blocked: no answer within 2 s{where}",
                f"curl from port {port} was not blocked: exit {blocked.exit_code}, "
                f"HTTP {blocked.status} {blocked.error}")
    lab.set_policy(policy_text())
    steps.ok("policy restored and reloaded")
    _curl_allowed(lab, steps, lab.next_client_port(), None)

    steps.section("What the GWLB emulator saw")
    status = lab.emulator_status()
    counters = status["counters"]
    kept = counters["to_members"] - counters["from_members"]
    steps.ok(f"{counters['intercepted']} packets intercepted, {counters['to_members']} sent in "
             f"Geneve, {counters['from_members']} returned ({kept} dropped by the appliances), "
             f"{counters['delivered']} delivered")
    for member in status["members"]:
        steps.info(f"{member['id']}: {member['packets_sent']} packets sent, "
                   f"{member['packets_returned']} returned, {member['flows']} flows")
    steps.check(status["mismatches"] == 0,
                "every returned packet came from its flow's appliance and source port, with the "
                "Geneve header and its 32 bytes of options unchanged",
                f"{status['mismatches']} returned packets did not match what was sent: "
                + json.dumps({k: v for k, v in status["drops"].items() if v}))
    emulator_flows = lab.emulator_flows()

    steps.section("Flow records")
    lab.stop_agents()
    steps.ok("agents stopped with SIGTERM: every live flow written to the flow log")
    records = [r for r in lab.flow_records() if r.dst_port == APP_PORT]
    summarise(records, steps)
    allowed = [r for r in records if r.action == "allow" and r.rule == ALLOW_RULE_ID]
    denied = [r for r in records if r.action == "deny" and r.rule == DENY_RULE_ID]
    steps.check(bool(allowed) and bool(denied),
                f"{len(allowed)} allowed by {ALLOW_RULE_ID}, {len(denied)} denied by {DENY_RULE_ID}",
                f"expected allow and deny records, got {len(allowed)} allowed, {len(denied)} denied")
    if lab.spec.layout == "aws":
        cookies = {(f["sport"], f["member"]): f["flow_cookie"] for f in emulator_flows}
        matched = [r for r in records
                   if cookies.get((r.src_port, r.appliance_id)) == r.flow_cookie]
        steps.check(len(matched) == len(records),
                    "each record names the appliance that saw the flow and carries the GWLB's "
                    "flow cookie for it",
                    f"{len(records) - len(matched)} records disagree with the emulator's flows")
    final = lab.stop_emulator()
    steps.ok(f"emulator stopped: {final['flows_created']} flows, {final['mismatches']} mismatches")


def _curl_allowed(lab: Lab, steps: Steps, port: int, member: str | None) -> None:
    result = lab.curl(port)
    flow = lab.flow_of_port(port)
    via = flow["member"] if flow else "?"
    body = result.body.strip()
    if len(body) > 60:
        body = body[:57] + "..."
    steps.check(result.ok and (member is None or via == member),
                f'curl from port {port} -> HTTP {result.status} "{body}" via {via} '
                f"({result.seconds * 1000:.0f} ms)",
                f"curl from port {port}: exit {result.exit_code}, HTTP {result.status}, "
                f"via {via} (expected {member or 'any'}): {result.error}")


def summarise(records: list[FlowRecord], steps: Steps) -> None:
    header = f"{'appliance':<10} {'action':<6} {'rule':<14} {'flow':<38} {'pkts →/←':>9}  end"
    steps.info(header)
    for r in records:
        flow = f"{r.protocol_name} {r.src_ip}:{r.src_port} → {r.dst_ip}:{r.dst_port}"
        packets = f"{r.packets_fwd}/{r.packets_rev}"
        steps.info(f"{r.appliance_id:<10} {r.action:<6} {r.rule:<14} {flow:<38} {packets:>9}  "
                   f"{r.reason}")


# --- up / down ---------------------------------------------------------------------------------


def up(appliances: int = 2, layout: Layout = "aws", out: TextIO = sys.stdout) -> int:
    steps = Steps(out)
    prefix = f"{netns.PREFIX}{UP_RUN_ID}-"
    if netns.list_namespaces(prefix):
        steps.fail(f"a lab is already up ({prefix}*): scripts/lab down first")
        return 1
    state = STATE_ROOT / UP_RUN_ID
    shutil.rmtree(state, ignore_errors=True)
    spec = LabSpec(state_dir=state, appliances=appliances, layout=layout)
    steps.title("gwlb-fleet lab: up")
    topo = netns.Topology(run_id=UP_RUN_ID)
    with _signals_interrupt():
        try:
            lab = Lab(topo, spec)
            bring_up(lab, steps)
        except (LabError, KeyboardInterrupt) as exc:
            steps.fail(str(exc) or "interrupted")
            topo.close()
            return 1
    lab.record_processes()
    client, gwlb = lab.client.name, lab.gwlb.name
    agent = lab.appliances[0]
    steps.section("The lab is running. Try:")
    steps.info(f"ip netns exec {client} curl {APP_URL}")
    steps.info(f"ip netns exec {gwlb} curl -s 127.0.0.1:{STATUS_PORT}/status    # emulator counters")
    steps.info(f"ip netns exec {gwlb} curl -s 127.0.0.1:{STATUS_PORT}/flows     # flows and members")
    steps.info(f"ip netns exec {gwlb} curl -s {agent.address}:8080/status     # {agent.appliance_id}")
    steps.info(f"edit {_relative(agent.policy)}, then: kill -HUP {_pid(agent.process)}"
               "   # reload its policy")
    steps.info(f"tail -f {_relative(agent.flow_log)}    # flow records (on FIN, idle, stop)")
    steps.info(f"logs: {_relative(state)}/*.log")
    steps.section("Tear down: scripts/lab down")
    return 0


def down(everything: bool = False, out: TextIO = sys.stdout, state_root: Path = STATE_ROOT,
         up_run_id: str = UP_RUN_ID) -> int:
    """Stop what ``up`` or a crashed run left: recorded processes first (SIGTERM, so agents
    write their flow records), then the namespaces and whatever still runs in them. Live runs
    of other processes are left alone unless ``everything``."""
    steps = Steps(out)
    steps.title("gwlb-fleet lab: down")
    stopped = 0
    for pids_file in sorted(state_root.glob("*/pids.json")):
        try:
            recorded = json.loads(pids_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        owner = str(recorded.get("owner", ""))
        if not everything and owner != up_run_id and owner.isdigit() and netns.alive(int(owner)):
            continue
        for process in recorded.get("processes", []):
            if netns.terminate_recorded(int(process["pid"]), int(process["start_time"])):
                stopped += 1
                steps.ok(f"stopped {process['role']} (pid {process['pid']})")
        pids_file.unlink(missing_ok=True)
    removed = netns.sweep(f"{netns.PREFIX}{up_run_id}-") + netns.sweep_stale()
    if everything:
        removed += netns.sweep()
    for name in removed:
        steps.ok(f"removed namespace {name}")
    if not (stopped or removed):
        steps.ok("nothing to tear down")
    left = netns.list_namespaces()
    if left and not everything:
        steps.info(f"still running (their owner is alive): {', '.join(left)}; "
                   "scripts/lab down --all removes them too")
    elif left:
        steps.fail(f"could not remove: {', '.join(left)}")
        return 1
    return 0


def _pid(process: Any) -> str:
    return str(process.pid) if process is not None else "?"


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _prune_state_dirs(keep: int = 3) -> None:
    """Keep the state of the last few finished runs (their logs and flow records), no more."""
    runs = sorted((p for p in STATE_ROOT.glob("run-*") if p.is_dir()),
                  key=lambda p: p.stat().st_mtime)
    finished = [p for p in runs
                if not (p.name[4:].isdigit() and netns.alive(int(p.name[4:])))]
    for path in finished[:-keep] if keep else finished:
        shutil.rmtree(path, ignore_errors=True)
