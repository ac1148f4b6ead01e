"""Flow-log benchmark: records per second one SLS shipper sustains, and what shipping flow
records costs the packet loop.

    .venv/bin/python scripts/bench/flowlog.py [--records N] [--shipper-rounds N]
        [--flows N] [--idle-timeout S] [--export-interval S] [--duration S] [--size BYTES]
        [--rates R ...] [--bisect N] [--retries N] [--rounds N]
        [--skip-shipper] [--skip-packet-loop]

Shipper throughput (no root needed): the local SLS endpoint (``python -m gwlb_lab.sls``, SQLite file)
runs as a process of its own on one CPU; this process, on the other, feeds N distinct flow
records through one real SlsShipper (the real gwlb_fleet.sls.client.Sls client over HTTP, a real Spool in a
temporary directory) with write() and close(), and times it until the endpoint says it stored
them all (checked: nothing spooled, nothing lost). Target: at least 50,000 records/s on one
core. References, measured in the same round: encoding alone (log_contents + logproto), the
same records through JsonLinesSink to a file, and the endpoint alone (the same LogGroups posted
straight through the client).

Packet-loop cost (needs root): two agents, each in a namespace of its own, forward Geneve from
the C generator and ship their flow records to SLS: one to a live local endpoint (on 127.0.0.1
in its namespace), the other to one that drops every connection unanswered (fault "refuse"),
so that it spools to disk. Many inner flows, made at warm-up and kept (long idle timeout), with
an export interval of 1 s: every flow that saw a packet writes a record every 2 s, so that
shipping is busy while a trial runs. The same rate search for both, their trials alternating,
as in dataplane.py; after each trial the agent is left to finish its records, so that one
agent's shipping never falls into the other's trial. Target: the dead-SLS agent's highest rate
with at most 1% loss is at least 0.95 of the live one's.

This is a benchmark, not a test: it asserts nothing and exits 0 whatever the figures are;
it exits non-zero only when it could not measure.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import math
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netbench import (
    LOSS_LIMIT,
    BenchError,
    Search,
    Trial,
    build_programs,
    geometric_rates,
    http_get,
    interleave,
    parse_generator_output,
    say,
    stop,
    tail,
)

REPO = Path(__file__).resolve().parents[2]

RECORDS_TARGET = 50_000  # records/s, one shipper on one core
RATIO_TARGET = 0.95  # packet-loop rate with SLS dead / with SLS live
PROJECT = "gwlb-bench"
LOGSTORE = "flow-logs"
KEY_ID, KEY_SECRET = "lab-access-key", "lab-secret"  # the local endpoint takes any signed request
EXPORT_BATCH = 4096  # records per write(), as RecordExporter hands them over
ENDPOINT_START = 60.0  # seconds for the endpoint to start and create its logstores

# The packet-loop half: the generator's namespace plays the GWLB; each agent's namespace has
# its own veth pair to it (the generator's end .1, the agent's .2) and its own SLS endpoint.
VARIANTS = ("live", "dead")
SUBNETS = {"live": "198.18.0.0/30", "dead": "198.18.0.4/30"}
MTU = 9000
HEALTH = "127.0.0.1:18080"  # loopback inside each agent's namespace
SLS_LISTEN = "127.0.0.1:18081"
ENDPOINT_NICE = 19  # the endpoints run at the lowest priority (see start_endpoint)
SPOOL_ROOM = 4 << 30  # the dead agent's spool_max_bytes: far more than a run writes
WARMUP_RATE = 20_000
WARMUP_TRIES = 10
HEALTH_TIMEOUT = 30.0
SETTLE_LIMIT = 60.0  # seconds an agent may take to finish its records after a trial
STOP_GRACE = 30.0


# --- shipper throughput ------------------------------------------------------------------------


def flow_records(count: int) -> list[Any]:
    """``count`` distinct records shaped as the agent's flow table writes them (UDP, AWS
    Geneve options, allowed by the default rule), ending over the last minute."""
    from gwlb_fleet.sls.flowrecord import FlowRecord

    now = time.time()
    boot = os.urandom(4).hex()
    records = []
    for i in range(count):
        end = round(now - 60 + 60 * i / count, 6)
        records.append(FlowRecord(
            record_id=f"{boot}-{i + 1:x}-0", flow_id=f"{boot}-{i + 1:x}", appliance_id="bench",
            start=round(end - 1.5, 6), end=end, emitted=round(end + 2.0, 6), reason="idle",
            protocol=17, src_ip=f"198.19.{i // 60000 % 256}.1", src_port=1024 + i % 60000,
            dst_ip="198.18.2.2", dst_port=80, direction="unknown", action="allow",
            rule="default", stage="rules", packets_fwd=3 + i % 5, bytes_fwd=(3 + i % 5) * 200,
            packets_rev=3 + i % 5, bytes_rev=(3 + i % 5) * 200, tcp_flags_fwd=0,
            tcp_flags_rev=0, gwlb_ip="198.18.0.1", vni=0, endpoint_id="00000001be4c0001",
            attachment_id="00000002a77ac002", flow_cookie=f"{i:08x}",
        ))
    return records


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass
class Endpoint:
    """The local SLS endpoint as a process of its own (``python -m gwlb_lab.sls``)."""

    process: subprocess.Popen[bytes]
    url: str

    def request(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method="GET" if data is None else "POST")
        with urllib.request.urlopen(request, timeout=120) as response:  # a reset may take a while
            answer: dict[str, Any] = json.load(response)
        return answer


def read_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line the process writes on stdout, or "" if none comes in ``timeout``."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    data = b""
    fd = process.stdout.fileno()
    while b"\n" not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").partition("\n")[0]


def endpoint_command(listen: str, db: Path, fault: str = "none") -> list[str]:
    return [sys.executable, "-m", "gwlb_lab.sls", "--listen", listen, "--db", str(db), "--setup",
            PROJECT, "--fault", fault, "--log-level", "warning"]


def start_endpoint(prefix: list[str], db: Path, log: Path) -> Endpoint:
    with log.open("ab") as stderr:
        process = subprocess.Popen(
            [*prefix, *endpoint_command("127.0.0.1:0", db)], stdout=subprocess.PIPE,
            stderr=stderr, cwd=REPO, start_new_session=True,
        )
    line = read_line(process, ENDPOINT_START)
    if not line.startswith("listening on "):
        stop(process)
        raise BenchError(f"the local SLS endpoint did not start ({line!r}):\n{tail(log)}")
    return Endpoint(process, line.split()[-1])


@dataclass
class ShipperRound:
    records: int
    wall: float  # write() of the first record until the endpoint has stored the last
    cpu: float  # this process's CPU time over the same span
    waiting: float  # inside put_log_group: the request, the endpoint's work, the answer
    batches: int
    encode: float  # seconds: log_contents + encode_log + encode_log_group, no I/O
    json_lines: float  # seconds: JsonLinesSink.write + close
    endpoint_alone: float  # seconds: the pre-encoded LogGroups posted through the same client
    raw_bytes: int
    body_bytes: int

    def rate(self, seconds: float) -> float:
        return self.records / seconds if seconds > 0 else 0.0


def timed_sls(endpoint: Endpoint) -> Any:
    """A real gwlb_fleet.sls.client.Sls that also adds up the time spent in put_log_group."""
    from gwlb_fleet.sls.client import PutResult, Sls, SlsConfig

    class TimedSls(Sls):
        waiting = 0.0
        calls = 0

        def put_log_group(self, logstore: str, log_group: bytes) -> PutResult:
            started = time.perf_counter()
            try:
                return super().put_log_group(logstore, log_group)
            finally:
                self.waiting += time.perf_counter() - started
                self.calls += 1

    return TimedSls(SlsConfig.model_validate({
        "endpoint": endpoint.url, "project": PROJECT, "access_key_id": KEY_ID,
        "access_key_secret": KEY_SECRET}))


def wait_stored(endpoint: Endpoint, count: int, limit: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        stats = endpoint.request("/_lab/stats")
        if stats["stored"] >= count or time.monotonic() > deadline:
            return stats
        time.sleep(0.01)


def measure_encode(records: Sequence[Any], identity: Any) -> float:
    from gwlb_fleet.sls import loggroup

    encode_log, encode_log_group = loggroup.encode_log, loggroup.encode_log_group
    started = time.perf_counter()
    for chunk in chunks(records, EXPORT_BATCH):
        logs = [encode_log(r.log_time(), r.log_contents()) for r in chunk]
        encode_log_group(logs, topic=identity.appliance_id, source=identity.instance_id,
                         tags=identity.tags())
    return time.perf_counter() - started


def measure_json_lines(records: Sequence[Any], path: Path) -> float:
    from gwlb_agent.export import JsonLinesSink

    started = time.perf_counter()
    sink = JsonLinesSink(path)
    for chunk in chunks(records, EXPORT_BATCH):
        sink.write(chunk)
    sink.close()
    elapsed = time.perf_counter() - started
    path.unlink()
    return elapsed


def measure_shipper(records: Sequence[Any], endpoint: Endpoint, spool_dir: Path,
                    identity: Any) -> tuple[float, float, float, int, dict[str, Any]]:
    """(wall, cpu, waiting, batches, endpoint stats) of one shipper taking every record."""
    from gwlb_agent.shipper import SlsShipper
    from gwlb_agent.spool import Spool

    endpoint.request("/_lab/reset", {"logs": True})
    sls = timed_sls(endpoint)
    spool = Spool(spool_dir, 1 << 30)
    shipper = SlsShipper(sls, spool, identity)
    cpu_started, started = time.process_time(), time.perf_counter()
    for chunk in chunks(records, EXPORT_BATCH):
        shipper.write(chunk)
        shipper.tick()  # as the export thread does after each hand-over
    shipper.close()
    stats = wait_stored(endpoint, len(records))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    problems = []
    if stats["stored"] != len(records) or stats["logs"] != len(records):
        problems.append(f"the endpoint stored {stats['stored']:,} (PutLogs counted "
                        f"{stats['logs']:,}) of {len(records):,} records")
    numbers = shipper.stats
    if numbers.records_shipped != len(records):
        problems.append(f"the shipper counted {numbers.records_shipped:,} shipped")
    if numbers.batches_spooled or len(spool) or numbers.records_lost_spool_full:
        problems.append(f"{numbers.batches_spooled} batches spooled, {len(spool)} still in the "
                        f"spool, {numbers.records_lost_spool_full:,} records lost")
    if numbers.send_failures:
        problems.append(f"{numbers.send_failures} failed sends ({numbers.last_error})")
    if problems:
        raise BenchError("shipper throughput: not every record arrived: " + "; ".join(problems))
    return wall, cpu, sls.waiting, sls.calls, stats


def measure_endpoint_alone(records: Sequence[Any], endpoint: Endpoint, identity: Any) -> float:
    """The endpoint's own ceiling: the shipper's LogGroups, encoded beforehand, posted one
    after the other through the same client, until stored."""
    from gwlb_fleet.sls import loggroup

    groups = [
        loggroup.encode_log_group(
            [loggroup.encode_log(r.log_time(), r.log_contents()) for r in chunk],
            topic=identity.appliance_id, source=identity.instance_id, tags=identity.tags())
        for chunk in chunks(records, EXPORT_BATCH)
    ]
    endpoint.request("/_lab/reset", {"logs": True})
    sls = timed_sls(endpoint)
    started = time.perf_counter()
    for group in groups:
        sls.put_log_group(LOGSTORE, group)
    stats = wait_stored(endpoint, len(records))
    elapsed = time.perf_counter() - started
    if stats["stored"] != len(records):
        raise BenchError(f"endpoint alone: stored {stats['stored']:,} of {len(records):,}")
    return elapsed


def run_shipper(args: argparse.Namespace, workdir: Path) -> tuple[list[ShipperRound], str]:
    from gwlb_agent.shipper import Identity

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2 and shutil.which("taskset"):
        endpoint_prefix = ["taskset", "-c", str(cpus[0])]
        pinning = f"endpoint on CPU {cpus[0]}, shipper (this process) on CPU {cpus[1]} (taskset)"
    else:
        endpoint_prefix = []
        pinning = f"none ({len(cpus)} CPU usable or no taskset): figures are unreliable"
    say()
    say(f"shipper throughput: {args.records:,} distinct flow records through one SlsShipper "
        "into the local SLS endpoint")
    say(f"  endpoint: python -m gwlb_lab.sls, SQLite file, a process of its own; pinning: {pinning}")
    say(f"  records handed over {EXPORT_BATCH:,} at a time (write, tick), then close(); timed "
        f"until the endpoint has stored them all; rounds: {args.shipper_rounds}, the best of "
        "each figure counts")
    records = flow_records(args.records)
    identity = Identity("bench", instance_id="i-bench0000", zone="bench-zone-a")
    endpoint = start_endpoint(endpoint_prefix, workdir / "shipper-sls.db",
                              workdir / "shipper-sls.log")
    rounds = []
    try:
        if len(cpus) >= 2:
            os.sched_setaffinity(0, {cpus[1]})
        for number in range(1, args.shipper_rounds + 1):
            encode = measure_encode(records, identity)
            json_lines = measure_json_lines(records, workdir / "records.jsonl")
            wall, cpu, waiting, batches, stats = measure_shipper(
                records, endpoint, workdir / f"spool-{number}", identity)
            alone = measure_endpoint_alone(records, endpoint, identity)
            result = ShipperRound(args.records, wall, cpu, waiting, batches, encode,
                                  json_lines, alone, stats["raw_bytes"], stats["body_bytes"])
            rounds.append(result)
            say(f"    round {number}: shipper {result.rate(wall):>8,.0f} records/s end to end "
                f"({result.rate(cpu):,.0f} per CPU-second, {waiting / wall:.0%} of it waiting "
                f"for the endpoint, {batches} requests) | encode only "
                f"{result.rate(encode):,.0f} | json-lines {result.rate(json_lines):,.0f} | "
                f"endpoint alone {result.rate(alone):,.0f}")
    finally:
        os.sched_setaffinity(0, set(cpus))
        stop(endpoint.process)
    return rounds, pinning


def report_shipper(rounds: Sequence[ShipperRound], pinning: str) -> None:
    def top(measure: Callable[[ShipperRound], float]) -> float:
        return max(r.rate(measure(r)) for r in rounds)

    records = rounds[0].records
    wall, cpu = top(lambda r: r.wall), top(lambda r: r.cpu)
    encode, json_lines = top(lambda r: r.encode), top(lambda r: r.json_lines)
    alone = top(lambda r: r.endpoint_alone)
    waiting = min(r.waiting / r.wall for r in rounds)
    raw, body = rounds[0].raw_bytes, rounds[0].body_bytes
    say()
    say(f"shipper throughput: one SlsShipper, {records:,} distinct flow records, best of "
        f"{len(rounds)} rounds")
    say(f"  pinning: {pinning}")
    say(f"  end to end into the local endpoint   {wall:>9,.0f} records/s   (every record stored, "
        "none spooled or lost)")
    say(f"  the shipper's CPU time               {cpu:>9,.0f} records per CPU-second   (encoding, "
        "lz4, signing, HTTP: what one core sustains when SLS answers at once)")
    say(f"  waiting for the endpoint's answers   {waiting:>9.0%} of the end-to-end time at least "
        "(one request in flight: the shipper waits while the endpoint stores a batch)")
    say(f"  per record: {raw / records:,.0f} bytes of LogGroup, {body / records:,.1f} bytes "
        "sent (lz4)")
    say(f"  reference: encoding alone            {encode:>9,.0f} records/s   ratio shipper CPU / "
        f"encoding = {cpu / encode:.2f}")
    say(f"  reference: JsonLinesSink to a file   {json_lines:>9,.0f} records/s   ratio shipper end "
        f"to end / json-lines = {wall / json_lines:.2f}")
    say(f"  reference: the endpoint alone        {alone:>9,.0f} records/s   ratio shipper end to "
        f"end / endpoint alone = {wall / alone:.2f}")
    verdict = "PASS" if cpu >= RECORDS_TARGET else "FAIL"
    say(f"  target >= {RECORDS_TARGET:,} records/s on one core: {verdict} ({cpu:,.0f} per "
        "CPU-second of the shipper)")
    if wall < RECORDS_TARGET:
        limit = ("the local endpoint itself stores at most "
                 f"{alone:,.0f} records/s (endpoint alone), so end to end it, not the shipper, "
                 "sets the pace" if alone < RECORDS_TARGET else
                 "the endpoint alone is faster, so the shipper's own time is the limit")
        say(f"    end to end into the local endpoint it is {wall:,.0f} records/s, below "
            f"{RECORDS_TARGET:,}: {limit}")


# --- packet-loop cost ----------------------------------------------------------------------------


@dataclass
class Metrics:
    """The counters of one /metrics answer that say how busy flow logging was."""

    at: float
    values: dict[str, float]

    def __getitem__(self, name: str) -> float:
        return self.values.get(f"gwlb_agent_{name}", 0.0)

    @classmethod
    def parse(cls, text: str) -> Metrics:
        values = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if line.startswith("gwlb_agent_") and "{" not in name:
                with contextlib.suppress(ValueError):
                    values[name] = float(value)
        return cls(time.monotonic(), values)


@dataclass(frozen=True)
class Load:
    """What flow logging did while one trial ran, and how long the agent took to finish.
    Counted from just before the generator starts to just after it ends (its settling
    included), per second of the generator's sending."""

    seconds: float
    emitted: float
    exported: float
    shipped: float
    taken: float  # by the shipper: shipped, spooled or counted lost
    backlog: float  # at the end of the trial: emitted, not yet taken by the shipper
    dropped: float
    spool_bytes: float  # at the end of the trial
    spool_growth: float
    settled: float | None  # seconds after the trial until every record was dealt with

    def per_second(self, count: float) -> float:
        return count / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Agent:
    variant: str
    namespace: Any  # gwlb_lab.netns.Namespace
    address: str
    log: Path
    spool_dir: Path
    process: subprocess.Popen[bytes] | None = None
    endpoint: subprocess.Popen[bytes] | None = None
    loads: list[Load] = field(default_factory=list)


@dataclass
class VariantRun:
    search: Search
    loads: list[Load]
    totals: Metrics
    endpoint_stats: dict[str, Any]


class LoopBench:
    """Two agents, live and dead SLS, with one generator; the operations on them."""

    def __init__(self, topo: Any, programs: dict[str, Path], args: argparse.Namespace,
                 workdir: Path) -> None:
        self.topo = topo
        self.programs = programs
        self.args = args
        self.workdir = workdir
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2 and shutil.which("taskset"):
            self.gen_cpu: int | None = cpus[0]
            self.gen_prefix = ["taskset", "-c", str(cpus[0])]
            self.agent_prefix = ["taskset", "-c", str(cpus[1])]
            self.pinning = (f"generator, SLS endpoints and this process on CPU {cpus[0]}, both "
                            f"agents on CPU {cpus[1]} (taskset)")
        else:
            self.gen_cpu = None
            self.gen_prefix, self.agent_prefix = [], []
            self.pinning = f"none ({len(cpus)} CPU usable or no taskset): figures are unreliable"
        self.gen = topo.namespace("gen")
        self.agents: dict[str, Agent] = {}
        for variant in VARIANTS:
            network = ipaddress.IPv4Network(SUBNETS[variant])
            namespace = topo.namespace(variant)
            topo.link(self.gen, f"to-{variant}", namespace, "dut0", mtu=MTU)
            self.gen.add_address(f"to-{variant}", f"{network[1]}/{network.prefixlen}")
            namespace.add_address("dut0", f"{network[2]}/{network.prefixlen}")
            self.agents[variant] = Agent(variant, namespace, str(network[2]),
                                         workdir / f"{variant}.log", workdir / f"{variant}-spool")

    def describe(self) -> str:
        return ", ".join(f"SLS {a.variant}: agent at {a.address} ({a.namespace.name})"
                         for a in self.agents.values())

    # --- trials

    def generator(self, address: str, rate: float, duration: float, flows: int) -> Trial:
        # The generator sleeps while ahead of its pace: it shares its CPU with the endpoints.
        command = [*self.gen_prefix, str(self.programs["geneve_gen"]), "-s", address,
                   f"{rate:.0f}", f"{duration}", str(flows), str(self.args.size)]
        result = self.gen.run(*command, check=False, timeout=duration + 20)
        if result.returncode != 0:
            raise BenchError(f"generator failed ({result.returncode}): {result.stderr.strip()}")
        return parse_generator_output(result.stdout, rate)

    def trial(self, variant: str, rate: float) -> Trial:
        agent = self.agents[variant]
        self.check_running(agent)
        before, spooled_before = self.metrics(agent), spooled_records(agent.spool_dir)
        trial = self.generator(agent.address, rate, self.args.duration, self.args.flows)
        after, spooled_after = self.metrics(agent), spooled_records(agent.spool_dir)
        settled = self.settle(agent)

        def taken(m: Metrics, spooled: int) -> float:
            return (m["sls_records_shipped_total"] + spooled
                    + m["sls_records_lost_spool_full_total"])

        agent.loads.append(Load(
            seconds=trial.elapsed,
            emitted=after["flow_records_emitted_total"] - before["flow_records_emitted_total"],
            exported=after["flow_records_exported_total"] - before["flow_records_exported_total"],
            shipped=after["sls_records_shipped_total"] - before["sls_records_shipped_total"],
            taken=taken(after, spooled_after) - taken(before, spooled_before),
            backlog=(after["flow_records_emitted_total"] - after["flow_records_dropped_total"]
                     - taken(after, spooled_after)),
            dropped=after["flow_records_dropped_total"] - before["flow_records_dropped_total"],
            spool_bytes=after["sls_spool_bytes"],
            spool_growth=after["sls_spool_bytes"] - before["sls_spool_bytes"],
            settled=settled,
        ))
        return trial

    def report_load(self, variant: str, trial: Trial) -> None:
        load = self.agents[variant].loads[-1]
        settled = f"{load.settled:.1f} s" if load.settled is not None else "not within the limit"
        say(f"{'':<20}flow records: emitted {load.per_second(load.emitted):>7,.0f}/s, taken by "
            f"the shipper {load.per_second(load.taken):>7,.0f}/s (shipped "
            f"{load.per_second(load.shipped):,.0f}/s), {load.backlog:,.0f} not yet taken at the "
            f"end; spool {mib(load.spool_bytes)}; hand-off drops {load.dropped:,.0f}; all dealt "
            f"with {settled} after")

    def warm_up(self, agent: Agent) -> None:
        """Until the agent answers: ARP resolved, socket bound, every flow made, the shipper's
        first batches out (the dead one's first failures behind it).

        The first pass makes the flows, one after the other over one period of their records:
        a flow is examined every floor(export_interval) + 1 seconds (the expiry wheel turns in
        whole seconds), so each second's bucket gets the same share. Made in a burst, one
        bucket would hold more flows than another, and that agent's bursts of records would be
        bigger than the other agent's.
        """
        period = math.floor(self.args.export_interval) + 1
        rate = min(self.args.flows / period, WARMUP_RATE)
        duration = max(0.5, self.args.flows / rate)
        for _ in range(WARMUP_TRIES):
            self.check_running(agent)
            passed = self.generator(agent.address, rate, duration, self.args.flows).passed
            self.settle(agent)
            if passed:
                return
        raise BenchError(f"the {agent.variant} agent does not return {rate:,.0f} pps after "
                         f"{WARMUP_TRIES} tries:\n{tail(agent.log)}")

    def settle(self, agent: Agent) -> float | None:
        """Wait until the agent has dealt with every record the last trial caused: none emitted
        for longer than a flow takes to write its last one (export_interval, plus up to a second
        on the expiry wheel; and no flows left if they idle out within the limit), the hand-off
        empty, and every record the shipper took shipped, spooled or counted lost.
        Seconds it took, or None after SETTLE_LIMIT."""
        started = time.monotonic()
        quiet = self.args.export_interval + 1.5
        expiring = self.args.idle_timeout < SETTLE_LIMIT
        emitted, still_since = -1.0, started
        while time.monotonic() - started < SETTLE_LIMIT:
            m = self.metrics(agent)
            if m["flow_records_emitted_total"] != emitted:
                emitted, still_since = m["flow_records_emitted_total"], m.at
            handed_over = m["flow_records_exported_total"]
            if (m.at - still_since >= quiet
                    and not (expiring and m["flows_active"])
                    and handed_over + m["flow_records_dropped_total"] >= emitted
                    and m["sls_records_shipped_total"] + spooled_records(agent.spool_dir)
                    + m["sls_records_lost_spool_full_total"] >= handed_over):
                return m.at - started
            time.sleep(0.2)
        return None

    def check_running(self, agent: Agent) -> None:
        for what, process in (("agent", agent.process), ("SLS endpoint", agent.endpoint)):
            if process is not None and process.poll() is not None:
                raise BenchError(f"the {agent.variant} {what} exited ({process.returncode}):\n"
                                 f"{tail(agent.log)}")

    def metrics(self, agent: Agent) -> Metrics:
        code, body = http_get(agent.namespace, f"http://{HEALTH}/metrics")
        if code != "200":
            self.check_running(agent)
            raise BenchError(f"the {agent.variant} agent's /metrics answered {code or 'nothing'}"
                             f":\n{tail(agent.log)}")
        return Metrics.parse(body)

    # --- one round: both agents started, warmed up, searched, stopped

    def run_round(self, number: int) -> dict[str, VariantRun]:
        for agent in self.agents.values():
            agent.process = agent.endpoint = None
            agent.loads = []
        try:
            for agent in self.agents.values():
                self.start_endpoint(agent, number)
                self.start_agent(agent, number)
            for agent in self.agents.values():
                self.wait_healthy(agent)
                self.warm_up(agent)
            searches = {variant: Search(f"SLS {variant} r{number}") for variant in VARIANTS}
            interleave(searches, self.trial, self.args.rates, self.args.bisect,
                       self.args.retries, after_trial=self.report_load)
            totals = {variant: self.metrics(agent) for variant, agent in self.agents.items()}
            endpoint_stats = {variant: self.endpoint_stats(agent)
                              for variant, agent in self.agents.items()}
        finally:
            exits = {}
            for agent in self.agents.values():
                # SIGTERM: the agent writes a record for every live flow and flushes, exits 0.
                if agent.process is not None:
                    exits[agent.variant] = stop(agent.process, grace=STOP_GRACE)
                if agent.endpoint is not None:
                    stop(agent.endpoint)
        for variant, code in exits.items():
            if code != 0:
                raise BenchError(f"the {variant} agent exited {code} on SIGTERM:\n"
                                 f"{tail(self.agents[variant].log)}")
        return {variant: VariantRun(searches[variant], self.agents[variant].loads,
                                    totals[variant], endpoint_stats[variant])
                for variant in VARIANTS}

    def start_endpoint(self, agent: Agent, number: int) -> None:
        """The local SLS on 127.0.0.1 in the agent's namespace: healthy, or dropping every
        connection without an answer (the agent's client sees the connection reset)."""
        fault = "none" if agent.variant == "live" else "refuse"
        log = self.workdir / f"sls-{agent.variant}-{number}.log"
        # At the lowest priority: it shares the generator's CPU, and a generator held back
        # sends its backlog in one burst, which would be the endpoint's doing, not the agent's.
        command = [*self.gen_prefix, "nice", "-n", str(ENDPOINT_NICE),
                   *endpoint_command(SLS_LISTEN, self.workdir / f"sls-{agent.variant}-{number}.db",
                                     fault)]
        with log.open("ab") as stderr:
            agent.endpoint = self.topo.start(agent.namespace, command, stdout=subprocess.PIPE,
                                             stderr=stderr, cwd=REPO)
        line = read_line(agent.endpoint, ENDPOINT_START)
        if not line.startswith("listening on "):
            raise BenchError(f"the {agent.variant} SLS endpoint did not start ({line!r}):\n"
                             f"{tail(log)}")

    def start_agent(self, agent: Agent, number: int) -> None:
        run_dir = self.workdir / f"{agent.variant}-{number}"
        run_dir.mkdir()
        policy = run_dir / "allow-all.toml"
        policy.write_text('default_action = "allow"\n', encoding="utf-8")
        gwlb = str(ipaddress.IPv4Network(SUBNETS[agent.variant])[1])
        # The whole configuration in a file of our own, and no GWLB_AGENT_* variables but the
        # secret, so that nothing on this machine can change what is measured.
        config = run_dir / "agent.toml"
        config.write_text(
            f'appliance_id = "bench-{agent.variant}"\n'
            f'health = "{HEALTH}"\n'
            f'gwlb_cidrs = ["{gwlb}/32"]\n'
            f'policy = "{policy}"\n'
            "\n[flows]\n"
            f"idle_timeout = {self.args.idle_timeout}\n"
            f"export_interval = {self.args.export_interval}\n"
            "\n[flow_log]\n"
            'path = "none"\n'
            f'sls_endpoint = "http://{SLS_LISTEN}"\n'
            f'sls_project = "{PROJECT}"\n'
            f'sls_logstore = "{LOGSTORE}"\n'
            f'access_key_id = "{KEY_ID}"\n'
            f'spool_dir = "{run_dir / "spool"}"\n'
            f"spool_max_bytes = {SPOOL_ROOM}\n"
            f"batch_delay = {self.args.batch_delay}\n",
            encoding="utf-8",
        )
        agent.log = run_dir / "agent.log"
        agent.spool_dir = run_dir / "spool"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("GWLB_AGENT_")}
        environment["GWLB_AGENT_FLOW_LOG__ACCESS_KEY_SECRET"] = KEY_SECRET
        executable = shutil.which("gwlb-agent", path=str(Path(sys.executable).parent))
        if executable is None:
            raise BenchError("gwlb-agent is not installed beside this Python "
                             "(run with .venv/bin/python after scripts/bootstrap test)")
        agent.process = self.topo.start(
            agent.namespace, [*self.agent_prefix, executable, "run", "--config", str(config)],
            log_path=str(agent.log), env=environment)

    def wait_healthy(self, agent: Agent) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while time.monotonic() < deadline:
            self.check_running(agent)
            if http_get(agent.namespace, f"http://{HEALTH}/health")[0] == "200":
                return
            time.sleep(0.2)
        raise BenchError(f"the {agent.variant} agent's /health is not 200 after "
                         f"{HEALTH_TIMEOUT:.0f} s:\n{tail(agent.log)}")

    @staticmethod
    def endpoint_stats(agent: Agent) -> dict[str, Any]:
        code, body = http_get(agent.namespace, f"http://{SLS_LISTEN}/_lab/stats")
        if code != "200":
            return {}
        with contextlib.suppress(ValueError):
            stats: dict[str, Any] = json.loads(body)
            return stats
        return {}


def spooled_records(spool_dir: Path) -> int:
    """Records in an agent's spool, from its file names (``<seq>-<records>.batch``)."""
    total = 0
    with contextlib.suppress(OSError):
        for path in spool_dir.glob("*.batch"):
            total += int(path.stem.partition("-")[2] or 0)
    return total


def mib(count: float) -> str:
    return f"{count / (1 << 20):,.1f} MiB"


def run_packet_loop(args: argparse.Namespace, workdir: Path) -> tuple[list[dict[str, VariantRun]], str]:
    from gwlb_lab.netns import Topology, has_netns_privileges, sweep_stale

    able, why = has_netns_privileges()
    if not able:
        raise BenchError(f"the packet-loop benchmark {why}; --skip-packet-loop runs the rest")
    programs = build_programs()
    removed = sweep_stale()
    if removed:
        say(f"removed namespaces left by crashed runs: {', '.join(removed)}")
    cpus = sorted(os.sched_getaffinity(0))
    with Topology() as topo:
        bench = LoopBench(topo, programs, args, workdir)
        say()
        say("packet-loop cost of flow logging: one agent shipping to a live SLS, one to a dead "
            "one")
        say(f"  pinning: {bench.pinning}")
        say(f"  namespaces: generator {bench.gen.name}; {bench.describe()}; veth MTU {MTU}; each "
            f"agent's SLS endpoint on {SLS_LISTEN} in its namespace (live: answers; dead: fault "
            "'refuse', every connection dropped unanswered)")
        say(f"  traffic: Geneve with AWS-layout options, inner UDP packets of {args.size} bytes, "
            f"{args.flows:,} inner flows round robin; {args.duration:g} s per trial; pass = loss "
            f"<= {LOSS_LIMIT:.0%}")
        say(f"  agents: allow-all, flow records to SLS only (no JSON-lines file), flows "
            f"idle_timeout {args.idle_timeout:g} s, export_interval {args.export_interval:g} s, "
            f"batch_delay {args.batch_delay:g} s; the dead agent's spool may grow to "
            f"{mib(SPOOL_ROOM)} (spool_max_bytes), far more than a run writes")
        say(f"  rates asked: {', '.join(f'{r:,.0f}' for r in args.rates)}, then {args.bisect} "
            f"bisections; a failing rate is tried {1 + args.retries} times; trials alternate "
            f"between the agents, each left to finish its records before the next trial; "
            f"rounds: {args.rounds}, the best of each agent counts")
        rounds = []
        try:
            if bench.gen_cpu is not None:
                os.sched_setaffinity(0, {bench.gen_cpu})  # curl and the rest off the agents' CPU
            for number in range(1, args.rounds + 1):
                say(f"  round {number}/{args.rounds}")
                run = bench.run_round(number)
                rounds.append(run)
                for variant in VARIANTS:
                    say(f"    SLS {variant} r{number}: {describe_totals(run[variant])}")
        finally:
            os.sched_setaffinity(0, set(cpus))
        return rounds, bench.pinning


def describe_totals(run: VariantRun) -> str:
    m, stats = run.totals, run.endpoint_stats
    stored = (f"the endpoint stored {stats.get('logs', 0):,}" if stats.get("logs") else
              f"the endpoint dropped {sum(stats.get('faults', {}).values()):,} requests"
              if stats else "no endpoint stats")
    return (f"{m['packets_in_total']:,.0f} packets in, {m['flow_records_emitted_total']:,.0f} "
            f"flow records emitted, {m['sls_records_shipped_total']:,.0f} shipped ({stored}), "
            f"spool {mib(m['sls_spool_bytes'])} in {m['sls_spool_batches']:,.0f} batches, "
            f"hand-off drops {m['flow_records_dropped_total']:,.0f}, lost to a full spool "
            f"{m['sls_records_lost_spool_full_total']:,.0f}")


def best(searches: Sequence[Search]) -> Search:
    return max(searches, key=lambda s: s.pps)


def load_of(run: VariantRun, trial: Trial | None) -> Load | None:
    if trial is None:
        return None
    return next((load for t, load in zip(run.search.trials, run.loads, strict=True) if t is trial),
                None)


def report_packet_loop(rounds: Sequence[dict[str, VariantRun]], pinning: str) -> None:
    say()
    say("packet-loop cost of flow logging: highest offered rate with <= 1% loss")
    say(f"  pinning: {pinning}")
    say(f"  {'SLS':<11} {'best pps':>12}   per round")
    tops = {}
    for variant in VARIANTS:
        searches = [run[variant].search for run in rounds]
        tops[variant] = top = best(searches)
        per_round = "  ".join(f"{s.pps:>10,.0f}{'*' if s.generator_limited else ''}"
                              for s in searches)
        say(f"  {variant:<11} {top.pps:>12,.0f}   {per_round}")
    if any(run[v].search.generator_limited for run in rounds for v in VARIANTS):
        say("  * the generator could not send faster: that figure is the generator's ceiling")
    live, dead = tops["live"], tops["dead"]
    if live.pps and dead.pps:
        ratio = dead.pps / live.pps
        per_round = ", ".join(f"{run['dead'].search.pps / run['live'].search.pps:.2f}"
                              if run["live"].search.pps else "n/a" for run in rounds)
        say(f"  ratio dead/live = {ratio:.2f}   (best against best; per round: {per_round})")
        say(f"  target >= {RATIO_TARGET}: {'PASS' if ratio >= RATIO_TARGET else 'FAIL'}")
        ratios = sorted(run["dead"].search.pps / run["live"].search.pps for run in rounds
                        if run["live"].search.pps)
        if len(ratios) > 1:
            say(f"  the rounds' ratios spread from {ratios[0]:.2f} to {ratios[-1]:.2f} (median "
                f"{statistics.median(ratios):.2f}): a difference smaller than that spread is "
                "noise, not the SLS's doing")
    else:
        say("  ratio dead/live = n/a (an agent passed no rate)")
        say(f"  target >= {RATIO_TARGET}: FAIL")
    say("  flow logging while the trials ran (from /metrics and the spool directory):")
    for variant in VARIANTS:
        run = next(run[variant] for run in rounds if run[variant].search is tops[variant])
        load = load_of(run, run.search.best)
        if load is not None:
            say(f"    {variant:<5} best trial: {load.per_second(load.emitted):>7,.0f} records/s "
                f"emitted, {load.per_second(load.taken):>7,.0f}/s taken by the shipper "
                f"({load.per_second(load.shipped):,.0f}/s shipped to SLS), {load.backlog:,.0f} "
                f"not yet taken at its end, hand-off drops {load.dropped:,.0f}")
        every = [load for run in rounds for load in run[variant].loads]
        seconds = sum(load.seconds for load in every)
        if seconds:
            say(f"    {variant:<5} all {len(every)} trials: {sum(x.emitted for x in every) / seconds:>7,.0f} "
                f"records/s emitted, {sum(x.taken for x in every) / seconds:>7,.0f}/s taken by the "
                f"shipper ({sum(x.shipped for x in every) / seconds:,.0f}/s shipped to SLS)")
    loads = [load for run in rounds for load in run["dead"].loads]
    spool_top = max((load.spool_bytes for load in loads), default=0.0)
    lost = sum(run["dead"].totals["sls_records_lost_spool_full_total"] for run in rounds)
    say(f"  dead SLS spool: at most {mib(spool_top)} of {mib(SPOOL_ROOM)} allowed; records lost "
        f"to a full spool: {lost:,.0f}")
    unsettled = sum(1 for run in rounds for v in VARIANTS for load in run[v].loads
                    if load.settled is None)
    if unsettled:
        say(f"  {unsettled} trials were followed by records still in flight after "
            f"{SETTLE_LIMIT:.0f} s: they may have disturbed the next trial")


# --- command line ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="flowlog.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000,
                        help="distinct flow records through the shipper (200,000)")
    parser.add_argument("--shipper-rounds", type=int, default=3,
                        help="shipper rounds; the best of each figure counts (3)")
    parser.add_argument("--flows", type=int, default=20_000,
                        help="inner flows the generator cycles through (20,000)")
    parser.add_argument("--idle-timeout", type=float, default=3600.0,
                        help="the agents' [flows] idle_timeout, seconds (3600: the flows, made "
                             "at warm-up, live through the run, so that no trial starts with a "
                             "burst of new flows)")
    parser.add_argument("--export-interval", type=float, default=1.0,
                        help="the agents' [flows] export_interval, seconds (1)")
    parser.add_argument("--batch-delay", type=float, default=2.0,
                        help="the agents' [flow_log] batch_delay, seconds (2, the default)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per trial (4)")
    parser.add_argument("--size", type=int, default=200,
                        help="inner IPv4 packet bytes (200; the Geneve datagram is 40 more)")
    parser.add_argument("--rates", type=float, nargs="+", metavar="PPS",
                        help="rates to step through, ascending (default 25,000 doubling to 1.6M)")
    parser.add_argument("--bisect", type=int, default=4,
                        help="bisections between the last pass and the first failure (4)")
    parser.add_argument("--retries", type=int, default=1,
                        help="times a failing rate is tried again before it counts as failed (1)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="live/dead rounds; the best of each is reported (3)")
    parser.add_argument("--skip-shipper", action="store_true", help="no shipper throughput")
    parser.add_argument("--skip-packet-loop", action="store_true",
                        help="no packet-loop figures (needs no root)")
    args = parser.parse_args(argv)
    if not 1_000 <= args.records <= 5_000_000 or not 1 <= args.shipper_rounds <= 10:
        parser.error("--records must be 1,000 to 5,000,000 and --shipper-rounds 1 to 10")
    if not 0 < args.duration <= 60:
        parser.error("--duration must be within (0, 60] seconds")
    if not 1 <= args.flows <= 10_000_000:
        parser.error("--flows must be 1 to 10,000,000")
    if not (0 < args.idle_timeout <= 86_400 and 0 < args.export_interval <= 30
            and 0 < args.batch_delay <= 30):
        parser.error("--idle-timeout must be within (0, 86400], --export-interval and "
                     "--batch-delay within (0, 30] seconds")
    if not 28 <= args.size <= 8500:
        parser.error("--size must be 28 (IPv4 + UDP headers) to 8500 (the agent's max_inner_size)")
    if not 1 <= args.rounds <= 10 or not 0 <= args.bisect <= 10 or not 0 <= args.retries <= 5:
        parser.error("--rounds must be 1 to 10, --bisect 0 to 10 and --retries 0 to 5")
    if args.rates is None:
        args.rates = geometric_rates(25_000, 2, 1_600_000)
    elif sorted(args.rates) != args.rates or min(args.rates) <= 0 or len(args.rates) > 30:
        parser.error("--rates must be at most 30 positive rates in ascending order")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so that the namespaces and processes are removed either way.
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    try:
        say(f"gwlb-fleet flow-log benchmark  ({os.cpu_count()} CPUs, Python "
            f"{sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M:%S')})")
        with tempfile.TemporaryDirectory(prefix="gwlb-flowlog-") as tmp:
            workdir = Path(tmp)
            shipper = None if args.skip_shipper else run_shipper(args, workdir)
            loop = None if args.skip_packet_loop else run_packet_loop(args, workdir)
        if shipper:
            report_shipper(*shipper)
        if loop:
            report_packet_loop(*loop)
    except BenchError as exc:
        print(f"flowlog.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("flowlog.py: interrupted; namespaces and processes removed", file=sys.stderr)
        return 130
    say(f"\nfinished in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
