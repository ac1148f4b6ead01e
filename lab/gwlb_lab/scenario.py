"""The lab's scripted scenario (``scripts/lab``): gwlb-fleet doing its job, step by step, measured.

1. Bring-up: client, app server, the lab cloud; ESS launches the group's two appliances through
   the scale-out hook, the launch flow proves them ready, registers them, completes the hooks.
2. Traffic: HTTP connections, probes and ping from the client, through the appliances.
3. Load rises until the scale-out alarm fires: a third appliance launches, becomes ready and takes
   new flows.
4. One appliance's agent is killed: the time until client traffic flows again is measured; the
   health flow hands the instance to ESS, the terminate flow releases it, ESS launches another.
5. Load falls until the scale-in alarm fires: the appliance with the fewest flows is drained with
   no client connection reset; its licence is released and its device removed in Panorama.
6. Every audit query runs against SLS. A VM-Series fleet's answers come from the PAN-OS logs the
   stand-in firewalls forwarded through the intake: they must account for every log the firewalls
   sent and for the traffic the clients made (``panlogs_checks``). A fleet whose kernels inspect
   (``--kind kernel``) must show the ruleset enforcing and its records (``kernel_checks``): no denied
   attempt reached the app server, the denials and the allowed flows recorded by the kernel's rules
   (stage nftables) with the GWLB's identity.

Each step waits for what the control plane does, within a generous bound; a step that does not
happen in time fails the scenario with what was seen. ``Scenario.run`` returns the measurements
(the end-to-end test asserts on them); the report prints them (gwlb_lab.report).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gwlb_lab.cloud.appliances import ALLOW_PING, ALLOW_WEB, DENIED_PORT, DENY_ADMIN, DENY_SSH, SSH_PORT
from gwlb_lab.fleetlab import FleetLab
from gwlb_lab.topology import LabError

T = TypeVar("T")
STREAK_S = 3.0  # failover is over once probes have succeeded this long without a failure
SETTLE_S = 8.0  # no new PAN-OS log this long: the quiet clients' sessions have all ended and been logged


class StepFailed(LabError):
    pass


class View(Protocol):
    def phase(self, title: str) -> None: ...

    def ok(self, text: str) -> None: ...

    def fail(self, text: str) -> None: ...

    def info(self, text: str) -> None: ...

    def update(self, status: dict[str, Any], load: dict[str, Any], waiting: str) -> None: ...


@dataclass(frozen=True)
class ScenarioSettings:
    base_connections: int = 18
    high_connections: int = 54
    low_connections: int = 2
    ready_timeout_s: float = 120.0
    scale_out_timeout_s: float = 120.0
    launch_timeout_s: float = 150.0
    failover_timeout_s: float = 40.0
    replace_timeout_s: float = 200.0
    scale_in_timeout_s: float = 200.0
    drain_timeout_s: float = 150.0
    logs_settle_timeout_s: float = 120.0


@dataclass
class Measurements:
    started: float = field(default_factory=time.time)
    ready_after_s: float = 0.0
    scale_out: dict[str, Any] = field(default_factory=dict)
    failover: dict[str, Any] = field(default_factory=dict)
    scale_in: dict[str, Any] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    sls: dict[str, int] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    panlogs: dict[str, Any] = field(default_factory=dict)  # the intake's answers, each firewall's counts
    flow_records: dict[str, Any] = field(default_factory=dict)  # SLS's flow records by action, rule, stage
    ssh_attempt: str = ""  # a kernel fleet: how the client's SSH attempt ended (connected/refused/timeout)
    load: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)  # the cloud's last status
    steps: list[tuple[str, bool, float]] = field(default_factory=list)  # (what, passed, at)


def failover_time(probes: Sequence[Sequence[Any]], kill_at: float,
                  streak_s: float = STREAK_S) -> tuple[float | None, int]:
    """(seconds from the kill until the first probe of a run of successes lasting ``streak_s``
    that follows the first failure, failures counted until then). (0.0, 0) when no probe failed;
    (None, n) when traffic never recovered in what was seen. Probes: (start, end, ok, error)."""
    after = sorted((p for p in probes if p[0] >= kill_at), key=lambda p: p[0])
    failures = 0
    streak_from: float | None = None
    for start, _end, ok, *_ in after:
        if not ok:
            failures += 1
            streak_from = None
        elif failures and streak_from is None:
            streak_from = start
        if streak_from is not None and start - streak_from >= streak_s:
            return streak_from - kill_at, failures
    if not failures:
        return 0.0, 0
    return None, failures


def in_service(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in status["records"] if r["state"] == "in_service"]


def appliance_of(status: dict[str, Any], instance_id: str) -> dict[str, Any]:
    return next((a for a in status["appliances"] if a["instance_id"] == instance_id), {})


def _count(row: dict[str, Any], column: str) -> int:
    value = row.get(column)
    return int(float(value)) if value not in (None, "", "null") else 0


def panlogs_checks(audit: dict[str, Any], before: dict[str, Any], after: dict[str, Any],
                   denied_attempts: int) -> list[tuple[bool, str]]:
    """(passed, what) for each way a VM-Series fleet's audit answers must match what happened.
    ``before`` and ``after``: the intake's and each firewall's counts (status["panlogs"]) just
    before and just after the audit queries ran (the clients quiet, so equal unless a late session
    was logged meanwhile): what SLS answers lies between the two. Every firewall's logs all taken,
    none refused; per serial, the flow records in SLS are the traffic logs it sent and the blocked
    threats its threat logs; every threat is a denied admin-port session (the stand-in's
    signature), high, no more than the clients' attempts; the clients' web sessions are there."""
    was: dict[str, dict[str, Any]] = before.get("firewalls", {})
    now: dict[str, dict[str, Any]] = after.get("firewalls", {})
    checks: list[tuple[bool, str]] = []
    left = {serial: {k: v for k, v in counts.items() if k in ("pending", "traffic_refused", "threat_refused")
                     and v}
            for serial, counts in now.items()}
    left = {serial: counts for serial, counts in left.items() if counts}
    checks.append((bool(now) and not left,
                   f"every log the {len(now)} firewalls generated was taken by the intake"
                   + (f"; left: {left}" if left else "")))
    for log_type, query, column in (("traffic", "appliance-traffic", "records"),
                                    ("threat", "threats-blocked-by-firewall", "threats")):
        found = {_serial(r): _count(r, column) for r in audit.get(query, {}).get("rows", [])}
        low = {s: c.get(f"{log_type}_sent", 0) for s, c in was.items() if c.get(f"{log_type}_sent", 0)}
        high = {s: c.get(f"{log_type}_sent", 0) for s, c in now.items() if c.get(f"{log_type}_sent", 0)}
        between = set(found) == set(high) and all(low.get(s, 0) <= n <= high[s] for s, n in found.items())
        checks.append((bool(found) and between,
                       f"{query}: {column} per serial {found}, {log_type} logs sent {high}"))
    total = (sum(c.get("threat_sent", 0) for c in was.values()),
             sum(c.get("threat_sent", 0) for c in now.values()))
    severities = {r.get("severity"): _count(r, "threats")
                  for r in audit.get("threats-blocked-by-severity", {}).get("rows", [])}
    checks.append((set(severities) == {"high"} and total[0] <= severities["high"] <= total[1],
                   f"threats-blocked-by-severity: {severities}, all high"))
    admin = [r for r in audit.get("denied", {}).get("rows", [])
             if r.get("rule") == "gwlb-deny-admin" and _count(r, "dst_port") == ADMIN_PORT]
    denied_sessions = sum(_count(r, "flows") for r in admin)
    checks.append((0 < denied_sessions <= denied_attempts and total[0] <= denied_sessions <= total[1],
                   f"denied: {denied_sessions} admin-port sessions (gwlb-deny-admin) of the clients'"
                   f" {denied_attempts} attempts, one threat log each ({total[1]})"))
    web = [r for r in audit.get("conversations", {}).get("rows", [])
           if _count(r, "dst_port") == 80 and r.get("action") == "allow"]
    web_serials = {_serial(r) for r in web}
    checks.append((bool(web) and web_serials <= set(now),
                   f"conversations: the clients' web sessions, through firewalls {sorted(web_serials)}"))
    return checks


def kernel_checks(audit: dict[str, Any], flow_records: dict[str, Any], denied: dict[str, int],
                  ssh_attempt: str) -> list[tuple[bool, str]]:
    """(passed, what) for each way a fleet whose kernels inspect must show its ruleset deciding.
    ``denied``: the clients' admin-port attempts (gwlb_lab.load: ``answered`` counts those the app
    server answered, with its RST as it has no such port: the SYN reached it); ``ssh_attempt``: the
    scenario's one SSH attempt; ``flow_records``: SLS's records by action, rule and stage
    (gwlb_lab.cloud.cloud ``flow_records``)."""
    checks: list[tuple[bool, str]] = []
    attempts, answered = int(denied.get("attempts", 0)), int(denied.get("answered", 0))
    checks.append((attempts > 0 and answered == 0 and ssh_attempt == "timeout",
                   f"no denied attempt reached the app server: {answered} of the clients' {attempts} "
                   f"admin-port attempts answered; the SSH attempt: {ssh_attempt}"))
    rows = audit.get("denied", {}).get("rows", [])
    stages = {r.get("stage") for r in rows}
    admin = sum(_count(r, "flows") for r in rows
                if r.get("rule") == DENY_ADMIN and _count(r, "dst_port") == ADMIN_PORT)
    ssh = sum(_count(r, "flows") for r in rows
              if r.get("rule") == DENY_SSH and _count(r, "dst_port") == SSH_PORT)
    checks.append((stages == {"nftables"} and 0 < admin <= attempts and ssh >= 1,
                   f"denied: every row from stage {sorted(map(str, stages))}; {admin} admin-port flows "
                   f"(gwlb-deny-admin) of {attempts} attempts, {ssh} SSH flows (gwlb-deny-ssh)"))
    groups = flow_records.get("groups", [])
    by_rule = {(g["action"], g["rule"]): g for g in groups if g["stage"] == "nftables"}
    others = sorted({g["stage"] for g in groups} - {"nftables"})
    for rule in (ALLOW_WEB, ALLOW_PING):
        g = by_rule.get(("allow", rule), {"records": 0, "gwlb_identity": 0})
        checks.append((g["records"] > 0 and g["gwlb_identity"] == g["records"],
                       f"flow records of {rule}: {g['records']} from the kernel (stage nftables), "
                       f"{g['gwlb_identity']} with the GWLB's identity (gwlb_ip, vni, endpoint)"))
    checks.append((bool(groups) and not others,
                   "every flow record in SLS decided by the kernel's ruleset (stage nftables)"
                   + (f"; other stages: {others}" if others else "")))
    return checks


def _serial(row: dict[str, Any]) -> str:
    for column in ("serial", "appliance_id"):
        value = row.get(column)
        if value not in (None, "", "null"):  # SLS's SQL answers "null" for a missing field
            return str(value)
    return ""


ADMIN_PORT = DENIED_PORT  # the load generator's denied port


def audit_events(
    status: dict[str, Any], action: str, since: float, outcome: str = "ok"
) -> list[dict[str, str]]:
    return [e for e in status.get("audit", []) if e.get("action") == action
            and e.get("outcome") == outcome and float(e.get("time", 0)) >= since]


class Scenario:
    def __init__(self, lab: FleetLab, view: View, settings: ScenarioSettings | None = None) -> None:
        self.lab = lab
        self.view = view
        self.settings = settings or ScenarioSettings()
        self.m = Measurements()
        self.status: dict[str, Any] = {}
        self.load: dict[str, Any] = {}

    @property
    def vmseries(self) -> bool:
        return self.lab.spec.plan.appliance_kind == "vmseries"

    @property
    def kernel(self) -> bool:
        return self.lab.spec.plan.inspection == "kernel"

    # --- helpers ---------------------------------------------------------------------------------

    def refresh(self, waiting: str = "") -> dict[str, Any]:
        self.status = self.lab.status()
        self.load = self.lab.load_stats()
        self.m.status = self.status
        self.view.update(self.status, self.load, waiting)
        return self.status

    def wait_for(self, what: str, check: Callable[[dict[str, Any]], T | None], timeout: float,
                 interval: float = 1.0) -> T:
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            status = self.refresh(f"{what} ({elapsed:.0f} s of at most {timeout:.0f} s)")
            value = check(status)
            if value is not None and value is not False:
                return value
            if elapsed > timeout:
                raise StepFailed(f"not within {timeout:.0f} s: {what}")
            time.sleep(interval)

    def ok(self, text: str) -> None:
        self.m.steps.append((text, True, time.time()))
        self.view.ok(text)

    def check(self, passed: bool, text: str, failed: str | None = None) -> None:
        if not passed:
            self.m.steps.append((failed or text, False, time.time()))
            raise StepFailed(failed or text)
        self.ok(text)

    def pause(self, seconds: float, what: str) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.refresh(what)
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))

    # --- the scenario --------------------------------------------------------------------------

    def run(self) -> Measurements:
        self.bring_up()
        self.traffic()
        self.scale_out()
        self.fail_one()
        self.scale_in()
        self.audit()
        return self.m

    def bring_up(self) -> None:
        self.view.phase("1. Bring-up: the network, the lab cloud, two appliances launched by ESS")
        started = time.time()
        self.lab.create(self.ok)
        plan = self.lab.spec.plan

        def two_ready(status: dict[str, Any]) -> list[dict[str, Any]] | None:
            ready = in_service(status)
            members = {m.get("instance_id") or m["server_id"]: m for m in status["members"]}
            good = [r for r in ready if members.get(r["instance_id"], {}).get("status") == "Available"
                    and members[r["instance_id"]].get("health") == "Healthy"]
            return good if len(good) >= plan.desired else None

        ready = self.wait_for(f"{plan.desired} appliances in service", two_ready,
                              self.settings.ready_timeout_s)
        self.m.ready_after_s = time.time() - started
        names = ", ".join(f"{appliance_of(self.status, r['instance_id']).get('name', '?')} "
                          f"({r['instance_id']}, {r['data_ip']})" for r in ready)
        self.ok(f"{len(ready)} appliances in service {self.m.ready_after_s:.0f} s after start: {names}; "
                "each proven ready (health port, Panorama), registered in the GWLB, hook completed")

    def traffic(self) -> None:
        s = self.settings
        self.view.phase(f"2. Traffic: {s.base_connections} HTTP connections, probes, ping, a denied port")
        self.lab.set_load(s.base_connections)

        def flowing(status: dict[str, Any]) -> bool:
            c, p = self.load["connections"], self.load["ping"]
            return bool(c["open"] >= s.base_connections and c["requests_ok"] >= 2 * s.base_connections
                        and p["ok"] >= 3)

        self.wait_for("client traffic through the appliances", flowing, 30)
        c = self.load["connections"]
        self.ok(f"{c['open']} connections open, {c['requests_ok']} requests answered; "
                f"{self.load['ping']['ok']} pings answered, through the GWLB and the agents")
        if self.kernel:
            # The app server has no SSH: were the SYN to reach it, its RST would come back (refused).
            self.m.ssh_attempt = self.lab.connect_from_client(SSH_PORT)
            self.check(self.m.ssh_attempt == "timeout",
                       "SSH from the client to the app server: dropped by the appliance's kernel (timed out)",
                       f"SSH from the client to the app server: {self.m.ssh_attempt}, not dropped")

    def scale_out(self) -> None:
        s, plan = self.settings, self.lab.spec.plan
        self.view.phase(f"3. Load rises to {s.high_connections} connections: scale out")
        before = {r["instance_id"] for r in self.status["records"]}
        since = time.time()
        self.lab.set_load(s.high_connections)
        decision = self.wait_for("the scale-out alarm and the scale function's decision",
                                 lambda st: next(iter(audit_events(st, "scale_out", since)), None),
                                 s.scale_out_timeout_s)
        alarm: dict[str, Any] = next((a for a in self.status["alarms"]
                                      if a["name"].startswith("gwlb-fleet-scale-out")), {})
        self.ok(f"scale-out alarm {alarm.get('expression', '')} fired; scale: {decision.get('reason')}")

        def third(status: dict[str, Any]) -> dict[str, Any] | None:
            new = [r for r in in_service(status) if r["instance_id"] not in before]
            return new[0] if new and len(in_service(status)) >= plan.max_size else None

        record = self.wait_for("the new appliance to launch, become ready and be registered", third,
                               s.launch_timeout_s)
        new_id = record["instance_id"]
        launched = float(record["step_times"].get("hook_completed", time.time())) - float(decision["time"])
        self.ok(f"{appliance_of(self.status, new_id).get('name')} ({new_id}) in service "
                f"{launched:.0f} s after the decision")

        def taking(status: dict[str, Any]) -> int | None:
            created = int(status["traffic"].get(new_id, {}).get("flows_created", 0))
            return created if created >= 10 else None

        flows = self.wait_for("the new appliance to take new flows", taking, 30)
        self.m.scale_out = {"decision": decision, "alarm": alarm, "instance_id": new_id,
                            "in_service_after_s": launched, "flows_created": flows}
        self.ok(f"the GWLB sends it new flows ({flows} so far)")

    def fail_one(self) -> None:
        s = self.settings
        self.view.phase("4. An appliance fails: its agent is killed")
        self.lab.set_load(s.base_connections)
        self.pause(4, "load back to normal before the failure")
        records = sorted(in_service(self.status), key=lambda r: r["instance_id"])
        victim = records[0]["instance_id"]
        victim_app = appliance_of(self.status, victim)
        known = {r["instance_id"] for r in self.status["records"]}
        killed = self.lab.appliance("kill", victim_app["name"])
        kill_at = float(killed["at"])
        self.ok(f"killed {victim_app['name']}'s agent ({victim}, serial {victim_app['serial']}) with SIGKILL")

        def unhealthy(status: dict[str, Any]) -> float | None:
            marks = [h for h in status["health_log"] if h["member"] == victim and h["health"] == "unhealthy"
                     and h["at"] >= kill_at - 0.5]
            return marks[0]["at"] - kill_at if marks else None

        detected = self.wait_for("the GWLB health check to mark it unhealthy", unhealthy, 20)
        self.ok(f"GWLB health check: unhealthy {detected:.1f} s after the kill "
                f"(every {self.lab.spec.timings.health_interval_s:g} s, threshold "
                f"{self.lab.spec.timings.unhealthy_threshold})")

        def recovered(status: dict[str, Any]) -> tuple[float | None, int] | None:
            seconds, failures = failover_time(self.lab.load_recent(kill_at)["probes"], kill_at)
            return (seconds, failures) if seconds is not None else None

        failover, failures = self.wait_for("client traffic to flow again", recovered, s.failover_timeout_s)
        self.ok(f"client traffic flowing again {failover:.1f} s after the kill ({failures} probes lost "
                "meanwhile; new flows now go to the healthy appliances)")

        def replaced_decision(status: dict[str, Any]) -> dict[str, str] | None:
            found = [e for e in audit_events(status, "replace_unhealthy", kill_at - 1)
                     if e.get("instance_id") == victim]
            return found[0] if found else None

        decision = self.wait_for("the health function to hand it to ESS", replaced_decision, 60)
        self.ok(f"health: {decision.get('reason')} -> ESS SetInstanceHealth Unhealthy")

        def gone(status: dict[str, Any]) -> dict[str, Any] | None:
            return next((r for r in status["records"] if r["instance_id"] == victim and r["state"] == "gone"),
                        None)

        self.wait_for("ESS to remove it and the terminate flow to release it", gone, s.replace_timeout_s)
        self.ok(f"{victim} terminated: deregistered, licence released, device removed, hook completed")

        def replacement(status: dict[str, Any]) -> dict[str, Any] | None:
            new = [r for r in in_service(status) if r["instance_id"] not in known]
            return new[0] if new else None

        new = self.wait_for("ESS to launch a replacement and the launch flow to put it in service",
                            replacement, s.replace_timeout_s)
        panorama = self.status["panorama"]
        serial = victim_app["serial"]
        licence_released = serial not in panorama["licensed"]
        device_removed = serial not in {d["serial"] for d in panorama["devices"]}
        stats = self.lab.load_recent(kill_at)
        self.m.failover = {
            "instance_id": victim, "appliance": victim_app["name"], "serial": serial, "kill_at": kill_at,
            "unhealthy_after_s": detected, "failover_s": failover, "probes_lost": failures,
            "connection_errors": len([e for e in stats["errors"] if e[1].startswith("connection")]),
            "longest_stall_s": self.load["connections"]["longest_stall_s"],
            "decision": decision, "replacement": new["instance_id"],
            "licence_released": licence_released, "device_removed": device_removed,
        }
        self.ok(f"replaced by {appliance_of(self.status, new['instance_id']).get('name')} "
                f"({new['instance_id']}), in service")
        if self.vmseries:  # a Linux appliance has no Panorama
            self.check(licence_released and device_removed,
                       f"Panorama: {serial} no longer licensed, no longer a managed device",
                       f"Panorama still holds {serial}: licensed={not licence_released}, "
                       f"device={not device_removed}")

    def scale_in(self) -> None:
        s = self.settings
        self.view.phase(f"5. Load falls to {s.low_connections} connections: scale in, with draining")
        since = time.time()
        before = self.lab.load_stats()
        self.lab.set_load(s.low_connections)
        decision = self.wait_for("the scale-in alarm and the scale function's decision (after cooldown "
                                 "and warm-up)",
                                 lambda st: next(iter(audit_events(st, "scale_in", since)), None),
                                 s.scale_in_timeout_s)
        victim = decision.get("instance_id", "")
        victim_app = appliance_of(self.status, victim)
        self.ok(f"scale-in alarm fired; scale: {decision.get('reason')}")

        def gone(status: dict[str, Any]) -> dict[str, Any] | None:
            return next((r for r in status["records"] if r["instance_id"] == victim and r["state"] == "gone"),
                        None)

        record = self.wait_for(f"{victim_app.get('name', victim)} to drain and be released", gone,
                               s.drain_timeout_s)
        times = record["step_times"]
        drained_s = float(times.get("drained", 0)) - float(decision["time"])
        after = self.lab.load_stats()
        errors = _delta(before["connections"]["errors"], after["connections"]["errors"])
        probe_errors = _delta(before["probes"]["errors"], after["probes"]["errors"])
        pings_sent = after["ping"]["sent"] - before["ping"]["sent"]
        pings_lost = pings_sent - (after["ping"]["ok"] - before["ping"]["ok"])
        panorama = self.status["panorama"]
        serial = victim_app.get("serial", "")
        self.m.scale_in = {
            "instance_id": victim, "appliance": victim_app.get("name"), "serial": serial,
            "decision": decision, "drained_after_s": drained_s,
            "released_after_s": float(times.get("handed_back", 0)) - float(decision["time"]),
            "connection_errors": errors, "probe_errors": probe_errors, "pings_lost": max(0, pings_lost - 1),
            "requests_ok": after["connections"]["requests_ok"] - before["connections"]["requests_ok"],
            "licence_released": serial not in panorama["licensed"],
            "device_removed": serial not in {d["serial"] for d in panorama["devices"]},
        }
        self.ok(f"{victim_app.get('name')} drained {drained_s:.0f} s after the decision and released")
        self.check(not errors and not probe_errors,
                   f"no client connection reset or failed during the scale-in "
                   f"({self.m.scale_in['requests_ok']} requests answered)",
                   f"clients saw errors during the scale-in: connections {errors}, probes {probe_errors}")
        if self.vmseries:
            self.check(self.m.scale_in["licence_released"] and self.m.scale_in["device_removed"],
                       f"Panorama: {serial} licence released and device removed (read back)",
                       f"Panorama still holds {serial}")

    def audit(self) -> None:
        self.view.phase("6. The audit queries, against SLS")
        if self.vmseries:
            # Every session ended and logged first, so that the answers can be counted against
            # what the firewalls sent and the clients did.
            self.lab.set_quiet(True)
            self.wait_for("the clients' sessions to end and the firewalls' logs to reach the intake",
                          _settled(), self.settings.logs_settle_timeout_s)
        self.pause(3, "the agents' last flow-log batches")
        before = self.refresh("").get("panlogs", {})
        answers = self.lab.audit(self.m.started - 60)
        self.m.audit = answers
        status = self.refresh("")
        self.m.sls = status["sls"]
        self.m.dead_letters = status["functions"]["dead_letters"]
        self.m.load = self.load
        for name, answer in answers.items():
            if answer.get("error"):
                self.check(False, "", f"audit query {name} failed: {answer['error']}")
            self.ok(f"{name}: {len(answer['rows'])} rows ({answer['title']})")
        self.check(self.m.sls.get("flow-logs", 0) > 0 and self.m.sls.get("fleet-audit", 0) > 0,
                   f"SLS holds {self.m.sls.get('flow-logs', 0)} flow records and "
                   f"{self.m.sls.get('fleet-audit', 0)} audit events",
                   f"SLS is missing records: {self.m.sls}")
        self.check(not self.m.dead_letters, "no dead letters: every event was handled",
                   f"{len(self.m.dead_letters)} dead letters: {self.m.dead_letters[:2]}")
        if self.vmseries:
            self.m.panlogs = status.get("panlogs", {})
            denied_attempts = int(self.load["denied"]["attempts"])
            for passed, text in panlogs_checks(answers, before, self.m.panlogs, denied_attempts):
                self.check(passed, f"PAN-OS logs: {text}", f"PAN-OS logs: {text}")
        if self.kernel:
            self.m.flow_records = self.lab.flow_records()
            for passed, text in kernel_checks(answers, self.m.flow_records, self.load["denied"],
                                              self.m.ssh_attempt):
                self.check(passed, f"kernel: {text}", f"kernel: {text}")


def _settled(quiet_s: float = SETTLE_S) -> Callable[[dict[str, Any]], bool]:
    """A check that holds once no firewall has a log pending and none has generated a new one for
    ``quiet_s`` (longer than the agents' 5 s idle timeout of ICMP and denied flows)."""
    seen: dict[str, Any] = {"totals": None, "since": 0.0}

    def settled(status: dict[str, Any]) -> bool:
        firewalls = status.get("panlogs", {}).get("firewalls", {})
        totals = {s: (c.get("traffic_generated", 0), c.get("threat_generated", 0))
                  for s, c in firewalls.items()}
        now = time.monotonic()
        if totals != seen["totals"]:
            seen.update(totals=totals, since=now)
        pending = any(c.get("pending") for c in firewalls.values())
        return not pending and now - float(seen["since"]) >= quiet_s

    return settled


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
