"""The lab's VM-Series stand-in forwarding PAN-OS logs (gwlb_lab.cloud.logforwarding), without
namespaces: set-up's real code writes the log forwarding profiles into the in-memory Panorama; the
stand-in reads them from the running configuration, turns the agent's flow records (its JSON-lines
flow log) into TRAFFIC and THREAT logs from the profile's payload, and posts them over HTTPS to the
lab's FC HTTP trigger (gwlb_lab.cloud.intake), which runs the real panlogs handler against the
local SLS. What lands in SLS, and what happens when the intake answers 503, cannot be reached,
refuses a log, or an answer is lost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from gwlb_fleet.alibaba.fakes.kms import FakeKms
from gwlb_fleet.app import App, serving
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.deploy import panlogs as deploy_panlogs
from gwlb_fleet.panos import panlogs
from gwlb_fleet.panos.fakes import FakePanorama
from gwlb_fleet.settings import Settings
from gwlb_fleet.sls import queries
from gwlb_fleet.sls.client import Sls
from gwlb_fleet.sls.flowrecord import FlowRecord
from gwlb_functions.panlogs import handler
from gwlb_lab.cloud.appliances import ADMIN_PORT_BRUTE_FORCE, POLICY_RULES
from gwlb_lab.cloud.intake import HttpTrigger
from gwlb_lab.cloud.logforwarding import (
    Destination,
    FirewallLogForwarding,
    FlowLogTail,
    ForwardingConfig,
    ForwardingError,
    HttpPoster,
    LogSender,
    read_forwarding,
    render_payload,
)
from gwlb_lab.sls import Fault, LocalSls
from gwlb_lab.sls.client import set_up, sls_config

pytestmark = pytest.mark.functional

PROJECT = "gwlb-lab-panlogs"
TEMPLATE, DEVICE_GROUP = "gwlb-template", "gwlb-fw"
TOKEN_SECRET = "gwlb-lab/panlogs-token"
TOKEN = "tok-lab-3f9c1e-do-not-print"
SERIAL = "007900000001"
CLIENT, SERVER = "198.18.1.2", "198.18.2.2"


def no_sleep(seconds: float) -> None:
    pass


@dataclass
class Chain:
    """set-up -> Panorama -> the stand-in firewall -> HTTP trigger -> panlogs function -> SLS."""

    panorama: FakePanorama
    trigger: HttpTrigger
    local: LocalSls
    kms: FakeKms
    flow_log: Path
    settings: Settings

    def firewall(self, sender: LogSender | None = None) -> FirewallLogForwarding:
        def pushed() -> ForwardingConfig:
            return read_forwarding(self.panorama, TEMPLATE, DEVICE_GROUP)

        return FirewallLogForwarding(
            SERIAL,
            self.flow_log,
            pushed,
            sender or LogSender(HttpPoster(self.trigger.ca_file)),
            (ADMIN_PORT_BRUTE_FORCE,),
        )

    def agent_writes(self, *records: FlowRecord) -> None:
        """As the agent's JSON-lines sink writes them (gwlb_agent.export)."""
        with open(self.flow_log, "a", encoding="utf-8") as file:
            file.write("".join(r.to_json() + "\n" for r in records))

    def stored(self) -> list[dict[str, str]]:
        return [entry.contents for entry in self.local.store.logs(PROJECT, "flow-logs")]

    def ask(self, name: str) -> list[dict[str, Any]]:
        return queries.run(Sls(sls_config(self.local, PROJECT)), queries.QUERIES[name], 0, 2_000_000_000)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    with LocalSls() as local, HttpTrigger(handler, tmp_path / "tls", "127.0.0.1") as trigger:
        set_up(local, PROJECT)
        key_id, secret = local.credentials()
        settings = Settings.model_validate(
            {
                "FLEET_REGION": "cn-hangzhou",
                "SCALING_GROUP_ID": "asg-1",
                "GWLB_SERVER_GROUP_ID": "sgp-1",
                "GWLB_LISTENER_ID": "lsn-1",
                "STATE_SQLITE_PATH": str(tmp_path / "state.db"),
                "SLS_ENDPOINT": local.endpoint,
                "SLS_PROJECT": PROJECT,
                "ALIBABA_CLOUD_ACCESS_KEY_ID": key_id,
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": secret,
                "FLOW_WRITE_BUDGET_S": 0.3,  # SLS down: the intake answers 503 at once
                "PANORAMA_TEMPLATE": TEMPLATE,
                "PANORAMA_DEVICE_GROUP": DEVICE_GROUP,
                "PANORAMA_TEMPLATE_STACK": "gwlb-stack",
                "PANLOGS_INTAKE_URL": trigger.url,
                "PANLOGS_TOKEN_SECRET": TOKEN_SECRET,
            }
        )
        kms = FakeKms()
        kms.put_secret(TOKEN_SECRET, TOKEN)
        panorama = FakePanorama(
            device_groups=(DEVICE_GROUP,), templates=(TEMPLATE,), security_rules={DEVICE_GROUP: POLICY_RULES}
        )
        want = deploy_panlogs.wanted(settings, TOKEN)
        deploy_panlogs.apply(panorama, want, Deadline.after(30, margin=0), sleep=no_sleep)
        with serving(App(settings, secrets=kms.port(60.0))):
            yield Chain(panorama, trigger, local, kms, tmp_path / "flows-nva-1.jsonl", settings)


def flow(
    number: int,
    *,
    rule: str = "gwlb-allow-web",
    action: str = "allow",
    reason: str = "fin",
    dst_port: int = 80,
    protocol: int = 6,
    start: float = 1796378400.0,
    end: float = 1796378407.0,
    packets: tuple[int, int] = (6, 8),
    octets: tuple[int, int] = (1200, 3920),
) -> FlowRecord:
    return FlowRecord(
        record_id=f"nva-1-{number}-{reason}",
        flow_id=f"nva-1-{number}",
        appliance_id="nva-1",
        start=start,
        end=end,
        emitted=end + 0.2,
        reason=reason,  # type: ignore[arg-type]
        protocol=protocol,
        src_ip=CLIENT,
        src_port=40000 + number,
        dst_ip=SERVER,
        dst_port=dst_port,
        direction="inbound",
        action=action,  # type: ignore[arg-type]
        rule=rule,
        stage="policy",
        packets_fwd=packets[0],
        bytes_fwd=octets[0],
        packets_rev=packets[1],
        bytes_rev=octets[1],
        tcp_flags_fwd=0x1B,
        tcp_flags_rev=0x1B,
        gwlb_ip="198.19.0.1",
        vni=0,
    )


def admin_attempt(number: int) -> FlowRecord:
    return flow(number, rule="gwlb-deny-admin", action="deny", reason="idle", dst_port=8443,
                packets=(2, 0), octets=(120, 0))


# --- what is sent ---------------------------------------------------------------------------------


def test_a_session_becomes_one_traffic_log_from_the_profile_setup_wrote(chain: Chain) -> None:
    firewall = chain.firewall()
    # A long flow: an interval record, then its end; PAN-OS logs the session once, at its end.
    chain.agent_writes(
        flow(1, reason="interval", end=1796378404.0, packets=(3, 4), octets=(600, 1900)),
        flow(1, start=1796378400.0, end=1796378409.0, packets=(3, 4), octets=(600, 2020)),
    )
    firewall.poll()
    firewall.sender.send_pending()

    [stored] = chain.stored()
    assert stored["kind"] == "flow"
    assert stored["record_id"] == f"{SERIAL}-traffic-1"
    assert (stored["serial"], stored["appliance_id"], stored["sequence_number"]) == (SERIAL, SERIAL, "1")
    assert (stored["src_ip"], stored["dst_ip"], stored["dst_port"]) == (CLIENT, SERVER, "80")
    assert (stored["action"], stored["rule"], stored["stage"]) == ("allow", "gwlb-allow-web", "panos")
    assert (stored["application"], stored["session_end_reason"]) == ("web-browsing", "tcp-fin")
    assert (stored["packets_fwd"], stored["bytes_fwd"], stored["packets_rev"], stored["bytes_rev"]) == (
        "6", "1200", "8", "3920")  # fmt: skip
    assert (float(stored["start"]), float(stored["end"])) == (1796378400.0, 1796378409.0)
    assert firewall.sender.snapshot() == {"traffic_generated": 1, "traffic_sent": 1, "pending": 0}
    assert chain.trigger.snapshot() == {"200": 1}


def test_the_payload_is_the_profiles_with_each_variable_replaced(chain: Chain) -> None:
    config = read_forwarding(chain.panorama, TEMPLATE, DEVICE_GROUP)
    [destination] = config.targets("gwlb-allow-web", "traffic")
    assert destination.payload == panlogs.HTTP_PAYLOADS["traffic"]  # what set-up wrote
    assert (destination.protocol, destination.address, destination.port, destination.path) == (
        "HTTPS", "127.0.0.1", chain.trigger.port, panlogs.INTAKE_PATH)  # fmt: skip
    assert dict(destination.headers)[chain.settings.panlogs_auth_header] == TOKEN
    body = render_payload(destination.payload, {name: f"v-{name}" for name in panlogs.TRAFFIC_POSITIONS})
    assert json.loads(body) == {name: f"v-{name}" for name in panlogs.TRAFFIC_POSITIONS}
    with pytest.raises(ForwardingError, match=r"\$receive_time"):
        render_payload(destination.payload, {"serial": SERIAL})


def test_a_denied_admin_attempt_is_a_deny_traffic_log_and_a_blocked_high_threat(chain: Chain) -> None:
    firewall = chain.firewall()
    chain.agent_writes(admin_attempt(1), admin_attempt(2))
    firewall.poll()
    firewall.sender.send_pending()

    by_kind: dict[str, list[dict[str, str]]] = {}
    for entry in chain.stored():
        by_kind.setdefault(entry["kind"], []).append(entry)
    assert [r["record_id"] for r in by_kind["flow"]] == [f"{SERIAL}-traffic-1", f"{SERIAL}-traffic-2"]
    assert [r["record_id"] for r in by_kind["threat"]] == [f"{SERIAL}-threat-1", f"{SERIAL}-threat-2"]
    threat = by_kind["threat"][0]
    assert (threat["threat_id"], threat["severity"], threat["action"], threat["threat_category"]) == (
        "41000", "high", "reset-both", "vulnerability")  # fmt: skip
    [denied] = chain.ask("denied")
    assert (denied["rule"], denied["dst_port"], denied["serial"], int(denied["flows"])) == (
        "gwlb-deny-admin", "8443", SERIAL, 2)  # fmt: skip
    [severity] = chain.ask("threats-blocked-by-severity")
    assert (severity["severity"], int(severity["threats"]), int(severity["firewalls"])) == ("high", 2, 1)


def test_sessions_of_a_rule_without_log_forwarding_are_not_sent(chain: Chain) -> None:
    firewall = chain.firewall()
    chain.agent_writes(flow(1, rule="default", action="deny"), flow(2))
    firewall.poll()
    firewall.sender.send_pending()
    assert firewall.not_forwarded == 1
    assert [r["rule"] for r in chain.stored()] == ["gwlb-allow-web"]


def test_sequence_numbers_count_up_per_log_type(chain: Chain) -> None:
    firewall = chain.firewall()
    chain.agent_writes(flow(1), admin_attempt(2), flow(3), admin_attempt(4), flow(5))
    firewall.poll()
    firewall.sender.send_pending()
    numbers: dict[str, list[int]] = {}
    for entry in chain.stored():
        numbers.setdefault(entry["kind"], []).append(int(entry["sequence_number"]))
    assert numbers == {"flow": [1, 2, 3, 4, 5], "threat": [1, 2]}


# --- when the intake does not take a log --------------------------------------------------------------


def test_a_503_keeps_the_logs_and_sends_them_again_in_order_with_backoff(chain: Chain) -> None:
    waits: list[float] = []

    def sleep(seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) == 3:
            chain.local.fault = Fault()  # SLS is back
        return False

    firewall = chain.firewall(LogSender(HttpPoster(chain.trigger.ca_file), sleep=sleep))
    chain.local.fault = Fault("5xx", status=503)  # the intake cannot write: it answers 503
    chain.agent_writes(*(flow(n) for n in range(1, 6)))
    firewall.poll()
    firewall.sender.send_pending()

    assert waits == [0.5, 1.0, 2.0]
    assert chain.trigger.snapshot() == {"200": 5, "503": 3}
    assert [r["record_id"] for r in chain.stored()] == [f"{SERIAL}-traffic-{n}" for n in range(1, 6)]
    assert firewall.sender.snapshot() == {
        "traffic_generated": 5, "traffic_sent": 5, "traffic_retried": 3, "pending": 0,
        "last_error": firewall.sender.last_error,
    }  # fmt: skip
    assert firewall.sender.last_error.startswith("HTTP 503")


def test_an_unreachable_intake_keeps_the_logs_until_it_answers(chain: Chain) -> None:
    poster = HttpPoster(chain.trigger.ca_file)
    failures = iter([ConnectionRefusedError(111, "Connection refused"), TimeoutError("timed out")])

    def post(destination: Destination, body: bytes, timeout: float) -> tuple[int, bytes]:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return poster(destination, body, timeout)

    firewall = chain.firewall(LogSender(post, sleep=lambda seconds: False))
    chain.agent_writes(flow(1), flow(2))
    firewall.poll()
    firewall.sender.send_pending()
    assert [r["record_id"] for r in chain.stored()] == [f"{SERIAL}-traffic-1", f"{SERIAL}-traffic-2"]
    assert firewall.sender.counts["traffic retried"] == 2 and firewall.sender.pending == 0


def test_a_log_whose_answer_was_lost_is_sent_again_as_the_same_record(chain: Chain) -> None:
    poster = HttpPoster(chain.trigger.ca_file)
    bodies: list[bytes] = []

    def post(destination: Destination, body: bytes, timeout: float) -> tuple[int, bytes]:
        bodies.append(body)
        answer = poster(destination, body, timeout)
        if len(bodies) == 1:
            raise TimeoutError("the answer never came")  # the intake had written it
        return answer

    firewall = chain.firewall(LogSender(post, sleep=lambda seconds: False))
    chain.agent_writes(flow(1))
    firewall.poll()
    firewall.sender.send_pending()
    assert bodies[0] == bodies[1]  # the same log: same serial, seqno, times
    assert [r["record_id"] for r in chain.stored()] == [f"{SERIAL}-traffic-1"] * 2
    [row] = chain.ask("appliance-traffic")  # the audit counts a record id once
    assert (row["serial"], int(row["records"]), int(row["flows"])) == (SERIAL, 1, 1)


def test_a_refused_log_is_counted_and_not_sent_again(chain: Chain) -> None:
    chain.kms.put_secret(TOKEN_SECRET, "another-token")  # the profile's token no longer matches
    # A wait would mean the log is kept to be sent again: give up at the first one.
    firewall = chain.firewall(LogSender(HttpPoster(chain.trigger.ca_file), sleep=lambda seconds: True))
    chain.agent_writes(flow(1))
    firewall.poll()
    firewall.sender.send_pending()
    assert chain.stored() == []
    assert chain.trigger.snapshot() == {"401": 1}
    counts = firewall.sender.snapshot()
    assert (counts["traffic_refused"], counts["pending"], "traffic_retried" in counts) == (1, 0, False)
    assert str(counts["last_error"]).startswith("HTTP 401")


# --- reading the configuration and the agent's flow log ----------------------------------------------


def test_a_profile_with_a_variable_the_firewall_lacks_is_refused_naming_it(chain: Chain) -> None:
    want = deploy_panlogs.wanted(chain.settings, TOKEN)
    formats = tuple(
        replace(f, payload=f.payload.replace("}", ',"user":"$srcuser"}')) if f.log_type == "traffic" else f
        for f in want.profile.formats
    )
    changed = replace(want, profile=replace(want.profile, formats=formats))
    deploy_panlogs.apply(chain.panorama, changed, Deadline.after(30, margin=0), sleep=no_sleep)
    with pytest.raises(ForwardingError, match=r"\$srcuser"):
        read_forwarding(chain.panorama, TEMPLATE, DEVICE_GROUP)
    firewall = chain.firewall()
    chain.agent_writes(flow(1))
    firewall.poll()  # nothing read while the configuration cannot be followed
    assert "$srcuser" in firewall.config_error and firewall.sender.pending == 0
    deploy_panlogs.apply(chain.panorama, want, Deadline.after(30, margin=0), sleep=no_sleep)
    firewall.poll()
    firewall.sender.send_pending()
    assert [r["record_id"] for r in chain.stored()] == [f"{SERIAL}-traffic-1"]


def test_the_tail_waits_for_a_line_to_end_and_skips_loss_reports(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    tail = FlowLogTail(path)
    assert tail.read() == []  # no file yet
    line = flow(1).to_json()
    path.write_text('{"kind":"loss","records_lost":3}\n' + line[:40], encoding="utf-8")
    assert tail.read() == []
    with open(path, "a", encoding="utf-8") as file:
        file.write(line[40:] + "\n")
    assert tail.read() == [flow(1)]
    assert tail.read() == []
