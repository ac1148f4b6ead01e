"""The emulator's flow table: which member a flow went to, from which port, with which header.

A flow stays on its member for its whole life (stickiness), whatever happens to the member's
health later: that is the GWLB's ``NoRebalance`` failover mode, and the only one so far.
Idle flows are forgotten after the GWLB's idle timeouts (TCP 350 s, others 120 s).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from lab.gwlb.members import Member
from lab.gwlb.packet import TCP, FlowKey

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
    packets_fwd: int = 0  # initiator -> responder, sent to the member
    packets_rev: int = 0
    returned_fwd: int = 0  # came back from the member
    returned_rev: int = 0

    def snapshot(self) -> dict[str, object]:
        k = self.initiator
        return {
            "flow": k.describe(),
            "protocol": k.protocol,
            "src": socket.inet_ntoa(k.src), "sport": k.sport,
            "dst": socket.inet_ntoa(k.dst), "dport": k.dport,
            "member": self.member.member_id,
            "geneve_source_port": self.port,
            "flow_cookie": f"{self.cookie:08x}",
            "geneve_header": self.header.hex(),
            "created": self.wall_created,
            "packets_fwd": self.packets_fwd, "packets_rev": self.packets_rev,
            "returned_fwd": self.returned_fwd, "returned_rev": self.returned_rev,
        }


class FlowTable:
    def __init__(self, tcp_idle: float = 350.0, other_idle: float = 120.0,
                 max_flows: int = 100_000) -> None:
        self.tcp_idle = tcp_idle
        self.other_idle = other_idle
        self.max_flows = max_flows
        self._flows: dict[FlowKey, Flow] = {}
        self.created = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._flows)

    def get(self, canonical: FlowKey) -> Flow | None:
        return self._flows.get(canonical)

    def add(self, flow: Flow) -> bool:
        """False when the table is full (the caller counts the drop)."""
        if len(self._flows) >= self.max_flows:
            return False
        self._flows[flow.key] = flow
        flow.member.counters.flows += 1
        self.created += 1
        return True

    def expire(self, now: float) -> int:
        """Forget idle flows. A scan: fine for a lab's thousands of flows, not for millions."""
        idle = [f for f in list(self._flows.values())
                if now - f.last_seen > (self.tcp_idle if f.key.protocol == TCP else self.other_idle)]
        for flow in idle:
            del self._flows[flow.key]
            flow.member.counters.flows -= 1
        self.expired += len(idle)
        return len(idle)

    def snapshot(self) -> list[dict[str, object]]:
        # list() of a dict's values is one C call under the GIL: safe beside the data path.
        return [flow.snapshot() for flow in list(self._flows.values())]
