"""The local SLS's storage and queries, in SQLite (a file, or ``:memory:``).

Logstores, their index configs and the project's saved searches are kept as the JSON the API
took; logs as one row each (``__time__``, topic, source, tags and contents as JSON objects).

GetLogs: the search part (search.py) filters the logs in ``[from, to)``; without SQL the
matching logs come back as stored. With SQL, the matching logs become a table named ``log``
whose columns are typed by the index: ``__time__`` INTEGER, ``__topic__`` and ``__source__``
TEXT, and every key indexed with ``doc_value`` (what SLS needs to run SQL on a key) as
INTEGER (long), REAL (double) or TEXT; keys without an index value are NULL, as in SLS. The
statement runs under an authorizer that allows reading and nothing else, and an SQL without a
LIMIT returns at most 100 rows, as SLS's does.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gwlb_fleet.sls.setup import TOKENS
from gwlb_lab.sls.errors import ApiError
from gwlb_lab.sls.search import (
    Column,
    FullText,
    KeyType,
    QuerySyntaxError,
    UnknownKeyError,
    compile_search,
    parse_search,
    split_query,
    tokens_match,
)
from gwlb_lab.sls.wire import DecodedGroup, decode_log_group

# SLS's default delimiters for a text index: the same list sls-setup writes into indexes.
DEFAULT_TOKENS = list(TOKENS)
SQL_DEFAULT_LIMIT = 100
SQL_TIMEOUT = 30.0
_SAFE_KEY = re.compile(r"[^\"'\\\x00-\x1f]{1,128}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logstores (
    project TEXT NOT NULL, name TEXT NOT NULL, config TEXT NOT NULL,
    PRIMARY KEY (project, name));
CREATE TABLE IF NOT EXISTS indexes (
    project TEXT NOT NULL, logstore TEXT NOT NULL, config TEXT NOT NULL,
    PRIMARY KEY (project, logstore));
CREATE TABLE IF NOT EXISTS savedsearches (
    project TEXT NOT NULL, name TEXT NOT NULL, config TEXT NOT NULL,
    PRIMARY KEY (project, name));
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY, project TEXT NOT NULL, logstore TEXT NOT NULL,
    time INTEGER NOT NULL, time_ns INTEGER, topic TEXT NOT NULL, source TEXT NOT NULL,
    tags TEXT NOT NULL, contents TEXT NOT NULL, received REAL NOT NULL);
CREATE INDEX IF NOT EXISTS logs_by_time ON logs (project, logstore, time);
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY, project TEXT NOT NULL, logstore TEXT NOT NULL,
    body BLOB NOT NULL, logs INTEGER NOT NULL, received REAL NOT NULL);
"""


@dataclass(frozen=True)
class StoredLog:
    time: int
    time_ns: int | None
    topic: str
    source: str
    tags: dict[str, str]
    contents: dict[str, str]


@dataclass(frozen=True)
class QueryResult:
    rows: list[dict[str, str]]
    keys: list[str] | None  # the SQL's columns; None for raw logs
    has_sql: bool
    where_query: str
    agg_query: str
    processed_rows: int
    elapsed_ms: int


def _long(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return int(number) if number.is_integer() else None


def _double(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _match(value: Any, pattern: str, delimiters: str, case_sensitive: int) -> int:
    if value is None:
        return 0
    return int(tokens_match(str(value), pattern, delimiters, bool(case_sensitive)))


def _match_any(contents: str, pattern: str, delimiters: str, case_sensitive: int) -> int:
    values: dict[str, str] = json.loads(contents)
    return int(any(tokens_match(v, pattern, delimiters, bool(case_sensitive)) for v in values.values()))


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _json_path(key: str) -> str:
    return "'$.\"" + key + "\"'"


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


_LIMIT_AT_END = re.compile(r"\blimit\s+\d+(\s*,\s*\d+|\s+offset\s+\d+)?\s*$", re.IGNORECASE)
_WITH = re.compile(r"^\s*with(\s+recursive)?\s+", re.IGNORECASE)
_SELECT = re.compile(r"^\s*(select|with)\b", re.IGNORECASE)
_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}


# The SQL may read the logs (through the table ``log``) and its own subqueries, nothing else.
_PRIVATE_TABLES = frozenset(
    {
        "logstores",
        "indexes",
        "savedsearches",
        "sqlite_master",
        "sqlite_schema",
        "sqlite_temp_master",
        "sqlite_temp_schema",
        "sqlite_sequence",
    }
)


def _read_only(action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
    if action in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_READ and (arg1 or "").lower() not in _PRIVATE_TABLES:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


class Store:
    def __init__(self, path: str = ":memory:", sql_timeout: float = SQL_TIMEOUT) -> None:
        self.path = path
        self.sql_timeout = sql_timeout
        self._lock = threading.RLock()
        self._last_put = 0.0
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.create_function("sls_long", 1, _long, deterministic=True)
        self._db.create_function("sls_double", 1, _double, deterministic=True)
        self._db.create_function("sls_match", 4, _match, deterministic=True)
        self._db.create_function("sls_match_any", 4, _match_any, deterministic=True)

    def index_in_background(self, interval: float = 0.2, idle: float = 0.5) -> None:
        """Decode what was written once writes pause for ``idle`` seconds, as SLS indexes after
        it acknowledges: readers of the database file (tests, the lab's report) then see rows
        without asking first, and a steady stream of writes is not slowed by decoding."""
        self._indexing = threading.Event()

        def run() -> None:
            while not self._indexing.wait(interval):
                if time.monotonic() - self._last_put < idle:
                    continue
                try:
                    self._materialize()
                except sqlite3.ProgrammingError:
                    return  # closed between the wait and the read: nothing left to index

        threading.Thread(target=run, name="sls-indexer", daemon=True).start()

    def close(self) -> None:
        indexing = getattr(self, "_indexing", None)
        if indexing is not None:
            indexing.set()
        with self._lock:
            self._materialize()
            self._db.close()

    # --- configuration objects ---------------------------------------------------------------------

    def _get(self, table: str, key_column: str, project: str, name: str) -> dict[str, Any] | None:
        row = self._db.execute(
            f"SELECT config FROM {table} WHERE project = ? AND {key_column} = ?", (project, name)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def _put(self, table: str, key_column: str, project: str, name: str, config: Mapping[str, Any]) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO {table} (project, {key_column}, config) VALUES (?, ?, ?)",
            (project, name, json.dumps(config)),
        )

    def logstore(self, project: str, name: str) -> dict[str, Any]:
        with self._lock:
            config = self._get("logstores", "name", project, name)
        if config is None:
            raise ApiError(404, "LogStoreNotExist", f"logstore {name} does not exist")
        return config

    def create_logstore(self, project: str, name: str, config: Mapping[str, Any]) -> None:
        with self._lock:
            if self._get("logstores", "name", project, name) is not None:
                raise ApiError(400, "LogStoreAlreadyExist", f"logstore {name} already exists")
            self._put("logstores", "name", project, name, config)

    def update_logstore(self, project: str, name: str, config: Mapping[str, Any]) -> None:
        with self._lock:
            self.logstore(project, name)
            self._put("logstores", "name", project, name, config)

    def delete_logstore(self, project: str, name: str) -> None:
        with self._lock:
            self.logstore(project, name)
            self._db.execute("BEGIN")
            for table, column in (("logstores", "name"), ("indexes", "logstore"), ("logs", "logstore")):
                self._db.execute(f"DELETE FROM {table} WHERE project = ? AND {column} = ?", (project, name))
            self._db.execute("COMMIT")

    def logstores(self, project: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name FROM logstores WHERE project = ? ORDER BY name", (project,)
            ).fetchall()
        return [r[0] for r in rows]

    def index(self, project: str, logstore: str) -> dict[str, Any] | None:
        with self._lock:
            self.logstore(project, logstore)
            return self._get("indexes", "logstore", project, logstore)

    def set_index(self, project: str, logstore: str, config: Mapping[str, Any], create: bool) -> None:
        with self._lock:
            exists = self.index(project, logstore) is not None
            if create and exists:
                raise ApiError(400, "IndexAlreadyExist", f"log store {logstore} index already exists")
            if not create and not exists:
                raise ApiError(404, "IndexConfigNotExist", "logstore without index config")
            self._put("indexes", "logstore", project, logstore, config)

    def delete_index(self, project: str, logstore: str) -> None:
        with self._lock:
            if self.index(project, logstore) is None:
                raise ApiError(404, "IndexConfigNotExist", "logstore without index config")
            self._db.execute("DELETE FROM indexes WHERE project = ? AND logstore = ?", (project, logstore))

    def savedsearch(self, project: str, name: str) -> dict[str, Any]:
        with self._lock:
            config = self._get("savedsearches", "name", project, name)
        if config is None:
            raise ApiError(404, "SavedSearchNotExist", "specified savedsearch does not exist")
        return config

    def set_savedsearch(self, project: str, name: str, config: Mapping[str, Any], create: bool) -> None:
        with self._lock:
            exists = self._get("savedsearches", "name", project, name) is not None
            if create and exists:
                raise ApiError(400, "SavedSearchAlreadyExist", f"savedsearch {name} already exists")
            if not create and not exists:
                raise ApiError(404, "SavedSearchNotExist", "specified savedsearch does not exist")
            self._put("savedsearches", "name", project, name, config)

    def delete_savedsearch(self, project: str, name: str) -> None:
        with self._lock:
            self.savedsearch(project, name)
            self._db.execute("DELETE FROM savedsearches WHERE project = ? AND name = ?", (project, name))

    def savedsearches(self, project: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT config FROM savedsearches WHERE project = ? ORDER BY name", (project,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    # --- logs ----------------------------------------------------------------------------------------

    def put_raw(self, project: str, logstore: str, raw_log_group: bytes, logs: int) -> None:
        """Keep a checked LogGroup as it came; it becomes rows when the logs are first read."""
        self._last_put = time.monotonic()
        with self._lock:
            self.logstore(project, logstore)
            self._db.execute(
                "INSERT INTO pending (project, logstore, body, logs, received) VALUES (?, ?, ?, ?, ?)",
                (project, logstore, raw_log_group, logs, time.time()),
            )

    def stored(self) -> int:
        """Logs accepted so far, decoded or not (cheap: for the stats endpoint)."""
        with self._lock:
            rows = self._db.execute("SELECT count(*) FROM logs").fetchone()[0]
            waiting = self._db.execute("SELECT coalesce(sum(logs), 0) FROM pending").fetchone()[0]
        return int(rows) + int(waiting)

    def _materialize(self) -> None:
        """Decode the groups written since the last read into rows, in arrival order."""
        with self._lock:
            pending = self._db.execute(
                "SELECT id, project, logstore, body, received FROM pending ORDER BY id"
            ).fetchall()
            for row_id, project, logstore, body, received in pending:
                self._insert(project, logstore, decode_log_group(body), received)
                self._db.execute("DELETE FROM pending WHERE id = ?", (row_id,))

    def put(self, project: str, logstore: str, group: DecodedGroup) -> int:
        with self._lock:
            self.logstore(project, logstore)
            self._materialize()
            return self._insert(project, logstore, group, time.time())

    def _insert(self, project: str, logstore: str, group: DecodedGroup, received: float) -> int:
        tags = json.dumps(dict(group.tags))
        rows = [
            (
                project,
                logstore,
                log.time,
                log.time_ns,
                group.topic,
                group.source,
                tags,
                json.dumps(dict(log.contents)),
                received,
            )
            for log in group.logs
        ]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO logs (project, logstore, time, time_ns, topic, source, tags, contents,"
                    " received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return len(rows)

    def logs(self, project: str, logstore: str) -> list[StoredLog]:
        """Every stored log of a logstore, in arrival order (for tests and the lab)."""
        self._materialize()
        with self._lock:
            rows = self._db.execute(
                "SELECT time, time_ns, topic, source, tags, contents FROM logs"
                " WHERE project = ? AND logstore = ? ORDER BY id",
                (project, logstore),
            ).fetchall()
        return [StoredLog(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5])) for r in rows]

    def count(self, project: str | None = None, logstore: str | None = None) -> int:
        sql, params = "SELECT count(*) FROM logs WHERE 1", []
        if project is not None:
            sql, params = sql + " AND project = ?", [project]
        if logstore is not None:
            sql, params = sql + " AND logstore = ?", [*params, logstore]
        self._materialize()
        with self._lock:
            return int(self._db.execute(sql, params).fetchone()[0])

    def clear_logs(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM pending")
            self._db.execute("DELETE FROM logs")

    # --- GetLogs -------------------------------------------------------------------------------------

    def query(
        self,
        project: str,
        logstore: str,
        from_time: int,
        to_time: int,
        query: str = "",
        line: int = 100,
        offset: int = 0,
        reverse: bool = False,
        topic: str | None = None,
    ) -> QueryResult:
        self._materialize()
        started = time.monotonic()
        if from_time >= to_time:
            raise ApiError(400, "InvalidTimeRange", "request time range is invalid")
        search_text, sql = split_query(query or "")
        try:
            node = parse_search(search_text)
        except QuerySyntaxError as exc:
            raise ApiError(400, "InvalidQueryString", f"query string is invalid: {exc}") from None
        with self._lock:
            index = self.index(project, logstore)
            if sql is not None and index is None:
                raise ApiError(400, "IndexConfigNotExist", "logstore without index config")
            columns = _index_columns(index)
            full_text = _full_text(index)

            def resolve(key: str) -> Column:
                column = columns.get(key)
                if column is not None:
                    return column
                if index is None and _SAFE_KEY.fullmatch(key):
                    return _column(key, {"type": "text"})  # no index: search reads any key
                raise UnknownKeyError(key)

            try:
                where, params = compile_search(node, resolve, full_text)
            except QuerySyntaxError as exc:
                raise ApiError(400, "InvalidQueryString", f"query string is invalid: {exc}") from None
            except UnknownKeyError as exc:
                raise ApiError(
                    400, "ParameterInvalid", f"key ({exc}) is not config as key value config"
                ) from None
            scope = "l.project = ? AND l.logstore = ? AND l.time >= ? AND l.time < ?"
            scope_params: list[object] = [project, logstore, from_time, to_time]
            if topic:
                scope += " AND l.topic = ?"
                scope_params.append(topic)
            processed = int(
                self._db.execute(f"SELECT count(*) FROM logs AS l WHERE {scope}", scope_params).fetchone()[0]
            )
            if sql is None:
                if not 0 <= line <= 100:
                    raise ApiError(400, "InvalidLine", "line is invalid: 0 to 100 logs a request")
                if offset < 0:
                    raise ApiError(400, "InvalidOffset", "offset is invalid")
                rows = self._db.execute(
                    "SELECT l.time, l.topic, l.source, l.tags, l.contents FROM logs AS l"
                    f" WHERE {scope} AND {where} ORDER BY l.time {'DESC' if reverse else 'ASC'}, l.id"
                    " LIMIT ? OFFSET ?",
                    [*scope_params, *params, line, offset],
                ).fetchall()
                return QueryResult(
                    rows=[_raw_row(*r) for r in rows],
                    keys=None,
                    has_sql=False,
                    where_query=search_text,
                    agg_query="",
                    processed_rows=processed,
                    elapsed_ms=int((time.monotonic() - started) * 1000),
                )
            names, values = self._run_sql(sql, columns, scope, scope_params, where, params)
        return QueryResult(
            rows=[{name: _text(v) for name, v in zip(names, row, strict=True)} for row in values],
            keys=names,
            has_sql=True,
            where_query=search_text,
            agg_query=sql,
            processed_rows=processed,
            elapsed_ms=int((time.monotonic() - started) * 1000),
        )

    def _run_sql(
        self,
        sql: str,
        columns: Mapping[str, Column],
        scope: str,
        scope_params: list[object],
        where: str,
        where_params: list[object],
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        statement = sql.strip().rstrip(";").strip()
        if not _SELECT.match(statement):
            raise ApiError(400, "ParameterInvalid", "only a SELECT statement may follow '|'")
        if _has_separator(statement):
            raise ApiError(400, "ParameterInvalid", "SQL: only one statement may follow '|'")
        analysed = [c for c in columns.values() if c.analysed and _mentioned(c.name, statement)]
        select = ", ".join(f"{c.expr} AS {quote_ident(c.name)}" for c in analysed) or "NULL AS _"
        cte = f"log AS MATERIALIZED (SELECT {select} FROM logs AS l WHERE {scope} AND {where})"
        with_clause = _WITH.match(statement)
        if with_clause:
            full = f"WITH{with_clause.group(1) or ''} {cte}, {statement[with_clause.end() :]}"
        else:
            full = f"WITH {cte} {statement}"
        if not _LIMIT_AT_END.search(statement):
            full = f"SELECT * FROM ({full}) LIMIT {SQL_DEFAULT_LIMIT}"
        deadline = time.monotonic() + self.sql_timeout
        self._db.set_authorizer(_read_only)
        self._db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            cursor = self._db.execute(full, [*scope_params, *where_params])
            names = [d[0] for d in cursor.description or ()]
            return names, cursor.fetchall()
        except sqlite3.Warning as exc:  # e.g. more than one statement
            raise ApiError(400, "ParameterInvalid", f"SQL: {exc}") from None
        except sqlite3.Error as exc:
            raise ApiError(
                400, "ParameterInvalid", _explain_sql_error(exc, columns, self.sql_timeout)
            ) from None
        finally:
            self._db.set_authorizer(None)
            self._db.set_progress_handler(None, 0)


def _has_separator(sql: str) -> bool:
    """A ';' outside quotes and comments: more than one statement."""
    quote = ""
    i = 0
    while i < len(sql):
        ch = sql[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = len(sql) if end < 0 else end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = len(sql) if end < 0 else end + 1
        elif ch == ";":
            return True
        i += 1
    return False


def _mentioned(name: str, sql: str) -> bool:
    if name.startswith("__") and name in ("__time__", "__topic__", "__source__"):
        return True
    return "*" in sql or re.search(r"(?<![\w:])" + re.escape(name) + r"(?![\w:])", sql) is not None


def _explain_sql_error(exc: sqlite3.Error, columns: Mapping[str, Column], timeout: float) -> str:
    text = str(exc)
    if text == "interrupted":
        return f"SQL: the query ran longer than {timeout:g} s"
    if text == "not authorized" or re.fullmatch(r"access to \S+ is prohibited", text):
        return "SQL: only reading the table log is allowed"
    missing = re.match(r"no such column: (.+)", text)
    if missing:
        name = missing.group(1).strip('"')
        column = columns.get(name)
        if column is not None and not column.analysed:
            return (
                f"SQL: column {name} cannot be resolved: its index has no doc_value (enable "
                "statistics on the key to use it in SQL)"
            )
        return f"SQL: column {name} cannot be resolved: the key is not in the index"
    return f"SQL: {text}"


def _raw_row(time_s: int, topic: str, source: str, tags: str, contents: str) -> dict[str, str]:
    row = {"__time__": str(time_s), "__source__": source, "__topic__": topic}
    row.update({f"__tag__:{k}": v for k, v in json.loads(tags).items()})
    row.update(json.loads(contents))
    return row


def _column(key: str, config: Mapping[str, Any]) -> Column:
    given = config.get("type")
    kind: KeyType = "long" if given == "long" else "double" if given == "double" else "text"
    if key.startswith("__tag__:"):
        value = f"json_extract(l.tags, {_json_path(key[len('__tag__:') :])})"
    else:
        value = f"json_extract(l.contents, {_json_path(key)})"
    expr = {"long": f"sls_long({value})", "double": f"sls_double({value})"}.get(kind, value)
    tokens: Iterable[str] = config.get("token") or DEFAULT_TOKENS
    return Column(
        name=key,
        expr=expr,
        type=kind,
        delimiters="".join(tokens),
        case_sensitive=bool(config.get("caseSensitive", False)),
        analysed=bool(config.get("doc_value", False)),
    )


_BUILT_IN = {
    "__time__": Column("__time__", "l.time", "long", ""),
    "__topic__": Column("__topic__", "l.topic", "text", "".join(DEFAULT_TOKENS)),
    "__source__": Column("__source__", "l.source", "text", "".join(DEFAULT_TOKENS)),
}


def _index_columns(index: Mapping[str, Any] | None) -> dict[str, Column]:
    columns = dict(_BUILT_IN)
    for key, config in ((index or {}).get("keys") or {}).items():
        if _SAFE_KEY.fullmatch(key) and key not in _BUILT_IN:
            columns[key] = _column(key, config)
    return columns


def _full_text(index: Mapping[str, Any] | None) -> FullText | None:
    if index is None:
        return FullText("l.contents", "".join(DEFAULT_TOKENS))
    line = index.get("line")
    if not line:
        return None
    return FullText(
        "l.contents",
        "".join(line.get("token") or DEFAULT_TOKENS),
        bool(line.get("caseSensitive", False)),
    )
