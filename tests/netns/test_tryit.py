"""End to end, as ``scripts/lab run`` does it: client -> GWLB emulator -> gwlb-agent -> server.

Real packets between namespaces this test creates; the agents are the real ``gwlb-agent run``
processes, the emulator the real ``python -m gwlb_lab.gwlb``.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gwlb_lab import netns, tryit
from gwlb_lab.gwlb.encap import Encapsulator
from gwlb_lab.topology import (
    ALLOW_RULE_ID,
    APP_BODY,
    APP_PORT,
    CLIENT,
    DENY_RULE_ID,
    SERVER,
    Lab,
    LabSpec,
    policy_text,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def topo() -> Iterator[netns.Topology]:
    """A topology that is torn down whatever the test did (closing twice is harmless)."""
    with netns.topology() as topology:
        yield topology


def _stop_and_check_clean(lab: Lab) -> None:
    lab.topo.close()
    assert netns.list_namespaces(lab.topo.prefix) == []
    assert all(p.poll() is not None for p in [lab.emulator, lab.server_process,
                                               *(a.process for a in lab.appliances)] if p)


def test_curl_goes_through_the_agents_and_a_deny_rule_blocks_it(
    topo: netns.Topology, tmp_path: Path
) -> None:
    lab = Lab.up(topo, LabSpec(state_dir=tmp_path / "lab", appliances=2, layout="aws"))

    # Through the appliances: ports chosen so that the flow hash uses both of them.
    allowed_ports = []
    for port, member in lab.client_ports(4):
        result = lab.curl(port)
        assert result.ok, result
        assert result.body == APP_BODY
        flow = lab.flow_of_port(port)
        assert flow is not None and flow["member"] == member
        allowed_ports.append(port)

    # A deny rule, loaded on SIGHUP, blocks the next connection.
    generations = lab.set_policy(policy_text(deny_http=True))
    assert set(generations.values()) == {2}
    blocked = lab.curl(timeout=2)
    assert blocked.exit_code == 28 and blocked.status == 0, blocked  # curl's "timed out"
    denied_flow = lab.flow_of_port(blocked.client_port)
    assert denied_flow is not None and denied_flow["returned_fwd"] == 0

    # Restored, it works again.
    lab.set_policy(policy_text())
    again = lab.curl()
    assert again.ok, again
    allowed_ports.append(again.client_port)

    # The emulator: everything that came back matched its flow's member, port and header.
    status = lab.emulator_status()
    counters = status["counters"]
    assert status["mismatches"] == 0, status["drops"]
    assert sum(status["drops"].values()) == 0, status["drops"]
    assert counters["to_members"] > counters["from_members"] == counters["delivered"] > 0
    assert all(m["packets_returned"] > 0 for m in status["members"])
    emulator_flows = {f["sport"]: f for f in lab.emulator_flows()}

    # Flow records: written on FIN, and for the denied (still live) flow when the agents stop.
    assert set(lab.stop_agents().values()) == {0}
    records = [r for r in lab.flow_records() if r.dst_port == APP_PORT]
    by_port = {r.src_port: r for r in records}
    assert sorted(by_port) == sorted([*allowed_ports, blocked.client_port])
    endpoint_id = Encapsulator().endpoint_id.to_bytes(8, "big").hex()
    for port in allowed_ports:
        record = by_port[port]
        assert (record.action, record.rule, record.reason) == ("allow", ALLOW_RULE_ID, "fin")
        assert record.packets_rev > 0
    denied = by_port[blocked.client_port]
    assert (denied.action, denied.rule) == ("deny", DENY_RULE_ID)
    assert denied.packets_rev == 0 and denied.reason == "shutdown"
    for record in records:
        flow = emulator_flows[record.src_port]
        assert (record.src_ip, record.dst_ip, record.direction) == (CLIENT, SERVER, "inbound")
        assert record.appliance_id == flow["member"]
        assert record.flow_cookie == flow["flow_cookie"]
        assert record.endpoint_id == endpoint_id
        assert record.gwlb_ip == "198.19.0.1"

    final = lab.stop_emulator()
    assert final["mismatches"] == 0
    _stop_and_check_clean(lab)


def test_opaque_options_come_back_byte_for_byte(topo: netns.Topology, tmp_path: Path) -> None:
    lab = Lab.up(topo, LabSpec(state_dir=tmp_path / "lab", appliances=1, layout="opaque"))
    result = lab.curl()
    assert result.ok, result
    flow = lab.flow_of_port(result.client_port)
    assert flow is not None
    status = lab.emulator_status()
    assert status["mismatches"] == 0 and status["counters"]["delivered"] > 0

    lab.stop_agents()
    (record,) = [r for r in lab.flow_records() if r.src_port == result.client_port]
    # The agent cannot read this layout: it keeps the raw options, exactly as sent.
    assert record.endpoint_id is None and record.flow_cookie is None
    assert record.geneve_options == flow["geneve_header"][16:]  # after the 8-byte base header
    assert len(bytes.fromhex(record.geneve_options)) == 32
    _stop_and_check_clean(lab)


def test_down_removes_what_a_crashed_run_and_up_left(tmp_path: Path) -> None:
    # A crashed run: its owner pid cannot exist (above pid_max), a process still inside.
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    crashed = f"{netns.PREFIX}{pid_max + 1}-leftover"
    # What `up` left: its namespace, and a process recorded in its state directory.
    up_run_id = f"uptest{os.getpid()}"
    up_ns = f"{netns.PREFIX}{up_run_id}-gwlb"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name in (crashed, up_ns):
            netns.sh("ip", "netns", "add", name)
        processes.append(netns.Namespace(crashed).popen(["sleep", "300"], start_new_session=True))
        processes.append(subprocess.Popen(["sleep", "300"], start_new_session=True))
        state = tmp_path / up_run_id
        state.mkdir()
        started = netns.start_time(processes[1].pid)
        (state / "pids.json").write_text(
            f'{{"owner": "{up_run_id}", "processes": [{{"pid": {processes[1].pid}, '
            f'"start_time": {started}, "role": "gwlb-emulator"}}]}}')

        out = io.StringIO()
        assert tryit.down(out=out, state_root=tmp_path, up_run_id=up_run_id) == 0

        assert crashed not in netns.list_namespaces() and up_ns not in netns.list_namespaces()
        for process in processes:
            assert process.wait(timeout=5) is not None
        text = out.getvalue()
        assert f"removed namespace {crashed}" in text and f"removed namespace {up_ns}" in text
        assert "stopped gwlb-emulator" in text
        assert not (state / "pids.json").exists()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(5)
        for name in (crashed, up_ns):
            netns.remove_namespace(name)
