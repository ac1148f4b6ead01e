"""The fast path's maps as the agent sees them: flow verdicts (each naming its counters slot), the
per-CPU counters slots, the GWLB's networks, the program's configuration and its per-CPU
statistics.

Layouts mirror agent/bpf/geneve_xdp.c (struct flow_key, flow_verdict, flow_counters, gwlb_prefix,
xdp_config, enum stat); tests/netns/test_xdp_program.py runs the program against them.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum

from gwlb_agent.bpf.libbpf import LibBpf
from gwlb_fleet.geneve import GENEVE_PORT

VERDICT_ALLOW = 1
VERDICT_DENY = 2
_VERDICT = struct.Struct("=IIII")  # action, policy generation, counters slot, the key's fingerprint
_KEY_WORDS = struct.Struct("=IIII")
_COUNTERS = struct.Struct("=QQQQ")
# struct xdp_config up to its struct gwlb_prefixes (pack_gwlb_prefixes).
_CONFIG = struct.Struct("=4sII2sHI")
_INLINE_PREFIX = struct.Struct("=4s4s")  # address and mask, network order
GWLB_PREFIXES_INLINE = 8  # more networks than this: the programs look them up in their tries
_PREFIX = struct.Struct("=I4s")
_U64 = struct.Struct("=Q")
BPF_ANY = 0


class Stat(IntEnum):
    TX_PACKETS = 0
    TX_BYTES = 1
    DENY_PACKETS = 2
    DENY_BYTES = 3
    PASS_NO_VERDICT = 4
    PASS_UNHANDLED = 5
    PASS_OTHER = 6


def _slot_key(slot: int) -> bytes:
    return struct.pack("=I", slot)


def key_fingerprint(entry: bytes) -> int:
    """geneve_xdp.c's key_fingerprint of a struct flow_key (``map_key``)."""
    a, b, c, d = _KEY_WORDS.unpack(entry)
    return int((a * 0x9E3779B1) ^ (b * 0x85EBCA77) ^ (c * 0xC2B2AE3D) ^ (d * 0x27D4EB2F)) & 0xFFFFFFFF


def map_key(protocol: int, key: bytes) -> bytes:
    """struct flow_key from the agent's flow key (addresses, then ports, as on the wire)."""
    return key + bytes((protocol, 0, 0, 0))


def pack_gwlb_prefixes(networks: tuple[ipaddress.IPv4Network, ...]) -> bytes:
    """struct gwlb_prefixes (agent/bpf/geneve_common.h), in both programs' configurations: how
    many networks, then up to GWLB_PREFIXES_INLINE of them for the program to scan; more than
    that leaves them all to the program's trie."""
    inline = networks if len(networks) <= GWLB_PREFIXES_INLINE else ()
    prefixes = b"".join(_INLINE_PREFIX.pack(n.network_address.packed, n.netmask.packed) for n in inline)
    room = _INLINE_PREFIX.size * GWLB_PREFIXES_INLINE
    return struct.pack("=I", len(networks)) + prefixes.ljust(room, b"\0")


@dataclass(frozen=True, slots=True)
class FlowCounters:
    """One direction of one flow, summed over CPUs. ``last_seen_ns`` is CLOCK_MONOTONIC to a tick."""

    packets: int = 0
    bytes: int = 0
    last_seen_ns: int = 0
    tcp_flags: int = 0


@dataclass(frozen=True, slots=True)
class FastPathConfig:
    gwlb_networks: tuple[ipaddress.IPv4Network, ...]
    max_inner: int = 8500
    honour_critical: bool = False
    local_address: str = ""  # the agent's listen address; "" or 0.0.0.0: any
    port: int = GENEVE_PORT  # the agent's listen port
    generation: int = 0  # the policy generation verdicts are valid for


class FastPathMaps:
    """Reads and writes the program's maps by file descriptor (owned by the loaded object)."""

    def __init__(self, bpf: LibBpf, fds: dict[str, int], cpus: int) -> None:
        self._bpf = bpf
        self._lib = bpf.lib
        self._fds = fds
        self._cpus = cpus
        self._config = FastPathConfig(gwlb_networks=())

    # --- verdicts ---------------------------------------------------------------------------

    def set_verdict(self, protocol: int, key: bytes, allow: bool, slot: int) -> None:
        """The verdict of one direction of a flow, under the current policy generation; the
        program counts the direction's packets in flow_slots[slot]."""
        entry = map_key(protocol, key)
        action = VERDICT_ALLOW if allow else VERDICT_DENY
        value = _VERDICT.pack(action, self._config.generation, slot, key_fingerprint(entry))
        self._update("flow_verdicts", entry, value)

    def verdict(self, protocol: int, key: bytes) -> bool | None:
        """The verdict the program would act on (None: it passes the flow's packets on)."""
        value = self._lookup("flow_verdicts", map_key(protocol, key), _VERDICT.size)
        if value is None:
            return None
        action, generation, _, _ = _VERDICT.unpack(value)
        return action == VERDICT_ALLOW if generation == self._config.generation else None

    def withdraw_verdict(self, protocol: int, key: bytes) -> None:
        """Remove a flow direction's verdict: its packets go to the agent again."""
        self._delete("flow_verdicts", map_key(protocol, key))

    def new_generation(self, generation: int) -> None:
        """A policy reload: every verdict installed so far is stale at once (one map write);
        each flow's next packet goes to the agent, which installs its new verdict."""
        self.configure(dataclasses.replace(self._config, generation=generation))

    # --- counters ---------------------------------------------------------------------------

    def counters(self, slot: int) -> FlowCounters:
        """A slot's counters, summed over CPUs."""
        raw = self._lookup("flow_slots", _slot_key(slot), _COUNTERS.size * self._cpus)
        if raw is None:  # not a slot of the array
            return FlowCounters()
        packets = octets = last_seen = flags = 0
        for p, b, seen, f in _COUNTERS.iter_unpack(raw):
            packets += p
            octets += b
            last_seen = max(last_seen, seen)
            flags |= f
        return FlowCounters(packets, octets, last_seen, flags)

    def reset_counters(self, slot: int) -> None:
        """Zero a slot on every CPU (one map write), before it counts for another flow."""
        self._update("flow_slots", _slot_key(slot), bytes(_COUNTERS.size * self._cpus))

    def stats(self) -> dict[Stat, int]:
        totals: dict[Stat, int] = {}
        for stat in Stat:
            raw = self._lookup("stats", struct.pack("=I", stat), _U64.size * self._cpus)
            totals[stat] = sum(v for (v,) in _U64.iter_unpack(raw)) if raw else 0
        return totals

    # --- configuration ------------------------------------------------------------------------

    def configure(self, config: FastPathConfig) -> None:
        self._config = config
        local = config.local_address if config.local_address not in ("", "0.0.0.0") else "0.0.0.0"
        value = _CONFIG.pack(
            socket.inet_aton(local),
            config.max_inner,
            int(config.honour_critical),
            config.port.to_bytes(2, "big"),
            0,
            config.generation & 0xFFFFFFFF,
        )
        self._update("config", struct.pack("=I", 0), value + pack_gwlb_prefixes(config.gwlb_networks))
        for network in config.gwlb_networks:
            prefix = _PREFIX.pack(network.prefixlen, network.network_address.packed)
            self._update("gwlb_networks", prefix, b"\x01")

    # --- raw map access -----------------------------------------------------------------------

    def _update(self, name: str, key: bytes, value: bytes) -> None:
        result = self._lib.bpf_map_update_elem(self._fds[name], key, value, BPF_ANY)
        self._bpf.check(result, f"bpf_map_update_elem({name})")

    def _lookup(self, name: str, key: bytes, size: int) -> bytes | None:
        value = ctypes.create_string_buffer(size)
        result = self._lib.bpf_map_lookup_elem(self._fds[name], key, value)
        if result == -errno.ENOENT:
            return None
        self._bpf.check(result, f"bpf_map_lookup_elem({name})")
        return value.raw

    def _delete(self, name: str, key: bytes) -> None:
        result = self._lib.bpf_map_delete_elem(self._fds[name], key)
        if result == -errno.ENOENT:  # already gone
            return
        self._bpf.check(result, f"bpf_map_delete_elem({name})")
