"""A local Alibaba Cloud OpenAPI endpoint: the real Tea SDKs (GWLB, ESS, ECS, CloudMonitor, FC)
talk to it unchanged but for ``Config(endpoint="127.0.0.1:PORT", protocol="HTTP")``.

One port serves every product: the SDK names the action in ``x-acs-action`` and the product's API
version in ``x-acs-version``. Parameters come from the query string (ESS, ECS, CloudMonitor) and
a form body (GWLB); FC's InvokeFunction is a ROA call on its own path. Each action is answered
by the fakes (gwlb_fleet.alibaba.fakes.cloud.FakeCloud), so the endpoint keeps state like the cloud does and
the lab can run real flows against it. Errors are ``{"Code", "Message", "RequestId"}`` with the
service's HTTP status (4xx: the SDK raises ClientException, 5xx: ServerException); with
``retry_after_s`` set, throttling answers carry ``x-acs-retry-after`` in milliseconds, as the SDK
reads it (ThrottlingException, F-API-1).
Signatures are not checked.

Every request is recorded (``requests``): the contract tests assert on what the SDK really sent.
Faults are the fakes' own: ``cloud.ess.fail_next = ["Throttling"]``, ``cloud.gwlb.throttled = True``.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import socketserver
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from gwlb_fleet.alibaba.errors import ApiError, is_transient_code
from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_lab.api import cms, ecs, ess, fc, gwlb, kms, mns, privatelink, ram, vpc
from gwlb_lab.api.params import Params

log = logging.getLogger("gwlb_lab.api")

PRODUCTS: dict[str, ModuleType] = {
    module.VERSION: module for module in (gwlb, ess, ecs, cms, kms, mns, ram, vpc, privatelink)
}
MAX_BODY = 8 << 20


@dataclass(frozen=True)
class RecordedRequest:
    product: str
    action: str
    version: str
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int
    code: str = ""  # the error code answered, if any

    @property
    def params(self) -> dict[str, str]:
        return {**self.query, **self.form}

    @property
    def access_key_id(self) -> str:
        """The AccessKeyId the request was signed with (ACS3 ``Authorization: ... Credential=ID,``;
        RPC signature v1 ``AccessKeyId``): which credentials the SDK used."""
        found = re.search(r"Credential=([^,\s]+)", self.headers.get("authorization", ""))
        return found.group(1) if found else self.params.get("AccessKeyId", "")

    @property
    def security_token(self) -> str:
        return self.headers.get("x-acs-security-token", "") or self.params.get("SecurityToken", "")


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _request_id() -> str:
    return str(uuid.uuid4()).upper()


class LocalOpenApi:
    """The endpoint in-process: ``with LocalOpenApi() as api: api.endpoint``."""

    def __init__(
        self,
        cloud: FakeCloud | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        retry_after_s: float | None = None,
    ) -> None:
        self.cloud = cloud or FakeCloud()
        self.address = (host, port)
        self.retry_after_s = retry_after_s
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server: _OpenApiHttpServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> LocalOpenApi:
        self._server = _OpenApiHttpServer(self.address, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="lab-openapi", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> LocalOpenApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the local OpenAPI endpoint is not started")
        return int(self._server.server_port)

    @property
    def endpoint(self) -> str:
        """What a Tea Config takes: host and port, no scheme."""
        return f"{self.address[0]}:{self.port}"

    def env(self) -> dict[str, str]:
        """The settings (gwlb_fleet.settings) that point every adapter here."""
        return {
            "API_PROTOCOL": "http",
            **{
                f"{product}_ENDPOINT": self.endpoint
                for product in ("GWLB", "ESS", "ECS", "CMS", "FC", "KMS", "MNS", "RAM", "VPC", "PRIVATELINK")
            },
        }

    # --- what was asked --------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def recorded(self, action: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.action == action]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    # --- answering ---------------------------------------------------------------------------------------

    def answer(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Answer one request (no HTTP involved: the server below calls this)."""
        headers = {k.lower(): v for k, v in headers.items()}
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        form: dict[str, str] = {}
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = dict(parse_qsl(body.decode(), keep_blank_values=True))
        action, version = headers.get("x-acs-action", ""), headers.get("x-acs-version", "")
        name = fc.function_name(parts.path)
        product = fc.PRODUCT if name is not None else getattr(PRODUCTS.get(version), "PRODUCT", "")
        request_id = _request_id()
        try:
            answer = self._dispatch(product, action, name, {**query, **form}, headers, body, request_id)
            code = ""
        except ApiError as exc:
            answer, code = self._error(exc, request_id), exc.code
        except Exception:
            log.exception("the local OpenAPI endpoint failed a request", extra={"action": action})
            answer = self._error(
                ApiError(product or "openapi", "InternalError", "the lab endpoint failed"), request_id
            )
            code = "InternalError"
        record = RecordedRequest(
            product, action, version, method, parts.path, query, form, headers, body, answer.status, code
        )
        with self._lock:
            self._requests.append(record)
        return answer

    def _dispatch(
        self,
        product: str,
        action: str,
        function: str | None,
        params: dict[str, str],
        headers: Mapping[str, str],
        body: bytes,
        request_id: str,
    ) -> Answer:
        if function is not None:
            if action != "InvokeFunction":
                raise ApiError("fc", "InvalidAction.NotFound", f"{action} is not served on this path", 404)
            status = fc.invoke(self.cloud.fc, function, body, headers)
            return Answer(status, b"", {"x-fc-request-id": request_id, "Content-Type": "application/json"})
        module = PRODUCTS.get(headers.get("x-acs-version", ""))
        handler = module.HANDLERS.get(action) if module else None
        if module is None or handler is None:
            raise ApiError(
                product or "openapi", "InvalidAction.NotFound", f"Specified api {action!r} is not found.", 404
            )
        result: dict[str, Any] = handler(getattr(self.cloud, product), Params(product, params))
        return _json(200, {**result, "RequestId": request_id})

    def _error(self, exc: ApiError, request_id: str) -> Answer:
        answer = _json(exc.status, {"Code": exc.code, "Message": exc.message, "RequestId": request_id})
        if (
            self.retry_after_s
            and exc.code.startswith("Throttling")
            and is_transient_code(exc.service, exc.code)
        ):
            answer.headers["x-acs-retry-after"] = str(round(self.retry_after_s * 1000))  # F-API-1: ms
        return answer


def _json(status: int, value: Any) -> Answer:
    body = json.dumps(value, separators=(",", ":")).encode()
    return Answer(status, body, {"Content-Type": "application/json;charset=utf-8"})


class _OpenApiHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: LocalOpenApi) -> None:
        self.api = api
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks its own name up in DNS; nothing here needs the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended badly", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _OpenApiHttpServer
    protocol_version = "HTTP/1.1"
    timeout = 60
    server_version = "lab-openapi"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._send(_json(413, {"Code": "RequestEntityTooLarge", "Message": "body too large"}))
            return
        body = self.rfile.read(length) if length > 0 else b""
        self._send(self.server.api.answer(self.command, self.path, dict(self.headers.items()), body))

    def _send(self, answer: Answer) -> None:
        try:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)
        except OSError:
            self.close_connection = True  # the client went away (its timeout)
