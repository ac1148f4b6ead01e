"""``python -m gwlb_lab.load``: the lab's clients, run in the client namespace ("the internet").

- **Connections**: N HTTP/1.1 keep-alive connections to the app server, each asking for the
  page about once a second. After a lifetime of a few seconds a connection is closed the polite
  way (FIN) and a new one opened, so that flows move onto new appliances and off draining ones,
  as real clients' do. Each connection is a flow through the GWLB: N drives the appliances'
  ``active_flows`` and with it the scaling alarms.
- **Probes**: a fresh connection every ``probe_interval`` with a short timeout: new flows, hashed
  over the appliances like any other. How failover is measured: after a kill, probes that hash to
  the dead appliance fail until the GWLB stops sending new flows there.
- **Ping**: ICMP echo to the app server (a raw socket: there is no ping binary), a new identifier
  every few seconds (ping started again), so an ICMP flow does not outlive its use.
- **Denied**: now and then a connection to a port the appliances' policy denies: it must time out.

Every failure is counted by kind (reset, timeout, refused, closed, HTTP status) with its time:
"no connection reset during the scale-in" is a question about these counters. Control on a Unix
socket (gwlb_lab.control): ``GET /stats``, ``POST /load {"connections": N}``, ``POST /stop``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from gwlb_lab.control import ControlError, ControlServer
from gwlb_lab.netns import alive

RECENT = 4000  # probe and error results kept for the runner's measurements
MAX_CONNECTIONS = 500


@dataclass(frozen=True)
class LoadSettings:
    server: str = "198.18.2.2"
    port: int = 80
    path: str = "/"
    request_interval: float = 1.0  # seconds between requests on a connection
    lifetime: tuple[float, float] = (4.0, 9.0)  # a connection's life, seconds (uniform)
    request_timeout: float = 5.0  # rides out a failover: TCP retransmits meanwhile
    probe_interval: float = 0.1
    probe_timeout: float = 1.0
    max_probes_in_flight: int = 20
    ping_interval: float = 0.5
    ping_timeout: float = 1.0
    pings_per_id: int = 20  # a new "ping run" every 10 s
    denied_port: int = 8443
    denied_interval: float = 5.0


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, http.client.RemoteDisconnected | http.client.IncompleteRead):
        return "closed"
    return type(exc).__name__


class Load:
    def __init__(self, settings: LoadSettings, connections: int = 0) -> None:
        self.settings = settings
        self.target = connections
        self.stop_event = threading.Event()
        # Quiet: no new connection, probe, ping or denied attempt (the scenario's audit wants every
        # session ended and logged before it counts them); open connections close as when load falls.
        self.quiet = threading.Event()
        self._lock = threading.Lock()
        self._slots: dict[int, threading.Thread] = {}
        self.started = time.time()
        # connections
        self.open = 0
        self.opened = 0
        self.closed_clean = 0
        self.requests_ok = 0
        self.bytes = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.error_log: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=RECENT)
        self.longest_stall = (0.0, 0.0)  # (seconds, when it ended)
        # probes
        self.probes: collections.deque[tuple[float, float, bool, str]] = collections.deque(maxlen=RECENT)
        self.probes_sent = 0
        self.probes_ok = 0
        self.probe_errors: collections.Counter[str] = collections.Counter()
        self._probes_in_flight = threading.Semaphore(settings.max_probes_in_flight)
        # ping and denied
        self.pings_sent = 0
        self.pings_ok = 0
        self.ping_last_ok = 0.0
        self.ping_error = ""
        self.denied_attempts = 0
        self.denied_blocked = 0
        self.denied_answered = 0

    # --- control -----------------------------------------------------------------------------

    def set_connections(self, count: int) -> None:
        if not 0 <= count <= MAX_CONNECTIONS:
            raise ControlError(f"connections must be 0 to {MAX_CONNECTIONS}")
        with self._lock:
            self.target = count
            for slot in range(count):
                thread = self._slots.get(slot)
                if thread is None or not thread.is_alive():
                    thread = threading.Thread(target=self._connection, args=(slot,),
                                              name=f"conn-{slot}", daemon=True)
                    self._slots[slot] = thread
                    thread.start()

    def set_quiet(self, quiet: bool) -> None:
        if quiet:
            self.quiet.set()
            self.set_connections(0)
        else:
            self.quiet.clear()

    def start(self) -> None:
        self.set_connections(self.target)
        for target, name in ((self._probe_loop, "probes"), (self._ping_loop, "ping"),
                             (self._denied_loop, "denied")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def stop(self, grace: float = 3.0) -> None:
        """Close every connection politely (FIN), then return."""
        self.stop_event.set()
        deadline = time.monotonic() + grace
        for thread in list(self._slots.values()):
            thread.join(max(0.0, deadline - time.monotonic()))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "time": time.time(),
                "started": self.started,
                "connections": {
                    "target": self.target, "open": self.open, "opened": self.opened,
                    "closed_clean": self.closed_clean, "requests_ok": self.requests_ok,
                    "bytes": self.bytes, "errors": dict(self.errors),
                    "longest_stall_s": round(self.longest_stall[0], 3),
                    "longest_stall_ended": self.longest_stall[1],
                },
                "probes": {"sent": self.probes_sent, "ok": self.probes_ok,
                           "errors": dict(self.probe_errors)},
                "ping": {"sent": self.pings_sent, "ok": self.pings_ok,
                         "last_ok": self.ping_last_ok, "error": self.ping_error},
                "denied": {"attempts": self.denied_attempts, "blocked": self.denied_blocked,
                           "answered": self.denied_answered},
                "quiet": self.quiet.is_set(),
            }

    def recent(self, since: float) -> dict[str, Any]:
        """Probe results and connection errors since ``since`` (epoch seconds)."""
        with self._lock:
            probes = [p for p in self.probes if p[0] >= since]
            errors = [e for e in self.error_log if e[0] >= since]
        return {"probes": probes, "errors": errors}

    # --- connections -------------------------------------------------------------------------

    def _wanted(self, slot: int) -> bool:
        return not self.stop_event.is_set() and slot < self.target

    def _connection(self, slot: int) -> None:
        s = self.settings
        while self._wanted(slot):
            connection = http.client.HTTPConnection(s.server, s.port, timeout=s.request_timeout)
            lifetime = random.uniform(*s.lifetime)
            opened = time.monotonic()
            last_ok = 0.0
            try:
                connection.connect()
                with self._lock:
                    self.open += 1
                    self.opened += 1
                try:
                    while self._wanted(slot) and time.monotonic() - opened < lifetime:
                        connection.request("GET", s.path)
                        response = connection.getresponse()
                        body = response.read()
                        now = time.monotonic()
                        if response.status != 200:
                            self._error(f"http_{response.status}", "connection", f"slot {slot}")
                        else:
                            with self._lock:
                                self.requests_ok += 1
                                self.bytes += len(body)
                                if last_ok and now - last_ok > self.longest_stall[0]:
                                    self.longest_stall = (now - last_ok, time.time())
                            last_ok = now
                        self.stop_event.wait(s.request_interval)
                    connection.close()  # FIN: the polite way a client leaves
                    with self._lock:
                        self.closed_clean += 1
                finally:
                    with self._lock:
                        self.open -= 1
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                self._error(error_kind(exc), "connection", f"slot {slot}: {exc}")
                self.stop_event.wait(0.5)

    def _error(self, kind: str, where: str, detail: str) -> None:
        with self._lock:
            if where == "probe":
                self.probe_errors[kind] += 1
            else:
                self.errors[kind] += 1
            self.error_log.append((time.time(), f"{where}:{kind}", detail[:200]))

    # --- probes ------------------------------------------------------------------------------

    def _probe_loop(self) -> None:
        while not self.stop_event.wait(self.settings.probe_interval):
            if self.quiet.is_set():
                continue
            if not self._probes_in_flight.acquire(blocking=False):
                continue  # too many stuck: the machine is busy, do not pile up threads
            threading.Thread(target=self._probe, name="probe", daemon=True).start()

    def _probe(self) -> None:
        s = self.settings
        started = time.time()
        connection = http.client.HTTPConnection(s.server, s.port, timeout=s.probe_timeout)
        try:
            connection.request("GET", s.path, headers={"Connection": "close"})
            response = connection.getresponse()
            response.read()
            ok, error = response.status == 200, "" if response.status == 200 else f"http_{response.status}"
        except (OSError, http.client.HTTPException) as exc:
            ok, error = False, error_kind(exc)
        finally:
            connection.close()
            self._probes_in_flight.release()
        with self._lock:
            self.probes_sent += 1
            self.probes.append((started, time.time(), ok, error))
            if ok:
                self.probes_ok += 1
        if not ok:
            self._error(error, "probe", "")

    # --- ping and denied ---------------------------------------------------------------------

    def _ping_loop(self) -> None:
        s = self.settings
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        except OSError as exc:
            self.ping_error = f"no raw ICMP socket: {exc}"
            return
        sock.settimeout(0.1)
        ident, seq = random.randrange(1, 0xFFFF), 0
        with sock:
            while not self.stop_event.is_set():
                if self.quiet.is_set():
                    self.stop_event.wait(s.ping_interval)
                    continue
                seq += 1
                if seq > s.pings_per_id:
                    ident, seq = (ident % 0xFFFE) + 1, 1
                sent = time.monotonic()
                try:
                    sock.sendto(icmp_echo(ident, seq), (s.server, 0))
                except OSError as exc:
                    self.ping_error = str(exc)
                with self._lock:
                    self.pings_sent += 1
                answered = False
                while time.monotonic() - sent < s.ping_timeout and not answered:
                    try:
                        packet = sock.recv(2048)
                    except TimeoutError:
                        continue
                    answered = is_echo_reply(packet, ident, seq)
                if answered:
                    with self._lock:
                        self.pings_ok += 1
                        self.ping_last_ok = time.time()
                self.stop_event.wait(max(0.0, s.ping_interval - (time.monotonic() - sent)))

    def _denied_loop(self) -> None:
        s = self.settings
        while not self.stop_event.wait(s.denied_interval):
            if self.quiet.is_set():
                continue
            with self._lock:
                self.denied_attempts += 1
            try:
                with socket.create_connection((s.server, s.denied_port), timeout=0.5):
                    pass
                answered = True
            except ConnectionRefusedError:
                answered = True  # the server's RST came back: the SYN got through
            except OSError:
                answered = False
            with self._lock:
                if answered:
                    self.denied_answered += 1
                else:
                    self.denied_blocked += 1


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_echo(ident: int, seq: int, payload: bytes = b"gwlb-fleet lab ping") -> bytes:
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload


def is_echo_reply(packet: bytes, ident: int, seq: int) -> bool:
    """An IPv4 packet carrying the echo reply to (ident, seq)."""
    if len(packet) < 20:
        return False
    offset = (packet[0] & 0x0F) * 4
    if len(packet) < offset + 8:
        return False
    kind, _, _, got_ident, got_seq = struct.unpack("!BBHHH", packet[offset:offset + 8])
    return kind == 0 and (got_ident, got_seq) == (ident, seq)



def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gwlb_lab.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--control", type=Path, required=True, help="Unix socket to serve control on")
    parser.add_argument("--server", default=LoadSettings.server)
    parser.add_argument("--port", type=int, default=LoadSettings.port)
    parser.add_argument("--connections", type=int, default=0)
    parser.add_argument("--owner-pid", type=int, help="stop when this process is gone (a crashed run)")
    args = parser.parse_args(argv)
    load = Load(LoadSettings(server=args.server, port=args.port), args.connections)
    stopping = threading.Event()

    def stop_route(body: dict[str, Any]) -> dict[str, Any]:
        stopping.set()
        return {"stopping": True}

    def load_route(body: dict[str, Any]) -> dict[str, Any]:
        count = body.get("connections")
        if not isinstance(count, int):
            raise ControlError("connections: an integer")
        load.set_connections(count)
        return {"connections": count}

    def quiet_route(body: dict[str, Any]) -> dict[str, Any]:
        quiet = body.get("quiet")
        if not isinstance(quiet, bool):
            raise ControlError("quiet: true or false")
        load.set_quiet(quiet)
        return {"quiet": quiet}

    def recent_route(body: dict[str, Any]) -> dict[str, Any]:
        return load.recent(float(body.get("since", 0.0)))

    server = ControlServer(args.control, {
        ("GET", "/stats"): lambda body: load.stats(),
        ("POST", "/recent"): recent_route,
        ("POST", "/load"): load_route,
        ("POST", "/quiet"): quiet_route,
        ("POST", "/stop"): stop_route,
    })

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    load.start()
    server.start()
    print(f"load generator on {args.server}:{args.port}, control {args.control}", flush=True)
    try:
        while not stopping.wait(0.5):
            if args.owner_pid and not alive(args.owner_pid):
                break
    finally:
        load.stop()
        with contextlib.suppress(OSError):
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
