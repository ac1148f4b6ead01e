"""The emulator's flow table: which member a flow goes to, from which port, with which header.

A flow keeps its member (stickiness) while that member is usable for it; what "usable" means is
the failover mode's business (emulator.py). When a flow is rebalanced it keeps its Geneve header
and source port (it is the same flow to the GWLB) and remembers the members it left, so that a
late answer from one of them is told apart from a mismatch.

A TCP flow ends on RST, or once both sides have sent FIN: it no longer counts as a live flow of
its member (what connection draining waits for) but stays in the table, for its last ACK and for
the status endpoint, until it is idle; a new SYN on its 5-tuple starts a new flow. Flows are
forgotten after the GWLB's idle timeouts (TCP 350 s, others 120 s).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from gwlb_lab.gwlb.members import Member
from gwlb_lab.gwlb.packet import TCP, TCP_FIN, TCP_RST, FlowKey

SOURCE_PORT_BASE = 49152
SOURCE_PORT_SPAN = 16384


def source_port(flow_hash: int) -> int:
    """The outer UDP source port of a flow: fixed per flow, both directions (seed 002)."""
    return SOURCE_PORT_BASE + flow_hash % SOURCE_PORT_SPAN


@dataclass(eq=False)
class Flow:
    key: FlowKey  # canonical
    initiator: FlowKey  # as the first packet travelled
    member: Member
    port: int
    header: bytes
    cookie: int
    created: float
    last_seen: float
    wall_created: float = field(default_factory=time.time)
    packets_fwd: int = 0  # initiator -> responder, read from the tun (sent, or dropped)
    packets_rev: int = 0
    returned_fwd: int = 0  # came back from the member
    returned_rev: int = 0
    previous: list[Member] = field(default_factory=list)  # members it was moved away from
    fin_fwd: bool = False
    fin_rev: bool = False
    ended: float | None = None  # when TCP said it is over (RST, or FIN both ways)

    def snapshot(self) -> dict[str, object]:
        k = self.initiator
        return {
            "flow": k.describe(),
            "protocol": k.protocol,
            "src": socket.inet_ntoa(k.src), "sport": k.sport,
            "dst": socket.inet_ntoa(k.dst), "dport": k.dport,
            "member": self.member.member_id,
            "previous_members": [m.member_id for m in self.previous],
            "geneve_source_port": self.port,
            "flow_cookie": f"{self.cookie:08x}",
            "geneve_header": self.header.hex(),
            "created": self.wall_created,
            "packets_fwd": self.packets_fwd, "packets_rev": self.packets_rev,
            "returned_fwd": self.returned_fwd, "returned_rev": self.returned_rev,
            "ended": self.ended is not None,
        }


class FlowTable:
    """Only the data path's thread changes it; the status endpoint reads snapshots."""

    def __init__(self, tcp_idle: float = 350.0, other_idle: float = 120.0,
                 max_flows: int = 100_000) -> None:
        self.tcp_idle = tcp_idle
        self.other_idle = other_idle
        self.max_flows = max_flows
        self._flows: dict[FlowKey, Flow] = {}
        self.created = 0
        self.expired = 0
        self.ended = 0  # TCP flows that closed
        self.moved = 0

    def __len__(self) -> int:
        return len(self._flows)

    def get(self, canonical: FlowKey) -> Flow | None:
        return self._flows.get(canonical)

    def flows(self) -> list[Flow]:
        # list() of a dict's values is one C call under the GIL: safe beside the data path.
        return list(self._flows.values())

    def add(self, flow: Flow) -> bool:
        """False when the table is full (the caller counts the drop)."""
        if len(self._flows) >= self.max_flows:
            return False
        self._flows[flow.key] = flow
        flow.member.counters.flows += 1
        flow.member.counters.flows_created += 1
        self.created += 1
        return True

    def move(self, flow: Flow, member: Member) -> None:
        """Rebalance: the flow's next packets go to ``member``."""
        old = flow.member
        old.counters.flows_moved_out += 1
        member.counters.flows_moved_in += 1
        if flow.ended is None:
            old.counters.flows -= 1
            member.counters.flows += 1
        flow.previous.append(old)
        flow.member = member
        self.moved += 1

    def observe_tcp(self, flow: Flow, flags: int, forward: bool, now: float) -> None:
        """Note FIN and RST; the flow ends on RST or once both sides sent FIN."""
        if flow.ended is not None:
            return
        if flags & TCP_FIN:
            if forward:
                flow.fin_fwd = True
            else:
                flow.fin_rev = True
        if flags & TCP_RST or (flow.fin_fwd and flow.fin_rev):
            flow.ended = now
            flow.member.counters.flows -= 1
            self.ended += 1

    def remove(self, flow: Flow) -> None:
        if self._flows.pop(flow.key, None) is flow and flow.ended is None:
            flow.member.counters.flows -= 1

    def expire(self, now: float) -> int:
        """Forget idle flows. A scan: fine for a lab's thousands of flows."""
        idle = [f for f in self.flows()
                if now - f.last_seen > (self.tcp_idle if f.key.protocol == TCP else self.other_idle)]
        for flow in idle:
            self.remove(flow)
        self.expired += len(idle)
        return len(idle)

    def snapshot(self) -> list[dict[str, object]]:
        return [flow.snapshot() for flow in self.flows()]
