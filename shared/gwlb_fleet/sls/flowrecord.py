"""The flow record: one schema whichever appliance produced it.

A record describes a flow *since the previous record of the same flow*: packet and byte counts
are deltas, so that sums over records are totals. ``record_id`` is unique per record (a batch
sent twice after a crash can be deduplicated on it); ``flow_id`` is shared by all records of
one flow. Addresses and ports are those of the flow's initiator (the first packet seen).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

# "other": a PAN-OS session that ended for another reason (policy, threat, ...): its own words
# are in session_end_reason.
EndReason = Literal["fin", "rst", "idle", "interval", "shutdown", "replaced", "other"]
Action = Literal["allow", "deny"]
Direction = Literal["inbound", "outbound", "internal", "unknown"]

PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 132: "sctp"}


# Not frozen: a frozen dataclass's __init__ costs five times as much, and the export thread
# builds tens of thousands a second. Treat records as immutable all the same.
@dataclass(slots=True)
class FlowRecord:
    record_id: str
    flow_id: str
    appliance_id: str
    start: float  # epoch seconds of the flow's first packet
    end: float  # epoch seconds of the last packet counted in this record
    emitted: float  # epoch seconds this record was written
    reason: EndReason
    protocol: int
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    direction: Direction
    action: Action
    rule: str  # the rule that decided, "default" for the default action
    stage: str  # the inspection stage that decided
    packets_fwd: int
    bytes_fwd: int
    packets_rev: int
    bytes_rev: int
    tcp_flags_fwd: int
    tcp_flags_rev: int
    gwlb_ip: str  # outer source: which GWLB node sent the flow
    vni: int
    endpoint_id: str | None = None
    attachment_id: str | None = None
    flow_cookie: str | None = None
    geneve_options: str = ""  # hex of the raw options, for layouts we cannot read
    zone: str = ""
    # ICMP: type and code of the flow's first packet (the ports are 0 then, never the echo id).
    icmp_type: int | None = None
    icmp_code: int | None = None
    # From a PAN-OS traffic log (gwlb_fleet.panos.panlogs): the firewall's serial and the log's
    # sequence number (record_id is made of both, so a resent log is the same record), the
    # application PAN-OS identified and why the session ended.
    serial: str = ""
    sequence_number: int | None = None
    application: str = ""
    session_end_reason: str = ""
    # Kernel mode (gwlb_agent.kernel): Suricata alerts on the flow that did not decide it (an
    # alert-only signature), "sid:<id> <signature>" joined by "; ". A Suricata drop is the
    # record's rule, with stage "suricata".
    alerts: str = ""

    @property
    def protocol_name(self) -> str:
        return PROTOCOL_NAMES.get(self.protocol, str(self.protocol))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    def log_time(self) -> int:
        """The SLS log time (``__time__``): when the last packet counted here was seen."""
        return int(self.end)

    def log_contents(self) -> list[tuple[str, str]]:
        """The record as SLS log contents: every set field as text, ``kind`` first."""
        contents = [("kind", "flow")]
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            if value is None or value == "":
                continue
            contents.append((name, value if isinstance(value, str) else repr(value)))
        return contents

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlowRecord:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown flow record fields: {sorted(unknown)}")
        return cls(**data)


Severity = Literal["informational", "low", "medium", "high", "critical"]


@dataclass(slots=True)
class ThreatRecord:
    """A PAN-OS threat log (``kind`` = "threat"): what was detected in a session, and what the
    firewall did about it. The session's addresses and ports are the flow record's, so that the
    same queries join both. ``record_id`` is made of the serial and the log's sequence number."""

    record_id: str
    appliance_id: str
    serial: str
    sequence_number: int
    time: float  # epoch seconds the firewall generated the log
    emitted: float  # epoch seconds this record was written
    protocol: int
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    action: str  # PAN-OS's threat action: alert, allow, deny, drop, reset-client, reset-server, ...
    rule: str
    application: str
    threat_id: int
    threat_name: str
    threat_category: str  # PAN-OS's subtype: virus, spyware, vulnerability, url, file, ...
    severity: Severity
    threat_direction: str  # client-to-server | server-to-client
    session_id: int = 0
    zone: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps({"kind": "threat", **asdict(self)}, separators=(",", ":"), sort_keys=True)

    def log_time(self) -> int:
        return int(self.time)

    def log_contents(self) -> list[tuple[str, str]]:
        contents = [("kind", "threat")]
        for name in _THREAT_FIELD_NAMES:
            value = getattr(self, name)
            if value is None or value == "":
                continue
            contents.append((name, value if isinstance(value, str) else repr(value)))
        return contents


LossReason = Literal["handoff_full", "spool_full", "sink_failed"]


@dataclass(frozen=True, slots=True)
class LossReport:
    """The agent telling the audit trail it could not keep some records, and why.

    Written to the same sinks as the flow records (``kind`` = "loss"), once shipping works
    again, so that a gap in the flow logs is explained in the flow logs themselves.
    """

    record_id: str
    appliance_id: str
    lost_records: int
    loss_reason: LossReason
    loss_since: float  # epoch seconds of the first loss counted here
    loss_until: float  # epoch seconds of the report

    def log_time(self) -> int:
        return int(self.loss_until)

    def log_contents(self) -> list[tuple[str, str]]:
        return [
            ("kind", "loss"),
            ("record_id", self.record_id),
            ("appliance_id", self.appliance_id),
            ("lost_records", str(self.lost_records)),
            ("loss_reason", self.loss_reason),
            ("loss_since", repr(self.loss_since)),
            ("loss_until", repr(self.loss_until)),
        ]

    def to_json(self) -> str:
        return json.dumps({"kind": "loss", **asdict(self)}, separators=(",", ":"), sort_keys=True)


_FIELD_NAMES = tuple(f.name for f in fields(FlowRecord))
_THREAT_FIELD_NAMES = tuple(f.name for f in fields(ThreatRecord))

# How the flow logstore's index types each key (SQL sees long/double keys as numbers).
LOG_KEY_TYPES: dict[str, Literal["text", "long", "double"]] = {
    "kind": "text",
    "record_id": "text",
    "flow_id": "text",
    "appliance_id": "text",
    "start": "double",
    "end": "double",
    "emitted": "double",
    "reason": "text",
    "protocol": "long",
    "src_ip": "text",
    "src_port": "long",
    "dst_ip": "text",
    "dst_port": "long",
    "direction": "text",
    "action": "text",
    "rule": "text",
    "stage": "text",
    "packets_fwd": "long",
    "bytes_fwd": "long",
    "packets_rev": "long",
    "bytes_rev": "long",
    "tcp_flags_fwd": "long",
    "tcp_flags_rev": "long",
    "gwlb_ip": "text",
    "vni": "long",
    "endpoint_id": "text",
    "attachment_id": "text",
    "flow_cookie": "text",
    "geneve_options": "text",
    "zone": "text",
    "icmp_type": "long",
    "icmp_code": "long",
    "serial": "text",
    "sequence_number": "long",
    "application": "text",
    "session_end_reason": "text",
    "alerts": "text",
    # kind = "threat": a PAN-OS threat log (ThreatRecord; its other keys are the flow record's)
    "time": "double",
    "threat_id": "long",
    "threat_name": "text",
    "threat_category": "text",
    "severity": "text",
    "threat_direction": "text",
    "session_id": "long",
    # kind = "loss": the agent reporting records it could not keep (see gwlb_agent.shipper)
    "lost_records": "long",
    "loss_reason": "text",
    "loss_since": "double",
    "loss_until": "double",
}
