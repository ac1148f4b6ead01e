"""The agent's side of the XDP fast path, driven from the packet loop.

- After each batch, the flows the processor decided go into the kernel's verdict map, both
  directions' keys: from then on their packets are answered (or dropped) in the kernel, except
  those the program leaves to the agent (SYN/FIN/RST, fragments, options it does not handle...).
- A policy reload (a new inspection generation) is one write of the program's configuration:
  every verdict of an earlier generation is stale at once, and every flow the map knew is marked
  for a new decision: its next packet comes to the agent, which decides it under the new policy
  and installs the new verdict. Done in the loop's thread, so that a verdict decided under the
  old policy is never taken for one of the new.
- Each installed flow owns a pair of counters slots in the kernel's per-CPU array (pair p: slot
  2p for key_fwd, 2p+1 for key_rev), named in its verdicts: the program counts a packet with one
  array lookup after the verdict's, no insert. Before the flow table judges a flow idle or writes
  its record, the pair's per-CPU counters are merged into it (packets, bytes, last seen, TCP
  flags): a record counts every packet, whichever path carried it. When the flow ends its
  verdicts are removed first, then its last counts merged, then its pair is quarantined: only
  ``ORPHAN_DELAY`` later is it zeroed and handed to another flow.
- The maps hold ``xdp_max_flows`` flows: a flow with no free pair (or whose verdict the kernel
  has no room for) stays on the agent's path, counted (``xdp_map_full_total``) and logged once a
  minute at most, never an error.

Counters in a slot are cumulative; what was already merged is kept per flow, so the merge never
loses a packet counted on another CPU while it reads.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gwlb_agent.bpf.libbpf import XdpError
from gwlb_agent.config import AgentConfig
from gwlb_agent.drops import Drop
from gwlb_agent.flowtable import ICMP, TCP, UDP, Flow
from gwlb_agent.interfaces import data_interface
from gwlb_agent.metrics import Snapshot
from gwlb_agent.processor import PacketProcessor
from gwlb_agent.xdp.loader import XdpProgram
from gwlb_agent.xdp.maps import FastPathConfig, Stat

log = logging.getLogger("gwlb_agent.xdp")
# Protocols the program answers; other flows would only take map space.
HANDLED_PROTOCOLS = frozenset({TCP, UDP, ICMP, 132})
NS = 1e-9
POLICY_DENY = Drop.POLICY_DENY.name.lower()
# A verdict map update refused for want of room: E2BIG from a full hash map (preallocated or
# not), ENOMEM where an element could not be allocated, ENOSPC (other map kinds).
MAP_FULL_ERRNOS = frozenset({errno.E2BIG, errno.ENOMEM, errno.ENOSPC})
MAP_FULL_LOG_INTERVAL = 60.0  # seconds: a map that stays full is logged once a minute, not per flow
# An ended flow's verdicts still to withdraw: protocol, key_fwd, key_rev.
Withdrawal = tuple[int, bytes, bytes]
# A quarantined pair: since when, the pair, its flow's verdicts if still to withdraw, and the
# packets its flow's record holds (None once a failed zeroing left the slots' tally unknown).
Quarantined = tuple[float, int, Withdrawal | None, int | None]
# Seconds an ended flow's slot pair stays in quarantine before it is zeroed and reused: far longer
# than any program run that read the flow's verdict before it was withdrawn can still take.
ORPHAN_DELAY = 1.0
ATTACH_MODES = {"native-or-generic": ("native", "generic"), "native": ("native",), "generic": ("generic",)}


def open_fast_path(config: AgentConfig) -> FastPath:
    """Load the program, configure it as the agent is, attach it to the data interface.
    XdpError says why it could not (no libbpf, no privilege, a driver refusing XDP...)."""
    # The kernel holds at most the flows the table does: a verdict belongs to a flow in it.
    program = XdpProgram(max_flows=min(config.xdp_max_flows, config.flows.max_flows))
    try:
        listen, port = config.listen_address
        program.configure(
            FastPathConfig(
                gwlb_networks=tuple(config.gwlb_cidrs),
                max_inner=config.max_inner_size,
                honour_critical=config.honour_critical_options,
                local_address=listen,
                port=port,
            )
        )
        interface = config.xdp_interface or data_interface(config)
        program.attach(interface, attach_modes(config.xdp_attach, interface))
    except BaseException:
        program.close()
        raise
    return FastPath(program)


def attach_modes(setting: str, interface: str) -> tuple[str, ...]:
    """The modes to try, in order. Native XDP_TX on a veth hands the frame to the peer's XDP ring,
    which exists only while the peer runs an XDP program too, and the agent cannot see the peer
    (another namespace): there the replies would vanish. So a veth gets generic mode unless native
    is asked for by name (``xdp_attach = "native"``, for a peer known to run one)."""
    if setting == "native-or-generic" and link_kind(interface) == "veth":
        log.info(
            "XDP on a veth: generic mode",
            extra={"interface": interface, "reason": "native XDP_TX needs an XDP program on the peer"},
        )
        return ("generic",)
    return ATTACH_MODES[setting]


def link_kind(interface: str) -> str:
    """The link's kind as netlink names it (veth, vlan, ...), "" for a plain device."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with IPRoute() as ipr:
            [link] = ipr.link("get", ifname=interface)
    except NetlinkError as exc:
        raise XdpError(f"interface {interface}: {exc}") from exc
    info = link.get_attr("IFLA_LINKINFO")
    return str(info.get_attr("IFLA_INFO_KIND") or "") if info else ""


@dataclass(slots=True)
class Merged:
    """A flow in the kernel: its slot pair, and what was merged into it so far, per slot
    (cumulative kernel counts; "a" is key_fwd's slot, 2 * pair, "b" key_rev's, 2 * pair + 1)."""

    flow: Flow
    pair: int
    packets_a: int = 0
    bytes_a: int = 0
    packets_b: int = 0
    bytes_b: int = 0


class FastPath:
    def __init__(self, program: XdpProgram, clock: Callable[[], float] = time.monotonic) -> None:
        self.program = program
        self._clock = clock
        self.maps = program.maps
        self._flows: dict[int, Merged] = {}  # by flow.seq: flows with verdicts in the map
        # Slot pairs: never used yet from _next_pair up (no list of them all at start), zeroed
        # and free in _free (a stack), ended flows' in _quarantine (when, pair, verdicts still to
        # withdraw), oldest first.
        self._pairs = program.max_flows
        self._next_pair = 0
        self._free: list[int] = []
        self._quarantine: deque[Quarantined] = deque()
        self._generation: int | None = None
        self.installed = 0
        self.map_full = 0  # installs refused because the map is full: those flows stay in the agent
        self._full_logged_at: float | None = None
        self._full_unlogged = 0  # refusals since the last "full" log line
        self.map_errors = 0
        self.unrecorded = 0  # packets the kernel answered after their flow's record was written
        self.map_problem: str | None = None  # the last map write failed (other than full), and why

    # --- the packet loop ------------------------------------------------------------------------

    def sync(self, processor: PacketProcessor) -> None:
        """After a batch (or an idle wake-up): free the slot pairs whose quarantine is over, follow
        a reload, install the new verdicts."""
        if self._quarantine and self._quarantine[0][0] <= self._clock() - ORPHAN_DELAY:
            self._release_quarantined()
        generation = processor.inspection.generation
        if generation != self._generation:
            self._new_generation(generation)
        decided = processor.decided
        if decided:
            for flow in decided:
                # A flow decided under the previous policy is decided again at its next packet.
                if not flow.dead and flow.policy_generation == generation:
                    self._install(flow)
            decided.clear()

    def _install(self, flow: Flow) -> None:
        if flow.protocol not in HANDLED_PROTOCOLS:
            return
        merged = self._flows.get(flow.seq)
        new = merged is None
        if merged is not None:
            pair = merged.pair  # a flow installed again (after a reload) keeps its pair
        else:
            taken = self._take_pair()
            if taken is None:
                self._full("no free counters slots")
                return
            pair = taken
        try:
            self.maps.set_verdict(flow.protocol, flow.key_fwd, flow.allow, 2 * pair)
        except XdpError as exc:
            self._map_write_failed(exc)
            if new:
                self._free.append(pair)  # no verdict ever named it: still zero
            return
        try:
            self.maps.set_verdict(flow.protocol, flow.key_rev, flow.allow, 2 * pair + 1)
        except XdpError as exc:
            self._map_write_failed(exc)
            if new:
                # Half a flow in the kernel, which nobody would merge or withdraw: its one verdict
                # goes again and what the kernel counted meanwhile goes into the flow, which
                # stays whole on the agent's path; its pair is quarantined as any ended flow's.
                self._flows[flow.seq] = Merged(flow, pair)
                self.finished(flow)
            return
        self.map_problem = None
        if new:
            self._flows[flow.seq] = Merged(flow, pair)
            self.installed += 1

    def _take_pair(self) -> int | None:
        """A zeroed slot pair for a new flow, or None when all are in use or in quarantine."""
        if self._free:
            return self._free.pop()
        if self._next_pair < self._pairs:
            self._next_pair += 1
            return self._next_pair - 1
        return None

    def _map_write_failed(self, exc: XdpError) -> None:
        if exc.code in MAP_FULL_ERRNOS:
            self._full(str(exc))
            return
        self.map_errors += 1
        if self.map_problem is None:
            log.error("XDP map write failed", extra={"error": str(exc)})
        self.map_problem = f"XDP map writes failing: {exc}"

    def _full(self, error: str) -> None:
        """Not a fault: the flow stays on the agent's path, which decides and counts it as without
        the fast path. Counted; logged at the first refusal and then at most once a minute while
        refusals go on, with how many there were since."""
        self.map_full += 1
        self._full_unlogged += 1
        now = self._clock()
        if self._full_logged_at is None or now - self._full_logged_at >= MAP_FULL_LOG_INTERVAL:
            log.warning(
                "XDP flow maps full: new flows stay on the agent's path",
                extra={
                    "capacity": self.program.max_flows,
                    "flows": len(self._flows),
                    "quarantined": len(self._quarantine),
                    "refused": self._full_unlogged,
                    "error": error,
                },
            )
            self._full_logged_at, self._full_unlogged = now, 0

    def _new_generation(self, generation: int) -> None:
        """Every verdict in the map becomes stale at once; every flow the map knew is decided
        again at its next packet (also one decided under the new policy before this sync: its
        verdict was installed with the old generation)."""
        try:
            self.maps.new_generation(generation)
        except XdpError as exc:
            self._map_write_failed(exc)
            return  # tried again after the next batch
        if self._generation is not None:
            for merged in self._flows.values():
                merged.flow.policy_generation = -1
            log.info("policy reloaded: XDP verdicts of the old policy no longer apply")
        self._generation = generation

    # --- the flow table (OtherPath) ---------------------------------------------------------------

    def merge_into(self, flow: Flow) -> None:
        merged = self._flows.get(flow.seq)
        if merged is None or merged.flow is not flow:
            return
        # A decided flow keeps its orientation: "a" is key_fwd, "b" key_rev, at every merge.
        a = self.maps.counters(2 * merged.pair)
        b = self.maps.counters(2 * merged.pair + 1)
        flow.packets_fwd += a.packets - merged.packets_a
        flow.bytes_fwd += a.bytes - merged.bytes_a
        flow.packets_rev += b.packets - merged.packets_b
        flow.bytes_rev += b.bytes - merged.bytes_b
        merged.packets_a, merged.bytes_a, merged.packets_b, merged.bytes_b = (
            a.packets, a.bytes, b.packets, b.bytes
        )  # fmt: skip
        flow.flags_fwd |= a.tcp_flags
        flow.flags_rev |= b.tcp_flags
        # CLOCK_MONOTONIC, the flow table's clock, as of the kernel's last tick: up to a tick
        # behind the packet, so it only ever moves last_seen forward.
        last_seen = max(a.last_seen_ns, b.last_seen_ns) * NS
        if last_seen > flow.last_seen:
            flow.last_seen = last_seen

    def finished(self, flow: Flow) -> None:
        """The flow ends: its verdicts go first, so that its next packets come to the agent; then
        what the kernel counted since the table's last merge is merged; then its slot pair goes
        into quarantine. Only a packet another CPU is answering at that very instant (it read the
        verdict before the withdrawal) can miss the record: it counts into the pair after the
        final merge, and that count is lost to the record."""
        merged = self._flows.get(flow.seq)
        if merged is None or merged.flow is not flow:
            return
        # Until both verdicts are gone, one may still name the pair: the quarantine then takes
        # them along and withdraws them again before the pair can go to another flow.
        pending: Withdrawal | None = (flow.protocol, flow.key_fwd, flow.key_rev)
        try:
            try:
                self._withdraw(flow.protocol, flow.key_fwd, flow.key_rev)
                pending = None
            except XdpError as exc:
                self._map_write_failed(exc)
            self.merge_into(flow)  # what the kernel counted goes into the record all the same
        except XdpError as exc:
            self._map_write_failed(exc)
        finally:
            del self._flows[flow.seq]
            recorded = merged.packets_a + merged.packets_b  # what the flow's record holds
            self._quarantine.append((self._clock(), merged.pair, pending, recorded))

    def _withdraw(self, protocol: int, key_fwd: bytes, key_rev: bytes) -> None:
        self.maps.withdraw_verdict(protocol, key_fwd)
        self.maps.withdraw_verdict(protocol, key_rev)

    def _release_quarantined(self) -> None:
        """A slot pair is zeroed and reused only once no run of the program can still count into
        it: a packet that read its flow's verdict before the withdrawal may count after the final
        merge, and in a pair already handed on that count would land in another flow's record.
        The quarantine (ORPHAN_DELAY, far longer than a program run) rules that out; and since
        array slots are never freed or reallocated by the kernel, a pointer a program run holds
        always points at the slot its verdict named (a preallocated hash element deleted under a
        run could be reused at once for another key). A pair whose verdicts could not be withdrawn
        when its flow ended has them withdrawn first (a verdict still naming it would count
        another flow's packets into the next owner's slots), and then a whole quarantine more.
        What the pair counted beyond its flow's record (packets answered after the final merge)
        is counted in ``unrecorded`` before the zeroing. A withdrawal or zeroing that fails is
        counted and the pair stays in quarantine, tried again ORPHAN_DELAY later."""
        now = self._clock()
        due = now - ORPHAN_DELAY
        quarantine = self._quarantine
        while quarantine and quarantine[0][0] <= due:
            _, pair, pending, recorded = quarantine.popleft()
            try:
                if pending is not None:
                    self._withdraw(*pending)
                    # Withdrawn only now: a run that read a verdict just before may still count.
                    quarantine.append((now, pair, None, recorded))
                    continue
                late = self.maps.counters(2 * pair).packets + self.maps.counters(2 * pair + 1).packets
                self.maps.reset_counters(2 * pair)
                self.maps.reset_counters(2 * pair + 1)
            except XdpError as exc:
                self._map_write_failed(exc)
                # A zeroing may have half happened: what is left is no longer the flow's tally.
                quarantine.append((now, pair, pending, None if pending is None else recorded))
                continue
            if recorded is not None:
                self.unrecorded += max(0, late - recorded)
            self._free.append(pair)

    # --- health and metrics (other threads: reads only) ----------------------------------------------

    def close(self) -> None:
        """Detach the program and free its maps (after the last records were merged)."""
        self.program.close()

    def problem(self, now: float) -> str | None:
        """Why the fast path is broken (for /health), or None."""
        attachment = self.program.attachment
        if attachment is None or not self.program.is_attached():
            where = attachment.ifname if attachment else "the data interface"
            return f"XDP program no longer attached to {where}"
        return self.map_problem

    def fold_into(self, snapshot: Snapshot) -> Snapshot:
        """The agent's figures with the kernel's added: packets in and out, bytes, policy drops
        count both paths alike (so do dashboards and alarms); the xdp_* metrics tell them apart."""
        metrics = self.metrics()
        tx, denied = metrics["xdp_packets_out_total"], metrics["xdp_denied_packets_total"]
        tx_bytes, denied_bytes = metrics["xdp_bytes_out_total"], metrics["xdp_denied_bytes_total"]
        drops = dict(snapshot.drops)
        drops[POLICY_DENY] = drops.get(POLICY_DENY, 0) + int(denied)
        return dataclasses.replace(
            snapshot,
            packets_in=snapshot.packets_in + int(tx + denied),
            packets_out=snapshot.packets_out + int(tx),
            bytes_in=snapshot.bytes_in + int(tx_bytes + denied_bytes),
            bytes_out=snapshot.bytes_out + int(tx_bytes),
            drops=drops,
            extra={**snapshot.extra, **metrics},
        )

    def metrics(self) -> dict[str, float]:
        stats = self.maps.stats()
        attachment = self.program.attachment
        return {
            "xdp_attached": float(self.program.is_attached()),
            "xdp_native_mode": float(attachment is not None and attachment.mode == "native"),
            "xdp_packets_out_total": stats[Stat.TX_PACKETS],
            "xdp_bytes_out_total": stats[Stat.TX_BYTES],
            "xdp_denied_packets_total": stats[Stat.DENY_PACKETS],
            "xdp_denied_bytes_total": stats[Stat.DENY_BYTES],
            "xdp_passed_new_flow_total": stats[Stat.PASS_NO_VERDICT],
            "xdp_passed_unhandled_total": stats[Stat.PASS_UNHANDLED],
            "xdp_passed_other_total": stats[Stat.PASS_OTHER],
            "xdp_flows": len(self._flows),
            "xdp_flows_capacity": self.program.max_flows,
            "xdp_map_full_total": self.map_full,
            "xdp_map_errors_total": self.map_errors,
            "xdp_packets_unrecorded_total": self.unrecorded,
        }
