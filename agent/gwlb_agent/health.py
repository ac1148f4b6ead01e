"""The GWLB health-check endpoint, metrics and the local control calls.

``GET /health`` answers 200 only while the packet loop is beating (it wakes at least every poll
interval even without traffic), its sends succeed and, in tun mode, its probes come back through
the kernel; a stalled or dead loop turns it to 503
within ``stall_after`` seconds. While draining it answers 503 so that the GWLB sends new flows
elsewhere, while the data plane keeps forwarding the flows it already has.

Only the GWLB's networks, the configured extra networks and loopback get an answer; anyone
else's connection is closed unanswered. Draining is switched from loopback only.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socketserver
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gwlb_agent.metrics import Snapshot, render_prometheus

log = logging.getLogger("gwlb_agent.health")
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


class Liveness:
    """What the packet loop tells the health check."""

    def __init__(self, stall_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_after = stall_after
        self._clock = clock
        self.last_beat = 0.0
        self.running = False
        self.send_failing = False
        self.draining = False
        # Set by a data path that can test itself end to end (tun mode: a probe through the
        # kernel); returns why the path is broken, or None.
        self.path_problem: Callable[[float], str | None] | None = None

    def beat(self, now: float) -> None:
        self.last_beat = now

    def status(self) -> tuple[bool, str]:
        """(healthy, reason). Draining is reported unhealthy on purpose: it steers new flows away."""
        if not self.running:
            return False, "packet loop not running"
        now = self._clock()
        age = now - self.last_beat
        if age > self.stall_after:
            return False, f"packet loop stalled for {age:.2f}s"
        problem = self.path_problem(now) if self.path_problem is not None else None
        if problem is not None:
            return False, problem
        if self.send_failing:
            return False, "replies to the GWLB are failing"
        if self.draining:
            return False, "draining"
        return True, "forwarding"


class Control:
    """The agent behind the endpoint: what it reports and what it lets loopback switch."""

    def __init__(
        self,
        liveness: Liveness,
        snapshot: Callable[[], Snapshot],
        set_draining: Callable[[bool], None],
    ) -> None:
        self.liveness = liveness
        self.snapshot = snapshot
        self.set_draining = set_draining


class HealthServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        control: Control,
        allowed: list[ipaddress.IPv4Network],
    ) -> None:
        self.control = control
        self.allowed = [*allowed, LOOPBACK]
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host's own name up in DNS: on an appliance whose
        # resolver is unreachable that stalls start-up for the resolver's timeout. Skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        try:
            client = ipaddress.IPv4Address(client_address[0])
        except ValueError:
            return False
        return any(client in network for network in self.allowed)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="health", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: HealthServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        control = self.server.control
        if self.path == "/health":
            healthy, reason = control.liveness.status()
            status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
            self._reply(status, "text/plain", reason + "\n")
        elif self.path == "/metrics":
            self._reply(HTTPStatus.OK, "text/plain; version=0.0.4", render_prometheus(control.snapshot()))
        elif self.path == "/status":
            snapshot = control.snapshot()
            self._reply(HTTPStatus.OK, "application/json", json.dumps(snapshot.__dict__) + "\n")
        else:
            self._reply(HTTPStatus.NOT_FOUND, "text/plain", "not found\n")

    def do_POST(self) -> None:
        if self.path not in ("/drain", "/undrain"):
            self._reply(HTTPStatus.NOT_FOUND, "text/plain", "not found\n")
            return
        if ipaddress.IPv4Address(self.client_address[0]) not in LOOPBACK:
            self._reply(HTTPStatus.FORBIDDEN, "text/plain", "drain is switched from the appliance itself\n")
            return
        draining = self.path == "/drain"
        self.server.control.set_draining(draining)
        self._reply(HTTPStatus.OK, "text/plain", ("draining" if draining else "serving") + "\n")

    def _reply(self, status: HTTPStatus, content_type: str, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # A health check every second per GWLB node would flood the journal; log nothing here.
        pass
