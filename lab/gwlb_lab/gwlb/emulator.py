"""The emulator's data path: tun -> Geneve -> member, and member -> checks -> tun.

Out: a packet read from the tun gets its flow and the flow's member. A new flow picks a member
by the scheduler's hash over the members that are Available and healthy, a per-flow source port
and a Geneve header. An existing flow keeps its member while it is usable for the flow, as the
server group's ServerFailoverMode and connection draining say (Alibaba's "rebalance" table):

=============================  ==================================  ==============================
the flow's member is           NoRebalance                         Rebalance
=============================  ==================================  ==============================
unhealthy                      keeps the flow                      flow re-picked (next packet)
Draining/Removing, draining    keeps the flow until the drain      keeps it until the drain
on                             ends, then drops it                 ends, then re-picked
Draining/Removing, draining    keeps the flow                      flow re-picked at once
off
gone from the group            packets dropped                     flow re-picked
=============================  ==================================  ==============================

A re-picked flow goes to the hash's choice over the healthy Available members; if there is none,
an unhealthy member keeps its flow and the packets of a leaving or gone member's flow are dropped.
The packet is wrapped and sent from ``local_address:port`` to the member's UDP 6081 through a raw
socket (the source port varies per flow, as the GWLB's does).

Back: the member answers from that same source port to our 6081 (seed 002); the datagram is
accepted only if it comes from the flow's member and port with the flow's Geneve header byte for
byte, and its inner packet is written into the tun. Everything else is a counted drop.
"""

from __future__ import annotations

import logging
import random
import selectors
import socket
import threading
import time
from dataclasses import asdict, dataclass, field

from gwlb_lab.gwlb.config import EmulatorConfig
from gwlb_lab.gwlb.flows import Flow, FlowTable, source_port
from gwlb_lab.gwlb.members import Member, MemberSet
from gwlb_lab.gwlb.packet import (
    TCP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    FlowKey,
    NotAFlow,
    flow_key,
    outer_header,
    tcp_flags,
)
from gwlb_lab.gwlb.scheduler import flow_hash
from gwlb_lab.gwlb.tun import TunDevice

__all__ = ["DROP_REASONS", "MISMATCH_REASONS", "Counters", "Emulator", "EmulatorConfig"]

log = logging.getLogger("gwlb_lab.gwlb")

# Why a packet went no further. The last three are mismatches: an appliance that answered
# from the wrong place or changed the Geneve header.
DROP_REASONS = (
    "not_ipv4", "truncated", "no_healthy_member", "flow_table_full", "send_error",
    "member_gone", "drain_ended",
    "geneve_malformed", "returned_not_a_flow", "unknown_flow", "tun_write_error",
    "from_previous_member",
    "wrong_member", "wrong_source_port", "header_mismatch",
)
MISMATCH_REASONS = ("wrong_member", "wrong_source_port", "header_mismatch")
MISMATCH_LOG_LIMIT = 20
BATCH = 256  # packets handled per readiness event, so neither side starves the other


@dataclass
class Counters:
    intercepted: int = 0  # packets read from the tun
    to_members: int = 0  # Geneve datagrams sent to members
    bytes_to_members: int = 0
    from_members: int = 0  # Geneve datagrams received from members
    bytes_from_members: int = 0
    delivered: int = 0  # inner packets written back into the tun
    rebalanced: int = 0  # existing flows moved to another member
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))

    @property
    def mismatches(self) -> int:
        return sum(self.drops[r] for r in MISMATCH_REASONS)


class Emulator:
    def __init__(self, config: EmulatorConfig, members: MemberSet | None = None) -> None:
        if members is None:
            members = MemberSet(seed=config.hash_seed, scheduler=config.scheduler)
        elif (members.seed, members.scheduler) != (config.hash_seed, config.scheduler):
            raise ValueError("the member set's hash seed and scheduler must be the config's")
        self.config = config
        self.members = members
        self.flows = FlowTable(config.tcp_idle_timeout, config.idle_timeout, config.max_flows)
        self.counters = Counters()
        self.started = time.monotonic()
        self._local = socket.inet_aton(config.local_address)
        self._random = random.Random()
        self._mismatches_logged = 0
        self.tun: TunDevice | None = None
        self.rx: socket.socket | None = None
        self.tx: socket.socket | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        config = self.config
        self.tun = TunDevice(config.tun)
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.rx.bind((config.local_address, config.geneve_port))
        self.rx.setblocking(False)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.tx.bind((config.local_address, 0))

    def close(self) -> None:
        """Close the tun and sockets (again is harmless); only once ``run`` has returned."""
        closables = (self.tun, self.rx, self.tx)
        self.tun = self.rx = self.tx = None
        for closable in closables:
            if closable is not None:
                closable.close()

    def run(self, stop: threading.Event, housekeeping_every: float = 1.0) -> None:
        """Forward until ``stop`` is set (checked at least every 0.2 s)."""
        assert self.tun is not None and self.rx is not None
        selector = selectors.DefaultSelector()
        selector.register(self.tun.fd, selectors.EVENT_READ, self._drain_tun)
        selector.register(self.rx, selectors.EVENT_READ, self._drain_members)
        next_housekeeping = time.monotonic() + housekeeping_every
        try:
            while not stop.is_set():
                for key, _ in selector.select(timeout=0.2):
                    key.data()
                now = time.monotonic()
                if now >= next_housekeeping:
                    self.flows.expire(now)
                    next_housekeeping = now + housekeeping_every
        finally:
            selector.close()

    # --- out: tun -> member ------------------------------------------------------------------

    def _drain_tun(self) -> None:
        assert self.tun is not None
        for _ in range(BATCH):
            packet = self.tun.read()
            if packet is None:
                return
            self.from_tun(packet, time.monotonic())

    def from_tun(self, packet: bytes, now: float) -> None:
        counters = self.counters
        counters.intercepted += 1
        try:
            key = flow_key(packet)
        except NotAFlow as exc:
            counters.drops[exc.reason] += 1
            return
        flags = tcp_flags(packet) if key.protocol == TCP else 0
        flow = self.flows.get(key.canonical)
        if flow is not None and flow.ended is not None and flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
            self.flows.remove(flow)  # a new connection on the 5-tuple of one that ended
            flow = None
        if flow is None:
            flow = self._new_flow(key, now)
            if flow is None:
                return
            member: Member | None = flow.member
        else:
            member = self._member_for(flow, key, now)
        flow.last_seen = now
        forward = key == flow.initiator
        if forward:
            flow.packets_fwd += 1
        else:
            flow.packets_rev += 1
        if flags & (TCP_FIN | TCP_RST):
            self.flows.observe_tcp(flow, flags, forward, now)
        if member is None:
            return
        payload_len = len(flow.header) + len(packet)
        datagram = outer_header(self._local, member.address_bytes, flow.port, member.port,
                                payload_len) + flow.header + packet
        assert self.tx is not None
        try:
            self.tx.sendto(datagram, (member.address, 0))
        except OSError as exc:
            counters.drops["send_error"] += 1
            log.warning("send to member failed", extra={"member": member.member_id,
                                                        "error": str(exc)})
            return
        counters.to_members += 1
        counters.bytes_to_members += payload_len
        member.counters.packets_sent += 1
        member.counters.bytes_sent += payload_len

    def _new_flow(self, key: FlowKey, now: float) -> Flow | None:
        member = self.members.select(key)
        if member is None:
            self.counters.drops["no_healthy_member"] += 1
            return None
        hashed = flow_hash(key, self.members.seed)
        cookie = self._random.getrandbits(32)
        flow = Flow(key=key.canonical, initiator=key, member=member, port=source_port(hashed),
                    header=self.config.encapsulator.header(cookie, hashed), cookie=cookie,
                    created=now, last_seen=now)
        if not self.flows.add(flow):
            self.counters.drops["flow_table_full"] += 1
            return None
        log.debug("new flow", extra={"flow": key.describe(), "member": member.member_id,
                                     "geneve_source_port": flow.port})
        return flow

    def drain_over(self, member: Member, now: float) -> bool:
        """Whether a leaving member's connection draining has ended (or was never on)."""
        if not self.config.connection_drain:
            return True
        since = member.leaving_since
        return since is not None and now - since >= self.config.drain_timeout

    def _member_for(self, flow: Flow, key: FlowKey, now: float) -> Member | None:
        """Where an existing flow's packet goes (the table in the module docstring); None when
        it is dropped (counted)."""
        member = flow.member
        rebalance = self.config.failover_mode == "Rebalance"
        if member not in self.members:
            why = "member_gone"
        elif member.leaving and self.drain_over(member, now):
            if not self.config.connection_drain and not rebalance:
                return member  # removed without draining: NoRebalance keeps sending to it
            why = "drain_ended" if self.config.connection_drain else "removed"
        elif member.health == "unhealthy" and rebalance:
            why = "unhealthy"
        else:
            return member
        if not rebalance:
            self.counters.drops[why] += 1
            return None
        target = self.members.select(key, exclude=member)
        if target is None:
            if why == "unhealthy":
                return member  # nowhere better to go
            self.counters.drops["no_healthy_member"] += 1
            return None
        self.flows.move(flow, target)
        self.counters.rebalanced += 1
        log.info("flow rebalanced", extra={"flow": flow.initiator.describe(), "why": why,
                                           "from": member.member_id, "to": target.member_id})
        return target

    # --- back: member -> tun ------------------------------------------------------------------

    def _drain_members(self) -> None:
        assert self.rx is not None
        for _ in range(BATCH):
            try:
                datagram, source = self.rx.recvfrom(65535)
            except BlockingIOError:
                return
            self.from_member(datagram, source)

    def from_member(self, datagram: bytes, source: tuple[str, int]) -> None:
        counters = self.counters
        counters.from_members += 1
        counters.bytes_from_members += len(datagram)
        if len(datagram) < 8 or datagram[0] >> 6:
            counters.drops["geneve_malformed"] += 1
            return
        header_len = 8 + (datagram[0] & 0x3F) * 4
        if header_len > len(datagram):
            counters.drops["geneve_malformed"] += 1
            return
        inner = memoryview(datagram)[header_len:]
        try:
            key = flow_key(inner)
        except NotAFlow:
            counters.drops["returned_not_a_flow"] += 1
            return
        flow = self.flows.get(key.canonical)
        if flow is None:
            counters.drops["unknown_flow"] += 1
            return
        member = flow.member
        address = socket.inet_aton(source[0])
        if address != member.address_bytes:
            if any(address == m.address_bytes for m in flow.previous):
                counters.drops["from_previous_member"] += 1  # in flight when the flow moved
                return None
            return self._mismatch("wrong_member", flow, source, datagram[:header_len])
        if source[1] != flow.port:
            return self._mismatch("wrong_source_port", flow, source, datagram[:header_len])
        if datagram[:header_len] != flow.header:
            return self._mismatch("header_mismatch", flow, source, datagram[:header_len])
        assert self.tun is not None
        try:
            self.tun.write(inner)
        except OSError as exc:
            counters.drops["tun_write_error"] += 1
            log.warning("tun write failed", extra={"error": str(exc)})
            return
        counters.delivered += 1
        member.counters.packets_returned += 1
        member.counters.bytes_returned += len(datagram)
        if key == flow.initiator:
            flow.returned_fwd += 1
        else:
            flow.returned_rev += 1

    def _mismatch(self, reason: str, flow: Flow, source: tuple[str, int], header: bytes) -> None:
        self.counters.drops[reason] += 1
        if self._mismatches_logged < MISMATCH_LOG_LIMIT:
            self._mismatches_logged += 1
            log.warning("returned datagram rejected", extra={
                "reason": reason, "flow": flow.initiator.describe(),
                "member": flow.member.member_id, "expected_source": f"{flow.member.address}:{flow.port}",
                "source": f"{source[0]}:{source[1]}", "expected_header": flow.header.hex(),
                "header": header.hex()})

    # --- reporting ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        counters = self.counters
        data = asdict(counters)
        now = time.monotonic()
        members = list(self.members)
        return {
            "uptime_s": round(now - self.started, 3),
            "local_address": self.config.local_address,
            **self.config.describe(),
            "counters": {k: v for k, v in data.items() if k != "drops"},
            "drops": dict(counters.drops),
            "mismatches": counters.mismatches,
            "flows_active": len(self.flows),
            "flows_created": self.flows.created,
            "flows_ended": self.flows.ended,
            "flows_expired": self.flows.expired,
            "flows_moved": self.flows.moved,
            "unhealthy_count": sum(1 for m in members if m.health == "unhealthy"),
            "members": [m.snapshot(now) for m in members],
        }
