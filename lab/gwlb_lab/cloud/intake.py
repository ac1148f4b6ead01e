"""Function Compute's HTTP trigger for the panlogs function, in the lab: an HTTPS endpoint that turns
each request into the FC 3.0 HTTP-trigger event (docs/api-facts.md F-FCT-9) and invokes the real
handler, ``gwlb_functions.panlogs.handler``, synchronously, answering with its ``statusCode``,
``headers`` and ``body``.

HTTPS, as the trigger's URL is (F-FCT-HTTP-1) and as set-up's HTTP server profile says
(``PANLOGS_INTAKE_URL`` takes only https): a certificate of the lab's own CA
(gwlb_lab.panorama.certs) naming the address the firewalls reach it at. The trigger is anonymous
(F-FCT-10): the function checks the token itself.

The event: ``version`` v1, ``rawPath`` and ``requestContext.http.path``, ``headers`` with their
keys first-letter upper-cased as FC 3.0 does (``x-gwlb-fleet-token`` -> ``X-Gwlb-Fleet-Token``),
several values of one header joined by commas, ``queryParameters``, the body as text, or base64
with ``isBase64Encoded`` when it is not UTF-8, and the request context (method, path, protocol,
source address, user agent, request id, time).
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import socketserver
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from gwlb_lab.panorama.certs import (
    Certificates,
    make_certificates,
    serve_in_thread,
    stop_serving,
    tls_server_context,
)

log = logging.getLogger("gwlb_lab.cloud.intake")

Handler = Callable[[bytes, Any], dict[str, Any]]
# The largest request body taken here; the function answers 413 past its own, smaller limit.
MAX_BODY = 16 << 20
LAB_ACCOUNT = "1234567890123456"


def fc_header_name(name: str) -> str:
    """FC 3.0's normalisation of a header key (F-FCT-9): each word's first letter upper-cased."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def http_trigger_event(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    request_id: str,
    domain: str,
    now: float,
) -> dict[str, Any]:
    """The event FC 3.0 gives a built-in runtime for one HTTP request (F-FCT-9)."""
    url = urlsplit(target)
    joined: dict[str, str] = {}
    for name, value in headers:
        key = fc_header_name(name)
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    try:
        text, binary = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, binary = base64.b64encode(body).decode(), True
    return {
        "version": "v1",
        "rawPath": url.path,
        "body": text,
        "isBase64Encoded": binary,
        "headers": joined,
        "queryParameters": dict(parse_qsl(url.query)),
        "requestContext": {
            "accountId": LAB_ACCOUNT,
            "domainName": domain,
            "domainPrefix": domain.split(".", 1)[0],
            "http": {
                "method": method,
                "path": unquote(url.path),
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": joined.get("User-Agent", ""),
            },
            "requestId": request_id,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "timeEpoch": str(int(now * 1000)),
        },
    }


@dataclass
class _InvocationContext:
    """What the intake reads of FC's context: the request id and the time left."""

    request_id: str
    timeout_s: float
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


class _TriggerServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], trigger: HttpTrigger, context: ssl.SSLContext) -> None:
        self.trigger = trigger
        self.context = context
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # no reverse DNS lookup of our own name
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(30)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.info("TLS handshake failed", extra={"client": client_address[0], "error": str(exc)})
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


class _RequestHandler(BaseHTTPRequestHandler):
    server: _TriggerServer
    protocol_version = "HTTP/1.1"  # keep-alive, as FC's gateway offers

    def log_message(self, format: str, *args: Any) -> None:
        pass  # every invocation is counted and the function logs its own lines

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._answer(413, {"Content-Type": "text/plain"}, b"request body too large\n")
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        status, headers, data = self.server.trigger.invoke(
            self.command, self.path, list(self.headers.items()), body, self.client_address[0]
        )
        self._answer(status, headers, data)

    do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = _any

    def _answer(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class HttpTrigger:
    """``HttpTrigger(handler, cert_dir, host, port).start()``; ``url`` is what PANLOGS_INTAKE_URL
    takes, ``ca_file`` what a client checks the certificate with, ``counts`` the answers by status."""

    def __init__(
        self,
        handler: Handler,
        cert_dir: Path,
        host: str,
        port: int = 0,
        timeout_s: float = 60.0,
        domain: str = "panlogs.lab.fcapp.run",
    ) -> None:
        self.handler = handler
        self.cert_dir = cert_dir
        self.address = (host, port)
        self.timeout_s = timeout_s
        self.domain = domain
        self.certificates: Certificates | None = None
        self.counts: collections.Counter[int] = collections.Counter()
        self._lock = threading.Lock()
        self._server: _TriggerServer | None = None
        self._thread: threading.Thread | None = None

    def invoke(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, source_ip: str
    ) -> tuple[int, dict[str, str], bytes]:
        """One request through the handler, as FC's gateway does; a handler that raises is a 502
        (FC answers a function error so; the intake itself answers 500 for its own errors)."""
        context = _InvocationContext(uuid.uuid4().hex, self.timeout_s)
        event = http_trigger_event(
            method, target, headers, body, source_ip, context.request_id, self.domain, time.time()
        )
        try:
            answer = self.handler(json.dumps(event).encode(), context)
            status, out_headers, data = _response(answer)
        except Exception as exc:  # a function error is the caller's 502, and logged
            log.exception("the function failed", extra={"request_id": context.request_id})
            status, out_headers, data = (
                502,
                {"Content-Type": "text/plain"},
                f"function error: {exc}\n".encode(),
            )
        with self._lock:
            self.counts[status] += 1
        return status, out_headers, data

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the HTTP trigger is not started")
        return self._server.server_port

    @property
    def url(self) -> str:
        return f"https://{self.address[0]}:{self.port}"

    @property
    def ca_file(self) -> Path:
        if self.certificates is None:
            raise RuntimeError("the HTTP trigger is not started")
        return self.certificates.ca_file

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {str(status): count for status, count in sorted(self.counts.items())}

    def start(self) -> HttpTrigger:
        self.certificates = make_certificates(self.cert_dir, hosts=(self.address[0], "127.0.0.1"))
        self._server = _TriggerServer(self.address, self, tls_server_context(self.certificates))
        self._thread = serve_in_thread(self._server, "fc-http-trigger")
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        stop_serving(server, self._thread)

    def __enter__(self) -> HttpTrigger:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _response(answer: Any) -> tuple[int, dict[str, str], bytes]:
    """The built-in runtime's response struct (F-FCT-9) as an HTTP answer."""
    if not isinstance(answer, dict) or not isinstance(answer.get("statusCode"), int):
        raise TypeError(
            f"the function returned {type(answer).__name__}, not a response struct with statusCode"
        )
    body = answer.get("body", "")
    if answer.get("isBase64Encoded"):
        data = base64.b64decode(str(body))
    else:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
    headers = {str(k): str(v) for k, v in (answer.get("headers") or {}).items()}
    return int(answer["statusCode"]), headers, data
