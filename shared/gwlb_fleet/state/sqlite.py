"""The state store in one SQLite file: the embedded default, used by the lab and the tests.

Several FC handler processes of the lab, and several threads of one, share the file:

- a connection per call (nothing to go stale across threads or a fork), in WAL mode so that
  readers never wait for the writer, with a busy timeout so that writers queue instead of failing;
- every write is a ``BEGIN IMMEDIATE`` transaction: it takes the write lock first, so a
  read-then-write inside it cannot be overtaken (no SQLITE_BUSY upgrade half way);
- compare-and-set on the ``version`` column, in the WHERE of the one UPDATE that writes;
- ``begin`` is one upsert whose conflict branch only fires on an expired record, and whose
  RETURNING clause says whether this call won.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from gwlb_fleet.errors import PermanentError, TransientError
from gwlb_fleet.settings import Settings
from gwlb_fleet.state.columns import (
    LEGACY_EXTRA,
    ColumnValue,
    defaults,
    field_names,
    from_columns,
    to_columns,
)
from gwlb_fleet.state.records import (
    AlreadyExists,
    GroupRecord,
    IdempotencyRecord,
    InstanceRecord,
    VersionConflict,
)

RAM_ACTIONS: frozenset[str] = frozenset()  # a local file: no cloud API

BUSY_CODES = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_BUSY_SNAPSHOT", "SQLITE_BUSY_RECOVERY"})

_INSTANCE_COLUMNS = field_names(InstanceRecord)
_GROUP_COLUMNS = field_names(GroupRecord)


def _column(name: str, default: ColumnValue | None, key: str) -> str:
    """A record field's column: its SQL type and its default, both from the field's default."""
    kind = "INTEGER" if isinstance(default, int) else "REAL" if isinstance(default, float) else "TEXT"
    if name == key:
        return f"{name} {kind} PRIMARY KEY"
    if default is None:
        return f"{name} {kind} NOT NULL"
    if isinstance(default, str):
        literal = "'" + default.replace("'", "''") + "'"
    elif isinstance(default, int):  # and bool: 0 or 1
        literal = str(int(default))
    else:
        literal = repr(default)
    return f"{name} {kind} NOT NULL DEFAULT {literal}"


def _columns_of(record_type: type[InstanceRecord] | type[GroupRecord], key: str) -> dict[str, str]:
    return {name: _column(name, default, key) for name, default in defaults(record_type).items()}


_INSTANCE_SQL = _columns_of(InstanceRecord, "instance_id")
_GROUP_SQL = _columns_of(GroupRecord, "group_id")
_INSTANCE_DDL = ",\n    ".join(_INSTANCE_SQL.values())
_GROUP_DDL = ",\n    ".join(_GROUP_SQL.values())

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS instances (
    {_INSTANCE_DDL}
);
CREATE INDEX IF NOT EXISTS instances_by_group ON instances (scaling_group_id, instance_id);
CREATE TABLE IF NOT EXISTS groups (
    {_GROUP_DDL}
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('in_progress', 'completed')),
    expires_at REAL NOT NULL,
    result TEXT
);
"""


def _insert(table: str, columns: tuple[str, ...], key: str) -> str:
    names = ", ".join(columns)
    values = ", ".join(f":{c}" for c in columns)
    return f"INSERT INTO {table} ({names}) VALUES ({values}) ON CONFLICT({key}) DO NOTHING"


def _compare_and_set(table: str, columns: tuple[str, ...], key: str) -> str:
    assignments = ", ".join(f"{c} = :{c}" for c in columns if c not in (key, "version"))
    return (
        f"UPDATE {table} SET {assignments}, version = version + 1 WHERE {key} = :{key} AND version = :version"
    )


INSERT_INSTANCE = _insert("instances", _INSTANCE_COLUMNS, "instance_id")
UPDATE_INSTANCE = _compare_and_set("instances", _INSTANCE_COLUMNS, "instance_id")
INSERT_GROUP = _insert("groups", _GROUP_COLUMNS, "group_id")
UPDATE_GROUP = _compare_and_set("groups", _GROUP_COLUMNS, "group_id")

# Ours if the key is new, or if the record there has expired (a crashed invocation's, or a
# completed one past its retention). RETURNING yields a row only when this statement wrote.
BEGIN = """
INSERT INTO idempotency (key, status, expires_at, result) VALUES (:key, 'in_progress', :expires_at, NULL)
ON CONFLICT(key) DO UPDATE SET status = 'in_progress', expires_at = excluded.expires_at, result = NULL
    WHERE idempotency.expires_at <= :now
RETURNING key
"""
COMPLETE = """
INSERT INTO idempotency (key, status, expires_at, result) VALUES (:key, 'completed', :expires_at, :result)
ON CONFLICT(key) DO UPDATE
    SET status = 'completed', expires_at = excluded.expires_at, result = excluded.result
"""


class SqliteStateStore:
    def __init__(self, path: Path | str, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._create_schema()

    @classmethod
    def from_settings(cls, settings: Settings) -> SqliteStateStore:
        return cls(settings.sqlite_path)

    # --- instances ---------------------------------------------------------------------------

    def get_instance(self, instance_id: str) -> InstanceRecord | None:
        with self._reading() as db:
            row = db.execute("SELECT * FROM instances WHERE instance_id = ?", (instance_id,)).fetchone()
        return from_columns(InstanceRecord, dict(row)) if row else None

    def create_instance(self, record: InstanceRecord) -> InstanceRecord:
        created = replace(record, version=1)
        with self._writing() as db:
            if db.execute(INSERT_INSTANCE, to_columns(created)).rowcount == 0:
                raise AlreadyExists(f"instance {record.instance_id} already has a record")
        return created

    def update_instance(self, record: InstanceRecord) -> InstanceRecord:
        with self._writing() as db:
            if db.execute(UPDATE_INSTANCE, to_columns(record)).rowcount == 0:
                raise VersionConflict(
                    f"instance {record.instance_id} is no longer at version {record.version}"
                )
        return replace(record, version=record.version + 1)

    def list_instances(self, scaling_group_id: str) -> list[InstanceRecord]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT * FROM instances WHERE scaling_group_id = ? ORDER BY instance_id", (scaling_group_id,)
            ).fetchall()
        return [from_columns(InstanceRecord, dict(row)) for row in rows]

    # --- groups ----------------------------------------------------------------------------------

    def get_group(self, group_id: str) -> GroupRecord | None:
        with self._reading() as db:
            row = db.execute("SELECT * FROM groups WHERE group_id = ?", (group_id,)).fetchone()
        return from_columns(GroupRecord, dict(row)) if row else None

    def put_group(self, record: GroupRecord) -> GroupRecord:
        written = replace(record, version=record.version + 1)
        with self._writing() as db:
            if record.version == 0:
                changed = db.execute(INSERT_GROUP, to_columns(written)).rowcount
            else:
                changed = db.execute(UPDATE_GROUP, to_columns(record)).rowcount
        if changed == 0:
            raise VersionConflict(f"group {record.group_id} is no longer at version {record.version}")
        return written

    # --- idempotency ------------------------------------------------------------------------------

    def begin(self, key: str, now: float, expires_at: float) -> IdempotencyRecord | None:
        with self._writing() as db:
            won = db.execute(BEGIN, {"key": key, "expires_at": expires_at, "now": now}).fetchall()
            if won:
                return None
            row = db.execute(
                "SELECT status, expires_at, result FROM idempotency WHERE key = ?", (key,)
            ).fetchone()
        result = json.loads(row["result"]) if row["result"] is not None else None
        return IdempotencyRecord(key, row["status"], row["expires_at"], result)

    def complete(self, key: str, result: dict[str, Any], keep_until: float) -> None:
        with self._writing() as db:
            db.execute(COMPLETE, {"key": key, "expires_at": keep_until, "result": json.dumps(result)})

    def release(self, key: str) -> None:
        with self._writing() as db:
            db.execute("DELETE FROM idempotency WHERE key = ? AND status = 'in_progress'", (key,))

    # --- the file ----------------------------------------------------------------------------------

    def _create_schema(self) -> None:
        with self._connection() as db:
            # WAL is a property of the file: set once, every later connection gets it.
            db.execute("PRAGMA journal_mode = WAL")
        with self._writing() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            self._add_columns(db, "instances", _INSTANCE_SQL)
            self._add_columns(db, "groups", _GROUP_SQL)

    @staticmethod
    def _add_columns(db: sqlite3.Connection, table: str, wanted: dict[str, str]) -> None:
        """A file written by an earlier version: add the columns of the fields it lacks, and move
        what its rows kept in the JSON ``extra`` column into them."""
        present = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
        added = [name for name in wanted if name not in present]
        for name in added:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {wanted[name]}")
        if not added or LEGACY_EXTRA not in present:
            return
        key = "instance_id" if table == "instances" else "group_id"
        assignments = ", ".join(f"{c} = :{c}" for c in added)
        update = f"UPDATE {table} SET {assignments}, {LEGACY_EXTRA} = '{{}}' WHERE {key} = :{key}"
        for row in db.execute(f"SELECT * FROM {table} WHERE {LEGACY_EXTRA} != '{{}}'").fetchall():
            stored = {name: value for name, value in dict(row).items() if name not in added}
            record: InstanceRecord | GroupRecord = (
                from_columns(InstanceRecord, stored)
                if table == "instances"
                else from_columns(GroupRecord, stored)
            )
            columns = to_columns(record)
            db.execute(update, {key: row[key], **{c: columns[c] for c in added}})

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            # isolation_level=None: no implicit transactions, ours are explicit.
            db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        except sqlite3.Error as exc:
            raise _domain_error(exc) from exc
        db.row_factory = sqlite3.Row
        try:
            yield db
        except sqlite3.Error as exc:
            raise _domain_error(exc) from exc
        finally:
            db.close()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as db:
            yield db

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL, ...)
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")


def _domain_error(exc: sqlite3.Error) -> TransientError | PermanentError:
    code = getattr(exc, "sqlite_errorname", "") or type(exc).__name__
    if code in BUSY_CODES:
        return TransientError(f"the state file is busy: {exc}", code=code, service="sqlite")
    return PermanentError(str(exc), code=code, service="sqlite")
