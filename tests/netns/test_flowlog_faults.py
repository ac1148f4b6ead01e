"""Flow records to SLS end to end, and what the agent does when SLS fails.

The real agent (agent namespace) ships to the real local SLS endpoint (``python -m gwlb_lab.sls``, in
the same namespace on 127.0.0.1, SQLite file in the test's directory) through the real SDK; the
GWLB namespace sends real Geneve. Every packet is a new UDP flow (its own inner source port) and
UDP flows go idle after half a second, so records follow the traffic within about a second. The
agent's JSON-lines flow log sees every record: it is the reference SLS is checked against,
record_id by record_id. Faults are switched at run time through the endpoint's /_lab/fault API.

Fast by construction: batches close after 0.2 s, outages last a second or two, the agent tries
SLS again at most a second apart (``retry_max_delay``; ``permanent_error_delay`` likewise after a
403) and every wait polls against a deadline. The in-memory shipper tests are in
tests/functional/test_flowlog_shipping.py; these are the same promises with nothing faked.
"""

from __future__ import annotations

import json
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP

from tests.netns.conftest import (
    SLS_KEY_ID,
    SLS_KEY_SECRET,
    SLS_PROJECT,
    AgentFactory,
    AgentProcess,
    Lab,
    LocalSlsProcess,
    start_local_sls,
    start_peer,
)
from tests.packets import encap

pytestmark = pytest.mark.timeout(90)

CLIENT, SERVER = "198.19.1.10", "198.19.2.20"
INSTANCE_ID, ZONE = "i-bp1flowfaults", "cn-hangzhou-j"
ALLOW_ALL = 'default_action = "allow"\ninternal_cidrs = ["198.19.2.0/24"]\n'
SPOOL_MIN = 64 << 10  # the smallest spool the agent accepts
PERMANENT_ERROR_DELAY = 1.0  # seconds, for the test that waits for a retry after a 403
SLOW_DELAY = 2.5  # seconds a slow SLS takes to answer; the agent logs a request over 2 s as slow

_next_port = iter(range(10_000, 65_000))


# --- traffic ----------------------------------------------------------------------------------------


def new_flows(count: int, protocol: str = "udp") -> tuple[list[int], list[bytes]]:
    """``count`` datagrams, each the first packet of its own flow: (client ports, datagrams).
    UDP flows end by idle timeout (0.5 s here); TCP SYNs stay open until the agent stops."""
    ports = [next(_next_port) for _ in range(count)]
    if protocol == "udp":
        inner = [IP(src=CLIENT, dst=SERVER) / UDP(sport=p, dport=53) / b"query" for p in ports]
    else:
        inner = [IP(src=CLIENT, dst=SERVER) / TCP(sport=p, dport=443, flags="S") for p in ports]
    return ports, [encap(packet) for packet in inner]


def send(lab: Lab, agent: AgentProcess, datagrams: Sequence[bytes], *, interval: float = 0.0) -> None:
    """Send from the GWLB namespace; every datagram must come back (the policy allows all)."""
    result = start_peer(lab, datagrams, expect=len(datagrams), interval=interval, timeout=5.0,
                        agent_port=agent.listen_port).result()
    assert result.send_errors == [] and result.sent == len(datagrams)
    assert len(result.replies) == len(datagrams), f"{len(result.replies)} of {len(datagrams)} returned"


# --- what the agent produced, what SLS holds ---------------------------------------------------------


def appliance_id(agent: AgentProcess) -> str:
    return agent.argv[agent.argv.index("--appliance-id") + 1]


def flow_log(agent: AgentProcess) -> list[dict[str, object]]:
    """The flow records of the agent's JSON-lines log (loss reports have a ``kind``)."""
    return [r for r in agent.flow_records() if r.get("kind", "flow") == "flow"]


def wait_for_flow_records(agent: AgentProcess, ports: Sequence[int], timeout: float = 8.0
                          ) -> list[dict[str, object]]:
    """Until the flow log has a record for every client port sent; then all its flow records."""
    wanted = set(ports)
    agent.wait_for(lambda: wanted <= {r["src_port"] for r in flow_log(agent)},
                   f"a flow record for each of {len(wanted)} flows in the flow log", timeout, 0.05)
    return flow_log(agent)


def spooled_records(spool: Path) -> int:
    """Records in the agent's disk spool, from its file names (``SEQ-RECORDS.batch``)."""
    return sum(int(path.stem.partition("-")[2]) for path in spool.glob("*.batch"))


def metric(agent: AgentProcess, name: str) -> float:
    return agent.metrics()[f"gwlb_agent_{name}"]


def wait_delivered(agent: AgentProcess, sls: LocalSlsProcess, produced: Sequence[dict[str, object]],
                   timeout: float, what: str = "") -> float:
    ids = {str(r["record_id"]) for r in produced}

    def arrived() -> bool:
        return ids <= set(sls.record_ids())

    try:
        return agent.wait_for(arrived, f"all {len(ids)} records in SLS{what}", timeout, 0.1)
    except AssertionError as exc:
        missing = len(ids - set(sls.record_ids()))
        raise AssertionError(f"{missing} of {len(ids)} records never reached SLS{what}; local SLS "
                             f"stats {sls.stats()}\n{exc}") from None


def settled_record_ids(sls: LocalSlsProcess, timeout: float = 5.0) -> set[str]:
    """The flow record_ids in SLS once all it acknowledged is readable (the local endpoint turns
    what it took into rows after a pause in writes): for when no agent runs to wait with."""
    deadline = time.monotonic() + timeout
    while sls.stats()["stored"] != len(sls.stored()):
        assert time.monotonic() < deadline, f"the local SLS did not settle within {timeout}s"
        time.sleep(0.1)
    return set(sls.record_ids())


def sls_contents(record: dict[str, object]) -> dict[str, str]:
    """A flow-log record as SLS log contents: every set field as text, ``kind`` added."""
    contents = {"kind": "flow"}
    for key, value in record.items():
        if value is not None and value != "":
            contents[key] = value if isinstance(value, str) else repr(value)
    return contents


def assert_each_record_once(sls: LocalSlsProcess, produced: Sequence[dict[str, object]],
                            ports: Sequence[int]) -> int:
    """SLS holds exactly the flow log's records once deduplicated by record_id, each as the
    flow log has it, and there is one record for every flow sent. Returns the duplicates."""
    ids = [str(r["record_id"]) for r in produced]
    assert len(ids) == len(set(ids)), "record_id is not unique in the agent's own flow log"
    assert sorted(int(r["src_port"]) for r in produced) == sorted(ports), \
        "the flow log does not have exactly one record for every flow sent"  # type: ignore[call-overload]
    stored: dict[str, list[dict[str, str]]] = defaultdict(list)
    for log in sls.stored(kind="flow"):
        stored[log.contents["record_id"]].append(log.contents)
    missing, unexpected = set(ids) - set(stored), set(stored) - set(ids)
    assert not missing and not unexpected, (
        f"SLS after dedup: {len(stored)} records, flow log {len(ids)}: {len(missing)} missing "
        f"(e.g. {sorted(missing)[:3]}), {len(unexpected)} unknown (e.g. {sorted(unexpected)[:3]})")
    for record in produced:
        copies = stored[str(record["record_id"])]
        assert copies == [sls_contents(record)] * len(copies), f"SLS differs from the flow log: {copies}"
    return sum(len(copies) - 1 for copies in stored.values())


# --- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture
def sls(lab: Lab, tmp_path: Path) -> Iterator[LocalSlsProcess]:
    local = start_local_sls(lab, tmp_path)
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def start_agent(agent_factory: AgentFactory, sls: LocalSlsProcess, spool: Path
                ) -> Iterator[Callable[..., AgentProcess]]:
    """An agent shipping to ``sls`` (keyword arguments: more [flow_log] settings); stopped at
    the end of the test, while ``sls`` still answers."""
    started: list[AgentProcess] = []

    def start(shutdown_budget: float | None = None, **flow_log: str) -> AgentProcess:
        settings = {
            "sls_endpoint": sls.endpoint, "sls_project": SLS_PROJECT,
            "access_key_id": SLS_KEY_ID, "access_key_secret": SLS_KEY_SECRET,
            "spool_dir": str(spool), "batch_delay": "0.2",
            # Attempts at most a second apart while SLS is down: once it is back, records
            # follow within about a second, however long the outage lasted.
            "retry_max_delay": "1",
            **flow_log,
        }
        env = {f"GWLB_AGENT_FLOW_LOG__{key.upper()}": value for key, value in settings.items()}
        env.update({"GWLB_AGENT_FLOWS__IDLE_TIMEOUT": "0.5", "GWLB_AGENT_INSTANCE_ID": INSTANCE_ID,
                    "GWLB_AGENT_ZONE": ZONE})
        if shutdown_budget is not None:
            env["GWLB_AGENT_SHUTDOWN_BUDGET"] = str(shutdown_budget)
        agent = agent_factory(ALLOW_ALL, env=env)
        started.append(agent)
        return agent

    try:
        yield start
    finally:
        for agent in started:
            if agent.process.poll() is None:
                agent.process.terminate()
                try:
                    agent.process.wait(15)
                except Exception:  # noqa: BLE001 - teardown: make sure it is gone
                    agent.process.kill()
                    agent.process.wait(5)


# --- the normal case ----------------------------------------------------------------------------------


def test_records_in_sls_are_the_flow_log_records_with_the_appliance_identity(
    lab: Lab, sls: LocalSlsProcess, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent()
    ports, datagrams = new_flows(40)
    send(lab, agent, datagrams)
    produced = wait_for_flow_records(agent, ports)
    wait_delivered(agent, sls, produced, timeout=5)

    # Read back as a user would: the real SDK's GetLogs, from inside the namespace.
    rows = sls.get_logs("kind: flow")
    assert len(rows) == len(produced) == 40  # nothing failed: nothing sent twice
    by_id = {row["record_id"]: row for row in rows}
    for record in produced:
        row = dict(by_id[str(record["record_id"])])
        meta = {key: row.pop(key) for key in list(row) if key.startswith("__")}
        assert row == sls_contents(record)
        assert meta == {
            "__topic__": appliance_id(agent),
            "__source__": INSTANCE_ID,
            "__tag__:instance_id": INSTANCE_ID,
            "__tag__:zone": ZONE,
            "__time__": str(int(record["end"])),  # type: ignore[call-overload]
        }
    assert sorted(int(r["src_port"]) for r in rows) == sorted(ports)

    metrics = agent.metrics()
    assert metrics["gwlb_agent_sls_up"] == 1
    assert metrics["gwlb_agent_sls_records_shipped_total"] == 40
    assert metrics["gwlb_agent_sls_send_failures_total"] == 0
    assert metrics["gwlb_agent_sls_spool_batches"] == 0
    assert metrics["gwlb_agent_sls_records_lost_spool_full_total"] == 0


# --- outages --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outage:
    """One way SLS fails, switched on and off while traffic flows."""

    fault: dict[str, object]  # for /_lab/fault; {} for SLS down: the endpoint process stopped
    failing: bool = True  # False: SLS still answers (slowly), so the agent does not call it down
    settings: dict[str, str] = field(default_factory=dict)  # more [flow_log] settings

    def begin(self, lab: Lab, sls: LocalSlsProcess) -> None:
        if self.fault:
            sls.set_fault(**self.fault)  # type: ignore[arg-type]
        else:
            sls.stop()  # connections refused: nothing listens on the port

    def end(self, lab: Lab, sls: LocalSlsProcess) -> None:
        if self.fault:
            sls.set_fault("none")
        else:
            sls.restart(lab)


OUTAGES = {
    "down": Outage({}),
    "refuse": Outage({"mode": "refuse"}),  # connections closed unanswered
    "500": Outage({"mode": "5xx", "status": 500}),
    "reset": Outage({"mode": "reset"}),
    # The agent gives up on a request after request_timeout, 1 s here.
    "hang": Outage({"mode": "hang"}, settings={"request_timeout": "1"}),
    # Each request answered after 2.5 s (the agent calls a request slow after 2 s).
    "slow": Outage({"mode": "slow", "delay": SLOW_DELAY}, failing=False),
}


@pytest.mark.parametrize("outage", OUTAGES.values(), ids=OUTAGES.keys())
def test_sls_outage_under_steady_traffic_every_record_arrives_exactly_once(
    lab: Lab, sls: LocalSlsProcess, start_agent: Callable[..., AgentProcess], spool: Path, outage: Outage
) -> None:
    agent = start_agent(**outage.settings)
    ports, datagrams = new_flows(1200)
    peer = start_peer(lab, datagrams, expect=len(datagrams), interval=6.0 / len(datagrams),
                      timeout=5.0, agent_port=agent.listen_port)  # 200 new flows a second for 6 s
    try:
        agent.wait_for(lambda: bool(sls.record_ids()), "the first records in SLS", 5, 0.05)
        outage.begin(lab, sls)
        up = 0 if outage.failing else 1
        agent.wait_for(lambda: metric(agent, "sls_spool_batches") >= 3 and metric(agent, "sls_up") == up,
                       f"batches waiting on disk while SLS is out, sls_up {up}", 6, 0.05)
        assert peer.process.poll() is None, "the traffic ended before SLS came back: not steady"
        outage.end(lab, sls)
        result = peer.result()
    finally:
        peer.kill()
    assert result.send_errors == [] and len(result.replies) == len(datagrams)

    produced = wait_for_flow_records(agent, ports)
    wait_delivered(agent, sls, produced, timeout=20, what=" after the outage")
    assert assert_each_record_once(sls, produced, ports) == 0, "records sent twice"
    agent.wait_for(lambda: metric(agent, "sls_spool_batches") == 0, "an empty spool", 5)
    assert spooled_records(spool) == 0

    metrics = agent.metrics()
    assert metrics["gwlb_agent_sls_up"] == 1
    assert metrics["gwlb_agent_sls_records_lost_spool_full_total"] == 0
    assert metrics["gwlb_agent_sls_records_shipped_total"] == len(produced)
    log = agent.log.read_text()
    if outage.failing:
        assert metrics["gwlb_agent_sls_send_failures_total"] > 0
        assert "SLS is not taking flow records" in log and "SLS takes flow records again" in log
    else:
        assert metrics["gwlb_agent_sls_send_failures_total"] == 0
        assert metrics["gwlb_agent_sls_request_seconds_max"] >= SLOW_DELAY
        assert "SLS is slow" in log and "SLS answers promptly again" in log
    assert "flow record spool drained" in log
    if outage.fault:
        stats = sls.stats()
        assert stats["faults"][str(outage.fault["mode"])] > 0  # type: ignore[index]
        assert stats["abandoned"] == 0 or outage.fault["mode"] == "hang", stats  # cut off by the agent

    # The audit's own answer (deduplicated on record_id in its SQL), through the real SDK.
    traffic = sls.audit("appliance-traffic")
    assert [(r["appliance_id"], r["instance_id"], r["zone"], r["records"], r["flows"])
            for r in traffic] == [(appliance_id(agent), INSTANCE_ID, ZONE, str(len(produced)),
                                   str(len(ports)))]


def test_agent_restarted_mid_outage_loses_no_record(
    lab: Lab, sls: LocalSlsProcess, start_agent: Callable[..., AgentProcess], spool: Path
) -> None:
    agent = start_agent()
    sls.set_fault("5xx", status=503)

    # Before the restart: UDP flows that end (idle), TCP flows still open at SIGTERM.
    ended, ended_datagrams = new_flows(300)
    open_, open_datagrams = new_flows(50, "tcp")
    send(lab, agent, [*ended_datagrams, *open_datagrams])
    wait_for_flow_records(agent, ended)
    agent.wait_for(lambda: spooled_records(spool) == 300, "the ended flows' records on disk", 5, 0.05)

    assert agent.terminate() == 0
    produced = flow_log(agent)
    assert sorted(int(r["src_port"]) for r in produced) == sorted(ended + open_)  # type: ignore[call-overload]
    assert sum(r["reason"] == "shutdown" for r in produced) == 50
    assert spooled_records(spool) == len(produced) == 350, "records not on disk when the agent stopped"
    assert sls.record_ids() == []

    agent.restart()  # same appliance, same spool, SLS still failing
    assert metric(agent, "sls_spool_batches") == len(list(spool.glob("*.batch")))
    after, after_datagrams = new_flows(200)
    send(lab, agent, after_datagrams)
    produced = wait_for_flow_records(agent, [*ended, *open_, *after])
    agent.wait_for(lambda: spooled_records(spool) == 550, "every record on disk after the restart", 5,
                   0.05)
    assert metric(agent, "sls_up") == 0

    sls.set_fault("none")
    wait_delivered(agent, sls, produced, timeout=20, what=" after the restart and the outage")
    assert_each_record_once(sls, produced, [*ended, *open_, *after])
    agent.wait_for(lambda: metric(agent, "sls_spool_batches") == 0, "an empty spool", 5)
    assert spooled_records(spool) == 0
    assert metric(agent, "sls_records_lost_spool_full_total") == 0


def test_a_full_spool_drops_records_counted_and_reported(
    lab: Lab, sls: LocalSlsProcess, start_agent: Callable[..., AgentProcess], spool: Path
) -> None:
    # Small batches (about 100 records, 2.5 KB on disk): the spool takes some, not all.
    agent = start_agent(spool_max_bytes=str(SPOOL_MIN), batch_bytes=str(SPOOL_MIN))
    sls.set_fault("5xx")
    ports, datagrams = new_flows(5000)
    send(lab, agent, datagrams)
    produced = wait_for_flow_records(agent, ports, timeout=10)

    # While SLS is down every record is on disk or counted lost, and the spool stays in bounds.
    def lost() -> int:
        return int(metric(agent, "sls_records_lost_spool_full_total"))

    agent.wait_for(lambda: spooled_records(spool) + lost() == len(produced),
                   "each record spooled or counted lost", 5, 0.05)
    lost_records = lost()
    assert 0 < lost_records < len(produced)
    assert 0 < metric(agent, "sls_spool_bytes") <= SPOOL_MIN
    assert sum(path.stat().st_size for path in spool.glob("*.batch")) <= SPOOL_MIN
    full = [line for line in agent.log.read_text().splitlines() if "spool full" in line]
    assert len(full) == 1 and json.loads(full[0])["level"] == "error", full  # said once, loudly
    assert sls.record_ids() == []

    sls.set_fault("none")
    agent.wait_for(lambda: bool(sls.record_ids("loss")), "the loss report in SLS", 20, 0.1)
    agent.wait_for(lambda: metric(agent, "sls_spool_batches") == 0, "an empty spool", 5)

    reports = {log.contents["record_id"]: log for log in sls.stored(kind="loss")}
    assert len(reports) == 1
    report = next(iter(reports.values()))
    assert report.topic == appliance_id(agent)
    assert report.tags == {"instance_id": INSTANCE_ID, "zone": ZONE}
    assert report.contents["loss_reason"] == "spool_full"
    assert report.contents["appliance_id"] == appliance_id(agent)
    assert int(report.contents["lost_records"]) == lost_records == lost()  # no more lost since
    assert float(report.contents["loss_since"]) <= float(report.contents["loss_until"])

    produced_ids = {str(r["record_id"]) for r in produced}
    delivered = set(sls.record_ids("flow"))
    assert delivered <= produced_ids
    assert len(delivered) + lost_records == len(produced)

    # And as the audit asks it, through the real SDK.
    assert [(r["appliance_id"], r["loss_reason"], r["records_lost"], r["reports"])
            for r in sls.audit("lost-records")] == [
        (appliance_id(agent), "spool_full", str(lost_records), "1")]


# --- bad credentials ------------------------------------------------------------------------------------


def test_bad_credentials_are_reported_clearly_and_records_kept(
    lab: Lab, sls: LocalSlsProcess, start_agent: Callable[..., AgentProcess], spool: Path
) -> None:
    sls.set_fault("403")  # 403 Unauthorized, as SLS answers a key RAM denies
    agent = start_agent()
    ports, datagrams = new_flows(50)
    send(lab, agent, datagrams)
    produced = wait_for_flow_records(agent, ports)

    def unauthorized() -> list[dict[str, object]]:
        return [json.loads(line) for line in agent.log.read_text().splitlines()
                if '"Unauthorized"' in line]

    agent.wait_for(lambda: bool(unauthorized()), "a log line saying Unauthorized", 5, 0.05)
    agent.wait_for(lambda: spooled_records(spool) == len(produced), "the records on disk", 5, 0.05)
    [line] = unauthorized()  # once, not once per attempt
    assert line["level"] == "error" and line["code"] == "Unauthorized" and line["status"] == 403
    assert "credentials" in str(line["msg"])
    assert SLS_KEY_SECRET not in agent.log.read_text()

    metrics = agent.metrics()
    assert metrics["gwlb_agent_sls_up"] == 0
    assert metrics["gwlb_agent_sls_spool_batches"] >= 1
    assert metrics["gwlb_agent_sls_records_shipped_total"] == 0
    assert metrics["gwlb_agent_sls_records_lost_spool_full_total"] == 0
    assert sls.record_ids() == []
    assert sls.stats()["faults"]["403"] > 0  # type: ignore[index]


def test_records_spooled_during_a_403_arrive_once_it_clears(
    lab: Lab, sls: LocalSlsProcess, start_agent: Callable[..., AgentProcess], spool: Path
) -> None:
    """After a permanent error the agent waits ``flow_log.permanent_error_delay`` before it tries
    again (60 s by default: here 1 s, so the test need not wait a minute)."""
    sls.set_fault("403")
    agent = start_agent(permanent_error_delay=str(PERMANENT_ERROR_DELAY))
    ports, datagrams = new_flows(50)
    send(lab, agent, datagrams)
    produced = wait_for_flow_records(agent, ports)
    agent.wait_for(lambda: spooled_records(spool) == len(produced), "the records on disk", 5, 0.05)

    sls.set_fault("none")  # the key is allowed again
    wait_delivered(agent, sls, produced, timeout=PERMANENT_ERROR_DELAY + 8,
                   what=f" within permanent_error_delay ({PERMANENT_ERROR_DELAY} s) + 8 s of the "
                        "403 clearing")
    assert_each_record_once(sls, produced, ports)
    assert metric(agent, "sls_up") == 1
    assert spooled_records(spool) == 0


# --- a 403 that clears ----------------------------------------------------------------------------


def log_lines(agent: AgentProcess, message: str) -> list[dict[str, object]]:
    """The agent's JSON log lines whose message contains ``message``."""
    lines = [json.loads(line) for line in agent.log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if message in str(line.get("msg", ""))]


def test_a_403_that_clears_is_noticed_within_seconds_at_the_default_permanent_delay(
    lab: Lab, sls: LocalSlsProcess, start_agent: Callable[..., AgentProcess], spool: Path
) -> None:
    """permanent_error_delay (60 s by default) is the longest wait between probes, not the first:
    a key that works again after a few seconds is noticed within a few seconds."""
    sls.set_fault("403")
    agent = start_agent(permanent_error_delay="60")
    ports, datagrams = new_flows(50)
    send(lab, agent, datagrams)
    produced = wait_for_flow_records(agent, ports)
    agent.wait_for(lambda: spooled_records(spool) == len(produced), "the records on disk", 5, 0.05)
    agent.wait_for(lambda: sls.stats()["faults"].get("403", 0) >= 3,  # type: ignore[attr-defined]
                   "three probes while SLS answers 403", 8, 0.1)

    sls.set_fault("none")
    wait_delivered(agent, sls, produced, timeout=10, what=" within 10 s of the 403 clearing")
    assert assert_each_record_once(sls, produced, ports) == 0

    [first] = log_lines(agent, "SLS refuses the agent's credentials")
    assert first["level"] == "error" and first["problem"] == "credentials" and first["code"] == "Unauthorized"
    retries = log_lines(agent, "SLS still not taking flow records")
    assert retries and all(line["problem"] == "credentials" for line in retries)
    delays = [float(line["retry_in_s"]) for line in [first, *retries]]  # type: ignore[arg-type]
    assert delays == sorted(delays) and delays[0] <= 1.0, delays  # from a second, growing
    assert log_lines(agent, "flow record spool drained")


# --- shutdown -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlowStop:
    delay: float  # seconds SLS takes to answer each request
    budget: float  # the agent's shutdown_budget
    all_sent_at_stop: bool  # True: SLS answers every waiting batch within the budget


SLOW_STOPS = {
    # The request in flight at the end of the budget is cut off; everything is on disk.
    "answers-after-the-budget": SlowStop(delay=30.0, budget=3.0, all_sent_at_stop=False),
    # A few slow requests fit in the (default) budget: the spool is empty at exit.
    "answers-within-the-budget": SlowStop(delay=1.5, budget=10.0, all_sent_at_stop=True),
}


@pytest.mark.parametrize("case", SLOW_STOPS.values(), ids=SLOW_STOPS.keys())
def test_sigterm_while_sls_is_slow_exits_within_the_budget_and_the_restart_sends_the_rest(
    lab: Lab, sls: LocalSlsProcess, start_agent: Callable[..., AgentProcess], spool: Path, case: SlowStop
) -> None:
    agent = start_agent(shutdown_budget=case.budget, request_timeout="40", slow_request="1")
    sls.set_fault("slow", delay=case.delay)
    ended, ended_datagrams = new_flows(400)
    open_, open_datagrams = new_flows(50, "tcp")  # still open at SIGTERM: records at shutdown
    send(lab, agent, [*ended_datagrams, *open_datagrams])
    wait_for_flow_records(agent, ended)
    # A slow SLS does not keep records in memory: within batch_delay they are on disk.
    agent.wait_for(lambda: spooled_records(spool) + len(set(sls.record_ids())) >= len(ended),
                   "every ended flow's record on disk or in SLS", 5, 0.05)
    if not case.all_sent_at_stop:  # a request unanswered for 1 s: slow, before any answer
        agent.wait_for(lambda: metric(agent, "sls_request_in_flight_seconds") >= 1.0 and bool(
            log_lines(agent, "SLS is slow")), "a slow SLS in the metrics and the log", 5, 0.1)

    assert agent.terminate(timeout=case.budget + 2) == 0  # within the budget, and cleanly
    produced = flow_log(agent)
    assert sorted(int(r["src_port"]) for r in produced) == sorted(ended + open_)  # type: ignore[call-overload]
    in_sls, on_disk = settled_record_ids(sls), spooled_records(spool)
    assert len(in_sls) + on_disk == len(produced), (len(in_sls), on_disk, len(produced))
    assert log_lines(agent, "stop signal received")[0]["signals"] == ["SIGTERM"]
    [stopped] = log_lines(agent, "agent stopped")
    assert stopped["records_spooled"] == on_disk
    slow = log_lines(agent, "SLS is slow")
    assert slow and slow[0]["level"] == "warning", "a slow SLS is not in the log"
    if case.all_sent_at_stop:
        assert on_disk == 0
    else:
        assert in_sls == set() and on_disk == len(produced)
        assert log_lines(agent, "cut off the request in flight")
        agent.wait_for(lambda: sls.stats()["abandoned"] >= 1, "the cut-off request dropped by SLS", 5)

    sls.set_fault("none")
    agent.restart()
    wait_delivered(agent, sls, produced, timeout=15, what=" after the restart")
    assert assert_each_record_once(sls, produced, ended + open_) == 0, "records sent twice"
    agent.wait_for(lambda: spooled_records(spool) == 0, "an empty spool", 5)


def test_sigterm_while_sls_is_down_then_both_restart_every_record_arrives_once(
    lab: Lab, sls: LocalSlsProcess, start_agent: Callable[..., AgentProcess], spool: Path
) -> None:
    agent = start_agent(shutdown_budget=3.0)
    before, before_datagrams = new_flows(100)
    send(lab, agent, before_datagrams)
    wait_delivered(agent, sls, wait_for_flow_records(agent, before), timeout=5)

    sls.stop()  # SLS down: connections refused
    during, during_datagrams = new_flows(300)
    open_, open_datagrams = new_flows(50, "tcp")
    send(lab, agent, [*during_datagrams, *open_datagrams])
    wait_for_flow_records(agent, before + during)
    agent.wait_for(lambda: spooled_records(spool) == len(during), "the records made while down on disk",
                   5, 0.05)
    assert agent.terminate(timeout=3.0 + 2) == 0
    produced = flow_log(agent)
    assert spooled_records(spool) == len(during) + len(open_)
    [stopped] = log_lines(agent, "agent stopped")
    assert stopped["records_spooled"] == len(during) + len(open_)
    assert log_lines(agent, "flow records left in the spool")

    sls.restart(lab)
    agent.restart()
    wait_delivered(agent, sls, produced, timeout=15, what=" after SLS and the agent restarted")
    assert assert_each_record_once(sls, produced, before + during + open_) == 0, "records sent twice"


def test_sigkill_while_sls_is_slow_loses_nothing_but_the_last_batch_delay(
    lab: Lab, sls: LocalSlsProcess, start_agent: Callable[..., AgentProcess], spool: Path
) -> None:
    """A SIGKILL (systemd after TimeoutStopSec, the OOM killer) runs no shutdown: what is on disk
    is what survives. Every record older than batch_delay (0.2 s here) must be there."""
    agent = start_agent()
    sls.set_fault("slow", delay=30.0)
    ports, datagrams = new_flows(300)
    send(lab, agent, datagrams)
    produced = wait_for_flow_records(agent, ports)
    agent.wait_for(lambda: spooled_records(spool) == len(produced), "every record on disk", 5, 0.05)

    assert agent.kill() == -signal.SIGKILL
    sls.set_fault("none")
    agent.restart()
    wait_delivered(agent, sls, produced, timeout=15, what=" after the SIGKILL and restart")
    assert assert_each_record_once(sls, produced, ports) == 0, "records sent twice"
