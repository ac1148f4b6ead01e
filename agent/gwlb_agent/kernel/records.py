"""Kernel-mode flow records: the GWLB identity the tun path saw, joined to what the kernel did.

In tun mode the kernel decides (nftables, optionally Suricata) and conntrack counts, but only the
agent saw the Geneve header. The tun data path therefore tells ``FlowIdentities`` the identity of
each inner flow it hands to the kernel::

    key = flow_key(inner_packet)             # None for non-first fragments and non-IPv4
    if key is not None:
        identities.remember(key, GwlbIdentity(gwlb_ip=outer_src4, vni=vni, options=raw_options))

Call it for a flow's first packet, whenever its Geneve header changes and once per generation of
the tun path's table, and ``rotate`` when that table turns over (calling ``remember`` for every
packet is correct, it only costs a lock). The record joiner (``KernelFlowRecords``) looks the
identity up by the conntrack or NFLOG 5-tuple, either direction. Keys use the inline flow table's
layout (``gwlb_agent.flowtable``), so that both modes key a flow the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socket import inet_ntoa
from typing import TYPE_CHECKING, Literal

from gwlb_agent import BOOT_ID
from gwlb_agent.flowtable import ICMP, TCP, UDP, reverse_key
from gwlb_fleet import geneve
from gwlb_fleet.sls.flowrecord import Action, Direction, EndReason, FlowRecord

if TYPE_CHECKING:  # the readers import this module's keys: no cycle at run time
    from gwlb_agent.kernel.conntrack import ConntrackEvent
    from gwlb_agent.kernel.nflog import Verdict
    from gwlb_agent.kernel.suricata import SuricataAlert

SCTP = 132
PORT_PROTOCOLS = frozenset({TCP, UDP, SCTP})
# ICMP messages that conntrack tracks as flows of their own (request and reply share the id).
ICMP_QUERIES = frozenset({0, 8, 13, 14, 15, 16, 17, 18})
NO_PORTS = b"\x00\x00\x00\x00"

# (IP protocol, 12 bytes: source address, destination address, source port, destination port).
# ICMP queries carry their identifier twice in the port bytes (it tells echo flows apart, and
# the reverse key of a request is then the reply's key); other ICMP carries type, code, 0, 0.
FlowKey = tuple[int, bytes]


@dataclass(frozen=True, slots=True)
class GwlbIdentity:
    """What the Geneve encapsulation said about a flow."""

    gwlb_ip: bytes  # 4 bytes: the outer source, the GWLB node that sent the flow
    vni: int
    options: bytes  # the raw Geneve options area, as received


def flow_key(packet: bytes | bytearray | memoryview) -> FlowKey | None:
    """The key of an inner IPv4 packet, or None when it has none (not IPv4, truncated, a
    fragment after the first: those carry no ports, and the first fragment keyed the flow)."""
    view = memoryview(packet)
    if len(view) < 20 or view[0] >> 4 != 4:
        return None
    header_len = (view[0] & 0x0F) * 4
    if header_len < 20 or len(view) < header_len:
        return None
    if ((view[6] & 0x1F) << 8) | view[7]:
        return None  # fragment offset > 0
    protocol = view[9]
    addresses = view[12:20].tobytes()
    l4 = view[header_len:]
    if protocol in PORT_PROTOCOLS:
        if len(l4) < 4:
            return None
        return protocol, addresses + l4[0:4].tobytes()
    if protocol == ICMP:
        if len(l4) < 8:
            return None
        if l4[0] in ICMP_QUERIES:
            ident = l4[4:6].tobytes()
            return protocol, addresses + ident + ident
        return protocol, addresses + bytes((l4[0], l4[1], 0, 0))
    return protocol, addresses + NO_PORTS


class FlowIdentities:
    """The GWLB identity of each inner flow: written by the tun data path, read by the joiner.

    An identity lives as long as the tun path keeps the flow's header: two generations, turned
    over (``rotate``) when the tun path's own table is, so that a flow idle for two periods is
    forgotten with its header, and a flow that comes back under the same 5-tuple after conntrack
    ended it still has its identity (the tun path tells it once per generation). Bounded: past
    ``max_flows`` the oldest entry is dropped and counted in ``evicted`` (its records then carry
    no GWLB identity, never a wrong one). A lock, because the packet loop writes and the record
    thread reads.
    """

    def __init__(self, max_flows: int = 2_000_000) -> None:
        if max_flows < 1:
            raise ValueError(f"FlowIdentities: max_flows must be >= 1, got {max_flows}")
        self.max_flows = max_flows
        self._current: dict[FlowKey, GwlbIdentity] = {}
        self._previous: dict[FlowKey, GwlbIdentity] = {}
        self._lock = threading.Lock()
        self.evicted = 0

    def remember(self, key: FlowKey, identity: GwlbIdentity) -> None:
        with self._lock:
            current = self._current
            if key not in current and len(current) >= self.max_flows:
                del current[next(iter(current))]
                self.evicted += 1
            current[key] = identity

    def lookup(self, key: FlowKey) -> GwlbIdentity | None:
        """The identity of the flow, whichever direction ``key`` is."""
        reverse = (key[0], reverse_key(key[1]))
        with self._lock:
            for generation in (self._current, self._previous):
                found = generation.get(key) or generation.get(reverse)
                if found is not None:
                    return found
            return None

    def rotate(self) -> None:
        """A new generation: what was not told again since the last rotation goes at the next."""
        with self._lock:
            self._previous, self._current = self._current, {}

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)


IdentityLookup = Callable[[FlowKey], GwlbIdentity | None]


# --- the join: conntrack + NFLOG verdicts + Suricata alerts + GWLB identity -> FlowRecord ------

# How long a verdict waits for conntrack to confirm its flow, and a denied flow (or a flow that
# Suricata dropped before conntrack confirmed it) stays open for more of its packets, before its
# record is written. A denied flow never gets an answer, so it never closes: the inline flow
# table's ``Timeouts.denied_idle`` for the same reason.
DENIED_IDLE = 10.0
UNCONFIRMED_TTL = 60.0
STAGE_NFTABLES = "nftables"
STAGE_SURICATA = "suricata"
EXPORT_INTERVAL = 60.0  # the inline flow table's default (Timeouts.export_interval)
# conntrack's TCP state when the flow was destroyed -> the record's reason
_TCP_END_REASONS: dict[str, EndReason] = {"TIME_WAIT": "fin", "CLOSE": "rst"}
# packets and bytes, original then reply direction: conntrack's counters of a flow
Totals = tuple[int, int, int, int]
NO_COUNTS: Totals = (0, 0, 0, 0)
SnapshotReason = Literal["interval", "shutdown"]


def _totals(event: ConntrackEvent) -> Totals:
    orig, reply = event.orig, event.reply
    return (
        orig.packets if orig else 0,
        orig.bytes if orig else 0,
        reply.packets if reply else 0,
        reply.bytes if reply else 0,
    )


@dataclass(slots=True)
class _Pending:
    """What the kernel said about a flow before (or instead of) its conntrack DESTROY."""

    first_seen: float
    last_seen: float
    action: Action = "allow"
    rule: str = ""
    stage: str = STAGE_NFTABLES
    packets: int = 0  # logged packets: only counted for flows conntrack never confirms
    bytes: int = 0
    icmp_type: int | None = None
    icmp_code: int | None = None
    confirmed: bool = False  # conntrack reported the flow NEW
    from_gwlb: bool = False  # confirmed, and the tun path told us its GWLB identity: counted active
    closed: bool = False  # TCP reached TIME_WAIT or CLOSE: no longer counted active
    alerts: list[str] = field(default_factory=list)
    # Records carry deltas (the inline mode's rule): conntrack's counters already in a record,
    # the flow's id and how many records it has had.
    reported: Totals = NO_COUNTS
    flow_id: str = ""
    records: int = 0
    missed_dumps: int = 0  # interval dumps in a row that did not show this confirmed flow
    # A closed flow's 5-tuple used again (a SYN reopening a port in TIME_WAIT): conntrack ends the
    # old flow (DESTROY) before it logs the new one's first packet, but verdicts are read first,
    # so the new flow's verdict waits here until the old one's DESTROY makes room.
    successor: _Pending | None = None


class KernelFlowRecords:
    """Joins what the kernel reports into FlowRecords of the inline mode's schema.

    - NFLOG verdicts (``add_verdicts``) say which rule allowed or denied a flow's first packet.
    - Suricata alerts (``add_alerts``): a "blocked" alert makes the flow denied by stage
      "suricata" with the signature as its rule; "allowed" alerts go into ``alerts``.
    - conntrack (``add_events``): DESTROY gives counters, times and TCP state, and ends the flow
      with a record. A flow that conntrack never confirmed (dropped by the ruleset or by Suricata
      on its first packet) exists only in NFLOG or the alerts: ``expire`` writes its record,
      action deny, once no packet of it was logged for ``denied_idle`` seconds.
    - dumps of the conntrack table (``add_snapshot``): conntrack reports counters only when a
      flow ends, so every ``export_interval`` (``snapshot_due``) the counts of long flows since
      their previous record, and at the agent's stop a last record of every flow still open.
      ``set_baseline`` takes the counters of the flows conntrack held when the agent started:
      an agent before this one recorded them up to its stop.
    - the GWLB identity comes from ``identities`` (the tun path's ``FlowIdentities``).

    Not thread-safe: one thread reads the three sources and calls these methods.
    """

    def __init__(
        self,
        appliance_id: str,
        identities: FlowIdentities,
        zone: str = "",
        denied_idle: float = DENIED_IDLE,
        unconfirmed_ttl: float = UNCONFIRMED_TTL,
        max_pending: int = 1_000_000,
        direction_of: Callable[[int, int], Direction] | None = None,
        clock: Callable[[], float] = time.time,
        export_interval: float = EXPORT_INTERVAL,
    ) -> None:
        self.appliance_id = appliance_id
        self.identities = identities
        self.zone = zone
        self.denied_idle = denied_idle
        self.unconfirmed_ttl = unconfirmed_ttl
        self.max_pending = max_pending
        self.direction_of = direction_of
        self.clock = clock
        self.export_interval = export_interval
        self._next_snapshot = clock() + export_interval
        self._pending: dict[FlowKey, _Pending] = {}
        self._baseline: dict[FlowKey, Totals] = {}  # counters already recorded by an earlier agent
        self._seq = 0
        self.evicted = 0  # pending flows dropped to stay within max_pending (counted, logged)
        self.unconfirmed_dropped = 0  # allow verdicts conntrack never confirmed
        # Flows from the GWLB that conntrack holds open: what the inline mode's flow table counts
        # (flows_active, the scaling metric). Kept as a count, so that another thread may read it;
        # the agent's own connections and the health probe have no GWLB identity and are not in it.
        self.active = 0
        self.not_from_gwlb = 0  # conntrack flows with no verdict and no GWLB identity: not recorded
        # Confirmed flows two interval dumps in a row did not show: their DESTROY was lost (a
        # full event buffer); dropped, so that they neither count as active nor take room forever.
        self.lost = 0

    # --- inputs ------------------------------------------------------------------------------

    def add_verdicts(self, verdicts: Iterable[Verdict]) -> None:
        for verdict in verdicts:
            pending = self._entry(verdict.key, verdict.time)
            if pending.closed:  # the verdict of a new flow on a closed flow's 5-tuple
                pending.successor = pending.successor or _Pending(verdict.time, verdict.time)
                pending = pending.successor
            # The first logged packet's rule decided the flow (the ruleset logs a flow's first
            # packet, and a deny rule each packet it drops); a Suricata drop outranks it.
            if not pending.rule:
                pending.action, pending.rule = verdict.action, verdict.rule
            if pending.icmp_type is None:
                pending.icmp_type, pending.icmp_code = verdict.icmp_type, verdict.icmp_code
            pending.packets += 1
            pending.bytes += verdict.packet_bytes
            pending.last_seen = max(pending.last_seen, verdict.time)

    def add_alerts(self, alerts: Iterable[SuricataAlert]) -> None:
        for alert in alerts:
            pending = self._entry(alert.key, alert.time)
            pending.last_seen = max(pending.last_seen, alert.time)
            if alert.blocked and pending.stage != STAGE_SURICATA:
                pending.action, pending.rule, pending.stage = "deny", alert.rule, STAGE_SURICATA
            elif not alert.blocked and alert.rule not in pending.alerts:
                pending.alerts.append(alert.rule)

    def add_events(self, events: Iterable[ConntrackEvent]) -> list[FlowRecord]:
        records = []
        for event in events:
            if event.kind == "destroy":
                record = self._destroyed(event)
                if record is not None:
                    records.append(record)
            elif event.kind == "new":
                now = event.start_ns / 1e9 if event.start_ns else self.clock()
                pending = self._entry(event.flow_key, now)
                pending.confirmed = True
                self._count_active(pending, self.identities.lookup(event.flow_key) is not None)
            elif event.kind == "update" and event.tcp_state is not None:
                self._tcp_state_changed(event)
        return records

    def _tcp_state_changed(self, event: ConntrackEvent) -> None:
        """Closed (TIME_WAIT, CLOSE): conntrack holds the flow on for TIME_WAIT (120 s by
        default) but it carries nothing more, so the scaling metric lets it go, as the inline
        table does after its close linger. A SYN in TIME_WAIT reopens the same entry: counted
        again."""
        pending = self._find(event.flow_key)
        if pending is None:
            return
        if event.tcp_state in _TCP_END_REASONS:
            if not pending.closed:
                pending.closed = True
                self._forget(pending)
        elif pending.closed:
            pending.closed = False
            self._count_active(pending, self.identities.lookup(event.flow_key) is not None)

    def _count_active(self, pending: _Pending, from_gwlb: bool) -> None:
        if from_gwlb and not pending.from_gwlb and not pending.closed:
            pending.from_gwlb = True
            self.active += 1

    def _entry(self, key: FlowKey, now: float) -> _Pending:
        pending = self._find(key)
        if pending is None:
            if len(self._pending) >= self.max_pending:
                self._forget(self._pending.pop(next(iter(self._pending))))
                self.evicted += 1
            pending = self._pending[key] = _Pending(
                first_seen=now, last_seen=now, reported=self._baseline.pop(key, NO_COUNTS)
            )
        return pending

    def _find(self, key: FlowKey) -> _Pending | None:
        found = self._pending.get(key)
        if found is None:
            found = self._pending.get((key[0], reverse_key(key[1])))
        return found

    def _pop(self, key: FlowKey) -> _Pending | None:
        found = self._pending.pop(key, None)
        if found is None:
            found = self._pending.pop((key[0], reverse_key(key[1])), None)
        if found is not None:
            self._forget(found)
        return found

    def _forget(self, pending: _Pending) -> None:
        if pending.from_gwlb:
            pending.from_gwlb = False
            self.active -= 1

    # --- records -----------------------------------------------------------------------------

    def _destroyed(self, event: ConntrackEvent) -> FlowRecord | None:
        now = self.clock()
        recorded_before = self._baseline.pop(event.flow_key, NO_COUNTS)
        pending = self._pop(event.flow_key)
        if pending is None:  # a flow older than the agent, or whose NEW event was lost
            pending = _Pending(first_seen=now, last_seen=now, reported=recorded_before)
        elif pending.successor is not None:
            self._pending[event.flow_key] = pending.successor
        if not pending.rule and self.identities.lookup(event.flow_key) is None:
            # Neither the ruleset logged it nor did it come from the GWLB: the appliance's own
            # connection (the agent's requests to SLS, a health check). Recording those would make
            # every shipment of records the cause of another record.
            self.not_from_gwlb += 1
            return None
        start = event.start_ns / 1e9 if event.start_ns else pending.first_seen
        end = event.stop_ns / 1e9 if event.stop_ns else now
        reason: EndReason = "idle"
        if event.tcp_state is not None:
            reason = _TCP_END_REASONS.get(event.tcp_state, "idle")
        return self._counted(
            event, pending, start, end, now, reason,
            session_end=f"conntrack {event.tcp_state.lower()}" if event.tcp_state else "",
        )  # fmt: skip

    # --- long flows and the agent's stop: dumps of the table ----------------------------------

    def set_baseline(self, flows: Iterable[ConntrackEvent]) -> None:
        """The flows conntrack holds as the agent starts (a dump): their counts so far were an
        earlier agent's to record, so this agent's records of them count from here."""
        for flow in flows:
            self._baseline[flow.flow_key] = _totals(flow)

    def snapshot_due(self, now: float | None = None) -> bool:
        """Whether the next dump for the periodic records is due (then the one after is set)."""
        now = self.clock() if now is None else now
        if now < self._next_snapshot:
            return False
        self._next_snapshot = now + self.export_interval
        return True

    def add_snapshot(self, flows: Iterable[ConntrackEvent], reason: SnapshotReason) -> list[FlowRecord]:
        """Records of the flows a dump shows open: "interval", the counts since each flow's
        previous record (flows that counted nothing new get none); "shutdown", every open flow's
        last record (the agent stops, conntrack's DESTROY will reach no one). A flow keeps its
        flow_id across its records and each carries deltas, as in the inline mode. A flow the
        dump shows twice (the table changed during it) is taken once."""
        now = self.clock()
        records = []
        seen: set[FlowKey] = set()
        for flow in flows:
            key = flow.flow_key
            if key in seen:
                continue
            seen.add(key)
            shown = self._find(key)
            if shown is not None:
                shown.missed_dumps = -1  # shown: back to 0 after the sweep below
            pending = self._ours(flow, now)
            if pending is not None:
                pending.missed_dumps = -1
            if pending is None or (reason == "interval" and _totals(flow) == pending.reported):
                continue
            start = flow.start_ns / 1e9 if flow.start_ns else pending.first_seen
            records.append(self._counted(flow, pending, start, now, now, reason, session_end=""))
        if reason == "interval":
            self._sweep_lost()
        return records

    def _sweep_lost(self) -> None:
        """Confirmed flows that this dump and the one before did not show are gone from
        conntrack without a DESTROY we read (a DESTROY merely queued is read long before the next
        dump, export_interval later). Their last counts are lost: counted in ``lost``."""
        for key, pending in list(self._pending.items()):
            if not pending.confirmed:
                continue
            pending.missed_dumps += 1
            if pending.missed_dumps >= 2:
                del self._pending[key]
                self._forget(pending)
                self.lost += 1

    def _ours(self, flow: ConntrackEvent, now: float) -> _Pending | None:
        """The open flow's entry if its record is ours to write: the ruleset logged it or it came
        from the GWLB. A flow from before the agent started becomes ours once the tun path has
        seen it again (its identity); a flow whose NEW event was lost, once a dump shows it."""
        key = flow.flow_key
        identity = self.identities.lookup(key)
        pending = self._find(key)
        if pending is None:
            if identity is None:
                return None
            pending = self._entry(key, now)
        if not pending.rule and identity is None:
            return None
        pending.confirmed = True
        self._count_active(pending, identity is not None)
        return pending

    def _counted(
        self,
        flow: ConntrackEvent,
        pending: _Pending,
        start: float,
        end: float,
        now: float,
        reason: EndReason,
        *,
        session_end: str,
    ) -> FlowRecord:
        """A record of what conntrack counted for the flow since its previous record."""
        totals = _totals(flow)
        before = pending.reported
        if any(total < was for total, was in zip(totals, before, strict=True)):
            before = NO_COUNTS  # the flow began again under its key (the old one's DESTROY lost)
        pending.reported = totals
        packets_fwd, bytes_fwd, packets_rev, bytes_rev = (
            total - was for total, was in zip(totals, before, strict=True)
        )
        return self._record(
            flow.flow_key, pending, start, end, now, reason,
            packets_fwd=packets_fwd, bytes_fwd=bytes_fwd, packets_rev=packets_rev, bytes_rev=bytes_rev,
            icmp=(flow.icmp_type, flow.icmp_code), session_end=session_end,
        )  # fmt: skip

    def expire(self, now: float | None = None) -> list[FlowRecord]:
        """Records of flows conntrack never confirmed and that went quiet: denied ones (by the
        ruleset or by Suricata on their first packet). Allow verdicts that conntrack never
        confirmed within ``unconfirmed_ttl`` are dropped and counted: nothing passed."""
        now = self.clock() if now is None else now
        records = []
        for key, pending in list(self._pending.items()):
            if pending.confirmed:
                continue
            quiet = now - pending.last_seen
            if pending.action == "deny" and quiet >= self.denied_idle:
                del self._pending[key]
                records.append(self._unconfirmed(key, pending, now, "idle"))
            elif pending.action == "allow" and quiet >= self.unconfirmed_ttl:
                del self._pending[key]
                self.unconfirmed_dropped += 1
        return records

    def flush(self) -> list[FlowRecord]:
        """At shutdown, after ``add_snapshot(..., "shutdown")`` wrote the last records of the
        flows conntrack holds: the records of denied flows still open; then nothing is pending."""
        now = self.clock()
        records = [
            self._unconfirmed(key, pending, now, "shutdown")
            for key, pending in self._pending.items()
            if not pending.confirmed and pending.action == "deny"
        ]
        self._pending.clear()
        self.active = 0
        return records

    def _unconfirmed(self, key: FlowKey, pending: _Pending, now: float, reason: EndReason) -> FlowRecord:
        return self._record(
            key, pending, pending.first_seen, pending.last_seen, now, reason,
            packets_fwd=pending.packets, bytes_fwd=pending.bytes, packets_rev=0, bytes_rev=0,
            icmp=(pending.icmp_type, pending.icmp_code), session_end="",
        )  # fmt: skip

    def _record(
        self,
        key: FlowKey,
        pending: _Pending,
        start: float,
        end: float,
        now: float,
        reason: EndReason,
        *,
        packets_fwd: int,
        bytes_fwd: int,
        packets_rev: int,
        bytes_rev: int,
        icmp: tuple[int | None, int | None],
        session_end: str,
    ) -> FlowRecord:
        protocol, raw = key
        identity = self.identities.lookup(key)
        metadata = geneve.flow_metadata(identity.options) if identity else None
        if not pending.flow_id:
            self._seq += 1
            pending.flow_id = f"{BOOT_ID}-k{self._seq:x}"
        flow_id, index = pending.flow_id, pending.records
        pending.records += 1
        has_ports = protocol in PORT_PROTOCOLS
        direction: Direction = "unknown"
        if self.direction_of is not None:
            direction = self.direction_of(int.from_bytes(raw[0:4], "big"), int.from_bytes(raw[4:8], "big"))
        return FlowRecord(
            record_id=f"{flow_id}-{index}",
            flow_id=flow_id,
            appliance_id=self.appliance_id,
            start=round(start, 6),
            end=round(max(end, start), 6),
            emitted=round(now, 6),
            reason=reason,
            protocol=protocol,
            src_ip=inet_ntoa(raw[0:4]),
            src_port=int.from_bytes(raw[8:10], "big") if has_ports else 0,
            dst_ip=inet_ntoa(raw[4:8]),
            dst_port=int.from_bytes(raw[10:12], "big") if has_ports else 0,
            direction=direction,
            action=pending.action,
            rule=pending.rule,
            stage=pending.stage,
            packets_fwd=packets_fwd,
            bytes_fwd=bytes_fwd,
            packets_rev=packets_rev,
            bytes_rev=bytes_rev,
            tcp_flags_fwd=0,  # conntrack keeps no TCP flags per direction: see session_end_reason
            tcp_flags_rev=0,
            gwlb_ip=inet_ntoa(identity.gwlb_ip) if identity else "",
            vni=identity.vni if identity else 0,
            endpoint_id=metadata.endpoint_id if metadata else None,
            attachment_id=metadata.attachment_id if metadata else None,
            flow_cookie=metadata.flow_cookie if metadata else None,
            geneve_options=_opaque_options(identity, metadata),
            zone=self.zone,
            icmp_type=icmp[0] if protocol == ICMP else None,
            icmp_code=icmp[1] if protocol == ICMP else None,
            session_end_reason=session_end,
            alerts="; ".join(pending.alerts),
        )


def _opaque_options(identity: GwlbIdentity | None, metadata: geneve.FlowMetadata | None) -> str:
    """The raw options as hex when we cannot read their layout (the inline mode's rule)."""
    if identity is None or metadata is None or metadata.layout == "aws":
        return ""
    return identity.options.hex()
