"""The emulator's TCP and HTTP health probes against local servers on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gwlb_lab.gwlb.health import (
    CONNECT_FAIL,
    RECV_TIMEOUT,
    RESPONSE_MISMATCH,
    HttpProbe,
    TcpProbe,
)
from gwlb_lab.gwlb.members import Member

LOOPBACK = Member("local", "127.0.0.1")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = (200, b"ok\n") if self.path == "/health" else (503, b"draining\n")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_http_probe_passes_on_2xx_and_names_the_failures(http_port: int) -> None:
    assert HttpProbe(port=http_port, path="/health", timeout=2)(LOOPBACK) == (True, "http 200 ok", "")
    passed, reason, code = HttpProbe(port=http_port, path="/other", timeout=2)(LOOPBACK)
    assert (passed, reason, code) == (False, "http 503 draining", RESPONSE_MISMATCH)
    passed, _, code = HttpProbe(port=closed_port(), timeout=2)(LOOPBACK)
    assert (passed, code) == (False, CONNECT_FAIL)


def test_http_probe_times_out_on_a_silent_server() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel accepts the connection; nobody ever answers
        passed, reason, code = HttpProbe(port=silent.getsockname()[1], timeout=0.3)(LOOPBACK)
    assert (passed, code) == (False, RECV_TIMEOUT) and "no answer" in reason


def test_tcp_probe(http_port: int) -> None:
    assert TcpProbe(port=http_port, timeout=2)(LOOPBACK).passed
    passed, _, code = TcpProbe(port=closed_port(), timeout=2)(LOOPBACK)
    assert (passed, code) == (False, CONNECT_FAIL)
