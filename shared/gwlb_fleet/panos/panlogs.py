"""PAN-OS traffic and threat logs, parsed and mapped to the flow-record schema. Pure: no I/O.

Two forms come in (docs/api-facts.md F-PANLOG-1 to F-PANLOG-7):

- **Syslog CSV**, PAN-OS's documented default format, one log a line, fields by position
  (``TRAFFIC_POSITIONS``, ``THREAT_POSITIONS``). The leading fields we read are the same in every
  PAN-OS version since 9.1 (10.1 and 11.1 included); later versions only append fields, so a line
  may carry any number of fields past the last one we read, never fewer. A syslog header before
  the first field (``<14>Dec  4 10:00:00 fw1 1,2026/12/04 ...``) is stripped.
- **Our HTTP payload** (``HTTP_PAYLOADS``): the JSON object per log that set-up puts into the
  Panorama HTTP server profile, built from PAN-OS's ``$field`` variables; its keys are those
  variables' names.

Both become a mapping from PAN-OS's variable name to the raw text, and one mapper checks each
field's type and builds the record. The checks are what catches a custom or reordered format:
an address must be an IP address, a port an integer within 0-65535, a time PAN-OS's
``YYYY/MM/DD HH:MM:SS``, the type TRAFFIC or THREAT; a field in the wrong place fails one of them
and the line is refused (``PanLogError``), never mapped to the wrong key.

Enumerated values are stored lower-case (spaces as hyphens), since the audit queries match PAN-OS's
documented lower-case values exactly: a TRAFFIC log's subtype (start, end, drop, deny) and action
(allow, deny, drop, drop-icmp, reset-client, reset-server, reset-both) must be documented ones, or
the log is refused, since neither can be guessed without miscounting; a THREAT log's severity
must be documented, its action and subtype (category) are kept as they came, lower-cased, and an
action the queries do not know counts as not blocked (F-PANAUDIT-1).

Counts: a flow record carries deltas (sums over a flow's records are its totals). PAN-OS's "end"
log carries the session's totals, its "start" log — sent when the rule logs at session start,
possibly more than once a session — the counts so far (F-PANLOG-7). So a start log maps to a
record with zero packets and bytes (the session's appearance), and the end log carries the
totals. A "drop" or "deny" log is a session the firewall refused: action deny.

Times: PAN-OS writes them without a zone, in the firewall's own time zone. We read them as UTC
(the SAFE reading, F-PANLOG-5): the fleet's firewalls are set to UTC.

Record ids: ``<serial>-<kind>-<sequence number>``. PAN-OS numbers each log type's logs in its
own sequence (F-PANLOG-3), so the kind is part of the id; a log sent again maps to the same id.
"""

from __future__ import annotations

import calendar
import csv
import json
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from gwlb_fleet.errors import BadEvent
from gwlb_fleet.sls.flowrecord import Action, EndReason, FlowRecord, Severity, ThreatRecord

# The path the intake function answers on; the Panorama HTTP server profile posts here.
INTAKE_PATH = "/panlogs"
# The header carrying the intake's token is a setting (PANLOGS_AUTH_HEADER): set-up writes it into
# the HTTP server profile (PAN-OS HTTP profiles carry custom headers: F-PANLOG-4).

LogKind = Literal["traffic", "threat"]

# PAN-OS's documented field name for each variable we read (the syslog tables name each field as
# "Field Name (variable)": F-PANLOG-1, F-PANLOG-2). Errors name fields by these names.
FIELD_NAMES: dict[str, str] = {
    "receive_time": "Receive Time",
    "serial": "Serial Number",
    "type": "Type",
    "subtype": "Threat/Content Type",
    "time_generated": "Generated Time",
    "src": "Source Address",
    "dst": "Destination Address",
    "rule": "Rule Name",
    "app": "Application",
    "from": "Source Zone",
    "to": "Destination Zone",
    "sessionid": "Session ID",
    "sport": "Source Port",
    "dport": "Destination Port",
    "proto": "IP Protocol",
    "action": "Action",
    "bytes_sent": "Bytes Sent",
    "bytes_received": "Bytes Received",
    "start": "Start Time",
    "elapsed": "Elapsed Time",
    "seqno": "Sequence Number",
    "pkts_sent": "Packets Sent",
    "pkts_received": "Packets Received",
    "session_end_reason": "Session End Reason",
    "threatid": "Threat/Content Name",
    "severity": "Severity",
    "direction": "Direction",
}

# Syslog CSV: the position (0-based) of each field we read. Identical in the 10.1 and 11.1
# "Traffic Log Fields" / "Threat Log Fields" tables (F-PANLOG-1, F-PANLOG-2). The first 31 fields
# are the same in both types, so the 16 we read of them are too.
COMMON_POSITIONS: dict[str, int] = {
    "receive_time": 1,
    "serial": 2,
    "type": 3,
    "subtype": 4,
    "time_generated": 6,
    "src": 7,
    "dst": 8,
    "rule": 11,
    "app": 14,
    "from": 16,
    "to": 17,
    "sessionid": 22,
    "sport": 24,
    "dport": 25,
    "proto": 29,
    "action": 30,
}
TRAFFIC_POSITIONS: dict[str, int] = {
    **COMMON_POSITIONS,
    "bytes_sent": 32,
    "bytes_received": 33,
    "start": 35,
    "elapsed": 36,
    "seqno": 39,
    "pkts_sent": 44,
    "pkts_received": 45,
    "session_end_reason": 46,
}
THREAT_POSITIONS: dict[str, int] = {
    **COMMON_POSITIONS,
    "threatid": 32,
    "subtype_category": 33,  # "Category": the URL category for url logs; not mapped
    "severity": 34,
    "direction": 35,
    "seqno": 36,
}
POSITIONS: dict[LogKind, dict[str, int]] = {"traffic": TRAFFIC_POSITIONS, "threat": THREAT_POSITIONS}
# The fewest fields a line of each type can have: one past the last field we read.
MIN_FIELDS: dict[LogKind, int] = {kind: max(p.values()) + 1 for kind, p in POSITIONS.items()}
TYPE_POSITION = 3

# The HTTP payload our HTTP server profile defines per log type: one JSON object per log, from
# PAN-OS's $field variables (F-PANLOG-4). Every value is quoted, so that an empty field is still
# valid JSON; the mapper converts. Field names: the same variables as FIELD_NAMES.
HTTP_PAYLOADS: dict[str, str] = {
    "traffic": "{" + ",".join(f'"{name}":"${name}"' for name in TRAFFIC_POSITIONS) + "}",
    "threat": "{"
    + ",".join(f'"{name}":"${name}"' for name in THREAT_POSITIONS if name != "subtype_category")
    + "}",
}

# The longest log line (or JSON object) taken: PAN-OS's longest documented fields (URLs, HTTP
# headers) fit well within it; anything longer is not a log of ours.
MAX_LINE_BYTES = 64 * 1024

# IANA protocol numbers of the names PAN-OS writes in the protocol field.
PROTOCOL_NUMBERS: dict[str, int] = {
    "icmp": 1,
    "igmp": 2,
    "tcp": 6,
    "udp": 17,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "ipv6-icmp": 58,
    "icmp6": 58,
    "sctp": 132,
}
ICMP_PROTOCOLS = frozenset({1, 58})
# Enumerated values are stored lower-case, whatever case the sender used: the audit queries match
# PAN-OS's documented lower-case values exactly (gwlb_fleet.sls.queries, F-PANAUDIT-1).
SEVERITIES: frozenset[str] = frozenset({"informational", "low", "medium", "high", "critical"})
# TRAFFIC subtypes (F-PANLOG-7): "start" when the rule logs at session start (counts so far, and
# PAN-OS may send it more than once a session), "end" with the session's totals, "drop" and
# "deny" for a session the firewall refused. Another value is refused: we would not know
# whether its counts are totals.
TRAFFIC_SUBTYPES: frozenset[str] = frozenset({"start", "end", "drop", "deny"})
REFUSED_SUBTYPES: frozenset[str] = frozenset({"drop", "deny"})
# TRAFFIC actions (F-PANLOG-7), spaces as PAN-OS's documentation writes them ("reset both")
# read as hyphens: allow, or one of the ways the firewall refused the session. Another value is
# refused, never guessed to be either: the flow record's action is allow or deny only.
TRAFFIC_ALLOW = "allow"
TRAFFIC_REFUSALS: frozenset[str] = frozenset(
    {"deny", "drop", "drop-icmp", "reset-client", "reset-server", "reset-both"}
)
# PAN-OS's session end reasons that say how a TCP session ended, in the agent's words.
END_REASONS: dict[str, EndReason] = {
    "tcp-fin": "fin",
    "tcp-rst-from-client": "rst",
    "tcp-rst-from-server": "rst",
    "tcp-reuse": "rst",
    "aged-out": "idle",
}
_THREAT_NAME = re.compile(r"^(.*)\((\d+)\)$", re.DOTALL)
# Where a syslog line's first field begins: the field before Receive Time (FUTURE_USE, a number
# or empty) and the receive time itself.
_FIRST_FIELD = re.compile(r"[^,\s]*,\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2},")


class PanLogError(BadEvent):
    """A log that cannot be mapped: ``field`` is PAN-OS's name of the field, ``value`` what it
    held, ``line`` the log's line in the request body (1-based; 0 when not known)."""

    def __init__(self, message: str, field: str = "", value: str = "", line: int = 0) -> None:
        where = f"line {line}: " if line else ""
        named = f"{field}: " if field else ""
        shown = f" (got {value[:80]!r})" if value or field else ""
        super().__init__(f"{where}{named}{message}{shown}", field=field)
        self.value = value
        self.line = line


@dataclass(frozen=True, slots=True)
class RawLog:
    """One log as PAN-OS's variable names -> raw text, and where it was in the body."""

    kind: LogKind
    fields: Mapping[str, str]
    line: int


# --- reading ------------------------------------------------------------------------------------------


def split_syslog_lines(text: str, first_line: int = 1) -> Iterator[RawLog]:
    """The logs of a body of syslog CSV lines (blank lines skipped)."""
    for number, line in enumerate(text.splitlines(), start=first_line):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_BYTES:
            raise PanLogError(f"a line of {len(line)} characters, more than {MAX_LINE_BYTES}", line=number)
        yield _by_position(_csv_fields(_strip_syslog_header(line, number), number), number)


def _csv_fields(line: str, number: int) -> list[str]:
    # One reader per line: a quote left open must fail this line, not swallow the next one.
    try:
        return next(csv.reader((line,), strict=True))
    except csv.Error as exc:
        raise PanLogError(f"not a CSV line: {exc}", line=number) from None


def _strip_syslog_header(line: str, number: int) -> str:
    match = _FIRST_FIELD.search(line)
    if match is None:
        raise PanLogError(
            "no PAN-OS log here: no field followed by a receive time (YYYY/MM/DD HH:MM:SS)",
            field=FIELD_NAMES["receive_time"],
            value=line,
            line=number,
        )
    return line[match.start() :]


def _by_position(row: list[str], number: int) -> RawLog:
    if len(row) <= TYPE_POSITION:
        raise PanLogError(f"only {len(row)} fields, no {FIELD_NAMES['type']}", line=number)
    kind = _kind(row[TYPE_POSITION], number)
    positions = POSITIONS[kind]
    if len(row) < MIN_FIELDS[kind]:
        missing = sorted((p, name) for name, p in positions.items() if p >= len(row))
        names = ", ".join(FIELD_NAMES.get(name, name) for _, name in missing)
        raise PanLogError(
            f"a {kind.upper()} log of {len(row)} fields, at least {MIN_FIELDS[kind]} expected; "
            f"missing: {names}",
            line=number,
        )
    return RawLog(kind, {name: row[p] for name, p in positions.items()}, number)


def _kind(value: str, number: int) -> LogKind:
    lowered = value.strip().lower()
    if lowered == "traffic" or lowered == "threat":
        return lowered  # type: ignore[return-value]  # narrowed by the comparison
    raise PanLogError("not TRAFFIC or THREAT", field=FIELD_NAMES["type"], value=value, line=number)


def split_json_payloads(text: str, first_line: int = 1) -> Iterator[RawLog]:
    """The logs of a body of our HTTP payloads: one JSON object, a JSON array of them, or one
    object a line. A body that is not valid JSON is refused with the line and column."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        items = _loads(text, first_line)
        if not isinstance(items, list):
            raise PanLogError("a JSON array of log objects expected", line=first_line)
        for offset, item in enumerate(items):
            yield _json_log(item, first_line, f"item {offset}")
        return
    for number, line in enumerate(text.splitlines(), start=first_line):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_BYTES:
            raise PanLogError(f"a line of {len(line)} characters, more than {MAX_LINE_BYTES}", line=number)
        yield _json_log(_loads(line, number), number, "")


def _loads(text: str, first_line: int) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PanLogError(
            f"not valid JSON at column {exc.colno}: {exc.msg}", line=first_line + exc.lineno - 1
        ) from None


def _json_log(item: object, number: int, where: str) -> RawLog:
    prefix = f"{where}: " if where else ""
    if not isinstance(item, dict):
        raise PanLogError(f"{prefix}a JSON object per log expected", line=number)
    kind = _kind(str(item.get("type", "")), number)
    fields: dict[str, str] = {}
    for name in POSITIONS[kind]:
        if name == "subtype_category":
            continue
        value = item.get(name)
        if value is None:
            raise PanLogError(f"{prefix}missing", field=FIELD_NAMES[name], line=number)
        fields[name] = value if isinstance(value, str) else str(value)
    return RawLog(kind, fields, number)


# --- checking and mapping -----------------------------------------------------------------------------


def to_record(raw: RawLog, emitted: float) -> FlowRecord | ThreatRecord:
    """The record of one log; PanLogError naming the first field that is not what PAN-OS writes."""
    reader = _Fields(raw)
    return _traffic(reader, emitted) if raw.kind == "traffic" else _threat(reader, emitted)


class _Fields:
    """Typed reads of a raw log's fields, each failing with the field's PAN-OS name."""

    __slots__ = ("fields", "line")

    def __init__(self, raw: RawLog) -> None:
        self.fields = raw.fields
        self.line = raw.line

    def error(self, name: str, message: str) -> PanLogError:
        return PanLogError(message, field=FIELD_NAMES[name], value=self.fields.get(name, ""), line=self.line)

    def text(self, name: str) -> str:
        return self.fields[name].strip()

    def required(self, name: str) -> str:
        value = self.fields[name].strip()
        if not value:
            raise self.error(name, "empty")
        return value

    def keyword(self, name: str) -> str:
        """An enumerated value, lower-case, spaces as hyphens (PAN-OS's documentation writes
        "reset both" where its logs write reset-both)."""
        return "-".join(self.required(name).lower().split())

    def enumerated(self, name: str, allowed: frozenset[str]) -> str:
        value = self.keyword(name)
        if value not in allowed:
            raise self.error(name, f"not one of {', '.join(sorted(allowed))}")
        return value

    def count(self, name: str) -> int:
        value = self.fields[name]
        if not (value.isascii() and value.isdigit()):
            raise self.error(name, "not a non-negative integer")
        return int(value)

    def port(self, name: str) -> int:
        number = self.count(name)
        if number > 65535:
            raise self.error(name, "not a port (0-65535)")
        return number

    def address(self, name: str) -> str:
        value = self.fields[name]
        if not _is_ip(value):
            raise self.error(name, "not an IP address")
        return value

    def time(self, name: str) -> float:
        epoch = _epoch(self.fields[name])
        if epoch is None:
            raise self.error(name, "not a time as PAN-OS writes it (YYYY/MM/DD HH:MM:SS)")
        return epoch

    def protocol(self) -> int:
        value = self.fields["proto"].strip().lower()
        number = PROTOCOL_NUMBERS.get(value)
        if number is None and value.isascii() and value.isdigit() and int(value) <= 255:
            number = int(value)
        if number is None:
            raise self.error("proto", "not an IP protocol name or number")
        return number


def _is_ip(value: str) -> bool:
    # inet_pton: the C parser, an order of magnitude faster than ipaddress on the hot path.
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in value else socket.AF_INET, value)
    except (OSError, ValueError):
        return False
    return True


@lru_cache(maxsize=4096)
def _epoch(value: str) -> float | None:
    # Many logs share a second: the cache makes the usual case a dict lookup.
    if len(value) != 19 or value[4] != "/" or value[7] != "/" or value[10] != " ":
        return None
    if value[13] != ":" or value[16] != ":":
        return None
    parts = (value[0:4], value[5:7], value[8:10], value[11:13], value[14:16], value[17:19])
    if not all(p.isascii() and p.isdigit() for p in parts):
        return None
    year, month, day, hour, minute, second = (int(p) for p in parts)
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        return None
    if hour > 23 or minute > 59 or second > 60:
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def _ports(reader: _Fields, protocol: int) -> tuple[int, int]:
    sport, dport = reader.port("sport"), reader.port("dport")
    # ICMP has no ports; PAN-OS's log has no ICMP type or code field either (F-PANLOG-1): the
    # record keeps ports 0 and type/code unknown, never an echo id as a port.
    return (0, 0) if protocol in ICMP_PROTOCOLS else (sport, dport)


def _traffic(reader: _Fields, emitted: float) -> FlowRecord:
    serial = reader.required("serial")
    seqno = reader.count("seqno")
    protocol = reader.protocol()
    src_port, dst_port = _ports(reader, protocol)
    start = reader.time("start")
    reader.time("time_generated")  # checked: a shifted format shows here first
    end_reason = reader.text("session_end_reason")
    session_id = reader.count("sessionid")
    subtype = reader.enumerated("subtype", TRAFFIC_SUBTYPES)
    action = _traffic_action(reader, subtype)
    # A flow record's counts are deltas: sums over a flow's records are its totals. PAN-OS's "end"
    # log carries the session's totals and its "start" log(s) the counts so far (F-PANLOG-7), so
    # a start log is the session's appearance, with no counts: otherwise they would count twice.
    counted = subtype != "start"
    return FlowRecord(
        record_id=f"{serial}-traffic-{seqno}",
        flow_id=f"{serial}-{session_id}-{int(start)}",
        appliance_id=serial,
        start=start,
        end=start + reader.count("elapsed"),
        emitted=emitted,
        reason=_end_reason(subtype, end_reason),
        protocol=protocol,
        src_ip=reader.address("src"),
        src_port=src_port,
        dst_ip=reader.address("dst"),
        dst_port=dst_port,
        direction="unknown",
        action=action,
        rule=reader.text("rule"),
        stage="panos",
        packets_fwd=_counted(reader, "pkts_sent", counted),
        bytes_fwd=_counted(reader, "bytes_sent", counted),
        packets_rev=_counted(reader, "pkts_received", counted),
        bytes_rev=_counted(reader, "bytes_received", counted),
        tcp_flags_fwd=0,
        tcp_flags_rev=0,
        gwlb_ip="",
        vni=0,
        zone="",
        serial=serial,
        sequence_number=seqno,
        application=reader.text("app"),
        session_end_reason=end_reason,
    )


def _traffic_action(reader: _Fields, subtype: str) -> Action:
    action = reader.enumerated("action", TRAFFIC_REFUSALS | {TRAFFIC_ALLOW})
    # A drop or deny log is a session the firewall refused, whatever its action field says.
    return "allow" if action == TRAFFIC_ALLOW and subtype not in REFUSED_SUBTYPES else "deny"


def _counted(reader: _Fields, name: str, counted: bool) -> int:
    number = reader.count(name)  # checked either way: a shifted format shows
    return number if counted else 0


def _end_reason(subtype: str, session_end_reason: str) -> EndReason:
    if subtype == "start":
        return "interval"  # the session goes on: a later "end" log follows
    return END_REASONS.get(session_end_reason, "other")


def _threat(reader: _Fields, emitted: float) -> ThreatRecord:
    serial = reader.required("serial")
    seqno = reader.count("seqno")
    protocol = reader.protocol()
    src_port, dst_port = _ports(reader, protocol)
    threat_name, threat_id = _threat_name(reader)
    severity = reader.enumerated("severity", SEVERITIES)
    return ThreatRecord(
        record_id=f"{serial}-threat-{seqno}",
        appliance_id=serial,
        serial=serial,
        sequence_number=seqno,
        time=reader.time("time_generated"),
        emitted=emitted,
        protocol=protocol,
        src_ip=reader.address("src"),
        src_port=src_port,
        dst_ip=reader.address("dst"),
        dst_port=dst_port,
        # Lower-cased, not checked: an action the queries do not know counts as not blocked
        # (F-PANAUDIT-1), and the threats question shows it as it came.
        action=reader.keyword("action"),
        rule=reader.text("rule"),
        application=reader.text("app"),
        threat_id=threat_id,
        threat_name=threat_name,
        threat_category=reader.keyword("subtype"),
        severity=_severity(severity),
        threat_direction=reader.text("direction").lower(),
        session_id=reader.count("sessionid"),
    )


def _threat_name(reader: _Fields) -> tuple[str, int]:
    """ "Eicar Test File(39040)" -> ("Eicar Test File", 39040); "(9999)" -> ("", 9999)."""
    match = _THREAT_NAME.match(reader.fields["threatid"].strip())
    if match is None:
        raise reader.error("threatid", "not a threat name followed by its id in parentheses")
    return match.group(1).strip(), int(match.group(2))


def _severity(value: str) -> Severity:
    return value  # type: ignore[return-value]  # checked against SEVERITIES by the caller


def parse_body(text: str, content_type: str, emitted: float) -> list[FlowRecord | ThreatRecord]:
    """Every record of a request body, or PanLogError for the first bad log (all or nothing).

    ``content_type``: application/json (or an NDJSON type) for our HTTP payload; text/csv or
    text/plain for syslog lines. Anything else is told apart by its first character."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if "json" in kind or (kind not in ("text/csv", "text/plain") and text.lstrip()[:1] in ("{", "[")):
        raws = split_json_payloads(text)
    else:
        raws = split_syslog_lines(text)
    return [to_record(raw, emitted) for raw in raws]
