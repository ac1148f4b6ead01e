"""SLS (Log Service) adapter over ``aliyun-log-python-sdk``.

Two things the SDK does that a shipper cannot live with are changed here:

- ``LogClient._send`` retries every 5xx and connection error 10 times, a second apart, inside
  the call: a dead SLS would hold the caller for 10 s per batch. ``SingleAttemptLogClient``
  makes one attempt; the caller's own retry policy (tenacity, with backoff and jitter) decides.
- A request in flight cannot be given up from another thread. ``Sls.abort_requests`` shuts
  down the client's connections, so that a stopping shipper stops waiting for a slow SLS at
  once (the request fails with ``LogRequestError``; what SLS did with it is unknown).
- A client aimed at ``http://127.0.0.1:PORT`` prefixes the project to the host name and fails to
  resolve it; for an IP endpoint (the lab's local SLS) requests go to the IP itself.

Credentials come from configured keys or from the ECS instance's RAM role (the metadata
service), refreshed before they expire. Secrets are never logged: the config holds them as
``SecretStr`` and errors carry SLS's code and message only.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import weakref
from copy import copy
from dataclasses import dataclass
from typing import Any

import lz4.block
from aliyun.log import LogClient, LogException
from aliyun.log import logclient as _sdk_logclient
from aliyun.log.credentials import Credentials, CredentialsProvider, StaticCredentialsProvider
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

# Codes that a later attempt may get past. Everything else (Unauthorized, LogStoreNotExist,
# InvalidParameter, PostBodyTooLarge, ...) will fail the same way however often it is retried.
TRANSIENT_CODES = frozenset(
    {
        "InternalServerError",
        "RequestTimeout",
        "ServerBusy",
        "WriteQuotaExceed",
        "ShardWriteQuotaExceed",
        "ExceedQuota",
        "ProjectQpsLimitExceeded",
        "LogRequestError",
        "CredentialsUnavailable",
    }
)


class SlsError(Exception):
    def __init__(self, code: str, message: str, status: int = 0, request_id: str = "") -> None:
        super().__init__(f"{code}: {message}" + (f" (HTTP {status})" if status else ""))
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id

    @property
    def transient(self) -> bool:
        """Worth another attempt later: throttling, server errors, unreachable SLS."""
        return self.code in TRANSIENT_CODES or self.status >= 500 or self.status == 429

    @classmethod
    def from_log_exception(cls, exc: LogException) -> SlsError:
        # With no answer at all (connection refused, timeout) the SDK still says status 200.
        answered = bool(getattr(exc, "resp_header", None))
        status = (getattr(exc, "resp_status", 0) or 0) if answered else 0
        return cls(exc.get_error_code(), exc.get_error_message(), int(status), exc.get_request_id() or "")


class SlsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(min_length=1, description="e.g. cn-hangzhou-intranet.log.aliyuncs.com")
    project: str = Field(min_length=1)
    access_key_id: str | None = None
    access_key_secret: SecretStr | None = None
    security_token: SecretStr | None = None
    ram_role: str | None = Field(None, description="the ECS instance's RAM role, for keys from metadata")
    metadata_endpoint: str = "http://100.100.100.200"
    timeout: float = Field(10.0, gt=0, description="seconds per HTTP request")


class EcsRamRoleCredentials(CredentialsProvider):
    """STS credentials of the instance's RAM role, from the ECS metadata service."""

    REFRESH_BEFORE = 300.0  # seconds before expiry

    def __init__(
        self, role: str, metadata_endpoint: str = "http://100.100.100.200", timeout: float = 2.0
    ) -> None:
        self.url = f"{metadata_endpoint.rstrip('/')}/latest/meta-data/ram/security-credentials/{role}"
        self.timeout = timeout
        self._lock = threading.Lock()
        self._credentials: Credentials | None = None
        self._expires = 0.0

    def get_credentials(self) -> Credentials:
        with self._lock:
            if self._credentials is None or time.time() > self._expires - self.REFRESH_BEFORE:
                self._refresh()
            assert self._credentials is not None
            return self._credentials

    def _refresh(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as response:
                data = json.load(response)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise SlsError("CredentialsUnavailable", f"ECS metadata {self.url}: {exc}") from None
        if data.get("Code") not in (None, "Success"):
            raise SlsError("CredentialsUnavailable", f"ECS metadata answered {data.get('Code')}")
        self._credentials = Credentials(data["AccessKeyId"], data["AccessKeySecret"], data["SecurityToken"])
        self._expires = _parse_expiration(data.get("Expiration", ""))


def _parse_expiration(text: str) -> float:
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except ValueError:
        return time.time() + 900  # unknown: refresh in a quarter of an hour


class _AbortableAdapter(HTTPAdapter):
    """An HTTPAdapter that remembers the sockets its connections open, so that ``abort`` can
    cut short a request another thread is waiting on (the waiting call then fails)."""

    def __init__(self) -> None:
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._sockets_lock = threading.Lock()
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        remember = self._remember

        class Connection(HTTPConnection):
            def _new_conn(self) -> socket.socket:
                return remember(super()._new_conn())

        class SecureConnection(HTTPSConnection):
            def _new_conn(self) -> socket.socket:
                return remember(super()._new_conn())

        class Pool(HTTPConnectionPool):
            ConnectionCls = Connection

        class SecurePool(HTTPSConnectionPool):
            ConnectionCls = SecureConnection

        self.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": SecurePool}

    def _remember(self, sock: socket.socket) -> socket.socket:
        with self._sockets_lock:
            self._sockets.add(sock)
        return sock

    def abort(self) -> int:
        """Shut down every open connection; the number shut down."""
        with self._sockets_lock:
            sockets = list(self._sockets)
        aborted = 0
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                continue  # already closed: nothing was waiting on it
            aborted += 1
        return aborted


class SingleAttemptLogClient(LogClient):
    """A LogClient whose requests are tried once: retrying is the caller's decision."""

    def __init__(self, endpoint: str, credentials: CredentialsProvider, timeout: float) -> None:
        super().__init__(endpoint, credentials_provider=credentials, source="gwlb-fleet")
        sdk: Any = self  # the SDK's internals are not in its type stubs
        sdk._timeout = timeout
        self.connections = _AbortableAdapter()
        sdk._session.mount("http://", self.connections)
        sdk._session.mount("https://", self.connections)
        try:
            ipaddress.ip_address(sdk._logHost)
            sdk._isRowIp = True  # an IP endpoint: no "<project>." host prefix
        except ValueError:
            pass

    def _send(
        self,
        method: str,
        project: str,
        body: bytes | None,
        resource: str,
        params: dict[str, Any],
        headers: dict[str, str],
        respons_body_type: str = "json",
        compute_content_hash: bool = True,
    ) -> Any:
        # The SDK's own _send, less its 10-attempt loop.
        sdk: Any = self
        headers["Content-Length"] = str(len(body)) if body else "0"
        if not body:
            headers["x-log-bodyrawsize"] = "0"
        headers["x-log-apiversion"] = _sdk_logclient.API_VERSION  # type: ignore[attr-defined]
        if sdk._isRowIp or not project:
            url = sdk.http_type + sdk._endpoint
        else:
            url = sdk.http_type + project + "." + sdk._endpoint
        headers["Host"] = (project + "." + sdk._logHost) if project else sdk._logHost
        headers, params = copy(headers), copy(params)
        sdk._auth.sign_request(
            method, resource, params, headers, body, compute_content_hash=compute_content_hash
        )
        return sdk._sendRequest(method, url + resource, params, body, headers, respons_body_type)


def credentials_provider(config: SlsConfig) -> CredentialsProvider:
    if config.ram_role:
        return EcsRamRoleCredentials(config.ram_role, config.metadata_endpoint)
    return StaticCredentialsProvider(
        config.access_key_id or "",
        config.access_key_secret.get_secret_value() if config.access_key_secret else "",
        config.security_token.get_secret_value() if config.security_token else "",
    )


@dataclass(frozen=True)
class PutResult:
    request_id: str
    raw_bytes: int
    sent_bytes: int


class Sls:
    """The SLS operations gwlb-fleet uses, each one attempt, errors as SlsError."""

    def __init__(self, config: SlsConfig, client: SingleAttemptLogClient | None = None) -> None:
        self.config = config
        self.project = config.project
        self.client = client or SingleAttemptLogClient(
            config.endpoint, credentials_provider(config), config.timeout
        )

    def put_log_group(self, logstore: str, log_group: bytes) -> PutResult:
        """Write an encoded LogGroup (see gwlb_fleet.sls.loggroup), lz4-compressed as the SDK does."""
        compressed = lz4.block.compress(log_group, store_size=False)
        headers = {
            "x-log-bodyrawsize": str(len(log_group)),
            "Content-Type": "application/x-protobuf",
            "x-log-compresstype": "lz4",
        }
        resource = f"/logstores/{logstore}/shards/lb"
        try:
            _, response_headers = self.client._send("POST", self.project, compressed, resource, {}, headers)
        except LogException as exc:
            raise SlsError.from_log_exception(exc) from None
        except SlsError:
            raise
        return PutResult(response_headers.get("x-log-requestid", ""), len(log_group), len(compressed))

    def abort_requests(self) -> int:
        """Shut down the client's connections: a request in flight fails at once with
        ``LogRequestError`` (SLS may or may not have taken it). The number shut down."""
        return self.client.connections.abort()

    def get_logs(
        self, logstore: str, query: str, from_time: int, to_time: int, limit: int = 1000
    ) -> list[dict[str, str]]:
        """Run a search (and SQL) over [from_time, to_time) epoch seconds; rows as dicts.

        The SDK repeats a query SLS reports as incomplete (up to 5 times, 0.5 s apart): that is
        SLS still scanning, not an error, so it is left as it is for queries.
        """
        from aliyun.log import GetLogsRequest

        request = GetLogsRequest(self.project, logstore, from_time, to_time, query=query, line=limit)
        try:
            response = self.client.get_logs(request)
        except LogException as exc:
            raise SlsError.from_log_exception(exc) from None
        rows = [dict(log.get_contents()) for log in response.get_logs()]
        if "|" not in query:
            # Raw logs: the SDK moves __time__ and __source__ out of the contents; put them back.
            for row, log in zip(rows, response.get_logs(), strict=True):
                row["__time__"] = str(log.get_time())
                row["__source__"] = log.get_source()
        return rows

    def call(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        """Any other LogClient operation (set-up: logstores, indexes, saved searches)."""
        try:
            return getattr(self.client, operation)(*args, **kwargs)
        except LogException as exc:
            raise SlsError.from_log_exception(exc) from None
