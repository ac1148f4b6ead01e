"""Function Compute's asynchronous invocation, in process: the real handlers (functions/*.py)
run on a small pool of workers, the way EventBridge and FC deliver to them in the cloud.

- Each delivery is one invocation of ``gwlb_functions.<name>.handler(event_bytes, context)`` with a
  context that has a request id and the time left (``FUNCTION_TIMEOUT_S``).
- At least once: a handler that raises is invoked again with the same bytes after a delay
  (``retry_delays_s``), ``attempts`` times in all (the first, then as many retries as template.yml
  gives its most patient function, lifecycle); then the event is a dead letter, kept with its
  error, as FC's dead-letter destination would.
- Invocations are recorded (the last few hundred) for the live view and the report.
"""

from __future__ import annotations

import collections
import heapq
import importlib
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gwlb_functions import ASYNC_RETRIES

log = logging.getLogger("gwlb_lab.cloud.functions")

Handler = Callable[[bytes, Any], dict[str, Any]]
RECENT = 400
ATTEMPTS = 1 + max(ASYNC_RETRIES.values())


@dataclass
class Context:
    """What the handlers read of FC's invocation context."""

    function_name: str
    timeout_s: float
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


@dataclass(order=True)
class Delivery:
    due: float  # monotonic
    seq: int
    function: str = field(compare=False)
    payload: bytes = field(compare=False)
    source: str = field(compare=False)  # what sent it: "ess hook", "alarm", "timer", "continuation"
    attempt: int = field(default=1, compare=False)
    first_at: float = field(default_factory=time.time, compare=False)


def real_handlers(names: Sequence[str]) -> dict[str, Handler]:
    """The product's handlers, imported as FC imports them (``gwlb_functions.<name>.handler``)."""
    return {name: importlib.import_module(f"gwlb_functions.{name}").handler for name in names}


def summary(payload: bytes) -> str:
    """A line about an event, for people: its type and what it is about."""
    try:
        event = json.loads(payload)
    except ValueError:
        return payload[:80].decode(errors="replace")
    if "triggerName" in event:
        return f"timer {event['triggerName']}"
    data = event.get("data") or {}
    kind = str(event.get("type", "?")).split(":")[-1]
    if "messageBody" in data:  # a CloudMonitor alarm from its MNS queue (gwlb_fleet.events)
        try:
            alarm = json.loads(data["messageBody"])
            return f"alarm {alarm['ruleName']} {alarm['curLevel']}"
        except (ValueError, KeyError, TypeError):
            return f"{kind} (not an alarm)"
    if "instance_id" in data:
        return f"continue {data['instance_id']}: {data.get('reason', '')}"[:120]
    if "instanceIds" in data:
        return f"{kind} hook {','.join(data['instanceIds'])}"
    return kind


class FunctionRunner:
    def __init__(self, handlers: Mapping[str, Handler], timeout_s: float, workers: int = 4,
                 attempts: int = ATTEMPTS, retry_delays_s: Sequence[float] = (1.0, 2.0, 4.0)) -> None:
        self.handlers = dict(handlers)
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.retry_delays_s = tuple(retry_delays_s) or (1.0,)
        self._queue: list[Delivery] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stop = False
        self._busy = 0
        self._workers = [threading.Thread(target=self._work, name=f"fc-{n}", daemon=True)
                         for n in range(workers)]
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT)
        self.dead_letters: list[dict[str, Any]] = []
        self.counts: collections.Counter[str] = collections.Counter()  # "<function> <outcome>"

    def start(self) -> None:
        for worker in self._workers:
            worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def submit(self, function: str, payload: bytes, source: str, delay_s: float = 0.0) -> None:
        if function not in self.handlers:
            raise KeyError(f"no function {function!r}")
        self._push(Delivery(time.monotonic() + delay_s, next(self._seq), function, payload, source))

    def _push(self, delivery: Delivery) -> None:
        with self._cond:
            heapq.heappush(self._queue, delivery)
            self._cond.notify()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self._busy

    def _next(self) -> Delivery | None:
        with self._cond:
            while not self._stop:
                now = time.monotonic()
                if self._queue and self._queue[0].due <= now:
                    self._busy += 1
                    return heapq.heappop(self._queue)
                wait = self._queue[0].due - now if self._queue else 1.0
                self._cond.wait(min(wait, 1.0))
            return None

    def _work(self) -> None:
        while (delivery := self._next()) is not None:
            try:
                self._invoke(delivery)
            finally:
                with self._cond:
                    self._busy -= 1

    def _invoke(self, delivery: Delivery) -> None:
        context = Context(delivery.function, self.timeout_s)
        started = time.time()
        record: dict[str, Any] = {
            "time": started, "function": delivery.function, "source": delivery.source,
            "event": summary(delivery.payload), "attempt": delivery.attempt,
            "request_id": context.request_id,
        }
        try:
            result = self.handlers[delivery.function](delivery.payload, context)
        except Exception as exc:  # noqa: BLE001 - FC retries whatever a handler raised
            record.update(outcome="error", error=f"{type(exc).__name__}: {exc}"[:300],
                          seconds=round(time.time() - started, 3))
            self.counts[f"{delivery.function} error"] += 1
            self.recent.append(record)
            self._failed(delivery, record["error"])
            return
        record.update(outcome="ok", result=_short(result), seconds=round(time.time() - started, 3))
        self.counts[f"{delivery.function} ok"] += 1
        self.recent.append(record)

    def _failed(self, delivery: Delivery, error: str) -> None:
        if delivery.attempt >= self.attempts:
            letter = {"time": time.time(), "function": delivery.function, "source": delivery.source,
                      "event": summary(delivery.payload), "attempts": delivery.attempt,
                      "error": error, "first_at": delivery.first_at}
            self.dead_letters.append(letter)
            log.error("dead letter: the event failed every attempt", extra=letter)
            return
        delay = self.retry_delays_s[min(delivery.attempt - 1, len(self.retry_delays_s) - 1)]
        log.warning("invocation failed; FC retries it", extra={
            "function": delivery.function, "attempt": delivery.attempt, "retry_in_s": delay,
            "error": error})
        self._push(Delivery(time.monotonic() + delay, next(self._seq), delivery.function,
                            delivery.payload, delivery.source, delivery.attempt + 1, delivery.first_at))


def _short(result: Any) -> str:
    text = json.dumps(result, default=str, separators=(",", ":"))
    return text if len(text) <= 300 else text[:297] + "..."
