"""The state store in Tablestore (OTS): the cloud's, built on conditional writes.

Tables, each named ``<prefix>_<name>``:

- ``instances``, primary key (scaling_group_id, instance_id): a group's records are one key
  range, so ``list_instances`` is a GetRange (paged), strongly consistent, scanning nothing else.
- ``instance_groups``, primary key (instance_id) -> scaling_group_id: ``get_instance`` knows only
  the instance id and this finds its row. A global secondary index would do the same but is
  eventually consistent: a read through it could return an old version right before a
  compare-and-set. An instance never changes group, so this mapping, written before the record,
  is always right.
- ``groups``, primary key (group_id); ``idempotency``, primary key (key), whose rows Tablestore
  deletes a week after their last write (TTL) — long after any retry.

Writes: creation is PutRow with ``EXPECT_NOT_EXIST``; compare-and-set is PutRow of the whole row
with ``EXPECT_EXIST`` and ``version == N``; ``begin`` is one PutRow with ``expires_at_ms <= now``
(a missing row passes), i.e. "new or expired".

Retries: the SDK's own policy is switched off (it would retry up to 20 times, 3 s apart, past
any deadline); ``gwlb_fleet.retry`` retries the allow-list below within ``call_budget_s``. A write
whose outcome is unknown (timeout, 5xx, network) may have been applied, and its retry would then
fail its own condition: every create and compare-and-set carries a random ``write_id``, and
when a condition fails after such an attempt the row is read back — if it holds our write_id, the
write was ours. (The other writes are idempotent as they are.)

The SDK logs every failed request at ERROR (expected condition failures included) and, at DEBUG,
request headers with the signature and the STS token: its logger is kept at CRITICAL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Protocol, TypeVar

import urllib3

from gwlb_fleet import retry
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import PermanentError, TransientError
from gwlb_fleet.settings import Settings
from gwlb_fleet.state.columns import from_columns, to_columns
from gwlb_fleet.state.records import (
    AlreadyExists,
    GroupRecord,
    IdempotencyRecord,
    InstanceRecord,
    VersionConflict,
)

# The SDK warns at import that its optional C++ codec is missing (the Python one is used): noise
# on every cold start.
for _codec in ("tablestore.encoder", "tablestore.decoder"):
    logging.getLogger(_codec).setLevel(logging.ERROR)

from tablestore import (  # noqa: E402
    INF_MAX,
    INF_MIN,
    CapacityUnit,
    ComparatorType,
    Condition,
    Direction,
    NoRetryPolicy,
    OTSClient,
    OTSClientError,
    OTSServiceError,
    ReservedThroughput,
    Row,
    RowExistenceExpectation,
    SingleColumnCondition,
    TableMeta,
    TableOptions,
)

RAM_ACTIONS: frozenset[str] = frozenset(
    {
        "ots:GetRow",
        "ots:PutRow",
        "ots:DeleteRow",
        "ots:GetRange",
        # create_tables(), the setup path
        "ots:ListTable",
        "ots:CreateTable",
    }
)

SDK_LOGGER = "tablestore-client"
CONDITION_CHECK_FAIL = "OTSConditionCheckFail"

# Refused before anything was done: safe to send again, and a later condition failure is real.
REFUSED_CODES = frozenset(
    {
        "OTSServerBusy",
        "OTSNotEnoughCapacityUnit",
        "OTSOperationThrottled",
        "OTSRowOperationConflict",
        "OTSOperationConflict",
        "OTSTableNotReady",
        "OTSPartitionUnavailable",
    }
)
# Worth another attempt, but the first may have been applied.
OUTCOME_UNKNOWN_CODES = frozenset({"OTSTimeout", "OTSInternalServerError", "OTSServerUnavailable"})
TRANSIENT_CODES = REFUSED_CODES | OUTCOME_UNKNOWN_CODES
TOO_FREQUENT = "Too frequent table operations."  # the one OTSQuotaExhausted that passes

IDEMPOTENCY_TTL_S = 7 * 24 * 3600
MAX_RANGE_PAGES = 1000  # x 5000 rows a page: far beyond any fleet
BEGIN_ATTEMPTS = 3

PrimaryKey = list[tuple[str, Any]]
T = TypeVar("T")


class OtsClient(Protocol):
    """The part of ``tablestore.OTSClient`` this store uses (gwlb_fleet.state.fakes fakes it)."""

    def list_table(self) -> Sequence[str]: ...

    def create_table(self, table_meta: Any, table_options: Any, reserved_throughput: Any) -> None: ...

    def get_row(self, table_name: str, primary_key: PrimaryKey, columns_to_get: Any = None) -> Any: ...

    def put_row(self, table_name: str, row: Any, condition: Any = None) -> Any: ...

    def delete_row(self, table_name: str, row: Any = None, condition: Any = None) -> Any: ...

    def get_range(
        self,
        table_name: str,
        direction: str,
        inclusive_start_primary_key: PrimaryKey,
        exclusive_end_primary_key: PrimaryKey,
        columns_to_get: Any = None,
        limit: int | None = None,
    ) -> Any: ...


class _ConditionFailed(Exception):
    pass


class TablestoreStateStore:
    def __init__(
        self,
        client: OtsClient,
        table_prefix: str = "gwlb_fleet",
        *,
        call_budget_s: float = 10.0,
        first_wait: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.instances = f"{table_prefix}_instances"
        self.instance_groups = f"{table_prefix}_instance_groups"
        self.groups = f"{table_prefix}_groups"
        self.idempotency = f"{table_prefix}_idempotency"
        # The port carries no deadline: each call's retries get this much time.
        self.call_budget_s = call_budget_s
        self.first_wait = first_wait
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings) -> TablestoreStateStore:
        if not settings.tablestore_instance:
            raise PermanentError(
                "TABLESTORE_INSTANCE is not set", code="MissingSetting", service="tablestore"
            )
        if not settings.access_key_id or settings.access_key_secret is None:
            raise PermanentError(
                "ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET are not set",
                code="MissingSetting",
                service="tablestore",
            )
        endpoint = settings.tablestore_endpoint or (
            f"{settings.tablestore_instance}.{settings.region}.ots.aliyuncs.com"
        )
        if "://" not in endpoint:
            endpoint = f"{settings.api_protocol}://{endpoint}"
        logging.getLogger(SDK_LOGGER).setLevel(logging.CRITICAL)
        client = OTSClient(
            endpoint,
            settings.access_key_id,
            settings.access_key_secret.get_secret_value(),
            settings.tablestore_instance,
            sts_token=settings.security_token.get_secret_value() if settings.security_token else None,
            socket_timeout=settings.api_timeout_s,
            retry_policy=NoRetryPolicy(),
            logger_name=SDK_LOGGER,
        )
        return cls(client, settings.table_prefix, call_budget_s=settings.api_timeout_s)

    def create_tables(self) -> list[str]:
        """Create the tables that are missing (the setup path); the names of those created."""
        existing = set(self._call("ListTable", self.client.list_table))
        created = []
        for name, schema, ttl in (
            (self.instances, [("scaling_group_id", "STRING"), ("instance_id", "STRING")], -1),
            (self.instance_groups, [("instance_id", "STRING")], -1),
            (self.groups, [("group_id", "STRING")], -1),
            (self.idempotency, [("key", "STRING")], IDEMPOTENCY_TTL_S),
        ):
            if name in existing:
                continue
            create = partial(
                self.client.create_table,
                TableMeta(name, schema),
                TableOptions(time_to_live=ttl, max_version=1),
                ReservedThroughput(CapacityUnit(0, 0)),
            )
            try:
                self._call("CreateTable", create)
            except PermanentError as exc:
                if exc.code != "OTSObjectAlreadyExist":  # another setup run got there first
                    raise
                continue
            created.append(name)
        return created

    # --- instances ---------------------------------------------------------------------------

    def get_instance(self, instance_id: str) -> InstanceRecord | None:
        locator = self._get(self.instance_groups, [("instance_id", instance_id)])
        if locator is None:
            return None
        row = self._get(self.instances, _instance_key(locator["scaling_group_id"], instance_id))
        return from_columns(InstanceRecord, row) if row is not None else None

    def create_instance(self, record: InstanceRecord) -> InstanceRecord:
        created = replace(record, version=1)
        self._record_group_of(created)
        key = _instance_key(created.scaling_group_id, created.instance_id)
        if not self._put(
            self.instances, key, to_columns(created), Condition(RowExistenceExpectation.EXPECT_NOT_EXIST)
        ):
            raise AlreadyExists(f"instance {record.instance_id} already has a record")
        return created

    def update_instance(self, record: InstanceRecord) -> InstanceRecord:
        updated = replace(record, version=record.version + 1)
        key = _instance_key(record.scaling_group_id, record.instance_id)
        if not self._put(self.instances, key, to_columns(updated), _at_version(record.version)):
            raise VersionConflict(f"instance {record.instance_id} is no longer at version {record.version}")
        return updated

    def list_instances(self, scaling_group_id: str) -> list[InstanceRecord]:
        start: PrimaryKey = _instance_key(scaling_group_id, INF_MIN)
        end = _instance_key(scaling_group_id, INF_MAX)
        records: list[InstanceRecord] = []
        for _ in range(MAX_RANGE_PAGES):
            page = partial(self.client.get_range, self.instances, Direction.FORWARD, start, end)
            _, next_start, rows, _ = self._call("GetRange", page)
            records.extend(from_columns(InstanceRecord, _columns(row)) for row in rows)
            if not next_start:
                return records
            start = next_start
        raise PermanentError(
            f"group {scaling_group_id}: more than {MAX_RANGE_PAGES} pages", service="tablestore"
        )

    def _record_group_of(self, record: InstanceRecord) -> None:
        # Idempotent: passes when absent or already this group, so a retried create goes through.
        same_group = SingleColumnCondition("scaling_group_id", record.scaling_group_id, ComparatorType.EQUAL)
        row = Row([("instance_id", record.instance_id)], [("scaling_group_id", record.scaling_group_id)])
        try:
            self._call(
                "PutRow",
                partial(
                    self.client.put_row,
                    self.instance_groups,
                    row,
                    Condition(RowExistenceExpectation.IGNORE, same_group),
                ),
            )
        except _ConditionFailed:
            raise AlreadyExists(
                f"instance {record.instance_id} is recorded in another scaling group"
            ) from None

    # --- groups --------------------------------------------------------------------------------------

    def get_group(self, group_id: str) -> GroupRecord | None:
        row = self._get(self.groups, [("group_id", group_id)])
        return from_columns(GroupRecord, row) if row is not None else None

    def put_group(self, record: GroupRecord) -> GroupRecord:
        written = replace(record, version=record.version + 1)
        condition = (
            Condition(RowExistenceExpectation.EXPECT_NOT_EXIST)
            if record.version == 0
            else _at_version(record.version)
        )
        if not self._put(self.groups, [("group_id", record.group_id)], to_columns(written), condition):
            raise VersionConflict(f"group {record.group_id} is no longer at version {record.version}")
        return written

    # --- idempotency --------------------------------------------------------------------------------

    def begin(self, key: str, now: float, expires_at: float) -> IdempotencyRecord | None:
        expired = SingleColumnCondition(
            "expires_at_ms", _ms(now), ComparatorType.LESS_EQUAL, pass_if_missing=True
        )
        columns = {"status": "in_progress", "expires_at_ms": _ms(expires_at)}
        for _ in range(BEGIN_ATTEMPTS):
            if self._put(
                self.idempotency, [("key", key)], columns, Condition(RowExistenceExpectation.IGNORE, expired)
            ):
                return None
            existing = self._idempotency_record(key)
            if existing is not None and _ms(existing.expires_at) > _ms(now):
                return existing
            # Released or expired between our write and our read: the key is free again.
        raise TransientError(
            f"idempotency record {key} keeps changing", code="Contended", service="tablestore"
        )

    def complete(self, key: str, result: dict[str, Any], keep_until: float) -> None:
        row = Row(
            [("key", key)],
            [("status", "completed"), ("expires_at_ms", _ms(keep_until)), ("result", json.dumps(result))],
        )
        self._call(
            "PutRow",
            partial(self.client.put_row, self.idempotency, row, Condition(RowExistenceExpectation.IGNORE)),
        )

    def release(self, key: str) -> None:
        still_running = SingleColumnCondition(
            "status", "in_progress", ComparatorType.EQUAL, pass_if_missing=False
        )
        delete = partial(
            self.client.delete_row,
            self.idempotency,
            Row([("key", key)]),
            Condition(RowExistenceExpectation.IGNORE, still_running),
        )
        # A failed condition: completed, or already gone; nothing of ours to release.
        with contextlib.suppress(_ConditionFailed):
            self._call("DeleteRow", delete)

    def _idempotency_record(self, key: str) -> IdempotencyRecord | None:
        row = self._get(self.idempotency, [("key", key)])
        if row is None:
            return None
        result = json.loads(row["result"]) if "result" in row else None
        return IdempotencyRecord(key, row["status"], row["expires_at_ms"] / 1000.0, result)

    # --- calls -----------------------------------------------------------------------------------------

    def _get(self, table: str, key: PrimaryKey) -> dict[str, Any] | None:
        _, row, _ = self._call("GetRow", partial(self.client.get_row, table, key))
        return _columns(row) if row is not None else None

    def _put(self, table: str, key: PrimaryKey, columns: dict[str, Any], condition: Any) -> bool:
        """A conditional PutRow of the whole row: True if written, False if the condition failed."""
        write_id = uuid.uuid4().hex
        attributes = [(name, value) for name, value in columns.items() if name not in dict(key)]
        row = Row(key, [*attributes, ("write_id", write_id)])
        outcome_unknown = False

        def attempt() -> None:
            nonlocal outcome_unknown
            try:
                self.client.put_row(table, row, condition)
            except Exception as exc:
                outcome_unknown = outcome_unknown or _leaves_outcome_unknown(exc)
                raise

        try:
            self._call("PutRow", attempt)
        except _ConditionFailed:
            if not outcome_unknown:
                return False
            stored = self._get(table, key)
            return stored is not None and stored.get("write_id") == write_id
        return True

    def _call(self, action: str, operation: Callable[[], T]) -> T:
        try:
            return retry.call(
                operation,
                deadline=Deadline.after(self.call_budget_s, margin=0.0),
                transient=is_transient,
                service="tablestore",
                action=action,
                first_wait=self.first_wait,
                max_wait=2.0,
                sleep=self._sleep,
            )
        except OTSServiceError as exc:
            if exc.code == CONDITION_CHECK_FAIL:
                raise _ConditionFailed() from exc
            raise PermanentError(exc.message, code=exc.code, service="tablestore") from exc
        except OTSClientError as exc:
            raise PermanentError(str(exc), code="OTSClientError", service="tablestore") from exc


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, OTSServiceError):
        if exc.code in TRANSIENT_CODES:
            return True
        if exc.code == "OTSQuotaExhausted":
            return bool(exc.message == TOO_FREQUENT)
        return bool(exc.code != CONDITION_CHECK_FAIL and (exc.http_status or 0) >= 500)
    if isinstance(exc, OTSClientError):  # an answer the SDK could not parse: a proxy's 502 page
        return bool((exc.http_status or 0) >= 500)
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError)


def _leaves_outcome_unknown(exc: BaseException) -> bool:
    refused = isinstance(exc, OTSServiceError) and exc.code in REFUSED_CODES | {"OTSQuotaExhausted"}
    return is_transient(exc) and not refused


def _instance_key(scaling_group_id: str, instance_id: Any) -> PrimaryKey:
    return [("scaling_group_id", scaling_group_id), ("instance_id", instance_id)]


def _at_version(version: int) -> Any:
    same_version = SingleColumnCondition("version", version, ComparatorType.EQUAL, pass_if_missing=False)
    return Condition(RowExistenceExpectation.EXPECT_EXIST, same_version)


def _columns(row: Any) -> dict[str, Any]:
    """A returned row's primary key and attributes as one mapping (attributes come as
    (name, value, timestamp) tuples)."""
    columns = {name: value for name, value in row.primary_key}
    columns.update({column[0]: column[1] for column in row.attribute_columns or ()})
    return columns


def _ms(epoch_s: float) -> int:
    return round(epoch_s * 1000)
