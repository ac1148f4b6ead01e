"""JSON over HTTP on a Unix socket: how the lab's runner talks to the processes it starts.

A filesystem socket works across network namespaces (the cloud process runs in the gwlb
namespace, the load generator in the client's, the runner in none of them) and needs no port.
Routes are ``(METHOD, PATH) -> handler(body) -> JSON-able``; a handler raising ``ControlError``
answers 400 with its message, anything else 500.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

log = logging.getLogger("gwlb_lab.control")

Route = Callable[[dict[str, Any]], Any]
MAX_BODY = 1 << 20


class ControlError(Exception):
    """A request that cannot be done (an unknown appliance, a bad value): answered 400."""


class ControlServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, routes: Mapping[tuple[str, str], Route]) -> None:
        self.path = path
        self.routes = dict(routes)
        path.unlink(missing_ok=True)
        super().__init__(str(path), _Handler)
        path.chmod(0o600)
        self._thread: threading.Thread | None = None

    def start(self) -> ControlServer:
        self._thread = threading.Thread(target=self.serve_forever, args=(0.2,), name="control",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.path.unlink(missing_ok=True)


class _Handler(BaseHTTPRequestHandler):
    server: ControlServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        route = self.server.routes.get((self.command, self.path.split("?", 1)[0]))
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._reply(413, {"error": "body too large"})
            return
        raw = self.rfile.read(length) if length else b""
        if route is None:
            paths = sorted(f"{m} {p}" for m, p in self.server.routes)
            self._reply(404, {"error": f"no {self.command} {self.path}", "routes": paths})
            return
        try:
            body = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ControlError("the body must be a JSON object")
            self._reply(200, route(body))
        except (ControlError, ValueError) as exc:
            self._reply(400, {"error": str(exc)})
        except Exception as exc:
            log.exception("control request failed", extra={"path": self.path})
            self._reply(500, {"error": f"{type(exc).__name__}: {exc}"})

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("lab", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def call(path: Path, method: str, route: str, body: Mapping[str, Any] | None = None,
         timeout: float = 10.0) -> Any:
    """One request; the JSON answer. Raises ControlError for a 4xx/5xx answer and OSError when
    nothing answers on ``path``."""
    connection = _UnixConnection(str(path), timeout)
    try:
        data = json.dumps(dict(body)).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        connection.request(method, route, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    except http.client.HTTPException as exc:
        raise OSError(f"{path}: {exc}") from exc
    finally:
        connection.close()
    answer = json.loads(raw) if raw else None
    if response.status >= 400:
        error = answer.get("error") if isinstance(answer, dict) else raw.decode(errors="replace")
        raise ControlError(f"{method} {route}: {error}")
    return answer
