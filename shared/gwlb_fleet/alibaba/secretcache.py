"""Secrets kept in memory for a while: what KMS's adapter and its fake share (no SDK import).

A warm FC instance serves many invocations; reading every secret at every use would cost a call
to KMS each time, and keeping it for the instance's life would miss a rotation. A value is kept
for at most ``ttl_s`` (F-KMS-4: Alibaba's own Secrets Manager client keeps one for an hour; the
settings allow no more), in this process only — never written to disk, a record or a log line —
and read anew at once when a caller says the value was refused (``refresh``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from gwlb_fleet.deadline import Deadline

log = logging.getLogger("gwlb_fleet.alibaba.secrets")

MAX_TTL_S = 3600.0  # F-KMS-4

Reader = Callable[[str, Deadline], str]


class CachedSecrets:
    """SecretsPort over ``read(name, deadline)``: one read per secret per ``ttl_s`` at most."""

    def __init__(self, read: Reader, ttl_s: float, clock: Callable[[], float]) -> None:
        if not 0 <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"a secret may be cached for 0 to {MAX_TTL_S:.0f} s (F-KMS-4), not {ttl_s}")
        self._read = read
        self._ttl_s = ttl_s
        self._clock = clock
        self._values: dict[str, tuple[str, float]] = {}  # name -> (value, when it was read)
        self._lock = threading.Lock()

    def get(self, name: str, deadline: Deadline) -> str:
        with self._lock:
            cached = self._values.get(name)
            if cached is not None and self._clock() - cached[1] < self._ttl_s:
                return cached[0]
        return self.refresh(name, deadline)

    def refresh(self, name: str, deadline: Deadline) -> str:
        value = self._read(name, deadline)
        with self._lock:
            self._values[name] = (value, self._clock())
        log.info("secret read", extra={"kms_entry": name})  # the name only, never the value
        return value

    def forget(self) -> None:
        """Drop every cached value (a test, or an instance told to re-read everything)."""
        with self._lock:
            self._values.clear()
