"""A local Panorama over HTTPS: the XML API (and the licensing API) that pan-os-python and the
adapters talk to unchanged, backed by a FakePanorama.

``LocalPanorama`` runs it in-process (tests); ``python -m gwlb_lab.panorama`` in the foreground (the
lab). The certificate is made at start by a private CA (``ca_file``): clients verify it as they
would a real Panorama's. The TLS handshake happens in each connection's own thread, so that a
client that never finishes one cannot stall the others.

Faults are the FakePanorama's (``panorama.fail_next``, ``unreachable``, ``fail_commits``,
``sticky_licences``); an "unreachable" fault closes the connection without an answer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import socket
import socketserver
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from gwlb_fleet.panos.fakes import FakePanorama
from gwlb_lab.panorama.certs import (
    Certificates,
    make_certificates,
    serve_in_thread,
    stop_serving,
    tls_server_context,
)
from gwlb_lab.panorama.licensing import JsonAnswer, LicensingApi
from gwlb_lab.panorama.xmlapi import XmlAnswer, XmlApi

log = logging.getLogger("gwlb_lab.panorama")
MAX_BODY = 1 << 20


class PanoramaHttpsServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: LocalPanorama, context: ssl.SSLContext) -> None:
        self.app = app
        self.context = context
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # Skip HTTPServer's reverse DNS lookup of our own name: it can stall start-up.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.info("TLS handshake failed", extra={"client": client_address[0], "error": str(exc)})
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("request failed", extra={"client": client_address[0]})


class _Handler(BaseHTTPRequestHandler):
    server: PanoramaHttpsServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("request", extra={"line": format % args})

    def _handle(self) -> None:
        app = self.server.app
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._reply(413, "text/plain", b"too large\n")
            return
        body = self.rfile.read(length) if length else b""
        if app.licensing.handles(url.path):
            headers = {name.lower(): value for name, value in self.headers.items()}
            self._json(app.licensing.answer(self.command, url.path, url.query, headers, body))
        elif url.path in ("/api", "/api/"):
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            if self.command == "POST":
                params.update(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
            self._xml(app.xml_api.answer(params, self.headers.get("X-PAN-KEY")))
        else:
            self._reply(404, "text/plain", b"not found\n")

    def _xml(self, answer: XmlAnswer) -> None:
        if answer.drop:
            self._drop()
            return
        self._reply(answer.status, "application/xml; charset=UTF-8", answer.body.encode(), answer.reason)

    def _json(self, answer: JsonAnswer) -> None:
        if answer.drop:
            self._drop()
            return
        self._reply(answer.status, "application/json", json.dumps(answer.body).encode())

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _reply(self, status: int, content_type: str, data: bytes, reason: str = "") -> None:
        self.send_response(status, reason or None)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class LocalPanorama:
    """``with LocalPanorama(cert_dir) as pano: pano.host, pano.api_key, pano.ca_file``."""

    def __init__(
        self,
        cert_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        panorama: FakePanorama | None = None,
        api_key: str | None = None,
        users: dict[str, str] | None = None,
        licensing_client: tuple[str, str] = ("lab-client", "lab-client-secret"),
    ) -> None:
        self.address = (host, port)
        self.cert_dir = cert_dir
        self.panorama = panorama or FakePanorama()
        self.api_key = api_key or secrets.token_urlsafe(32)
        self.xml_api = XmlApi(self.panorama, self.api_key, dict(users or {"admin": "admin"}))
        self.licensing = LicensingApi(self.panorama, *licensing_client)
        self.certificates: Certificates | None = None
        self._server: PanoramaHttpsServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the local Panorama is not started")
        return self._server.server_port

    @property
    def host(self) -> str:
        """``ADDR:PORT``, what PANORAMA_HOST takes."""
        return f"{self.address[0]}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    @property
    def ca_file(self) -> Path:
        if self.certificates is None:
            raise RuntimeError("the local Panorama is not started")
        return self.certificates.ca_file

    def start(self) -> LocalPanorama:
        self.certificates = make_certificates(self.cert_dir, hosts=_names_for(self.address[0]))
        self._server = PanoramaHttpsServer(self.address, self, tls_server_context(self.certificates))
        self._thread = serve_in_thread(self._server, "local-panorama")
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        stop_serving(server, self._thread)

    def __enter__(self) -> LocalPanorama:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _names_for(host: str) -> tuple[str, ...]:
    names = [host, "127.0.0.1", "localhost"]
    if host in ("0.0.0.0", ""):
        names = ["127.0.0.1", "localhost", socket.gethostname()]
    return tuple(dict.fromkeys(names))
