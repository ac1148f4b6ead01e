"""PAN-OS log intake benchmark: records/s of the intake's own work on one core, as a ratio to the
agent's shipper path measured in the same run.

    .venv/bin/python scripts/bench/panlogs.py [--records N] [--rounds N] [--threat-share F]

No root, no network, a few seconds. The intake's work per request (gwlb_fleet.intake): parse the
body (``panlogs.parse_body``: syslog CSV lines or our HTTP payload's JSON), map each log to a
FlowRecord or ThreatRecord, and encode the LogGroups (``sls.flowwriter.encode_groups``: one per
serial, within SLS's limits). The reference is flowlog.py's "encoding alone" (``measure_encode``:
``log_contents`` + ``encode_log`` + ``encode_log_group`` of the agent's FlowRecords, 4,096 a
batch): what the agent's shipper does per record before it sends. Both on the same number of
records, in the same round, alternating; the best of each over the rounds counts (noise only
ever makes a run slower). Target: intake / shipper >= 0.5 for the syslog CSV body.

A benchmark, not a test: it asserts nothing and exits 0 whatever the figures are.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flowlog import chunks, flow_records, measure_encode  # the reference, reused

REQUEST_LOGS = 4096  # logs per request body, as a batching relay would send
RATIO_TARGET = 0.5


def traffic_fields(i: int) -> list[str]:
    """A PAN-OS 11.1 TRAFFIC log (F-PANLOG-1): the 47 fields read, then 68 appended ones."""
    second = f"2026/12/04 10:{i // 60 % 60:02d}:{i % 60:02d}"
    serial = f"0079510001234{i % 8:02d}"
    return [
        "1",
        second,
        serial,
        "TRAFFIC",
        "end",
        "2561",
        second,
        f"10.1.{i // 250 % 250}.{i % 250 + 1}",
        "192.0.2.10",
        "0.0.0.0",
        "0.0.0.0",
        "gwlb-allow-web",
        "",
        "",
        "ssl",
        "vsys1",
        "trust",
        "untrust",
        "ethernet1/1",
        "ethernet1/1",
        "gwlb-fleet-logs",
        second,
        str(30000 + i),
        "1",
        str(1024 + i % 60000),
        "443",
        "0",
        "0",
        "0x400064",
        "tcp",
        "allow",
        "5120",
        "1200",
        "3920",
        "14",
        second,
        str(i % 30),
        "computer-and-internet-info",
        "0",
        str(7000 + i),
        "0x0",
        "10.0.0.0-10.255.255.255",
        "United States",
        "0",
        "6",
        "8",
        "tcp-fin",
        *["0"] * 68,
    ]


def threat_fields(i: int) -> list[str]:
    """A PAN-OS 11.1 THREAT log (F-PANLOG-2)."""
    base = traffic_fields(i)
    return [
        *base[:3],
        "THREAT",
        "vulnerability",
        *base[5:31],
        "www.example.com/x",
        "Eicar Test File(39040)",
        "any",
        "medium",
        "server-to-client",
        str(900000 + i),
        "0x0",
        "US",
        "10.0.0.0-10.255.255.255",
        "0",
        "",
        *["0"] * 70,
    ]


def syslog_bodies(count: int, threat_share: float) -> list[str]:
    every = max(1, round(1 / threat_share)) if threat_share > 0 else 0
    lines = []
    for i in range(count):
        row = threat_fields(i) if every and i % every == 0 else traffic_fields(i)
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(row)
        lines.append(f"<14>Dec  4 10:00:00 fw{i % 8} " + out.getvalue())
    return ["\n".join(chunk) for chunk in chunks(lines, REQUEST_LOGS)]


def json_bodies(count: int, threat_share: float) -> list[str]:
    from gwlb_fleet.panos.panlogs import POSITIONS

    every = max(1, round(1 / threat_share)) if threat_share > 0 else 0
    objects = []
    for i in range(count):
        kind = "threat" if every and i % every == 0 else "traffic"
        row = threat_fields(i) if kind == "threat" else traffic_fields(i)
        objects.append(
            json.dumps({name: row[p] for name, p in POSITIONS[kind].items() if name != "subtype_category"})
        )
    return ["\n".join(chunk) for chunk in chunks(objects, REQUEST_LOGS)]


def measure_intake(bodies: Sequence[str], content_type: str) -> tuple[float, int]:
    from gwlb_fleet.panos.panlogs import parse_body
    from gwlb_fleet.sls.flowwriter import encode_groups

    records = 0
    started = time.perf_counter()
    for body in bodies:
        parsed = parse_body(body, content_type, emitted=1_796_400_000.0)
        for _ in encode_groups(parsed, source="10.0.1.20"):
            pass
        records += len(parsed)
    return time.perf_counter() - started, records


def best(rounds: int, measure: Callable[[], float]) -> float:
    return min(measure() for _ in range(rounds))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threat-share", type=float, default=0.1, help="share of THREAT logs")
    args = parser.parse_args(argv)

    from gwlb_agent.shipper import Identity

    identity = Identity("bench", "i-bench", "cn-hangzhou-h")
    reference = flow_records(args.records)
    syslog = syslog_bodies(args.records, args.threat_share)
    payloads = json_bodies(args.records, args.threat_share)
    measure_intake(syslog[:1], "text/plain")  # warm the caches both paths have
    measure_encode(reference[:REQUEST_LOGS], identity)

    shipper_s: list[float] = []
    syslog_s: list[float] = []
    json_s: list[float] = []
    for _ in range(args.rounds):  # alternating, so that a neighbour's burst falls on all alike
        shipper_s.append(measure_encode(reference, identity))
        seconds, parsed = measure_intake(syslog, "text/plain")
        assert parsed == args.records, f"the intake mapped {parsed} of {args.records} logs"
        syslog_s.append(seconds)
        seconds, parsed = measure_intake(payloads, "application/json")
        assert parsed == args.records, f"the intake mapped {parsed} of {args.records} payloads"
        json_s.append(seconds)

    shipper = args.records / min(shipper_s)
    syslog_rate = args.records / min(syslog_s)
    json_rate = args.records / min(json_s)
    print(
        f"PAN-OS log intake, {args.records:,} logs ({args.threat_share:.0%} THREAT), "
        f"{REQUEST_LOGS:,} a request, best of {args.rounds} rounds, one core"
    )
    print(f"  reference: the agent's shipper encoding  {shipper:12,.0f} records/s")
    print(
        f"  intake, syslog CSV (parse+map+encode)    {syslog_rate:12,.0f} records/s   "
        f"ratio {syslog_rate / shipper:.2f}"
    )
    print(
        f"  intake, our HTTP payload (JSON)          {json_rate:12,.0f} records/s   "
        f"ratio {json_rate / shipper:.2f}"
    )
    verdict = "PASS" if syslog_rate / shipper >= RATIO_TARGET else "FAIL"
    print(f"  target intake/shipper >= {RATIO_TARGET} (syslog CSV): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
