"""The GWLB emulator's scheduling of flows without sockets: 5/3/2-tuple hashing, stickiness,
ServerFailoverMode (NoRebalance / Rebalance), connection draining, and the end of TCP flows."""

from __future__ import annotations

import socket
import struct

import pytest

from gwlb_lab.gwlb.config import EmulatorConfig, FailoverMode
from gwlb_lab.gwlb.emulator import Emulator
from gwlb_lab.gwlb.members import Member
from gwlb_lab.gwlb.packet import TCP, UDP, FlowKey
from gwlb_lab.gwlb.scheduler import Scheduler, hash_key, rank
from tests.packets import tcp, udp

CLIENT, SERVER = "198.18.1.2", "198.18.2.2"
C, S = socket.inet_aton(CLIENT), socket.inet_aton(SERVER)
IDS = ["nva-1", "nva-2", "nva-3", "nva-4"]


# --- hashing -------------------------------------------------------------------------------------


def test_5tch_spreads_the_connections_of_two_hosts_over_the_members() -> None:
    chosen = {rank(FlowKey(TCP, C, port, S, 80), IDS, scheduler="5TCH")[0] for port in range(40000, 40064)}
    assert chosen == set(IDS)


@pytest.mark.parametrize("scheduler", ["3TCH", "2TCH"])
def test_3tch_and_2tch_keep_two_hosts_on_one_member_whatever_the_ports(scheduler: Scheduler) -> None:
    keys = [FlowKey(TCP, C, port, S, dport) for port in range(40000, 40064) for dport in (80, 443)]
    keys += [k.reversed for k in keys]  # the replies too
    assert len({rank(k, IDS, scheduler=scheduler)[0] for k in keys}) == 1


def test_3tch_hashes_the_protocol_and_2tch_does_not() -> None:
    def members(scheduler: Scheduler, protocol: int) -> set[str]:
        clients = [socket.inet_aton(f"198.18.1.{n}") for n in range(2, 66)]
        return {rank(FlowKey(protocol, c, 5000, S, 53), IDS, scheduler=scheduler)[0] for c in clients}

    assert hash_key(FlowKey(TCP, C, 1, S, 2), "3TCH") != hash_key(FlowKey(UDP, C, 1, S, 2), "3TCH")
    assert hash_key(FlowKey(TCP, C, 1, S, 2), "2TCH") == hash_key(FlowKey(UDP, C, 3, S, 4), "2TCH")
    assert hash_key(FlowKey(TCP, C, 1, S, 2), "2TCH") == hash_key(FlowKey(TCP, S, 2, C, 1), "2TCH")
    # over many host pairs every scheduler still uses every member
    for scheduler in ("3TCH", "2TCH"):
        assert members(scheduler, UDP) == set(IDS)


def test_an_unknown_scheduler_is_refused() -> None:
    with pytest.raises(ValueError, match="scheduler"):
        EmulatorConfig(scheduler="4TCH")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scheduler"):
        hash_key(FlowKey(TCP, C, 1, S, 2), "4TCH")  # type: ignore[arg-type]


# --- the data path over fakes ----------------------------------------------------------------------


class FakeTun:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, packet: bytes | memoryview) -> None:
        self.written.append(bytes(packet))


class FakeRawSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        self.sent.append(data)
        return len(data)

    def last(self) -> tuple[str, int, bytes]:
        """(member address, Geneve source port, Geneve payload) of the last datagram."""
        data = self.sent[-1]
        return socket.inet_ntoa(data[16:20]), struct.unpack_from("!H", data, 20)[0], data[28:]


class Lab:
    """An emulator whose members are all Available and healthy to begin with."""

    def __init__(self, count: int = 2, **config: object) -> None:
        self.emulator = Emulator(EmulatorConfig(**config))  # type: ignore[arg-type]
        self.tun, self.tx = FakeTun(), FakeRawSocket()
        self.emulator.tun, self.emulator.tx = self.tun, self.tx  # type: ignore[assignment]
        for n in range(1, count + 1):
            self.emulator.members.add(Member(f"nva-{n}", f"198.19.0.{10 + n}", health="healthy"))

    def send(self, packet: bytes, now: float) -> str | None:
        """The packet from the tun; the address of the member it went to, None if dropped."""
        before = len(self.tx.sent)
        self.emulator.from_tun(packet, now)
        return self.tx.last()[0] if len(self.tx.sent) > before else None

    def member(self, address: str) -> Member:
        return next(m for m in self.emulator.members if m.address == address)

    def other(self, member: Member) -> Member:
        return next(m for m in self.emulator.members if m is not member)

    @property
    def drops(self) -> dict[str, int]:
        return self.emulator.counters.drops


def syn(sport: int, dport: int = 80) -> bytes:
    return bytes(tcp(CLIENT, SERVER, sport, dport, "S"))


def stream(sport: int = 5000) -> bytes:
    return bytes(udp(CLIENT, SERVER, sport, 7001, b"tick"))


@pytest.mark.parametrize("scheduler", ["3TCH", "2TCH"])
def test_the_emulator_schedules_by_the_configured_tuple(scheduler: Scheduler) -> None:
    lab = Lab(count=4, scheduler=scheduler)
    assert len({lab.send(syn(port), now=1.0) for port in range(40000, 40032)}) == 1
    lab5 = Lab(count=4, scheduler="5TCH")
    assert len({lab5.send(syn(port), now=1.0) for port in range(40000, 40032)}) > 1


def test_a_flow_sticks_to_its_member_when_a_better_ranked_member_joins() -> None:
    lab = Lab(count=1)
    ports = range(40000, 40040)
    assert {lab.send(syn(port), now=1.0) for port in ports} == {"198.19.0.11"}
    lab.emulator.members.add(Member("nva-9", "198.19.0.99", health="healthy"))
    would_move = [p for p in ports if rank(FlowKey(TCP, C, p, S, 80), ["nva-1", "nva-9"])[0] == "nva-9"]
    assert would_move  # as new flows, some of these would now go to the newcomer
    for port in would_move:
        assert lab.send(bytes(tcp(SERVER, CLIENT, 80, port, "SA")), now=2.0) == "198.19.0.11"
        assert lab.send(syn(port + 1000), now=2.0) == (
            "198.19.0.99" if rank(FlowKey(TCP, C, port + 1000, S, 80), ["nva-1", "nva-9"])[0] == "nva-9"
            else "198.19.0.11")
    assert lab.emulator.counters.rebalanced == 0


def test_new_flows_go_only_to_available_and_healthy_members() -> None:
    lab = Lab(count=3)
    one, two, three = sorted(lab.emulator.members, key=lambda m: m.member_id)
    one.status = "Adding"  # healthy but not yet in service
    two.health = "initial"  # in service, not yet proven
    assert {lab.send(syn(port), now=1.0) for port in range(40000, 40040)} == {three.address}
    three.health = "unhealthy"
    assert lab.send(syn(41000), now=2.0) is None
    assert lab.drops["no_healthy_member"] == 1


# --- ServerFailoverMode ------------------------------------------------------------------------


def test_norebalance_keeps_the_flows_of_an_unhealthy_member_and_sends_new_ones_elsewhere() -> None:
    lab = Lab(failover_mode="NoRebalance")
    address = lab.send(stream(), now=1.0)
    assert address is not None
    sick = lab.member(address)
    sick.health = "unhealthy"
    for t in range(2, 6):
        assert lab.send(stream(), now=float(t)) == address
    assert all(lab.send(stream(port), now=6.0) == lab.other(sick).address for port in range(6000, 6020))
    assert lab.emulator.counters.rebalanced == 0


def test_rebalance_moves_an_existing_flow_of_an_unhealthy_member_on_its_next_packet() -> None:
    lab = Lab(failover_mode="Rebalance")
    address = lab.send(stream(), now=1.0)
    assert address is not None
    sick = lab.member(address)
    _, port, payload = lab.tx.last()
    header = payload[:40]
    sick.health = "unhealthy"
    healthy = lab.other(sick)
    assert lab.send(stream(), now=2.0) == healthy.address
    _, moved_port, moved_payload = lab.tx.last()
    assert (moved_port, moved_payload[:40]) == (port, header)  # the same flow to the GWLB
    (flow,) = lab.emulator.flows.flows()
    assert flow.member is healthy and flow.previous == [sick]
    assert (sick.counters.flows, healthy.counters.flows) == (0, 1)
    assert (sick.counters.flows_moved_out, healthy.counters.flows_moved_in) == (1, 1)
    assert lab.emulator.counters.rebalanced == 1

    # An answer still in flight from the old member is dropped, and is not a mismatch.
    lab.emulator.from_member(payload, (sick.address, port))
    lab.emulator.from_member(moved_payload, (healthy.address, port))
    assert lab.drops["from_previous_member"] == 1 and lab.emulator.counters.mismatches == 0
    assert len(lab.tun.written) == 1
    # Recovered, the old member gets no flow back: a flow moves only when its member fails.
    sick.health = "healthy"
    assert lab.send(stream(), now=3.0) == healthy.address


def test_rebalance_with_no_healthy_member_left_keeps_the_flow_where_it_is() -> None:
    lab = Lab(count=2, failover_mode="Rebalance")
    address = lab.send(stream(), now=1.0)
    for member in lab.emulator.members:
        member.health = "unhealthy"
    assert lab.send(stream(), now=2.0) == address
    assert lab.emulator.counters.rebalanced == 0


# --- connection draining and removal ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["NoRebalance", "Rebalance"])
def test_a_draining_member_keeps_its_flows_until_the_drain_ends(mode: FailoverMode) -> None:
    lab = Lab(failover_mode=mode, connection_drain=True, drain_timeout=30.0)
    address = lab.send(stream(), now=1.0)
    assert address is not None
    leaving = lab.member(address)
    leaving.status, leaving.leaving_since = "Draining", 10.0
    staying = lab.other(leaving)
    # no new flows, existing ones stay for the whole drain
    assert all(lab.send(stream(port), now=11.0) == staying.address for port in range(6000, 6020))
    assert lab.send(stream(), now=39.9) == address
    # the drain is over: NoRebalance drops (the member is as good as gone), Rebalance moves
    after = lab.send(stream(), now=40.0)
    if mode == "NoRebalance":
        assert after is None and lab.drops["drain_ended"] == 1
    else:
        assert after == staying.address and lab.emulator.counters.rebalanced == 1


@pytest.mark.parametrize(("mode", "expected"), [("NoRebalance", "stays"), ("Rebalance", "moves")])
def test_removal_without_connection_draining(mode: FailoverMode, expected: str) -> None:
    lab = Lab(failover_mode=mode, connection_drain=False)
    address = lab.send(stream(), now=1.0)
    assert address is not None
    leaving = lab.member(address)
    leaving.status, leaving.leaving_since = "Removing", 2.0
    after = lab.send(stream(), now=2.0)
    assert after == (address if expected == "stays" else lab.other(leaving).address)


@pytest.mark.parametrize("mode", ["NoRebalance", "Rebalance"])
def test_a_member_gone_from_the_group_takes_nothing(mode: FailoverMode) -> None:
    lab = Lab(failover_mode=mode)
    address = lab.send(stream(), now=1.0)
    assert address is not None
    gone = lab.emulator.members.remove(lab.member(address).member_id)
    after = lab.send(stream(), now=2.0)
    assert after != gone.address
    if mode == "NoRebalance":
        assert after is None and lab.drops["member_gone"] == 1
    else:
        assert after is not None and lab.emulator.counters.rebalanced == 1


def test_a_tcp_flow_ends_on_fin_both_ways_and_stops_counting_for_its_member() -> None:
    lab = Lab(count=1)
    (member,) = lab.emulator.members
    lab.send(syn(40000), now=1.0)
    lab.send(bytes(tcp(SERVER, CLIENT, 80, 40000, "SA")), now=1.0)
    lab.send(bytes(tcp(CLIENT, SERVER, 40000, 80, "FA")), now=2.0)
    assert member.counters.flows == 1
    lab.send(bytes(tcp(SERVER, CLIENT, 80, 40000, "FA")), now=2.0)
    assert member.counters.flows == 0 and lab.emulator.flows.ended == 1
    assert lab.send(bytes(tcp(CLIENT, SERVER, 40000, 80, "A")), now=2.1) == member.address  # last ACK
    (flow,) = lab.emulator.flows.snapshot()
    assert flow["ended"] is True  # still reported until idle
    # the same 5-tuple again: a new connection, a new flow
    lab.send(syn(40000), now=3.0)
    assert lab.emulator.flows.created == 2 and member.counters.flows == 1
    lab.send(bytes(tcp(SERVER, CLIENT, 80, 40000, "R")), now=3.5)
    assert member.counters.flows == 0 and lab.emulator.flows.ended == 2
    assert lab.emulator.flows.expire(3.5 + 351) == 1 and len(lab.emulator.flows) == 0
    assert member.counters.flows == 0


def test_config_ranges() -> None:
    for bad, why in (
        ({"drain_timeout": 0}, "connection drain timeout 0 s"),
        ({"drain_timeout": 3601}, "connection drain timeout 3601 s"),
        ({"failover_mode": "Sometimes"}, "failover mode must be one of"),
        ({"poll_interval": 0}, "poll_interval must be positive"),
    ):
        with pytest.raises(ValueError, match=why):
            EmulatorConfig(**bad)
