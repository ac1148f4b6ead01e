"""Kernel-mode flow records from real traffic through a forwarding namespace with nftables.

    client 198.18.60.2 ==c0/f0== fwd (nftables, conntrack, Suricata) ==f1/s0== 198.18.61.2 server

The forwarding namespace stands for the appliance: its ruleset allows web, DNS-like UDP and ping,
and denies SSH, logging each decision to NFLOG group 7 ("allow web", "deny ssh", ...). The agent's
kernel flow log (``kernel_flowlog_peer.py``) runs there and writes the records it joins from
conntrack, NFLOG and (in the Suricata test) Suricata's EVE log. The tun path is not involved: the
peer is told the GWLB identity of the UDP flow, as the tun path would tell it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gwlb_fleet import geneve
from gwlb_lab.netns import Namespace, Topology

PEER_SCRIPT = str(Path(__file__).with_name("kernel_flowlog_peer.py"))
CLIENT_IP, SERVER_IP = "198.18.60.2", "198.18.61.2"
NFLOG_GROUP = 7
UDP_PORT, UDP_CLIENT_PORT, UDP_PAYLOAD, UDP_DATAGRAMS = 5353, 40053, 100, 5
ICMP_ID, ICMP_PAYLOAD, ECHOES = 0x1234, 32, 3
MARKER, NOTICE = "GWLB-TEST-MARKER", "GWLB-TEST-NOTICE"
WAIT = 20.0  # bound on waiting for the records of the traffic sent

RULESET = f"""
table inet appliance {{
  chain forward {{
    type filter hook forward priority -10; policy drop;
    ct state established,related accept
    tcp dport 80 ct state new log group {NFLOG_GROUP} prefix "allow web" accept
    udp dport {UDP_PORT} ct state new log group {NFLOG_GROUP} prefix "allow dns" accept
    icmp type echo-request ct state new log group {NFLOG_GROUP} prefix "allow ping" accept
    tcp dport 22 log group {NFLOG_GROUP} prefix "deny ssh" drop
    log group {NFLOG_GROUP} prefix "deny default" drop
  }}
}}
"""
SURICATA_RULES = f"""\
drop tcp any any -> any 80 (msg:"gwlb test marker"; flow:to_server,established; content:"{MARKER}"; sid:1000001; rev:1;)
alert tcp any any -> any 80 (msg:"gwlb test notice"; flow:to_server,established; content:"{NOTICE}"; sid:1000002; rev:1;)
"""  # noqa: E501
SURICATA_CONFIG = """\
%YAML 1.1
---
vars:
  address-groups: {{HOME_NET: "any", EXTERNAL_NET: "any"}}
  port-groups: {{HTTP_PORTS: "80"}}
default-log-dir: {dir}
default-rule-path: {dir}
rule-files: [local.rules]
classification-file: /etc/suricata/classification.config
reference-config-file: /etc/suricata/reference.config
outputs:
  - eve-log: {{enabled: yes, filetype: regular, filename: eve.json, types: [alert]}}
logging: {{default-log-level: notice, outputs: [{{console: {{enabled: yes}}}}]}}
nfq: {{mode: accept, fail-open: yes}}
stream: {{inline: auto}}
"""

UDP_SERVER = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("{SERVER_IP}", {UDP_PORT}))
while True:
    data, peer = s.recvfrom(2048); s.sendto(data, peer)
"""
UDP_CLIENT = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("{CLIENT_IP}", {UDP_CLIENT_PORT}))
s.settimeout(3)
for _ in range({UDP_DATAGRAMS}):
    s.sendto(b"u" * {UDP_PAYLOAD}, ("{SERVER_IP}", {UDP_PORT})); s.recvfrom(2048)
print("ok")
"""
ICMP_CLIENT = f"""
import socket, struct
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(3)
for seq in range({ECHOES}):
    echo = struct.pack("!BBHHH", 8, 0, 0, {ICMP_ID}, seq) + b"x" * {ICMP_PAYLOAD}
    s.sendto(echo[:2] + struct.pack("!H", csum(echo)) + echo[4:], ("{SERVER_IP}", 0))
    while True:
        data = s.recv(2048); ihl = (data[0] & 15) * 4
        if data[ihl] == 0 and struct.unpack("!H", data[ihl + 4 : ihl + 6])[0] == {ICMP_ID}:
            break
print("ok")
"""
SSH_CLIENT = f"""
import socket
try:
    socket.create_connection(("{SERVER_IP}", 22), timeout=1.5)
except OSError:
    print("refused or timed out")
"""


@dataclass
class ApplianceLab:
    topology: Topology
    client: Namespace
    fwd: Namespace
    server: Namespace
    workdir: Path


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[ApplianceLab]:
    if shutil.which("nft") is None or shutil.which("conntrack") is None:
        pytest.skip("needs nft (nftables) and conntrack (conntrack): scripts/bootstrap test installs them")
    topo = Topology()
    try:
        client, fwd, server = (topo.namespace(role) for role in ("kr-cli", "kr-fwd", "kr-srv"))
        topo.link(client, "c0", fwd, "f0")
        topo.link(server, "s0", fwd, "f1")
        client.add_address("c0", f"{CLIENT_IP}/24")
        fwd.add_address("f0", "198.18.60.1/24")
        fwd.add_address("f1", "198.18.61.1/24")
        server.add_address("s0", f"{SERVER_IP}/24")
        client.ip("route", "add", "default", "via", "198.18.60.1")
        server.ip("route", "add", "default", "via", "198.18.61.1")
        fwd.sysctl("net.ipv4.ip_forward", "1")
        _nft(fwd, RULESET)
        topo.start(
            server,
            [sys.executable, "-m", "http.server", "80", "--bind", SERVER_IP],
            log_path=str(tmp_path / "http.log"),
        )
        topo.start(server, [sys.executable, "-c", UDP_SERVER], log_path=str(tmp_path / "udp.log"))
        yield ApplianceLab(topo, client, fwd, server, tmp_path)
    finally:
        topo.close()


def _nft(ns: Namespace, script: str) -> None:
    result = subprocess.run(
        ["ip", "netns", "exec", ns.name, "nft", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, f"nft refused the ruleset: {result.stderr}"


def _start_flowlog(
    lab: ApplianceLab, eve: Path | None = None, export_interval: float = 60.0
) -> subprocess.Popen[bytes]:
    udp_key = (
        socket.inet_aton(CLIENT_IP)
        + socket.inet_aton(SERVER_IP)
        + UDP_CLIENT_PORT.to_bytes(2, "big")
        + UDP_PORT.to_bytes(2, "big")
    )
    header = geneve.GeneveHeader(vni=77, options=geneve.aws_options(0xE1, 0xA7, 0xC0))
    options = geneve.build(header)[geneve.BASE_HEADER_LEN :]
    job = {
        "out": str(lab.workdir / "records.jsonl"),
        "nflog_group": NFLOG_GROUP,
        "eve": str(eve) if eve else None,
        "denied_idle": 1.0,
        "export_interval": export_interval,
        "identities": [
            {
                "protocol": 17,
                "key_hex": udp_key.hex(),
                "gwlb_ip": "198.18.50.1",
                "vni": 77,
                "options_hex": options.hex(),
            }
        ],
    }
    (lab.workdir / "job.json").write_text(json.dumps(job))
    process = lab.topology.start(
        lab.fwd,
        [sys.executable, PEER_SCRIPT, str(lab.workdir / "job.json")],
        stdout=subprocess.PIPE,
        stderr=open(lab.workdir / "flowlog.err", "wb"),  # noqa: SIM115 - the child keeps it
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.strip() == b"ready", f"flow log did not start: {line!r} {_read(lab, 'flowlog.err')}"
    return process


def _read(lab: ApplianceLab, name: str) -> str:
    path = lab.workdir / name
    return path.read_text(errors="replace") if path.exists() else ""


def _records(lab: ApplianceLab) -> list[dict[str, object]]:
    text = _read(lab, "records.jsonl")
    return [json.loads(line) for line in text.splitlines() if line]


def _wait_for(lab: ApplianceLab, done: Callable[[list[dict[str, object]]], bool]) -> list[dict[str, object]]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        records = _records(lab)
        if done(records):
            return records
        time.sleep(0.1)
    raise AssertionError(
        f"records not complete after {WAIT}s: {_records(lab)}\nflow log stderr: {_read(lab, 'flowlog.err')}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    assert process.wait(10) == 0


def _rule(rule: str) -> Callable[[dict[str, object]], bool]:
    return lambda record: record["rule"] == rule


def test_allowed_flows_carry_conntrack_counts_and_the_rule_denied_ssh_has_its_own_record(
    appliance: ApplianceLab,
) -> None:
    flowlog = _start_flowlog(appliance)
    cli = appliance.client
    assert (
        cli.run(
            "curl", "-s", "-o", "/dev/null", "-m", "5", "-w", "%{http_code}", f"http://{SERVER_IP}/"
        ).stdout
        == "200"
    )
    assert cli.run(sys.executable, "-c", UDP_CLIENT).stdout.strip() == "ok"
    assert cli.run(sys.executable, "-c", ICMP_CLIENT).stdout.strip() == "ok"
    cli.run(sys.executable, "-c", SSH_CLIENT)
    time.sleep(0.3)  # the last FIN/ACKs reach conntrack before the flush
    appliance.fwd.run("conntrack", "-F")  # DESTROY now instead of after conntrack's timeouts

    rules = ("web", "dns", "ping", "ssh")
    records = _wait_for(appliance, lambda rs: all(any(map(_rule(r), rs)) for r in rules))
    _stop(flowlog)
    by_rule = {str(r["rule"]): r for r in records}
    assert len(records) == 4, records

    udp = by_rule["dns"]
    datagram = 20 + 8 + UDP_PAYLOAD
    assert (udp["action"], udp["stage"], udp["protocol"]) == ("allow", "nftables", 17)
    assert (udp["src_ip"], udp["src_port"], udp["dst_ip"], udp["dst_port"]) == (
        CLIENT_IP,
        UDP_CLIENT_PORT,
        SERVER_IP,
        UDP_PORT,
    )
    assert (udp["packets_fwd"], udp["bytes_fwd"]) == (UDP_DATAGRAMS, UDP_DATAGRAMS * datagram)
    assert (udp["packets_rev"], udp["bytes_rev"]) == (UDP_DATAGRAMS, UDP_DATAGRAMS * datagram)
    # The GWLB identity the tun path would have told: joined by the 5-tuple.
    assert (udp["gwlb_ip"], udp["vni"]) == ("198.18.50.1", 77)
    assert (udp["endpoint_id"], udp["attachment_id"], udp["flow_cookie"]) == (
        f"{0xE1:016x}",
        f"{0xA7:016x}",
        f"{0xC0:08x}",
    )
    assert 0 < float(udp["start"]) <= float(udp["end"])  # type: ignore[arg-type]

    ping = by_rule["ping"]
    echo = 20 + 8 + ICMP_PAYLOAD
    assert (ping["protocol"], ping["icmp_type"], ping["icmp_code"]) == (1, 8, 0)
    assert (ping["src_port"], ping["dst_port"]) == (0, 0)
    assert (ping["packets_fwd"], ping["bytes_fwd"], ping["packets_rev"], ping["bytes_rev"]) == (
        ECHOES,
        ECHOES * echo,
        ECHOES,
        ECHOES * echo,
    )

    web = by_rule["web"]
    assert (web["action"], web["protocol"], web["dst_port"]) == ("allow", 6, 80)
    # A whole HTTP exchange: handshake, request, answer, both FINs.
    assert int(web["packets_fwd"]) >= 4 and int(web["packets_rev"]) >= 4  # type: ignore[call-overload]
    assert int(web["bytes_rev"]) > int(web["bytes_fwd"])  # type: ignore[call-overload]
    assert (web["reason"], web["session_end_reason"]) == ("fin", "conntrack time_wait")
    assert web["gwlb_ip"] == ""  # no identity told for it: none rather than a wrong one

    ssh = by_rule["ssh"]
    assert (ssh["action"], ssh["stage"], ssh["dst_port"], ssh["reason"]) == ("deny", "nftables", 22, "idle")
    assert int(ssh["packets_fwd"]) >= 1 and ssh["packets_rev"] == 0  # type: ignore[call-overload]
    assert ssh["bytes_fwd"] == 60 * int(ssh["packets_fwd"])  # type: ignore[call-overload]


def test_suricata_drop_is_the_records_rule_and_an_alert_only_signature_is_noted(
    appliance: ApplianceLab,
) -> None:
    from gwlb_agent.kernel.suricata import install_queue_rule

    if shutil.which("suricata") is None:
        pytest.skip(
            "suricata is not installed (Debian: apt-get install suricata; bookworm: from "
            "bookworm-backports): scripts/bootstrap test installs it"
        )
    suricata_dir = appliance.workdir / "suricata"
    suricata_dir.mkdir()
    (suricata_dir / "local.rules").write_text(SURICATA_RULES)
    (suricata_dir / "suricata.yaml").write_text(SURICATA_CONFIG.format(dir=suricata_dir))
    install_queue_rule(0, netns=appliance.fwd.name)
    eve = suricata_dir / "eve.json"
    flowlog = _start_flowlog(appliance, eve=eve)
    suricata = appliance.topology.start(
        appliance.fwd,
        [
            "suricata",
            "-c",
            str(suricata_dir / "suricata.yaml"),
            "-q",
            "0",
            "--pidfile",
            str(suricata_dir / "suricata.pid"),
            "-l",
            str(suricata_dir),
        ],
        log_path=str(suricata_dir / "console.log"),
    )
    _wait_started(suricata, suricata_dir / "console.log")

    cli = appliance.client
    plain = cli.run("curl", "-s", "-o", "/dev/null", "-m", "3", "-w", "%{http_code}", f"http://{SERVER_IP}/")
    noted = cli.run(
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-m",
        "3",
        "-w",
        "%{http_code}",
        "-H",
        f"X-Test: {NOTICE}",
        f"http://{SERVER_IP}/",
    )
    blocked = cli.run(
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-m",
        "3",
        "-w",
        "%{http_code}",
        "-H",
        f"X-Test: {MARKER}",
        f"http://{SERVER_IP}/",
        check=False,
    )
    assert (plain.stdout, noted.stdout) == ("200", "200")
    assert blocked.returncode == 28, "the marked request was answered: Suricata did not drop it"
    appliance.fwd.run("conntrack", "-F")

    records = _wait_for(appliance, lambda rs: len(rs) >= 3)
    _stop(flowlog)
    assert len(records) == 3, records
    dropped = [r for r in records if r["stage"] == "suricata"]
    assert len(dropped) == 1, records
    assert (dropped[0]["action"], dropped[0]["rule"]) == ("deny", "sid:1000001 gwlb test marker")
    allowed = sorted((r for r in records if r["stage"] == "nftables"), key=lambda r: str(r["alerts"]))
    assert [(r["action"], r["rule"], r["alerts"]) for r in allowed] == [
        ("allow", "web", ""),
        ("allow", "web", "sid:1000002 gwlb test notice"),
    ]


LONG_UDP_CLIENT = f"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("{CLIENT_IP}", {UDP_CLIENT_PORT}))
s.settimeout(3)
bursts, pause = int(sys.argv[1]), float(sys.argv[2])
for burst in range(bursts):
    if burst:
        time.sleep(pause)
    for _ in range({UDP_DATAGRAMS}):
        s.sendto(b"u" * {UDP_PAYLOAD}, ("{SERVER_IP}", {UDP_PORT})); s.recvfrom(2048)
print("ok")
"""


def _udp_bursts(lab: ApplianceLab, bursts: int, pause: float = 0.0) -> None:
    """``bursts`` of UDP_DATAGRAMS echoes in the one UDP flow (same ports), ``pause`` s apart."""
    assert (
        lab.client.run(sys.executable, "-c", LONG_UDP_CLIENT, str(bursts), str(pause)).stdout.strip() == "ok"
    )


def _udp(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return [r for r in records if r["protocol"] == 17 and r["dst_port"] == UDP_PORT]


def _sum(records: list[dict[str, object]], field: str) -> int:
    return sum(int(r[field]) for r in records)  # type: ignore[call-overload]


def test_a_long_flow_is_recorded_every_interval_and_at_stop_with_every_packet_counted_once(
    appliance: ApplianceLab,
) -> None:
    """conntrack counts a flow only when it ends; the agent's dumps of the table give a long flow
    records every export_interval (1 s here) and a last one when the agent stops while the flow
    is still open (a UDP flow stays in conntrack for 30 s and more)."""
    flowlog = _start_flowlog(appliance, export_interval=1.0)
    _udp_bursts(appliance, bursts=3, pause=1.5)
    _wait_for(appliance, lambda rs: len(_udp(rs)) >= 2)
    _stop(flowlog)

    udp = _udp(_records(appliance))
    datagram = 20 + 8 + UDP_PAYLOAD
    reasons = [r["reason"] for r in udp]
    assert reasons == ["interval"] * (len(udp) - 1) + ["shutdown"], reasons
    assert len({r["flow_id"] for r in udp}) == 1
    assert sorted(str(r["record_id"]) for r in udp) == sorted(
        f"{udp[0]['flow_id']}-{i}" for i in range(len(udp))
    )
    sent = 3 * UDP_DATAGRAMS
    assert (_sum(udp, "packets_fwd"), _sum(udp, "bytes_fwd")) == (sent, sent * datagram)
    assert (_sum(udp, "packets_rev"), _sum(udp, "bytes_rev")) == (sent, sent * datagram)
    assert all(r["gwlb_ip"] == "198.18.50.1" and r["vni"] == 77 for r in udp)


SHORT_FLOWS = 8
ONE_DATAGRAM_THEN_GONE = f"""
import socket, subprocess, sys
for n in range({SHORT_FLOWS}):
    port = {UDP_CLIENT_PORT} + 100 + n
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("{CLIENT_IP}", port)); s.settimeout(3)
    s.sendto(b"u" * {UDP_PAYLOAD}, ("{SERVER_IP}", {UDP_PORT})); s.recvfrom(2048); s.close()
    # conntrack ends the flow at once: its DESTROY follows its verdict by a few milliseconds
    subprocess.run(["ip", "netns", "exec", sys.argv[1], "conntrack", "-D", "-p", "udp",
                    "--orig-port-src", str(port)], capture_output=True, check=True)
print("ok")
"""


def test_a_flow_that_ends_milliseconds_after_its_verdict_still_has_its_rule(appliance: ApplianceLab) -> None:
    """The kernel batches NFLOG messages unless told otherwise (up to 100 packets or the flush
    timeout): a DESTROY could then be read before the verdict of its flow's first packet."""
    flowlog = _start_flowlog(appliance)
    out = appliance.client.run(sys.executable, "-c", ONE_DATAGRAM_THEN_GONE, appliance.fwd.name)
    assert out.stdout.strip() == "ok"
    records = _wait_for(appliance, lambda rs: len(_udp(rs)) >= SHORT_FLOWS)
    _stop(flowlog)
    assert [r["rule"] for r in _udp(records)] == ["dns"] * SHORT_FLOWS, records


def test_an_agent_started_while_a_flow_is_open_records_only_what_came_after_its_start(
    appliance: ApplianceLab,
) -> None:
    """The first agent records the flow up to its stop; the next one takes the counts conntrack
    holds at its start as already recorded: across both, every packet is counted once."""
    first = _start_flowlog(appliance)
    _udp_bursts(appliance, bursts=1)
    _stop(first)
    [before] = _udp(_records(appliance))
    assert (before["reason"], before["packets_fwd"]) == ("shutdown", UDP_DATAGRAMS)

    second = _start_flowlog(appliance)
    _udp_bursts(appliance, bursts=2)
    appliance.fwd.run("conntrack", "-F")  # the flow ends now
    _wait_for(appliance, lambda rs: len(_udp(rs)) >= 2)
    _stop(second)
    udp = _udp(_records(appliance))
    assert len(udp) == 2, udp
    after = udp[1]
    assert after["flow_id"] != before["flow_id"]  # another agent's flow id
    # The ruleset logged the flow's first packet to the agent before: this one cannot name the rule.
    assert (before["rule"], after["rule"], after["action"]) == ("dns", "", "allow")
    assert (after["reason"], after["packets_fwd"], after["packets_rev"]) == (
        "idle",
        2 * UDP_DATAGRAMS,
        2 * UDP_DATAGRAMS,
    )


def _wait_started(suricata: subprocess.Popen[bytes], console: Path) -> None:
    """Suricata says "Engine started" once it reads the queue; bounded, so a slow start fails."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = console.read_text(errors="replace") if console.exists() else ""
        if "Engine started" in text:
            return
        if suricata.poll() is not None:
            raise AssertionError(f"suricata exited {suricata.returncode}: {text}")
        time.sleep(0.1)
    raise AssertionError(f"suricata not started after 30 s: {console.read_text(errors='replace')}")
