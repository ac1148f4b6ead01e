"""The server group: its members, their health and the choice of a member for a new flow.

Selection is rendezvous (highest random weight) hashing of the flow key over the healthy members:
every flow key ranks the members the same way in every process that uses the same seed, and when
a member leaves or fails only the flows it held move. The flow key is the 5-tuple now (the GWLB's
``5TCH`` scheduler); ``3TCH`` and ``2TCH`` will only change which fields feed ``flow_hash``.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from lab.gwlb.packet import FlowKey

HealthState = Literal["initial", "healthy", "unhealthy"]
DEFAULT_SEED = b"gwlb-lab"


@dataclass
class MemberCounters:
    packets_sent: int = 0
    bytes_sent: int = 0
    packets_returned: int = 0
    bytes_returned: int = 0
    flows: int = 0


@dataclass(eq=False)
class Member:
    """One appliance behind the GWLB (the API's server: ServerId, ServerIp, Port 6081)."""

    member_id: str
    address: str
    port: int = 6081
    health: HealthState = "initial"
    health_reason: str = "no check yet"
    counters: MemberCounters = field(default_factory=MemberCounters)

    def __post_init__(self) -> None:
        self.address_bytes = socket.inet_aton(self.address)

    def snapshot(self) -> dict[str, object]:
        return {"id": self.member_id, "address": self.address, "port": self.port,
                "health": self.health, "health_reason": self.health_reason,
                **self.counters.__dict__}


def parse_member(spec: str) -> Member:
    """``ID=ADDRESS[:PORT]``, e.g. ``nva-1=198.19.0.11``."""
    member_id, sep, target = spec.partition("=")
    if not sep or not member_id or not target:
        raise ValueError(f"{spec!r} is not ID=ADDRESS[:PORT]")
    address, _, port = target.partition(":")
    socket.inet_aton(address)
    return Member(member_id, address, int(port) if port else 6081)


def flow_hash(key: FlowKey, seed: bytes = DEFAULT_SEED) -> int:
    """32 bits from the flow's canonical 5-tuple; the same for both directions."""
    digest = hashlib.blake2b(key.canonical.to_bytes(), digest_size=4, key=seed).digest()
    return int.from_bytes(digest, "big")


def rank(key: FlowKey, member_ids: Iterable[str], seed: bytes = DEFAULT_SEED) -> list[str]:
    """Member ids from most to least preferred for this flow (rendezvous hashing)."""
    base = key.canonical.to_bytes()

    def weight(member_id: str) -> bytes:
        return hashlib.blake2b(base + member_id.encode(), digest_size=8, key=seed).digest()

    return sorted(member_ids, key=weight, reverse=True)


class MemberSet:
    """Members by id. Health is written by the health checker's threads, read by the data path."""

    def __init__(self, members: Iterable[Member] = (), seed: bytes = DEFAULT_SEED) -> None:
        self.seed = seed
        self._lock = threading.Lock()
        self._members: dict[str, Member] = {}
        self._by_address: dict[tuple[bytes, int], Member] = {}
        for member in members:
            self.add(member)

    def add(self, member: Member) -> None:
        with self._lock:
            if member.member_id in self._members:
                raise ValueError(f"member {member.member_id} is already in the group")
            self._members[member.member_id] = member
            self._by_address[(member.address_bytes, member.port)] = member

    def remove(self, member_id: str) -> Member:
        with self._lock:
            member = self._members.pop(member_id)
            del self._by_address[(member.address_bytes, member.port)]
            return member

    def __iter__(self) -> Iterator[Member]:
        return iter(list(self._members.values()))

    def __len__(self) -> int:
        return len(self._members)

    def get(self, member_id: str) -> Member | None:
        return self._members.get(member_id)

    def healthy(self) -> list[Member]:
        return [m for m in list(self._members.values()) if m.health == "healthy"]

    def select(self, key: FlowKey) -> Member | None:
        """The member a new flow goes to, or None when no member is healthy."""
        healthy = {m.member_id: m for m in self.healthy()}
        if not healthy:
            return None
        return healthy[rank(key, healthy, self.seed)[0]]
