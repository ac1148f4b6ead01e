"""Flow records to an SLS logstore: batched, retried, spooled to disk, never lost in silence.

Batches close at 4096 records, at ``batch_bytes`` of encoded LogGroup (SLS takes at most 5 MB
and 4096 logs a request; we keep headroom) or ``batch_delay`` seconds after their first record.
A batch is sent with a few quick retries (tenacity: exponential backoff with jitter) when SLS
answers a transient error; if it still fails, or if earlier batches are already waiting, it goes
to the disk spool, which is drained oldest first once SLS answers again — so records arrive in
order. Errors that will never succeed (bad credentials, missing logstore) are logged once, loudly,
and retried only every ``permanent_backoff`` seconds. A full spool drops the batch, counts it,
and says so in a ``kind = loss`` record when shipping resumes.

Records are encoded in the export thread (never in the packet loop, see export.py); sealed
batches go to a sender thread through a queue of two, so that the next batch is encoded while
the last one is on the wire — the spool, the retries and the backoff all live in that thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from gwlb_agent import BOOT_ID
from gwlb_agent.export import LogRecord
from gwlb_agent.spool import Spool, SpooledBatch, SpoolFull
from gwlb_fleet.sls import loggroup
from gwlb_fleet.sls.client import Sls, SlsError
from gwlb_fleet.sls.flowrecord import LossReport

log = logging.getLogger("gwlb_agent.shipper")

MAX_LOGS_PER_REQUEST = 4096


@dataclass(frozen=True)
class ShipperSettings:
    logstore: str = "flow-logs"
    batch_records: int = MAX_LOGS_PER_REQUEST
    batch_bytes: int = 3 << 20
    batch_delay: float = 2.0
    attempts: int = 3  # per batch before it is spooled
    attempt_budget: float = 5.0  # seconds for those attempts
    transient_backoff_max: float = 30.0
    permanent_backoff: float = 60.0


@dataclass(frozen=True)
class Identity:
    appliance_id: str
    instance_id: str = ""
    zone: str = ""

    def tags(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in (("instance_id", self.instance_id), ("zone", self.zone)) if v]


@dataclass
class ShipperStats:
    records_shipped: int = 0
    batches_shipped: int = 0
    batches_spooled: int = 0
    records_lost_spool_full: int = 0
    send_failures: int = 0
    last_error: str = ""
    sls_up: bool = True
    by_code: dict[str, int] = field(default_factory=dict)


class _Batch:
    __slots__ = ("logs", "opened", "records", "size")

    def __init__(self, opened: float) -> None:
        self.logs: list[bytes] = []
        self.size = 0
        self.records = 0
        self.opened = opened


class SlsShipper:
    name = "sls"

    def __init__(
        self,
        sls: Sls,
        spool: Spool,
        identity: Identity,
        settings: ShipperSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        threaded: bool = True,
    ) -> None:
        self.sls = sls
        self.spool = spool
        self.identity = identity
        self.settings = settings or ShipperSettings()
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._batch: _Batch | None = None
        self._retry_at = 0.0  # monotonic: no attempt before this while SLS is failing
        self._backoff = 0.0
        self._lost_since = 0.0
        self._lost_unreported = 0
        self._loss_reports = 0
        self.stats = ShipperStats()
        # Sealed batches on their way to the sender thread; two: one on the wire, one ready.
        self._outbox: queue.Queue[tuple[bytes, int] | None] = queue.Queue(maxsize=2)
        self._sender: threading.Thread | None = None
        if threaded:
            self._sender = threading.Thread(target=self._send_loop, name="sls-sender", daemon=True)
            self._sender.start()

    # --- FlowSink -----------------------------------------------------------------------------

    def write(self, records: Sequence[LogRecord]) -> None:
        settings = self.settings
        for record in records:
            encoded = loggroup.encode_log(record.log_time(), record.log_contents())
            batch = self._batch
            if batch is not None and batch.size + len(encoded) > settings.batch_bytes:
                self._seal()
                batch = None
            if batch is None:
                batch = self._batch = _Batch(self._clock())
            batch.logs.append(encoded)
            batch.size += len(encoded) + 5  # the Log's tag and length
            batch.records += 1
            if batch.records >= settings.batch_records:
                self._seal()

    def tick(self) -> None:
        batch = self._batch
        if batch is not None and self._clock() - batch.opened >= self.settings.batch_delay:
            self._seal()
        if self._sender is None and self.spool and self._clock() >= self._retry_at:
            self._drain_spool()  # the sender thread drains on its own

    def reopen(self) -> None:
        pass

    def metrics(self) -> dict[str, float]:
        stats = self.stats
        return {
            "sls_up": float(stats.sls_up),
            "sls_records_shipped_total": stats.records_shipped,
            "sls_batches_shipped_total": stats.batches_shipped,
            "sls_send_failures_total": stats.send_failures,
            "sls_spool_batches": len(self.spool),
            "sls_spool_bytes": self.spool.bytes,
            "sls_records_lost_spool_full_total": stats.records_lost_spool_full,
        }

    def close(self) -> None:
        """Seal what is open; give the spool a short chance to empty; the rest stays on disk
        for the next start (a stopping agent must not hold up shutdown behind a slow SLS)."""
        if self._batch is not None:
            self._seal()
        if self._sender is not None:
            self._outbox.put(None)
            self._sender.join()
            self._sender = None
        if not self.spool:
            return
        backoff_left = self._retry_at - self._clock()
        if 0 < backoff_left <= self.settings.attempt_budget:
            self._sleep(backoff_left)  # a short outage: worth waiting out once
        if self._clock() >= self._retry_at:
            self._drain_spool(deadline=self._clock() + self.settings.attempt_budget)

    # --- batches ----------------------------------------------------------------------------------

    def _seal(self) -> None:
        batch, self._batch = self._batch, None
        if batch is None or not batch.logs:
            return
        log_group = self._log_group(batch.logs)
        if self._sender is not None:
            self._outbox.put((log_group, batch.records))  # waits while two are in flight
        else:
            self._deliver(log_group, batch.records)

    def _send_loop(self) -> None:
        """The sender thread: batches in order, then the spool whenever SLS may be back."""
        while True:
            try:
                item = self._outbox.get(timeout=0.5)
            except queue.Empty:
                pass  # no batch: just a chance to drain the spool
            else:
                if item is None:
                    return
                self._deliver(*item)
            if self.spool and self._clock() >= self._retry_at:
                self._drain_spool()

    def _deliver(self, log_group: bytes, records: int) -> None:
        # Behind a non-empty spool, or while SLS is known down, a new batch waits its turn.
        if self.spool or self._clock() < self._retry_at:
            self._to_spool(log_group, records)
            return
        if not self._send(log_group, records):
            self._to_spool(log_group, records)

    def _log_group(self, logs: list[bytes]) -> bytes:
        return loggroup.encode_log_group(
            logs,
            topic=self.identity.appliance_id,
            source=self.identity.instance_id or self.identity.appliance_id,
            tags=self.identity.tags(),
        )

    def _to_spool(self, log_group: bytes, records: int) -> None:
        try:
            self.spool.append(log_group, records)
        except SpoolFull:
            if not self._lost_unreported:
                self._lost_since = self._wall_clock()
                log.error(
                    "flow record spool full: dropping records (reported when SLS is back)",
                    extra={"records": records, "spool_bytes": self.spool.bytes},
                )
            self._lost_unreported += records
            self.stats.records_lost_spool_full += records
            return
        except OSError as exc:
            # The disk failed us too: nothing left to keep the batch in. Count it, say it.
            log.error(
                "cannot write the flow record spool; dropping the batch",
                extra={"error": str(exc), "records": records},
            )
            if not self._lost_unreported:
                self._lost_since = self._wall_clock()
            self._lost_unreported += records
            self.stats.records_lost_spool_full += records
            return
        self.stats.batches_spooled += 1

    def _drain_spool(self, deadline: float | None = None) -> None:
        while True:
            batch: SpooledBatch | None = self.spool.oldest()
            if batch is None:
                break
            if deadline is not None and self._clock() > deadline:
                return
            if not self._send(batch.read(), batch.records):
                return
            self.spool.remove(batch)
        self._report_loss()

    def _report_loss(self) -> None:
        """Once SLS takes records again, tell it what the spool could not keep."""
        if not self._lost_unreported:
            return
        self._loss_reports += 1
        report = LossReport(
            record_id=f"{BOOT_ID}-spool-loss-{self._loss_reports}",
            appliance_id=self.identity.appliance_id,
            lost_records=self._lost_unreported,
            loss_reason="spool_full",
            loss_since=round(self._lost_since, 6),
            loss_until=round(self._wall_clock(), 6),
        )
        log_group = self._log_group([loggroup.encode_log(report.log_time(), report.log_contents())])
        if self._send(log_group, 0):
            log.info("reported records lost to a full spool", extra={"records": self._lost_unreported})
            self._lost_unreported = 0

    # --- sending ------------------------------------------------------------------------------------

    def _send(self, log_group: bytes, records: int) -> bool:
        """One batch, with quick retries on transient errors. False: keep it for later."""
        settings = self.settings
        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, SlsError) and e.transient),
            wait=wait_exponential_jitter(multiplier=0.2, max=2.0, jitter=0.2),
            stop=stop_after_attempt(settings.attempts) | stop_after_delay(settings.attempt_budget),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            retrying(self.sls.put_log_group, settings.logstore, log_group)
        except (SlsError, RetryError) as exc:
            self._failed(exc if isinstance(exc, SlsError) else SlsError("RetryError", str(exc)))
            return False
        if not self.stats.sls_up:
            log.info("SLS takes flow records again", extra={"spooled_batches": len(self.spool)})
        self.stats.sls_up = True
        self._backoff = 0.0
        self._retry_at = 0.0
        self.stats.records_shipped += records
        self.stats.batches_shipped += 1
        return True

    def _failed(self, error: SlsError) -> None:
        stats = self.stats
        stats.send_failures += 1
        stats.by_code[error.code] = stats.by_code.get(error.code, 0) + 1
        stats.last_error = str(error)
        if error.transient:
            self._backoff = min(max(self._backoff * 2, 1.0), self.settings.transient_backoff_max)
        else:
            self._backoff = self.settings.permanent_backoff
        self._retry_at = self._clock() + self._backoff
        if stats.sls_up:  # say it once per outage, not once per attempt
            level = logging.WARNING if error.transient else logging.ERROR
            hint = (
                ""
                if error.transient
                else " (will not succeed as configured: check credentials, project and logstore)"
            )
            log.log(
                level,
                "SLS is not taking flow records; spooling" + hint,
                extra={
                    "code": error.code,
                    "status": error.status,
                    "error": error.message,
                    "logstore": self.settings.logstore,
                    "retry_in_s": self._backoff,
                },
            )
        stats.sls_up = False
