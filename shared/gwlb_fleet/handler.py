"""The frame every FC handler uses: decode -> parse -> log context -> idempotency -> domain.

A handler module is one line over a workflow's ``handle(event, ctx)``::

    handler = fc_handler("scale", accepts=(AlarmEvent,))(scaling.handle)

The frame builds the workflow's context (gwlb_fleet.workflows.context.WorkflowContext) from the
process's App (gwlb_fleet.app.get_app), the event and FC's invocation context: the workflow sees
the ports, the deadline and the ids, nothing of FC.

A batch (the queue trigger's event-streaming form, a JSON list: F-FCT-4) is handled one event
after the other, each with its own idempotency record; the result is ``{"results": [...]}``. If
one fails the invocation fails, and FC's retry skips those already completed.

Idempotency: the key is a hash of the function name and the event's identity ((source, id) for
EventBridge; for a CloudMonitor alarm the alarm's own rule, batch, time and level, so that the
same notification in two MNS messages is one decision (F-FCT-5); trigger name and time for the
timer). One conditional write creates the record *in
progress*, expiring at invocation start plus the function timeout: a duplicate delivered after
completion gets the first result; one delivered while the first still runs waits a little, then
fails cleanly (FC retries it later); after a crash the record expires and the retry runs.

Errors: a ``BadEvent`` is logged with the event id and the field, and raised before anything is
done — FC's bounded async retries fail the same way at once and then send it to the dead-letter
destination. Any other error releases the record and is raised, so that FC retries the event.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gwlb_fleet import logs
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import BadEvent, TransientError
from gwlb_fleet.events import AlarmEvent, Event, TimerEvent, parse_events
from gwlb_fleet.state.records import StateStore
from gwlb_fleet.workflows.context import WorkflowContext

if TYPE_CHECKING:
    from gwlb_fleet.app import App

log = logging.getLogger("gwlb_fleet.handler")

RESULT_RETENTION_S = 24 * 3600  # EventBridge and FC retry within hours, not days
DUPLICATE_WAIT_S = 5.0


class DuplicateInProgress(TransientError):
    """The same event is being handled by another invocation right now."""


def event_identity(event: Event) -> str:
    if isinstance(event, TimerEvent | AlarmEvent):
        return event.dedup_key
    return event.envelope.dedup_key


def event_id(event: Event) -> str:
    return event.dedup_key if isinstance(event, TimerEvent) else event.envelope.id


def idempotency_key(function: str, event: Event) -> str:
    return hashlib.sha256(f"{function}\n{event_identity(event)}".encode()).hexdigest()[:40]


# A workflow's ``handle``: the event is one of the types the function accepts (checked when it
# is parsed), so it is typed by each workflow, not here.
Domain = Callable[[Any, WorkflowContext], dict[str, Any]]
# FC's handler: the event's bytes and FC's invocation context (an SDK object, or None locally).
FcHandler = Callable[[bytes, Any], dict[str, Any]]


def fc_handler(
    function: str,
    accepts: tuple[type[Event], ...],
) -> Callable[[Domain], FcHandler]:
    """Wrap a workflow's ``handle(event, ctx)`` as an FC handler ``handler(event: bytes, context)``."""

    def decorate(domain: Domain) -> FcHandler:
        @functools.wraps(domain)
        def handler(raw: bytes, context: Any = None) -> dict[str, Any]:
            started = time.time()
            request_id = str(getattr(context, "request_id", "") or "local")
            with logs.bound(function=function, request_id=request_id):
                app = _process_app()
                events = _parse(raw, accepts)
                deadline = Deadline.from_fc_context(context, app.settings.function_timeout_s)
                results = []
                for event in events:
                    ctx = WorkflowContext(app, deadline, function, event_id(event), request_id)
                    with logs.bound(correlation_id=ctx.correlation_id):
                        results.append(
                            _run_once(domain, event, ctx, started + app.settings.function_timeout_s)
                        )
                return results[0] if len(results) == 1 else {"results": results}

        return handler

    return decorate


def _process_app() -> App:
    # Imported here: gwlb_fleet.app is the wiring, read at the first event, not at import.
    from gwlb_fleet.app import get_app

    app = get_app()
    # FC replaces the role's STS credentials while an instance lives on (F-FC-1, F-FC-2): read
    # them at every invocation; clients built with older ones are rebuilt on first use.
    app.refresh_credentials()
    return app


def _parse(raw: bytes, accepts: tuple[type[Event], ...]) -> list[Event]:
    try:
        events = parse_events(raw)
    except BadEvent as exc:
        log.error(
            "rejecting an event that does not parse",
            extra={"event_id": exc.event_id, "field": exc.field, "error": str(exc)},
        )
        raise
    for event in events:
        if not isinstance(event, accepts):
            names = ", ".join(a.__name__ for a in accepts)
            error = BadEvent(
                f"this function takes {names}, not {type(event).__name__}", "type", event_id(event)
            )
            log.error(
                "rejecting an event meant for another function",
                extra={"event_id": error.event_id, "error": str(error)},
            )
            raise error
    return events


def _run_once(domain: Domain, event: Event, ctx: WorkflowContext, expires_at: float) -> dict[str, Any]:
    """``expires_at``: invocation start plus the function timeout, when FC has surely killed it."""
    state = ctx.app.state
    key = idempotency_key(ctx.function, event)
    existing = state.begin(key, time.time(), expires_at)
    waited_until = time.monotonic() + min(DUPLICATE_WAIT_S, ctx.deadline.remaining())
    while existing is not None and existing.status == "in_progress" and time.monotonic() < waited_until:
        time.sleep(0.25)
        existing = state.begin(key, time.time(), expires_at)
    if existing is not None:
        if existing.status == "completed":
            log.info("duplicate delivery: returning the first result", extra={"idempotency_key": key})
            return dict(existing.result or {})
        raise DuplicateInProgress(f"event {ctx.correlation_id} is being handled by another invocation")
    try:
        result = domain(event, ctx)
    except Exception:
        _release(state, key)
        raise
    state.complete(key, result, keep_until=time.time() + RESULT_RETENTION_S)
    return result


def _release(state: StateStore, key: str) -> None:
    """Let FC's retry run at once. If the store fails here, the domain's error is still the one
    raised: the record then expires on its own and the retry runs after that."""
    try:
        state.release(key)
    except Exception:
        log.exception("could not release the idempotency record", extra={"idempotency_key": key})
