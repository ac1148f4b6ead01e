"""Per-packet work: Geneve in, flow lookup, verdict, and the decision to return it or drop it.

This is the hot path. It reads the packet in place through a memoryview (no copies), keeps the
common case — a packet of a known flow whose Geneve options are those already validated for it —
to a few slices and dict lookups, and leaves everything rare (new flows, ICMP errors, fragments,
malformed input) to the methods below it. It never raises on packet content: every malformed
packet ends as a counted drop.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import OrderedDict
from dataclasses import dataclass

from gwlb_agent.drops import Drop
from gwlb_agent.flowtable import ACK, FIN, ICMP, RST, SYN, TCP, Flow, FlowTable, reverse_key
from gwlb_agent.inspection import Chain, FlowFacts
from gwlb_agent.policy import Policy
from gwlb_fleet import geneve

PORT_PROTOCOLS = frozenset({TCP, 17, 132})  # TCP, UDP, SCTP
ICMP_ERRORS = frozenset({3, 4, 5, 11, 12})
ICMP_QUERIES = frozenset({0, 8, 13, 14, 15, 16, 17, 18})
NO_PORTS = b"\x00\x00\x00\x00"
ETHERTYPE_IPV4 = 0x0800
VLAN_TAGS = frozenset({0x8100, 0x88A8})
FRAGMENT_TTL = 30.0  # as Linux ipfrag_time
HELD_FRAGMENTS_MAX = 256
HELD_FRAGMENT_TTL = 1.0

# One call reads what the hot path needs of each header: Geneve's first 4 bytes, and IPv4's
# version/IHL, total length, flags/fragment offset and protocol.
_GENEVE_START = struct.Struct("!BBH").unpack_from
_IPV4_START = struct.Struct("!BxHxxHxB").unpack_from
_VNI = struct.Struct("!I").unpack_from


@dataclass(frozen=True, slots=True)
class Inspection:
    """What decides a new flow. Swapped as a whole on reload; ``generation`` tells flows apart."""

    policy: Policy
    chain: Chain
    generation: int


class HeldFragment:
    __slots__ = ("datagram", "deadline", "port", "source", "total")

    def __init__(self, datagram: bytes, total: int, source: int, port: int, deadline: float) -> None:
        self.datagram = datagram
        self.total = total
        self.source = source
        self.port = port
        self.deadline = deadline


class PacketProcessor:
    def __init__(
        self,
        table: FlowTable,
        inspection: Inspection,
        gwlb_networks: list[ipaddress.IPv4Network],
        max_inner: int = 8500,
        honour_critical: bool = False,
        mid_stream_pickup: bool = True,
    ) -> None:
        self.table = table
        self.mid_stream_pickup = mid_stream_pickup
        self.picked_up = 0  # TCP flows first seen mid-stream and allowed as a reply
        self._flows = table.by_protocol
        self.inspection = inspection
        self.max_inner = max_inner
        self.honour_critical = honour_critical
        self.drops = [0] * len(Drop)
        self._gwlb_networks = [(int(n.network_address), int(n.netmask)) for n in gwlb_networks]
        # Outer sources (raw u32 as read from the sockaddr) already found in the GWLB's networks,
        # each with its address bytes: a handful of GWLB nodes, shared by a million flows.
        self._allowed_sources: dict[int, bytes] = {}
        # (addresses, IP id, protocol) of a first fragment -> its flow, for later fragments.
        self._fragments: OrderedDict[bytes, tuple[Flow, float]] = OrderedDict()
        self._held: OrderedDict[bytes, list[HeldFragment]] = OrderedDict()
        # Fragments released by their first fragment, for the I/O loop to send after the batch.
        self.released: list[HeldFragment] = []
        # With the XDP fast path: every flow whose verdict was (re)decided, for the loop to put
        # in the kernel's verdict map after the batch (gwlb_agent.xdp.fastpath). None: no list.
        self.decided: list[Flow] | None = None

    @property
    def inspection(self) -> Inspection:
        return self._inspection

    @inspection.setter
    def inspection(self, inspection: Inspection) -> None:
        # Set from the control thread on reload. The packet path compares the plain int; a
        # packet that still sees the old number is decided again on the next one.
        self._inspection = inspection
        self._generation = inspection.generation

    # --- the hot path --------------------------------------------------------------------------

    def process(self, view: memoryview, off: int, length: int, source: int, port: int, now: float) -> bool:
        """True: return the datagram at view[off:off+length] to its sender unchanged."""
        if source not in self._allowed_sources and not self._source_allowed(source):
            return self._drop(Drop.SOURCE_NOT_ALLOWED)
        if length < 8:
            return self._drop(Drop.GENEVE_TRUNCATED)
        end = off + length
        first, flags, protocol_type = _GENEVE_START(view, off)
        if first & 0xC0:
            return self._drop(Drop.GENEVE_BAD_VERSION)
        inner = off + 8 + ((first & 0x3F) << 2)
        if inner > end:
            return self._drop(Drop.GENEVE_OPTIONS_OVERRUN)
        if flags & 0x80:
            return self._drop(Drop.GENEVE_CONTROL)
        if flags & 0x40 and self.honour_critical:
            return self._drop(Drop.GENEVE_CRITICAL_OPTION)
        ip = inner
        if protocol_type != geneve.PROTO_IPV4:
            ip = self._ethernet_payload(view, protocol_type, inner, end)
            if ip < 0:
                return False
        if end - ip < 20:
            return self._drop(Drop.NON_IPV4 if ip < end and view[ip] >> 4 != 4 else Drop.INNER_TRUNCATED)
        version_ihl, total, fragment, protocol = _IPV4_START(view, ip)
        if version_ihl >> 4 != 4:
            return self._drop(Drop.NON_IPV4)
        ihl = (version_ihl & 0x0F) << 2
        if ihl < 20 or total < ihl:
            return self._drop(Drop.INNER_BAD_HEADER)
        if ip + total > end:
            return self._drop(Drop.INNER_TRUNCATED)
        if total > self.max_inner:
            return self._drop(Drop.OVERSIZE)
        l4 = ip + ihl
        if fragment & 0x3FFF:
            return self._fragment(
                view, off, inner, ip, l4, total, fragment & 0x3FFF, protocol, source, port, now
            )

        if protocol in PORT_PROTOCOLS:
            if total - ihl < 4:
                return self._drop(Drop.INNER_TRUNCATED)
            # Without IP options, addresses and ports are 12 contiguous bytes: one slice.
            if ihl == 20:
                key = view[ip + 12 : ip + 24].tobytes()
            else:
                key = view[ip + 12 : ip + 20].tobytes() + view[l4 : l4 + 4].tobytes()
        elif protocol == ICMP:
            return self._icmp(view, off, inner, ip, l4, total, source, now)
        else:
            key = view[ip + 12 : ip + 20].tobytes() + NO_PORTS

        flows = self._flows.get(protocol)
        flow = flows.get(key) if flows is not None else None
        if flow is None or (flow.closing_at and protocol == TCP and self._reopens(view, l4, total - ihl)):
            flow = self._new_flow(view, off, inner, ip, protocol, key, source, now)
            if flow is None:
                return False
        elif view[off + 8 : inner] != flow.options and not self._options_valid(view, off, inner):
            return False  # the hot path: _options_fit inlined
        flow.last_seen = now
        if key == flow.key_fwd:
            flow.packets_fwd += 1
            flow.bytes_fwd += total
            reverse = False
        else:
            flow.packets_rev += 1
            flow.bytes_rev += total
            reverse = True
        if protocol == TCP and total - ihl >= 14:
            tcp_flags = view[l4 + 13]
            if reverse:
                flow.flags_rev |= tcp_flags
            else:
                flow.flags_fwd |= tcp_flags
            if tcp_flags & (FIN | RST):
                self.table.note_tcp_close(flow, tcp_flags, reverse, now)
        if flow.policy_generation != self._generation:
            self._decide(flow)
        if flow.allow:
            return True
        return self._drop(Drop.POLICY_DENY)

    # --- rare paths ----------------------------------------------------------------------------

    def _drop(self, reason: Drop) -> bool:
        self.drops[reason] += 1
        return False

    def _source_allowed(self, source: int) -> bool:
        """Check a source not yet known to be allowed; remember it if it is (those are few:
        the GWLB's nodes). Refused sources are not remembered, so spoofing cannot fill memory."""
        address = int.from_bytes(source.to_bytes(4, "little"), "big")
        allowed = any(address & mask == net for net, mask in self._gwlb_networks)
        if allowed and len(self._allowed_sources) < 4096:
            self._allowed_sources[source] = source.to_bytes(4, "little")
        return allowed

    def _ethernet_payload(self, view: memoryview, protocol_type: int, inner: int, end: int) -> int:
        """Offset of the IPv4 packet inside an Ethernet payload (0x6558), or -1 after a drop."""
        if protocol_type != geneve.PROTO_ETHERNET:
            self._drop(Drop.NON_IPV4)
            return -1
        offset = inner + 12
        while True:
            if offset + 2 > end:
                self._drop(Drop.INNER_TRUNCATED)
                return -1
            ethertype = (view[offset] << 8) | view[offset + 1]
            if ethertype not in VLAN_TAGS:
                break
            offset += 4
        if ethertype != ETHERTYPE_IPV4:
            self._drop(Drop.NON_IPV4)
            return -1
        return offset + 2

    def _options_fit(self, view: memoryview, off: int, inner: int, flow: Flow) -> bool:
        """A packet of a known flow: its options are the flow's (validated when it opened), or
        they are validated now. Every path that returns a packet of a known flow asks this."""
        return view[off + 8 : inner] == flow.options or self._options_valid(view, off, inner)

    def _options_valid(self, view: memoryview, off: int, inner: int) -> bool:
        try:
            geneve.validate_options(view, off + 8, inner)
        except geneve.GeneveError:
            self._drop(Drop.GENEVE_OPTIONS_OVERRUN)
            return False
        return True

    @staticmethod
    def _reopens(view: memoryview, l4: int, l4_len: int) -> bool:
        """A bare SYN on a closing flow's 5-tuple: a new connection reusing the ports."""
        return l4_len >= 14 and view[l4 + 13] & (SYN | ACK) == SYN

    def _new_flow(
        self,
        view: memoryview,
        off: int,
        inner: int,
        ip: int,
        protocol: int,
        key: bytes,
        source: int,
        now: float,
    ) -> Flow | None:
        if not self._options_valid(view, off, inner):
            return None
        flows = self._flows.get(protocol)
        old = flows.get(key) if flows is not None else None
        if old is not None:
            self.table.replace(old, now)
        flow = self.table.add(protocol, key, reverse_key(key), now)
        if flow is None:
            self._drop(Drop.FLOW_TABLE_FULL)
            return None
        # Only the raw options are kept per flow: the identity in them is read when a record is
        # written, not for every flow (a million flows would pay for it in memory).
        flow.options = view[off + 8 : inner].tobytes()
        flow.vni = _VNI(view, off + 4)[0] >> 8
        flow.gwlb_ip = self._allowed_sources.get(source) or source.to_bytes(4, "little")
        self._decide(flow)
        if not flow.allow and protocol == TCP and self.mid_stream_pickup and self._mid_stream(view, ip):
            self._judge_as_reply(flow)
        return flow

    @staticmethod
    def _mid_stream(view: memoryview, ip: int) -> bool:
        """A TCP segment that does not open a connection (anything but a bare SYN)."""
        l4 = ip + ((view[ip] & 0x0F) << 2)
        total = (view[ip + 2] << 8) | view[ip + 3]
        return total - (l4 - ip) >= 14 and view[l4 + 13] & (SYN | ACK) != SYN

    def _judge_as_reply(self, flow: Flow) -> None:
        """A connection this appliance did not see open, first met mid-stream: the GWLB moved it
        here (Rebalance after a member failed, or a member removed), or this agent restarted.
        Its first packet here may be the server's reply, so the policy judges it as the
        connection the other side opened; allowed that way, the flow is kept in that
        orientation (its records name the real client). Denied both ways, it stays as seen.

        Like Linux's nf_conntrack_tcp_loose: without it a moved connection whose next packet
        comes from the server is cut. ``mid_stream_pickup = false`` drops them instead (as a
        firewall that rejects non-SYN first packets does)."""
        flow.key_fwd, flow.key_rev = flow.key_rev, flow.key_fwd
        self._decide(flow)
        if flow.allow:
            self.picked_up += 1
            return
        flow.key_fwd, flow.key_rev = flow.key_rev, flow.key_fwd
        self._decide(flow)

    def _decide(self, flow: Flow) -> None:
        inspection = self.inspection
        key = flow.key_fwd
        src_ip = int.from_bytes(key[0:4], "big")
        dst_ip = int.from_bytes(key[4:8], "big")
        flow.direction = inspection.policy.direction(src_ip, dst_ip)
        verdict = inspection.chain.decide(
            FlowFacts(
                protocol=flow.protocol,
                src_ip=src_ip,
                dst_ip=dst_ip,
                src_port=int.from_bytes(key[8:10], "big"),
                dst_port=int.from_bytes(key[10:12], "big"),
                has_ports=flow.protocol in PORT_PROTOCOLS,
                direction=flow.direction,
            )
        )
        if flow.allow != verdict.allow:
            flow.allow = verdict.allow
            self.table.reschedule(flow)  # denied flows time out sooner
        flow.rule = verdict.rule
        flow.stage = verdict.stage
        flow.policy_generation = inspection.generation
        if self.decided is not None:
            self.decided.append(flow)

    def _icmp(
        self,
        view: memoryview,
        off: int,
        inner: int,
        ip: int,
        l4: int,
        total: int,
        source: int,
        now: float,
    ) -> bool:
        l4_len = ip + total - l4
        if l4_len < 8:
            return self._drop(Drop.INNER_TRUNCATED)
        icmp_type = view[l4]
        if icmp_type in ICMP_ERRORS:
            related = self._icmp_error_flow(view, l4 + 8, ip + total)
            if related is not None:
                if not self._options_fit(view, off, inner, related):
                    return False
                return self._count_related(related, total, now)
        if icmp_type in ICMP_QUERIES:
            ident = view[l4 + 4 : l4 + 6].tobytes()
            ports = ident + ident
        else:
            ports = bytes((icmp_type, view[l4 + 1], 0, 0))
        key = view[ip + 12 : ip + 20].tobytes() + ports
        flow = self.table.by_protocol[ICMP].get(key)
        if flow is None:
            flow = self._new_flow(view, off, inner, ip, ICMP, key, source, now)
            if flow is None:
                return False
            flow.icmp_type_code = (icmp_type << 8) | view[l4 + 1]
        elif not self._options_fit(view, off, inner, flow):
            return False
        return self._count(flow, key != flow.key_fwd, total, now)

    def _icmp_error_flow(self, view: memoryview, embedded: int, end: int) -> Flow | None:
        """The flow an ICMP error is about, from the IP header and ports it quotes."""
        if end - embedded < 20 or view[embedded] >> 4 != 4:
            return None
        ihl = (view[embedded] & 0x0F) << 2
        protocol = view[embedded + 9]
        quoted_l4 = embedded + ihl
        if ihl < 20 or quoted_l4 + 4 > end:
            return None
        if protocol in PORT_PROTOCOLS:
            ports = view[quoted_l4 : quoted_l4 + 4].tobytes()
        elif protocol == ICMP:
            ident = view[quoted_l4 + 4 : quoted_l4 + 6].tobytes() if quoted_l4 + 6 <= end else b""
            if len(ident) != 2:
                return None
            ports = ident + ident
        else:
            ports = NO_PORTS
        flows = self.table.by_protocol.get(protocol)
        if flows is None:
            return None
        return flows.get(view[embedded + 12 : embedded + 20].tobytes() + ports)

    def _count_related(self, flow: Flow, total: int, now: float) -> bool:
        # An ICMP error travels against the packet it quotes; count it with the flow it is about.
        flow.last_seen = now
        flow.packets_rev += 1
        flow.bytes_rev += total
        if flow.policy_generation != self.inspection.generation:
            self._decide(flow)
        return True if flow.allow else self._drop(Drop.POLICY_DENY)

    def _count(self, flow: Flow, reverse: bool, total: int, now: float) -> bool:
        flow.last_seen = now
        if reverse:
            flow.packets_rev += 1
            flow.bytes_rev += total
        else:
            flow.packets_fwd += 1
            flow.bytes_fwd += total
        if flow.policy_generation != self.inspection.generation:
            self._decide(flow)
        return True if flow.allow else self._drop(Drop.POLICY_DENY)

    # --- fragments -------------------------------------------------------------------------------

    def _fragment(
        self,
        view: memoryview,
        off: int,
        inner: int,
        ip: int,
        l4: int,
        total: int,
        fragment: int,
        protocol: int,
        source: int,
        port: int,
        now: float,
    ) -> bool:
        """First fragments carry the ports and decide; later ones follow their first's verdict."""
        offset_units = fragment & 0x1FFF
        frag_key = view[ip + 12 : ip + 20].tobytes() + view[ip + 4 : ip + 6].tobytes() + bytes((protocol,))
        if offset_units == 0:
            return self._first_fragment(view, off, inner, ip, l4, total, protocol, frag_key, source, now)
        if protocol == TCP and offset_units == 1:
            return self._drop(Drop.FRAGMENT_INVALID)  # would overwrite TCP flags (RFC 1858)
        known = self._fragments.get(frag_key)
        if known is None or known[1] < now:
            self._hold(view[off : ip + total].tobytes(), total, frag_key, source, port, now)
            return False
        flow = known[0]
        if flow.dead:
            return self._drop(Drop.FRAGMENT_ORPHAN)
        if not self._options_fit(view, off, inner, flow):
            return False
        return self._count(flow, frag_key[0:4] != flow.key_fwd[0:4], total, now)

    def _first_fragment(
        self,
        view: memoryview,
        off: int,
        inner: int,
        ip: int,
        l4: int,
        total: int,
        protocol: int,
        frag_key: bytes,
        source: int,
        now: float,
    ) -> bool:
        l4_len = ip + total - l4
        if protocol == TCP and l4_len < 20:
            return self._drop(Drop.FRAGMENT_INVALID)  # too small to hold the TCP header
        if protocol in PORT_PROTOCOLS and l4_len < 4:
            return self._drop(Drop.INNER_TRUNCATED)
        ports = view[l4 : l4 + 4].tobytes() if protocol in PORT_PROTOCOLS else NO_PORTS
        if protocol == ICMP:
            if l4_len < 8:
                return self._drop(Drop.INNER_TRUNCATED)
            ident = view[l4 + 4 : l4 + 6].tobytes()
            ports = ident + ident if view[l4] in ICMP_QUERIES else bytes((view[l4], view[l4 + 1], 0, 0))
        key = view[ip + 12 : ip + 20].tobytes() + ports
        flow = self.table.table(protocol).get(key)
        if flow is None:
            flow = self._new_flow(view, off, inner, ip, protocol, key, source, now)
            if flow is None:
                return False
            if protocol == ICMP:
                flow.icmp_type_code = (view[l4] << 8) | view[l4 + 1]
        elif not self._options_fit(view, off, inner, flow):
            return False
        forward = self._count(flow, key != flow.key_fwd, total, now)
        self._fragments[frag_key] = (flow, now + FRAGMENT_TTL)
        self._fragments.move_to_end(frag_key)
        while len(self._fragments) > 65536:
            self._fragments.popitem(last=False)
        self._release(frag_key, flow, now)
        return forward

    def _hold(self, datagram: bytes, total: int, frag_key: bytes, source: int, port: int, now: float) -> None:
        """Keep a fragment that arrived before its first fragment, briefly and boundedly."""
        self._expire_held(now)
        held = self._held.get(frag_key)
        if held is None:
            if len(self._held) >= HELD_FRAGMENTS_MAX:
                _, evicted = self._held.popitem(last=False)
                self.drops[Drop.FRAGMENT_ORPHAN] += len(evicted)
            held = self._held[frag_key] = []
        if len(held) >= 64:
            self.drops[Drop.FRAGMENT_ORPHAN] += 1
            return
        held.append(HeldFragment(datagram, total, source, port, now + HELD_FRAGMENT_TTL))

    def _release(self, frag_key: bytes, flow: Flow, now: float) -> None:
        held = self._held.pop(frag_key, None)
        if not held:
            return
        reverse = frag_key[0:4] != flow.key_fwd[0:4]
        for fragment in held:
            datagram = memoryview(fragment.datagram)
            inner = 8 + ((datagram[0] & 0x3F) << 2)  # within the datagram: checked when it was held
            if self._options_fit(datagram, 0, inner, flow) and self._count(
                flow, reverse, fragment.total, now
            ):
                self.released.append(fragment)

    def expire_fragments(self, now: float) -> None:
        self._expire_held(now)
        while self._fragments:
            key, (_flow, deadline) = next(iter(self._fragments.items()))
            if deadline >= now:
                break
            del self._fragments[key]

    def _expire_held(self, now: float) -> None:
        while self._held:
            key, held = next(iter(self._held.items()))
            if held[0].deadline >= now:
                break
            del self._held[key]
            self.drops[Drop.FRAGMENT_ORPHAN] += len(held)
