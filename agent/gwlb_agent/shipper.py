"""Flow records to an SLS logstore: written ahead to disk, sent in order, never lost in silence.

Batches close at 4096 records, at ``batch_bytes`` of encoded LogGroup (SLS takes at most 5 MB
and 4096 logs a request; we keep headroom) or ``batch_delay`` seconds after their first record.
Every sealed batch is written to the disk spool first (write-ahead) and a sender thread sends
the spool oldest first, removing a batch only once SLS has acknowledged it. So a slow or failing
SLS never holds records in memory, a SIGKILL loses at most the open batch (the last
``batch_delay`` seconds of records), and the next start sends what is left.

A batch is sent with a few quick retries (tenacity: exponential backoff with jitter) on a
transient error; if it still fails, the sender waits (backoff doubling from ``first_backoff`` to
``transient_backoff_max``) and then probes with one attempt. Errors that cannot succeed as
configured (403: credentials; a missing logstore) are logged loudly and probed the same way,
up to ``permanent_backoff`` apart, so that a fixed key is noticed within seconds. A full spool
drops the batch, counts it, and says so in a ``kind = loss`` record when shipping resumes.

Shutdown (``close(timeout)``): the open batch is sealed to the spool, so everything not yet
acknowledged is on disk at once; the sender may keep sending until shortly before the deadline,
then its request in flight is cut off by shutting down the connection and its batch stays in the
spool. SLS PutLogs has no idempotency key (docs/api-facts.md F-SLS-4): if SLS had stored that
request before the connection went, the batch arrives twice after the restart (same record_ids;
the audit queries count each record_id once). A request SLS has not yet answered is, in the lab,
never stored once its client is gone; whether the real service can store it in that instant is
not documented. The same holds for a request that times out (``request_timeout``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tenacity import (
    RetryCallState,
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
from gwlb_fleet.sls.client import PutResult, SlsError
from gwlb_fleet.sls.flowrecord import LossReport

log = logging.getLogger("gwlb_agent.shipper")

MAX_LOGS_PER_REQUEST = 4096
# Codes and statuses that mean SLS does not accept the agent's credentials (RAM role or key).
CREDENTIAL_CODES = frozenset(
    {"Unauthorized", "InvalidAccessKeyId", "SignatureNotMatch", "SecurityTokenExpired"}
)


class SlsWriter(Protocol):
    """What the shipper needs of gwlb_fleet.sls.client.Sls."""

    def put_log_group(self, logstore: str, log_group: bytes) -> PutResult: ...

    def abort_requests(self) -> int: ...


@dataclass(frozen=True)
class ShipperSettings:
    logstore: str = "flow-logs"
    batch_records: int = MAX_LOGS_PER_REQUEST
    batch_bytes: int = 3 << 20
    batch_delay: float = 2.0
    attempts: int = 3  # quick attempts per batch while SLS is up
    attempt_budget: float = 5.0  # seconds for those attempts
    first_backoff: float = 1.0  # seconds before the first probe after a failure
    transient_backoff_max: float = 30.0
    permanent_backoff: float = 60.0  # the longest wait between probes after e.g. a 403
    slow_request: float = 2.0  # seconds: a PutLogs slower than this is logged as SLS being slow
    shutdown_budget: float = 10.0  # seconds for close() when no timeout is given


@dataclass
class ShipperStats:
    records_shipped: int = 0
    batches_shipped: int = 0
    batches_spooled: int = 0  # sealed while SLS was failing, or whose first attempt failed
    records_lost_spool_full: int = 0
    send_failures: int = 0
    last_error: str = ""
    sls_up: bool = True
    by_code: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    request_seconds_total: float = 0.0
    request_seconds_last: float = 0.0
    request_seconds_max: float = 0.0
    requests_abandoned: int = 0  # cut off at shutdown; their batches stayed in the spool


@dataclass(frozen=True)
class Identity:
    appliance_id: str
    instance_id: str = ""
    zone: str = ""

    def tags(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in (("instance_id", self.instance_id), ("zone", self.zone)) if v]


class _Batch:
    __slots__ = ("logs", "opened", "records", "size")

    def __init__(self, opened: float) -> None:
        self.logs: list[bytes] = []
        self.size = 0
        self.records = 0
        self.opened = opened


class _Stopping(Exception):
    """The request was cut off because the shipper is stopping."""


class SlsShipper:
    name = "sls"

    # Of the shutdown deadline, kept back for cutting off the request in flight and exiting.
    STOP_RESERVE = 1.0

    def __init__(
        self,
        sls: SlsWriter,
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
        self._lock = threading.Lock()  # the open batch, and sealing it
        self._batch: _Batch | None = None
        self._closed = False
        self._retry_at = 0.0  # monotonic: no attempt before this while SLS is failing
        self._backoff = 0.0
        self._failures = 0  # consecutive failed attempts
        self._outage_code = ""
        self._slow = False
        self._request_started: float | None = None  # the request in flight, if any (monotonic)
        self._backlog = bool(spool)  # records waited for SLS: say when they have all gone
        self._backlog_since = clock()
        self._lost_since = 0.0
        self._lost_unreported = 0
        self._loss_reports = 0
        self.stats = ShipperStats()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threaded = threaded
        self._sender: threading.Thread | None = None
        if threaded:
            self._sender = threading.Thread(target=self._send_loop, name="sls-sender", daemon=True)
            self._sender.start()

    # --- FlowSink -----------------------------------------------------------------------------

    def write(self, records: Sequence[LogRecord]) -> None:
        settings = self.settings
        with self._lock:
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
            if self._closed and self._batch is not None:
                # Nothing may wait in memory once closed: no sender will come for it.
                log.warning(
                    "flow records after the SLS shipper closed: spooled for the next start",
                    extra={"records": self._batch.records},
                )
                self._seal()

    def tick(self) -> None:
        with self._lock:
            batch = self._batch
            if batch is not None and self._clock() - batch.opened >= self.settings.batch_delay:
                self._seal()
        self._check_in_flight()
        if not self._threaded and not self._closed and self._clock() >= self._retry_at:
            self._drain_spool(deadline=None)  # the sender thread drains on its own

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
            "sls_spool_records": self.spool.records,
            "sls_spool_bytes": self.spool.bytes,
            "sls_records_lost_spool_full_total": stats.records_lost_spool_full,
            "sls_requests_total": stats.requests,
            "sls_request_seconds_total": round(stats.request_seconds_total, 6),
            "sls_request_seconds_last": round(stats.request_seconds_last, 6),
            "sls_request_seconds_max": round(stats.request_seconds_max, 6),
            "sls_request_in_flight_seconds": round(self._in_flight_for(), 6),
        }

    def close(self, timeout: float | None = None) -> None:
        """Seal the open batch to the spool (from then on everything unacknowledged is on disk),
        send while there is time, then cut off the request in flight; the rest waits on disk.
        Takes at most ``timeout`` seconds (None: ``shutdown_budget``)."""
        deadline = self._clock() + (self.settings.shutdown_budget if timeout is None else timeout)
        with self._lock:
            self._closed = True
            self._seal()
        send_until = deadline - min(self.STOP_RESERVE, max(0.0, deadline - self._clock()) / 2)
        # One attempt now whatever the backoff: SLS may be back, and a terminated instance's
        # disk goes with it.
        self._retry_at = 0.0
        if not self._threaded:
            self._drain_spool(deadline=send_until)
        elif self._sender is not None:
            self._send_until(send_until)
            self._stop_sender(deadline)
        left = self.spool.records
        if left:
            log.warning(
                "flow records left in the spool: sent at the next start",
                extra={"records": left, "batches": len(self.spool), "spool_dir": str(self.spool.directory)},
            )

    # --- batches ----------------------------------------------------------------------------------

    def _seal(self) -> None:
        """Write the open batch to the spool and wake the sender. Called with the lock held."""
        batch, self._batch = self._batch, None
        if batch is None or not batch.logs:
            return
        if self._to_spool(self._log_group(batch.logs), batch.records) and not self.stats.sls_up:
            self.stats.batches_spooled += 1
        self._wake.set()

    def _log_group(self, logs: list[bytes]) -> bytes:
        return loggroup.encode_log_group(
            logs,
            topic=self.identity.appliance_id,
            source=self.identity.instance_id or self.identity.appliance_id,
            tags=self.identity.tags(),
        )

    def _to_spool(self, log_group: bytes, records: int) -> bool:
        try:
            self.spool.append(log_group, records)
        except SpoolFull:
            if not self._lost_unreported:
                log.error(
                    "flow record spool full: dropping records (reported when SLS is back)",
                    extra={"records": records, "spool_bytes": self.spool.bytes},
                )
            self._count_lost(records)
            return False
        except OSError as exc:
            # The disk failed us: nothing left to keep the batch in. Count it, say it.
            log.error(
                "cannot write the flow record spool; dropping the batch",
                extra={"error": str(exc), "records": records},
            )
            self._count_lost(records)
            return False
        return True

    def _count_lost(self, records: int) -> None:
        if not self._lost_unreported:
            self._lost_since = self._wall_clock()
        self._lost_unreported += records
        self.stats.records_lost_spool_full += records

    # --- the sender -------------------------------------------------------------------------------

    def _send_loop(self) -> None:
        """The sender thread: the spool, oldest first, whenever SLS may take it."""
        while not self._stopping.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if not self._stopping.is_set() and self._clock() >= self._retry_at:
                self._drain_spool(deadline=None)

    def _send_until(self, send_until: float) -> None:
        """At close: let the sender work until the spool is empty, it backs off, or time is up."""
        self._wake.set()
        while self._clock() < send_until and len(self.spool) and self._clock() >= self._retry_at:
            time.sleep(0.02)

    def _stop_sender(self, deadline: float) -> None:
        """Stop the sender thread, cutting off its request in flight (the batch stays spooled)."""
        sender, self._sender = self._sender, None
        assert sender is not None
        self._stopping.set()
        self._wake.set()
        while sender.is_alive():
            self.sls.abort_requests()  # again each round: a request may have begun meanwhile
            sender.join(0.05)
            if self._clock() >= deadline:
                log.error("the SLS sender did not stop in time; its batch stays in the spool")
                return

    def _drain_spool(self, deadline: float | None) -> None:
        """Send spooled batches oldest first until one fails, time is up or the spool is empty."""
        while not self._stopping.is_set():
            batch: SpooledBatch | None = self.spool.oldest()
            if batch is None:
                self._drained()
                return
            if deadline is not None and self._clock() >= deadline:
                return
            if not self._send(batch.read(), batch.records, first_try=self.stats.sls_up):
                return
            self.spool.remove(batch)

    def _drained(self) -> None:
        self._report_loss()
        if self._backlog and not self._lost_unreported:
            self._backlog = False
            log.info(
                "flow record spool drained: every waiting record is in SLS",
                extra={"waited_s": round(self._clock() - self._backlog_since, 3)},
            )

    def _report_loss(self) -> None:
        """Once SLS takes records again, tell it what the spool could not keep."""
        with self._lock:  # the export thread counts losses as it seals
            lost = self._lost_unreported
        if not lost:
            return
        self._loss_reports += 1
        report = LossReport(
            record_id=f"{BOOT_ID}-spool-loss-{self._loss_reports}",
            appliance_id=self.identity.appliance_id,
            lost_records=lost,
            loss_reason="spool_full",
            loss_since=round(self._lost_since, 6),
            loss_until=round(self._wall_clock(), 6),
        )
        log_group = self._log_group([loggroup.encode_log(report.log_time(), report.log_contents())])
        if self._send(log_group, 0, first_try=True):
            log.info("reported records lost to a full spool", extra={"records": lost})
            with self._lock:
                self._lost_unreported -= lost
                self._lost_since = self._wall_clock()  # any loss since is reported from here
        else:
            self._loss_reports -= 1  # the same report, with the same id, next time

    # --- sending ------------------------------------------------------------------------------------

    def _send(self, log_group: bytes, records: int, first_try: bool) -> bool:
        """One batch: quick retries on transient errors while SLS is up, one probe while it is
        not. False: it stays in the spool for later."""
        settings = self.settings
        retrying = Retrying(
            retry=retry_if_exception(
                lambda e: isinstance(e, SlsError) and e.transient and not self._stopping.is_set()
            ),
            wait=wait_exponential_jitter(multiplier=0.2, max=2.0, jitter=0.2),
            stop=stop_after_attempt(settings.attempts if first_try else 1)
            | stop_after_delay(settings.attempt_budget),
            sleep=self._pause,
            before_sleep=self._log_quick_retry,
            reraise=True,
        )
        try:
            retrying(self._put, log_group)
        except _Stopping:
            self.stats.requests_abandoned += 1
            log.info(
                "stopping: cut off the request in flight; its batch stays in the spool (sent again "
                "at the next start; if SLS had stored it, the audit queries count it once)",
                extra={"records": records},
            )
            return False
        except (SlsError, RetryError) as exc:
            self._failed(exc if isinstance(exc, SlsError) else SlsError("RetryError", str(exc)))
            if first_try and records:
                self.stats.batches_spooled += 1
            return False
        self._succeeded(records)
        return True

    def _put(self, log_group: bytes) -> None:
        started = self._request_started = self._clock()
        try:
            self.sls.put_log_group(self.settings.logstore, log_group)
        except SlsError:
            if self._stopping.is_set():
                raise _Stopping() from None
            raise
        finally:
            self._request_started = None
            self._timed(self._clock() - started)

    def _in_flight_for(self) -> float:
        started = self._request_started
        return 0.0 if started is None else self._clock() - started

    def _check_in_flight(self) -> None:
        """From the export thread: a request SLS has not answered for a while is a slow SLS
        too, before it ever answers (the sender thread is waiting on it and cannot say so)."""
        waited = self._in_flight_for()
        if waited >= self.settings.slow_request and not self._slow:
            self._slow_now(waited, in_flight=True)

    def _slow_now(self, seconds: float, in_flight: bool) -> None:
        self._slow = True
        self._start_backlog()
        log.warning(
            "SLS is slow: flow records wait in the spool",
            extra={
                "request_s": round(seconds, 3),
                "answered": not in_flight,
                "spooled_records": self.spool.records,
            },
        )

    def _pause(self, seconds: float) -> None:
        if self._threaded:
            self._stopping.wait(seconds)  # a stop ends the wait
        else:
            self._sleep(seconds)

    def _timed(self, seconds: float) -> None:
        stats = self.stats
        stats.requests += 1
        stats.request_seconds_total += seconds
        stats.request_seconds_last = seconds
        stats.request_seconds_max = max(stats.request_seconds_max, seconds)
        if seconds >= self.settings.slow_request and not self._slow:
            self._slow_now(seconds, in_flight=False)
        elif seconds < self.settings.slow_request and self._slow:
            self._slow = False
            log.info("SLS answers promptly again", extra={"request_s": round(seconds, 3)})

    def _start_backlog(self) -> None:
        if not self._backlog:
            self._backlog = True
            self._backlog_since = self._clock()

    @staticmethod
    def _log_quick_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        log.debug(
            "SLS request failed; retrying",
            extra={"error": str(error), "attempt": state.attempt_number, "retry_in_s": round(delay, 3)},
        )

    def _succeeded(self, records: int) -> None:
        if not self.stats.sls_up:
            log.info(
                "SLS takes flow records again",
                extra={"spooled_batches": len(self.spool), "failed_attempts": self._failures},
            )
        self.stats.sls_up = True
        self._backoff = 0.0
        self._retry_at = 0.0
        self._failures = 0
        self._outage_code = ""
        self.stats.records_shipped += records
        self.stats.batches_shipped += 1

    def _failed(self, error: SlsError) -> None:
        stats = self.stats
        stats.send_failures += 1
        stats.by_code[error.code] = stats.by_code.get(error.code, 0) + 1
        stats.last_error = str(error)
        self._failures += 1
        self._start_backlog()
        settings = self.settings
        cap = settings.transient_backoff_max if error.transient else settings.permanent_backoff
        self._backoff = min(max(self._backoff * 2, settings.first_backoff), cap)
        delay = self._backoff * random.uniform(0.8, 1.0)  # agents of a fleet do not probe in step
        self._retry_at = self._clock() + delay
        if stats.sls_up or error.code != self._outage_code:
            self._outage_code = error.code
            self._log_outage(error, delay)
        else:
            log.info(
                "SLS still not taking flow records",
                extra={
                    "problem": _problem(error),
                    "failed_attempts": self._failures,
                    "retry_in_s": round(delay, 3),
                    "spooled_records": self.spool.records,
                },
            )
        stats.sls_up = False

    def _log_outage(self, error: SlsError, delay: float) -> None:
        """The first failure of an outage (or a new kind of failure): once, loudly."""
        problem = _problem(error)
        message = {
            "credentials": "SLS refuses the agent's credentials: check the RAM role or access key "
            "and its policy; flow records wait in the spool",
            "configuration": "SLS rejects the request as configured: check credentials, project and "
            "logstore; flow records wait in the spool",
            "transient": "SLS is not taking flow records; they wait in the spool",
        }[problem]
        log.log(
            logging.WARNING if problem == "transient" else logging.ERROR,
            message,
            extra={
                "problem": problem,
                "code": error.code,
                "status": error.status,
                "error": error.message,
                "logstore": self.settings.logstore,
                "retry_in_s": round(delay, 3),
                "spooled_records": self.spool.records,
            },
        )


def _problem(error: SlsError) -> str:
    if error.code in CREDENTIAL_CODES or error.status in (401, 403):
        return "credentials"
    return "transient" if error.transient else "configuration"
