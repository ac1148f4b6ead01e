"""Load the prebuilt fast-path object (``bpf.object.BpfObject``), configure it, attach it to the
data interface (native mode, generic as a fallback), detach it, and run it on a single frame
(BPF_PROG_TEST_RUN) for tests.

The object file is built ahead of time by ``make -C agent/bpf`` (scripts/bootstrap runs it);
loading needs libbpf.so.1 and CAP_BPF + CAP_NET_ADMIN, no compiler and no kernel headers.
"""

from __future__ import annotations

import ctypes
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from gwlb_agent.bpf.libbpf import BPF_XDP, XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE, LinkCreateOpts, XdpError
from gwlb_agent.bpf.object import BpfObject
from gwlb_agent.xdp.maps import FastPathConfig, FastPathMaps

OBJECT_PATH = Path(__file__).with_name("geneve_xdp.o")
PROGRAM_NAME = "geneve_xdp"
MAP_NAMES = ("flow_verdicts", "flow_slots", "gwlb_networks", "config", "stats")
XDP_ACTIONS = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}


@dataclass(frozen=True, slots=True)
class TestRun:
    action: str  # XDP_PASS, XDP_TX, ...
    frame: bytes  # the frame after the program (what XDP_TX would send)


@dataclass(frozen=True, slots=True)
class Attachment:
    ifname: str
    ifindex: int
    mode: str  # "native" or "generic"
    flags: int
    program_id: int
    link_fd: int  # a BPF link: closing it (or the agent dying) detaches the program


class XdpProgram:
    """The loaded fast-path object: its program, its maps, and where it is attached."""

    def __init__(self, path: Path = OBJECT_PATH, max_flows: int = 0) -> None:
        # Each direction of a flow is one entry: its verdict, and its counters slot.
        sizes = {"flow_verdicts": 2 * max_flows, "flow_slots": 2 * max_flows} if max_flows else {}
        self._object = BpfObject(path, sizes)
        self._bpf = self._object.bpf
        try:
            self.program_fd = self._object.program_fd(PROGRAM_NAME)
            fds = {name: self._object.map_fd(name) for name in MAP_NAMES}
            # Flows the fast path holds: two entries each (one a direction) in both flow maps.
            self.max_flows = self._object.max_entries("flow_verdicts") // 2
            self.maps = FastPathMaps(self._bpf, fds, self._bpf.possible_cpus())
        except BaseException:
            self.close()
            raise
        self.attachment: Attachment | None = None

    def configure(self, config: FastPathConfig) -> None:
        self.maps.configure(config)

    # --- attach ---------------------------------------------------------------------------------

    def attach(self, ifname: str, modes: tuple[str, ...] = ("native", "generic")) -> Attachment:
        """Attach through a BPF link in the first mode the interface accepts; XdpError lists why
        each one failed. A link, not a netlink attachment: it goes with the agent's process, so
        an agent that dies leaves no program answering with verdicts nobody maintains, and an
        interface that already has a program (another agent's) refuses a second."""
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError as exc:
            raise XdpError(f"interface {ifname}: {exc.strerror}", exc.errno or 0) from exc
        failures = []
        for mode in modes:
            flags = XDP_FLAGS_DRV_MODE if mode == "native" else XDP_FLAGS_SKB_MODE
            opts = LinkCreateOpts(sz=ctypes.sizeof(LinkCreateOpts), flags=flags)
            self._bpf.take_log()
            result = self._bpf.lib.bpf_link_create(self.program_fd, ifindex, BPF_XDP, ctypes.byref(opts))
            try:
                link_fd = self._bpf.check(result, f"XDP on {ifname} ({mode})")
            except XdpError as exc:
                failures.append(str(exc))
                continue
            try:
                program_id = self._attached_id(ifindex, flags)
            except BaseException:
                os.close(link_fd)
                raise
            self.attachment = Attachment(ifname, ifindex, mode, flags, program_id, link_fd)
            return self.attachment
        raise XdpError("; ".join(failures))

    def _attached_id(self, ifindex: int, flags: int) -> int:
        program_id = ctypes.c_uint32(0)
        self._bpf.check(self._bpf.lib.bpf_xdp_query_id(ifindex, flags, program_id), "bpf_xdp_query_id")
        return program_id.value

    def is_attached(self) -> bool:
        """Still attached as we left it (the link can be detached from outside, or the interface
        removed)."""
        attachment = self.attachment
        if attachment is None:
            return False
        try:
            return self._attached_id(attachment.ifindex, attachment.flags) == attachment.program_id
        except XdpError:
            return False  # the interface is gone

    def detach(self) -> None:
        attachment, self.attachment = self.attachment, None
        if attachment is not None:
            os.close(attachment.link_fd)

    def close(self) -> None:
        """Detach (if attached) and free the object: maps and program go with their last fd."""
        try:
            if getattr(self, "attachment", None) is not None:
                self.detach()
        finally:
            self._object.close()

    # --- BPF_PROG_TEST_RUN ----------------------------------------------------------------------

    def test_run(self, frame: bytes) -> TestRun:
        """Run the program once on ``frame`` (an Ethernet frame) in the kernel, without a NIC."""
        retval, output = self._object.test_run(PROGRAM_NAME, frame)
        return TestRun(XDP_ACTIONS.get(retval, f"unknown action {retval}"), output)
