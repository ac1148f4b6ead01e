"""An in-memory Tablestore at the SDK boundary: a stand-in for ``tablestore.OTSClient``.

It takes the same arguments as the client's methods (checked by the SDK's own request encoder, so
that a request the real client could not send fails here too), returns what they return (the
SDK's ``Row`` with attributes as (name, value, timestamp) tuples), evaluates row-existence and
column conditions the way the service does, and fails with the SDK's ``OTSServiceError`` carrying
the service's codes, HTTP statuses and messages.

Faults: ``fail_next`` (codes for the next calls, in order, refused before anything is done),
``lose_reply_next`` (codes for the next writes, raised *after* the write was applied: a timeout
whose request went through), and ``throttled`` (every call answers OTSServerBusy until cleared).
"""

from __future__ import annotations

import operator
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tablestore import (
    INF_MAX,
    INF_MIN,
    CapacityUnit,
    ColumnConditionType,
    ComparatorType,
    CompositeColumnCondition,
    Condition,
    Direction,
    LogicalOperator,
    OTSServiceError,
    Row,
    RowExistenceExpectation,
)
from tablestore.encoder import OTSProtoBufferEncoder

# code -> (HTTP status, message), as Tablestore answers them.
ERRORS: dict[str, tuple[int, str]] = {
    "OTSConditionCheckFail": (403, "Condition check failed."),
    "OTSServerBusy": (503, "Service is busy."),
    "OTSNotEnoughCapacityUnit": (403, "Remaining capacity unit is not enough."),
    "OTSQuotaExhausted": (403, "Too frequent table operations."),
    "OTSRowOperationConflict": (409, "Data is being modified by the other request."),
    "OTSTimeout": (503, "Operation timeout."),
    "OTSInternalServerError": (500, "Internal server error."),
    "OTSServerUnavailable": (503, "Server is not available."),
    "OTSPartitionUnavailable": (503, "The partition is not available."),
    "OTSTableNotReady": (404, "The table is not ready."),
    "OTSObjectNotExist": (404, "Requested table does not exist."),
    "OTSObjectAlreadyExist": (409, "Requested table already exists."),
    "OTSParameterInvalid": (400, "Invalid parameter."),
    "OTSAuthFailed": (403, "The AccessKey ID does not exist."),
}

COMPARATORS: dict[int, Callable[[Any, Any], Any]] = {
    ComparatorType.EQUAL: operator.eq,
    ComparatorType.NOT_EQUAL: operator.ne,
    ComparatorType.GREATER_THAN: operator.gt,
    ComparatorType.GREATER_EQUAL: operator.ge,
    ComparatorType.LESS_THAN: operator.lt,
    ComparatorType.LESS_EQUAL: operator.le,
}

RANGE_PAGE_ROWS = 5000  # the service returns at most this many rows per GetRange

_CONSUMED = CapacityUnit(1, 1)


def service_error(code: str, message: str = "") -> OTSServiceError:
    status, default = ERRORS[code]
    return OTSServiceError(status, code, message or default, "fake-request-id")


@dataclass
class _Table:
    name: str
    primary_key: list[tuple[str, str]]  # (name, type) in order
    time_to_live: int
    rows: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)


@dataclass
class FakeOtsClient:
    fail_next: list[str] = field(default_factory=list)
    lose_reply_next: list[str] = field(default_factory=list)
    throttled: bool = False
    range_page_rows: int = RANGE_PAGE_ROWS
    calls: list[str] = field(default_factory=list)  # API names, in order
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.tables: dict[str, _Table] = {}
        self._lock = threading.RLock()
        self._encoder = OTSProtoBufferEncoder("utf8", enable_native=False)

    # --- tables --------------------------------------------------------------------------------

    def list_table(self) -> tuple[str, ...]:
        with self._request("ListTable"):
            return tuple(sorted(self.tables))

    def create_table(
        self,
        table_meta: Any,
        table_options: Any,
        reserved_throughput: Any,
        secondary_indexes: Any = None,
        sse_spec: Any = None,
    ) -> None:
        with self._request("CreateTable", table_meta, table_options, reserved_throughput, sse_spec, []):
            if table_meta.table_name in self.tables:
                raise service_error("OTSObjectAlreadyExist")
            self.tables[table_meta.table_name] = _Table(
                table_meta.table_name, list(table_meta.schema_of_primary_key), table_options.time_to_live
            )

    # --- rows ----------------------------------------------------------------------------------

    def get_row(
        self,
        table_name: str,
        primary_key: list[tuple[str, Any]],
        columns_to_get: list[str] | None = None,
        column_filter: Any = None,
        max_version: int = 1,
        time_range: Any = None,
        start_column: Any = None,
        end_column: Any = None,
        token: Any = None,
        transaction_id: Any = None,
    ) -> tuple[CapacityUnit, Row | None, None]:
        args = (primary_key, columns_to_get, column_filter, max_version, time_range)
        with self._request("GetRow", table_name, *args, start_column, end_column, token, transaction_id):
            table = self._table(table_name)
            key = self._key(table, primary_key)
            stored = table.rows.get(key)
            return _CONSUMED, self._returned(table, key, stored, columns_to_get), None

    def put_row(
        self,
        table_name: str,
        row: Row,
        condition: Condition | None = None,
        return_type: Any = None,
        transaction_id: Any = None,
    ) -> tuple[CapacityUnit, None]:
        with self._request("PutRow", table_name, row, condition, return_type, transaction_id, write=True):
            table = self._table(table_name)
            key = self._key(table, row.primary_key)
            attributes = {name: value for name, value, *_ in row.attribute_columns or ()}
            if clash := set(attributes) & {name for name, _ in table.primary_key}:
                raise service_error(
                    "OTSParameterInvalid", f"Attribute column names {sorted(clash)} are primary keys."
                )
            self._check(condition, table.rows.get(key))
            table.rows[key] = attributes
            return _CONSUMED, None

    def delete_row(
        self,
        table_name: str,
        row: Row | list[tuple[str, Any]] | None = None,
        condition: Condition | None = None,
        return_type: Any = None,
        transaction_id: Any = None,
        **kwargs: Any,
    ) -> tuple[CapacityUnit, None]:
        primary_key = row.primary_key if isinstance(row, Row) else row or kwargs.get("primary_key")
        with self._request(
            "DeleteRow", table_name, primary_key, condition, return_type, transaction_id, write=True
        ):
            table = self._table(table_name)
            key = self._key(table, primary_key)
            self._check(condition, table.rows.get(key))
            table.rows.pop(key, None)
            return _CONSUMED, None

    def get_range(
        self,
        table_name: str,
        direction: str,
        inclusive_start_primary_key: list[tuple[str, Any]],
        exclusive_end_primary_key: list[tuple[str, Any]],
        columns_to_get: list[str] | None = None,
        limit: int | None = None,
        column_filter: Any = None,
        max_version: int = 1,
        time_range: Any = None,
        start_column: Any = None,
        end_column: Any = None,
        token: Any = None,
        transaction_id: Any = None,
    ) -> tuple[CapacityUnit, list[tuple[str, Any]] | None, list[Row], None]:
        args = (inclusive_start_primary_key, exclusive_end_primary_key, columns_to_get, limit, column_filter)
        rest = (max_version, time_range, start_column, end_column, token, transaction_id)
        with self._request("GetRange", table_name, direction, *args, *rest):
            if direction != Direction.FORWARD:
                raise NotImplementedError("the fake reads forward only")
            if column_filter is not None:
                raise NotImplementedError("the fake does not filter ranges")
            table = self._table(table_name)
            start = _sort_key(self._key(table, inclusive_start_primary_key, bounds=True))
            end = _sort_key(self._key(table, exclusive_end_primary_key, bounds=True))
            keys = sorted((k for k in table.rows if start <= _sort_key(k) < end), key=_sort_key)
            page = min(limit or self.range_page_rows, self.range_page_rows)
            rows = [self._returned(table, k, table.rows[k], columns_to_get) for k in keys[:page]]
            next_start = self._primary_key(table, keys[page]) if len(keys) > page else None
            return _CONSUMED, next_start, [r for r in rows if r is not None], None

    # --- the service's rules ----------------------------------------------------------------------

    class _Request:
        def __init__(self, client: FakeOtsClient, api: str, args: tuple[Any, ...], write: bool) -> None:
            self.client, self.api, self.args, self.write = client, api, args, write

        def __enter__(self) -> None:
            client = self.client
            client._encoder.encode_request(self.api, *self.args)  # what the real client would send
            client._lock.acquire()
            client.calls.append(self.api)
            if client.throttled:
                client._lock.release()
                raise service_error("OTSServerBusy")
            if client.fail_next:
                code = client.fail_next.pop(0)
                client._lock.release()
                raise service_error(code)

        def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
            client = self.client
            try:
                if kind is None and self.write and client.lose_reply_next:
                    raise service_error(client.lose_reply_next.pop(0))  # applied, but the caller can't know
            finally:
                client._lock.release()

    def _request(self, api: str, *args: Any, write: bool = False) -> FakeOtsClient._Request:
        return FakeOtsClient._Request(self, api, args, write)

    def _table(self, name: str) -> _Table:
        if name not in self.tables:
            raise service_error("OTSObjectNotExist")
        return self.tables[name]

    def _key(self, table: _Table, primary_key: Any, bounds: bool = False) -> tuple[Any, ...]:
        given = list(primary_key or ())
        names = [name for name, _ in table.primary_key]
        if [column[0] for column in given] != names:
            raise service_error(
                "OTSParameterInvalid",
                f"Validate PK name fail. Input: {[c[0] for c in given]}, Meta: {names}.",
            )
        key = []
        for (_, kind), (_, value, *_) in zip(table.primary_key, given, strict=True):
            if bounds and value in (INF_MIN, INF_MAX):
                key.append(value)
            elif not _is_type(value, kind):
                raise service_error(
                    "OTSParameterInvalid", f"Validate PK type fail. Input: {value!r}, Meta: {kind}."
                )
            else:
                key.append(value)
        return tuple(key)

    def _primary_key(self, table: _Table, key: tuple[Any, ...]) -> list[tuple[str, Any]]:
        return [(name, value) for (name, _), value in zip(table.primary_key, key, strict=True)]

    def _returned(
        self, table: _Table, key: tuple[Any, ...], stored: dict[str, Any] | None, columns: list[str] | None
    ) -> Row | None:
        if stored is None:
            return None
        wanted = set(columns) if columns else None
        primary = [(n, v) for n, v in self._primary_key(table, key) if wanted is None or n in wanted]
        timestamp = int(self.clock() * 1000)
        attributes = [(n, v, timestamp) for n, v in stored.items() if wanted is None or n in wanted]
        return Row(primary, attributes)

    def _check(self, condition: Condition | None, stored: dict[str, Any] | None) -> None:
        if condition is None:
            return
        expectation = condition.row_existence_expectation
        if expectation == RowExistenceExpectation.EXPECT_EXIST and stored is None:
            raise service_error("OTSConditionCheckFail")
        if expectation == RowExistenceExpectation.EXPECT_NOT_EXIST and stored is not None:
            raise service_error("OTSConditionCheckFail")
        column_condition = condition.column_condition
        if column_condition is not None and not _holds(column_condition, stored or {}):
            raise service_error("OTSConditionCheckFail")


def _holds(condition: Any, columns: dict[str, Any]) -> bool:
    """A column condition against a row's columns (a missing row has none)."""
    if condition.get_type() == ColumnConditionType.COMPOSITE_COLUMN_CONDITION:
        assert isinstance(condition, CompositeColumnCondition)
        results = [_holds(sub, columns) for sub in condition.sub_conditions]
        if condition.combinator == LogicalOperator.NOT:
            return not results[0]
        return all(results) if condition.combinator == LogicalOperator.AND else any(results)
    if condition.get_type() != ColumnConditionType.SINGLE_COLUMN_CONDITION:
        raise NotImplementedError("the fake evaluates single and composite column conditions")
    if condition.column_name not in columns:
        return bool(condition.pass_if_missing)
    stored, wanted = columns[condition.column_name], condition.column_value
    if _kind(stored) != _kind(wanted):
        return False  # the service compares values of one type only
    return bool(COMPARATORS[condition.comparator](stored, wanted))


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "INTEGER"
    if isinstance(value, float):
        return "DOUBLE"
    if isinstance(value, bytes | bytearray):
        return "BINARY"
    return "STRING"


def _is_type(value: Any, kind: str) -> bool:
    return _kind(value) == kind


def _sort_key(key: tuple[Any, ...]) -> tuple[tuple[int, Any], ...]:
    # INF_MIN sorts before every value and INF_MAX after (they are classes, not values).
    return tuple((0, 0) if v is INF_MIN else (2, 0) if v is INF_MAX else (1, v) for v in key)
