"""Conntrack events over netlink (ctnetlink): what the kernel counted for each flow.

The agent joins the NEW, UPDATE and DESTROY groups of ``NFNL_SUBSYS_CTNETLINK`` on a
``NETLINK_NETFILTER`` socket in the appliance's network namespace. A DESTROY event carries the
flow's counters (packets and bytes per direction, with ``nf_conntrack_acct=1``), its start and
stop timestamps (``nf_conntrack_timestamp=1``) and its last TCP state; NEW and UPDATE events carry
no counters (the kernel dumps them only on DESTROY). A dump of the table (``dump_flows``:
IPCTNL_MSG_CT_GET with NLM_F_DUMP) gives every flow's counters so far: what the periodic records
of long flows and the records at the agent's stop are made from. Attribute numbers and layouts:
the uapi header ``linux/netfilter/nfnetlink_conntrack.h`` (docs/kernel-records.md).
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gwlb_agent.flowtable import ICMP
from gwlb_agent.kernel import nfnetlink as nl
from gwlb_agent.kernel.records import ICMP_QUERIES, NO_PORTS, PORT_PROTOCOLS, FlowKey

NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
NFNLGRP_CONNTRACK_NEW = 1
NFNLGRP_CONNTRACK_UPDATE = 2
NFNLGRP_CONNTRACK_DESTROY = 3
ALL_GROUPS = (
    (1 << (NFNLGRP_CONNTRACK_NEW - 1))
    | (1 << (NFNLGRP_CONNTRACK_UPDATE - 1))
    | (1 << (NFNLGRP_CONNTRACK_DESTROY - 1))
)

# enum ctattr_type
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO = 1, 2, 3, 4
CTA_MARK, CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY = 8, 9, 10
CTA_ID, CTA_ZONE, CTA_TIMESTAMP = 12, 18, 20
# enum ctattr_tuple, ctattr_ip, ctattr_l4proto
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 2
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE = 4, 5, 6
# enum ctattr_protoinfo, ctattr_protoinfo_tcp, ctattr_counters, ctattr_tstamp
CTA_PROTOINFO_TCP = 1
CTA_PROTOINFO_TCP_STATE = 1
CTA_COUNTERS_PACKETS, CTA_COUNTERS_BYTES = 1, 2
CTA_TIMESTAMP_START, CTA_TIMESTAMP_STOP = 1, 2

# enum tcp_conntrack (linux/netfilter/nf_conntrack_tcp.h)
TCP_STATES = (
    "NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
    "TIME_WAIT", "CLOSE", "SYN_SENT2",
)  # fmt: skip

# "open": a flow as a dump of the table shows it (still held by conntrack, counters so far)
EventKind = Literal["new", "update", "destroy", "open"]
SYSCTL = Path("/proc/sys/net/netfilter")


@dataclass(frozen=True, slots=True)
class Counters:
    packets: int
    bytes: int


@dataclass(frozen=True, slots=True)
class ConntrackEvent:
    kind: EventKind
    protocol: int
    key: bytes  # the original direction's FlowKey bytes (records.FlowKey layout)
    conntrack_id: int | None
    orig: Counters | None  # None: accounting was off when the flow began
    reply: Counters | None
    start_ns: int | None  # epoch nanoseconds; None: timestamps were off when the flow began
    stop_ns: int | None
    tcp_state: str | None
    icmp_type: int | None
    icmp_code: int | None
    mark: int
    zone: int

    @property
    def flow_key(self) -> FlowKey:
        return self.protocol, self.key


def parse_events(buf: bytes | bytearray | memoryview, dumped: bool = False) -> list[ConntrackEvent]:
    """The IPv4 conntrack events of one datagram (IPv6 and other subsystems are skipped);
    ``dumped``: the datagram answers a dump, its flows are "open"."""
    events = []
    for message in nl.messages(buf):
        if message.subsystem != NFNL_SUBSYS_CTNETLINK or message.family != socket.AF_INET:
            continue
        event = _parse_event(message, dumped)
        if event is not None:
            events.append(event)
    return events


def _parse_event(message: nl.Message, dumped: bool = False) -> ConntrackEvent | None:
    if message.operation == IPCTNL_MSG_CT_DELETE:
        kind: EventKind = "destroy"
    elif message.operation == IPCTNL_MSG_CT_NEW and dumped:
        kind = "open"
    elif message.operation == IPCTNL_MSG_CT_NEW:
        # NLM_F_CREATE (0x400) marks a new flow; without it the NEW message is an update.
        kind = "new" if message.flags & 0x400 else "update"
    else:
        return None
    view = message.view
    attrs = nl.attribute_map(view, message.attrs_start, message.attrs_end)
    if CTA_TUPLE_ORIG not in attrs:
        raise nl.NetlinkError("conntrack event without CTA_TUPLE_ORIG")
    protocol, key, icmp_type, icmp_code = _tuple(view, attrs[CTA_TUPLE_ORIG])
    start_ns = stop_ns = None
    if CTA_TIMESTAMP in attrs:
        stamps = nl.attribute_map(view, *attrs[CTA_TIMESTAMP])
        if CTA_TIMESTAMP_START in stamps:
            start_ns = nl.be64(view, stamps[CTA_TIMESTAMP_START], "CTA_TIMESTAMP_START")
        if CTA_TIMESTAMP_STOP in stamps:
            stop_ns = nl.be64(view, stamps[CTA_TIMESTAMP_STOP], "CTA_TIMESTAMP_STOP")
    return ConntrackEvent(
        kind=kind,
        protocol=protocol,
        key=key,
        conntrack_id=nl.be32(view, attrs[CTA_ID], "CTA_ID") if CTA_ID in attrs else None,
        orig=_counters(view, attrs.get(CTA_COUNTERS_ORIG), "CTA_COUNTERS_ORIG"),
        reply=_counters(view, attrs.get(CTA_COUNTERS_REPLY), "CTA_COUNTERS_REPLY"),
        start_ns=start_ns,
        stop_ns=stop_ns,
        tcp_state=_tcp_state(view, attrs.get(CTA_PROTOINFO)),
        icmp_type=icmp_type,
        icmp_code=icmp_code,
        mark=nl.be32(view, attrs[CTA_MARK], "CTA_MARK") if CTA_MARK in attrs else 0,
        zone=nl.be16(view, attrs[CTA_ZONE], "CTA_ZONE") if CTA_ZONE in attrs else 0,
    )


def _tuple(view: memoryview, span: tuple[int, int]) -> tuple[int, bytes, int | None, int | None]:
    """(protocol, key bytes, ICMP type, ICMP code) of a CTA_TUPLE_* attribute."""
    tuple_attrs = nl.attribute_map(view, *span)
    if CTA_TUPLE_IP not in tuple_attrs or CTA_TUPLE_PROTO not in tuple_attrs:
        raise nl.NetlinkError("conntrack tuple without CTA_TUPLE_IP or CTA_TUPLE_PROTO")
    ip = nl.attribute_map(view, *tuple_attrs[CTA_TUPLE_IP])
    addresses = b"".join(
        _address(view, ip.get(kind), name)
        for kind, name in ((CTA_IP_V4_SRC, "CTA_IP_V4_SRC"), (CTA_IP_V4_DST, "CTA_IP_V4_DST"))
    )
    proto = nl.attribute_map(view, *tuple_attrs[CTA_TUPLE_PROTO])
    if CTA_PROTO_NUM not in proto:
        raise nl.NetlinkError("conntrack tuple without CTA_PROTO_NUM")
    protocol = nl.u8(view, proto[CTA_PROTO_NUM], "CTA_PROTO_NUM")
    if protocol in PORT_PROTOCOLS:
        ports = b"".join(
            _port(view, proto.get(kind), name)
            for kind, name in (
                (CTA_PROTO_SRC_PORT, "CTA_PROTO_SRC_PORT"),
                (CTA_PROTO_DST_PORT, "CTA_PROTO_DST_PORT"),
            )
        )
        return protocol, addresses + ports, None, None
    if protocol == ICMP:
        for needed, name in (
            (CTA_PROTO_ICMP_TYPE, "CTA_PROTO_ICMP_TYPE"),
            (CTA_PROTO_ICMP_CODE, "CTA_PROTO_ICMP_CODE"),
        ):
            if needed not in proto:
                raise nl.NetlinkError(f"ICMP conntrack tuple without {name}")
        icmp_type = nl.u8(view, proto[CTA_PROTO_ICMP_TYPE], "CTA_PROTO_ICMP_TYPE")
        icmp_code = nl.u8(view, proto[CTA_PROTO_ICMP_CODE], "CTA_PROTO_ICMP_CODE")
        if icmp_type in ICMP_QUERIES and CTA_PROTO_ICMP_ID in proto:
            ident = _port(view, proto[CTA_PROTO_ICMP_ID], "CTA_PROTO_ICMP_ID")
            return protocol, addresses + ident + ident, icmp_type, icmp_code
        return protocol, addresses + bytes((icmp_type, icmp_code, 0, 0)), icmp_type, icmp_code
    return protocol, addresses + NO_PORTS, None, None


def _address(view: memoryview, span: tuple[int, int] | None, name: str) -> bytes:
    if span is None or span[1] - span[0] != 4:
        raise nl.NetlinkError(f"conntrack tuple: {name} missing or not 4 bytes")
    return view[span[0] : span[1]].tobytes()


def _port(view: memoryview, span: tuple[int, int] | None, name: str) -> bytes:
    if span is None or span[1] - span[0] < 2:
        raise nl.NetlinkError(f"conntrack tuple: {name} missing or shorter than 2 bytes")
    return view[span[0] : span[0] + 2].tobytes()


def _counters(view: memoryview, span: tuple[int, int] | None, name: str) -> Counters | None:
    if span is None:
        return None
    counters = nl.attribute_map(view, *span)
    if CTA_COUNTERS_PACKETS not in counters or CTA_COUNTERS_BYTES not in counters:
        raise nl.NetlinkError(f"{name} without 64-bit packet and byte counters")
    return Counters(
        packets=nl.be64(view, counters[CTA_COUNTERS_PACKETS], f"{name} packets"),
        bytes=nl.be64(view, counters[CTA_COUNTERS_BYTES], f"{name} bytes"),
    )


def _tcp_state(view: memoryview, span: tuple[int, int] | None) -> str | None:
    if span is None:
        return None
    tcp = nl.attribute_map(view, *span).get(CTA_PROTOINFO_TCP)
    if tcp is None:
        return None
    state = nl.attribute_map(view, *tcp).get(CTA_PROTOINFO_TCP_STATE)
    if state is None:
        return None
    number = nl.u8(view, state, "CTA_PROTOINFO_TCP_STATE")
    return TCP_STATES[number] if number < len(TCP_STATES) else str(number)


class ConntrackEvents:
    """A socket on the conntrack event groups of this network namespace."""

    # Events are read by the thread that also reads the table's dumps: while it parses one (seconds
    # for a big table) they queue, an skb each. 64 MiB holds tens of thousands; beyond, ENOBUFS is
    # counted and logged.
    def __init__(self, receive_buffer: int = 64 << 20, groups: int = ALL_GROUPS) -> None:
        self.sock = nl.netfilter_socket(groups=groups, receive_buffer=receive_buffer)
        self.lost_bursts = 0  # reads that failed with ENOBUFS: events were lost

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, timeout: float | None = None) -> list[ConntrackEvent]:
        """The events of one datagram; [] on timeout. A full receive buffer (ENOBUFS) is
        counted in ``lost_bursts`` and raised: the caller must say that records were lost."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 16)
        except (TimeoutError, BlockingIOError):
            return []
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                self.lost_bursts += 1
            raise
        return parse_events(data)

    def close(self) -> None:
        self.sock.close()


def dump_flows(timeout: float = 10.0) -> list[ConntrackEvent]:
    """Every IPv4 flow conntrack holds in this network namespace, with its counters so far.

    Read on a socket of its own (no event group), so that events never mix with the dump. A
    table that changes during the dump may show a flow twice or not at all (the kernel's
    NLM_F_DUMP_INTR): callers take each flow once and the next dump catches the rest. Raises
    ``nl.NetlinkError`` for an error answer or an unreadable one, ``TimeoutError`` when the kernel
    sends nothing for ``timeout`` seconds (a big table takes as long as it takes to read).
    """
    sock = nl.netfilter_socket()
    try:
        sock.send(nl.request(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_GET, nl.NLM_F_REQUEST | nl.NLM_F_DUMP,
                             socket.AF_INET, 0, b"", seq=1))  # fmt: skip
        sock.settimeout(timeout)
        flows: list[ConntrackEvent] = []
        while True:
            try:
                data = sock.recv(1 << 17)
            except TimeoutError:
                raise TimeoutError(f"conntrack dump: nothing from the kernel for {timeout:.1f}s") from None
            flows.extend(parse_events(data, dumped=True))
            if nl.ends_dump(data):
                return flows
    finally:
        sock.close()


def enable_accounting(sysctl_dir: Path = SYSCTL) -> None:
    """Turn on per-flow counters and timestamps for flows that begin from now on.

    Both are per network namespace; without them DESTROY events carry no counters or times.
    Raises ``OSError`` naming the file when the kernel has no such setting or we may not write."""
    for name in ("nf_conntrack_acct", "nf_conntrack_timestamp"):
        path = sysctl_dir / name
        try:
            path.write_text("1\n")
        except OSError as exc:
            raise OSError(exc.errno, f"cannot turn on {name}: {exc.strerror}", str(path)) from exc
