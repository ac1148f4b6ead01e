"""The server group's scheduler: which member a new flow goes to.

The GWLB's schedulers hash part of the flow's tuple, the same way for both directions:

- ``5TCH``: protocol, source and destination address and port (every connection on its own);
- ``3TCH``: protocol, source and destination address (all connections between two hosts over one
  protocol share a member, whatever their ports);
- ``2TCH``: source and destination address (everything between two hosts shares a member).

Selection is rendezvous (highest random weight) hashing of that key over the candidate members:
every key ranks the members the same way in every process that uses the same seed, and when a
member leaves or fails only the flows it held move. The 5TCH key is the flow's canonical 5-tuple
exactly as before the other schedulers existed, so the lab's port predictions still hold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Literal

from gwlb_lab.gwlb.packet import FlowKey

Scheduler = Literal["5TCH", "3TCH", "2TCH"]
SCHEDULERS: tuple[Scheduler, ...] = ("5TCH", "3TCH", "2TCH")
DEFAULT_SEED = b"gwlb-lab"


def hash_key(key: FlowKey, scheduler: Scheduler = "5TCH") -> bytes:
    """The bytes the scheduler hashes: the same for both directions of a flow."""
    if scheduler == "5TCH":
        return key.canonical.to_bytes()
    low, high = sorted((key.src, key.dst))
    if scheduler == "3TCH":
        return bytes([key.protocol]) + low + high
    if scheduler == "2TCH":
        return low + high
    raise ValueError(f"unknown scheduler {scheduler!r}; expected one of {', '.join(SCHEDULERS)}")


def flow_hash(key: FlowKey, seed: bytes = DEFAULT_SEED) -> int:
    """32 bits from the flow's canonical 5-tuple (its identity, whatever the scheduler): the
    flow's Geneve source port and the opaque layout's hash option come from it."""
    digest = hashlib.blake2b(key.canonical.to_bytes(), digest_size=4, key=seed).digest()
    return int.from_bytes(digest, "big")


def rank(key: FlowKey, member_ids: Iterable[str], seed: bytes = DEFAULT_SEED,
         scheduler: Scheduler = "5TCH") -> list[str]:
    """Member ids from most to least preferred for this flow (rendezvous hashing)."""
    base = hash_key(key, scheduler)

    def weight(member_id: str) -> bytes:
        return hashlib.blake2b(base + member_id.encode(), digest_size=8, key=seed).digest()

    return sorted(member_ids, key=weight, reverse=True)
