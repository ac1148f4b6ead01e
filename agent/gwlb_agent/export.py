"""Flow records leave the packet loop through a bounded hand-off to a sink thread.

The packet loop never waits on a sink: ``submit`` is an append, and when the hand-off is full the
record is counted as dropped (and that count is reported) rather than slowing forwarding. A sink
that fails keeps its batch and is retried; records are only counted as exported once written.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Protocol

from fleet.flowrecord import FlowRecord

log = logging.getLogger("gwlb_agent.export")


class FlowSink(Protocol):
    def write(self, records: Sequence[FlowRecord]) -> None:
        """Write all of ``records`` or raise; a raise means none of them counts as written."""
        ...

    def reopen(self) -> None:
        """Reopen files (log rotation); a no-op for sinks without files."""
        ...

    def close(self) -> None: ...


class JsonLinesSink:
    """Appends one JSON object per record to a file (the local sink; SLS is another)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def write(self, records: Sequence[FlowRecord]) -> None:
        self._file.write("".join(record.to_json() + "\n" for record in records))
        self._file.flush()

    def reopen(self) -> None:
        self._file.close()
        self._file = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        self._file.close()


class RecordExporter:
    def __init__(
        self,
        sink: FlowSink,
        max_queued: int = 200_000,
        batch: int = 4096,
        interval: float = 0.5,
    ) -> None:
        self.sink = sink
        self.max_queued = max_queued
        self.batch = batch
        self.interval = interval
        self._queue: deque[FlowRecord] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._retry: list[FlowRecord] = []
        self._thread: threading.Thread | None = None
        self._reopen = threading.Event()
        self.dropped = 0
        self.exported = 0
        self.errors = 0

    def submit(self, record: FlowRecord) -> None:
        """Called from the packet loop: never blocks."""
        if len(self._queue) >= self.max_queued:
            self.dropped += 1
            return
        self._queue.append(record)

    @property
    def queued(self) -> int:
        return len(self._queue) + len(self._retry)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="flow-export", daemon=True)
        self._thread.start()

    def request_reopen(self) -> None:
        self._reopen.set()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._reopen.is_set():
                self._reopen.clear()
                self._reopen_sink()
            self._drain_once()

    def _drain_once(self) -> bool:
        """Write what is queued, a batch at a time. False if the sink failed."""
        while True:
            batch = self._retry or self._take(self.batch)
            if not batch:
                return True
            try:
                self.sink.write(batch)
            except Exception as exc:  # noqa: BLE001 - any sink failure: keep the batch, report it
                self.errors += 1
                self._retry = batch
                log.error(
                    "flow sink write failed; will retry", extra={"error": str(exc), "records": len(batch)}
                )
                return False
            self._retry = []
            self.exported += len(batch)

    def _take(self, limit: int) -> list[FlowRecord]:
        queue, taken = self._queue, list[FlowRecord]()
        while queue and len(taken) < limit:
            taken.append(queue.popleft())
        return taken

    def _reopen_sink(self) -> None:
        try:
            self.sink.reopen()
        except OSError as exc:
            self.errors += 1
            log.error("flow sink reopen failed", extra={"error": str(exc)})

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread, write everything still queued, close the sink."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if not self._drain_once():
            log.error("flow records left unwritten at shutdown", extra={"records": self.queued})
        self.sink.close()
