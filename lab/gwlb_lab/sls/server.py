"""A local SLS endpoint: the real SDK's LogClient talks to it unchanged but for its endpoint.

``LocalSls`` runs it in-process (tests, benchmarks); ``python -m gwlb_lab.sls`` in the foreground
(the lab). Faults, settable at start and at run time:

    none     answer normally
    refuse   close each connection without an answer (the client sees a dropped connection)
    reset    read the request, then reset the connection (TCP RST) without an answer
    5xx      500 InternalServerError (or ``status`` 503: ServerBusy)
    slow     wait ``delay`` seconds, then answer normally
    hang     read the request and never answer (until the client or the endpoint goes)
    403      403 Unauthorized, as a RAM policy denying the call answers

None of these stores the request's logs but ``slow``, and ``slow`` only if its client is still
connected when the delay is over: a request whose client has gone (timed out, or cut off by a
stopping agent) is dropped unanswered, as a front end drops a request whose client hung up
before it was passed on. (Whether the real service can still store a request in the instant its
client goes is not documented; see agent/gwlb_agent/shipper.py.) Such requests are counted in
``/_lab/stats`` as ``abandoned``. "SLS down" (connection refused) is the endpoint not running:
stop it and start it again on the same port and database.

``times``: the fault applies to that many requests, then the endpoint is healthy again.

A small control API on the same port, never faulted and not signed::

    GET  /_lab/fault                  the current fault
    POST /_lab/fault {"mode": "slow", "delay": 2, "status": 500, "times": null}
    GET  /_lab/stats                  requests by operation / status / error code, logs stored
    POST /_lab/reset {"logs": false}  zero the stats, clear the fault (and the logs if asked)
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import socketserver
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from gwlb_lab.sls.api import Handled, Request, Response, SlsApi
from gwlb_lab.sls.errors import ApiError
from gwlb_lab.sls.store import Store

log = logging.getLogger("gwlb_lab.sls")

FAULT_MODES = ("none", "refuse", "reset", "5xx", "slow", "hang", "403")
MAX_BODY = 64 << 20  # refuse to read more than this; SLS's own limit is far lower


@dataclass(frozen=True)
class Fault:
    mode: str = "none"
    delay: float = 0.0  # slow: seconds before answering
    status: int = 500  # 5xx: 500 InternalServerError or 503 ServerBusy
    times: int | None = None  # only the next N requests; None: until changed

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"fault mode {self.mode!r} is not one of {', '.join(FAULT_MODES)}")
        if self.delay < 0:
            raise ValueError("fault delay must be >= 0")
        if self.status not in (500, 503):
            raise ValueError("a 5xx fault answers 500 or 503")
        if self.times is not None and self.times < 0:
            raise ValueError("fault times must be >= 0")

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Fault:
        unknown = set(value) - {"mode", "delay", "status", "times"}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        times = value.get("times")
        return cls(
            mode=str(value.get("mode", "none")),
            delay=float(value.get("delay", 0.0)),
            status=int(value.get("status", 500)),
            times=None if times is None else int(times),
        )


class _Faults:
    def __init__(self, fault: Fault) -> None:
        self._lock = threading.Lock()
        self._fault = fault

    def get(self) -> Fault:
        with self._lock:
            return self._fault

    def set(self, fault: Fault) -> None:
        with self._lock:
            self._fault = fault

    def take(self) -> Fault:
        """The fault for one request (counting down ``times``)."""
        with self._lock:
            fault = self._fault
            if fault.mode == "none" or fault.times is None:
                return fault
            if fault.times == 0:
                self._fault = Fault()
                return self._fault
            self._fault = Fault() if fault.times == 1 else replace(fault, times=fault.times - 1)
            return fault


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.operations: Counter[str] = Counter()
            self.statuses: Counter[int] = Counter()
            self.errors: Counter[str] = Counter()
            self.faults: Counter[str] = Counter()
            self.abandoned = 0  # requests whose client went before the answer: not stored
            self.logs = 0
            self.log_groups = 0
            self.raw_bytes = 0
            self.body_bytes = 0

    def fault(self, mode: str) -> None:
        with self._lock:
            self.requests += 1
            self.faults[mode] += 1

    def abandon(self) -> None:
        with self._lock:
            self.abandoned += 1

    def answered(
        self, operation: str, status: int, code: str = "", handled: Handled | None = None, body_bytes: int = 0
    ) -> None:
        with self._lock:
            self.requests += 1
            self.operations[operation or "Unrouted"] += 1
            self.statuses[status] += 1
            if code:
                self.errors[code] += 1
            if handled is not None and handled.operation == "PutLogs":
                self.logs += handled.logs
                self.log_groups += 1
                self.raw_bytes += handled.raw_bytes
                self.body_bytes += body_bytes

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "operations": dict(self.operations),
                "statuses": {str(k): v for k, v in self.statuses.items()},
                "errors": dict(self.errors),
                "faults": dict(self.faults),
                "abandoned": self.abandoned,
                "logs": self.logs,
                "log_groups": self.log_groups,
                "raw_bytes": self.raw_bytes,
                "body_bytes": self.body_bytes,
            }


def _request_id() -> str:
    return uuid.uuid4().hex[:24].upper()


class SlsHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: LocalSls) -> None:
        self.app = app
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks its own name up in DNS; nothing here needs the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def track(self, connection: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            (self._connections.add if alive else self._connections.discard)(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (timeouts, the refuse fault) is not the server's problem.
        log.debug("connection from %s ended badly", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: SlsHttpServer
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive connection is closed after this
    server_version = "lab-sls"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        # Headers and body go in one write, without waiting for the client's delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, alive=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, alive=False)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # --- the request ---------------------------------------------------------------------------------

    def _handle(self) -> None:
        app = self.server.app
        target = urlsplit(self.path)  # a proxied request carries an absolute URI
        path = unquote(target.path) or "/"
        if path.startswith("/_lab/"):
            self._control(path)
            return
        fault = app.faults.take()
        if fault.mode == "refuse":
            app.stats.fault("refuse")
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        request_id = _request_id()
        try:
            body = self._read_body()
        except ApiError as exc:
            self.close_connection = True
            app.stats.answered("", exc.status, exc.code)
            self._send(self._error(exc), request_id)
            return
        if fault.mode in ("slow", "hang"):
            app.stats.fault(fault.mode)
            if not self._client_stays(fault.delay if fault.mode == "slow" else None):
                app.stats.abandon()
                self.close_connection = True
                return
        elif fault.mode == "reset":
            app.stats.fault("reset")
            self.close_connection = True
            # Linger 0: close() sends RST, not FIN; the client sees "connection reset by peer".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # before socketserver's shutdown(SHUT_WR), which sends FIN
            return
        elif fault.mode == "5xx":
            app.stats.fault("5xx")
            busy = fault.status == 503
            error = ApiError(
                fault.status,
                "ServerBusy" if busy else "InternalServerError",
                "the server is busy (lab fault)" if busy else "internal server error (lab fault)",
            )
            self._send(self._error(error), request_id)
            return
        elif fault.mode == "403":
            app.stats.fault("403")
            error = ApiError(403, "Unauthorized", "denied by sts or ram (lab fault)")
            self._send(self._error(error), request_id)
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(
            method=self.command,
            path=path,
            params=dict(parse_qsl(target.query, keep_blank_values=True)),
            headers=headers,
            body=body,
        )
        try:
            handled = app.api.handle(request)
        except ApiError as exc:
            app.stats.answered(exc.operation, exc.status, exc.code)
            self._send(self._error(exc), request_id)
            return
        except Exception:
            log.exception("the local SLS failed a request", extra={"path": path})
            app.stats.answered("", 500, "InternalServerError")
            self._send(self._error(ApiError(500, "InternalServerError", "the local SLS failed")), request_id)
            return
        app.stats.answered(handled.operation, handled.response.status, handled=handled, body_bytes=len(body))
        self._send(handled.response, request_id)

    def _client_stays(self, seconds: float | None) -> bool:
        """Wait ``seconds`` (None: until the endpoint stops); False if the client hung up or
        the endpoint is stopping meanwhile."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            if self.server.stopping.is_set():
                return False
            wait = 0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic()))
            readable, _, _ = select.select([self.connection], [], [], wait)
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return False  # end of stream: the client closed or shut down
                except OSError:
                    return False  # reset
        return not self.server.stopping.is_set()

    def _read_body(self) -> bytes:
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            if self.headers.get("Transfer-Encoding"):
                raise ApiError(
                    411,
                    "MissingContentLength",
                    "Content-Length does not exist in http header when it is necessary.",
                )
            return b""
        try:
            length = int(length_text)
        except ValueError:
            raise ApiError(
                400, "InvalidContentLength", f"Content-Length {length_text!r} is invalid"
            ) from None
        if length > MAX_BODY:
            raise ApiError(413, "PostBodyTooLarge", f"body size {length} is too large")
        return self.rfile.read(length) if length > 0 else b""

    @staticmethod
    def _error(exc: ApiError) -> Response:
        return Response.json({"errorCode": exc.code, "errorMessage": exc.message}, status=exc.status)

    def _send(self, response: Response, request_id: str) -> None:
        try:
            self.send_response(response.status)
            self.send_header("x-log-requestid", request_id)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            buffer: list[bytes] = self._headers_buffer  # type: ignore[attr-defined]  # private: not in typeshed
            buffer.append(b"\r\n" + response.body)  # end_headers, with the body
            self.flush_headers()
        except OSError:
            self.close_connection = True  # the client went away (a timeout); nothing to tell it

    # --- the control API -------------------------------------------------------------------------------

    def _control(self, path: str) -> None:
        app = self.server.app
        try:
            body = self._read_body()
            value: Any = json.loads(body) if body else {}
            if self.command == "GET" and path == "/_lab/stats":
                answer: Any = app.snapshot()
            elif self.command == "GET" and path == "/_lab/fault":
                answer = asdict(app.fault)
            elif self.command == "POST" and path == "/_lab/fault":
                app.fault = Fault.from_json(value)
                answer = asdict(app.fault)
            elif self.command == "POST" and path == "/_lab/reset":
                app.reset(logs=bool(value.get("logs", False)))
                answer = app.snapshot()
            else:
                self._send(Response.json({"error": f"no {self.command} {path}"}, status=404), _request_id())
                return
        except (ValueError, TypeError, AttributeError, ApiError) as exc:
            self._send(Response.json({"error": str(exc)}, status=400), _request_id())
            return
        self._send(Response.json(answer), _request_id())


class LocalSls:
    """The endpoint in-process: ``with LocalSls(keys={"id": "secret"}) as sls: sls.endpoint``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        db: str = ":memory:",
        keys: Mapping[str, str] | None = None,
        projects: Collection[str] | None = None,
        fault: Fault | None = None,
    ) -> None:
        self.address = (host, port)
        self.store = Store(db)
        self.store.index_in_background()
        self.keys = dict(keys) if keys is not None else None
        self.api = SlsApi(self.store, self.keys, projects)
        self.stats = Stats()
        self.faults = _Faults(fault or Fault())
        self._server: SlsHttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def fault(self) -> Fault:
        return self.faults.get()

    @fault.setter
    def fault(self, value: Fault | str) -> None:
        self.faults.set(Fault(value) if isinstance(value, str) else value)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the local SLS is not started")
        return self._server.server_port

    @property
    def endpoint(self) -> str:
        """Where to reach it from this host (bound to every address: the loopback one)."""
        return f"http://{'127.0.0.1' if self.address[0] in ('', '0.0.0.0') else self.address[0]}:{self.port}"

    def start(self) -> LocalSls:
        self._server = SlsHttpServer(self.address, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="local-sls", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.store.close()

    def __enter__(self) -> LocalSls:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self, logs: bool = False) -> None:
        self.stats.reset()
        self.fault = Fault()
        if logs:
            self.store.clear_logs()

    def snapshot(self) -> dict[str, Any]:
        return {**self.stats.snapshot(), "stored": self.store.stored(), "fault": asdict(self.fault)}

    def credentials(self) -> tuple[str, str]:
        """A key pair the endpoint accepts (the first configured, or any when none are)."""
        if self.keys:
            return next(iter(self.keys.items()))
        return "lab-access-key", "lab-secret"
