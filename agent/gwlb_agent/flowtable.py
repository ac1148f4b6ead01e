"""The flow table: one entry per inner 5-tuple, both directions one flow.

Lookups are by raw key bytes (addresses, then ports) in one dict per IP protocol; a flow is
entered under its forward and its reverse key, so that a lookup needs no canonical ordering.
Expiry runs from a timing wheel of one-second buckets, so that the packet path only stamps
``last_seen`` and never scans the table; a bucket is worked off a bounded number of flows at
a time so that expiring a million flows never stalls forwarding.

Records are emitted on FIN (both ways) or RST after a short linger that catches the final ACKs,
on idle timeout (TCP 350 s, others 120 s: the GWLB's own), every ``export_interval`` seconds for
long flows, and for every flow at shutdown.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from socket import inet_ntoa
from typing import Protocol

from gwlb_agent import BOOT_ID
from gwlb_fleet import geneve
from gwlb_fleet.sls.flowrecord import Direction, EndReason, FlowRecord

TCP, UDP, ICMP = 6, 17, 1
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10


@dataclass(frozen=True, slots=True)
class Timeouts:
    tcp_idle: float = 350.0
    other_idle: float = 120.0
    export_interval: float = 60.0
    close_linger: float = 2.0
    # A denied flow never gets an answer, so it never closes: without a short timeout of its
    # own, the audit would hear of a deny only after the TCP idle timeout.
    denied_idle: float = 10.0

    def idle_limit(self, flow: Flow) -> float:
        if not flow.allow:
            return self.denied_idle
        return self.tcp_idle if flow.protocol == TCP else self.other_idle


class Flow:
    """One flow. Counters are since the flow's previous record (records carry deltas)."""

    __slots__ = (
        "allow",
        "bucket",
        "bytes_fwd",
        "bytes_rev",
        "closing_at",
        "dead",
        "direction",
        "end_reason",
        "fin_fwd",
        "fin_rev",
        "first_seen",
        "flags_fwd",
        "flags_rev",
        "gwlb_ip",
        "icmp_type_code",
        "key_fwd",
        "key_rev",
        "last_seen",
        "next_export",
        "options",
        "packets_fwd",
        "packets_rev",
        "policy_generation",
        "protocol",
        "records",
        "rule",
        "seq",
        "stage",
        "vni",
    )

    def __init__(self, protocol: int, key_fwd: bytes, key_rev: bytes, now: float) -> None:
        self.protocol = protocol
        self.key_fwd = key_fwd
        self.key_rev = key_rev
        self.first_seen = now
        self.last_seen = now
        self.packets_fwd = self.bytes_fwd = self.packets_rev = self.bytes_rev = 0
        self.flags_fwd = self.flags_rev = 0
        self.fin_fwd = self.fin_rev = False
        self.closing_at = 0.0
        self.end_reason: EndReason = "idle"
        self.allow = True
        self.rule = ""
        self.stage = ""
        self.policy_generation = -1
        self.direction: Direction = "unknown"
        self.options = b""
        self.gwlb_ip = b"\x00\x00\x00\x00"
        self.vni = 0
        # ICMP: (type << 8) | code of the flow's first packet, -1 before it is known. The key
        # holds the echo identifier instead (it tells echo flows apart): never a port.
        self.icmp_type_code = -1
        self.next_export = 0.0
        self.bucket = 0
        self.records = 0
        self.seq = 0
        self.dead = False

    @property
    def src_ip(self) -> str:
        return str(ipaddress.IPv4Address(self.key_fwd[0:4]))

    @property
    def dst_ip(self) -> str:
        return str(ipaddress.IPv4Address(self.key_fwd[4:8]))

    @property
    def src_port(self) -> int:
        return int.from_bytes(self.key_fwd[8:10], "big")

    @property
    def dst_port(self) -> int:
        return int.from_bytes(self.key_fwd[10:12], "big")


def reverse_key(key: bytes) -> bytes:
    """The key of the other direction. Keys are 4+4 address bytes, then 2+2 port bytes."""
    return key[4:8] + key[0:4] + key[10:12] + key[8:10]


class OtherPath(Protocol):
    """Another data path carrying some of the flows' packets (the XDP fast path): its counts are
    merged into a flow before the table judges it idle or writes its record."""

    def merge_into(self, flow: Flow) -> None: ...

    def finished(self, flow: Flow) -> None: ...


# What the packet loop hands over when a flow ends or reports: a plain tuple, a fraction of a
# microsecond to make, so that expiring ten thousand flows in a second does not stall forwarding.
# The export thread turns it into a FlowRecord (``FlowRecordBuilder``), off the packet path.
FlowEnd = tuple[
    int, int, float, float, float, str, int, bytes, str, bool, str, str,
    int, int, int, int, int, int, bytes, int, bytes, int,
]  # fmt: skip
FlowEndSink = Callable[[FlowEnd], None]


class FlowTable:
    def __init__(
        self,
        on_flow_end: FlowEndSink,
        timeouts: Timeouts | None = None,
        max_flows: int = 2_000_000,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.on_flow_end = on_flow_end
        self.timeouts = timeouts or Timeouts()
        self.max_flows = max_flows
        self._clock = clock
        self._wall_clock = wall_clock
        # One dict per protocol, keyed by forward and reverse key bytes.
        self.by_protocol: dict[int, dict[bytes, Flow]] = {TCP: {}, UDP: {}, ICMP: {}}
        self.count = 0
        self._wheel: dict[int, list[Flow]] = {}
        self._wheel_second = int(clock())
        self._next_seq = 0
        self._wall_offset = wall_clock() - clock()
        self.records_emitted = 0
        self.other_path: OtherPath | None = None

    # --- the packet path ------------------------------------------------------------------

    def table(self, protocol: int) -> dict[bytes, Flow]:
        flows = self.by_protocol.get(protocol)
        if flows is None:
            flows = self.by_protocol[protocol] = {}
        return flows

    def add(self, protocol: int, key_fwd: bytes, key_rev: bytes, now: float) -> Flow | None:
        """A new flow, or None when the table is full."""
        if self.count >= self.max_flows:
            return None
        flow = Flow(protocol, key_fwd, key_rev, now)
        self._next_seq += 1
        flow.seq = self._next_seq
        flow.next_export = now + self.timeouts.export_interval
        flows = self.table(protocol)
        flows[key_fwd] = flow
        flows[key_rev] = flow
        self.count += 1
        self._schedule(flow, self._due(flow))
        return flow

    def note_tcp_close(self, flow: Flow, flags: int, reverse: bool, now: float) -> None:
        """Called for packets with FIN or RST: start the linger that ends in the record."""
        if flags & RST:
            flow.end_reason = "rst"
        else:
            if reverse:
                flow.fin_rev = True
            else:
                flow.fin_fwd = True
            if not (flow.fin_fwd and flow.fin_rev):
                return
            flow.end_reason = "fin"
        if not flow.closing_at:
            flow.closing_at = now + self.timeouts.close_linger
            self._schedule(flow, flow.closing_at)

    def reschedule(self, flow: Flow) -> None:
        """The flow's timeouts changed (its verdict did): move it to its new wheel bucket."""
        self._schedule(flow, self._due(flow))

    def replace(self, flow: Flow, now: float) -> None:
        """A closing flow's 5-tuple is reused by a new connection: finish the old one now."""
        self._finish(flow, flow.end_reason if flow.closing_at else "replaced", now)

    # --- expiry -----------------------------------------------------------------------------

    def expire(self, now: float, budget: int = 2000) -> int:
        """Work off due wheel buckets, at most ``budget`` flows. Returns flows examined."""
        self._wall_offset = self._wall_clock() - self._clock()  # follows clock adjustments
        examined = 0
        target = int(now)
        while self._wheel_second <= target and examined < budget:
            bucket = self._wheel.get(self._wheel_second)
            if not bucket:
                self._wheel.pop(self._wheel_second, None)
                self._wheel_second += 1
                continue
            while bucket and examined < budget:
                flow = bucket.pop()
                examined += 1
                if flow.dead or flow.bucket != self._wheel_second:
                    continue  # finished already, or rescheduled to another bucket
                self._examine(flow, now)
        return examined

    def _examine(self, flow: Flow, now: float) -> None:
        if self.other_path is not None:
            self.other_path.merge_into(flow)
        if flow.closing_at and now >= flow.closing_at:
            self._finish(flow, flow.end_reason, now)
            return
        if now - flow.last_seen >= self.timeouts.idle_limit(flow):
            self._finish(flow, "idle", now)
            return
        if now >= flow.next_export:
            if flow.packets_fwd or flow.packets_rev:
                self._emit(flow, "interval", now)
            flow.next_export = now + self.timeouts.export_interval
        self._schedule(flow, self._due(flow))

    def _due(self, flow: Flow) -> float:
        due = min(flow.last_seen + self.timeouts.idle_limit(flow), flow.next_export)
        if flow.closing_at:
            due = min(due, flow.closing_at)
        return due

    def _schedule(self, flow: Flow, due: float) -> None:
        # Never behind the wheel's hand, or the flow would wait for a bucket already passed.
        second = max(int(due) + 1, self._wheel_second)
        flow.bucket = second
        bucket = self._wheel.get(second)
        if bucket is None:
            self._wheel[second] = [flow]
        else:
            bucket.append(flow)

    def _finish(self, flow: Flow, reason: EndReason, now: float) -> None:
        if flow.dead:
            return
        flow.dead = True
        flows = self.table(flow.protocol)
        if flows.get(flow.key_fwd) is flow:
            del flows[flow.key_fwd]
        if flows.get(flow.key_rev) is flow:
            del flows[flow.key_rev]
        self.count -= 1
        if self.other_path is not None:
            self.other_path.merge_into(flow)
            self.other_path.finished(flow)
        self._emit(flow, reason, now)

    def flush_all(self, reason: EndReason = "shutdown") -> int:
        """Finish every flow (agent stopping). Returns the number of flows finished."""
        now = self._clock()
        flows = list(self.flows())
        for flow in flows:
            self._finish(flow, flow.end_reason if flow.closing_at else reason, now)
        self._wheel.clear()
        return len(flows)

    def flows(self) -> Iterator[Flow]:
        for flows in self.by_protocol.values():
            for key, flow in flows.items():
                if key is flow.key_fwd or key == flow.key_fwd:
                    yield flow

    # --- records ------------------------------------------------------------------------------

    def _emit(self, flow: Flow, reason: EndReason, now: float) -> None:
        offset = self._wall_offset
        self.on_flow_end((
            flow.seq, flow.records, flow.first_seen + offset, flow.last_seen + offset, now + offset,
            reason, flow.protocol, flow.key_fwd, flow.direction, flow.allow, flow.rule, flow.stage,
            flow.packets_fwd, flow.bytes_fwd, flow.packets_rev, flow.bytes_rev,
            flow.flags_fwd, flow.flags_rev, flow.gwlb_ip, flow.vni, flow.options, flow.icmp_type_code,
        ))  # fmt: skip
        self.records_emitted += 1
        flow.records += 1
        flow.packets_fwd = flow.bytes_fwd = flow.packets_rev = flow.bytes_rev = 0


class FlowRecordBuilder:
    """Turns the packet loop's FlowEnd tuples into FlowRecords, in the export thread."""

    def __init__(self, appliance_id: str, zone: str = "") -> None:
        self.appliance_id = appliance_id
        self.zone = zone

    def __call__(self, end: FlowEnd) -> FlowRecord:
        (seq, index, first, last, emitted, reason, protocol, key, direction, allow, rule, stage,
         packets_fwd, bytes_fwd, packets_rev, bytes_rev, flags_fwd, flags_rev, gwlb_ip, vni,
         options, icmp_type_code) = end  # fmt: skip
        metadata = geneve.flow_metadata(options)
        flow_id = f"{BOOT_ID}-{seq:x}"
        # ICMP has no ports: the key's "ports" are the echo identifier or the type and code.
        has_ports = protocol != ICMP
        icmp_known = not has_ports and icmp_type_code >= 0
        return FlowRecord(
            record_id=f"{flow_id}-{index}",
            flow_id=flow_id,
            appliance_id=self.appliance_id,
            start=round(first, 6),
            end=round(last, 6),
            emitted=round(emitted, 6),
            reason=reason,  # type: ignore[arg-type]
            protocol=protocol,
            src_ip=inet_ntoa(key[0:4]),
            src_port=(key[8] << 8) | key[9] if has_ports else 0,
            dst_ip=inet_ntoa(key[4:8]),
            dst_port=(key[10] << 8) | key[11] if has_ports else 0,
            direction=direction,  # type: ignore[arg-type]
            action="allow" if allow else "deny",
            rule=rule,
            stage=stage,
            packets_fwd=packets_fwd,
            bytes_fwd=bytes_fwd,
            packets_rev=packets_rev,
            bytes_rev=bytes_rev,
            tcp_flags_fwd=flags_fwd,
            tcp_flags_rev=flags_rev,
            gwlb_ip=inet_ntoa(gwlb_ip),
            vni=vni,
            endpoint_id=metadata.endpoint_id,
            attachment_id=metadata.attachment_id,
            flow_cookie=metadata.flow_cookie,
            geneve_options=options.hex() if metadata.layout != "aws" else "",
            zone=self.zone,
            icmp_type=icmp_type_code >> 8 if icmp_known else None,
            icmp_code=icmp_type_code & 0xFF if icmp_known else None,
        )
