"""The appliance probes against the real thing: AgentStatusProbe against gwlb-agent's own health
server (its /status JSON), VmSeriesStatusProbe through real pan-os-python against the local
Panorama plus a TCP listener standing in for PAN-OS's health-check port."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gwlb_agent.health import Control, HealthServer, Liveness
from gwlb_agent.metrics import Snapshot
from gwlb_fleet.alibaba.fakes.kms import FakeKms
from gwlb_fleet.appliance.probes import AgentStatusProbe, VmSeriesStatusProbe, parse_agent_status
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import DeadlineExceeded, PermanentError
from gwlb_fleet.panos.fakes import FakePanorama
from gwlb_fleet.panos.panorama import PanoramaAdapter
from gwlb_fleet.ports import ApplianceStatus
from gwlb_fleet.settings import Settings
from gwlb_lab.panorama import LocalPanorama

FW1, FW2 = "007951000123451", "007951000123452"


def snapshot(healthy: bool, draining: bool, flows: int, reason: str) -> Snapshot:
    return Snapshot(
        packets_in=0,
        packets_out=0,
        bytes_in=0,
        bytes_out=0,
        drops={},
        flows_active=flows,
        flows_created=flows,
        records_emitted=0,
        records_exported=0,
        records_dropped=0,
        sink_errors=0,
        policy_generation=1,
        policy_reloads_failed=0,
        healthy=healthy,
        draining=draining,
        health_reason=reason,
    )


class AgentState:
    def __init__(self) -> None:
        self.current = snapshot(True, False, 12, "forwarding")

    def snapshot(self) -> Snapshot:
        return self.current


@pytest.fixture
def agent() -> Iterator[tuple[AgentState, int]]:
    state = AgentState()
    server = HealthServer(("127.0.0.1", 0), Control(Liveness(1.0), state.snapshot, lambda _: None), [])
    thread = server.start()
    yield state, server.server_port
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def deadline() -> Deadline:
    return Deadline.after(30, margin=0)


# --- Linux NVA: gwlb-agent ---------------------------------------------------------------------------


def test_agent_status(agent: tuple[AgentState, int]) -> None:
    state, port = agent
    probe = AgentStatusProbe(port, timeout_s=2)
    assert probe.status("127.0.0.1", "", deadline()) == ApplianceStatus(True, False, 12)
    state.current = snapshot(False, True, 3, "draining")
    assert probe.status("127.0.0.1", "", deadline()) == ApplianceStatus(True, True, 3)
    state.current = snapshot(False, False, 3, "packet loop stalled for 2.00s")
    assert probe.status("127.0.0.1", "", deadline()) == ApplianceStatus(False, False, 3)


def test_an_agent_that_does_not_answer_is_none() -> None:
    assert AgentStatusProbe(free_port(), timeout_s=1).status("127.0.0.1", "", deadline()) is None


def test_no_probe_without_time_left(agent: tuple[AgentState, int]) -> None:
    with pytest.raises(DeadlineExceeded):
        AgentStatusProbe(agent[1]).status("127.0.0.1", "", Deadline.after(0.1, margin=1))


def test_status_that_does_not_parse_is_none() -> None:
    assert parse_agent_status(b"<html>") is None
    assert parse_agent_status(b'{"healthy": "yes", "draining": false, "flows_active": 1}') is None


def test_the_factory_follows_the_kind_of_appliance() -> None:
    base = {
        "FLEET_REGION": "cn-hangzhou",
        "SCALING_GROUP_ID": "asg-1",
        "GWLB_SERVER_GROUP_ID": "sgp-1",
        "GWLB_LISTENER_ID": "lsn-1",
    }
    linux = Settings.model_validate({**base, "APPLIANCE_KIND": "linux", "AGENT_HEALTH_PORT": "9090"})
    kms = FakeKms()
    assert isinstance(AgentStatusProbe.from_settings(linux, kms.port()), AgentStatusProbe)
    vmseries = Settings.model_validate(
        {**base, "APPLIANCE_KIND": "vmseries", "PANORAMA_HOST": "127.0.0.1:1", "PANORAMA_API_KEY_SECRET": "k"}
    )
    assert isinstance(AgentStatusProbe.from_settings(vmseries, kms.port()), VmSeriesStatusProbe)
    assert kms.calls == []  # the key is read at the first call to Panorama, not before


# --- VM-Series: sessions through Panorama, the health-check port directly -------------------------------


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalPanorama]:
    fake = FakePanorama()
    fake.add_firewall(FW1, "10.0.1.11", active_sessions=7)
    fake.add_firewall(FW2, "10.0.1.12", connected=False)
    with LocalPanorama(tmp_path, panorama=fake) as server:
        yield server


@pytest.fixture
def health_port() -> Iterator[int]:
    """A listener that accepts and closes, as PAN-OS's interface management profile answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    listener.close()


def vmseries_probe(local: LocalPanorama, port: int, api_key: str = "") -> VmSeriesStatusProbe:
    settings = Settings.model_validate(
        {
            "FLEET_REGION": "cn-hangzhou",
            "SCALING_GROUP_ID": "asg-1",
            "GWLB_SERVER_GROUP_ID": "sgp-1",
            "GWLB_LISTENER_ID": "lsn-1",
            "PANORAMA_HOST": local.host,
            "PANORAMA_API_KEY_SECRET": "panorama-key",
            "PANORAMA_CA_FILE": str(local.ca_file),
        }
    )
    kms = FakeKms()
    kms.put_secret("panorama-key", api_key or local.api_key)
    adapter = PanoramaAdapter.from_settings(settings, kms.port(), sleep=lambda s: None)
    return VmSeriesStatusProbe(adapter, port, 1.0)


def test_vmseries_sessions_and_port(local: LocalPanorama, health_port: int) -> None:
    probe = vmseries_probe(local, health_port)
    assert probe.status("127.0.0.1", FW1, deadline()) == ApplianceStatus(True, False, 7)
    last = local.xml_api.requests[-1]
    assert (last.type, last.cmd, last.target) == ("op", "<show><session><info /></session></show>", FW1)
    assert vmseries_probe(local, free_port()).status("127.0.0.1", FW1, deadline()) == ApplianceStatus(
        False, False, 7
    )


def test_a_firewall_panorama_cannot_reach_is_none(local: LocalPanorama, health_port: int) -> None:
    probe = vmseries_probe(local, health_port)
    assert probe.status("127.0.0.1", FW2, deadline()) is None  # not connected
    assert probe.status("127.0.0.1", "007951000999999", deadline()) is None  # unknown


def test_without_a_serial_only_the_port_is_probed(local: LocalPanorama, health_port: int) -> None:
    before = len(local.xml_api.requests)
    assert vmseries_probe(local, health_port).status("127.0.0.1", "", deadline()) == ApplianceStatus(
        True, False, 0
    )
    assert vmseries_probe(local, free_port()).status("127.0.0.1", "", deadline()) is None
    assert len(local.xml_api.requests) == before


def test_panorama_refusing_us_is_an_error_not_a_missing_firewall(
    local: LocalPanorama, health_port: int
) -> None:
    with pytest.raises(PermanentError) as refused:
        vmseries_probe(local, health_port, api_key="wrong").status("127.0.0.1", FW1, deadline())
    assert refused.value.code == "Forbidden"
