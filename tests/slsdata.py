"""Seed data for the SLS tests: flow records (with duplicates), loss reports and audit events,
and what each audit query must answer over them.

``seed`` writes what Linux NVA agents write; ``seed_vmseries`` adds what the PAN-OS log intake
writes for VM-Series firewalls: flow records from traffic logs and threat records from threat
logs, some resent by the firewall (same record_id), and the agents' ICMP flows. ``EXPECTED`` is
the answer over both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from gwlb_fleet.sls import loggroup
from gwlb_fleet.sls.auditlog import AuditEvent
from gwlb_fleet.sls.client import Sls
from gwlb_fleet.sls.flowrecord import Action, EndReason, FlowRecord, LossReport, Severity, ThreatRecord
from gwlb_fleet.sls.queries import AUDIT_LOGSTORE, FLOW_LOGSTORE

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
WINDOW = (T0 - 3600, T0 + 3600)

APPLIANCES = {"a1": ("i-a1", "zone-h"), "a2": ("i-a2", "zone-i")}


def flow(
    record_id: str,
    flow_id: str,
    appliance: str,
    src: str,
    dst: str,
    dport: int,
    *,
    protocol: int = 6,
    action: Action = "allow",
    rule: str = "allow-web",
    start: float = T0,
    end: float = T0 + 10,
    pkts: tuple[int, int] = (1, 1),
    nbytes: tuple[int, int] = (100, 100),
    reason: EndReason = "fin",
) -> FlowRecord:
    return FlowRecord(
        record_id=record_id,
        flow_id=flow_id,
        appliance_id=appliance,
        start=start,
        end=end,
        emitted=end + 0.5,
        reason=reason,
        protocol=protocol,
        src_ip=src,
        src_port=40000,
        dst_ip=dst,
        dst_port=dport,
        direction="outbound",
        action=action,
        rule=rule,
        stage="l3l4",
        packets_fwd=pkts[0],
        bytes_fwd=nbytes[0],
        packets_rev=pkts[1],
        bytes_rev=nbytes[1],
        tcp_flags_fwd=0x1B if protocol == 6 else 0,
        tcp_flags_rev=0x1B if protocol == 6 else 0,
        gwlb_ip="10.0.0.4",
        vni=0,
        zone=APPLIANCES[appliance][1],
    )


R1 = flow(
    "r1",
    "f1",
    "a1",
    "10.0.1.10",
    "10.0.2.20",
    443,
    start=T0,
    end=T0 + 60,
    pkts=(10, 8),
    nbytes=(1000, 8000),
    reason="interval",
)
R2 = flow(
    "r2", "f1", "a1", "10.0.1.10", "10.0.2.20", 443, start=T0, end=T0 + 75, pkts=(5, 4), nbytes=(500, 3000)
)
R3 = flow(
    "r3", "f2", "a2", "10.0.1.11", "10.0.2.20", 443, start=T0 + 5, end=T0 + 20, pkts=(3, 3), nbytes=(300, 600)
)
R4 = flow(
    "r4",
    "f3",
    "a1",
    "10.0.1.10",
    "10.0.2.30",
    22,
    action="deny",
    rule="no-ssh",
    start=T0 + 30,
    end=T0 + 31,
    pkts=(2, 0),
    nbytes=(120, 0),
    reason="idle",
)
R5 = flow(
    "r5",
    "f4",
    "a2",
    "10.0.1.12",
    "10.0.2.30",
    22,
    action="deny",
    rule="no-ssh",
    start=T0 + 40,
    end=T0 + 40,
    pkts=(1, 0),
    nbytes=(60, 0),
    reason="idle",
)
R6 = flow(
    "r6",
    "f5",
    "a1",
    "10.0.1.10",
    "8.8.8.8",
    53,
    protocol=17,
    start=T0 + 50,
    end=T0 + 51,
    pkts=(1, 1),
    nbytes=(70, 120),
    reason="idle",
)
# Outside the audit window: must not be counted.
R_OLD = replace(R6, record_id="r-old", flow_id="f-old", start=T0 - 7200, end=T0 - 7100)

# The agents' ICMP echo flows: type and code shown, ports 0.
R7 = replace(
    flow("r7", "f7", "a1", "10.0.1.10", "10.0.2.20", 0, protocol=1, start=T0 + 160, end=T0 + 162,
         pkts=(3, 3), nbytes=(252, 252), reason="idle"),
    src_port=0, icmp_type=8, icmp_code=0,
)  # fmt: skip
R8 = replace(
    flow("r8", "f8", "a2", "10.0.1.12", "10.0.2.30", 0, protocol=1, action="deny", rule="no-ping",
         start=T0 + 170, end=T0 + 171, pkts=(2, 0), nbytes=(168, 0), reason="idle"),
    src_port=0, icmp_type=8, icmp_code=0,
)  # fmt: skip

# Two VM-Series firewalls; their records come from the PAN-OS log intake.
FW1, FW2 = "007951000012345", "007951000067890"


def panos_id(serial: str, sequence_number: int) -> str:
    """The same log always gets the same id. PAN-OS numbers each log type on its own, so a
    traffic log and a threat log of one firewall may share a sequence number; the intake puts
    the type in the id (gwlb_fleet.panos.panlogs), these ids leave it out on purpose: the
    questions must keep the kinds apart even when the ids collide."""
    return f"{serial}-{sequence_number}"


def panos_flow(
    serial: str,
    sequence_number: int,
    session: int,
    src: str,
    dst: str,
    dport: int,
    *,
    start: float,
    end: float,
    pkts: tuple[int, int],
    nbytes: tuple[int, int],
    protocol: int = 6,
    action: Action = "allow",
    rule: str = "allow-web",
    application: str = "ssl",
    session_end_reason: str = "tcp-fin",
) -> FlowRecord:
    """As the intake maps a traffic log: ICMP has ports 0 and, PAN-OS logging no ICMP type or
    code, none of those either."""
    return FlowRecord(
        record_id=panos_id(serial, sequence_number),
        flow_id=f"{serial}-session-{session}",
        appliance_id=serial,
        start=start,
        end=end,
        emitted=end + 2.0,
        reason="fin",
        protocol=protocol,
        src_ip=src,
        src_port=0 if protocol == 1 else 51000,
        dst_ip=dst,
        dst_port=dport,
        direction="unknown",
        action=action,
        rule=rule,
        stage="panos",
        packets_fwd=pkts[0],
        bytes_fwd=nbytes[0],
        packets_rev=pkts[1],
        bytes_rev=nbytes[1],
        tcp_flags_fwd=0,
        tcp_flags_rev=0,
        gwlb_ip="",
        vni=0,
        serial=serial,
        sequence_number=sequence_number,
        application=application,
        session_end_reason=session_end_reason,
    )


P1 = panos_flow(FW1, 5001, 11, "10.0.1.20", "10.0.2.20", 443, start=T0 + 100, end=T0 + 130,
                pkts=(6, 5), nbytes=(700, 5200))  # fmt: skip
P2 = panos_flow(FW2, 7001, 21, "10.0.1.21", "10.0.2.30", 22, start=T0 + 140, end=T0 + 140,
                pkts=(1, 0), nbytes=(74, 0), action="deny", rule="no-ssh", application="incomplete",
                session_end_reason="policy-deny")  # fmt: skip
P3 = panos_flow(FW1, 5002, 12, "10.0.1.20", "10.0.2.20", 0, start=T0 + 150, end=T0 + 153, pkts=(4, 4),
                nbytes=(336, 336), protocol=1, application="ping", session_end_reason="aged-out")  # fmt: skip
P_OLD = panos_flow(FW2, 6999, 20, "10.0.1.21", "10.0.2.20", 443, start=T0 - 7200, end=T0 - 7100,
                   pkts=(1, 1), nbytes=(60, 60))  # fmt: skip


def threat(
    serial: str,
    sequence_number: int,
    src: str,
    dst: str,
    dport: int,
    action: str,
    threat_id: int,
    name: str,
    category: str,
    severity: Severity,
    at: float,
) -> ThreatRecord:
    return ThreatRecord(
        record_id=panos_id(serial, sequence_number),
        appliance_id=serial,
        serial=serial,
        sequence_number=sequence_number,
        time=at,
        emitted=at + 2.0,
        protocol=6 if dport != 53 else 17,
        src_ip=src,
        src_port=52000,
        dst_ip=dst,
        dst_port=dport,
        action=action,
        rule="allow-web",
        application="web-browsing",
        threat_id=threat_id,
        threat_name=name,
        threat_category=category,
        severity=severity,
        threat_direction="client-to-server",
        session_id=30 + sequence_number % 100,
    )


LOG4J = (91991, "Apache Log4j Remote Code Execution Vulnerability", "vulnerability", "critical")
T1 = threat(FW1, 5001, "10.0.1.20", "10.0.2.20", 80, "reset-both", *LOG4J, at=T0 + 200)  # type: ignore[arg-type]
T2 = threat(FW1, 5002, "10.0.1.20", "10.0.2.21", 443, "drop", 86237, "Cobalt Strike Beacon Detection",
            "spyware", "high", at=T0 + 210)  # fmt: skip
T3 = threat(FW2, 7001, "10.0.1.21", "8.8.4.4", 53, "sinkhole", 109000001, "Suspicious DNS Query",
            "spyware", "medium", at=T0 + 220)  # fmt: skip
T4 = threat(FW2, 7002, "10.0.1.22", "10.0.2.20", 80, "alert", *LOG4J, at=T0 + 230)  # type: ignore[arg-type]
T5 = threat(FW1, 5003, "10.0.1.21", "10.0.2.20", 80, "block-url", 9999, "URL filtering", "url",
            "informational", at=T0 + 240)  # fmt: skip
T6 = threat(FW2, 7003, "10.0.1.20", "10.0.2.22", 445, "reset-client", 40004, "SMB Brute Force Attempt",
            "vulnerability", "high", at=T0 + 250)  # fmt: skip
T7 = threat(FW1, 5004, "10.0.1.22", "10.0.2.20", 80, "allow", 30520, "HTTP OPTIONS Method",
            "vulnerability", "low", at=T0 + 260)  # fmt: skip
T_OLD = replace(T2, record_id=panos_id(FW1, 4000), sequence_number=4000, time=T0 - 7200)


LOSSES = {  # as the agent's shipper reports them (kind = loss)
    "a1": [
        LossReport("l1", "a1", 500, "spool_full", T0 + 100.25, T0 + 200.5),
        LossReport("l3", "a1", 7, "sink_failed", T0 + 300, T0 + 310),
    ],
    "a2": [LossReport("l2", "a2", 20, "spool_full", T0 + 150, T0 + 160)],
}

EVENTS = [
    AuditEvent(
        "e1",
        T0 + 1,
        "scale",
        "scale_out",
        "ok",
        "active flows 9100 > 8000 for 3 periods",
        correlation_id="alarm-1",
        scaling_group="asg-1",
        inputs={"active_flows": 9100},
    ),
    AuditEvent(
        "e2",
        T0 + 2,
        "lifecycle",
        "register",
        "ok",
        "appliance ready: health endpoint passes",
        correlation_id="hook-1",
        scaling_group="asg-1",
        instance_id="i-a2",
    ),
    AuditEvent(
        "e3",
        T0 + 3,
        "lifecycle",
        "drain",
        "ok",
        "scale-in victim: fewest live flows (12)",
        correlation_id="hook-2",
        scaling_group="asg-1",
        instance_id="i-a1",
    ),
    AuditEvent(
        "e4",
        T0 + 4,
        "lifecycle",
        "deactivate_licence",
        "failed",
        "licence server timed out",
        correlation_id="hook-2",
        scaling_group="asg-1",
        instance_id="i-a1",
        detail="will retry",
    ),
]


def _group(appliance: str, logs: Sequence[bytes]) -> bytes:
    instance, zone = APPLIANCES[appliance]
    return loggroup.encode_log_group(
        logs, topic=appliance, source=instance, tags=[("instance_id", instance), ("zone", zone)]
    )


def put_flows(sls: Sls, appliance: str, records: Sequence[FlowRecord]) -> None:
    logs = [loggroup.encode_log(r.log_time(), r.log_contents()) for r in records]
    sls.put_log_group(FLOW_LOGSTORE, _group(appliance, logs))


def seed(sls: Sls) -> None:
    """Everything, with duplicates as at-least-once shipping makes them."""
    a1_batch = [R1, R2, R4]
    put_flows(sls, "a1", a1_batch)
    put_flows(sls, "a1", a1_batch)  # resent: the first answer was lost
    put_flows(sls, "a1", [R6, R_OLD])
    put_flows(sls, "a2", [R3, R5])
    put_flows(sls, "a2", [R5])  # one record again, in another batch
    for appliance, reports in LOSSES.items():
        logs = [loggroup.encode_log(r.log_time(), r.log_contents()) for r in reports]
        sls.put_log_group(FLOW_LOGSTORE, _group(appliance, logs))
    first = LOSSES["a1"][0]
    resent = loggroup.encode_log(first.log_time(), first.log_contents())
    sls.put_log_group(FLOW_LOGSTORE, _group("a1", [resent]))
    audit_logs = [loggroup.encode_log(e.log_time(), e.log_contents()) for e in EVENTS]
    sls.put_log_group(AUDIT_LOGSTORE, loggroup.encode_log_group(audit_logs, topic="gwlb-fleet"))
    sls.put_log_group(AUDIT_LOGSTORE, loggroup.encode_log_group(audit_logs[1:2], topic="gwlb-fleet"))


def put_panos(sls: Sls, records: Sequence[FlowRecord | ThreatRecord]) -> None:
    logs = [loggroup.encode_log(r.log_time(), r.log_contents()) for r in records]
    sls.put_log_group(FLOW_LOGSTORE, loggroup.encode_log_group(logs, topic="panos"))


def resent(record: FlowRecord | ThreatRecord) -> FlowRecord | ThreatRecord:
    """The same log sent again by the firewall: the same record_id, written later."""
    return replace(record, emitted=record.emitted + 30)


def seed_vmseries(sls: Sls) -> None:
    """The agents' ICMP flows, and two VM-Series firewalls' traffic and threat logs, some twice."""
    put_flows(sls, "a1", [R7])
    put_flows(sls, "a2", [R8])
    put_panos(sls, [P1, P2, P3, P_OLD, T1, T2, T3, T4, T5, T6, T7, T_OLD])
    put_panos(sls, [resent(P1), resent(P3), resent(T1), resent(T6)])


N = "null"  # how SLS answers for a key the record does not have


def _t(offset: float) -> str:
    """An epoch-seconds double as SLS returns it."""
    return str(float(T0 + offset))


def _rows(columns: str, *rows: tuple[object, ...]) -> list[dict[str, str]]:
    names = columns.split()
    assert all(len(row) == len(names) for row in rows)
    return [dict(zip(names, (str(value) for value in row), strict=True)) for row in rows]


# What each audit query answers over seed + seed_vmseries, in the window; numbers as SLS returns
# them (text). Duplicates (resent batches, logs the firewall sent again) are counted once.
EXPECTED: dict[str, list[dict[str, str]]] = {
    "conversations": _rows(
        "src_ip dst_ip dst_port protocol icmp_type icmp_code action appliance_id serial instance_id"
        " flows packets bytes first_seen last_seen",
        ("10.0.1.10", "10.0.2.20", 443, 6, N, N, "allow", "a1", N, "i-a1", 1, 27, 12500, _t(0), _t(75)),
        ("10.0.1.20", "10.0.2.20", 443, 6, N, N, "allow", FW1, FW1, N, 1, 11, 5900, _t(100), _t(130)),
        ("10.0.1.11", "10.0.2.20", 443, 6, N, N, "allow", "a2", N, "i-a2", 1, 6, 900, _t(5), _t(20)),
        ("10.0.1.20", "10.0.2.20", 0, 1, N, N, "allow", FW1, FW1, N, 1, 8, 672, _t(150), _t(153)),
        ("10.0.1.10", "10.0.2.20", 0, 1, 8, 0, "allow", "a1", N, "i-a1", 1, 6, 504, _t(160), _t(162)),
        ("10.0.1.10", "8.8.8.8", 53, 17, N, N, "allow", "a1", N, "i-a1", 1, 2, 190, _t(50), _t(51)),
        ("10.0.1.12", "10.0.2.30", 0, 1, 8, 0, "deny", "a2", N, "i-a2", 1, 2, 168, _t(170), _t(171)),
        ("10.0.1.10", "10.0.2.30", 22, 6, N, N, "deny", "a1", N, "i-a1", 1, 2, 120, _t(30), _t(31)),
        ("10.0.1.21", "10.0.2.30", 22, 6, N, N, "deny", FW2, FW2, N, 1, 1, 74, _t(140), _t(140)),
        ("10.0.1.12", "10.0.2.30", 22, 6, N, N, "deny", "a2", N, "i-a2", 1, 1, 60, _t(40), _t(40)),
    ),
    "denied": _rows(
        "rule stage src_ip dst_ip dst_port protocol icmp_type icmp_code appliance_id serial"
        " flows packets first_seen last_seen",
        ("no-ssh", "l3l4", "10.0.1.10", "10.0.2.30", 22, 6, N, N, "a1", N, 1, 2, _t(30), _t(31)),
        ("no-ping", "l3l4", "10.0.1.12", "10.0.2.30", 0, 1, 8, 0, "a2", N, 1, 2, _t(170), _t(171)),
        ("no-ssh", "l3l4", "10.0.1.12", "10.0.2.30", 22, 6, N, N, "a2", N, 1, 1, _t(40), _t(40)),
        ("no-ssh", "panos", "10.0.1.21", "10.0.2.30", 22, 6, N, N, FW2, FW2, 1, 1, _t(140), _t(140)),
    ),
    "appliance-traffic": _rows(
        "appliance_id serial instance_id zone flows denied_flows packets bytes_fwd bytes_rev bytes records",
        ("a1", N, "i-a1", "zone-h", 4, 1, 37, 1942, 11372, 13314, 5),
        (FW1, FW1, N, N, 2, 0, 19, 1036, 5536, 6572, 2),
        ("a2", N, "i-a2", "zone-i", 3, 2, 9, 528, 600, 1128, 3),
        (FW2, FW2, N, N, 1, 1, 1, 74, 0, 74, 1),
    ),
    "threats-blocked-by-severity": _rows(
        "severity threats signatures sources firewalls first_seen last_seen",
        ("critical", 1, 1, 1, 1, _t(200), _t(200)),  # T1, sent twice
        ("high", 2, 2, 1, 2, _t(210), _t(250)),  # T2, T6 (sent twice)
        ("medium", 1, 1, 1, 1, _t(220), _t(220)),  # T3
        ("informational", 1, 1, 1, 1, _t(240), _t(240)),  # T5; T4 and T7 were not blocked
    ),
    "threats-blocked-by-source": _rows(
        "src_ip threats critical high medium low informational signatures targets firewalls"
        " first_seen last_seen",
        ("10.0.1.20", 3, 1, 2, 0, 0, 0, 3, 3, 2, _t(200), _t(250)),  # T1, T2, T6
        ("10.0.1.21", 2, 0, 0, 1, 0, 1, 2, 2, 2, _t(220), _t(240)),  # T3, T5
    ),
    "threats-blocked-by-firewall": _rows(
        "serial threats critical high medium low informational sources signatures first_seen last_seen",
        (FW1, 3, 1, 1, 0, 0, 1, 2, 3, _t(200), _t(240)),  # T1, T2, T5
        (FW2, 2, 0, 1, 1, 0, 0, 2, 2, _t(220), _t(250)),  # T3, T6
    ),
    "threats": _rows(
        "threat_name threat_id threat_category severity threats blocked not_blocked sources firewalls"
        " first_seen last_seen",
        (LOG4J[1], 91991, "vulnerability", "critical", 2, 1, 1, 2, 2, _t(200), _t(230)),  # T1, T4
        ("SMB Brute Force Attempt", 40004, "vulnerability", "high", 1, 1, 0, 1, 1, _t(250), _t(250)),
        ("Cobalt Strike Beacon Detection", 86237, "spyware", "high", 1, 1, 0, 1, 1, _t(210), _t(210)),
        ("Suspicious DNS Query", 109000001, "spyware", "medium", 1, 1, 0, 1, 1, _t(220), _t(220)),
        ("HTTP OPTIONS Method", 30520, "vulnerability", "low", 1, 0, 1, 1, 1, _t(260), _t(260)),
        ("URL filtering", 9999, "url", "informational", 1, 1, 0, 1, 1, _t(240), _t(240)),
    ),
    "lost-records": [
        {
            "appliance_id": "a1",
            "loss_reason": "spool_full",
            "records_lost": "500",
            "reports": "1",
            "lost_from": str(T0 + 100.25),
            "lost_until": str(T0 + 200.5),
        },
        {
            "appliance_id": "a2",
            "loss_reason": "spool_full",
            "records_lost": "20",
            "reports": "1",
            "lost_from": str(float(T0 + 150)),
            "lost_until": str(float(T0 + 160)),
        },
        {
            "appliance_id": "a1",
            "loss_reason": "sink_failed",
            "records_lost": "7",
            "reports": "1",
            "lost_from": str(float(T0 + 300)),
            "lost_until": str(float(T0 + 310)),
        },
    ],
    "control-plane": [
        {
            "event_time": str(float(e.time)),
            "function": e.function,
            "action": e.action,
            "outcome": e.outcome,
            "scaling_group": e.scaling_group,
            "instance_id": e.instance_id or "null",
            "reason": e.reason,
            "correlation_id": e.correlation_id,
        }
        for e in EVENTS
    ],
    "control-plane-summary": [
        {
            "function": "lifecycle",
            "action": "deactivate_licence",
            "outcome": "failed",
            "events": "1",
            "instances": "1",
            "first_at": str(float(T0 + 4)),
            "last_at": str(float(T0 + 4)),
        },
        {
            "function": "lifecycle",
            "action": "drain",
            "outcome": "ok",
            "events": "1",
            "instances": "1",
            "first_at": str(float(T0 + 3)),
            "last_at": str(float(T0 + 3)),
        },
        {
            "function": "lifecycle",
            "action": "register",
            "outcome": "ok",
            "events": "1",
            "instances": "1",
            "first_at": str(float(T0 + 2)),
            "last_at": str(float(T0 + 2)),
        },
        {
            "function": "scale",
            "action": "scale_out",
            "outcome": "ok",
            "events": "1",
            "instances": "0",
            "first_at": str(float(T0 + 1)),
            "last_at": str(float(T0 + 1)),
        },
    ],
}
