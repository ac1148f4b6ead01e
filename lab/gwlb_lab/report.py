"""The scenario's report: traffic carried, the decisions taken and why, the failover time (and
what the real GWLB's settings allow), the scale-in, the licences, the records in SLS and every
audit query's answer. The full query answers also go to ``RUN_DIR/audit/<query>.txt``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TextIO

from gwlb_lab.cloud.config import Timings
from gwlb_lab.scenario import Measurements

DECISIONS = ("scale_out", "scale_in", "replace_unhealthy", "abandon_launch", "launch_recorded",
             "hook_completed", "handed_back", "licence_released", "device_removed")
MAX_ROWS = 25
HAVIP_FAILOVER_S = 11.0  # the seed's HAVIP active/passive design
CLOUD_INTERVAL_S = (1, 50, 10)  # GWLB HealthCheckInterval: min, max, default (help.aliyun.com)
CLOUD_THRESHOLD = (2, 10, 2)  # UnhealthyThreshold
CLOUD_TIMEOUT_DEFAULT_S = 5


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def _size(count: float) -> str:
    for unit in ("", "k", "M", "G"):
        if abs(count) < 1000:
            return f"{count:.0f}{unit}" if unit == "" else f"{count:.1f}{unit}"
        count /= 1000
    return f"{count:.1f}T"


def traffic_lines(m: Measurements) -> list[str]:
    status = m.status
    names = {a["instance_id"]: a["name"] for a in status.get("appliances", [])}
    rows = []
    for member_id, t in sorted(status.get("traffic", {}).items(), key=lambda item: names.get(item[0], "")):
        rows.append(f"    {names.get(member_id, '?'):<7} {member_id:<15} {t['packets_sent']:>8} packets in, "
                    f"{t['packets_returned']:>8} back, {_size(t['bytes_sent']):>7}B in, "
                    f"{t['flows_created']:>5} new flows, {t['flows_moved_in']:>3} moved in")
    load = m.load
    if load:
        c, p, ping, denied = load["connections"], load["probes"], load["ping"], load["denied"]
        rows.append(f"    clients: {c['requests_ok']} requests answered over {c['opened']} connections, "
                    f"probes {p['ok']}/{p['sent']}, pings {ping['ok']}/{ping['sent']}, "
                    f"denied port blocked {denied['blocked']}/{denied['attempts']}")
    return rows or ["    -"]


def decision_lines(m: Measurements) -> list[str]:
    rows = m.audit.get("control-plane", {}).get("rows", [])
    out = []
    skipped: dict[str, int] = {}
    for row in rows:
        action, outcome = row.get("action", ""), row.get("outcome", "")
        if action.startswith("scale_") and outcome == "skipped":
            key = f"{action} skipped: {row.get('reason', '')}"
            skipped[key] = skipped.get(key, 0) + 1
            continue
        if action not in DECISIONS and not action.startswith("repair_") and outcome != "failed":
            continue
        when = _clock(float(row.get("event_time") or 0))
        instance_id = row.get("instance_id")
        if instance_id in (None, "", "null"):  # SLS's SQL answers "null" for a missing field
            instance_id = "-"
        out.append(f"    {when} {row.get('function', ''):<9} {action:<18} {outcome:<7} "
                   f"{instance_id:<15} {row.get('reason', '')}")
    out += [f"    ({count}x) {key}" for key, count in sorted(skipped.items())]
    return out or ["    -"]


def failover_lines(m: Measurements, timings: Timings) -> list[str]:
    f = m.failover
    low, high, default = CLOUD_INTERVAL_S
    threshold_low, _, threshold_default = CLOUD_THRESHOLD
    best = low * threshold_low
    usual = default * threshold_default
    lines = []
    if f:
        verdict = "under the 3 s target" if f["failover_s"] < 3 else "over the 3 s target"
        lines += [
            f"    {f['appliance']} ({f['instance_id']}) killed at {_clock(f['kill_at'])}: "
            f"the GWLB health check "
            f"marked it unhealthy after {f['unhealthy_after_s']:.1f} s; client traffic flowed again after "
            f"{f['failover_s']:.1f} s ({verdict}; {f['probes_lost']} probes lost meanwhile).",
            f"    Open connections stalled at most {f['longest_stall_s']:.1f} s (TCP retransmits until the "
            "flow is moved), " + (
                f"{f['connection_errors']} client connection errors after the kill (--kind kernel: the "
                "ruleset drops the moved connections it never saw open; the clients reconnect)."
                if f.get("connection_errors") else "none was reset."),
            f"    Settings here: health check every {timings.health_interval_s:g} s, unhealthy threshold "
            f"{timings.unhealthy_threshold}, {timings.failover_mode}. The seed's HAVIP active/passive design "
            f"loses about {HAVIP_FAILOVER_S:.0f} s.",
        ]
    lines += [
        f"    The real GWLB allows a health-check interval of {low}-{high} s (default {default} s) and "
        f"thresholds of {threshold_low}-10 (default {threshold_default}): detection takes about interval x "
        f"unhealthy threshold, at best about {best} s (1 s x 2, as here), by default about {usual} s, "
        f"plus up to "
        f"the response timeout (default {CLOUD_TIMEOUT_DEFAULT_S} s) for a check that hangs.",
        "    ServerFailoverMode: Rebalance (used here) moves an unhealthy appliance's existing flows to a "
        "healthy one; NoRebalance leaves them on it - only new flows avoid it, so a connection through a "
        "dead appliance stalls until it times out.",
    ]
    return lines


def scale_lines(m: Measurements) -> list[str]:
    lines = []
    out = m.scale_out
    if out:
        lines.append(f"    out: {out['decision'].get('reason')}; {out['instance_id']} in service "
                     f"{out['in_service_after_s']:.0f} s later, {out['flows_created']} new flows on it "
                     "by then.")
    inn = m.scale_in
    if inn:
        errors = sum(inn["connection_errors"].values()) + sum(inn["probe_errors"].values())
        lines.append(f"    in: {inn['decision'].get('reason')}; drained {inn['drained_after_s']:.0f} s and "
                     f"released {inn['released_after_s']:.0f} s after the decision; clients meanwhile: "
                     f"{inn['requests_ok']} requests answered, {errors} errors, "
                     f"{inn['pings_lost']} pings lost.")
    return lines or ["    -"]


def panorama_lines(m: Measurements) -> list[str]:
    panorama = m.status.get("panorama", {})
    lines = []
    for what, data in (("killed", m.failover), ("scaled in", m.scale_in)):
        if data:
            lines.append(f"    {data['appliance']} ({what}), serial {data['serial']}: licence "
                         f"{'released' if data['licence_released'] else 'STILL HELD'}, device "
                         f"{'removed' if data['device_removed'] else 'STILL MANAGED'} "
                         "(read back from Panorama)")
    devices = ", ".join(f"{d['serial']} ({d['ip']})" for d in panorama.get("devices", []))
    lines.append(f"    Panorama now manages: {devices or 'nothing'}; licensed: "
                 f"{', '.join(panorama.get('licensed', [])) or 'nothing'}; commits: "
                 f"{len(panorama.get('commits', []))}")
    return lines


def panlogs_lines(panlogs: dict[str, Any]) -> list[str]:
    """The VM-Series' PAN-OS log forwarding: per firewall what it generated and what became of it;
    the intake's answers by HTTP status."""
    lines = []
    for serial, c in sorted(panlogs.get("firewalls", {}).items()):
        per_type = ", ".join(
            f"{t} {c.get(f'{t}_sent', 0)}/{c.get(f'{t}_generated', 0)} sent"
            + (f" ({c[f'{t}_refused']} refused)" if c.get(f"{t}_refused") else "")
            for t in ("traffic", "threat"))
        lines.append(f"    {serial}: {per_type}; {c.get('traffic_retried', 0) + c.get('threat_retried', 0)} "
                     f"attempts retried, {c.get('pending', 0)} pending, {c.get('not_forwarded', 0)} sessions "
                     "of rules without log forwarding"
                     + (f"; last error: {c['last_error']}" if c.get("last_error") else ""))
    answers = ", ".join(f"{status} x{count}" for status, count in panlogs.get("intake", {}).items())
    lines.append(f"    intake (panlogs function, HTTP trigger) answered: {answers or 'nothing'}")
    return lines


def audit_lines(m: Measurements, run_dir: Path | None) -> list[str]:
    lines = []
    if run_dir is not None:
        (run_dir / "audit").mkdir(exist_ok=True)
    for name, answer in m.audit.items():
        lines.append(f"  {name}: {answer.get('title', '')} ({answer.get('logstore', '')})")
        if answer.get("error"):
            lines.append(f"    failed: {answer['error']}")
            continue
        table = str(answer.get("table", "")).splitlines()
        if run_dir is not None:
            (run_dir / "audit" / f"{name}.txt").write_text("\n".join(table) + "\n", encoding="utf-8")
        shown = table[: MAX_ROWS + 2]
        lines += [f"    {line}" for line in shown]
        if len(table) > len(shown):
            lines.append(f"    ... {len(table) - len(shown) - 1} more rows"
                         + (f" in {run_dir / 'audit' / (name + '.txt')}" if run_dir else ""))
    return lines


def render(m: Measurements, timings: Timings, run_dir: Path | None = None) -> list[str]:
    sls = m.sls
    lines = ["", "Report", "  Traffic carried (through the GWLB, per appliance)"]
    lines += traffic_lines(m)
    lines += ["", "  Decisions, and why (the control plane's audit log in SLS)"]
    lines += decision_lines(m)
    lines += ["", "  Scaling", *scale_lines(m)]
    lines += ["", "  Failover", *failover_lines(m, timings)]
    lines += ["", "  Licences and Panorama", *panorama_lines(m)]
    if m.panlogs:
        lines += ["", "  PAN-OS logs forwarded by the firewalls (sent/generated per log type)",
                  *panlogs_lines(m.panlogs)]
    lines += ["", f"  Records in SLS: {sls.get('flow-logs', 0)} flow records (flow-logs), "
                  f"{sls.get('fleet-audit', 0)} audit events (fleet-audit); "
                  f"dead letters: {len(m.dead_letters)}"]
    if m.audit:
        lines += ["", "  Audit queries (gwlb_fleet.sls.queries: the same query text runs on SLS)"]
        lines += audit_lines(m, run_dir)
    return lines


def write(m: Measurements, timings: Timings, out: TextIO, run_dir: Path | None = None) -> None:
    text = "\n".join(render(m, timings, run_dir))
    print(text, file=out, flush=True)
    if run_dir is not None:
        (run_dir / "report.txt").write_text(text + "\n", encoding="utf-8")


def summary(m: Measurements) -> dict[str, Any]:
    """The measurements that matter, as one JSON-able dict (report.json)."""
    return {
        "ready_after_s": round(m.ready_after_s, 1),
        "scale_out": {k: v for k, v in m.scale_out.items() if k not in ("decision", "alarm")},
        "failover": {k: v for k, v in m.failover.items() if k != "decision"},
        "scale_in": {k: v for k, v in m.scale_in.items() if k != "decision"},
        "sls": m.sls,
        "audit_rows": {name: len(a.get("rows", [])) for name, a in m.audit.items()},
        "dead_letters": len(m.dead_letters),
        "panlogs": m.panlogs,
    }
