"""Suricata as an IPS stage of the kernel chain: its queue rule and its alerts.

Suricata runs in NFQUEUE mode (``suricata -q N``) and reads the packets the appliance's ruleset
has accepted from queue ``N``; its verdict drops or passes each. The queue rule goes in a chain of
its own that runs after the appliance's filter chain (``QUEUE_CHAIN_PRIORITY``), so the ruleset
decides first and Suricata sees only what the ruleset let through.

Fail-open: the rule carries ``bypass``, so while no Suricata listens on the queue (not started
yet, crashed, restarting) the kernel accepts the packets uninspected instead of dropping them.
The stage is optional, and a crashed IPS must not black-hole every flow behind the GWLB; what
Suricata is meant to block is then not blocked, which its supervisor (systemd) must repair.

Alerts come from its EVE JSON log (``eve.json``, ``event_type`` "alert"): ``alert.action`` is
"blocked" for a drop rule in IPS mode, "allowed" for an alert-only rule. ``EveTail`` follows the
file (rotation and truncation included); ``parse_alert`` reads one line.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gwlb_agent.kernel.records import FlowKey

PROTOCOLS = {"TCP": 6, "UDP": 17, "ICMP": 1, "SCTP": 132}
QUEUE_TABLE = "gwlb_suricata"
# After the filter hook's usual priority (0): the appliance's own forward chains decide first.
QUEUE_CHAIN_PRIORITY = 10


class EveError(ValueError):
    """An EVE line we cannot read as an alert."""


@dataclass(frozen=True, slots=True)
class SuricataAlert:
    key: FlowKey  # the flow's key, initiator first (EVE's "flow" object when it has one)
    blocked: bool  # alert.action == "blocked": Suricata dropped the packet (IPS mode)
    signature_id: int
    signature: str
    time: float  # epoch seconds

    @property
    def rule(self) -> str:
        return f"sid:{self.signature_id} {self.signature}"


def parse_alert(line: str) -> SuricataAlert | None:
    """The alert of one EVE line, None for other event types and for non-IPv4 alerts."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EveError(f"EVE line is not JSON: {exc}") from exc
    if not isinstance(event, dict) or event.get("event_type") != "alert":
        return None
    try:
        alert = event["alert"]
        # The "flow" object (Suricata 7) names the initiator; the top-level addresses are those
        # of the packet that matched, which may travel the other way.
        flow = event.get("flow")
        ends = flow if isinstance(flow, dict) and "src_ip" in flow else event
        protocol = PROTOCOLS.get(str(event["proto"]).upper())
        if protocol is None:
            return None
        src = ipaddress.ip_address(ends["src_ip"])
        dst = ipaddress.ip_address(ends["dest_ip"])
        if src.version != 4 or dst.version != 4:
            return None
        ports = _ports(ends, protocol, event)
        return SuricataAlert(
            key=(protocol, src.packed + dst.packed + ports),
            blocked=alert["action"] == "blocked",
            signature_id=int(alert["signature_id"]),
            signature=str(alert["signature"]),
            time=datetime.fromisoformat(event["timestamp"]).timestamp(),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EveError(f"EVE alert without a readable {exc}: {line[:200]}") from exc


def _ports(ends: dict[str, Any], protocol: int, event: dict[str, Any]) -> bytes:
    if protocol == 1:
        # Suricata logs ICMP type and code, not the echo id: keep the key of other ICMP.
        return bytes((int(event.get("icmp_type", 0)), int(event.get("icmp_code", 0)), 0, 0))
    return int(ends["src_port"]).to_bytes(2, "big") + int(ends["dest_port"]).to_bytes(2, "big")


class EveTail:
    """Follows an EVE file from its end: each ``read()`` returns the alerts of lines completed
    since the last one. A rotated file (new inode) or a truncated one is read from its start."""

    def __init__(self, path: Path, from_start: bool = False) -> None:
        self.path = path
        self._file: Any = None
        self._inode = -1
        self._partial = ""
        self.unreadable_lines = 0
        self._open(from_start)

    def _open(self, from_start: bool) -> None:
        try:
            handle = open(self.path, encoding="utf-8", errors="replace")  # noqa: SIM115 - kept open
        except FileNotFoundError:
            return  # Suricata has not written it yet: the next read looks again
        if self._file is not None:
            self._file.close()
        self._file = handle
        self._inode = os.fstat(handle.fileno()).st_ino
        self._partial = ""
        if not from_start:
            handle.seek(0, os.SEEK_END)

    def read(self) -> list[SuricataAlert]:
        if self._file is None:
            self._open(from_start=True)
            if self._file is None:
                return []
        alerts = self._drain()
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return alerts  # rotated away, the new one not yet made: read it when it comes
        if status.st_ino != self._inode or status.st_size < self._file.tell():
            self._open(from_start=True)
            alerts += self._drain()
        return alerts

    def _drain(self) -> list[SuricataAlert]:
        alerts = []
        text = self._partial + self._file.read()
        lines = text.split("\n")
        self._partial = lines.pop()  # Suricata may be mid-line: keep the rest for next time
        for line in lines:
            if not line.strip():
                continue
            try:
                alert = parse_alert(line)
            except EveError:
                self.unreadable_lines += 1
                raise
            if alert is not None:
                alerts.append(alert)
        return alerts

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def queue_ruleset(queue: int) -> str:
    """The nft script of the queue stage: every forwarded packet the ruleset accepted goes to
    Suricata's queue, fail-open (``bypass``)."""
    if not 0 <= queue <= 0xFFFF:
        raise ValueError(f"NFQUEUE number must be 0..65535, got {queue}")
    return (
        f"table inet {QUEUE_TABLE} {{\n"
        f"  chain forward {{\n"
        f"    type filter hook forward priority {QUEUE_CHAIN_PRIORITY}; policy accept;\n"
        f"    queue num {queue} bypass\n"
        f"  }}\n"
        f"}}\n"
    )


def install_queue_rule(queue: int, netns: str | None = None) -> str:
    """Add the queue stage; returns how ("nft" or "iptables").

    nftables' own ``queue`` statement needs the kernel's nft_queue; where it is not built
    (CONFIG_NFT_QUEUE unset, as on some cloud kernels) the xtables NFQUEUE target does the same
    through iptables-nft, in the ``filter`` table's FORWARD chain (priority 0, after a ruleset
    at a lower priority number). Raises ``RuntimeError`` with both tools' errors when neither works.
    """
    prefix = ["ip", "netns", "exec", netns] if netns else []
    nft = subprocess.run(
        [*prefix, "nft", "-f", "-"], input=queue_ruleset(queue), capture_output=True, text=True, timeout=30
    )
    if nft.returncode == 0:
        return "nft"
    iptables = subprocess.run(
        [*prefix, "iptables", "-A", "FORWARD", "-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if iptables.returncode == 0:
        return "iptables"
    raise RuntimeError(
        f"cannot install the NFQUEUE {queue} rule: nft said {nft.stderr.strip()!r}; "
        f"iptables said {iptables.stderr.strip()!r}"
    )
