"""Tun mode's flow records: the real agent, the kernel's ruleset deciding and logging to NFLOG,
conntrack counting, and the agent joining both with the GWLB identity the tun path saw.

The topology is conftest's (GWLB namespace 198.18.50.1 -- agent namespace 198.18.50.2). The
agent namespace holds the appliance's ruleset: web allowed and SSH denied, each decision logged
to NFLOG group ``GROUP`` with the prefix convention of docs/kernel-records.md. The web flow's
record comes when conntrack destroys the flow (here: deleted with ``conntrack -D`` after its
RST, instead of waiting out the CLOSE timeout); the denied SSH flow's once it was quiet for
``denied_idle_timeout`` (1 s here).
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.packet import raw

from gwlb_fleet import geneve as codec
from gwlb_fleet.geneve import GENEVE_PORT
from tests.netns.conftest import AGENT_BIN, GWLB_IP, AgentFactory, AgentProcess, Lab, exchange

CLIENT, SERVER = "198.19.1.10", "198.19.2.20"
GROUP = 9
VNI = 0x5A5A5
ENDPOINT, ATTACHMENT, COOKIE = 0x1122334455667788, 0x99AABBCCDDEEFF00, 0xDEADBEEF
TCP_PACKET = 40  # IP and TCP headers, no options, no payload: what conntrack counts per packet

RULESET = f"""
table inet appliance {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ip saddr 192.0.2.253 ip daddr 192.0.2.254 udp dport 6082 accept comment "the agent's probe"
        ct state established,related accept
        tcp dport 80 ct state new log group {GROUP} prefix "allow web" accept
        tcp dport 22 log group {GROUP} prefix "deny ssh" drop
        log group {GROUP} prefix "deny default" drop
    }}
}}
"""

_ports = itertools.count(31000)


def geneve(inner: bytes) -> bytes:
    header = codec.GeneveHeader(vni=VNI, options=codec.aws_options(ENDPOINT, ATTACHMENT, COOKIE))
    return codec.build(header) + inner


def tcp(sport: int, dport: int, flags: str, seq: int, ack: int = 0, *, reply: bool = False) -> bytes:
    src, dst = (SERVER, CLIENT) if reply else (CLIENT, SERVER)
    return raw(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack))


@pytest.fixture(scope="module")
def ruleset(lab: Lab) -> Iterator[None]:
    subprocess.run(
        ["ip", "netns", "exec", lab.agent.name, "nft", "-f", "-"],
        input=RULESET,
        text=True,
        check=True,
        timeout=30,
        capture_output=True,
    )
    yield
    lab.agent.run("nft", "flush", "ruleset", check=False)


@pytest.fixture(scope="module", params=["off", "tc"])
def offload(request: pytest.FixtureRequest) -> str:
    """Every record test runs without and with the Geneve offload: conntrack counts every packet
    either way (the kernel forwards each one through the tun)."""
    return str(request.param)


@pytest.fixture(scope="module")
def agent(agent_factory: AgentFactory, ruleset: None, offload: str) -> Iterator[AgentProcess]:
    env = {
        "GWLB_AGENT_TUN_OFFLOAD": offload,
        "GWLB_AGENT_MODE": "tun",
        "GWLB_AGENT_TUN__DEVICE": "gwlbtun-r",
        "GWLB_AGENT_TUN__ROUTE_TABLE": "7181",
        "GWLB_AGENT_TUN__RULE_PRIORITY": "180",
        "GWLB_AGENT_TUN__NFLOG_GROUP": str(GROUP),
        "GWLB_AGENT_FLOWS__DENIED_IDLE_TIMEOUT": "1",
    }
    started = agent_factory("", listen_port=GENEVE_PORT, env=env)
    yield started
    if started.process.poll() is None:
        started.terminate()  # the other parameter's agent takes the same device, port and group


def record_of(agent: AgentProcess, dport: int, sport: int) -> dict[str, object]:
    """The flow record of CLIENT:sport -> SERVER:dport, once the agent has written it."""

    def find() -> dict[str, object] | None:
        for record in agent.flow_records():
            if (record.get("src_ip"), record.get("src_port"), record.get("dst_port")) == (
                CLIENT,
                sport,
                dport,
            ):
                return record
        return None

    agent.wait_for(
        lambda: find() is not None, f"a flow record of port {sport} -> {dport}", timeout=15, interval=0.2
    )
    found = find()
    assert found is not None
    return found


def assert_gwlb_identity(record: dict[str, object]) -> None:
    assert (record["gwlb_ip"], record["vni"]) == (GWLB_IP, VNI)
    assert (record["endpoint_id"], record["attachment_id"], record["flow_cookie"]) == (
        f"{ENDPOINT:016x}",
        f"{ATTACHMENT:016x}",
        f"{COOKIE:08x}",
    )


def test_allowed_web_flow_has_its_rule_counters_and_gwlb_identity(lab: Lab, agent: AgentProcess) -> None:
    port = next(_ports)
    flow = [
        geneve(tcp(port, 80, "S", seq=100)),
        geneve(tcp(80, port, "SA", seq=900, ack=101, reply=True)),
        geneve(tcp(port, 80, "A", seq=101, ack=901)),
        geneve(tcp(port, 80, "R", seq=101)),
    ]
    exchange(lab, flow, interval=0.01)  # all four come back: the ruleset allowed the flow
    # conntrack writes counters only when it destroys a flow: now, not after the CLOSE timeout.
    lab.agent.run("conntrack", "-D", "-p", "tcp", "--orig-port-src", str(port))

    record = record_of(agent, 80, port)

    assert (record["action"], record["rule"], record["stage"]) == ("allow", "web", "nftables")
    assert (record["dst_ip"], record["protocol"], record["reason"]) == (SERVER, 6, "rst")
    assert (record["packets_fwd"], record["bytes_fwd"]) == (3, 3 * TCP_PACKET)
    assert (record["packets_rev"], record["bytes_rev"]) == (1, TCP_PACKET)
    assert_gwlb_identity(record)


def test_denied_ssh_flow_has_its_rule_and_gwlb_identity(lab: Lab, agent: AgentProcess) -> None:
    port = next(_ports)
    syn = geneve(tcp(port, 22, "S", seq=2000))
    barrier = geneve(tcp(next(_ports), 80, "S", seq=1))
    result = exchange(lab, [syn, syn, barrier], expect=1, linger=0.3)
    assert len(result.payloads) == 1  # only the web SYN came back: the ruleset dropped SSH

    record = record_of(agent, 22, port)

    assert (record["action"], record["rule"], record["stage"]) == ("deny", "ssh", "nftables")
    assert (record["packets_fwd"], record["bytes_fwd"], record["packets_rev"]) == (2, 2 * TCP_PACKET, 0)
    assert_gwlb_identity(record)


def test_a_flow_open_when_the_agent_stops_is_recorded_then_and_counted_once_after_its_restart(
    lab: Lab, agent: AgentProcess
) -> None:
    """conntrack reports counters only when a flow ends: the agent's stop writes what the kernel
    counted so far for a flow still open (a dump of the table), and the agent that comes back
    counts that flow from its own start, so that no packet is in two records."""
    port = next(_ports)
    opening = [
        geneve(tcp(port, 80, "S", seq=100)),
        geneve(tcp(80, port, "SA", seq=900, ack=101, reply=True)),
        geneve(tcp(port, 80, "A", seq=101, ack=901)),
    ]
    exchange(lab, opening, interval=0.01)
    assert agent.terminate() == 0

    at_stop = record_of(agent, 80, port)
    assert (at_stop["reason"], at_stop["rule"], at_stop["action"]) == ("shutdown", "web", "allow")
    assert (at_stop["packets_fwd"], at_stop["packets_rev"]) == (2, 1)
    assert_gwlb_identity(at_stop)

    agent.restart()
    exchange(lab, [geneve(tcp(port, 80, "A", seq=101, ack=901)), geneve(tcp(port, 80, "R", seq=101))],
             interval=0.01)  # fmt: skip
    lab.agent.run("conntrack", "-D", "-p", "tcp", "--orig-port-src", str(port))

    agent.wait_for(lambda: len(_records_of(agent, port)) == 2, "the restarted agent's record", timeout=15)
    after = _records_of(agent, port)[1]
    assert (after["reason"], after["packets_fwd"], after["bytes_fwd"]) == ("rst", 2, 2 * TCP_PACKET)
    assert after["packets_rev"] == 0 and after["flow_id"] != at_stop["flow_id"]
    assert after["rule"] == ""  # the ruleset logged the flow's first packet to the agent before
    assert_gwlb_identity(after)


def _records_of(agent: AgentProcess, sport: int) -> list[dict[str, object]]:
    return [r for r in agent.flow_records() if (r.get("src_port"), r.get("dst_port")) == (sport, 80)]


def test_flow_log_losses_are_exported_as_metrics(agent: AgentProcess) -> None:
    metrics = agent.metrics()
    assert metrics["gwlb_agent_kernel_event_bursts_lost_total"] == 0
    assert metrics["gwlb_agent_kernel_unusable_verdicts_total"] == 0


def test_a_second_agent_on_the_same_nflog_group_fails_naming_it_and_leaves_nothing(
    lab: Lab, agent: AgentProcess, tmp_path: Path
) -> None:
    device, table = "gwlbtun-r2", 7182
    (tmp_path / "agent.toml").write_text("")
    argv = [AGENT_BIN, "run", "--config", str(tmp_path / "agent.toml"), "--listen", "0.0.0.0:6181",
            "--health", "127.0.0.1:8199", "--gwlb-cidr", f"{GWLB_IP}/32",
            "--flow-log", str(tmp_path / "flows.jsonl"), "--appliance-id", "nva-second"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("GWLB_AGENT_")}
    env.update({"GWLB_AGENT_MODE": "tun", "GWLB_AGENT_TUN__DEVICE": device,
                "GWLB_AGENT_TUN__ROUTE_TABLE": str(table), "GWLB_AGENT_TUN__RULE_PRIORITY": "181",
                "GWLB_AGENT_TUN__NFLOG_GROUP": str(GROUP)})  # fmt: skip
    log = tmp_path / "agent.log"
    process = lab.topology.start(lab.agent, argv, log_path=str(log), env=env)
    try:
        code = process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"the second agent did not exit:\n{log.read_text()}") from None

    assert code != 0
    assert f"NFLOG group {GROUP}: bind refused" in log.read_text()
    # It had set up its tun path before the flow log failed: taken down again.
    assert f"lookup {table}" not in lab.agent.run("ip", "-4", "rule", "show").stdout
    assert device not in lab.agent.run("ip", "link").stdout
    assert agent.health() == 200  # the first agent, which holds the group, is untouched
