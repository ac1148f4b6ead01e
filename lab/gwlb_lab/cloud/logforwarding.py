"""The VM-Series stand-in's log forwarding: PAN-OS traffic and threat logs, sent the way a firewall
sends them with the profiles ``gwlb-fleet setup`` wrote in Panorama.

The chain is the product's, end to end: set-up writes an HTTP server profile (template) and a log
forwarding profile (device group) and attaches it to the managed rules (gwlb_fleet.deploy.panlogs);
the firewall gets them from Panorama's running configuration (what a push delivers;
``read_forwarding``); for each session a rule with that profile logs, it renders the profile's
payload for the log type by substituting its ``$field`` variables with its own values
(``render_payload``) and posts it, with the profile's headers, to the profile's server and URL path.
The intake (the panlogs function behind the lab's HTTP trigger, gwlb_lab.cloud.intake) maps it.

The sessions are the agent's flows: the stand-in's data plane is the real agent, which keeps a
local JSON-lines flow log (``FlowLogTail`` reads what it appends; the agent is not changed). A
flow's records are deltas; PAN-OS logs a session once, at its end (log-end, set-up's setting), so
``PanosLogs`` adds up a flow's interval records and writes one TRAFFIC log when the flow ends.

Values, as a firewall fills them (F-PANLOG-1/2/5): ``serial`` the stand-in's serial, ``seqno`` a
counter per log type of this firewall (F-PANLOG-3), ``sessionid`` a counter per session, times
``YYYY/MM/DD HH:MM:SS`` in UTC (the fleet's firewalls are set to UTC), ``action`` allow or deny from
the record, ``rule`` the record's rule, ``app`` by protocol and port (``APPLICATIONS``),
``session_end_reason`` from how the flow ended (``END_REASONS``), bytes and packets each way.

Threats: a real firewall's threat prevention is not emulated; the lab's stand-in has one
deterministic signature of its own (``Signature``: the lab passes ``ADMIN_PORT_BRUTE_FORCE``), and
writes a THREAT log, besides the TRAFFIC log, for every session it matches.

Sending (``LogSender``): one log per request (whether PAN-OS batches is not documented:
F-PANLOG-4), in order, over one kept-alive connection. PAN-OS's behaviour after a refused request
is not documented either (F-PANLOG-6); the stand-in never drops a log silently: a 5xx answer, a
timeout or an unreachable intake keeps the log at the head of the queue and sends the same body
again (the same seqno, hence the same record id) after a backoff (0.5 s doubling to 8 s); a 4xx
answer cannot succeed by sending again, so the log is counted as refused and logged with the
intake's answer. ``counts`` says how many were generated, sent, refused, retried, and are pending.
"""

from __future__ import annotations

import collections
import http.client
import json
import logging
import re
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from gwlb_fleet.panos import xmlapi
from gwlb_fleet.panos.fakes import FakePanorama, render_log_node
from gwlb_fleet.sls.flowrecord import PROTOCOL_NAMES, FlowRecord

log = logging.getLogger("gwlb_lab.cloud.logforwarding")
T = TypeVar("T")

LOG_TYPES = ("traffic", "threat")
REQUEST_TIMEOUT_S = 5.0
FIRST_RETRY_S = 0.5
MAX_RETRY_S = 8.0
_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")

# App-ID's names for what the lab's clients send (a real firewall identifies the application from
# the payload; the stand-in goes by protocol and port).
APPLICATIONS: dict[tuple[int, int], str] = {(6, 80): "web-browsing", (6, 443): "ssl", (6, 22): "ssh"}
# PAN-OS session end reasons for the agent's reasons (F-PANLOG-1's Session End Reason).
END_REASONS: dict[str, str] = {
    "fin": "tcp-fin",
    "rst": "tcp-rst-from-client",
    "idle": "aged-out",
    "shutdown": "n/a",
    "replaced": "n/a",
    "other": "n/a",
}
ZONES: dict[str, tuple[str, str]] = {
    "inbound": ("untrust", "trust"),
    "outbound": ("trust", "untrust"),
    "internal": ("trust", "trust"),
    "unknown": ("untrust", "untrust"),
}


# The variables the stand-in fills, per log type (PanosLogs); a payload naming another is refused.
_COMMON = frozenset({
    "receive_time", "serial", "type", "subtype", "time_generated", "src", "dst", "rule", "app", "from",
    "to", "sessionid", "sport", "dport", "proto", "action", "start", "seqno",
})  # fmt: skip
VARIABLES: dict[str, frozenset[str]] = {
    "traffic": _COMMON
    | {"bytes_sent", "bytes_received", "elapsed", "pkts_sent", "pkts_received", "session_end_reason"},
    "threat": _COMMON | {"threatid", "severity", "direction"},
}


class ForwardingError(Exception):
    """A profile the stand-in cannot follow (a payload variable it does not know, a filter other
    than "All Logs"); the message names it."""


def panos_time(epoch: float) -> str:
    """PAN-OS's time format (F-PANLOG-5), in UTC."""
    return time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(epoch))


# --- what Panorama pushed -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    """Where one log type goes: one server of an HTTP server profile and the profile's format."""

    log_type: str
    protocol: str  # HTTP | HTTPS
    address: str
    port: int
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    payload: str

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.protocol, self.address, self.port)


@dataclass(frozen=True)
class ForwardingConfig:
    """``rules``: rule -> the log types it forwards; ``destinations``: log type -> where to."""

    rules: Mapping[str, frozenset[str]] = field(default_factory=dict)
    destinations: Mapping[str, tuple[Destination, ...]] = field(default_factory=dict)

    def targets(self, rule: str, log_type: str) -> tuple[Destination, ...]:
        return self.destinations.get(log_type, ()) if log_type in self.rules.get(rule, ()) else ()


def read_forwarding(panorama: FakePanorama, template: str, device_group: str) -> ForwardingConfig:
    """The log forwarding configuration a firewall of ``device_group`` (and the stack holding
    ``template``) has from Panorama's running configuration."""
    with panorama._lock:  # what was committed; the API's own call log is not the firewall's business
        running = panorama.running
        profiles_node = render_log_node(running, xmlapi.LogXpath("http-profiles", template))
        forwarding_node = render_log_node(running, xmlapi.LogXpath("forwarding-profiles", device_group))
        rules_node = render_log_node(running, xmlapi.LogXpath("rules", device_group))
    profiles = {p.name: p for p in _parsed(profiles_node, xmlapi.HttpServerProfile.parse)}
    forwarding = {f.name: f for f in _parsed(forwarding_node, xmlapi.ForwardingProfile.parse)}
    destinations: dict[str, list[Destination]] = collections.defaultdict(list)
    forwarded_by_profile: dict[str, frozenset[str]] = {}
    for profile in forwarding.values():
        types = set()
        for match in profile.matches:
            if match.log_type not in LOG_TYPES:
                continue  # the stand-in writes only traffic and threat logs
            if match.filter != xmlapi.ALL_LOGS:
                raise ForwardingError(
                    f"log forwarding profile {profile.name}: filter {match.filter!r}: the lab's firewall"
                    f" evaluates only {xmlapi.ALL_LOGS!r}"
                )
            for name in match.send_http:
                http = profiles.get(name)
                if http is None:
                    raise ForwardingError(
                        f"log forwarding profile {profile.name}: no HTTP server profile {name}"
                    )
                found = _destinations(http, match.log_type)
                if found:
                    types.add(match.log_type)
                    destinations[match.log_type].extend(
                        d for d in found if d not in destinations[match.log_type]
                    )
        forwarded_by_profile[profile.name] = frozenset(types)
    rules = {
        rule.rule: forwarded_by_profile.get(rule.log_setting, frozenset())
        for rule in xmlapi.parse_rules(rules_node)
        if rule.log_end  # set-up logs at session end; a rule logging only at start sends no end log
    }
    return ForwardingConfig(rules, {t: tuple(d) for t, d in destinations.items()})


def _parsed(node: ET.Element | None, parse: Callable[[ET.Element], T]) -> list[T]:
    return [parse(entry) for entry in (list(node) if node is not None else [])]


def _destinations(profile: xmlapi.HttpServerProfile, log_type: str) -> list[Destination]:
    fmt = next((f for f in profile.formats if f.log_type == log_type), None)
    if fmt is None:
        return []  # the profile has no format for this type: PAN-OS sends it nothing of it
    unknown = sorted(set(_VARIABLE.findall(fmt.payload)) - VARIABLES[log_type])
    if unknown:
        raise ForwardingError(
            f"HTTP server profile {profile.name}, {log_type} payload: the lab's firewall has no value for"
            f" {', '.join('$' + name for name in unknown)}"
        )
    return [
        Destination(
            log_type,
            s.protocol,
            s.address,
            s.port,
            s.http_method,
            fmt.url_format or "/",
            fmt.headers,
            fmt.payload,
        )
        for s in profile.servers
    ]


def render_payload(payload: str, values: Mapping[str, str]) -> str:
    """The payload with each ``$field`` replaced by this log's value, as the firewall does. A
    variable with no value fails, naming it (``read_forwarding`` refuses such a profile first)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ForwardingError(f"payload variable ${name}: the lab's firewall has no value for it")
        return values[name]

    return _VARIABLE.sub(value, payload)


# --- sessions to logs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """A threat the stand-in detects: every TCP session to ``port`` (a custom vulnerability
    signature of the lab's, not a Palo Alto one)."""

    threat_id: int
    name: str
    category: str  # PAN-OS's threat subtype
    severity: str
    action: str
    port: int

    def matches(self, record: FlowRecord) -> bool:
        return record.protocol == 6 and record.dst_port == self.port


@dataclass(frozen=True)
class PanosLog:
    log_type: str
    rule: str
    seqno: int
    values: Mapping[str, str]


@dataclass
class _Session:
    first: FlowRecord
    packets_fwd: int = 0
    bytes_fwd: int = 0
    packets_rev: int = 0
    bytes_rev: int = 0


class PanosLogs:
    """One firewall's logs for its sessions: sequence numbers per log type, session ids, a flow's
    interval records added up until it ends."""

    def __init__(
        self, serial: str, signatures: tuple[Signature, ...] = (), clock: Callable[[], float] = time.time
    ) -> None:
        self.serial = serial
        self.signatures = signatures
        self._clock = clock
        self._seqno = {t: 0 for t in LOG_TYPES}
        self._session_id = 0
        self._open: dict[str, _Session] = {}

    def logs_for(self, record: FlowRecord) -> list[PanosLog]:
        """The logs a flow record makes: none while the flow goes on; at its end one TRAFFIC log
        and one THREAT log per signature it matches."""
        session = self._open.setdefault(record.flow_id, _Session(record))
        session.packets_fwd += record.packets_fwd
        session.bytes_fwd += record.bytes_fwd
        session.packets_rev += record.packets_rev
        session.bytes_rev += record.bytes_rev
        if record.reason == "interval":
            return []
        del self._open[record.flow_id]
        self._session_id += 1
        common = self._common(session.first, record)
        logs = [self._log("traffic", record.rule, {**common, **self._traffic(session, record)})]
        for signature in self.signatures:
            if signature.matches(record):
                logs.append(self._log("threat", record.rule, {**common, **_threat(signature)}))
        return logs

    @property
    def open_sessions(self) -> int:
        return len(self._open)

    def _log(self, log_type: str, rule: str, values: dict[str, str]) -> PanosLog:
        self._seqno[log_type] += 1
        seqno = self._seqno[log_type]
        values.update(type=log_type.upper(), seqno=str(seqno))
        if log_type == "threat":
            values["subtype"] = values.pop("threat_subtype")
        return PanosLog(log_type, rule, seqno, values)

    def _common(self, first: FlowRecord, last: FlowRecord) -> dict[str, str]:
        source_zone, destination_zone = ZONES.get(last.direction, ZONES["unknown"])
        icmp = last.protocol in (1, 58)
        return {
            "receive_time": panos_time(self._clock()),
            "serial": self.serial,
            "time_generated": panos_time(last.end),
            "src": last.src_ip,
            "dst": last.dst_ip,
            "rule": last.rule,
            "app": _application(last),
            "from": source_zone,
            "to": destination_zone,
            "sessionid": str(self._session_id),
            "sport": "0" if icmp else str(last.src_port),
            "dport": "0" if icmp else str(last.dst_port),
            "proto": PROTOCOL_NAMES.get(last.protocol, str(last.protocol)),
            "action": last.action,
            "start": panos_time(first.start),
        }

    @staticmethod
    def _traffic(session: _Session, last: FlowRecord) -> dict[str, str]:
        denied = last.action == "deny"
        return {
            "subtype": "deny" if denied else "end",
            "bytes_sent": str(session.bytes_fwd),
            "bytes_received": str(session.bytes_rev),
            "elapsed": str(max(0, round(last.end - session.first.start))),
            "pkts_sent": str(session.packets_fwd),
            "pkts_received": str(session.packets_rev),
            "session_end_reason": "policy-deny" if denied else END_REASONS.get(last.reason, "n/a"),
        }


def _threat(signature: Signature) -> dict[str, str]:
    return {
        "threat_subtype": signature.category,
        "action": signature.action,
        "threatid": f"{signature.name}({signature.threat_id})",
        "severity": signature.severity,
        "direction": "client-to-server",
    }


def _application(record: FlowRecord) -> str:
    if record.action == "deny":
        return "not-applicable"  # denied by the rule before App-ID saw any payload
    if record.protocol in (1, 58):
        return "ping"
    known = APPLICATIONS.get((record.protocol, record.dst_port))
    return known or f"unknown-{PROTOCOL_NAMES.get(record.protocol, 'p2p')}"


# --- the agent's flow log ------------------------------------------------------------------------------


class FlowLogTail:
    """The records the agent appended to its JSON-lines flow log since the last read. A line not
    yet ended is left for the next read; other kinds of record (``kind`` loss) are skipped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.unreadable = 0

    def read(self) -> list[FlowRecord]:
        try:
            with open(self.path, "rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            return []  # the agent has written nothing yet
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        return list(self._records(lines))

    def _records(self, lines: list[bytes]) -> Iterator[FlowRecord]:
        for line in lines:
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if data.get("kind", "flow") != "flow":
                    continue
                data.pop("kind", None)
                yield FlowRecord.from_dict(data)
            except (ValueError, TypeError, AttributeError) as exc:
                self.unreadable += 1
                log.error(
                    "a line of the agent's flow log is not a flow record",
                    extra={
                        "path": str(self.path),
                        "error": str(exc),
                        "line": line[:200].decode(errors="replace"),
                    },
                )


# --- sending ---------------------------------------------------------------------------------------


class Post(Protocol):
    def __call__(self, destination: Destination, body: bytes, timeout: float) -> tuple[int, bytes]: ...


@dataclass(frozen=True)
class Outgoing:
    destination: Destination
    body: bytes
    log_type: str
    seqno: int


class HttpPoster:
    """Posts over one kept-alive connection per server; a failed connection is made anew.
    ``ca_file``: the CA an HTTPS server's certificate is checked against (the lab's; a profile with
    no certificate profile would not check it on a firewall: the lab checks it all the same)."""

    def __init__(self, ca_file: Path | None = None) -> None:
        self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._connections: dict[tuple[str, str, int], http.client.HTTPConnection] = {}

    def __call__(self, destination: Destination, body: bytes, timeout: float) -> tuple[int, bytes]:
        connection = self._connection(destination, timeout)
        headers = dict(destination.headers)
        headers["Content-Length"] = str(len(body))
        try:
            connection.request(destination.method, destination.path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read(1 << 16)
        except (OSError, http.client.HTTPException):
            self.close(destination)
            raise

    def _connection(self, destination: Destination, timeout: float) -> http.client.HTTPConnection:
        connection = self._connections.get(destination.key)
        if connection is None:
            if destination.protocol == "HTTPS":
                connection = http.client.HTTPSConnection(
                    destination.address, destination.port, timeout=timeout, context=self._context
                )
            else:
                connection = http.client.HTTPConnection(
                    destination.address, destination.port, timeout=timeout
                )
            self._connections[destination.key] = connection
        return connection

    def close(self, destination: Destination | None = None) -> None:
        keys = [destination.key] if destination else list(self._connections)
        for key in keys:
            connection = self._connections.pop(key, None)
            if connection is not None:
                connection.close()


class LogSender:
    """The firewall's queue of logs to send, in order; see the module's docstring for what is
    answered how. ``send_pending`` sends until the queue is empty or ``stop`` is set."""

    def __init__(
        self,
        post: Post,
        sleep: Callable[[float], bool] | None = None,
        first_retry_s: float = FIRST_RETRY_S,
        max_retry_s: float = MAX_RETRY_S,
    ) -> None:
        self._post = post
        self.stop = threading.Event()
        # waits, and says whether to give up: stop was set meanwhile
        self._sleep = sleep or self.stop.wait
        self._first_retry_s = first_retry_s
        self._max_retry_s = max_retry_s
        self._queue: collections.deque[Outgoing] = collections.deque()
        self._lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.last_error = ""

    def put(self, item: Outgoing) -> None:
        with self._lock:
            self._queue.append(item)
            self.counts[f"{item.log_type} generated"] += 1

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def send_pending(self) -> None:
        delay = self._first_retry_s
        while not self.stop.is_set():
            with self._lock:
                if not self._queue:
                    return
                item = self._queue[0]
            if self._send(item):
                with self._lock:
                    self._queue.popleft()
                delay = self._first_retry_s
                continue
            if self._sleep(delay):
                return
            delay = min(delay * 2, self._max_retry_s)

    def _send(self, item: Outgoing) -> bool:
        """True when the log is done with (sent, or refused for good)."""
        try:
            status, answer = self._post(item.destination, item.body, REQUEST_TIMEOUT_S)
        except (OSError, http.client.HTTPException) as exc:
            return self._failed(item, f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            self._count(f"{item.log_type} sent")
            return True
        text = answer[:300].decode(errors="replace")
        if 500 <= status < 600:
            return self._failed(item, f"HTTP {status}: {text}")
        self._count(f"{item.log_type} refused", f"HTTP {status}: {text}")
        log.error(
            "the intake refused a log; it is not sent again",
            extra={"log_type": item.log_type, "seqno": item.seqno, "status": status, "answer": text},
        )
        return True

    def _failed(self, item: Outgoing, error: str) -> bool:
        self._count(f"{item.log_type} retried", error)
        log.warning(
            "a log was not taken; it is sent again",
            extra={"log_type": item.log_type, "seqno": item.seqno, "error": error},
        )
        return False

    def _count(self, what: str, error: str = "") -> None:
        with self._lock:  # the live view reads the counts from another thread
            self.counts[what] += 1
            if error:
                self.last_error = error

    def snapshot(self) -> dict[str, int | str]:
        with self._lock:
            counts: dict[str, int | str] = {k.replace(" ", "_"): v for k, v in sorted(self.counts.items())}
            counts["pending"] = len(self._queue)
            if self.last_error:
                counts["last_error"] = self.last_error
        return counts


# --- one firewall ---------------------------------------------------------------------------------------


class FirewallLogForwarding:
    """One stand-in firewall's log forwarding: ``poll`` reads the agent's new records and the pushed
    configuration and queues the logs; a thread (``start``) sends them."""

    def __init__(
        self,
        serial: str,
        flow_log: Path,
        config: Callable[[], ForwardingConfig],
        sender: LogSender,
        signatures: tuple[Signature, ...] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.serial = serial
        self.tail = FlowLogTail(flow_log)
        self.logs = PanosLogs(serial, signatures, clock)
        self.sender = sender
        self._config = config
        self._wake = threading.Event()
        self._poll_lock = threading.Lock()  # the watch thread and the release thread both poll
        self._thread: threading.Thread | None = None
        self.not_forwarded = 0  # sessions whose rule has no forwarding profile for the log type
        self.config_error = ""

    def poll(self) -> None:
        with self._poll_lock:
            self._poll()

    def _poll(self) -> None:
        try:
            config = self._config()
        except (ForwardingError, xmlapi.ConfigSchemaError) as exc:
            # Nothing is read without a configuration to follow: the records wait in the file.
            if str(exc) != self.config_error:
                log.error(
                    "the pushed log forwarding configuration cannot be followed",
                    extra={"serial": self.serial, "error": str(exc)},
                )
            self.config_error = str(exc)
            return
        self.config_error = ""
        records = self.tail.read()
        for record in records:
            for panos_log in self.logs.logs_for(record):
                self._queue(config, panos_log)
        if records:
            self._wake.set()

    def _queue(self, config: ForwardingConfig, panos_log: PanosLog) -> None:
        destinations = config.targets(panos_log.rule, panos_log.log_type)
        if not destinations:
            self.not_forwarded += 1
            return
        for destination in destinations:
            body = render_payload(destination.payload, panos_log.values).encode()
            self.sender.put(Outgoing(destination, body, panos_log.log_type, panos_log.seqno))

    def start(self) -> FirewallLogForwarding:
        self._thread = threading.Thread(target=self._send_forever, name=f"panlogs-{self.serial}", daemon=True)
        self._thread.start()
        return self

    def _send_forever(self) -> None:
        while not self.sender.stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self.sender.send_pending()
            except Exception:
                log.exception("sending logs failed", extra={"serial": self.serial})

    def stop(self, flush_s: float) -> None:
        """A last read, then sending for at most ``flush_s``; what is left stays counted as pending."""
        self.poll()
        deadline = time.monotonic() + flush_s
        while self.sender.pending and time.monotonic() < deadline and self._thread is not None:
            self._wake.set()
            time.sleep(0.1)
        self.sender.stop.set()
        if self._thread is not None:
            self._thread.join(REQUEST_TIMEOUT_S + 1)
        if self.sender.pending:
            log.error(
                "logs left unsent when the firewall stopped",
                extra={"serial": self.serial, "pending": self.sender.pending},
            )

    def snapshot(self) -> dict[str, int | str]:
        counts = self.sender.snapshot()
        counts["not_forwarded"] = self.not_forwarded
        counts["open_sessions"] = self.logs.open_sessions
        if self.tail.unreadable:
            counts["unreadable_records"] = self.tail.unreadable
        if self.config_error:
            counts["config_error"] = self.config_error
        return counts
