"""The inspection chain: the seeds' service chaining (firewall -> antivirus -> DLP).

A stage looks at a new flow and either decides or passes. The chain asks its stages in order;
the first *deny* wins, and a flow is allowed only if no stage denies it. Stages decide per flow,
not per packet, so that a known flow costs nothing here — the shape a kernel fast path (XDP,
verdict in a BPF map) can take over later: it needs only the verdict and the counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gwlb_fleet.sls.flowrecord import Direction


@dataclass(frozen=True, slots=True)
class FlowFacts:
    """What a stage may look at: the flow's initiator-side 5-tuple and its direction."""

    protocol: int
    src_ip: int
    dst_ip: int
    src_port: int
    dst_port: int
    has_ports: bool  # TCP/UDP/SCTP; ICMP and others have no ports to match
    direction: Direction


@dataclass(frozen=True, slots=True)
class Verdict:
    allow: bool
    rule: str
    stage: str


class Stage(Protocol):
    name: str

    def decide(self, facts: FlowFacts) -> Verdict | None:
        """A verdict, or None to leave the decision to the stages after this one."""
        ...


ALLOW_BY_CHAIN_END = Verdict(allow=True, rule="chain-end", stage="chain")


class Chain:
    def __init__(self, stages: list[Stage]) -> None:
        self.stages = tuple(stages)

    def decide(self, facts: FlowFacts) -> Verdict:
        allowed: Verdict | None = None
        for stage in self.stages:
            verdict = stage.decide(facts)
            if verdict is None:
                continue
            if not verdict.allow:
                return verdict
            allowed = allowed or verdict
        return allowed or ALLOW_BY_CHAIN_END
