"""The tun data path: Geneve in, the inner packet to the kernel, what it forwards back out.

In tun mode the agent does not decide: it takes the Geneve header off, writes the inner IPv4
packet into a tun device, and the kernel forwards it through the appliance's own ruleset
(nftables, conntrack, NFQUEUE) and, by the policy routing of ``routing``, back into the tun.
What the agent reads there goes back to the GWLB node that sent its flow, in front of it the
Geneve header (and, for protocol type 0x6558, the Ethernet header) exactly as received, the
outer addresses swapped as in the inline mode. What the kernel drops never comes back.

The common case needs no lookup: the kernel forwards a packet written to a tun before write()
returns, so the agent reads the tun right after each write into the received datagram's own
slot, and when what it reads is that packet (same length, protocol, addresses and ports) the
datagram goes back as received, its inner packet as forwarded. A tun reads and writes one packet
per system call; the GWLB side is batched (recvmmsg, sendmmsg).

Which header otherwise: each packet written to the kernel leaves its encapsulation under its
directed key (protocol, addresses, ports; an ICMP query's identifier; an ICMP error's own
addresses, type and code with the packet it quotes; a fragment's addresses, IP id and
protocol). A packet read back is keyed the same way: forwarding changes TTL and checksum, not
the key. A reply that has come from the GWLB has its own entry (the GWLB sends both directions);
one the kernel forwards without its direction ever having arrived takes the other direction's.
Fragments: conntrack reassembles them and the kernel refragments to the largest fragment it got,
keeping the IP id (without conntrack they pass one by one): either way each fragment coming back
finds its datagram's header by the fragment key, and a reassembled datagram by the flow key its
first fragment left.

Entries live for two generations of ``idle`` seconds (each packet in renews its entry), and at
most ``max_entries`` per generation.

The Geneve offload (``tun_offload``, kernel.offload and agent/bpf/geneve_tc.c): when the agent
learns a flow direction's header (``_learn``) it also installs it, as its raw socket would send
it, in a kernel map that two TC programs read: on the data interface's ingress, Geneve of that
flow with that very header loses it and enters the tun as the agent's write() would put it
there; on the tun's egress, what the kernel forwards for that flow gets it back and leaves by the
data interface. The kernel still forwards every packet through the tun and the ruleset; the agent
sees only the packets of flows not installed (the first, a changed header: it learns and installs
again) and what the programs leave to it (Ethernet inside, fragments, ICMP errors, IP options,
non-zero outer UDP checksums, a full map: ``tun_offload_max_flows``). At a rotation, an installed
entry that would expire is kept (and its identity told again) when the kernel used it within the
generation (its ``last_used``), and removed from the kernel with its table entry otherwise.

Health: every ``probe_interval`` a probe — UDP from ``probe_source`` to ``probe_destination``,
addresses that no GWLB flow uses — goes into the tun. It comes back only if the device is up,
the rule and route are in place and the ruleset forwards it; ``path_problem`` reports the path
broken when none has come back for ``probe_timeout`` seconds, when an offload program is no
longer attached, or while a flow's header the agent removed from the kernel's map could not be
(the kernel may still put it on that flow's packets; retried at each probe and rotation). An
install that fails is not a problem: that flow's packets come to the agent.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import ipaddress
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gwlb_agent.batchio import (
    FLAGS_WORD,
    LEN_WORD,
    MMSG_WORDS,
    MSG_TRUNC,
    BatchSocket,
    IoVec,
    MMsgHdr,
    MsgHdr,
    send_batch,
)
from gwlb_agent.config import AgentConfig
from gwlb_agent.drops import Drop
from gwlb_agent.health import Liveness
from gwlb_agent.kernel.offload import (
    OffloadConfig,
    OffloadError,
    Stat,
    TunOffload,
    open_offload,
    route_source,
)
from gwlb_agent.kernel.records import FlowIdentities, GwlbIdentity, flow_key
from gwlb_agent.kernel.routing import KernelRoute, TunRouting, open_tun
from gwlb_agent.metrics import DataPlaneCounters, Snapshot
from gwlb_fleet import geneve

log = logging.getLogger("gwlb_agent.kernel.tun")

TCP, UDP, ICMP, SCTP = 6, 17, 1, 132
PORT_PROTOCOLS = frozenset({TCP, UDP, SCTP})
FLOW_PROTOCOLS = PORT_PROTOCOLS | {ICMP}  # those whose packets name their flow
ICMP_ERRORS = frozenset({3, 4, 5, 11, 12})
ICMP_QUERIES = frozenset({0, 8, 13, 14, 15, 16, 17, 18})
ETHERTYPE_IPV4 = 0x0800
VLAN_TAGS = frozenset({0x8100, 0x88A8})
IP_UDP = 28
# Room in front of a packet read from the tun for IP+UDP, Geneve with the most options, and an
# Ethernet header with two VLAN tags: the header is copied there and the whole sent in place.
# In front of those, the 16-byte sockaddr of the GWLB node, so that one copy writes both.
SOCKADDR = 16
HEADROOM = SOCKADDR + IP_UDP + geneve.BASE_HEADER_LEN + geneve.MAX_OPTIONS_LEN + 22 + 2  # 328
FRAGMENT_TAG = b"\xff"  # fragment keys: 12 bytes, a length no flow key has
_PROTOCOL_BYTE = [bytes((p,)) for p in range(256)]

_GENEVE_START = struct.Struct("!BBH").unpack_from
_IPV4_START = struct.Struct("!BxHxxHxB").unpack_from
_VNI = struct.Struct("!I").unpack_from
_libc = ctypes.CDLL(None, use_errno=True)
_read = _libc.read  # called with (int fd, c_void_p, int): no argtypes, no per-call conversion
_read.restype = ctypes.c_ssize_t
_MMSG_QWORDS = ctypes.sizeof(MMsgHdr) // 8
_NAME_QWORD = (MMsgHdr.hdr.offset + MsgHdr.name.offset) // 8
# Version/IHL, flags/fragment offset and protocol of an IPv4 header, in one call.
_IPV4_EGRESS = struct.Struct("!B5xHxB").unpack_from


class Encap:
    """How a flow's packets go back: the GWLB node's sockaddr (for sendmmsg), then the outer
    IP+UDP header addressed to it, then the Geneve (and Ethernet) header as received."""

    __slots__ = ("header", "port", "prefix", "source")

    def __init__(self, header: bytes, source: int, port: int) -> None:
        address = source.to_bytes(4, "little")  # as read from the sockaddr: network order
        self.header = header
        self.source = source
        self.port = port
        self.prefix = (
            struct.pack("=HH4s8x", 2, 0, address)  # sockaddr_in: AF_INET, port 0 (raw)
            + struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                0,
                0,
                0x4000,
                64,
                17,
                0,
                b"\0\0\0\0",
                address,
            )
            + port.to_bytes(2, "little")
            + struct.pack("!HHH", geneve.GENEVE_PORT, 0, 0)
            + header
        )


@dataclass
class TunCounters:
    to_kernel: int = 0  # inner packets written into the tun
    to_kernel_errors: int = 0  # writes the tun refused (device down: EIO)
    from_kernel: int = 0  # packets the kernel forwarded back into the tun
    from_kernel_unmatched: int = 0  # read back with no flow to return them to: dropped
    probes_sent: int = 0
    probes_returned: int = 0
    table_rotations: int = 0


class EncapTable:
    """Directed key -> Encap, in two generations for idle expiry without per-entry timers."""

    def __init__(self, idle: float, max_entries: int, now: float) -> None:
        self.idle = idle
        self.max_entries = max_entries
        self.current: dict[bytes, Encap] = {}
        self.previous: dict[bytes, Encap] = {}
        self.rotate_at = now + idle
        self.rotations = 0

    def rotate(self, now: float) -> None:
        self.previous, self.current = self.current, {}
        self.rotate_at = now + self.idle
        self.rotations += 1

    def __len__(self) -> int:
        return len(self.current) + len(self.previous)


@dataclass(frozen=True)
class Probe:
    source: ipaddress.IPv4Address
    destination: ipaddress.IPv4Address
    port: int
    interval: float
    timeout: float

    def packet(self) -> bytes:
        """A UDP datagram from source to destination, port to port, with a valid IP checksum."""
        payload = b"gwlb-agent kernel-path probe"
        udp = struct.pack("!HHHH", self.port, self.port, 8 + len(payload), 0) + payload
        header = bytearray(
            struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + len(udp),
                0,
                0x4000,
                64,
                UDP,
                0,
                self.source.packed,
                self.destination.packed,
            )
        )
        struct.pack_into("!H", header, 10, _ip_checksum(header))
        return bytes(header) + udp


def _ip_checksum(header: bytes | bytearray) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class TunDataPlane:
    """The packet loop of tun mode: one thread, both directions.

    Same contract as ``dataplane.DataPlane``: ``run(stop)`` until stopped; an exception ends it,
    is logged and kept in ``failure``; ``counters`` and ``drops`` are read by the metrics.
    """

    def __init__(
        self,
        io: BatchSocket,
        tun_fd: int,
        liveness: Liveness,
        gwlb_networks: list[ipaddress.IPv4Network],
        probe: Probe,
        *,
        max_inner: int = 8500,
        honour_critical: bool = False,
        idle: float = 350.0,
        max_entries: int = 2_000_000,
        identities: FlowIdentities | None = None,
        offload: TunOffload | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.io = io
        self.offload = offload
        self.tun_fd = tun_fd
        self.liveness = liveness
        self.probe = probe
        self.max_inner = max_inner
        self.honour_critical = honour_critical
        self.identities = identities
        self._clock = clock
        self.counters = DataPlaneCounters()
        self.tun = TunCounters()
        self.drops = [0] * len(Drop)
        self.failure: BaseException | None = None
        self._gwlb_networks = [(int(n.network_address), int(n.netmask)) for n in gwlb_networks]
        self._allowed_sources: set[int] = set()
        now = clock()
        self.table = EncapTable(idle, max_entries, now)
        self._probe_packet = probe.packet()
        self._probe_addresses = self._probe_packet[12:20]
        self._probe_due = now
        self.started = now
        self.last_probe_back: float | None = None
        self._writes_failing = False
        # The tun offload: the flow directions whose header is in the kernel's map, as installed.
        self._offloaded: dict[bytes, Encap] = {}
        self._route_sources: dict[int, bytes] = {}
        self.offload_installs = self.offload_full = self.offload_errors = self.offload_kept = 0
        # Keys whose removal from the kernel's map failed: the kernel may still put their header
        # on a flow's packets. Retried at each probe and rotation; a health problem meanwhile.
        self._unremoved: set[bytes] = set()
        self.offload_problem: str | None = None
        self._offload_complaint_at = -60.0
        self._allocate(io.batch, max_inner)

    def _allocate(self, batch: int, max_inner: int) -> None:
        # Slots for packets read from the tun: HEADROOM for the header, then the packet. Ethernet
        # padding aside, what the kernel forwards is never larger than what went in.
        self._batch = batch
        self._slot = HEADROOM + ((max_inner + 64 + 7) & ~7)
        self._read_max = self._slot - HEADROOM
        self._buffer = (ctypes.c_char * (self._slot * batch))()
        self._base = ctypes.addressof(self._buffer)
        self._view = memoryview(self._buffer).cast("B")
        self._u16 = self._view.cast("H")
        self._io_base = ctypes.addressof(ctypes.c_char.from_buffer(self.io.view))
        self._in_place = ctypes.c_void_p(0)  # where the next in-place read goes (value set per read)
        self._strays = 0  # packets read after a write that were not that write's packet
        # Each slot's packet address as a ready ctypes argument: read() then converts nothing.
        self._packet_at = [ctypes.c_void_p(self._base + i * self._slot + HEADROOM) for i in range(batch)]
        self._iov = (IoVec * batch)()
        self._msgs = (MMsgHdr * batch)()
        for i in range(batch):
            hdr = self._msgs[i].hdr
            hdr.iov = ctypes.pointer(self._iov[i])
            hdr.iovlen = 1
            hdr.namelen = SOCKADDR
        self._iov_q = memoryview(self._iov).cast("B").cast("Q")
        self._msgs_q = memoryview(self._msgs).cast("B").cast("Q")
        self._msgs_ptr = ctypes.addressof(self._msgs)
        self._tx_fd = self.io.tx.fileno()

    # --- the loop ----------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Forward until ``stop`` is set. Busy: receive, write, drain the tun, without a wait;
        idle: one poll on both descriptors, at most the liveness poll interval."""
        self.io.rx.setblocking(False)
        poller = select.poll()
        poller.register(self.io.rx.fileno(), select.POLLIN)
        poller.register(self.tun_fd, select.POLLIN)
        wait_ms = max(1, int(min(self.liveness.stall_after / 2, self.probe.interval) * 1000))
        self.liveness.running = True
        try:
            while not stop.is_set():
                now = self._clock()
                self.liveness.beat(now)
                if now >= self._probe_due:
                    self._send_probe(now)
                    if self._unremoved:
                        self._retry_removals()
                if now >= self.table.rotate_at:
                    self._rotate(now)
                received = self.io.receive()
                if received:
                    self._to_kernel(received, self._clock())
                returned = self._from_kernel(self._clock())
                if not received and not returned:
                    poller.poll(wait_ms)
        except Exception as exc:
            self.failure = exc
            log.exception("tun packet loop failed")
        finally:
            self.liveness.running = False

    # --- GWLB -> kernel ------------------------------------------------------------------------------

    def _to_kernel(self, count: int, now: float) -> None:
        """Write each datagram's inner packet into the tun and, at once, read the tun.

        The kernel forwards a packet written to a tun before write() returns (unless a queue,
        NFQUEUE, holds it), so what the read finds is nearly always that very packet, forwarded:
        same length, protocol, addresses and ports. Then it is read back into its place in the
        received datagram, whose Geneve header and sender are the flow's as received, and goes
        back as the inline mode's replies do. Anything else read (a held packet released, a
        fragment, the probe) goes by the general path, which then drains the tun first.
        """
        io = self.io
        view, rx, names_u32, names_u16, slot = io.view, io.rx_u32, io.name_u32, io.name_u16, io.slot
        decapsulate, fd, into, base = self._decapsulate, self.tun_fd, self._in_place, self._io_base
        replies = io.replies
        bytes_in = written = 0
        in_order = True
        for i in range(count):
            word = i * MMSG_WORDS
            length = rx[word + LEN_WORD]
            bytes_in += length
            if rx[word + FLAGS_WORD] & MSG_TRUNC:
                self.drops[Drop.OVERSIZE] += 1
                continue
            off = i * slot + IP_UDP
            ip = decapsulate(view, off, length, names_u32[i * 4 + 1], names_u16[i * 8 + 1])
            if not ip:
                continue
            written += 1
            if not in_order:
                continue
            sent = view[ip : ip + 24].tobytes()
            into.value = base + ip
            n = _read(fd, into, (i + 1) * slot - ip)  # to the end of this datagram's slot
            if n < 0:
                continue  # dropped by the ruleset, or held: a later read finds it
            if (
                n == (sent[2] << 8 | sent[3])
                and sent[9] == view[ip + 9]
                and view[ip + 12 : ip + 24] == sent[12:]
            ):
                replies.append(i)
            else:
                in_order = False
                self._stray(view[ip : ip + n].tobytes(), now)
        self.tun.to_kernel += written
        self._reply_in_place()
        counters = self.counters
        counters.batches += 1
        counters.packets_in += count
        counters.bytes_in += bytes_in

    def _reply_in_place(self) -> None:
        io = self.io
        replies = io.replies
        if not replies:
            return
        self.tun.from_kernel += len(replies)
        bytes_out = sum(io.rx_u32[i * MMSG_WORDS + LEN_WORD] for i in replies)
        queued = io.queue_replies(replies)
        replies.clear()
        errors_before = io.send_errors
        sent = io.flush()
        failed = io.send_errors - errors_before
        if failed:
            self.drops[Drop.SEND_ERROR] += failed
        self.liveness.send_failing = sent == 0 and failed > 0 and queued > 0
        self.counters.packets_out += sent
        self.counters.bytes_out += bytes_out

    def _stray(self, packet: bytes, now: float) -> None:
        """A packet read in place that is not the one just written: by the general path, after
        the replies already read in place (the packet just written may follow it: keep order)."""
        self._reply_in_place()
        self._view[HEADROOM : HEADROOM + len(packet)] = packet
        self._strays += 1
        self._from_kernel(now, first=len(packet))

    def _decapsulate(self, view: memoryview, off: int, length: int, source: int, port: int) -> int:
        """Check the datagram as the inline mode does, remember its flow's header, and write the
        inner packet into the tun: the inner packet's offset once written, else 0. Malformed
        input is a counted drop, never an exception."""
        drops = self.drops
        if source not in self._allowed_sources and not self._source_allowed(source):
            drops[Drop.SOURCE_NOT_ALLOWED] += 1
            return 0
        if length < 8:
            drops[Drop.GENEVE_TRUNCATED] += 1
            return 0
        end = off + length
        first, flags, protocol_type = _GENEVE_START(view, off)
        if first & 0xC0:
            drops[Drop.GENEVE_BAD_VERSION] += 1
            return 0
        inner = off + 8 + ((first & 0x3F) << 2)
        if inner > end:
            drops[Drop.GENEVE_OPTIONS_OVERRUN] += 1
            return 0
        if flags & 0x80:
            drops[Drop.GENEVE_CONTROL] += 1
            return 0
        if flags & 0x40 and self.honour_critical:
            drops[Drop.GENEVE_CRITICAL_OPTION] += 1
            return 0
        ip = (
            inner
            if protocol_type == geneve.PROTO_IPV4
            else self._ethernet_payload(view, protocol_type, inner, end)
        )
        if ip < 0:
            return 0
        if end - ip < 20:
            drops[Drop.NON_IPV4 if ip < end and view[ip] >> 4 != 4 else Drop.INNER_TRUNCATED] += 1
            return 0
        version_ihl, total, fragment, protocol = _IPV4_START(view, ip)
        if version_ihl >> 4 != 4:
            drops[Drop.NON_IPV4] += 1
            return 0
        ihl = (version_ihl & 0x0F) << 2
        if ihl < 20 or total < ihl:
            drops[Drop.INNER_BAD_HEADER] += 1
            return 0
        if ip + total > end:
            drops[Drop.INNER_TRUNCATED] += 1
            return 0
        if total > self.max_inner:
            drops[Drop.OVERSIZE] += 1
            return 0
        if protocol in PORT_PROTOCOLS and not fragment & 0x3FFF and ihl == 20:
            if total < 24:
                drops[Drop.INNER_TRUNCATED] += 1
                return 0
            key = _PROTOCOL_BYTE[protocol] + view[ip + 12 : ip + 24].tobytes()
        else:
            key = self._rare_key(view, ip, ihl, total, protocol, fragment & 0x3FFF)
            if key is None:
                drops[Drop.INNER_TRUNCATED] += 1
                return 0
        encap = self.table.current.get(key)
        if encap is None or encap.source != source or encap.port != port or encap.header != view[off:ip]:
            if not self._learn(view, off, inner, ip, total, key, source, port):
                return 0
            if fragment & 0x3FFF == 0x2000 and protocol in FLOW_PROTOCOLS:
                # A first fragment: its flow key too, for the datagram if it comes back whole.
                flow = self._flow_key(view, ip, ihl, total, protocol)
                if flow is not None:
                    self.table.current[flow] = self.table.current[key]
        try:
            os.write(self.tun_fd, view[ip : ip + total])
        except OSError as exc:
            self._write_failed(exc)
            return 0
        return ip

    def _source_allowed(self, source: int) -> bool:
        address = int.from_bytes(source.to_bytes(4, "little"), "big")
        allowed = any(address & mask == net for net, mask in self._gwlb_networks)
        if allowed and len(self._allowed_sources) < 4096:
            self._allowed_sources.add(source)
        return allowed

    def _ethernet_payload(self, view: memoryview, protocol_type: int, inner: int, end: int) -> int:
        """Offset of the IPv4 packet in an Ethernet payload (0x6558), or -1 after a drop."""
        if protocol_type != geneve.PROTO_ETHERNET:
            self.drops[Drop.NON_IPV4] += 1
            return -1
        offset = inner + 12
        while True:
            if offset + 2 > end:
                self.drops[Drop.INNER_TRUNCATED] += 1
                return -1
            ethertype = (view[offset] << 8) | view[offset + 1]
            if ethertype not in VLAN_TAGS:
                break
            offset += 4
        if ethertype != ETHERTYPE_IPV4:
            self.drops[Drop.NON_IPV4] += 1
            return -1
        return offset + 2

    def _learn(
        self, view: memoryview, off: int, inner: int, ip: int, total: int, key: bytes, source: int, port: int
    ) -> bool:
        """A flow direction's first packet in this generation of the table, or its header
        changed: validate, keep, tell the flow's identity (so that it lives as long as the
        header; FlowIdentities)."""
        if SOCKADDR + IP_UDP + ip - off > HEADROOM:
            self.drops[Drop.INNER_BAD_HEADER] += 1  # an Ethernet header with many VLAN tags
            return False
        header = view[off:ip].tobytes()
        table = self.table
        known = table.previous.get(key)
        if known is None or known.header != header or known.source != source or known.port != port:
            try:
                geneve.validate_options(view, off + 8, inner)
            except geneve.GeneveError:
                self.drops[Drop.GENEVE_OPTIONS_OVERRUN] += 1
                return False
            known = Encap(header, source, port)
        if self.identities is not None:
            self._tell_identity(view, off, inner, ip, total, source)
        if len(table.current) >= table.max_entries:
            self._rotate(self._clock())
        table.current[key] = known
        if self.offload is not None and self._offloaded.get(key) is not known:
            if self._offloadable(view, inner, ip, key):
                self._install(key, known)
            elif key in self._offloaded:  # its header is one the kernel must not put back
                self._uninstall(key)
        return True

    def _rotate(self, now: float) -> None:
        kept = self._keep_offloaded() if self.offload is not None else {}
        self._route_sources.clear()  # looked up again: a route or address may have changed
        self.table.rotate(now)
        if self.identities is not None:
            self.identities.rotate()
        # Flows the kernel carried in the generation that ends: the agent saw none of their
        # packets, so they are renewed here, their identities told again as _learn tells them.
        self.table.current.update(kept)
        self.offload_kept += len(kept)
        if self.identities is not None:
            for key, encap in kept.items():
                self.identities.remember(
                    (key[0], key[1:]),
                    GwlbIdentity(
                        gwlb_ip=encap.source.to_bytes(4, "little"),
                        vni=int.from_bytes(encap.header[4:7], "big"),
                        options=encap.header[8:],
                    ),
                )

    # --- the tun offload (kernel.offload) -------------------------------------------------------------

    @staticmethod
    def _offloadable(view: memoryview, inner: int, ip: int, key: bytes) -> bool:
        """Whether the kernel's programs take this packet's flow: IPv4 right after the Geneve
        header, a flow key (TCP/UDP/SCTP ports or an ICMP query's identifier), no IP options, not
        a fragment. The rest (Ethernet inside, fragments, ICMP errors) stays the agent's."""
        return (
            ip == inner
            and len(key) == 13
            and view[ip] == 0x45
            and not ((view[ip + 6] << 8) | view[ip + 7]) & 0x3FFF
            and (key[0] != ICMP or view[ip + 20] in ICMP_QUERIES)
        )

    def _install(self, key: bytes, encap: Encap) -> None:
        """The header in the kernel's map, as the raw socket would send it: the source address
        is the one the route to the GWLB node gives (the kernel fills in the agent's 0).

        A failed install (a full map, or any other refusal) is counted and logged, and is not a
        health problem: the flow's packets then reach the agent, which returns them itself with
        the header it has just learned. A header the flow had in the map before is removed; only
        a removal that fails leaves the kernel a header the agent no longer means (_remove)."""
        assert self.offload is not None
        try:
            source = self._route_sources.get(encap.source)
            if source is None:
                source = route_source(encap.source.to_bytes(4, "little"))
                if len(self._route_sources) < 4096:
                    self._route_sources[encap.source] = source
            outer = encap.prefix[SOCKADDR : SOCKADDR + IP_UDP]
            installed = self.offload.install(key, outer[:12] + source + outer[16:] + encap.header)
        except (OffloadError, OSError) as exc:
            self.offload_errors += 1
            self._complain("tun offload: a flow's header could not be installed", exc)
            installed = False
        else:
            if not installed:
                self.offload_full += 1
                self._complain("tun offload: the kernel's flow map is full; new flows stay with the agent")
        if installed:
            self.offload_installs += 1
            self._offloaded[key] = encap
            if key in self._unremoved:  # the stale header is overwritten: nothing to remove
                self._removed(key)
        elif key in self._offloaded:  # an older header must not stay in the kernel
            self._uninstall(key)

    def _uninstall(self, key: bytes) -> None:
        del self._offloaded[key]
        self._remove(key)

    def _remove(self, key: bytes) -> bool:
        """Take a key out of the kernel's map. When that fails, the kernel may go on putting a
        header on the flow's packets that the agent means gone (an old one, or one for a flow it
        has forgotten): a health problem (``offload_problem``, as the XDP path's map_problem)
        until the key is removed, which is tried again at each probe and rotation."""
        assert self.offload is not None
        try:
            self.offload.remove(key)
        except OffloadError as exc:
            self.offload_errors += 1
            if not self._unremoved:
                log.error("tun offload: a flow's header could not be removed from the kernel",
                          extra={"error": str(exc)})
            self._unremoved.add(key)
            self.offload_problem = (
                f"tun offload: {len(self._unremoved)} flow header(s) could not be removed from the "
                f"kernel's map: {exc}"
            )
            return False
        if key in self._unremoved:
            self._removed(key)
        return True

    def _removed(self, key: bytes) -> None:
        self._unremoved.discard(key)
        if not self._unremoved:
            self.offload_problem = None
            log.info("tun offload: the headers that could not be removed are gone from the kernel")

    def _retry_removals(self) -> None:
        """Remove again what could not be removed (a key installed again since is not stale)."""
        for key in list(self._unremoved):
            if key in self._offloaded:
                self._removed(key)
            elif not self._remove(key):
                return  # still failing: the rest at the next try

    def _keep_offloaded(self) -> dict[bytes, Encap]:
        """At a rotation: the offloaded entries of the generation that ends which the kernel
        used within it (kept), the others removed from the kernel with their table entries."""
        assert self.offload is not None
        if self._unremoved:
            self._retry_removals()
        table = self.table
        cutoff = time.monotonic_ns() - int(table.idle * 1e9)  # last_used: CLOCK_MONOTONIC
        kept: dict[bytes, Encap] = {}
        for key, encap in list(self._offloaded.items()):
            if key in table.current:
                continue  # the agent saw it in this generation: it lives on
            if table.previous.get(key) is encap:
                try:
                    last_used = self.offload.last_used_ns(key)
                except OffloadError as exc:
                    self.offload_errors += 1
                    self._complain("tun offload: a flow's last use could not be read", exc)
                    last_used = None
                if last_used is not None and last_used >= cutoff:
                    kept[key] = encap
                    continue
            self._uninstall(key)
        return kept

    def _complain(self, message: str, exc: BaseException | None = None) -> None:
        """Logged at most once a minute: a full map is a capacity limit, not an error."""
        now = self._clock()
        if now - self._offload_complaint_at >= 60.0:
            self._offload_complaint_at = now
            log.warning(message, extra={"error": str(exc)} if exc is not None else {})

    def _tell_identity(
        self, view: memoryview, off: int, inner: int, ip: int, total: int, source: int
    ) -> None:
        assert self.identities is not None
        key = flow_key(view[ip : ip + total])
        if key is not None:
            self.identities.remember(
                key,
                GwlbIdentity(
                    gwlb_ip=source.to_bytes(4, "little"),
                    vni=_VNI(view, off + 4)[0] >> 8,
                    options=view[off + 8 : inner].tobytes(),
                ),
            )

    def _write_failed(self, exc: OSError) -> None:
        self.tun.to_kernel_errors += 1
        if not self._writes_failing:  # once per outage (EIO: the device is down), not per packet
            self._writes_failing = True
            log.error("writing to the tun failed", extra={"error": exc.strerror, "errno": exc.errno})

    # --- kernel -> GWLB ---------------------------------------------------------------------------------

    def _from_kernel(self, now: float, first: int = 0) -> int:
        """Read what the kernel forwarded into the tun (one batch at most), put each packet's
        header in front of it and send the batch with one sendmmsg. How many were read.
        ``first``: the length of a packet already in the first slot (a stray)."""
        view, u16, base, slot, fd = self._view, self._u16, self._base, self._slot, self.tun_fd
        packet_at, read_max = self._packet_at, self._read_max
        current, previous = self.table.current, self.table.previous
        iov_q, msgs_q = self._iov_q, self._msgs_q
        queued = read = 0
        bytes_out = 0
        for i in range(self._batch):
            n = first if i == 0 and first else _read(fd, packet_at[i], read_max)
            if n <= 0:
                if n < 0:
                    self._read_failed(ctypes.get_errno())
                break
            read += 1
            ip = i * slot + HEADROOM
            if n < 20:
                self.tun.from_kernel_unmatched += 1
                continue
            version_ihl, fragment, protocol = _IPV4_EGRESS(view, ip)
            ihl = (version_ihl & 0x0F) << 2
            fragment &= 0x3FFF
            key: bytes | None
            if protocol in PORT_PROTOCOLS and not fragment and ihl == 20 and n >= 24:
                key = _PROTOCOL_BYTE[protocol] + view[ip + 12 : ip + 24].tobytes()
                encap = current.get(key) or previous.get(key)
            else:
                encap = None
                key = self._rare_key(view, ip, ihl, n, protocol, fragment)
                if key is not None:
                    encap = current.get(key) or previous.get(key)
            if encap is None:
                encap = self._unmatched(view, ip, ihl, n, protocol, fragment, key, now)
                if encap is None:
                    continue
            prefix = encap.prefix
            name = ip - len(prefix)  # the sockaddr; the datagram follows it
            view[name:ip] = prefix
            length = n + len(prefix) - SOCKADDR  # of the IP datagram sent
            udp_length = length - 20
            # Offsets are even (slot, HEADROOM and every header length are): one aligned store.
            u16[(name + SOCKADDR + 24) >> 1] = ((udp_length & 0xFF) << 8) | (udp_length >> 8)
            msgs_q[queued * _MMSG_QWORDS + _NAME_QWORD] = base + name
            iov_q[queued * 2] = base + name + SOCKADDR
            iov_q[queued * 2 + 1] = length
            bytes_out += udp_length - 8
            queued += 1
        self.tun.from_kernel += read
        if queued:
            self._send(queued, bytes_out)
        return read

    def _unmatched(
        self,
        view: memoryview,
        ip: int,
        ihl: int,
        n: int,
        protocol: int,
        fragment: int,
        key: bytes | None,
        now: float,
    ) -> Encap | None:
        """No entry under the packet's own key: the probe, the other direction's header, a
        reassembled datagram, or nothing (a packet that came from no flow: dropped)."""
        if view[ip + 12 : ip + 20] == self._probe_addresses:
            self.tun.probes_returned += 1
            self.last_probe_back = now
            return None
        table = self.table
        candidates = []
        if fragment and not fragment & 0x1FFF:  # a first fragment: its datagram's flow
            candidates.append(self._flow_key(view, ip, ihl, n, protocol))
        if key is not None and len(key) == 13 and protocol in FLOW_PROTOCOLS:
            candidates.append(key[:1] + key[5:9] + key[1:5] + key[11:13] + key[9:11])
        for candidate in candidates:
            if candidate is not None:
                encap = table.current.get(candidate) or table.previous.get(candidate)
                if encap is not None:
                    return encap
        self.tun.from_kernel_unmatched += 1
        return None

    def _send(self, queued: int, bytes_out: int) -> None:
        sent_ok, refused, _ = send_batch(self._tx_fd, self._msgs_ptr, queued)
        self.drops[Drop.SEND_ERROR] += refused
        self.liveness.send_failing = refused > 0 and sent_ok == 0
        self.counters.packets_out += sent_ok
        self.counters.bytes_out += bytes_out

    def _read_failed(self, err: int) -> None:
        if err in (errno.EAGAIN, errno.EINTR):
            return
        # EBADFD/EIO: the device is gone or down; the probe tells health, the log tells why.
        raise OSError(err, f"reading the tun: {os.strerror(err)}")

    # --- keys ------------------------------------------------------------------------------------------

    @staticmethod
    def _flow_key(view: memoryview, ip: int, ihl: int, total: int, protocol: int) -> bytes | None:
        """The key of a whole packet (or a first fragment) of a port protocol or ICMP."""
        l4 = ip + ihl
        if protocol in PORT_PROTOCOLS:
            if total - ihl < 4:
                return None
            return _PROTOCOL_BYTE[protocol] + view[ip + 12 : ip + 20].tobytes() + view[l4 : l4 + 4].tobytes()
        if protocol == ICMP:
            if total - ihl < 8:
                return None
            icmp_type = view[l4]
            if icmp_type in ICMP_QUERIES:
                ident = view[l4 + 4 : l4 + 6].tobytes()
                return _PROTOCOL_BYTE[ICMP] + view[ip + 12 : ip + 20].tobytes() + ident + ident
            return (
                _PROTOCOL_BYTE[ICMP]
                + view[ip + 12 : ip + 20].tobytes()
                + bytes((icmp_type, view[l4 + 1], 0, 0))
            )
        return None

    def _rare_key(
        self, view: memoryview, ip: int, ihl: int, total: int, protocol: int, fragment: int
    ) -> bytes | None:
        """The directed key of anything but an unfragmented TCP/UDP/SCTP packet without IP
        options; None when the packet is too short to have one."""
        if fragment:
            return (
                FRAGMENT_TAG
                + view[ip + 12 : ip + 20].tobytes()
                + view[ip + 4 : ip + 6].tobytes()
                + _PROTOCOL_BYTE[protocol]
            )
        l4 = ip + ihl
        if protocol == ICMP and total - ihl >= 8 and view[l4] in ICMP_ERRORS:
            # Its own addresses, type and code, and the addresses and ports it quotes: two
            # errors about two flows never share a header.
            quoted = l4 + 8
            quoted_ihl = (view[quoted] & 0x0F) << 2 if ip + total > quoted else 0
            quoted_end = quoted + quoted_ihl + 4
            about = (
                view[quoted + 12 : quoted + 20].tobytes() + view[quoted + quoted_ihl : quoted_end].tobytes()
                if quoted_ihl >= 20 and quoted_end <= ip + total
                else b""
            )
            return (
                _PROTOCOL_BYTE[ICMP]
                + view[ip + 12 : ip + 20].tobytes()
                + view[l4 : l4 + 2].tobytes()
                + b"E"
                + about
            )
        if protocol in PORT_PROTOCOLS or protocol == ICMP:
            return self._flow_key(view, ip, ihl, total, protocol)
        return _PROTOCOL_BYTE[protocol] + view[ip + 12 : ip + 20].tobytes()

    # --- health ------------------------------------------------------------------------------------------

    def _send_probe(self, now: float) -> None:
        self._probe_due = now + self.probe.interval
        try:
            os.write(self.tun_fd, self._probe_packet)
        except OSError as exc:
            self._write_failed(exc)
            return
        self.tun.probes_sent += 1
        if self._writes_failing:
            self._writes_failing = False
            log.info("writing to the tun works again")

    def path_problem(self, now: float) -> str | None:
        """Why the kernel path is broken (no probe back in time, an offload program detached, a
        flow's header the kernel's map kept when it should have gone), or None while it works."""
        if self.offload is not None:
            problem = self.offload.problem() or self.offload_problem
            if problem is not None:
                return problem
        since = self.last_probe_back if self.last_probe_back is not None else self.started
        age = now - since
        if age <= self.probe.timeout:
            return None
        if self.last_probe_back is None:
            return f"kernel path: no probe has come back through the tun in {age:.1f}s since start"
        return f"kernel path broken: no probe came back through the tun for {age:.1f}s"

    def metrics(self) -> dict[str, float]:
        tun = self.tun
        return {
            "tun_to_kernel_total": tun.to_kernel,
            "tun_to_kernel_errors_total": tun.to_kernel_errors,
            "tun_from_kernel_total": tun.from_kernel,
            "tun_from_kernel_unmatched_total": tun.from_kernel_unmatched,
            "tun_from_kernel_out_of_turn_total": self._strays,
            "tun_probes_sent_total": tun.probes_sent,
            "tun_probes_returned_total": tun.probes_returned,
            "tun_flow_headers": len(self.table),
            **self._offload_metrics(),
        }

    def fold_into(self, snapshot: Snapshot) -> Snapshot:
        """The agent's figures with the kernel's added, as the XDP fast path's fold_into: the
        datagrams tun_decap carried into the tun count as packets and bytes in (their UDP payload,
        as the agent counts a datagram), those tun_encap sent as packets and bytes out; the
        tun_offload_* metrics tell the two paths apart. Its metrics go into ``extra``."""
        metrics = self.metrics()
        if self.offload is None:
            return dataclasses.replace(snapshot, extra={**snapshot.extra, **metrics})
        return dataclasses.replace(
            snapshot,
            packets_in=snapshot.packets_in + int(metrics["tun_offload_decapsulated_total"]),
            packets_out=snapshot.packets_out + int(metrics["tun_offload_encapsulated_total"]),
            bytes_in=snapshot.bytes_in + int(metrics["tun_offload_decapsulated_bytes_total"]),
            bytes_out=snapshot.bytes_out + int(metrics["tun_offload_encapsulated_bytes_total"]),
            extra={**snapshot.extra, **metrics},
        )

    def _offload_metrics(self) -> dict[str, float]:
        if self.offload is None:  # off, or auto where it could not load (logged at start)
            return {"tun_offload_attached": 0.0}
        stats = self.offload.stats()
        metrics: dict[str, float] = {
            "tun_offload_attached": float(self.offload.problem() is None),
            "tun_offload_flows": len(self._offloaded),
            "tun_offload_installs_total": self.offload_installs,
            "tun_offload_map_full_total": self.offload_full,
            "tun_offload_errors_total": self.offload_errors,
            "tun_offload_unremoved_flows": len(self._unremoved),
            "tun_offload_kept_total": self.offload_kept,
            "tun_offload_decapsulated_total": stats[Stat.DECAP],
            "tun_offload_encapsulated_total": stats[Stat.ENCAP],
            "tun_offload_encap_failed_total": stats[Stat.ENCAP_FAILED],
            "tun_offload_decapsulated_bytes_total": stats[Stat.DECAP_BYTES],
            "tun_offload_encapsulated_bytes_total": stats[Stat.ENCAP_BYTES],
        }
        for stat in Stat:  # packets the programs left to the agent, by program and reason
            if "PASS" in stat.name:
                metrics[f"tun_offload_{stat.name.lower().replace('_pass', '_passed')}_total"] = stats[stat]
        return metrics


class KernelPath:
    """The tun device, its routing and the packet loop over them: opened together, closed
    together. Opening the device first means a second agent with the same device name fails
    (EBUSY) before it could touch the first one's rule."""

    def __init__(
        self,
        config: AgentConfig,
        io: BatchSocket,
        liveness: Liveness,
        identities: FlowIdentities | None = None,
    ) -> None:
        settings = config.tun
        self.route = KernelRoute(
            TunRouting(settings.device, settings.route_table, settings.rule_priority, settings.queue_length)
        )
        self.fd: int | None = open_tun(settings.device)
        self.offload: TunOffload | None = None
        try:
            tun_ifindex = self.route.install()
            if config.tun_offload != "off":
                self.offload = _open_offload(config, tun_ifindex)
            self.dataplane = TunDataPlane(
                io,
                self.fd,
                liveness,
                list(config.gwlb_cidrs),
                Probe(
                    settings.probe_source,
                    settings.probe_destination,
                    settings.probe_port,
                    settings.probe_interval,
                    settings.probe_timeout,
                ),
                max_inner=config.max_inner_size,
                honour_critical=config.honour_critical_options,
                idle=max(config.flows.tcp_idle_timeout, config.flows.idle_timeout),
                max_entries=config.flows.max_flows,
                identities=identities,
                offload=self.offload,
            )
        except BaseException:
            self.close()
            raise
        liveness.path_problem = self.dataplane.path_problem

    def close(self) -> None:
        """Detach the offload's programs, remove the rule and the table's route, then the device
        (closing its descriptor). Call after the packet loop has stopped."""
        try:
            try:
                if self.offload is not None:
                    self.offload.close()
            finally:  # a failed detach must not leave the rule and route behind
                self.offload = None
                self.route.remove()
        finally:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None


def _open_offload(config: AgentConfig, tun_ifindex: int) -> TunOffload | None:
    """``tun_offload = "tc"``: the offload or an error; ``"auto"``: it, or None and why."""
    from gwlb_agent.interfaces import data_interface, ipv4_address

    try:
        interface = config.xdp_interface or data_interface(config)
        try:
            data_ifindex = socket.if_nametoindex(interface)
        except OSError as exc:
            raise OffloadError(f"data interface {interface}: {exc.strerror or exc}", exc.errno or 0) from exc
        # Listening on any address, the agent takes Geneve to every address of the host; the
        # kernel's programs take only what the GWLB sends, to the data interface's address
        # (the rest still reaches the agent's socket).
        local_address = config.listen_address[0]
        if local_address in ("", "0.0.0.0"):
            local_address = ipv4_address(interface) or local_address
        offload = open_offload(
            OffloadConfig(
                gwlb_networks=tuple(config.gwlb_cidrs),
                tun_ifindex=tun_ifindex,
                data_ifindex=data_ifindex,
                max_inner=config.max_inner_size,
                honour_critical=config.honour_critical_options,
                local_address=local_address,
                port=config.listen_address[1],
            ),
            config.tun_offload_max_flows,
        )
    except OSError as exc:  # OffloadError, XdpError (libbpf, the interface), no such interface
        if config.tun_offload == "tc":
            raise OffloadError(f"tun offload: {exc}", exc.errno or 0) from exc
        log.warning("tun offload not used: every packet goes through the agent", extra={"reason": str(exc)})
        return None
    log.info(
        "tun offload attached",
        extra={
            "interface": interface,
            "max_flows": config.tun_offload_max_flows,
            "attached_by": offload.attach_kind,  # tcx (BPF links) or netlink (clsact filters)
        },
    )
    return offload
