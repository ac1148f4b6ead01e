"""The real agent with ``dataplane = "xdp"``, real Geneve packets between namespaces: flows the
agent decided are answered by its XDP program on the agent's interface, byte for byte as the
agent answers; records count every packet whichever path carried it; the metrics show both
paths; /health fails when the program is detached; ``xdp`` refuses to start where XDP cannot be
attached, ``auto`` starts without it and says why.

One agent holds the interface's XDP attachment at a time, so each test starts its own and stops
it (the attachment goes with it); each runs with the program in native (driver) and in generic
mode.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from collections.abc import Iterator

import pytest

from gwlb_agent.bpf.libbpf import libbpf
from gwlb_fleet.geneve import GENEVE_PORT
from tests.netns.conftest import AgentFactory, AgentProcess, Lab, exchange
from tests.netns.test_agent_dataplane import AWS_OPTIONS, assert_returned, geneve, new_port, tcp, udp

XDP_ENV = {"GWLB_AGENT_DATAPLANE": "xdp"}
PASS_PROGRAM_ON_GW0 = """
import ctypes, socket
from gwlb_agent.bpf.libbpf import XDP_FLAGS_DRV_MODE, libbpf
from gwlb_agent.xdp.loader import XdpProgram
program = XdpProgram(max_flows=16)
lib = libbpf().lib
lib.bpf_xdp_attach.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p]
assert lib.bpf_xdp_attach(socket.if_nametoindex("gw0"), program.program_fd, XDP_FLAGS_DRV_MODE, None) == 0
"""
POLICY = """
default_action = "allow"

[[rules]]
id = "deny-ssh"
action = "deny"
protocol = "tcp"
dst_ports = [22]
"""


def detach_xdp_link(lab: Lab, interface: str) -> None:
    """Detach the XDP program's BPF link from outside the agent, as `bpftool link detach` does
    (`ip link set ... xdp off` cannot: netlink neither replaces nor removes a link)."""
    shown = json.loads(lab.agent.run("ip", "-j", "link", "show", interface).stdout)[0]
    program_id = shown["xdp"]["prog"]["id"]
    lib = libbpf().lib
    lib.bpf_link_get_next_id.argtypes = [ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)]
    lib.bpf_link_get_fd_by_id.argtypes = [ctypes.c_uint32]
    lib.bpf_obj_get_info_by_fd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
    lib.bpf_link_detach.argtypes = [ctypes.c_int]
    link_id = ctypes.c_uint32(0)
    while lib.bpf_link_get_next_id(link_id.value, ctypes.byref(link_id)) == 0:
        fd = lib.bpf_link_get_fd_by_id(link_id.value)
        if fd < 0:
            continue
        try:
            info = (ctypes.c_uint32 * 32)()  # struct bpf_link_info: type, id, prog_id, ...
            size = ctypes.c_uint32(ctypes.sizeof(info))
            assert lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) == 0
            if info[2] == program_id:
                assert lib.bpf_link_detach(fd) == 0
                return
        finally:
            os.close(fd)
    raise AssertionError(f"no BPF link holds program {program_id} on {interface}")


@pytest.fixture(params=["generic", "native"])
def xdp_agent(
    request: pytest.FixtureRequest, lab: Lab, agent_factory: AgentFactory
) -> Iterator[AgentProcess]:
    """An agent with the fast path in each attach mode. Native XDP_TX on a veth hands the frame
    to the peer's XDP ring, which exists only while the peer has an XDP program too: the GWLB's
    side gets one that passes everything (the agent's own program, which answers nothing there:
    no GWLB network configured), attached through netlink so that it outlives its helper."""
    mode = request.param
    if mode == "native":
        lab.gwlb.run(sys.executable, "-c", PASS_PROGRAM_ON_GW0)
    agent = agent_factory(POLICY, listen_port=GENEVE_PORT, env={**XDP_ENV, "GWLB_AGENT_XDP_ATTACH": mode})
    yield agent
    if agent.process.poll() is None:
        assert agent.terminate() == 0


def test_decided_flows_are_answered_in_the_kernel_exactly_as_the_agent_answers(
    lab: Lab, xdp_agent: AgentProcess
) -> None:
    assert "XDP fast path attached" in xdp_agent.log_text()
    port = new_port()
    first = geneve(tcp(port, 80, "S"), AWS_OPTIONS)
    assert_returned(exchange(lab, [first]), [first])  # decided by the agent
    rest = [geneve(tcp(port, 80, "A", payload=bytes([n]) * n), AWS_OPTIONS) for n in range(1, 41)]
    assert_returned(exchange(lab, rest, expect=len(rest)), rest)
    metrics = xdp_agent.metrics()
    assert metrics["gwlb_agent_xdp_attached"] == 1
    assert metrics["gwlb_agent_xdp_packets_out_total"] == len(rest)
    assert metrics["gwlb_agent_packets_out_total"] == 1 + len(rest)  # both paths


def test_a_denied_flow_is_dropped_in_the_kernel_and_counted_as_a_policy_drop(
    lab: Lab, xdp_agent: AgentProcess
) -> None:
    port = new_port()
    # The first packet is decided by the agent; the next ones meet the verdict in the kernel.
    assert exchange(lab, [geneve(tcp(port, 22, "S"))], timeout=0.5).replies == []
    rest = [geneve(tcp(port, 22, "A", payload=b"x")) for _ in range(9)]
    assert exchange(lab, rest, timeout=0.5).replies == []
    metrics = xdp_agent.metrics()
    assert metrics["gwlb_agent_xdp_denied_packets_total"] == 9
    assert metrics['gwlb_agent_drops_total{reason="policy_deny"}'] == 10


def test_the_flow_record_counts_every_packet_whichever_path_carried_it(
    lab: Lab, xdp_agent: AgentProcess
) -> None:
    port = new_port()
    opening = [
        geneve(tcp(port, 443, "S")),
        geneve(tcp(443, port, "SA", src="198.19.2.20", dst="198.19.1.10")),
    ]
    data = [geneve(udp(port, 53, payload=b"q" * n)) for n in range(1, 6)]
    middle = [geneve(tcp(port, 443, "PA", payload=b"d" * n)) for n in range(1, 31)]
    closing = [geneve(tcp(port, 443, "RA"))]
    # Each flow's first packet alone: the agent decides it before the next ones arrive.
    for batch in (opening, middle, closing, data[:1], data[1:]):
        assert_returned(exchange(lab, batch, expect=len(batch)), batch)
    assert xdp_agent.metrics()["gwlb_agent_xdp_packets_out_total"] == len(middle) + len(data) - 1
    assert xdp_agent.terminate() == 0
    records = {
        (r["protocol"], r["dst_port"]): r
        for r in xdp_agent.flow_records()
        if port in (r["src_port"], r["dst_port"])
    }
    tcp_record, udp_record = records[(6, 443)], records[(17, 53)]
    assert tcp_record["reason"] == "rst"
    assert (tcp_record["packets_fwd"], tcp_record["packets_rev"]) == (1 + len(middle) + 1, 1)
    assert udp_record["packets_fwd"] == len(data)
    assert udp_record["bytes_fwd"] == sum(len(d) for d in data) - len(data) * 40  # inner lengths


def test_health_fails_when_the_program_is_detached(lab: Lab, xdp_agent: AgentProcess) -> None:
    xdp_agent.wait_for(lambda: xdp_agent.health() == 200, "healthy")
    detach_xdp_link(lab, "ag0")
    xdp_agent.wait_for(lambda: xdp_agent.health() == 503, "unhealthy once detached")
    assert "no longer attached" in xdp_agent.http("/health")[1]


def test_xdp_refuses_to_start_without_xdp_and_auto_starts_saying_why(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    env = {**XDP_ENV, "GWLB_AGENT_XDP_INTERFACE": "nosuch0"}
    with pytest.raises(AssertionError, match=r"(?s)agent exited 1 .*interface nosuch0"):
        agent_factory(POLICY, env=env)
    auto = agent_factory(POLICY, env={**env, "GWLB_AGENT_DATAPLANE": "auto"})
    assert "XDP fast path not used" in auto.log_text() and "nosuch0" in auto.log_text()
    datagram = geneve(udp(new_port(), 53))
    assert_returned(exchange(lab, [datagram], agent_port=auto.listen_port), [datagram])


def test_a_killed_agent_leaves_no_program_answering_behind(lab: Lab, xdp_agent: AgentProcess) -> None:
    """The program hangs on a BPF link the agent's process holds: when it dies, so does the
    attachment, and no stale verdict is answered without an agent to keep the records."""
    assert "xdp" in json.loads(lab.agent.run("ip", "-j", "link", "show", "ag0").stdout)[0]
    xdp_agent.kill()
    assert "xdp" not in json.loads(lab.agent.run("ip", "-j", "link", "show", "ag0").stdout)[0]


def test_on_a_veth_the_default_attach_is_generic_so_replies_reach_a_peer_without_xdp(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    """Native XDP_TX on a veth hands the frame to the peer's XDP ring, which exists only while
    the peer runs an XDP program: with none on gw0 (the GWLB's side), native mode would answer
    into nothing. ``native-or-generic`` (the default) therefore takes generic on a veth."""
    lab.gwlb.run("ip", "link", "set", "dev", "gw0", "xdp", "off")  # an earlier test's pass program
    agent = agent_factory(POLICY, listen_port=GENEVE_PORT, env=XDP_ENV)
    try:
        assert "XDP on a veth: generic mode" in agent.log_text()
        assert agent.metrics()["gwlb_agent_xdp_native_mode"] == 0
        port = new_port()
        first = geneve(tcp(port, 80, "S"), AWS_OPTIONS)
        assert_returned(exchange(lab, [first]), [first])
        rest = [geneve(tcp(port, 80, "A", payload=bytes([n]) * n), AWS_OPTIONS) for n in range(1, 11)]
        assert_returned(exchange(lab, rest, expect=len(rest)), rest)
        assert agent.metrics()["gwlb_agent_xdp_packets_out_total"] == len(rest)
    finally:
        assert agent.terminate() == 0
