"""The emulator's data path: tun -> Geneve -> member, and member -> checks -> tun.

Out: a packet read from the tun gets its flow (a new flow picks a healthy member, a per-flow
source port and a Geneve header), is wrapped and sent from ``local_address:port`` to the member's
UDP 6081 through a raw socket (the source port varies per flow, as the GWLB's does).
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

from lab.gwlb.encap import Encapsulator
from lab.gwlb.flows import Flow, FlowTable, source_port
from lab.gwlb.members import MemberSet, flow_hash
from lab.gwlb.packet import FlowKey, NotAFlow, flow_key, outer_header
from lab.gwlb.tun import TunDevice

log = logging.getLogger("lab.gwlb")

# Why a packet went no further. The last three are mismatches: an appliance that answered
# from the wrong place or changed the Geneve header.
DROP_REASONS = (
    "not_ipv4", "truncated", "no_healthy_member", "flow_table_full", "send_error",
    "geneve_malformed", "returned_not_a_flow", "unknown_flow", "tun_write_error",
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
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))

    @property
    def mismatches(self) -> int:
        return sum(self.drops[r] for r in MISMATCH_REASONS)


@dataclass(frozen=True)
class EmulatorConfig:
    tun: str = "gwlb0"
    local_address: str = "198.19.0.1"
    geneve_port: int = 6081
    encapsulator: Encapsulator = field(default_factory=Encapsulator)
    tcp_idle_timeout: float = 350.0
    idle_timeout: float = 120.0
    max_flows: int = 100_000


class Emulator:
    def __init__(self, config: EmulatorConfig, members: MemberSet) -> None:
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
        for closable in (self.tun, self.rx, self.tx):
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
        canonical = key.canonical
        flow = self.flows.get(canonical)
        if flow is None:
            flow = self._new_flow(key, now)
            if flow is None:
                return
        flow.last_seen = now
        if key == flow.initiator:
            flow.packets_fwd += 1
        else:
            flow.packets_rev += 1
        member = flow.member
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
        if socket.inet_aton(source[0]) != member.address_bytes:
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
        return {
            "uptime_s": round(time.monotonic() - self.started, 3),
            "local_address": self.config.local_address,
            "layout": self.config.encapsulator.layout,
            "counters": {k: v for k, v in data.items() if k != "drops"},
            "drops": dict(counters.drops),
            "mismatches": counters.mismatches,
            "flows_active": len(self.flows),
            "flows_created": self.flows.created,
            "members": [m.snapshot() for m in self.members],
        }
