"""The real agent, real Geneve packets, between network namespaces this module creates.

The GWLB namespace (198.18.50.1, plus the stranger 198.18.50.99) sends Geneve built with scapy
from UDP source port 40001 to the agent (198.18.50.2) and reads what comes back on port 6081
with a raw socket, so that every reply's UDP header is checked too. Inner addresses are in
198.19.0.0/16; they are only data here, nothing routes them.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence

import pytest
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw, raw

from gwlb_fleet import geneve as codec
from gwlb_fleet.geneve import GENEVE_PORT
from tests.netns.conftest import (
    AGENT_BIN,
    AGENT_IP,
    GWLB_IP,
    GWLB_PORT,
    STRANGER_IP,
    STRANGER_PORT,
    AgentFactory,
    AgentProcess,
    Lab,
    PeerResult,
    Sent,
    exchange,
    start_peer,
)

CLIENT, SERVER = "198.19.1.10", "198.19.2.20"

MAIN_POLICY = """
default_action = "allow"
internal_cidrs = ["198.19.2.0/24"]

[[rules]]
id = "deny-ssh"
action = "deny"
protocol = "tcp"
dst_ports = [22]

# ICMP that a server starts on its own is denied: an ICMP error from a server is therefore
# forwarded only if the agent ties it to the flow it quotes.
[[rules]]
id = "deny-icmp-from-servers"
action = "deny"
protocol = "icmp"
src = ["198.19.2.0/24"]
"""

ALLOW_ALL = 'default_action = "allow"\n'

AWS_OPTIONS = codec.aws_options(0x1122334455667788, 0x99AABBCCDDEEFF00, 0xDEADBEEF)
# Unknown classes, one critical (type high bit), one with its reserved bits set: 32 bytes.
OPAQUE_OPTIONS = (
    codec.GeneveOption(0x0777, 0x01, bytes(range(8))),
    codec.GeneveOption(0xFFF0, 0x85, b"\xc0\xff\xee\x00"),
    codec.GeneveOption(0x1234, 0x7F, b"opaque!!", reserved=5),
)

_ports = itertools.count(20000)
_ip_ids = itertools.count(1000)


def new_port() -> int:
    """A client port no other test uses, so that every test starts its own flows."""
    return next(_ports)


# --- packet builders (scapy) ------------------------------------------------------------------------


def geneve(
    inner: bytes,
    options: Sequence[codec.GeneveOption] = AWS_OPTIONS,
    *,
    proto: int = codec.PROTO_IPV4,
    vni: int = 0,
    critical: bool = False,
    oam: bool = False,
) -> bytes:
    header = GENEVE(
        vni=vni, proto=proto, critical=int(critical), oam=int(oam),
        # length given explicitly: scapy 2.8's GeneveOptions.post_build computes it with
        # ``p[3] & 0x3`` and so clears the option's reserved bits.
        options=[GeneveOptions(classid=o.option_class, type=o.option_type, reserved=o.reserved,
                               length=len(o.data) // 4, data=o.data) for o in options],
    )
    return raw(header) + inner


def udp(sport: int, dport: int, payload: bytes = b"u" * 32, src: str = CLIENT,
        dst: str = SERVER) -> bytes:
    return raw(IP(src=src, dst=dst, id=next(_ip_ids)) / UDP(sport=sport, dport=dport) / Raw(payload))


def tcp(sport: int, dport: int, flags: str = "S", src: str = CLIENT, dst: str = SERVER,
        payload: bytes = b"", **ip: object) -> bytes:
    packet = IP(src=src, dst=dst, id=next(_ip_ids), **ip) / TCP(sport=sport, dport=dport, flags=flags)
    return raw(packet / Raw(payload)) if payload else raw(packet)


def echo(ident: int, reply: bool = False, src: str = CLIENT, dst: str = SERVER) -> bytes:
    return raw(IP(src=src, dst=dst, id=next(_ip_ids))
               / ICMP(type=0 if reply else 8, id=ident, seq=1) / Raw(b"ping" * 8))


def _ether() -> Ether:
    # Explicit addresses: without them scapy would look the destination up on this host.
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def assert_returned(result: PeerResult, sent: Sequence[bytes], *, sport: int = GWLB_PORT) -> None:
    """Every datagram came back once, byte for byte, from the agent, sport -> 6081, csum 0."""
    assert Counter(result.payloads) == Counter(sent), (
        f"{len(result.replies)} replies for {len(sent)} sent; missing "
        f"{len(set(sent) - set(result.payloads))}, unexpected {len(set(result.payloads) - set(sent))}"
    )
    for reply in result.replies:
        assert (reply.src, reply.dst, reply.sport, reply.dport, reply.checksum) == (
            AGENT_IP, GWLB_IP, sport, GENEVE_PORT, 0)


def drop_delta(agent: AgentProcess, before: dict[str, float]) -> dict[str, float]:
    after = agent.drops()
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


# --- the shared agent ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent(agent_factory: AgentFactory) -> AgentProcess:
    """One agent on 6081 for the tests that do not stop, reload or re-policy it."""
    return agent_factory(MAIN_POLICY, listen_port=GENEVE_PORT)


# --- options, ports, inner packets returned intact ------------------------------------------------------


def test_aws_options_come_back_byte_for_byte(lab: Lab, agent: AgentProcess) -> None:
    inner = tcp(new_port(), 80, payload=b"GET / HTTP/1.1\r\n\r\n")
    datagram = geneve(inner, AWS_OPTIONS, vni=0x00ABCD)
    header, offset = codec.parse(datagram)
    assert header.options == AWS_OPTIONS and header.options_length == 32  # the test's own input

    result = exchange(lab, [datagram])

    assert_returned(result, [datagram])
    returned = GENEVE(result.payloads[0])
    assert [(o.classid, o.type, o.data) for o in returned.options] == [
        (0x0108, 1, bytes.fromhex("1122334455667788")),
        (0x0108, 2, bytes.fromhex("99aabbccddeeff00")),
        (0x0108, 3, bytes.fromhex("deadbeef")),
    ]
    assert returned.vni == 0x00ABCD
    assert result.payloads[0][offset:] == inner


def test_reply_goes_from_each_senders_own_port_to_6081(lab: Lab, agent: AgentProcess) -> None:
    # seed 002: gwlb.56736 > nva.6081 is answered nva.56736 > gwlb.6081
    datagram = geneve(udp(new_port(), 53))
    result = exchange(lab, [Sent(datagram, sport=56736)])
    assert_returned(result, [datagram], sport=56736)


def test_opaque_32_byte_options_with_a_critical_option_come_back(lab: Lab, agent: AgentProcess) -> None:
    inner = udp(new_port(), 4789, payload=b"opaque-flow" * 5)
    datagram = geneve(inner, OPAQUE_OPTIONS, critical=True)
    header, offset = codec.parse(datagram)
    assert header.options_length == 32 and header.critical and header.options[1].critical
    assert header.options[2].reserved == 5

    result = exchange(lab, [datagram])

    assert_returned(result, [datagram])
    assert codec.parse(result.payloads[0]) == (header, offset)
    assert result.payloads[0][offset:] == inner


@pytest.mark.parametrize("frame", ["ethernet", "vlan"])
def test_ethernet_inner_protocol_0x6558(lab: Lab, agent: AgentProcess, frame: str) -> None:
    ip = IP(src=CLIENT, dst=SERVER, id=next(_ip_ids)) / TCP(sport=new_port(), dport=443, flags="S")
    ether = _ether()
    inner = raw(ether / Dot1Q(vlan=42) / ip if frame == "vlan" else ether / ip)
    datagram = geneve(inner, proto=codec.PROTO_ETHERNET)
    before = agent.drops()

    result = exchange(lab, [datagram])

    assert_returned(result, [datagram])
    assert drop_delta(agent, before) == {}


def test_jumbo_inner_packet_comes_back_whole(lab: Lab, agent: AgentProcess) -> None:
    inner = udp(new_port(), 9000, payload=os.urandom(8000 - 28))
    assert len(inner) == 8000
    datagram = geneve(inner)

    result = exchange(lab, [datagram])

    assert_returned(result, [datagram])
    assert len(result.payloads[0]) == 8000 + 8 + 32


def test_tcp_udp_and_icmp_echo_both_ways(lab: Lab, agent: AgentProcess) -> None:
    t, u, ident = new_port(), new_port(), new_port()
    inners = [
        tcp(t, 80, "S"), tcp(80, t, "SA", src=SERVER, dst=CLIENT), tcp(t, 80, "A"),
        udp(u, 53), udp(53, u, src=SERVER, dst=CLIENT),
        echo(ident), echo(ident, reply=True, src=SERVER, dst=CLIENT),
    ]
    datagrams = [geneve(inner) for inner in inners]
    before = agent.drops()

    result = exchange(lab, datagrams)

    assert_returned(result, datagrams)
    assert drop_delta(agent, before) == {}


def test_echo_a_server_starts_is_denied(lab: Lab, agent: AgentProcess) -> None:
    # The control for the ICMP error test below: ICMP started by a server is denied.
    denied = geneve(echo(new_port(), src=SERVER, dst=CLIENT))
    barrier = geneve(udp(new_port(), 53))
    before = agent.drops()

    result = exchange(lab, [denied, barrier], expect=1)

    assert_returned(result, [barrier])
    assert drop_delta(agent, before) == {"policy_deny": 1}


def test_icmp_error_is_forwarded_with_the_flow_it_quotes(lab: Lab, agent: AgentProcess) -> None:
    port = new_port()
    request = udp(port, 53, payload=b"query" * 4)
    unreachable = raw(IP(src=SERVER, dst=CLIENT, id=next(_ip_ids)) / ICMP(type=3, code=3)
                      / Raw(request[:28]))
    orphan_request = udp(new_port(), 53)
    orphan_unreachable = raw(IP(src=SERVER, dst=CLIENT, id=next(_ip_ids)) / ICMP(type=3, code=3)
                             / Raw(orphan_request[:28]))
    datagrams = [geneve(request), geneve(unreachable)]
    before = agent.drops()

    # The error quoting a flow the agent never saw is the servers' own ICMP: denied.
    result = exchange(lab, [*datagrams, geneve(orphan_unreachable)], expect=2)

    assert_returned(result, datagrams)
    assert drop_delta(agent, before) == {"policy_deny": 1}


def test_ip_header_with_options_is_parsed_past_them(lab: Lab, agent: AgentProcess) -> None:
    options = [IPOption_RR(routers=["198.19.9.1", "198.19.9.2"])]
    ssh = tcp(new_port(), 22, options=options)
    web = tcp(new_port(), 80, options=options)
    assert ssh[0] & 0x0F > 5 and web[0] & 0x0F > 5
    before = agent.drops()

    # Read at a fixed 20-byte offset, port 22 would not be found and ssh would pass.
    result = exchange(lab, [geneve(ssh), geneve(web)], expect=1)

    assert_returned(result, [geneve(web)])
    assert drop_delta(agent, before) == {"policy_deny": 1}


# --- fragments -----------------------------------------------------------------------------------------


def _fragments(port: int) -> list[bytes]:
    packet = IP(src=CLIENT, dst=SERVER, id=next(_ip_ids)) / UDP(sport=port, dport=5353) / Raw(
        os.urandom(3000))
    pieces = [raw(piece) for piece in fragment(packet, fragsize=1200)]
    assert len(pieces) == 3
    return pieces


def test_fragments_in_order_are_forwarded(lab: Lab, agent: AgentProcess) -> None:
    datagrams = [geneve(piece) for piece in _fragments(new_port())]
    before = agent.drops()

    result = exchange(lab, datagrams)

    assert_returned(result, datagrams)
    assert drop_delta(agent, before) == {}


def test_later_fragments_before_the_first_are_held_then_released(lab: Lab, agent: AgentProcess) -> None:
    first, second, third = (geneve(piece) for piece in _fragments(new_port()))
    before = agent.drops()

    result = exchange(lab, [third, second, first], interval=0.02)

    assert_returned(result, [first, second, third])
    assert result.payloads[0] == first, "a held fragment went out before its first fragment"
    assert drop_delta(agent, before) == {}


def test_later_fragment_whose_first_never_comes_is_dropped_as_orphan(
    lab: Lab, agent: AgentProcess
) -> None:
    _, second, _ = (geneve(piece) for piece in _fragments(new_port()))
    before = agent.drops()

    result = exchange(lab, [second], expect=0, linger=0.3)

    assert result.replies == []
    agent.wait_for(lambda: drop_delta(agent, before) == {"fragment_orphan": 1},
                   "the held fragment counted as an orphan", timeout=3.0)


# --- deny ---------------------------------------------------------------------------------------------


def test_deny_rule_drops_ssh_and_counts_it_while_web_passes(lab: Lab, agent: AgentProcess) -> None:
    ssh = geneve(tcp(new_port(), 22))
    web = geneve(tcp(new_port(), 80))
    before = agent.drops()

    result = exchange(lab, [ssh, ssh, web], expect=1)

    assert_returned(result, [web])
    assert drop_delta(agent, before) == {"policy_deny": 2}


# --- malformed input ---------------------------------------------------------------------------------


def _good_inner() -> bytes:
    return udp(new_port(), 53)


def _header(first: int = 0x08, flags: int = 0, proto: int = 0x0800) -> bytes:
    return bytes((first, flags)) + proto.to_bytes(2, "big") + b"\x00\x00\x00\x00"


def _aws_option_bytes() -> bytes:
    return codec.build(codec.GeneveHeader(options=AWS_OPTIONS))[8:]


def _tlv_overrun() -> bytes:
    # 32 bytes of options whose first TLV claims 31 words of data.
    return b"\x01\x08\x01\x1f" + bytes(28)


def _ipv4_header(version_ihl: int = 0x45, total: int = 40) -> bytes:
    header = bytearray(raw(IP(src=CLIENT, dst=SERVER, proto=17, id=next(_ip_ids))))
    header[0] = version_ihl
    header[2:4] = total.to_bytes(2, "big")
    return bytes(header)


def _tlv_overrun_on_known_flow() -> tuple[list[bytes], bytes]:
    port = new_port()
    return [geneve(udp(port, 53))], _header() + _tlv_overrun() + udp(port, 53)


MALFORMED: dict[str, tuple[Callable[[], tuple[list[bytes], bytes | Sent]], str]] = {
    "geneve shorter than 8 bytes": (lambda: ([], b"\x08\x00\x08\x00\x00\x00"), "geneve_truncated"),
    "empty datagram": (lambda: ([], b""), "geneve_truncated"),
    "geneve version 1": (lambda: ([], b"\x48" + geneve(_good_inner())[1:]), "geneve_bad_version"),
    "option length past the end": (
        lambda: ([], _header(first=0x3F) + _aws_option_bytes()), "geneve_options_overrun"),
    "option TLV overruns the options area (new flow)": (
        lambda: ([], _header() + _tlv_overrun() + _good_inner()), "geneve_options_overrun"),
    "option TLV overruns the options area (known flow)": (
        _tlv_overrun_on_known_flow, "geneve_options_overrun"),
    "O (control) bit set": (
        lambda: ([], _header(flags=0x80) + _aws_option_bytes() + _good_inner()), "geneve_control"),
    "IPv6 inner, protocol type 0x0800": (
        lambda: ([], geneve(raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1, dport=2)))),
        "non_ipv4"),
    "IPv6 inner, protocol type 0x86dd": (
        lambda: ([], geneve(raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1, dport=2)),
                            proto=0x86DD)), "non_ipv4"),
    "IPv6 in an Ethernet inner": (
        lambda: ([], geneve(raw(_ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP()),
                            proto=codec.PROTO_ETHERNET)), "non_ipv4"),
    "Ethernet inner cut before its type": (
        lambda: ([], geneve(b"\x02" * 10, proto=codec.PROTO_ETHERNET)), "inner_truncated"),
    "no inner packet": (lambda: ([], geneve(b"")), "inner_truncated"),
    "truncated inner IP header": (lambda: ([], geneve(_good_inner()[:12])), "inner_truncated"),
    "IP total length beyond the packet": (
        lambda: ([], geneve(_ipv4_header(total=1400) + b"\x00" * 20)), "inner_truncated"),
    "UDP header cut short": (lambda: ([], geneve(_ipv4_header(total=22) + b"\x13\x88")),
                             "inner_truncated"),
    "IHL below 5": (lambda: ([], geneve(_ipv4_header(version_ihl=0x44) + b"\x00" * 20)),
                    "inner_bad_header"),
    "IP total length below the header": (
        lambda: ([], geneve(_ipv4_header(total=12) + b"\x00" * 20)), "inner_bad_header"),
    "inner larger than 8500": (
        lambda: ([], geneve(udp(new_port(), 53, payload=bytes(8600 - 28)))), "oversize"),
    "datagram larger than the receive slot": (
        lambda: ([], geneve(udp(new_port(), 53, payload=bytes(8900 - 28)))), "oversize"),
    "TCP fragment at offset 8 (RFC 1858)": (
        lambda: ([], geneve(raw(IP(src=CLIENT, dst=SERVER, proto=6, frag=1, id=next(_ip_ids))
                                / Raw(bytes(40))))), "fragment_invalid"),
    "outer source outside --gwlb-cidr": (
        lambda: ([], Sent(geneve(_good_inner()), src=STRANGER_IP, sport=STRANGER_PORT)),
        "source_not_allowed"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_is_dropped_counted_and_forwarding_goes_on(
    lab: Lab, agent: AgentProcess, case: str
) -> None:
    build, reason = MALFORMED[case]
    prelude, bad = build()
    good = geneve(_good_inner())
    before = agent.drops()

    result = exchange(lab, [*prelude, bad, good], expect=len(prelude) + 1)

    assert_returned(result, [*prelude, good])
    assert drop_delta(agent, before) == {reason: 1}
    assert agent.health() == 200


def test_random_garbage_is_dropped_and_counted(lab: Lab, agent: AgentProcess) -> None:
    rng = random.Random(8926)
    garbage = [rng.randbytes(rng.randint(1, 400)) for _ in range(40)]
    good = geneve(_good_inner())
    before = agent.drops()

    result = exchange(lab, [*garbage, good], expect=1)

    assert_returned(result, [good])
    assert sum(drop_delta(agent, before).values()) == len(garbage)
    assert agent.health() == 200


# --- health and drain ---------------------------------------------------------------------------------


def test_health_answers_the_gwlb_and_not_a_stranger(lab: Lab, agent: AgentProcess) -> None:
    assert agent.http("/health", via=lab.gwlb, host=AGENT_IP) == (200, "forwarding")
    status, _ = agent.http("/health", via=lab.gwlb, host=AGENT_IP, interface=STRANGER_IP)
    assert status == 0, "the health endpoint answered an address outside the GWLB's networks"
    assert agent.http("/drain", "POST", via=lab.gwlb, host=AGENT_IP)[0] == 403
    assert agent.health() == 200


def test_drain_cli_with_only_the_health_address(lab: Lab, agent: AgentProcess) -> None:
    try:
        drained = agent.cli("drain")
        assert drained.returncode == 0, f"gwlb-agent drain --health: {drained.stderr.strip()}"
        assert agent.health() == 503
        undrained = agent.cli("undrain")
        assert undrained.returncode == 0, f"gwlb-agent undrain --health: {undrained.stderr.strip()}"
        assert agent.health() == 200
    finally:
        agent.http("/undrain", "POST")


def _forwards_existing_flow_while_draining(lab: Lab, agent: AgentProcess, port: int) -> None:
    datagram = geneve(udp(port, 53, payload=b"still here" * 3))
    assert_returned(exchange(lab, [datagram], agent_port=agent.listen_port), [datagram])


def test_drain_and_undrain_cli_as_on_an_appliance(
    lab: Lab, agent: AgentProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = tmp_path_factory.mktemp("appliance") / "agent.toml"
    config.write_text(f'gwlb_cidrs = ["{GWLB_IP}/32"]\nhealth = "0.0.0.0:{agent.health_port}"\n')
    port = new_port()
    _forwards_existing_flow_while_draining(lab, agent, port)
    try:
        drained = lab.agent.run(AGENT_BIN, "drain", "--config", str(config), check=False)
        assert drained.returncode == 0, drained.stderr
        assert agent.http("/health") == (503, "draining")
        assert agent.metrics()["gwlb_agent_draining"] == 1
        _forwards_existing_flow_while_draining(lab, agent, port)
        undrained = lab.agent.run(AGENT_BIN, "undrain", "--config", str(config), check=False)
        assert undrained.returncode == 0, undrained.stderr
        assert agent.http("/health") == (200, "forwarding")
    finally:
        agent.http("/undrain", "POST")


def test_sigusr1_drains_and_sigusr2_undrains(lab: Lab, agent: AgentProcess) -> None:
    port = new_port()
    _forwards_existing_flow_while_draining(lab, agent, port)
    try:
        agent.signal(signal.SIGUSR1)
        agent.wait_for(lambda: agent.health() == 503, "503 after SIGUSR1", timeout=3)
        assert agent.http("/health")[1] == "draining"
        _forwards_existing_flow_while_draining(lab, agent, port)
        agent.signal(signal.SIGUSR2)
        agent.wait_for(lambda: agent.health() == 200, "200 after SIGUSR2", timeout=3)
    finally:
        agent.http("/undrain", "POST")


# --- SIGHUP under traffic ------------------------------------------------------------------------------

DENY_8443 = ALLOW_ALL + """
[[rules]]
id = "deny-8443"
action = "deny"
protocol = "tcp"
dst_ports = [8443]
"""


def _stream(port: int, count: int) -> list[bytes]:
    """``count`` distinct datagrams of one UDP flow. Built once with scapy and then numbered
    in place (scapy takes about a millisecond a packet); UDP checksum 0, so it stays valid."""
    template = geneve(raw(IP(src=CLIENT, dst=SERVER, id=next(_ip_ids))
                          / UDP(sport=port, dport=5000, chksum=0) / Raw(b"seq000000")))
    return [template[:-6] + b"%06d" % i for i in range(count)]


def test_sighup_reloads_under_traffic_without_loss(lab: Lab, agent_factory: AgentFactory) -> None:
    hup = agent_factory(ALLOW_ALL)
    existing_8443 = new_port()
    before_reload = geneve(tcp(existing_8443, 8443))
    assert_returned(exchange(lab, [before_reload], agent_port=hup.listen_port), [before_reload])

    stream = _stream(new_port(), 3000)
    peer = start_peer(lab, [Sent(d) for d in stream], expect=len(stream), interval=0.001,
                      timeout=5.0, agent_port=hup.listen_port)
    time.sleep(1.0)
    hup.write_policy(DENY_8443)
    hup.signal(signal.SIGHUP)
    took = hup.wait_for(lambda: hup.metrics().get("gwlb_agent_policy_generation") == 2,
                        "policy generation 2 after SIGHUP", timeout=1.5)
    assert peer.process.poll() is None, "the stream had ended before the reload: not under traffic"
    result = peer.result()

    assert took < 1.5
    assert_returned(result, stream)
    assert hup.drops() == dict.fromkeys(hup.drops(), 0)

    # Afterwards the newly denied port is dropped: a new flow, and the flow that had been allowed.
    before = hup.drops()
    allowed = geneve(udp(new_port(), 5000))
    denied = [geneve(tcp(new_port(), 8443)), geneve(tcp(existing_8443, 8443, "A"))]
    result = exchange(lab, [*denied, allowed], expect=1, agent_port=hup.listen_port)
    assert_returned(result, [allowed])
    assert drop_delta(hup, before) == {"policy_deny": 2}


@pytest.mark.parametrize("bad_policy", [
    pytest.param('default_action = "allow"\n[[rules]\n', id="not-toml"),
    pytest.param(DENY_8443.replace("dst_ports = [8443]", 'dst = ["198.19.300.0/24"]'), id="bad-cidr"),
])
def test_sighup_with_an_invalid_policy_is_refused_and_traffic_unaffected(
    lab: Lab, agent_factory: AgentFactory, bad_policy: str
) -> None:
    hup = agent_factory(DENY_8443)
    stream = _stream(new_port(), 600)
    peer = start_peer(lab, [Sent(d) for d in stream], expect=len(stream), interval=0.001,
                      timeout=5.0, agent_port=hup.listen_port)
    time.sleep(0.2)
    hup.write_policy(bad_policy)
    hup.signal(signal.SIGHUP)
    hup.wait_metric("gwlb_agent_policy_reload_failures_total", 1, timeout=1.5)
    assert peer.process.poll() is None, "the stream had ended before the reload: not under traffic"
    result = peer.result()

    assert_returned(result, stream)
    assert hup.metrics()["gwlb_agent_policy_generation"] == 1
    assert hup.process.poll() is None and hup.health() == 200
    before = hup.drops()
    allowed = geneve(udp(new_port(), 5000))
    result = exchange(lab, [geneve(tcp(new_port(), 8443)), allowed], expect=1,
                      agent_port=hup.listen_port)
    assert_returned(result, [allowed])
    assert drop_delta(hup, before) == {"policy_deny": 1}, "the running policy did not stay"


# --- SIGTERM and flow records ----------------------------------------------------------------------------


def test_sigterm_exits_0_and_writes_a_record_per_live_flow(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    term = agent_factory(MAIN_POLICY)
    web, dns, ssh, ident = new_port(), new_port(), new_port(), new_port()
    allowed = [
        geneve(tcp(web, 80, "S"), AWS_OPTIONS), geneve(tcp(80, web, "SA", src=SERVER, dst=CLIENT)),
        geneve(udp(dns, 53), OPAQUE_OPTIONS, critical=True),
        geneve(echo(ident)),
    ]
    result = exchange(lab, [*allowed, geneve(tcp(ssh, 22))], expect=len(allowed),
                      agent_port=term.listen_port)
    assert_returned(result, allowed)

    assert term.terminate() == 0
    records = {(r["protocol"], r["src_port"], r["dst_port"]): r for r in term.flow_records()}

    assert len(records) == 4, records
    assert {r["reason"] for r in records.values()} == {"shutdown"}
    assert {r["appliance_id"] for r in records.values()} == {term.argv[term.argv.index("--appliance-id") + 1]}
    denied = records[(6, ssh, 22)]
    assert (denied["action"], denied["rule"], denied["packets_fwd"]) == ("deny", "deny-ssh", 1)
    http = records[(6, web, 80)]
    assert (http["action"], http["packets_fwd"], http["packets_rev"]) == ("allow", 1, 1)
    assert (http["endpoint_id"], http["attachment_id"], http["flow_cookie"]) == (
        "1122334455667788", "99aabbccddeeff00", "deadbeef")
    assert http["gwlb_ip"] == GWLB_IP and http["src_ip"] == CLIENT and http["dst_ip"] == SERVER
    udp_record = records[(17, dns, 53)]
    assert udp_record["geneve_options"] == codec.build(
        codec.GeneveHeader(options=OPAQUE_OPTIONS))[8:].hex()
    ping = records[(1, 0, 0)]  # ICMP: type and code, never the echo identifier as ports
    assert (ping["action"], ping["icmp_type"], ping["icmp_code"]) == ("allow", 8, 0)


# --- bad configuration ------------------------------------------------------------------------------------


def _run_agent(lab: Lab, tmp_dir: os.PathLike[str], *args: str) -> tuple[int, str]:
    empty = os.path.join(tmp_dir, "agent.toml")
    open(empty, "w").close()
    env = ["env", *(f"-u{k}" for k in os.environ if k.startswith("GWLB_AGENT_"))]
    result = lab.agent.run(*env, AGENT_BIN, "run", "--config", empty, "--listen", "0.0.0.0:6999",
                           "--health", "127.0.0.1:8999", "--flow-log",
                           os.path.join(tmp_dir, "flows.jsonl"), *args, check=False, timeout=15)
    return result.returncode, result.stderr


def test_run_without_gwlb_cidr_exits_78_naming_gwlb_cidrs(lab: Lab, tmp_path: os.PathLike[str]) -> None:
    policy = os.path.join(tmp_path, "policy.toml")
    with open(policy, "w") as f:
        f.write(ALLOW_ALL)
    code, stderr = _run_agent(lab, tmp_path, "--policy", policy)
    assert code == 78, stderr
    assert "gwlb_cidrs" in stderr


def test_policy_with_a_bad_cidr_exits_78_naming_the_field(lab: Lab, tmp_path: os.PathLike[str]) -> None:
    policy = os.path.join(tmp_path, "policy.toml")
    with open(policy, "w") as f:
        f.write(ALLOW_ALL + '\n[[rules]]\nid = "x"\naction = "deny"\nsrc = ["198.18.999.0/24"]\n')
    code, stderr = _run_agent(lab, tmp_path, "--gwlb-cidr", f"{GWLB_IP}/32", "--policy", policy)
    assert code == 78, stderr
    assert "rules.0.src" in stderr and "198.18.999.0/24" in stderr
