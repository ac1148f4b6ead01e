"""The PAN-OS log intake: an HTTP request in, records in the flow logstore, an HTTP answer out.

FC's HTTP trigger hands a built-in runtime the request as a JSON event (``version``, ``rawPath``,
``headers``, ``body``, ``isBase64Encoded``, ``requestContext``: F-FCT-9) and turns the handler's
return value (``statusCode``, ``headers``, ``body``, ``isBase64Encoded``) into the HTTP answer.

The trigger is anonymous at FC's layer (PAN-OS cannot sign FC requests); this function
authenticates: the header named by PANLOGS_AUTH_HEADER must hold the token kept in KMS Secrets
Manager (PANLOGS_TOKEN_SECRET, read through SecretsPort and cached: F-KMS-1, F-KMS-4), compared
with ``hmac.compare_digest``. A token that does not match gets the value read anew at most once a
minute (a rotated secret), never once per request. The answer to a missing or wrong token is 401
with no word on why; the token is never logged.

What is answered, and why (PAN-OS resends what was not answered 2xx: SAFE reading, F-PANLOG-6):

- 200: every record of the body is in SLS. Body: ``{"records": n}``.
- 400: a log that does not parse; the body names the field (PAN-OS's name), the value and the
  line. All or nothing: nothing of the request is written, so a request is never half taken.
- 401: no or a wrong token. 404: another path. 405: not POST. 413: a body over
  PANLOGS_MAX_BODY_BYTES.
- 503: SLS did not take the records (after the bounded retries of ``sls.flowwriter``): the sender
  keeps the logs and sends them again. Counted in the structured log: one line at level error
  with ``panlogs_write_failures`` = 1 and ``records_not_written`` = n (the function logstore,
  FC's logConfig, holds it; an SLS alarm can count it). Never 2xx for records not written.
- 500: anything else (a configuration error, KMS unreachable).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gwlb_fleet import logs
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import FleetError, TransientError
from gwlb_fleet.panos.panlogs import INTAKE_PATH, PanLogError, parse_body

if TYPE_CHECKING:
    from gwlb_fleet.app import App

log = logging.getLogger("gwlb_fleet.intake")

TOKEN_REFRESH_INTERVAL_S = 60.0  # a wrong token re-reads the secret at most this often
WRITE_FAILURE_KEY = "panlogs_write_failures"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # keys lower-cased: FC capitalises them (F-FCT-9), HTTP ignores case
    body: bytes
    source_ip: str = ""
    request_id: str = ""

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: dict[str, Any]

    def to_fc(self) -> dict[str, Any]:
        """The built-in runtime's response struct (F-FCT-9)."""
        return {
            "statusCode": self.status,
            "headers": {"Content-Type": "application/json"},
            "isBase64Encoded": False,
            "body": json.dumps(self.body, separators=(",", ":")),
        }


class BadRequest(Exception):
    """The FC event is not an HTTP trigger's request (not something a sender can fix)."""


def parse_http_event(raw: bytes | str | Mapping[str, Any]) -> HttpRequest:
    """The HTTP trigger's event (F-FCT-9) as an HttpRequest."""
    try:
        event = json.loads(raw) if isinstance(raw, bytes | str) else raw
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"not an HTTP trigger event: {exc}") from None
    if not isinstance(event, Mapping):
        raise BadRequest("not an HTTP trigger event: not a JSON object")
    context = event.get("requestContext") or {}
    http = context.get("http") or {}
    body = event.get("body") or ""
    if not isinstance(body, str):
        raise BadRequest("not an HTTP trigger event: body is not a string")
    if event.get("isBase64Encoded"):
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("isBase64Encoded but the body is not base64") from None
    else:
        data = body.encode()
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    return HttpRequest(
        method=str(http.get("method", "")).upper(),
        path=str(http.get("path") or event.get("rawPath") or ""),
        headers=headers,
        body=data,
        source_ip=str(http.get("sourceIp", "")),
        request_id=str(context.get("requestId", "")),
    )


class TokenCheck:
    """Is the request's token the one in KMS? Constant-time; a mismatch re-reads the secret at
    most once per TOKEN_REFRESH_INTERVAL_S (a rotation), so bad requests cannot flood KMS."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last_refresh = float("-inf")
        self._lock = threading.Lock()

    def accepts(self, app: App, presented: str, deadline: Deadline) -> bool:
        name = app.settings.panlogs_token_secret
        if not presented or not name:
            return False
        if _same(presented, app.secrets.get(name, deadline)):
            return True
        with self._lock:
            if self._clock() - self._last_refresh < TOKEN_REFRESH_INTERVAL_S:
                return False
            self._last_refresh = self._clock()
        return _same(presented, app.secrets.refresh(name, deadline))


def _same(presented: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())


_tokens = TokenCheck()


def handle(
    request: HttpRequest, app: App, deadline: Deadline, tokens: TokenCheck | None = None
) -> HttpResponse:
    """Authenticate, parse every log, write them all, answer (see the module's docstring).
    ``tokens``: the process's TokenCheck unless given."""
    tokens = tokens or _tokens
    if request.path.rstrip("/") != INTAKE_PATH:
        return HttpResponse(404, {"error": f"not found; logs go to {INTAKE_PATH}"})
    if request.method != "POST":
        return HttpResponse(405, {"error": "POST logs"})
    if not tokens.accepts(app, request.header(app.settings.panlogs_auth_header), deadline):
        log.warning("refused a request without the intake's token", extra={"source_ip": request.source_ip})
        return HttpResponse(401, {"error": "unauthorized"})
    limit = app.settings.panlogs_max_body_bytes
    if len(request.body) > limit:
        return HttpResponse(413, {"error": f"a body of {len(request.body)} bytes; at most {limit}"})
    try:
        text = request.body.decode("utf-8")
        records = parse_body(text, request.header("content-type"), emitted=app.clock())
    except UnicodeDecodeError as exc:
        return HttpResponse(400, {"error": f"the body is not UTF-8 (byte {exc.start})"})
    except PanLogError as exc:
        log.warning("refused a request with a bad log", extra={"field": exc.field, "line": exc.line})
        return HttpResponse(400, {"error": str(exc), "field": exc.field, "line": exc.line})
    if not records:
        return HttpResponse(200, {"records": 0})
    try:
        requests = app.flow_log.write(records, source=request.source_ip)
    except TransientError as exc:
        _count_write_failure(len(records), exc)
        return HttpResponse(503, {"error": "the logstore did not take the records; send them again"})
    except FleetError as exc:
        _count_write_failure(len(records), exc)
        return HttpResponse(500, {"error": "the logstore refused the records"})
    log.info("records written", extra={"records": len(records), "requests": requests})
    return HttpResponse(200, {"records": len(records)})


def _count_write_failure(records: int, exc: Exception) -> None:
    log.error(
        "records not written to SLS; the sender is told to send them again",
        extra={WRITE_FAILURE_KEY: 1, "records_not_written": records, "error": str(exc)},
    )


def fc_handler(function: str) -> Callable[[bytes, Any], dict[str, Any]]:
    """FC's handler for the intake: the HTTP event in, the response struct out."""

    def handler(raw: bytes, context: Any = None) -> dict[str, Any]:
        request_id = str(getattr(context, "request_id", "") or "local")
        with logs.bound(function=function, request_id=request_id):
            try:
                request = parse_http_event(raw)
            except BadRequest as exc:
                log.error("not an HTTP trigger event", extra={"error": str(exc)})
                return HttpResponse(400, {"error": str(exc)}).to_fc()
            app = _process_app()
            deadline = Deadline.from_fc_context(context, app.settings.function_timeout_s)
            try:
                return handle(request, app, deadline).to_fc()
            except Exception:
                # KMS unreachable, a setting missing: the sender retries; the cause is logged here.
                log.exception("the intake failed")
                return HttpResponse(500, {"error": "internal error"}).to_fc()

    handler.__name__ = f"{function}_handler"
    return handler


def _process_app() -> App:
    from gwlb_fleet.app import get_app

    app = get_app()
    app.refresh_credentials()  # F-FC-2, as in gwlb_fleet.handler
    return app
