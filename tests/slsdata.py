"""Seed data for the SLS tests: flow records (with duplicates), loss reports and audit events,
and what each audit query must answer over them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from gwlb_fleet.sls import loggroup
from gwlb_fleet.sls.auditlog import AuditEvent
from gwlb_fleet.sls.client import Sls
from gwlb_fleet.sls.flowrecord import Action, EndReason, FlowRecord, LossReport
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


# What each audit query answers over the seed, in the window; numbers as SLS returns them (text).
EXPECTED: dict[str, list[dict[str, str]]] = {
    "conversations": [
        {
            "src_ip": "10.0.1.10",
            "dst_ip": "10.0.2.20",
            "dst_port": "443",
            "protocol": "6",
            "action": "allow",
            "appliance_id": "a1",
            "instance_id": "i-a1",
            "flows": "1",
            "packets": "27",
            "bytes": "12500",
            "first_seen": str(float(T0)),
            "last_seen": str(float(T0 + 75)),
        },
        {
            "src_ip": "10.0.1.11",
            "dst_ip": "10.0.2.20",
            "dst_port": "443",
            "protocol": "6",
            "action": "allow",
            "appliance_id": "a2",
            "instance_id": "i-a2",
            "flows": "1",
            "packets": "6",
            "bytes": "900",
            "first_seen": str(float(T0 + 5)),
            "last_seen": str(float(T0 + 20)),
        },
        {
            "src_ip": "10.0.1.10",
            "dst_ip": "8.8.8.8",
            "dst_port": "53",
            "protocol": "17",
            "action": "allow",
            "appliance_id": "a1",
            "instance_id": "i-a1",
            "flows": "1",
            "packets": "2",
            "bytes": "190",
            "first_seen": str(float(T0 + 50)),
            "last_seen": str(float(T0 + 51)),
        },
        {
            "src_ip": "10.0.1.10",
            "dst_ip": "10.0.2.30",
            "dst_port": "22",
            "protocol": "6",
            "action": "deny",
            "appliance_id": "a1",
            "instance_id": "i-a1",
            "flows": "1",
            "packets": "2",
            "bytes": "120",
            "first_seen": str(float(T0 + 30)),
            "last_seen": str(float(T0 + 31)),
        },
        {
            "src_ip": "10.0.1.12",
            "dst_ip": "10.0.2.30",
            "dst_port": "22",
            "protocol": "6",
            "action": "deny",
            "appliance_id": "a2",
            "instance_id": "i-a2",
            "flows": "1",
            "packets": "1",
            "bytes": "60",
            "first_seen": str(float(T0 + 40)),
            "last_seen": str(float(T0 + 40)),
        },
    ],
    "denied": [
        {
            "rule": "no-ssh",
            "stage": "l3l4",
            "src_ip": "10.0.1.10",
            "dst_ip": "10.0.2.30",
            "dst_port": "22",
            "protocol": "6",
            "appliance_id": "a1",
            "flows": "1",
            "packets": "2",
            "first_seen": str(float(T0 + 30)),
            "last_seen": str(float(T0 + 31)),
        },
        {
            "rule": "no-ssh",
            "stage": "l3l4",
            "src_ip": "10.0.1.12",
            "dst_ip": "10.0.2.30",
            "dst_port": "22",
            "protocol": "6",
            "appliance_id": "a2",
            "flows": "1",
            "packets": "1",
            "first_seen": str(float(T0 + 40)),
            "last_seen": str(float(T0 + 40)),
        },
    ],
    "appliance-traffic": [
        {
            "appliance_id": "a1",
            "instance_id": "i-a1",
            "zone": "zone-h",
            "flows": "3",
            "denied_flows": "1",
            "packets": "31",
            "bytes_fwd": "1690",
            "bytes_rev": "11120",
            "bytes": "12810",
            "records": "4",
        },
        {
            "appliance_id": "a2",
            "instance_id": "i-a2",
            "zone": "zone-i",
            "flows": "2",
            "denied_flows": "1",
            "packets": "7",
            "bytes_fwd": "360",
            "bytes_rev": "600",
            "bytes": "960",
            "records": "2",
        },
    ],
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
