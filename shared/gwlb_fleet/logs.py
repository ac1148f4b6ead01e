"""Structured logs: one JSON object a line, with per-request keys from a ContextVar.

The agent and the functions both log through this. Keys bound with ``bind()`` (request id,
function, correlation id, instance id) appear on every line logged in that context. Values
whose key looks like a secret are masked, so that a careless ``extra=`` cannot leak one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

_context: ContextVar[dict[str, Any] | None] = ContextVar("fleet_log_context", default=None)

SECRET_MARKERS = ("secret", "password", "token", "access_key", "auth_key", "authcode", "api_key")
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def _masked(key: str, value: Any) -> Any:
    return "***" if is_secret_key(key) and value not in (None, "") else value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in (_context.get() or {}).items():
            entry[key] = _masked(key, value)
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = _masked(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure(level: str = "info", stream: Any = None) -> None:
    """Send every logger's records to ``stream`` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())


def bind(**keys: Any) -> None:
    """Add keys to every log line of the current context."""
    _context.set({**(_context.get() or {}), **keys})


@contextlib.contextmanager
def bound(**keys: Any) -> Iterator[None]:
    token = _context.set({**(_context.get() or {}), **keys})
    try:
        yield
    finally:
        _context.reset(token)
