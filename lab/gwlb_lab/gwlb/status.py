"""A small local HTTP endpoint: ``GET /status`` (counters, members), ``GET /flows``.

It binds inside the gwlb namespace (loopback by default); from outside use
``ip netns exec <gwlb namespace> curl -s 127.0.0.1:8081/status``.
"""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Report = Callable[[], Any]


class StatusServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], routes: dict[str, Report]) -> None:
        self.routes = routes
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks its own name up in DNS; nothing here needs the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="status", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: StatusServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        report = self.server.routes.get(self.path)
        if report is None:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no {self.path}",
                                               "paths": sorted(self.server.routes)})
            return
        self._reply(HTTPStatus.OK, report())

    def _reply(self, status: HTTPStatus, body: Any) -> None:
        data = (json.dumps(body, indent=1) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass
