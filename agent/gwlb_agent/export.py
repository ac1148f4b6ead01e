"""Flow records leave the packet loop through a bounded hand-off to a sink thread.

The packet loop never waits on a sink: ``submit`` is an append, and when the hand-off is full the
record is counted as dropped rather than slowing forwarding. That count is reported in the
metrics and, as a ``kind = loss`` record, to the sinks themselves once they take records again.
A sink that fails keeps its records and is retried; records only count as exported once written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from gwlb_agent import BOOT_ID
from gwlb_fleet.sls.flowrecord import FlowRecord, LossReason, LossReport

log = logging.getLogger("gwlb_agent.export")

LogRecord = FlowRecord | LossReport


class FlowSink(Protocol):
    name: str

    def write(self, records: Sequence[LogRecord]) -> None:
        """Take all of ``records`` or raise; a raise means none of them counts as taken."""
        ...

    def tick(self) -> None:
        """Called about every half second: time-based flushing, retries."""
        ...

    def reopen(self) -> None:
        """Reopen files (log rotation); a no-op for sinks without files."""
        ...

    def metrics(self) -> dict[str, float]:
        """Gauges and counters for /metrics, named without the agent prefix."""
        ...

    def close(self, timeout: float | None = None) -> None:
        """Write out what is held, taking at most ``timeout`` seconds (None: the sink's own)."""
        ...


class JsonLinesSink:
    """Appends one JSON object per record to a file: the local sink."""

    name = "json-lines"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def write(self, records: Sequence[LogRecord]) -> None:
        self._file.write("".join(record.to_json() + "\n" for record in records))
        self._file.flush()

    def tick(self) -> None:
        pass

    def reopen(self) -> None:
        self._file.close()
        self._file = self.path.open("a", encoding="utf-8")

    def metrics(self) -> dict[str, float]:
        return {}

    def close(self, timeout: float | None = None) -> None:
        self._file.close()


class _SinkState:
    """A sink and the records it still owes us after a failed write (bounded)."""

    def __init__(self, sink: FlowSink, max_pending: int) -> None:
        self.sink = sink
        self.pending: list[LogRecord] = []
        self.max_pending = max_pending
        self.failed_since = 0.0
        self.lost = 0
        self.lost_since = 0.0


class RecordExporter:
    def __init__(
        self,
        sinks: Sequence[FlowSink],
        appliance_id: str,
        convert: Callable[[Any], FlowRecord] | None = None,
        max_queued: int = 200_000,
        batch: int = 4096,
        interval: float = 0.5,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.sinks = [_SinkState(sink, max_queued) for sink in sinks]
        self.appliance_id = appliance_id
        # The packet loop hands over cheap tuples; building the record happens here, off its path.
        self.convert = convert
        self.max_queued = max_queued
        self.batch = batch
        self.interval = interval
        self._wall_clock = wall_clock
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._reopen = threading.Event()
        self._thread: threading.Thread | None = None
        self._loss_reports = 0
        self.dropped = 0  # hand-off full: counted by the packet loop
        self._dropped_reported = 0
        self._dropped_since = 0.0
        self.exported = 0
        self.errors = 0

    # --- the packet loop's side ---------------------------------------------------------------

    def submit(self, record: Any) -> None:
        """Never blocks: a full hand-off drops the record and counts it. ``record`` is what
        ``convert`` takes (a FlowEnd from the packet loop), or a FlowRecord without one."""
        if len(self._queue) >= self.max_queued:
            if self.dropped == self._dropped_reported:
                self._dropped_since = self._wall_clock()
            self.dropped += 1
            return
        self._queue.append(record)

    # --- the export thread -------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queue) + max((len(s.pending) for s in self.sinks), default=0)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="flow-export", daemon=True)
        self._thread.start()

    def metrics(self) -> dict[str, float]:
        merged: dict[str, float] = {}
        for state in self.sinks:
            merged.update(state.sink.metrics())
            merged[f"flow_sink_pending_records_{state.sink.name.replace('-', '_')}"] = len(state.pending)
        return merged

    def request_reopen(self) -> None:
        self._reopen.set()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._reopen.is_set():
                self._reopen.clear()
                self._reopen_sinks()
            self.export_once()

    def export_once(self) -> None:
        """Hand what is queued to every sink, a batch at a time; then let the sinks tick."""
        while True:
            batch: list[LogRecord] = []
            self._report_handoff_loss(batch)
            queue, convert = self._queue, self.convert
            while queue and len(batch) < self.batch:
                item = queue.popleft()
                batch.append(convert(item) if convert is not None else item)
            if not batch:
                break
            for state in self.sinks:
                self._write(state, batch)
            self.exported += sum(1 for r in batch if isinstance(r, FlowRecord))
        for state in self.sinks:
            if state.pending:
                self._write(state, [])
            self._tick(state)

    def _report_handoff_loss(self, batch: list[LogRecord]) -> None:
        lost = self.dropped - self._dropped_reported
        if lost:
            batch.append(self._loss_report(lost, "handoff_full", self._dropped_since))
            self._dropped_reported += lost

    def _loss_report(self, lost: int, reason: LossReason, since: float) -> LossReport:
        self._loss_reports += 1
        return LossReport(
            record_id=f"{BOOT_ID}-loss-{self._loss_reports}",
            appliance_id=self.appliance_id,
            lost_records=lost,
            loss_reason=reason,
            loss_since=round(since, 6),
            loss_until=round(self._wall_clock(), 6),
        )

    def _write(self, state: _SinkState, batch: list[LogRecord]) -> None:
        records = state.pending + batch if state.pending else batch
        if state.lost and not state.pending:
            records = [self._loss_report(state.lost, "sink_failed", state.lost_since), *records]
        try:
            state.sink.write(records)
        except Exception as exc:  # noqa: BLE001 - any sink failure: keep the records, report it
            self.errors += 1
            if not state.failed_since:
                state.failed_since = self._wall_clock()
                log.error(
                    "flow sink failing; keeping its records and retrying",
                    extra={"sink": state.sink.name, "error": str(exc)},
                )
            self._keep(
                state,
                [r for r in records if not (isinstance(r, LossReport) and r.loss_reason == "sink_failed")],
            )
            return
        if state.failed_since:
            log.info("flow sink writing again", extra={"sink": state.sink.name, "records": len(records)})
        state.pending, state.failed_since, state.lost = [], 0.0, 0

    @staticmethod
    def _keep(state: _SinkState, records: list[LogRecord]) -> None:
        overflow = len(records) - state.max_pending
        if overflow > 0:
            if not state.lost:
                state.lost_since = time.time()
            state.lost += overflow
            records = records[overflow:]
        state.pending = records

    def _tick(self, state: _SinkState) -> None:
        try:
            state.sink.tick()
        except Exception as exc:  # noqa: BLE001 - reported and retried at the next tick
            self.errors += 1
            log.error("flow sink tick failed", extra={"sink": state.sink.name, "error": str(exc)})

    def _reopen_sinks(self) -> None:
        for state in self.sinks:
            try:
                state.sink.reopen()
            except OSError as exc:
                self.errors += 1
                log.error("flow sink reopen failed", extra={"sink": state.sink.name, "error": str(exc)})

    def close(self, deadline: float | None = None) -> None:
        """Stop the thread, hand everything still queued to the sinks, close them, all by
        ``deadline`` (time.monotonic(); default 10 s from now)."""
        if deadline is None:
            deadline = time.monotonic() + 10.0
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        if thread is not None and thread.is_alive():
            # Never two threads in the sinks: what it still holds cannot be written now.
            log.error(
                "the export thread did not stop in time; records it had not handed over are lost",
                extra={"queued_records": len(self._queue)},
            )
        else:
            self.export_once()
        for state in self.sinks:
            if state.pending:
                log.error(
                    "flow records left unwritten at shutdown",
                    extra={"sink": state.sink.name, "records": len(state.pending)},
                )
            state.sink.close(max(0.0, deadline - time.monotonic()))
