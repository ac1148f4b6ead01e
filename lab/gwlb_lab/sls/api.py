"""The SLS REST operations the SDK's LogClient uses, over a Store.

Paths, methods, bodies and the JSON shapes of answers are those ``aliyun.log.LogClient``
sends and parses (logclient.py, getlogsresponse.py, logstore_config_response.py,
index_config_response.py, common_response.py). Every request is checked as SLS checks it
before anything is done: the project in the Host header (``<project>.<endpoint>``), the API
version, the signature (signature.py), ``Content-MD5`` when present, and each operation's body.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import lz4.block

from gwlb_lab.sls.errors import ApiError
from gwlb_lab.sls.signature import authenticate
from gwlb_lab.sls.store import QueryResult, Store
from gwlb_lab.sls.wire import check_put_body

API_VERSION = "0.6.0"
MAX_SAVEDSEARCHES = 100
MAX_SAVEDSEARCH_QUERY = 65535
_LOGSTORE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]")
_SAVEDSEARCH_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{1,62}")
_INDEX_KEY = re.compile(r"[^\"'\\\x00-\x1f]{1,128}")
_LOGSTORE_KEYS = {
    "logstoreName",
    "ttl",
    "shardCount",
    "enable_tracking",
    "autoSplit",
    "maxSplitShard",
    "appendMeta",
    "telemetryType",
    "hot_ttl",
    "encrypt_conf",
    "mode",
    "infrequentAccessTTL",
    "enableModify",
}


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # percent-decoded, without the query
    params: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        return cls(
            status, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})}
        )


@dataclass(frozen=True)
class Handled:
    operation: str
    project: str
    logstore: str
    response: Response
    logs: int = 0  # PutLogs: logs stored
    raw_bytes: int = 0


def project_of(host: str) -> str:
    """``<project>.<endpoint>`` -> project; "" when the Host names no project."""
    name = host.strip().lower()
    if name.startswith("["):
        return ""
    name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    try:
        ipaddress.ip_address(name)
        return ""
    except ValueError:
        pass
    label, dot, rest = name.partition(".")
    return label if dot and rest else ""


def _json_body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "InvalidContentType", f"Content-Type {content_type or '(none)'} is unsupported.")
    try:
        value = json.loads(request.body or b"null")
    except ValueError as exc:
        raise ApiError(400, "PostBodyInvalid", f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "PostBodyInvalid", "the body must be a JSON object")
    return value


def _int(value: Any, code: str, what: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool):
        raise ApiError(400, code, f"{what} {value!r} is not an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ApiError(400, code, f"{what} {value!r} is not an integer") from None
    if (low is not None and number < low) or (high is not None and number > high):
        raise ApiError(400, code, f"{what} {number} is out of range [{low}, {high}]")
    return number


def _bool(value: Any, code: str, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "false"):
        return text == "true"
    raise ApiError(400, code, f"{what} {value!r} is not true or false")


def _validate_index(config: Mapping[str, Any]) -> None:
    keys = config.get("keys")
    line = config.get("line")
    if keys is None and line is None:
        raise ApiError(400, "IndexInfoInvalid", "the index has neither line nor keys")
    if line is not None and (not isinstance(line, dict) or not isinstance(line.get("token"), list)):
        raise ApiError(400, "IndexInfoInvalid", "line must be an object with a token list")
    if keys is None:
        return
    if not isinstance(keys, dict):
        raise ApiError(400, "IndexInfoInvalid", "keys must be an object")
    for name, key in keys.items():
        if not _INDEX_KEY.fullmatch(name):
            raise ApiError(400, "IndexInfoInvalid", f"index key {name!r} is not a valid key name")
        if not isinstance(key, dict):
            raise ApiError(400, "IndexInfoInvalid", f"index key {name}: its config must be an object")
        kind = key.get("type", "text")
        if kind not in ("text", "long", "double", "json"):
            raise ApiError(
                400, "IndexInfoInvalid", f"index key {name}: type {kind!r} is not text/long/double/json"
            )
        if kind in ("text", "json") and not isinstance(key.get("token"), list):
            raise ApiError(400, "IndexInfoInvalid", f"index key {name}: a {kind} key needs a token list")
        if "doc_value" in key and not isinstance(key["doc_value"], bool):
            raise ApiError(400, "IndexInfoInvalid", f"index key {name}: doc_value must be true or false")


Operation = Callable[["SlsApi", Request, str, "re.Match[str]"], Handled]


class SlsApi:
    def __init__(
        self,
        store: Store,
        keys: Mapping[str, str] | None = None,
        projects: Collection[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keys = dict(keys) if keys is not None else None
        self.projects = set(projects) if projects is not None else None
        self.clock = clock

    def handle(self, request: Request) -> Handled:
        """Answer a request, or raise ApiError (its operation name is in ``.operation``)."""
        for method, pattern, name, operation in _ROUTES:
            if method != request.method:
                continue
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            if "type" in request.params and name == "GetLogStore":
                name, operation = "GetLogsV1", SlsApi.get_logs_v1
            try:
                project = self._check(request)
                return operation(self, request, project, match)
            except ApiError as exc:
                exc.operation = name
                raise
        raise ApiError(
            404,
            "RequestNotSupported",
            f"the local SLS endpoint does not implement {request.method} {request.path}",
        )

    def _check(self, request: Request) -> str:
        headers = request.headers
        project = project_of(headers.get("host", ""))
        if not project:
            raise ApiError(
                404, "ProjectNotExist", "the Host header names no project (expected <project>.<endpoint>)"
            )
        if self.projects is not None and project not in self.projects:
            raise ApiError(404, "ProjectNotExist", f"The Project does not exist : {project}")
        version = headers.get("x-log-apiversion")
        if version is None:
            raise ApiError(400, "MissingAPIVersion", "x-log-apiversion does not exist in http header.")
        if version != API_VERSION:
            raise ApiError(400, "InvalidAPIVersion", f"x-log-apiversion {version} is unsupported.")
        authenticate(request.method, request.path, request.params, headers, self.keys, self.clock())
        md5 = headers.get("content-md5")
        if md5 and request.body and hashlib.md5(request.body).hexdigest().upper() != md5.upper():
            raise ApiError(400, "InvalidContentMD5", "Content-MD5 does not match the body")
        return project

    # --- logstores --------------------------------------------------------------------------------

    def create_logstore(self, request: Request, project: str, match: re.Match[str]) -> Handled:
        body = _json_body(request)
        redundant = set(body) - _LOGSTORE_KEYS
        if redundant:
            raise ApiError(400, "LogStoreInfoInvalid", "redundant key exist in json")
        name = body.get("logstoreName")
        if not isinstance(name, str) or not _LOGSTORE_NAME.fullmatch(name):
            raise ApiError(400, "LogStoreInfoInvalid", f"logstore name {name!r} is invalid")
        now = int(self.clock())
        config = {
            "logstoreName": name,
            "ttl": _int(body.get("ttl"), "LogStoreInfoInvalid", "ttl", 1, 3650),
            "shardCount": _int(body.get("shardCount", 2), "LogStoreInfoInvalid", "shardCount", 1, 256),
            "enable_tracking": bool(body.get("enable_tracking", False)),
            "autoSplit": bool(body.get("autoSplit", True)),
            "maxSplitShard": _int(
                body.get("maxSplitShard", 64), "LogStoreInfoInvalid", "maxSplitShard", 1, 256
            ),
            "appendMeta": bool(body.get("appendMeta", False)),
            "telemetryType": str(body.get("telemetryType", "")),
            "mode": str(body.get("mode", "standard")),
            "createTime": now,
            "lastModifyTime": now,
        }
        if "hot_ttl" in body:
            config["hot_ttl"] = _int(body["hot_ttl"], "LogStoreInfoInvalid", "hot_ttl", 0, 3650)
        self.store.create_logstore(project, name, config)
        return Handled("CreateLogStore", project, name, Response())

    def get_logstore(self, request: Request, project: str, match: re.Match[str]) -> Handled:
        name = match["logstore"]
        return Handled("GetLogStore", project, name, Response.json(self.store.logstore(project, name)))

    def update_logstore(self, request: Request, project: str, match: re.Match[str]) -> Handled:
        name = match["logstore"]
        body = _json_body(request)
        redundant = set(body) - _LOGSTORE_KEYS
        if redundant:
            raise ApiError(400, "LogStoreInfoInvalid", "redundant key exist in json")
        if body.get("logstoreName", name) != name:
            raise ApiError(400, "LogStoreInfoInvalid", "logstoreName does not match the path")
        config = self.store.logstore(project, name)
        if "ttl" in body:
            config["ttl"] = _int(body["ttl"], "LogStoreInfoInvalid", "ttl", 1, 3650)
        for key in ("enable_tracking", "autoSplit", "appendMeta"):
            if key in body:
                config[key] = bool(body[key])
        if "maxSplitShard" in body:
            config["maxSplitShard"] = _int(
                body["maxSplitShard"], "LogStoreInfoInvalid", "maxSplitShard", 1, 256
            )
        if "hot_ttl" in body:
            config["hot_ttl"] = _int(body["hot_ttl"], "LogStoreInfoInvalid", "hot_ttl", 0, 3650)
        # shardCount changes only by splitting and merging shards: an update leaves it.
        config["lastModifyTime"] = int(self.clock())
        self.store.update_logstore(project, name, config)
        return Handled("UpdateLogStore", project, name, Response())

    def delete_logstore(self, request: Request, project: str, match: re.Match[str]) -> Handled:
        name = match["logstore"]
        self.store.delete_logstore(project, name)
        return Handled("DeleteLogStore", project, name, Response())

    def list_logstores(self, request: Request, project: str, match: re.Match[str]) -> Handled:
        offset = _int(request.params.get("offset", 0), "ParameterInvalid", "offset", 0)
        size = _int(request.params.get("size", 500), "ParameterInvalid", "size", 0, 500)
        pattern = request.params.get("logstoreName", "")
        names = [n for n in self.store.logstores(project) if pattern in n]
        page = names[offset : offset + size]
        return Handled(
            "ListLogStores",
            project,
            "",
            Response.json({"count": len(page), "total": len(names), "logstores": page}),
        )

    # --- indexes ----------------------------------------------------------------------------------

    def _set_index(self, request: Request, project: str, match: re.Match[str], create: bool) -> Handled:
        name = match["logstore"]
        config = _json_body(request)
        _validate_index(config)
        self.store.set_index(project, name, {**config, "lastModifyTime": int(self.clock())}, create)
        return Handled("CreateIndex" if create else "UpdateIndex", project, name, Response())

    def create_index(self, request: Request, project: str, match: re.Match[str]) -> Handled:
        return self._set_index(request, project, match, create=True)

    def update_index(self, request: Request, project: str, match: re.Match[str]) -> Handled:
        return self._set_index(request, project, match, create=False)

    def get_index(self, request: Request, project: str, match: re.Match[str]) -> Handled:
        name = match["logstore"]
        config = self.store.index(project, name)
        if config is None:
            raise ApiError(404, "IndexConfigNotExist", "logstore without index config")
        ttl = self.store.logstore(project, name)["ttl"]
        return Handled("GetIndex", project, name, Response.json({**config, "ttl": ttl}))

    def delete_index(self, request: Request, project: str, match: re.Match[str]) -> Handled:
        name = match["logstore"]
        self.store.delete_index(project, name)
        return Handled("DeleteIndex", project, name, Response())

    # --- saved searches -----------------------------------------------------------------------------

    @staticmethod
    def _savedsearch(body: Mapping[str, Any]) -> dict[str, str]:
        name = body.get("savedsearchName")
        if not isinstance(name, str) or not _SAVEDSEARCH_NAME.fullmatch(name):
            raise ApiError(400, "ParameterInvalid", f"savedsearchName {name!r} is invalid")
        query = body.get("searchQuery")
        if not isinstance(query, str) or not query:
            raise ApiError(400, "ParameterInvalid", "searchQuery is required")
        if len(query) >= MAX_SAVEDSEARCH_QUERY:
            raise ApiError(400, "PostBodyInvalid", "The savedsearch configuration is too long.")
        logstore = body.get("logstore")
        if not isinstance(logstore, str) or not logstore:
            raise ApiError(400, "ParameterInvalid", "logstore is required")
        return {
            "savedsearchName": name,
            "searchQuery": query,
            "logstore": logstore,
            "topic": str(body.get("topic", "")),
            "displayName": str(body.get("displayName", "") or name),
        }

    def create_savedsearch(self, request: Request, project: str, match: re.Match[str]) -> Handled:
        config = self._savedsearch(_json_body(request))
        if len(self.store.savedsearches(project)) >= MAX_SAVEDSEARCHES:
            raise ApiError(400, "ExceedQuota", "savedsearch quota exceed")
        self.store.set_savedsearch(project, config["savedsearchName"], config, create=True)
        return Handled("CreateSavedSearch", project, config["logstore"], Response())

    def update_savedsearch(self, request: Request, project: str, match: re.Match[str]) -> Handled:
        config = self._savedsearch(_json_body(request))
        if config["savedsearchName"] != match["name"]:
            raise ApiError(400, "ParameterInvalid", "savedsearchName does not match the path")
        self.store.set_savedsearch(project, match["name"], config, create=False)
        return Handled("UpdateSavedSearch", project, config["logstore"], Response())

    def get_savedsearch(self, request: Request, project: str, match: re.Match[str]) -> Handled:
        config = self.store.savedsearch(project, match["name"])
        return Handled("GetSavedSearch", project, config["logstore"], Response.json(config))

    def delete_savedsearch(self, request: Request, project: str, match: re.Match[str]) -> Handled:
        self.store.delete_savedsearch(project, match["name"])
        return Handled("DeleteSavedSearch", project, "", Response())

    def list_savedsearches(self, request: Request, project: str, match: re.Match[str]) -> Handled:
        offset = _int(request.params.get("offset", 0), "ParameterInvalid", "offset", 0)
        size = _int(request.params.get("size", 500), "ParameterInvalid", "size", 0, 500)
        every = self.store.savedsearches(project)
        page = every[offset : offset + size]
        body = {
            "count": len(page),
            "total": len(every),
            "savedsearches": [s["savedsearchName"] for s in page],
            "savedsearchItems": [
                {"savedsearchName": s["savedsearchName"], "displayName": s["displayName"]} for s in page
            ],
        }
        return Handled("ListSavedSearch", project, "", Response.json(body))

    # --- logs ---------------------------------------------------------------------------------------

    def put_logs(self, request: Request, project: str, match: re.Match[str]) -> Handled:
        name = match["logstore"]
        if "content-length" not in request.headers:
            raise ApiError(
                411,
                "MissingContentLength",
                "Content-Length does not exist in http header when it is necessary.",
            )
        self.store.logstore(project, name)
        raw, count = check_put_body(request.headers, request.body)
        self.store.put_raw(project, name, raw, count)
        return Handled("PutLogs", project, name, Response(), logs=count, raw_bytes=len(raw))

    def _query(self, project: str, logstore: str, params: Mapping[str, Any]) -> QueryResult:
        if "from" not in params or "to" not in params:
            raise ApiError(400, "InvalidTimeRange", "request time range is invalid: from and to are required")
        topic = params.get("topic")
        return self.store.query(
            project,
            logstore,
            _int(params["from"], "InvalidTimeRange", "from"),
            _int(params["to"], "InvalidTimeRange", "to"),
            query=str(params.get("query") or ""),
            line=_int(params.get("line", 100), "InvalidLine", "line"),
            offset=_int(params.get("offset", 0), "InvalidOffset", "offset"),
            reverse=_bool(params.get("reverse", False), "InvalidReverse", "reverse"),
            topic=str(topic) if topic else None,
        )

    def get_logs(self, request: Request, project: str, match: re.Match[str]) -> Handled:
        """GetLogs v2 (what LogClient.get_log sends): a JSON body, a JSON answer, lz4 if asked."""
        name = match["logstore"]
        result = self._query(project, name, _json_body(request))
        meta: dict[str, Any] = {
            "progress": "Complete",
            "count": len(result.rows),
            "processedRows": result.processed_rows,
            "elapsedMillisecond": result.elapsed_ms,
            "hasSQL": result.has_sql,
            "whereQuery": result.where_query,
            "aggQuery": result.agg_query,
            "cpuSec": 0.0,
            "cpuCores": 0,
            "mode": 0,
            "isAccurate": True,
            "powerSql": False,
        }
        if result.keys is not None:
            meta["keys"] = result.keys
        raw = json.dumps({"meta": meta, "data": result.rows}).encode()
        headers = {
            "Content-Type": "application/json",
            "x-log-progress": "Complete",
            "x-log-count": str(len(result.rows)),
        }
        accepted = {e.strip().lower() for e in request.headers.get("accept-encoding", "").split(",")}
        body = raw
        if "lz4" in accepted:
            body = lz4.block.compress(raw, store_size=False)
            headers.update({"x-log-compresstype": "lz4", "x-log-bodyrawsize": str(len(raw))})
        return Handled("GetLogs", project, name, Response(200, body, headers))

    def get_logs_v1(self, request: Request, project: str, match: re.Match[str]) -> Handled:
        """GetLogs v1: ``GET /logstores/<name>?type=log&...``, a JSON array, meta in headers."""
        name = match["logstore"]
        if request.params.get("type") != "log":
            raise ApiError(
                404,
                "RequestNotSupported",
                f"the local SLS endpoint answers type=log only, not {request.params.get('type')}",
            )
        result = self._query(project, name, request.params)
        headers = {
            "x-log-progress": "Complete",
            "x-log-count": str(len(result.rows)),
            "x-log-processed-rows": str(result.processed_rows),
            "x-log-elapsed-millisecond": str(result.elapsed_ms),
            "x-log-has-sql": str(result.has_sql).lower(),
            "x-log-where-query": result.where_query,
            "x-log-agg-query": result.agg_query,
        }
        return Handled("GetLogs", project, name, Response.json(result.rows, headers=headers))


_LS = r"/logstores/(?P<logstore>[^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str, Operation]] = [
    ("POST", re.compile(_LS + r"/shards/(?:lb|route)"), "PutLogs", SlsApi.put_logs),
    ("POST", re.compile(_LS + r"/logs"), "GetLogs", SlsApi.get_logs),
    ("POST", re.compile(r"/logstores"), "CreateLogStore", SlsApi.create_logstore),
    ("GET", re.compile(r"/logstores"), "ListLogStores", SlsApi.list_logstores),
    ("GET", re.compile(_LS), "GetLogStore", SlsApi.get_logstore),
    ("PUT", re.compile(_LS), "UpdateLogStore", SlsApi.update_logstore),
    ("DELETE", re.compile(_LS), "DeleteLogStore", SlsApi.delete_logstore),
    ("POST", re.compile(_LS + r"/index"), "CreateIndex", SlsApi.create_index),
    ("PUT", re.compile(_LS + r"/index"), "UpdateIndex", SlsApi.update_index),
    ("GET", re.compile(_LS + r"/index"), "GetIndex", SlsApi.get_index),
    ("DELETE", re.compile(_LS + r"/index"), "DeleteIndex", SlsApi.delete_index),
    ("POST", re.compile(r"/savedsearches"), "CreateSavedSearch", SlsApi.create_savedsearch),
    ("GET", re.compile(r"/savedsearches"), "ListSavedSearch", SlsApi.list_savedsearches),
    ("GET", re.compile(r"/savedsearches/(?P<name>[^/]+)"), "GetSavedSearch", SlsApi.get_savedsearch),
    ("PUT", re.compile(r"/savedsearches/(?P<name>[^/]+)"), "UpdateSavedSearch", SlsApi.update_savedsearch),
    ("DELETE", re.compile(r"/savedsearches/(?P<name>[^/]+)"), "DeleteSavedSearch", SlsApi.delete_savedsearch),
]
