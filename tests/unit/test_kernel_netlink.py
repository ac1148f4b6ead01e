"""The conntrack and NFLOG parsers on netlink messages captured from a real kernel (6.18, in a
netns of tests/netns/test_kernel_flow_records.py's shape: 198.18.60.2 -> 198.18.61.2)."""

from __future__ import annotations

import contextlib
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gwlb_agent.kernel import nfnetlink as nl
from gwlb_agent.kernel.conntrack import Counters, parse_events
from gwlb_agent.kernel.nflog import PrefixError, parse_prefix, parse_verdicts
from gwlb_agent.kernel.records import flow_key

FIXTURES = Path(__file__).parents[1] / "events" / "kernel"
CLIENT, SERVER = socket.inet_aton("198.18.60.2"), socket.inet_aton("198.18.61.2")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_a_tcp_destroy_event_gives_counters_times_and_the_last_tcp_state() -> None:
    [event] = parse_events(fixture("conntrack-destroy-tcp.bin"))
    assert event.kind == "destroy"
    assert event.flow_key == (6, CLIENT + SERVER + (50502).to_bytes(2, "big") + (80).to_bytes(2, "big"))
    assert (event.orig, event.reply) == (Counters(6, 395), Counters(6, 945))
    assert (event.start_ns, event.stop_ns) == (1796404104721812293, 1796404105724293673)
    assert (event.tcp_state, event.conntrack_id, event.mark, event.zone) == ("TIME_WAIT", 2104309977, 0, 0)
    assert (event.icmp_type, event.icmp_code) == (None, None)


def test_an_icmp_destroy_event_keys_by_echo_id_and_gives_type_and_code() -> None:
    [event] = parse_events(fixture("conntrack-destroy-icmp-echo.bin"))
    assert event.flow_key == (1, CLIENT + SERVER + b"\x12\x34\x12\x34")
    assert (event.icmp_type, event.icmp_code, event.tcp_state) == (8, 0, None)
    assert (event.orig, event.reply) == (Counters(3, 180), Counters(3, 180))


def test_new_and_update_events_carry_no_counters() -> None:
    [new] = parse_events(fixture("conntrack-new-tcp.bin"))
    [update] = parse_events(fixture("conntrack-update-tcp-fin-wait.bin"))
    assert (new.kind, new.tcp_state, new.orig, new.start_ns) == ("new", "SYN_SENT", None, None)
    assert (update.kind, update.tcp_state, update.orig) == ("update", "FIN_WAIT", None)
    assert new.flow_key == update.flow_key


def test_nflog_gives_action_rule_and_the_logged_packets_5_tuple() -> None:
    [web], problems = parse_verdicts(fixture("nflog-allow-web.bin"))
    assert problems == []
    assert (web.action, web.rule, web.packet_bytes, web.mark) == ("allow", "web", 60, 0)
    assert web.key == (6, CLIENT + SERVER + (50502).to_bytes(2, "big") + (80).to_bytes(2, "big"))


def test_a_logged_packet_counts_its_ip_length_not_the_bytes_copied() -> None:
    data = bytearray(fixture("nflog-deny-ssh.bin"))
    header = bytes(data).index(bytes.fromhex("4500003c"))  # the copied IPv4 header, 60 bytes long
    data[header + 2 : header + 4] = (1500).to_bytes(2, "big")  # a full-size packet, cut at 68
    [verdict], _ = parse_verdicts(bytes(data))
    assert verdict.packet_bytes == 1500


def test_nflog_batches_are_read_whole() -> None:
    (ping, ssh), problems = parse_verdicts(fixture("nflog-allow-ping-deny-ssh.bin"))
    assert problems == []
    assert (ping.action, ping.rule, ping.icmp_type, ping.icmp_code) == ("allow", "ping", 8, 0)
    assert ping.key == (1, CLIENT + SERVER + b"\x12\x34\x12\x34")
    assert (ssh.action, ssh.rule, ssh.key[1][10:12]) == ("deny", "ssh", (22).to_bytes(2, "big"))


def test_a_prefix_off_the_convention_is_reported_not_guessed() -> None:
    data = bytearray(fixture("nflog-deny-ssh.bin"))
    at = bytes(data).index(b"deny ssh")
    data[at : at + 8] = b"ssh-drop"
    verdicts, problems = parse_verdicts(bytes(data))
    assert verdicts == []
    assert problems == ["NFLOG prefix 'ssh-drop' is not '<allow|deny> <rule>'"]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("allow web", ("allow", "web")),
        ("deny: ssh", ("deny", "ssh")),
        ("DROP telnet in ", ("deny", "telnet in")),
        ("accept dns:", ("allow", "dns")),
    ],
)
def test_prefixes(prefix: str, expected: tuple[str, str]) -> None:
    assert parse_prefix(prefix) == expected


@pytest.mark.parametrize("prefix", ["", "allow", "permit web", "web allow"])
def test_bad_prefixes(prefix: str) -> None:
    with pytest.raises(PrefixError):
        parse_prefix(prefix)


def test_truncated_messages_raise_netlink_error_naming_the_problem() -> None:
    data = fixture("conntrack-destroy-tcp.bin")
    with pytest.raises(nl.NetlinkError, match="past"):
        parse_events(data[:-8])
    # A tuple whose address attribute lost its value.
    broken = bytearray(data)
    at = bytes(broken).index(CLIENT)
    struct.pack_into("=H", broken, at - 4, 4)  # CTA_IP_V4_SRC now has a 0-byte value
    with pytest.raises(nl.NetlinkError):
        parse_events(bytes(broken))


def test_a_kernel_error_answer_is_raised_with_its_errno() -> None:
    error = struct.pack("=IHHII", 36, nl.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -16) + b"\x00" * 16
    with pytest.raises(nl.NetlinkError, match="error 16"):
        list(nl.messages(error))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_events_or_a_netlink_error(data: bytes) -> None:
    with contextlib.suppress(nl.NetlinkError):
        parse_events(data)
    with contextlib.suppress(nl.NetlinkError):
        parse_verdicts(data)


@given(st.integers(0, len(fixture("conntrack-destroy-tcp.bin")) - 1), st.integers(0, 255))
def test_a_captured_event_with_one_byte_changed_gives_events_or_a_netlink_error(at: int, value: int) -> None:
    data = bytearray(fixture("conntrack-destroy-tcp.bin"))
    data[at] = value
    with contextlib.suppress(nl.NetlinkError):
        parse_events(bytes(data))


def test_flow_keys_of_inner_packets() -> None:
    ip = bytes.fromhex("45000028000000004006") + b"\x00\x00" + CLIENT + SERVER
    assert flow_key(ip + b"\x9c\x40\x00\x50" + b"\x00" * 16) == (6, CLIENT + SERVER + b"\x9c\x40\x00\x50")
    fragment = bytearray(ip + b"\x00" * 20)
    fragment[6:8] = b"\x00\x10"  # offset 16 * 8: no ports in it
    assert flow_key(bytes(fragment)) is None
    assert flow_key(b"\x60" + b"\x00" * 60) is None  # IPv6
    icmp = bytearray(ip + bytes((8, 0, 0, 0, 0x12, 0x34, 0, 1)))
    icmp[9] = 1
    assert flow_key(bytes(icmp)) == (1, CLIENT + SERVER + b"\x12\x34\x12\x34")
    icmp[20] = 3  # destination unreachable: type and code, not an id
    assert flow_key(bytes(icmp)) == (1, CLIENT + SERVER + b"\x03\x00\x00\x00")
