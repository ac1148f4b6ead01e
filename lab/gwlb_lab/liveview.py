"""The scenario's live view: what the fleet is doing, refreshed about once a second.

On a terminal: one screen, redrawn in place (plain ANSI) — the clients' traffic, the scaling
group, the alarms, one row per appliance (ESS state, our record's state, GWLB member status and
health, flows, the agent's own count, Panorama), the control plane's latest decisions from the
audit log, the functions' invocations, and the scenario's steps so far. Anywhere else (CI, a
pipe): the steps as lines, the control plane's decisions as they appear, and a short progress
line every few seconds.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Any, TextIO

ROUTINE_ACTIONS = frozenset({"reconcile"})  # every timer tick: not news
PROGRESS_EVERY_S = 10.0


def _age(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60:d}:{seconds % 60:02d}"


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def appliance_rows(status: dict[str, Any]) -> list[list[str]]:
    """One row per appliance (gone ones included briefly), from the cloud's status."""
    records = {r["instance_id"]: r for r in status.get("records", [])}
    ess = {i["instance_id"]: i for i in status.get("instances", [])}
    members = {m.get("instance_id") or m["server_id"]: m for m in status.get("members", [])}
    emulated = {m["id"]: m for m in status.get("emulator", {}).get("members", [])}
    panorama = status.get("panorama", {})
    devices = {d["serial"]: d for d in panorama.get("devices", [])}
    licensed = set(panorama.get("licensed", []))
    now = float(status.get("time", time.time()))
    rows = []
    for appliance in status.get("appliances", []):
        instance_id = appliance["instance_id"]
        if appliance["state"] == "gone" and now - float(appliance.get("gone_at") or 0) > 30:
            continue
        record = records.get(instance_id, {})
        member, flows = members.get(instance_id), emulated.get(instance_id)
        serial = appliance["serial"]
        device = devices.get(serial)
        pano = ("connected" if device["connected"] else "disconnected") if device else "-"
        if serial in licensed:
            pano += ", licensed"
        agent = appliance.get("agent", {})
        agent_state = appliance["state"]
        rows.append([
            appliance["name"], instance_id, appliance["address"],
            ess.get(instance_id, {}).get("lifecycle_state", "released"),
            record.get("state", "-"),
            member["status"] if member else "-",
            (member["health"] if member else "-") if not flows else f"{flows['health']}",
            f"{flows['flows_created']}/{flows['flows']}" if flows else "-",
            f"{agent_state} {agent.get('flows_active', '-')}" if agent_state != "gone" else "gone",
            pano,
        ])
    return rows


APPLIANCE_HEADER = ["appliance", "instance", "address", "ESS", "record", "member", "health",
                    "flows new/now", "agent", "Panorama"]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(header)).rstrip()]
    out += ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]
    return out


def load_line(load: dict[str, Any]) -> str:
    if not load:
        return "clients: -"
    c, p, ping, denied = load["connections"], load["probes"], load["ping"], load["denied"]
    probe_rate = 100.0 * p["ok"] / p["sent"] if p["sent"] else 100.0
    ping_rate = 100.0 * ping["ok"] / ping["sent"] if ping["sent"] else 100.0
    errors = sum(c["errors"].values())
    return (f"clients: {c['target']} connections ({c['open']} open), {c['requests_ok']} requests answered, "
            f"{errors} connection errors · probes {p['ok']}/{p['sent']} ok ({probe_rate:.1f}%) · "
            f"ping {ping_rate:.0f}% · denied port blocked {denied['blocked']}/{denied['attempts']}")


def group_line(status: dict[str, Any]) -> str:
    g = status.get("group", {})
    running = [a for a in status.get("activities", []) if a["status"] == "InProgress"]
    activity = f" · ESS activity: {running[-1]['description']}" if running else ""
    return (f"scaling group {status.get('config', {}).get('scaling_group_id', '?')}: {g.get('total', 0)} "
            f"instances (min {g.get('min')}, max {g.get('max')}, desired {g.get('desired')}){activity}")


def alarm_line(status: dict[str, Any]) -> str:
    parts = []
    for a in status.get("alarms", []):
        name = a["name"].removeprefix("gwlb-fleet-")
        value = "-" if a["value"] is None else f"{a['value']:g}"
        parts.append(f"{name} {a['state']} ({a['expression']}, now {value})")
    return "alarms: " + (" · ".join(parts) if parts else "-")


def functions_line(status: dict[str, Any]) -> str:
    f = status.get("functions", {})
    counts = f.get("counts", {})
    by_function: dict[str, int] = {}
    errors = 0
    for key, count in counts.items():
        name, outcome = key.split(" ", 1)
        by_function[name] = by_function.get(name, 0) + count
        errors += count if outcome == "error" else 0
    calls = " · ".join(f"{name} {count}" for name, count in sorted(by_function.items()))
    return (f"functions: {calls or '-'} · failed attempts {errors} (retried) · "
            f"dead letters {len(f.get('dead_letters', []))}")


def panlogs_line(status: dict[str, Any]) -> str:
    """The firewalls' PAN-OS log forwarding: logs sent, retried, refused, pending; the intake's answers."""
    panlogs = status.get("panlogs") or {}
    firewalls = panlogs.get("firewalls", {}).values()
    total = {key: sum(int(c.get(f"{t}_{key}", 0)) for c in firewalls for t in ("traffic", "threat"))
             for key in ("sent", "retried", "refused")}
    pending = sum(int(c.get("pending", 0)) for c in firewalls)
    answers = " ".join(f"{status}x{count}" for status, count in panlogs.get("intake", {}).items())
    return (f"PAN-OS logs: sent {total['sent']} · retried {total['retried']} · refused {total['refused']} · "
            f"pending {pending} · intake answers {answers or '-'}")


def decision_lines(events: list[dict[str, str]], limit: int = 8) -> list[str]:
    out = []
    for event in [e for e in events if e.get("action") not in ROUTINE_ACTIONS][-limit:]:
        when = _clock(float(event.get("time", 0)))
        out.append(f"{when} {event.get('function', ''):<9} {event.get('action', ''):<24} "
                   f"{event.get('outcome', ''):<7} {event.get('instance_id', ''):<15} "
                   f"{event.get('reason', '')}")
    return out


class LiveView:
    def __init__(self, out: TextIO = sys.stdout, live: bool | None = None) -> None:
        self.out = out
        self.live = out.isatty() if live is None else live
        self.color = self.live and os.environ.get("NO_COLOR") is None
        self.started = time.time()
        self.steps: list[str] = []
        self.failures = 0
        self._last_progress = 0.0
        self._seen_events: set[str] = set()
        self._status: dict[str, Any] = {}
        self._load: dict[str, Any] = {}
        self._waiting = ""

    def _paint(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # --- the scenario's lines ----------------------------------------------------------------------

    def phase(self, title: str) -> None:
        self.steps.append(self._paint("1", title))
        if not self.live:
            self._print("\n" + title)
        self._redraw()

    def ok(self, text: str) -> None:
        self._step(f"  {self._paint('32', '✓')} {text}")

    def fail(self, text: str) -> None:
        self.failures += 1
        self._step(f"  {self._paint('31', '✗')} {text}")

    def info(self, text: str) -> None:
        self._step(f"    {text}")

    def _step(self, line: str) -> None:
        self.steps.append(line)
        if not self.live:
            self._print(line)
        self._redraw()

    # --- the fleet ----------------------------------------------------------------------------------

    def update(self, status: dict[str, Any], load: dict[str, Any], waiting: str) -> None:
        self._status, self._load, self._waiting = status, load, waiting
        if self.live:
            self._redraw()
            return
        for event in status.get("audit", []):
            key = event.get("event_id", "")
            if key in self._seen_events:
                continue
            self._seen_events.add(key)
            if event.get("action") in ROUTINE_ACTIONS or event.get("function") == "lifecycle":
                continue
            self._print(f"    · {event.get('function')}: {event.get('action')} {event.get('outcome')} "
                        f"{event.get('instance_id', '')} — {event.get('reason', '')}")
        now = time.monotonic()
        if waiting and now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            fleet = ", ".join(f"{r[0]} {r[4]}/{r[6]}/{r[7]}" for r in appliance_rows(status))
            self._print(f"    … {_age(time.time() - self.started)} waiting for {waiting} | {fleet}")

    def screen(self) -> list[str]:
        status, load = self._status, self._load
        width = shutil.get_terminal_size((120, 40)).columns
        lines = [self._paint("1", "gwlb-fleet lab") + f" · {_age(time.time() - self.started)} · "
                 + (f"waiting for {self._waiting}" if self._waiting else "")]
        if status:
            lines += ["", load_line(load), group_line(status), alarm_line(status), ""]
            lines += table(APPLIANCE_HEADER, appliance_rows(status))
            lines += ["", self._paint("1", "control plane decisions (audit log in SLS)")]
            lines += decision_lines(status.get("audit", [])) or ["-"]
            lines += ["", functions_line(status)]
            if status.get("panlogs"):
                lines.append(panlogs_line(status))
        lines += ["", self._paint("1", "scenario"), *self.steps[-14:]]
        return [line if len(line) <= width + 20 else line[: width - 1] + "…" for line in lines]

    def _redraw(self) -> None:
        if not self.live:
            return
        self.out.write("\033[H\033[2J" + "\n".join(self.screen()) + "\n")
        self.out.flush()

    def close(self) -> None:
        """Leave the last screen as it is; what follows (the report) prints below it."""
        if self.live:
            self._redraw()
            self._print("")
