"""The audit questions, as SLS queries: one text each, run unchanged on SLS and the local endpoint.

Who talked to whom through which firewall, what was denied and by which rule, how much traffic
each appliance carried, which threats the VM-Series firewalls blocked (by severity, source and
firewall) and which they saw, what the control plane did to the fleet and why, and which records
the agents could not keep.

One schema for both appliance kinds (gwlb_fleet.sls.flowrecord): a Linux NVA's agent writes
``kind: flow`` records; the PAN-OS log intake writes ``kind: flow`` records from traffic logs and
``kind: threat`` records from threat logs, their ``appliance_id`` and ``serial`` the firewall's
serial. Each flow question reads ``kind: flow`` only and shows the appliance and the serial (empty
for an NVA); ICMP flows show their type and code (their ports are 0).

``scripts/sls-setup`` saves each query as a saved search (``gwlb-<name>``) in the project;
``scripts/audit NAME`` runs it and prints a table.

The SQL keeps to what Presto (SLS's analytics) and SQLite (the local endpoint) both run the same
way: SELECT / FROM a subquery / WHERE / GROUP BY / ORDER BY / LIMIT, ``=`` and ``OR``,
``count(DISTINCT ...)``, ``sum``, ``min``, ``max``, ``CASE WHEN``, double-quoted names (F-SLS-3).
Keys that are reserved words in either ("end", "start", "time", "function", "zone") are always
quoted, and results carry epoch seconds, never formatted dates (the two engines format them
differently).

Records arrive at least once: a batch resent after a lost answer is stored twice, and a PAN-OS
log the firewall sends again carries the same ``record_id`` (serial and sequence number). Every
query first collapses rows on the record's unique id (``record_id``, ``event_id``) in a subquery —
``max()`` of each column, which is the value itself since duplicates are identical (a resent
PAN-OS log differs only in ``emitted``, which no question reads) — and only then counts and sums.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gwlb_fleet.sls import cli as sls_cli
from gwlb_fleet.sls.client import Sls, SlsError
from gwlb_fleet.sls.flowrecord import PROTOCOL_NAMES

FLOW_LOGSTORE = "flow-logs"
AUDIT_LOGSTORE = "fleet-audit"
SAVEDSEARCH_PREFIX = "gwlb-"
ROW_LIMIT = 1000


@dataclass(frozen=True)
class AuditQuery:
    name: str
    logstore: str
    title: str
    description: str
    search: str
    sql: str
    columns: tuple[str, ...]  # the SQL's result columns, in order
    time_columns: frozenset[str] = frozenset()  # epoch seconds, shown as UTC times
    value_names: Mapping[str, Mapping[int, str]] = field(default_factory=dict)  # e.g. protocol 6 -> tcp

    @property
    def query(self) -> str:
        """The full SLS query text: ``SEARCH | SQL``."""
        return f"{self.search} | {self.sql}"

    @property
    def savedsearch_name(self) -> str:
        return SAVEDSEARCH_PREFIX + self.name


def _sql(*lines: str) -> str:
    return " ".join(line.strip() for line in lines)


_FLOW_TIMES = frozenset({"first_seen", "last_seen"})
_PROTOCOLS: Mapping[str, Mapping[int, str]] = {"protocol": PROTOCOL_NAMES}

# PAN-OS threat log actions that stop the traffic or the request (F-PANAUDIT-1). The others — alert,
# allow, syncookie-sent, continue, override, and any value not documented — do not count as
# blocked: a question never claims a block the firewall did not document.
BLOCKING_THREAT_ACTIONS = (
    "deny",
    "drop",
    "drop-all-packets",
    "reset-client",
    "reset-server",
    "reset-both",
    "block-url",
    "block-ip",
    "random-drop",
    "sinkhole",
    "block-continue",
    "block-override",
    "override-lockout",
    "block",
)
# A chain of "=" joined by OR, not IN: SLS documents both of those, not IN (F-SLS-3).
_BLOCKED = " OR ".join(f"action = '{action}'" for action in BLOCKING_THREAT_ACTIONS)
SEVERITIES = ("critical", "high", "medium", "low", "informational")  # worst first (F-PANAUDIT-1)
_SEVERITY_RANK = (
    "CASE severity "
    + " ".join(f"WHEN '{name}' THEN {len(SEVERITIES) - i}" for i, name in enumerate(SEVERITIES))
    + " ELSE 0 END"
)
_PER_SEVERITY = ", ".join(
    f"sum(CASE WHEN severity = '{name}' THEN 1 ELSE 0 END) AS {name}" for name in SEVERITIES
)
# One row per threat log, resent copies collapsed (see the module's docstring).
_THREATS = _sql(
    "FROM (SELECT record_id, max(serial) AS serial, max(severity) AS severity,",
    "  max(threat_id) AS threat_id, max(threat_name) AS threat_name,",
    "  max(threat_category) AS threat_category, max(src_ip) AS src_ip, max(dst_ip) AS dst_ip,",
    '  max(action) AS action, max("time") AS seen',
    "  FROM log GROUP BY record_id) AS t",
)
_THREAT_TIMES = frozenset({"first_seen", "last_seen"})

QUERIES: dict[str, AuditQuery] = {
    q.name: q
    for q in (
        AuditQuery(
            name="conversations",
            logstore=FLOW_LOGSTORE,
            title="Who talked to whom, through which firewall",
            description="Client, server and service (ICMP: type and code) per appliance and serial: "
            "flows, packets, bytes, first/last seen.",
            search="kind: flow",
            sql=_sql(
                "SELECT src_ip, dst_ip, dst_port, protocol, icmp_type, icmp_code, action, appliance_id,",
                "  serial, instance_id,",
                "  count(DISTINCT flow_id) AS flows, sum(packets) AS packets, sum(bytes) AS bytes,",
                "  min(first_seen) AS first_seen, max(last_seen) AS last_seen",
                "FROM (SELECT record_id, max(flow_id) AS flow_id, max(src_ip) AS src_ip,",
                "  max(dst_ip) AS dst_ip, max(dst_port) AS dst_port, max(protocol) AS protocol,",
                "  max(icmp_type) AS icmp_type, max(icmp_code) AS icmp_code,",
                "  max(action) AS action, max(appliance_id) AS appliance_id, max(serial) AS serial,",
                '  max("__tag__:instance_id") AS instance_id,',
                "  max(packets_fwd) + max(packets_rev) AS packets, max(bytes_fwd) + max(bytes_rev) AS bytes,",
                '  max("start") AS first_seen, max("end") AS last_seen',
                "  FROM log GROUP BY record_id) AS r",
                "GROUP BY src_ip, dst_ip, dst_port, protocol, icmp_type, icmp_code, action, appliance_id,",
                "  serial, instance_id",
                f"ORDER BY bytes DESC, flows DESC, first_seen LIMIT {ROW_LIMIT}",
            ),
            columns=(
                "src_ip",
                "dst_ip",
                "dst_port",
                "protocol",
                "icmp_type",
                "icmp_code",
                "action",
                "appliance_id",
                "serial",
                "instance_id",
                "flows",
                "packets",
                "bytes",
                "first_seen",
                "last_seen",
            ),
            time_columns=_FLOW_TIMES,
            value_names=_PROTOCOLS,
        ),
        AuditQuery(
            name="denied",
            logstore=FLOW_LOGSTORE,
            title="What was denied, and by which rule",
            description="Denied flows by rule and stage, source, destination (ICMP: type and code), "
            "appliance and serial.",
            search="kind: flow and action: deny",
            sql=_sql(
                "SELECT rule, stage, src_ip, dst_ip, dst_port, protocol, icmp_type, icmp_code,",
                "  appliance_id, serial,",
                "  count(DISTINCT flow_id) AS flows, sum(packets) AS packets,",
                "  min(first_seen) AS first_seen, max(last_seen) AS last_seen",
                "FROM (SELECT record_id, max(flow_id) AS flow_id, max(rule) AS rule, max(stage) AS stage,",
                "  max(src_ip) AS src_ip, max(dst_ip) AS dst_ip, max(dst_port) AS dst_port,",
                "  max(protocol) AS protocol, max(icmp_type) AS icmp_type, max(icmp_code) AS icmp_code,",
                "  max(appliance_id) AS appliance_id, max(serial) AS serial,",
                "  max(packets_fwd) + max(packets_rev) AS packets,",
                '  max("start") AS first_seen, max("end") AS last_seen',
                "  FROM log GROUP BY record_id) AS r",
                "GROUP BY rule, stage, src_ip, dst_ip, dst_port, protocol, icmp_type, icmp_code,",
                "  appliance_id, serial",
                f"ORDER BY flows DESC, packets DESC, first_seen LIMIT {ROW_LIMIT}",
            ),
            columns=(
                "rule",
                "stage",
                "src_ip",
                "dst_ip",
                "dst_port",
                "protocol",
                "icmp_type",
                "icmp_code",
                "appliance_id",
                "serial",
                "flows",
                "packets",
                "first_seen",
                "last_seen",
            ),
            time_columns=_FLOW_TIMES,
            value_names=_PROTOCOLS,
        ),
        AuditQuery(
            name="appliance-traffic",
            logstore=FLOW_LOGSTORE,
            title="How much traffic each appliance carried",
            description="Per appliance (and serial): flows (and denied flows), packets, bytes each way, "
            "records.",
            search="kind: flow",
            sql=_sql(
                'SELECT appliance_id, serial, instance_id, "zone", count(DISTINCT flow_id) AS flows,',
                "  count(DISTINCT CASE WHEN action = 'deny' THEN flow_id END) AS denied_flows,",
                "  sum(packets) AS packets, sum(bytes_fwd) AS bytes_fwd, sum(bytes_rev) AS bytes_rev,",
                "  sum(bytes_fwd + bytes_rev) AS bytes, count(*) AS records",
                "FROM (SELECT record_id, max(flow_id) AS flow_id, max(appliance_id) AS appliance_id,",
                '  max(serial) AS serial, max("__tag__:instance_id") AS instance_id,',
                '  max("__tag__:zone") AS "zone",',
                "  max(action) AS action, max(packets_fwd) + max(packets_rev) AS packets,",
                "  max(bytes_fwd) AS bytes_fwd, max(bytes_rev) AS bytes_rev",
                "  FROM log GROUP BY record_id) AS r",
                'GROUP BY appliance_id, serial, instance_id, "zone"',
                f"ORDER BY bytes DESC, appliance_id LIMIT {ROW_LIMIT}",
            ),
            columns=(
                "appliance_id",
                "serial",
                "instance_id",
                "zone",
                "flows",
                "denied_flows",
                "packets",
                "bytes_fwd",
                "bytes_rev",
                "bytes",
                "records",
            ),
        ),
        AuditQuery(
            name="threats-blocked-by-severity",
            logstore=FLOW_LOGSTORE,
            title="Threats the firewalls blocked, by severity",
            description="Blocked threat logs per severity (worst first): signatures, sources, firewalls, "
            "first/last seen.",
            search="kind: threat",
            sql=_sql(
                "SELECT severity, count(*) AS threats, count(DISTINCT threat_id) AS signatures,",
                "  count(DISTINCT src_ip) AS sources, count(DISTINCT serial) AS firewalls,",
                "  min(seen) AS first_seen, max(seen) AS last_seen",
                _THREATS,
                f"WHERE {_BLOCKED}",
                "GROUP BY severity",
                f"ORDER BY {_SEVERITY_RANK} DESC LIMIT {ROW_LIMIT}",
            ),
            columns=("severity", "threats", "signatures", "sources", "firewalls", "first_seen", "last_seen"),
            time_columns=_THREAT_TIMES,
        ),
        AuditQuery(
            name="threats-blocked-by-source",
            logstore=FLOW_LOGSTORE,
            title="Threats the firewalls blocked, by source address",
            description="Per source: blocked threat logs in all and per severity, signatures, targets, "
            "firewalls, first/last seen.",
            search="kind: threat",
            sql=_sql(
                f"SELECT src_ip, count(*) AS threats, {_PER_SEVERITY},",
                "  count(DISTINCT threat_id) AS signatures, count(DISTINCT dst_ip) AS targets,",
                "  count(DISTINCT serial) AS firewalls, min(seen) AS first_seen, max(seen) AS last_seen",
                _THREATS,
                f"WHERE {_BLOCKED}",
                "GROUP BY src_ip",
                f"ORDER BY critical DESC, high DESC, threats DESC, src_ip LIMIT {ROW_LIMIT}",
            ),
            columns=(
                "src_ip",
                "threats",
                *SEVERITIES,
                "signatures",
                "targets",
                "firewalls",
                "first_seen",
                "last_seen",
            ),
            time_columns=_THREAT_TIMES,
        ),
        AuditQuery(
            name="threats-blocked-by-firewall",
            logstore=FLOW_LOGSTORE,
            title="Threats each firewall blocked",
            description="Per firewall serial: blocked threat logs in all and per severity, sources, "
            "signatures, first/last seen.",
            search="kind: threat",
            sql=_sql(
                f"SELECT serial, count(*) AS threats, {_PER_SEVERITY},",
                "  count(DISTINCT src_ip) AS sources, count(DISTINCT threat_id) AS signatures,",
                "  min(seen) AS first_seen, max(seen) AS last_seen",
                _THREATS,
                f"WHERE {_BLOCKED}",
                "GROUP BY serial",
                f"ORDER BY threats DESC, serial LIMIT {ROW_LIMIT}",
            ),
            columns=(
                "serial",
                "threats",
                *SEVERITIES,
                "sources",
                "signatures",
                "first_seen",
                "last_seen",
            ),
            time_columns=_THREAT_TIMES,
        ),
        AuditQuery(
            name="threats",
            logstore=FLOW_LOGSTORE,
            title="Which threats the firewalls saw, and how many they blocked",
            description="Per threat (worst severity first): logs, blocked and not blocked, sources, "
            "firewalls, first/last seen.",
            search="kind: threat",
            sql=_sql(
                "SELECT threat_name, threat_id, threat_category, severity, count(*) AS threats,",
                f"  sum(CASE WHEN {_BLOCKED} THEN 1 ELSE 0 END) AS blocked,",
                f"  sum(CASE WHEN {_BLOCKED} THEN 0 ELSE 1 END) AS not_blocked,",
                "  count(DISTINCT src_ip) AS sources, count(DISTINCT serial) AS firewalls,",
                "  min(seen) AS first_seen, max(seen) AS last_seen",
                _THREATS,
                "GROUP BY threat_name, threat_id, threat_category, severity",
                f"ORDER BY {_SEVERITY_RANK} DESC, threats DESC, threat_id LIMIT {ROW_LIMIT}",
            ),
            columns=(
                "threat_name",
                "threat_id",
                "threat_category",
                "severity",
                "threats",
                "blocked",
                "not_blocked",
                "sources",
                "firewalls",
                "first_seen",
                "last_seen",
            ),
            time_columns=_THREAT_TIMES,
        ),
        AuditQuery(
            name="lost-records",
            logstore=FLOW_LOGSTORE,
            title="Flow records the agents could not keep",
            description="Loss reports (kind = loss) per appliance and reason: records lost and when.",
            search="kind: loss",
            sql=_sql(
                "SELECT appliance_id, loss_reason, sum(lost_records) AS records_lost, count(*) AS reports,",
                "  min(loss_since) AS lost_from, max(loss_until) AS lost_until",
                "FROM (SELECT record_id, max(appliance_id) AS appliance_id, max(loss_reason) AS loss_reason,",
                "  max(lost_records) AS lost_records, max(loss_since) AS loss_since,",
                "  max(loss_until) AS loss_until",
                "  FROM log GROUP BY record_id) AS r",
                "GROUP BY appliance_id, loss_reason",
                f"ORDER BY records_lost DESC LIMIT {ROW_LIMIT}",
            ),
            columns=("appliance_id", "loss_reason", "records_lost", "reports", "lost_from", "lost_until"),
            time_columns=frozenset({"lost_from", "lost_until"}),
        ),
        AuditQuery(
            name="control-plane",
            logstore=AUDIT_LOGSTORE,
            title="What the control plane did to the fleet, and why",
            description="Every decision and side effect, oldest first, with its reason and trigger.",
            search="kind: audit",
            sql=_sql(
                'SELECT event_time, "function", action, outcome, scaling_group, instance_id, reason,',
                "  correlation_id",
                'FROM (SELECT event_id, max("time") AS event_time, max("function") AS "function",',
                "  max(action) AS action, max(outcome) AS outcome, max(scaling_group) AS scaling_group,",
                "  max(instance_id) AS instance_id, max(reason) AS reason,",
                "  max(correlation_id) AS correlation_id",
                "  FROM log GROUP BY event_id) AS e",
                f"ORDER BY event_time, event_id LIMIT {ROW_LIMIT}",
            ),
            columns=(
                "event_time",
                "function",
                "action",
                "outcome",
                "scaling_group",
                "instance_id",
                "reason",
                "correlation_id",
            ),
            time_columns=frozenset({"event_time"}),
        ),
        AuditQuery(
            name="control-plane-summary",
            logstore=AUDIT_LOGSTORE,
            title="The control plane's actions, counted",
            description="Per function, action and outcome: how many, on how many instances, first and last.",
            search="kind: audit",
            sql=_sql(
                'SELECT "function", action, outcome, count(*) AS events,',
                "  count(DISTINCT instance_id) AS instances,",
                "  min(event_time) AS first_at, max(event_time) AS last_at",
                'FROM (SELECT event_id, max("function") AS "function", max(action) AS action,',
                '  max(outcome) AS outcome, max(instance_id) AS instance_id, max("time") AS event_time',
                "  FROM log GROUP BY event_id) AS e",
                'GROUP BY "function", action, outcome',
                f'ORDER BY events DESC, "function", action, outcome LIMIT {ROW_LIMIT}',
            ),
            columns=("function", "action", "outcome", "events", "instances", "first_at", "last_at"),
            time_columns=frozenset({"first_at", "last_at"}),
        ),
    )
}


def run(sls: Sls, query: AuditQuery, from_time: int, to_time: int) -> list[dict[str, str]]:
    """The query's rows over ``[from_time, to_time)``, each value as SLS returns it (text)."""
    return sls.get_logs(query.logstore, query.query, from_time, to_time, limit=ROW_LIMIT)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def display_value(query: AuditQuery, column: str, value: str | None) -> str:
    if value is None or value == "null":
        return "-"
    names = query.value_names.get(column)
    number = _number(value)
    if names is not None and number is not None and number.is_integer():
        return names.get(int(number), value)
    if column in query.time_columns and number is not None:
        moment = datetime.fromtimestamp(number, UTC)
        return (
            moment.strftime("%Y-%m-%dT%H:%M:%S")
            + (f".{moment.microsecond // 1000:03d}" if number % 1 else "")
            + "Z"
        )
    if number is not None and number.is_integer() and ("E" in value or "e" in value or value.endswith(".0")):
        return str(int(number))  # SLS writes large doubles as 1.2E9
    return value


def render_table(query: AuditQuery, rows: Sequence[Mapping[str, str]]) -> str:
    """An aligned text table: the query's columns in order (any others after), numbers right-aligned."""
    columns = list(query.columns) + sorted({k for row in rows for k in row} - set(query.columns))
    cells = [[display_value(query, c, row.get(c)) for c in columns] for row in rows]
    numeric = [
        all(_number(row[i]) is not None or row[i] == "-" for row in cells)
        and c not in query.value_names
        and c not in query.time_columns
        for i, c in enumerate(columns)
    ]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            (v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i])) for i, v in enumerate(values)
        ).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/audit",
        description="Run a named audit query against SLS (or the local SLS) and print its answer.",
        epilog="Queries: " + ", ".join(QUERIES) + ". Times: epoch seconds, ISO (UTC unless given), "
        "now, or relative: -15m, -1h, -7d.",
    )
    parser.add_argument("query", nargs="?", metavar="QUERY-NAME", help="see --list")
    parser.add_argument("--list", action="store_true", help="list the queries and exit")
    parser.add_argument(
        "--from", dest="from_time", default="-24h", metavar="TIME", help="start, inclusive (default -24h)"
    )
    parser.add_argument(
        "--to", dest="to_time", default="now", metavar="TIME", help="end, exclusive (default now)"
    )
    parser.add_argument("--format", choices=("table", "json", "tsv"), default="table")
    parser.add_argument("--show-query", action="store_true", help="print the query text and exit")
    sls_cli.add_connection_arguments(parser)
    return parser


def list_queries() -> str:
    width = max(len(name) for name in QUERIES)
    return "\n".join(
        f"{q.name:<{width}}  {q.logstore:<11}  {q.title}.\n{'':<{width}}  {'':<11}  {q.description}"
        for q in QUERIES.values()
    )


def _join_time_values(argv: Sequence[str]) -> list[str]:
    """``--from -1h`` as ``--from=-1h``: argparse takes a value starting with '-' for an option."""
    out: list[str] = []
    values = iter(argv)
    for arg in values:
        if arg in ("--from", "--to"):
            value = next(values, None)
            out.append(arg if value is None else f"{arg}={value}")
        else:
            out.append(arg)
    return out


def main(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None, now: float | None = None
) -> int:
    args = build_parser().parse_args(_join_time_values(sys.argv[1:] if argv is None else argv))
    if args.list:
        print(list_queries())
        return sls_cli.EX_OK
    if not args.query:
        print("audit: name a query (see --list)", file=sys.stderr)
        return sls_cli.EX_USAGE
    query = QUERIES.get(args.query)
    if query is None:
        print(f"audit: no query {args.query!r}; the queries: {', '.join(QUERIES)}", file=sys.stderr)
        return sls_cli.EX_USAGE
    if args.show_query:
        print(f"{query.logstore}: {query.query}")
        return sls_cli.EX_OK
    now = time.time() if now is None else now
    try:
        from_time = sls_cli.parse_time(args.from_time, now)
        to_time = sls_cli.parse_time(args.to_time, now)
        if from_time >= to_time:
            raise sls_cli.UsageError(f"--from ({_iso(from_time)}) must be before --to ({_iso(to_time)})")
        sls = sls_cli.connect(args, environ)
    except sls_cli.UsageError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return sls_cli.EX_USAGE
    try:
        rows = run(sls, query, from_time, to_time)
    except SlsError as exc:
        print(f"audit: {query.name}: {exc}", file=sys.stderr)
        return sls_cli.EX_FAILURE
    if args.format == "json":
        print(json.dumps(rows, indent=1))
    elif args.format == "tsv":
        columns = list(query.columns) + sorted({k for row in rows for k in row} - set(query.columns))
        print("\t".join(columns))
        for row in rows:
            print("\t".join(row.get(c, "") for c in columns))
    else:
        print(f"{query.title} ({query.name}: {query.logstore}, {_iso(from_time)} to {_iso(to_time)})")
        print()
        print(render_table(query, rows))
    return sls_cli.EX_OK


if __name__ == "__main__":
    sys.exit(main())
