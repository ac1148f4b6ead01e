"""Tun mode end to end: the real agent, the kernel's nftables ruleset deciding, real Geneve.

The topology is conftest's (GWLB namespace 198.18.50.1 -- agent namespace 198.18.50.2). The
agent runs with ``mode = "tun"``; the agent namespace holds the appliance's ruleset (below):
web allowed, SSH denied, replies by conntrack, the agent's probe accepted, everything else
dropped. Inner addresses are in 198.19.0.0/16: nothing in either namespace routes them but the
agent's own policy routing, so whatever comes back went through the tun and the ruleset.

What the kernel changes when it forwards is the TTL (and so the IP checksum): a returned packet is
compared with the packet sent, TTL one lower; the Geneve header and options byte for byte.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw, raw

from gwlb_fleet import geneve as codec
from gwlb_fleet.geneve import GENEVE_PORT
from tests.netns.conftest import (
    AGENT_IP,
    GWLB_IP,
    GWLB_PORT,
    AgentFactory,
    AgentProcess,
    Lab,
    PeerResult,
    exchange,
)

CLIENT, SERVER = "198.19.1.10", "198.19.2.20"
TUN, TABLE, PRIORITY = "gwlbtun-t", 7081, 170

RULESET = """
table inet appliance {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ip saddr 192.0.2.253 ip daddr 192.0.2.254 udp dport 6082 accept comment "the agent's probe"
        ct state established,related accept
        ct state invalid drop
        tcp dport 22 counter drop comment "ssh denied"
        tcp dport { 80, 443 } accept comment "web allowed"
        udp dport { 53, 5353, 9000 } accept
        icmp type echo-request accept
    }
}
"""

AWS_OPTIONS = codec.aws_options(0x1122334455667788, 0x99AABBCCDDEEFF00, 0xDEADBEEF)
AWS_HEADER = 8 + 32  # Geneve base header and the three AWS-style options
OPAQUE_OPTIONS = (
    codec.GeneveOption(0x0777, 0x01, bytes(range(8))),
    codec.GeneveOption(0xFFF0, 0x85, b"\xc0\xff\xee\x00"),
    codec.GeneveOption(0x1234, 0x7F, b"opaque!!", reserved=5),
)

_ports = itertools.count(30000)
_ip_ids = itertools.count(3000)


def new_port() -> int:
    return next(_ports)


def geneve(inner: bytes, options: Sequence[codec.GeneveOption] = AWS_OPTIONS, *,
           proto: int = codec.PROTO_IPV4, vni: int = 0, critical: bool = False) -> bytes:
    header = GENEVE(
        vni=vni, proto=proto, critical=int(critical),
        options=[GeneveOptions(classid=o.option_class, type=o.option_type, reserved=o.reserved,
                               length=len(o.data) // 4, data=o.data) for o in options],
    )
    return raw(header) + inner


def udp(sport: int, dport: int, payload: bytes = b"u" * 32, src: str = CLIENT, dst: str = SERVER) -> bytes:
    return raw(IP(src=src, dst=dst, id=next(_ip_ids)) / UDP(sport=sport, dport=dport) / Raw(payload))


def tcp(sport: int, dport: int, flags: str, seq: int, ack: int = 0, src: str = CLIENT,
        dst: str = SERVER) -> bytes:
    return raw(IP(src=src, dst=dst, id=next(_ip_ids))
               / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=65535))


def forwarded(inner: bytes) -> bytes:
    """``inner`` as the kernel forwards it: TTL one lower, IP checksum updated, nothing else."""
    packet = IP(inner)
    packet.ttl -= 1
    del packet.chksum
    return raw(packet)


def returned(datagram: bytes, inner_offset: int) -> bytes:
    """The datagram the agent should send back: same header, the inner packet as forwarded."""
    return datagram[:inner_offset] + forwarded(datagram[inner_offset:])


def assert_came_back(result: PeerResult, expected: Sequence[bytes]) -> None:
    assert Counter(result.payloads) == Counter(expected), (
        f"{len(result.replies)} replies, {len(expected)} expected; "
        f"unexpected: {[p.hex() for p in set(result.payloads) - set(expected)][:2]}"
    )
    for reply in result.replies:
        assert (reply.src, reply.dst, reply.sport, reply.dport, reply.checksum) == (
            AGENT_IP, GWLB_IP, GWLB_PORT, GENEVE_PORT, 0)


def drop_delta(agent: AgentProcess, before: dict[str, float]) -> dict[str, float]:
    after = agent.drops()
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def rules_to(lab: Lab, table: int) -> list[str]:
    out = lab.agent.run("ip", "-4", "rule", "show").stdout
    return [line for line in out.splitlines() if f"lookup {table}" in line]


def tun_env(device: str = TUN, table: int = TABLE, priority: int = PRIORITY) -> dict[str, str]:
    return {"GWLB_AGENT_MODE": "tun", "GWLB_AGENT_TUN__DEVICE": device,
            "GWLB_AGENT_TUN__ROUTE_TABLE": str(table), "GWLB_AGENT_TUN__RULE_PRIORITY": str(priority),
            # An agent binds its NFLOG group: two in one namespace need two groups.
            "GWLB_AGENT_TUN__NFLOG_GROUP": str(table)}


@pytest.fixture(scope="module")
def ruleset(lab: Lab) -> Iterator[None]:
    subprocess.run(["ip", "netns", "exec", lab.agent.name, "nft", "-f", "-"], input=RULESET,
                   text=True, check=True, timeout=30, capture_output=True)
    yield
    lab.agent.run("nft", "flush", "ruleset", check=False)


@pytest.fixture(scope="module", params=["off", "tc"])
def offload(request: pytest.FixtureRequest) -> str:
    """Every test of the agent runs without and with the Geneve offload (kernel.offload)."""
    return str(request.param)


@pytest.fixture(scope="module")
def agent(agent_factory: AgentFactory, ruleset: None, offload: str) -> Iterator[AgentProcess]:
    # The policy file is not read in tun mode: one denying everything proves it.
    started = agent_factory('default_action = "deny"\n', listen_port=GENEVE_PORT,
                            env={**tun_env(), "GWLB_AGENT_TUN_OFFLOAD": offload})
    yield started
    started.terminate()  # the other parameter's agent takes the same device, port and table


# --- the ruleset decides --------------------------------------------------------------------------


def test_web_is_allowed_and_ssh_never_comes_back(lab: Lab, agent: AgentProcess) -> None:
    web, ssh = new_port(), new_port()
    web_syn = geneve(tcp(web, 80, "S", seq=1000))
    ssh_syn = geneve(tcp(ssh, 22, "S", seq=2000))
    barrier = geneve(udp(new_port(), 53))

    denied_before = ssh_denied(lab)
    result = exchange(lab, [ssh_syn, web_syn, ssh_syn, barrier], expect=2, linger=0.3)

    assert_came_back(result, [returned(web_syn, AWS_HEADER), returned(barrier, AWS_HEADER)])
    counters = agent.metrics()
    # The agent did hand SSH to the kernel (with the offload, the second SYN the kernel's program).
    handed = counters["gwlb_agent_tun_to_kernel_total"]
    assert handed + counters.get("gwlb_agent_tun_offload_decapsulated_total", 0) >= 4
    assert ssh_denied(lab) == denied_before + 2


def ssh_denied(lab: Lab) -> int:
    """The ruleset's count of SSH packets dropped (the ruleset lives for the module: both agents)."""
    nft = lab.agent.run("nft", "list", "ruleset").stdout
    rule = nft.split("ssh denied")[0].rsplit("\n", 1)[-1]
    return int(rule.split("packets ")[1].split()[0])


def test_both_directions_of_a_tcp_connection(lab: Lab, agent: AgentProcess) -> None:
    port = new_port()
    handshake = [
        geneve(tcp(port, 443, "S", seq=100)),
        geneve(tcp(443, port, "SA", seq=900, ack=101, src=SERVER, dst=CLIENT)),
        geneve(tcp(port, 443, "A", seq=101, ack=901)),
    ]
    result = exchange(lab, handshake, interval=0.01)
    assert_came_back(result, [returned(d, AWS_HEADER) for d in handshake])


def test_a_reply_the_ruleset_never_saw_opened_is_dropped(lab: Lab, agent: AgentProcess) -> None:
    # The control for the test above: a SYN-ACK from the server alone is not established.
    port = new_port()
    stray = geneve(tcp(443, port, "SA", seq=900, ack=101, src=SERVER, dst=CLIENT))
    barrier = geneve(udp(new_port(), 53))
    result = exchange(lab, [stray, barrier], expect=1, linger=0.3)
    assert_came_back(result, [returned(barrier, AWS_HEADER)])


# --- the header comes back as received --------------------------------------------------------------


def test_opaque_options_and_critical_bit_come_back_byte_for_byte(lab: Lab, agent: AgentProcess) -> None:
    datagram = geneve(udp(new_port(), 53, payload=b"opaque" * 9), OPAQUE_OPTIONS, vni=0xABCDE,
                      critical=True)
    header, offset = codec.parse(datagram)
    assert header.options_length == 32 and header.critical and header.options[2].reserved == 5

    result = exchange(lab, [datagram])

    assert_came_back(result, [returned(datagram, offset)])
    assert codec.parse(result.payloads[0]) == (header, offset)


def test_each_flow_gets_its_own_header(lab: Lab, agent: AgentProcess) -> None:
    # Back to back, so that the agent takes several flows in one batch.
    flows = [(new_port(), codec.aws_options(1, 2, cookie)) for cookie in (0x11111111, 0x22222222, 0x33333333)]
    datagrams = [geneve(udp(port, 53, payload=b"%02d" % n * 16), options)
                 for n in range(4) for port, options in flows]
    result = exchange(lab, datagrams)
    assert_came_back(result, [returned(d, AWS_HEADER) for d in datagrams])


@pytest.mark.parametrize("frame", ["ethernet", "vlan"])
def test_ethernet_inner_comes_back_in_its_ethernet_header(lab: Lab, agent: AgentProcess, frame: str) -> None:
    ip = IP(src=CLIENT, dst=SERVER, id=next(_ip_ids)) / TCP(sport=new_port(), dport=443, flags="S")
    ether = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    inner = raw(ether / Dot1Q(vlan=42) / ip if frame == "vlan" else ether / ip)
    datagram = geneve(inner, proto=codec.PROTO_ETHERNET)
    ip_offset = len(datagram) - len(raw(ip))

    result = exchange(lab, [datagram])

    assert_came_back(result, [returned(datagram, ip_offset)])


# --- fragments, ICMP errors, jumbo frames -------------------------------------------------------------


def test_fragmented_datagram_comes_back_as_the_same_fragments(lab: Lab, agent: AgentProcess) -> None:
    packet = IP(src=CLIENT, dst=SERVER, id=next(_ip_ids)) / UDP(sport=new_port(), dport=5353) / Raw(
        os.urandom(3000))
    pieces = [raw(piece) for piece in fragment(packet, fragsize=1200)]
    assert len(pieces) == 3
    datagrams = [geneve(piece) for piece in pieces]

    # conntrack reassembles and the kernel refragments to the largest fragment it got, same id.
    result = exchange(lab, datagrams)

    assert_came_back(result, [returned(d, AWS_HEADER) for d in datagrams])


def test_icmp_error_about_a_flow_comes_back_and_an_orphan_does_not(lab: Lab, agent: AgentProcess) -> None:
    request = udp(new_port(), 53, payload=b"query" * 4)
    unreachable = raw(IP(src=SERVER, dst=CLIENT, id=next(_ip_ids)) / ICMP(type=3, code=3)
                      / Raw(request[:28]))
    orphan = udp(new_port(), 53)
    orphan_unreachable = raw(IP(src=SERVER, dst=CLIENT, id=next(_ip_ids)) / ICMP(type=3, code=3)
                             / Raw(orphan[:28]))
    flow = [geneve(request), geneve(unreachable)]

    # conntrack relates the error to the request it quotes; the orphan is invalid: dropped.
    result = exchange(lab, [*flow, geneve(orphan_unreachable)], expect=2, interval=0.01, linger=0.3)

    assert_came_back(result, [returned(d, AWS_HEADER) for d in flow])


def test_jumbo_inner_packet_comes_back_whole(lab: Lab, agent: AgentProcess) -> None:
    inner = udp(new_port(), 9000, payload=os.urandom(8000 - 28))
    datagram = geneve(inner)
    result = exchange(lab, [datagram])
    assert_came_back(result, [returned(datagram, AWS_HEADER)])
    assert len(result.payloads[0]) == 8000 + AWS_HEADER


def test_malformed_geneve_is_dropped_before_the_kernel(lab: Lab, agent: AgentProcess) -> None:
    before = agent.drops()
    good = geneve(udp(new_port(), 53))
    bad_version = b"\x48" + good[1:]
    result = exchange(lab, [bad_version, good], expect=1)
    assert_came_back(result, [returned(good, AWS_HEADER)])
    assert drop_delta(agent, before) == {"geneve_bad_version": 1}


# --- health ---------------------------------------------------------------------------------------------


def test_health_fails_while_the_rule_is_gone_and_recovers(lab: Lab, agent: AgentProcess) -> None:
    assert agent.http("/health") == (200, "forwarding")
    [rule] = rules_to(lab, TABLE)
    try:
        lab.agent.run("ip", "rule", "del", "priority", str(PRIORITY))
        agent.wait_for(lambda: agent.health() == 503, "503 without the rule", timeout=5)
        assert "no probe came back through the tun" in agent.http("/health")[1]
    finally:
        if not rules_to(lab, TABLE):
            lab.agent.run("ip", "rule", "add", "priority", str(PRIORITY), "iif", TUN, "lookup", str(TABLE))
    agent.wait_for(lambda: agent.health() == 200, "200 with the rule back", timeout=5)
    assert rule in rules_to(lab, TABLE)


def test_health_fails_while_the_tun_is_down(lab: Lab, agent: AgentProcess) -> None:
    assert agent.health() == 200
    try:
        lab.agent.run("ip", "link", "set", TUN, "down")
        agent.wait_for(lambda: agent.health() == 503, "503 with the tun down", timeout=5)
    finally:
        lab.agent.run("ip", "link", "set", TUN, "up")
        # Bringing a device up again restores its addresses, not the routes of other tables.
        if "default" not in lab.agent.run("ip", "route", "show", "table", str(TABLE), check=False).stdout:
            lab.agent.run("ip", "route", "add", "default", "dev", TUN, "table", str(TABLE))
    agent.wait_for(lambda: agent.health() == 200, "200 with the tun up", timeout=5)


def test_health_fails_when_the_ruleset_drops_the_probe(lab: Lab, agent: AgentProcess) -> None:
    assert agent.health() == 200
    handle = lab.agent.run("nft", "-a", "list", "chain", "inet", "appliance", "forward").stdout
    probe_rule = next(line for line in handle.splitlines() if "the agent's probe" in line)
    number = probe_rule.rsplit("handle", 1)[1].strip()
    lab.agent.run("nft", "delete", "rule", "inet", "appliance", "forward", "handle", number)
    try:
        agent.wait_for(lambda: agent.health() == 503, "503 with the probe dropped", timeout=5)
    finally:
        lab.agent.run("nft", "insert", "rule", "inet", "appliance", "forward", "ip", "saddr",
                      "192.0.2.253", "ip", "daddr", "192.0.2.254", "udp", "dport", "6082", "accept",
                      "comment", '"the agent\'s probe"')
    agent.wait_for(lambda: agent.health() == 200, "200 with the probe accepted again", timeout=5)


# --- set up and removed ---------------------------------------------------------------------------------


def test_rule_removed_on_stop_and_a_crashed_runs_rule_cleaned_at_start(
    lab: Lab, agent_factory: AgentFactory, ruleset: None
) -> None:
    table, priority, device = TABLE + 1, PRIORITY + 1, TUN + "2"
    second = agent_factory("", env=tun_env(device, table, priority))
    assert len(rules_to(lab, table)) == 1

    second.kill()  # SIGKILL: nothing runs at exit, the rule stays behind
    assert len(rules_to(lab, table)) == 1
    # A stale second rule too, as two crashed runs with other priorities would leave.
    lab.agent.run("ip", "rule", "add", "priority", str(priority + 5), "iif", device, "lookup", str(table))

    second.restart()
    assert len(rules_to(lab, table)) == 1, rules_to(lab, table)
    datagram = geneve(udp(new_port(), 53))
    result = exchange(lab, [datagram], agent_port=second.listen_port)
    assert_came_back(result, [returned(datagram, AWS_HEADER)])

    assert second.terminate() == 0
    assert rules_to(lab, table) == []
    assert lab.agent.run("ip", "route", "show", "table", str(table), check=False).stdout.strip() == ""
    assert device not in lab.agent.run("ip", "link").stdout
