"""Tun mode with the Geneve offload (kernel.offload, agent/bpf/geneve_tc.c), end to end: the real
agent, the kernel's nftables ruleset deciding, real Geneve over conftest's veth pair.

After a flow's first packet the agent has installed its header; from then on the kernel takes the
Geneve header off and puts it back, and the agent's loop sees none of the flow's packets, while
the ruleset still sees every one (it forwards each through the tun). The test_tun_mode suite runs
with the offload too (parametrized); these tests show that the kernel does carry the packets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from gwlb_fleet import geneve as codec
from gwlb_fleet.geneve import GENEVE_PORT
from tests.netns.conftest import AgentFactory, AgentProcess, Lab, exchange
from tests.netns.test_tun_mode import (
    AWS_HEADER,
    OPAQUE_OPTIONS,
    TUN,
    assert_came_back,
    geneve,
    new_port,
    returned,
    ruleset,  # noqa: F401  (a fixture: the appliance's ruleset in the agent's namespace)
    ssh_denied,
    tcp,
    tun_env,
    udp,
)


@pytest.fixture(scope="module")
def agent(agent_factory: AgentFactory, ruleset: None) -> Iterator[AgentProcess]:  # noqa: F811
    started = agent_factory("", listen_port=GENEVE_PORT, env={**tun_env(), "GWLB_AGENT_TUN_OFFLOAD": "tc"})
    yield started
    if started.process.poll() is None:
        started.terminate()


def counters(agent: AgentProcess) -> dict[str, float]:
    names = {
        "to_kernel": "gwlb_agent_tun_to_kernel_total",
        "from_kernel": "gwlb_agent_tun_from_kernel_total",
        "packets_in": "gwlb_agent_packets_in_total",
        "decapsulated": "gwlb_agent_tun_offload_decapsulated_total",
        "encapsulated": "gwlb_agent_tun_offload_encapsulated_total",
        "installs": "gwlb_agent_tun_offload_installs_total",
        "changed": "gwlb_agent_tun_offload_decap_passed_changed_total",
    }
    metrics = agent.metrics()
    found = {short: metrics[name] for short, name in names.items()}
    found["from_kernel"] -= metrics["gwlb_agent_tun_probes_returned_total"]  # the probe's, 10 a second
    return found


def grew(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def test_after_its_first_packet_a_flows_packets_are_carried_by_the_kernel(
    lab: Lab, agent: AgentProcess
) -> None:
    port = new_port()
    first = geneve(udp(port, 53, payload=b"first" * 4))
    exchange(lab, [first])
    before = counters(agent)

    later = [geneve(udp(port, 53, payload=b"%04d" % n * 5)) for n in range(20)]
    result = exchange(lab, later, interval=0.002)

    # Byte for byte what the agent sends (test_tun_mode's checks: addresses, ports, checksum 0).
    assert_came_back(result, [returned(d, AWS_HEADER) for d in later])
    # packets_in counts the kernel's too (test_the_totals_count_what_the_kernel_carries)
    assert grew(before, counters(agent)) == {"decapsulated": 20, "encapsulated": 20, "packets_in": 20}


def totals(agent: AgentProcess) -> tuple[float, ...]:
    metrics = agent.metrics()
    return tuple(
        metrics[f"gwlb_agent_{name}_total"] for name in ("packets_in", "packets_out", "bytes_in", "bytes_out")
    )


def test_the_totals_count_what_the_kernel_carries(lab: Lab, agent: AgentProcess) -> None:
    """packets and bytes in and out are the GWLB's datagrams whichever path carried them."""
    port = new_port()
    sent = [geneve(udp(port, 53, payload=b"%04d" % n * (n + 1))) for n in range(30)]
    before, offload_before = totals(agent), counters(agent)

    result = exchange(lab, sent, interval=0.002)

    assert_came_back(result, [returned(d, AWS_HEADER) for d in sent])
    grown = [after - was for after, was in zip(totals(agent), before, strict=True)]
    assert grown == [30, 30, sum(map(len, sent)), sum(map(len, result.payloads))]
    carried = grew(offload_before, counters(agent))
    assert (carried["decapsulated"], carried["encapsulated"]) == (29, 30)  # all but the first


def test_the_first_packets_reply_is_encapsulated_by_the_kernel_too(lab: Lab, agent: AgentProcess) -> None:
    # The agent installs the header before it writes the first packet: the forwarded packet
    # already finds it at the tun's egress.
    before = counters(agent)
    datagram = geneve(udp(new_port(), 53))
    assert_came_back(exchange(lab, [datagram]), [returned(datagram, AWS_HEADER)])
    assert grew(before, counters(agent)) == {
        "to_kernel": 1, "packets_in": 1, "installs": 1, "encapsulated": 1
    }


def test_a_denied_flow_stays_denied_with_the_offload(lab: Lab, agent: AgentProcess) -> None:
    ssh = new_port()
    syn = geneve(tcp(ssh, 22, "S", seq=2000))
    barrier = geneve(udp(new_port(), 53))
    denied_before, before = ssh_denied(lab), counters(agent)

    result = exchange(lab, [syn, syn, syn, syn, barrier], expect=1, interval=0.01, linger=0.3)

    assert_came_back(result, [returned(barrier, AWS_HEADER)])
    assert ssh_denied(lab) == denied_before + 4  # the ruleset saw every SYN, the kernel's too
    assert grew(before, counters(agent))["decapsulated"] == 3  # after the first, the kernel's


def test_a_changed_geneve_header_is_learned_again_and_sent_back(lab: Lab, agent: AgentProcess) -> None:
    port = new_port()
    old = [geneve(udp(port, 53, payload=b"old%02d" % n)) for n in range(3)]
    new = [geneve(udp(port, 53, payload=b"new%02d" % n), OPAQUE_OPTIONS) for n in range(3)]
    exchange(lab, old, interval=0.01)
    before = counters(agent)

    result = exchange(lab, new, interval=0.01)

    header = len(new[0]) - len(udp(port, 53, payload=b"new00"))
    assert_came_back(result, [returned(d, header) for d in new])
    assert codec.parse(result.payloads[-1])[0].options == OPAQUE_OPTIONS
    grown = grew(before, counters(agent))
    # The first with the new header went to the agent (changed), which installed it; the rest
    # the kernel carried with the new header.
    assert (grown["changed"], grown["installs"], grown["decapsulated"]) == (1, 1, 2)


def decap_filters(lab: Lab) -> list[str]:
    out = lab.agent.run("tc", "filter", "show", "dev", "ag0", "ingress").stdout
    return [line for line in out.splitlines() if "tun_decap" in line]


# Run in the agent's namespace (an ifindex and tcx are a namespace's): the programs attached to a
# device's tcx hook, detaching one, and the netlink fallback's life cycle.
_IN_NAMESPACE = """
import ctypes, json, socket, sys
from gwlb_agent.kernel.offload import OBJECT_PATH, TunOffload, attached_programs
from gwlb_agent.bpf.libbpf import BPF_TC_EGRESS, BPF_TC_INGRESS, libbpf

command, device, direction = sys.argv[1:4]
ifindex = socket.if_nametoindex(device)
point = BPF_TC_INGRESS if direction == "ingress" else BPF_TC_EGRESS
if command == "programs":
    print(json.dumps(attached_programs(ifindex, point)))
elif command == "detach":  # the tcx link of the hook's program (links are global: by program id)
    lib = libbpf().lib
    [program] = attached_programs(ifindex, point)
    lib.bpf_link_get_next_id.argtypes = [ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)]
    link_id = ctypes.c_uint32(0)
    while lib.bpf_link_get_next_id(link_id.value, ctypes.byref(link_id)) == 0:
        fd = lib.bpf_link_get_fd_by_id(link_id.value)
        info = ctypes.create_string_buffer(24)  # struct bpf_link_info: type, id, prog_id, tcx
        length = ctypes.c_uint32(24)
        if fd >= 0 and lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(length)) == 0:
            if info.raw[8:12] == program.to_bytes(4, "little"):
                assert lib.bpf_link_detach(fd) == 0
                print(json.dumps(program))
                break
else:  # "netlink": the fallback's filters, one a dead process left, replaced, then removed
    first = TunOffload(OBJECT_PATH, max_flows=64)
    first.attach(ifindex, socket.if_nametoindex("lo"), handle=7099, tcx=False)
    steps = [first.attach_kind, first.problem()]
    first.hooks = []  # as a process that died: its filters stay
    first.close()
    second = TunOffload(OBJECT_PATH, max_flows=64)
    second.attach(ifindex, socket.if_nametoindex("lo"), handle=7099, tcx=False)
    steps.append(second.problem())
    print(json.dumps(steps), flush=True)
    input()  # the test looks at the filters, then removes one
    steps = [second.problem()]
    second.close()
    print(json.dumps(steps), flush=True)
"""


def in_namespace(lab: Lab, *args: str) -> object:
    return json.loads(lab.agent.run(sys.executable, "-c", _IN_NAMESPACE, *args).stdout)


def test_a_killed_agents_programs_go_with_it(
    lab: Lab, agent: AgentProcess, agent_factory: AgentFactory
) -> None:
    """tcx links: a SIGKILLed agent leaves no program redirecting into its tun, gone with it."""
    before = in_namespace(lab, "programs", "ag0", "ingress")
    assert isinstance(before, list) and len(before) == 1  # the module's agent's tun_decap
    env = {**tun_env(TUN + "3", 7083, 173), "GWLB_AGENT_TUN_OFFLOAD": "tc"}
    second = agent_factory("", env=env)
    with_second = in_namespace(lab, "programs", "ag0", "ingress")
    assert isinstance(with_second, list) and len(with_second) == 2 and with_second[0] == before[0]
    assert len(in_namespace(lab, "programs", TUN + "3", "egress")) == 1  # type: ignore[arg-type]
    assert decap_filters(lab) == []  # links, not netlink filters

    second.kill()  # SIGKILL: nothing of the agent runs; its links close with its descriptors
    agent.wait_for(lambda: in_namespace(lab, "programs", "ag0", "ingress") == before,
                   "the killed agent's tun_decap gone", timeout=5)
    second.restart()
    assert len(in_namespace(lab, "programs", "ag0", "ingress")) == 2  # type: ignore[arg-type]
    datagram = geneve(udp(new_port(), 53))
    flow = [datagram, datagram]  # the second carried by the restarted agent's programs
    result = exchange(lab, flow, agent_port=second.listen_port, interval=0.01)
    assert_came_back(result, [returned(d, AWS_HEADER) for d in flow])

    assert second.terminate() == 0
    assert in_namespace(lab, "programs", "ag0", "ingress") == before  # the module's agent's, untouched
    assert agent.health() == 200


def test_without_tcx_the_programs_are_filters_a_restart_replaces_and_a_stop_removes(lab: Lab) -> None:
    command = ["ip", "netns", "exec", lab.agent.name, sys.executable, "-c", _IN_NAMESPACE]
    script = subprocess.Popen(
        [*command, "netlink", "ag0", "ingress"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert script.stdout is not None and script.stdin is not None
        assert json.loads(script.stdout.readline()) == ["netlink", None, None]
        filters = [line for line in decap_filters(lab) if "handle 0x1bbb" in line]  # 7099
        assert len(filters) == 1, decap_filters(lab)  # the dead one's replaced, not added
        lab.agent.run("tc", "filter", "del", "dev", "lo", "egress")
        script.stdin.write("\n")
        script.stdin.flush()
        [problem] = json.loads(script.stdout.readline())
        assert "tun offload: tun_encap on lo egress is no longer attached" in problem
        assert script.wait(10) == 0
    finally:
        if script.poll() is None:
            script.kill()
    assert not [line for line in decap_filters(lab) if "handle 0x1bbb" in line]  # removed at close
    assert len(decap_filters(lab)) == 0  # the module's agent's are links


def test_detaching_a_program_fails_health(lab: Lab, agent: AgentProcess) -> None:
    """Last in the module: the agent cannot attach the program again (and is stopped after)."""
    assert agent.health() == 200
    in_namespace(lab, "detach", TUN, "egress")  # what only a tcx link's owner, or root, can do
    agent.wait_for(lambda: agent.health() == 503, "503 with tun_encap detached", timeout=5)
    assert "tun offload: tun_encap on" in agent.http("/health")[1]
