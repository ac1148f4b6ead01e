"""The tun data path's side of the Geneve offload, without a kernel: what it installs in the
kernel's flow map, when, and how entries the kernel carries live on in its table.

The offload is a stand-in with TunOffload's interface (the real one is run in the kernel by
tests/netns/test_tun_offload_program.py and end to end by tests/netns/test_tun_offload.py).
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.packet import Raw, raw

from gwlb_agent.config import AgentConfig
from gwlb_agent.kernel import tun as tun_module
from gwlb_agent.kernel.offload import OffloadConfig, OffloadError, Stat
from gwlb_agent.kernel.records import FlowIdentities, flow_key
from gwlb_agent.kernel.tun import _open_offload
from gwlb_fleet import geneve
from tests.packets import encap
from tests.unit.test_tun_datapath import CLIENT, GWLB, SERVER, Harness, options, udp

AGENT = "198.18.9.200"


class FakeOffload:
    attach_kind = "fake"

    def __init__(self, capacity: int = 100) -> None:
        self.capacity = capacity
        self.entries: dict[bytes, bytes] = {}
        self.last_used: dict[bytes, int] = {}
        self.installs: list[bytes] = []
        self.detached = False
        self.failing: OffloadError | None = None  # map writes other than "full" raise it

    def _write(self) -> None:
        if self.failing is not None:
            raise self.failing

    def install(self, key: bytes, header: bytes) -> bool:
        self._write()
        if key not in self.entries and len(self.entries) >= self.capacity:
            return False
        self.entries[key] = header
        self.last_used[key] = time.monotonic_ns()
        self.installs.append(key)
        return True

    def remove(self, key: bytes) -> None:
        self._write()
        self.entries.pop(key, None)

    def last_used_ns(self, key: bytes) -> int | None:
        return self.last_used.get(key) if key in self.entries else None

    def problem(self) -> str | None:
        return "tun offload: tun_decap on ag0 ingress is no longer attached" if self.detached else None

    def stats(self) -> dict[Stat, int]:
        return dict.fromkeys(Stat, 0)


@pytest.fixture
def offload() -> FakeOffload:
    return FakeOffload()


def attach(h: Harness, offload: FakeOffload) -> Harness:
    h.dp.offload = offload  # type: ignore[assignment]
    h.dp._route_sources[int.from_bytes(socket.inet_aton(GWLB), "little")] = socket.inet_aton(AGENT)
    return h


@pytest.fixture
def harness(offload: FakeOffload) -> Iterator[Harness]:
    h = attach(Harness(), offload)
    yield h
    h.close()


def key_of(inner: bytes) -> bytes:
    packet = IP(inner)
    return bytes([packet.proto]) + inner[12:20] + inner[20:24]


def test_a_learned_header_is_installed_as_the_raw_socket_sends_it(
    harness: Harness, offload: FakeOffload
) -> None:
    inner = raw(udp(5001, 53))
    datagram = encap(inner, options(0xAB))
    harness.receive(datagram)
    header = offload.entries[key_of(inner)]
    # IPv4 (lengths and checksum 0: per packet), TOS 0, id 0, DF, TTL 64, UDP, from the route's
    # source to the GWLB node; UDP from the GWLB's port to 6081, checksum 0; Geneve as received.
    assert header[:12] == bytes.fromhex("450000000000400040110000")
    assert header[12:20] == socket.inet_aton(AGENT) + socket.inet_aton(GWLB)
    assert header[20:28] == (40001).to_bytes(2, "big") + (6081).to_bytes(2, "big") + bytes(4)
    assert header[28:] == datagram[: len(datagram) - len(inner)]


def test_each_header_is_installed_once_and_again_when_it_changes(
    harness: Harness, offload: FakeOffload
) -> None:
    inner = raw(udp(5002, 53))
    for _ in range(3):
        harness.receive(encap(inner, options(1)))
    harness.receive(encap(inner, options(2)))
    assert offload.installs == [key_of(inner)] * 2
    assert geneve.parse(offload.entries[key_of(inner)][28:])[0].options == options(2)


def test_only_what_the_kernels_programs_take_is_installed(harness: Harness, offload: FakeOffload) -> None:
    request = raw(udp(5003, 53))
    error = raw(IP(src=SERVER, dst=CLIENT) / ICMP(type=3, code=3) / Raw(request[:28]))
    timestamp_reply = raw(IP(src=SERVER, dst=CLIENT) / ICMP(type=9) / Raw(b"\0" * 8))  # no query
    harness.receive(encap(error), encap(timestamp_reply),
                    encap(b"\0" * 14 + request, protocol_type=geneve.PROTO_ETHERNET))
    assert offload.installs == []
    echo = raw(IP(src=CLIENT, dst=SERVER) / ICMP(type=8, id=9) / Raw(b"ping"))
    harness.receive(encap(echo))
    assert offload.installs == [bytes([1]) + echo[12:20] + echo[24:26] * 2]


def test_a_header_the_kernel_must_not_put_back_is_removed(harness: Harness, offload: FakeOffload) -> None:
    inner = raw(udp(5004, 53))
    harness.receive(encap(inner))
    assert key_of(inner) in offload.entries
    # The same flow now inside an Ethernet header: only the agent can put that back.
    harness.receive(encap(b"\0" * 12 + b"\x08\x00" + inner, protocol_type=geneve.PROTO_ETHERNET))
    assert offload.entries == {}


def test_a_full_map_leaves_flows_to_the_agent_counted_and_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    offload = FakeOffload(capacity=1)
    h = attach(Harness(), offload)
    try:
        with caplog.at_level(logging.WARNING, logger="gwlb_agent.kernel.tun"):
            h.receive(*(encap(raw(udp(5100 + n, 53))) for n in range(4)))
            h.clock.now += 61
            h.receive(encap(raw(udp(5200, 53))))
        assert (h.dp.offload_installs, h.dp.offload_full) == (1, 4)
        assert [r.message for r in caplog.records].count(
            "tun offload: the kernel's flow map is full; new flows stay with the agent") == 2
        assert len(h.kernel_reads()) == 5  # every packet still went to the kernel by the agent
        assert h.dp.metrics()["tun_offload_map_full_total"] == 4
    finally:
        h.close()


def test_entries_the_kernel_carries_live_on_and_idle_ones_go() -> None:
    identities = FlowIdentities()
    offload = FakeOffload()
    h = attach(Harness(identities), offload)
    try:
        busy, idle = raw(udp(5301, 53)), raw(udp(5302, 53))
        h.receive(encap(busy, options(7), vni=0x77), encap(idle))
        h.kernel_reads()
        for _ in range(4):  # four idle periods: the agent sees no packet of either
            h.clock.now = h.dp.table.rotate_at
            offload.last_used[key_of(busy)] = time.monotonic_ns()  # the kernel carries busy ...
            offload.last_used[key_of(idle)] = time.monotonic_ns() - int(400e9)  # ... not idle
            h.dp._rotate(h.clock.now)
        assert list(offload.entries) == [key_of(busy)]
        assert key_of(busy) in h.dp.table.current and key_of(idle) not in h.dp.table.current
        assert h.dp.metrics()["tun_offload_flows"] == 1
        # Its identity was told again in each generation: the records still carry it.
        identity = identities.lookup(flow_key(busy))  # type: ignore[arg-type]
        assert identity is not None and identity.vni == 0x77
        assert identities.lookup(flow_key(idle)) is None  # type: ignore[arg-type]
        # The forwarded packet of busy still finds its header if the agent reads it.
        assert len(h.kernel_forwards(busy)) == 1
    finally:
        h.close()


def test_a_detached_program_fails_the_path(harness: Harness, offload: FakeOffload) -> None:
    assert harness.dp.path_problem(harness.clock.now) is None
    assert harness.dp.metrics()["tun_offload_attached"] == 1
    offload.detached = True
    assert "no longer attached" in (harness.dp.path_problem(harness.clock.now) or "")
    assert harness.dp.metrics()["tun_offload_attached"] == 0


def test_without_the_offload_the_metrics_say_so() -> None:
    h = Harness()
    try:
        assert h.dp.metrics()["tun_offload_attached"] == 0
    finally:
        h.close()


EIO = OffloadError("delete from tun_flows: EIO (Input/output error)", errno.EIO)


def test_a_header_that_could_not_be_removed_fails_the_path_until_it_is(
    harness: Harness, offload: FakeOffload, caplog: pytest.LogCaptureFixture
) -> None:
    inner = raw(udp(5401, 53))
    harness.receive(encap(inner))
    offload.failing = EIO
    with caplog.at_level(logging.ERROR, logger="gwlb_agent.kernel.tun"):
        # The flow inside Ethernet: the kernel must no longer put its header back; it cannot go.
        harness.receive(encap(b"\0" * 12 + b"\x08\x00" + inner, protocol_type=geneve.PROTO_ETHERNET))
    assert key_of(inner) in offload.entries
    problem = harness.dp.path_problem(harness.clock.now) or ""
    assert "could not be removed" in problem and "EIO" in problem
    assert harness.dp.metrics()["tun_offload_unremoved_flows"] == 1
    assert "could not be removed" in caplog.records[-1].message
    harness.dp._rotate(harness.clock.now)  # retried: still failing
    assert harness.dp.path_problem(harness.clock.now) is not None
    offload.failing = None
    harness.dp._rotate(harness.clock.now)  # retried: removed
    assert key_of(inner) not in offload.entries
    assert harness.dp.path_problem(harness.clock.now) is None
    assert harness.dp.metrics()["tun_offload_unremoved_flows"] == 0


def test_a_header_an_idle_flow_left_in_the_map_is_removed_at_a_later_try(
    harness: Harness, offload: FakeOffload
) -> None:
    idle = raw(udp(5402, 53))
    harness.receive(encap(idle))
    offload.last_used[key_of(idle)] = time.monotonic_ns() - int(400e9)
    offload.failing = EIO
    for _ in range(2):  # the flow leaves the table; its header stays in the kernel
        harness.clock.now = harness.dp.table.rotate_at
        harness.dp._rotate(harness.clock.now)
    assert key_of(idle) not in harness.dp.table.current and key_of(idle) in offload.entries
    assert "could not be removed" in (harness.dp.path_problem(harness.clock.now) or "")
    offload.failing = None
    harness.dp._retry_removals()  # what the loop does at each probe while a key is left
    harness.dp.last_probe_back = harness.clock.now  # (no probe went round in this test)
    assert key_of(idle) not in offload.entries
    assert harness.dp.path_problem(harness.clock.now) is None


def test_installing_the_flow_again_replaces_a_header_that_could_not_be_removed(
    harness: Harness, offload: FakeOffload
) -> None:
    inner = raw(udp(5403, 53))
    harness.receive(encap(inner, options(1)))
    offload.failing = EIO
    harness.receive(encap(b"\0" * 12 + b"\x08\x00" + inner, protocol_type=geneve.PROTO_ETHERNET))
    assert harness.dp.path_problem(harness.clock.now) is not None
    offload.failing = None
    harness.receive(encap(inner, options(2)))  # the map's entry now holds the header meant
    assert geneve.parse(offload.entries[key_of(inner)][28:])[0].options == options(2)
    assert harness.dp.path_problem(harness.clock.now) is None


def test_a_failed_install_is_counted_and_logged_but_the_path_stays_healthy(
    harness: Harness, offload: FakeOffload, caplog: pytest.LogCaptureFixture
) -> None:
    offload.failing = OffloadError("update tun_flows: EPERM (Operation not permitted)", errno.EPERM)
    inner = raw(udp(5404, 53))
    with caplog.at_level(logging.WARNING, logger="gwlb_agent.kernel.tun"):
        harness.receive(encap(inner))
    assert offload.entries == {} and harness.dp.offload_errors == 1
    assert [r.message for r in caplog.records] == ["tun offload: a flow's header could not be installed"]
    assert harness.dp.path_problem(harness.clock.now) is None
    assert len(harness.kernel_reads()) == 1  # the agent carries the flow


def _config(offload: str) -> AgentConfig:
    return AgentConfig.model_validate({
        "mode": "tun", "gwlb_cidrs": ["198.18.9.0/24"], "tun_offload": offload, "xdp_interface": "nosuchif0",
    })


def test_auto_goes_on_without_the_offload_saying_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gwlb_agent.kernel.tun"):
        assert _open_offload(_config("auto"), tun_ifindex=1) is None
    [record] = [r for r in caplog.records if r.message.startswith("tun offload not used")]
    assert "data interface nosuchif0" in record.__dict__["reason"]


def test_tc_fails_at_start_where_the_offload_cannot_load() -> None:
    with pytest.raises(OffloadError, match="tun offload"):
        _open_offload(_config("tc"), tun_ifindex=1)


def test_the_default_is_auto() -> None:
    assert AgentConfig.model_validate({"gwlb_cidrs": ["198.18.9.0/24"]}).tun_offload == "auto"


def _captured(monkeypatch: pytest.MonkeyPatch, **settings: str) -> OffloadConfig:
    """The configuration _open_offload hands the programs (open_offload replaced: no kernel)."""
    seen: list[OffloadConfig] = []

    def capture(config: OffloadConfig, max_flows: int) -> FakeOffload:
        seen.append(config)
        return FakeOffload()

    monkeypatch.setattr(tun_module, "open_offload", capture)
    fields = {"mode": "tun", "gwlb_cidrs": ["198.18.9.0/24"], "tun_offload": "tc", "xdp_interface": "lo"}
    config = AgentConfig.model_validate({**fields, **settings})
    assert _open_offload(config, tun_ifindex=1) is not None
    [offload_config] = seen
    return offload_config


@pytest.mark.network  # an AF_INET socket's ioctl reads lo's address: no traffic
def test_listening_on_any_address_the_programs_take_only_the_data_interfaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _captured(monkeypatch).local_address == "127.0.0.1"  # lo's
    assert _captured(monkeypatch, listen="198.18.9.7:6081").local_address == "198.18.9.7"


@pytest.mark.network  # the interface lookup opens an AF_INET socket: no traffic
def test_auto_goes_on_without_the_offload_when_its_object_does_not_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "geneve_tc.o"
    broken.write_bytes(b"\x7fELF not really")
    real = tun_module.open_offload
    monkeypatch.setattr(tun_module, "open_offload", lambda config, max_flows: real(config, max_flows, broken))
    config = _config("auto").model_copy(update={"xdp_interface": "lo"})
    with caplog.at_level(logging.WARNING, logger="gwlb_agent.kernel.tun"):
        assert _open_offload(config, tun_ifindex=1) is None
    [record] = [r for r in caplog.records if r.message.startswith("tun offload not used")]
    assert "geneve_tc.o" in record.__dict__["reason"] or "libbpf" in record.__dict__["reason"]
