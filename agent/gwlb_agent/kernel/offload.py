"""Tun mode's Geneve offload: load agent/bpf/geneve_tc.c (``bpf.object.BpfObject``), attach it,
keep its flow map.

Two TC programs (clsact, cls_bpf in direct-action mode): ``tun_decap`` on the data interface's
ingress takes the Geneve header off the packets of flows in ``tun_flows`` and redirects them into
the tun, ``tun_encap`` on the tun's egress puts the header back on what the kernel forwards and
sends it out of the data interface. The kernel still forwards every packet through the tun, so
the appliance's ruleset and conntrack see each one as before; the agent's loop sees only the
packets of flows whose header it has not installed (and those the programs leave to it).

The agent installs a flow direction's header when it learns it (``install``): the outer IPv4 and
UDP header exactly as its raw socket sends it (source: the address the route to the GWLB node
picks) and the Geneve header as received. ``tun_decap`` writes ``last_used`` at most once a
second; the agent reads it when its table would expire the entry (``last_used_ns``).

Attaching: through BPF links on tcx (Linux 6.6+: BPF_TCX_INGRESS, BPF_TCX_EGRESS), which go
with the process: an agent that dies, even by SIGKILL, leaves no program redirecting into a tun
that went with it, as the XDP fast path's link does. Where the kernel refuses tcx (EINVAL
before 6.6) they are netlink clsact filters (cls_bpf, direct action), which outlive a process
that dies. Those are known by priority (``PRIORITY``) and handle (the agent's listen port: two
agents on one interface listen on two ports, and the one that bound a port is its only live
owner): ``attach`` removes one a dead agent left on the data interface (its redirect target, a
tun, went with that process), with tcx too, and ``close`` removes ours. Only an agent that starts
with the offload on the same port removes a dead one's filter: until then that agent's known
flows are dropped at the interface, as they are at a socket nobody reads. The log says which
is used (``attach_kind``). What the programs do not take they pass on (TC_ACT_UNSPEC, tcx's
TCX_NEXT), so that the hook's other programs and filters, another agent's or the operator's,
still see it (tcx's run before the clsact filters). The clsact qdisc itself stays on the data
interface (empty, it costs nothing; another program may use it); the tun's goes with the tun.

Memory: ``tun_flows`` is a preallocated hash map (320-byte values, 16-byte keys, the element's
own header, a bucket each), locked in the kernel: 400 bytes an entry, 50 MiB for the default
131,072 (memlock in the map's fdinfo: 52,430,480 bytes, measured on 6.18), whatever the CPUs.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import logging
import os
import socket
import struct
import time
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from gwlb_agent.bpf.libbpf import (
    BPF_TC_EGRESS,
    BPF_TC_F_REPLACE,
    BPF_TC_INGRESS,
    BPF_TCX_EGRESS,
    BPF_TCX_INGRESS,
    TcHook,
    TcOpts,
    XdpError,
    libbpf,
)
from gwlb_agent.bpf.object import BpfObject
from gwlb_agent.xdp.maps import pack_gwlb_prefixes

log = logging.getLogger("gwlb_agent.kernel.offload")

OBJECT_PATH = Path(__file__).with_name("geneve_tc.o")
PRIORITY = 0x6081  # our filters' priority on both hooks; the handle is the listen port
HEADER_MAX = 20 + 8 + 8 + 252  # outer IPv4 + UDP + the largest Geneve header
TC_ACT_UNSPEC, TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = -1, 0, 2, 7
_KEY = struct.Struct("=B3x4s4s2s2s")
_VALUE = struct.Struct(f"=QII16s{HEADER_MAX}s")  # last_used, length, pad, the key, the header
_CONFIG = struct.Struct("=4sIIIIHH")
_PREFIX = struct.Struct("=I4s")
_U64 = struct.Struct("=Q")
_FULL = (errno.E2BIG, errno.ENOMEM, errno.ENOSPC)
_TCX = {BPF_TC_INGRESS: BPF_TCX_INGRESS, BPF_TC_EGRESS: BPF_TCX_EGRESS}
_TCX_REFUSED = (errno.EINVAL, errno.EOPNOTSUPP, 524)  # EINVAL before 6.6; 524: ENOTSUPP


class OffloadError(XdpError):
    """The offload could not be loaded, attached or used; the message says which call and why."""


class Stat(IntEnum):
    """The programs' per-CPU statistics (enum stat in geneve_tc.c)."""

    DECAP = 0
    ENCAP = 1
    DECAP_PASS_OTHER = 2
    DECAP_PASS_UNHANDLED = 3
    DECAP_PASS_UNKNOWN = 4
    DECAP_PASS_CHANGED = 5
    DECAP_PASS_FAILED = 6
    ENCAP_PASS_UNHANDLED = 7
    ENCAP_PASS_UNKNOWN = 8
    ENCAP_FAILED = 9
    ENCAP_PASS_FAILED = 10
    DECAP_BYTES = 11  # the UDP payloads of DECAP's datagrams: what the agent counts as bytes_in
    ENCAP_BYTES = 12  # the UDP payloads ENCAP sent: what the agent counts as bytes_out


@dataclass(frozen=True, slots=True)
class OffloadConfig:
    gwlb_networks: tuple[ipaddress.IPv4Network, ...]
    tun_ifindex: int
    data_ifindex: int
    max_inner: int = 8500
    honour_critical: bool = False
    local_address: str = ""  # the agent's listen address; "" or 0.0.0.0: any
    port: int = 6081
    l3_offset: int = 0  # 0 on a tun; 14 for BPF_PROG_TEST_RUN, which hands in Ethernet frames


@dataclass(frozen=True, slots=True)
class Hook:
    ifindex: int
    attach_point: int
    handle: int
    program: str
    program_id: int
    link_fd: int = -1  # the tcx link; -1: a netlink filter

    def describe(self) -> str:
        where = "ingress" if self.attach_point == BPF_TC_INGRESS else "egress"
        try:
            name = socket.if_indextoname(self.ifindex)
        except OSError:
            name = f"ifindex {self.ifindex} (gone)"
        return f"{self.program} on {name} {where}"


def attached_programs(ifindex: int, attach_point: int) -> list[int]:
    """The ids of the programs attached to an interface's tcx hook (BPF_TC_INGRESS or
    BPF_TC_EGRESS), in order; ENODEV (no such interface) and EINVAL (no tcx) as XdpError."""
    bpf = libbpf()
    ids = (ctypes.c_uint32 * 64)()
    count = ctypes.c_uint32(len(ids))
    flags = ctypes.c_uint32(0)
    result = bpf.lib.bpf_prog_query(
        ifindex, _TCX[attach_point], 0, ctypes.byref(flags), ids, ctypes.byref(count)
    )
    bpf.check(result, f"query tcx programs of ifindex {ifindex}")
    return list(ids[: count.value])


def map_key(key: bytes) -> bytes:
    """struct tun_key from tun.py's 13-byte flow key (protocol, addresses, ports)."""
    return _KEY.pack(key[0], key[1:5], key[5:9], key[9:11], key[11:13])


def route_source(gwlb: bytes) -> bytes:
    """The source address the kernel gives the agent's raw socket for datagrams to ``gwlb``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.connect((socket.inet_ntoa(gwlb), 6081))  # no packet: it only picks route and source
        return socket.inet_aton(udp.getsockname()[0])


class TunOffload:
    """The loaded object: two programs, their maps, and where they are attached."""

    def __init__(self, path: Path = OBJECT_PATH, max_flows: int = 131_072) -> None:
        self._object = BpfObject(path, {"tun_flows": max_flows}, OffloadError)
        self._bpf = self._object.bpf
        self._check = self._object.check
        self.hooks: list[Hook] = []
        self.attach_kind = ""  # "tcx" (BPF links) or "netlink" (clsact filters) once attached
        try:
            self.program_fds = {name: self._object.program_fd(name) for name in ("tun_decap", "tun_encap")}
            self._fds = {
                name: self._object.map_fd(name)
                for name in ("tun_flows", "tun_gwlb_networks", "tun_config", "tun_stats")
            }
            self.max_flows = max_flows
            self._cpus = self._bpf.possible_cpus()
        except BaseException:
            self.close()
            raise

    def configure(self, config: OffloadConfig) -> None:
        local = config.local_address if config.local_address not in ("", "0.0.0.0") else "0.0.0.0"
        value = _CONFIG.pack(
            socket.inet_aton(local),
            config.max_inner,
            config.tun_ifindex,
            config.data_ifindex,
            int(config.honour_critical),
            socket.htons(config.port),
            config.l3_offset,
        )
        # The trie first: the configuration then says whether the program scans or looks up.
        for network in config.gwlb_networks:
            prefix = _PREFIX.pack(network.prefixlen, network.network_address.packed)
            self._update("tun_gwlb_networks", prefix, b"\x01")
        value += pack_gwlb_prefixes(config.gwlb_networks)
        self._update("tun_config", struct.pack("=I", 0), value)

    def _update(self, name: str, key: bytes, value: bytes) -> None:
        self._check(self._bpf.lib.bpf_map_update_elem(self._fds[name], key, value, 0), f"update {name}")

    # --- attaching ------------------------------------------------------------------------------

    def attach(self, data_ifindex: int, tun_ifindex: int, handle: int, tcx: bool = True) -> None:
        """tun_decap on the data interface's ingress, tun_encap on the tun's egress: through tcx
        links, or (where tcx is refused, or ``tcx`` is False) as netlink filter ``handle`` (the
        listen port) at PRIORITY. A filter a dead agent left under ``handle`` is removed either
        way."""
        hooks = ((data_ifindex, BPF_TC_INGRESS, "tun_decap"), (tun_ifindex, BPF_TC_EGRESS, "tun_encap"))
        for ifindex, attach_point, _ in hooks:
            self._remove_stale(ifindex, attach_point, handle)
        if tcx:
            try:
                for ifindex, attach_point, program in hooks:
                    self._attach_link(ifindex, attach_point, handle, program)
            except OffloadError as exc:
                if self.hooks or exc.code not in _TCX_REFUSED:
                    raise
                log.info("tcx refused: the tun offload's programs are netlink TC filters",
                         extra={"reason": str(exc)})
            else:
                self.attach_kind = "tcx"
                return
        for ifindex, attach_point, program in hooks:
            self._attach(ifindex, attach_point, handle, program)
        self.attach_kind = "netlink"

    def _attach_link(self, ifindex: int, attach_point: int, handle: int, program: str) -> None:
        fd = self._check(
            self._bpf.lib.bpf_link_create(self.program_fds[program], ifindex, _TCX[attach_point], None),
            f"tcx link of {program} to ifindex {ifindex}",
        )
        self.hooks.append(Hook(ifindex, attach_point, handle, program, self._program_id(program), fd))

    def _program_id(self, program: str) -> int:
        info = ctypes.create_string_buffer(8)  # struct bpf_prog_info: type, id
        length = ctypes.c_uint32(len(info))
        self._check(
            self._bpf.lib.bpf_obj_get_info_by_fd(self.program_fds[program], info, ctypes.byref(length)),
            f"bpf_obj_get_info_by_fd({program})",
        )
        return int(struct.unpack_from("=I", info.raw, 4)[0])

    def _remove_stale(self, ifindex: int, attach_point: int, handle: int) -> None:
        stale = self._query(ifindex, attach_point, handle)
        if stale:
            self._detach(ifindex, attach_point, handle)
            log.warning(
                "removed a tun offload program a previous run left behind",
                extra={"ifindex": ifindex, "program_id": stale},
            )

    def _attach(self, ifindex: int, attach_point: int, handle: int, program: str) -> None:
        hook = TcHook(sz=ctypes.sizeof(TcHook), ifindex=ifindex, attach_point=attach_point)
        result = self._bpf.lib.bpf_tc_hook_create(ctypes.byref(hook))
        if result < 0 and -result != errno.EEXIST:
            self._check(result, f"clsact qdisc on ifindex {ifindex}")
        opts = TcOpts(
            sz=ctypes.sizeof(TcOpts),
            prog_fd=self.program_fds[program],
            flags=BPF_TC_F_REPLACE,
            handle=handle,
            priority=PRIORITY,
        )
        result = self._bpf.lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts))
        self._check(result, f"attach {program} to ifindex {ifindex}")
        self.hooks.append(Hook(ifindex, attach_point, handle, program, opts.prog_id))

    def _query(self, ifindex: int, attach_point: int, handle: int) -> int:
        """The id of the program under ``handle`` at our priority, 0 when there is none."""
        hook = TcHook(sz=ctypes.sizeof(TcHook), ifindex=ifindex, attach_point=attach_point)
        opts = TcOpts(sz=ctypes.sizeof(TcOpts), handle=handle, priority=PRIORITY)
        result = self._bpf.lib.bpf_tc_query(ctypes.byref(hook), ctypes.byref(opts))
        if result < 0:
            if -result in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                return 0  # no filter, no qdisc, or no device
            self._check(result, f"query TC filters of ifindex {ifindex}")
        return int(opts.prog_id)

    def _detach(self, ifindex: int, attach_point: int, handle: int) -> None:
        hook = TcHook(sz=ctypes.sizeof(TcHook), ifindex=ifindex, attach_point=attach_point)
        opts = TcOpts(sz=ctypes.sizeof(TcOpts), handle=handle, priority=PRIORITY)
        result = self._bpf.lib.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts))
        if result < 0 and -result not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
            self._check(result, f"detach TC filter of ifindex {ifindex}")

    def problem(self) -> str | None:
        """Why the offload no longer works as attached (a program detached, its interface gone),
        or None."""
        for hook in self.hooks:
            if not self._attached(hook):
                return f"tun offload: {hook.describe()} is no longer attached"
        return None

    def _attached(self, hook: Hook) -> bool:
        if hook.link_fd < 0:
            return self._query(hook.ifindex, hook.attach_point, hook.handle) == hook.program_id
        try:
            return hook.program_id in attached_programs(hook.ifindex, hook.attach_point)
        except XdpError:
            return False  # ENODEV: the interface is gone

    def close(self) -> None:
        """Detach both programs (closing a link detaches it) and free the object (its maps go
        with it)."""
        try:
            for hook in getattr(self, "hooks", []):
                if hook.link_fd >= 0:
                    os.close(hook.link_fd)
                elif self._query(hook.ifindex, hook.attach_point, hook.handle) == hook.program_id:
                    self._detach(hook.ifindex, hook.attach_point, hook.handle)
            self.hooks = []
        finally:
            self._object.close()

    # --- the flow map ---------------------------------------------------------------------------

    def install(self, key: bytes, header: bytes) -> bool:
        """Put a flow direction's header (outer IPv4+UDP, Geneve) in the map; False when the map
        is full (the flow stays on the agent's path). ``last_used`` starts now: an entry the
        kernel has not carried yet is as fresh as its first packet."""
        if not 36 <= len(header) <= HEADER_MAX:
            raise ValueError(f"tun offload header of {len(header)} bytes")
        entry = map_key(key)
        value = _VALUE.pack(time.monotonic_ns(), len(header), 0, entry, header)
        result = self._bpf.lib.bpf_map_update_elem(self._fds["tun_flows"], entry, value, 0)
        if result < 0 and -result in _FULL:
            return False
        self._check(result, "update tun_flows")
        return True

    def remove(self, key: bytes) -> None:
        result = self._bpf.lib.bpf_map_delete_elem(self._fds["tun_flows"], map_key(key))
        if result < 0 and -result != errno.ENOENT:
            self._check(result, "delete from tun_flows")

    def last_used_ns(self, key: bytes) -> int | None:
        """CLOCK_MONOTONIC of the entry's last use, to a second; None when it is not in the map."""
        value = ctypes.create_string_buffer(_VALUE.size)
        result = self._bpf.lib.bpf_map_lookup_elem(self._fds["tun_flows"], map_key(key), value)
        if result < 0:
            if -result == errno.ENOENT:
                return None
            self._check(result, "lookup in tun_flows")
        return int(_U64.unpack_from(value.raw)[0])

    def entry(self, key: bytes) -> bytes | None:
        """The stored header of a flow direction (tests and diagnostics)."""
        value = ctypes.create_string_buffer(_VALUE.size)
        if self._bpf.lib.bpf_map_lookup_elem(self._fds["tun_flows"], map_key(key), value) < 0:
            return None
        _, length, _, _, header = _VALUE.unpack(value.raw)
        return bytes(header[:length])

    def stats(self) -> dict[Stat, int]:
        """The programs' statistics, summed over CPUs."""
        values = ctypes.create_string_buffer(8 * self._cpus)
        totals: dict[Stat, int] = {}
        for stat in Stat:
            self._check(
                self._bpf.lib.bpf_map_lookup_elem(self._fds["tun_stats"], struct.pack("=I", stat), values),
                "lookup tun_stats",
            )
            totals[stat] = sum(struct.unpack(f"={self._cpus}Q", values.raw))
        return totals

    # --- BPF_PROG_TEST_RUN ----------------------------------------------------------------------

    def test_run(self, program: str, frame: bytes) -> tuple[int, bytes]:
        """Run a program once on ``frame`` (an Ethernet frame) in the kernel: its return code
        and the frame after it."""
        retval, output = self._object.test_run(program, frame)
        return ctypes.c_int32(retval).value, output


def open_offload(
    config: OffloadConfig, max_flows: int, path: Path = OBJECT_PATH
) -> TunOffload:
    """Load, configure and attach; OffloadError (with everything undone) when any step fails."""
    offload = TunOffload(path, max_flows)
    try:
        offload.configure(config)
        offload.attach(config.data_ifindex, config.tun_ifindex, handle=config.port)
    except BaseException:
        offload.close()
        raise
    return offload
