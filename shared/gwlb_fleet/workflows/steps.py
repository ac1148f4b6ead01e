"""Running a workflow as a list of verified steps, across as many invocations as it takes.

A step looks at the world, does its side effect if it is still needed, reads it back, and only
then returns ``Done`` — which the runner records (compare-and-set) before going on. A step that
must wait returns ``Wait``: the runner does what the workflow asks of a wait (``while_waiting``:
the lifecycle workflows keep their hook alive), schedules a continuation and ends the invocation;
nothing sleeps. Because a step checks before it acts, running it twice (a duplicate event, a crash
between the side effect and the record, a race) does no harm.

What a step learnt goes on the instance's record as declared fields (``fields``, a ``StepFields``),
applied with ``dataclasses.replace``: a name the record does not declare fails, in mypy and when run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypedDict

from gwlb_fleet.errors import FleetError, TransientError, VerificationFailed
from gwlb_fleet.state.records import InstanceRecord, InstanceState
from gwlb_fleet.workflows.context import WorkflowContext

log = logging.getLogger("gwlb_fleet.workflows")


class StepFields(TypedDict, total=False):
    """The instance record's fields a step may set with its result (each typed as on the record,
    which mypy checks where they are applied)."""

    zone: str
    private_ip: str
    data_ip: str
    data_eni_id: str
    serial: str
    serial_seen: str
    server_group_id: str
    member_left_draining: bool
    flows_cut: int
    commit_job: str
    commit_failures: int
    commit_failed_at: float
    last_commit_job: str
    last_error: str
    release_attempts: int
    release_retry_at: float


@dataclass(frozen=True)
class Done:
    """The step's effect is verified. ``fields`` are recorded with it; with ``audited`` they also
    go into the step's audit event, as inputs."""

    note: str = ""
    fields: StepFields = field(default_factory=lambda: StepFields())
    audited: bool = False


@dataclass(frozen=True)
class Wait:
    """Not yet: ``reason`` says what for; ``fields`` are recorded while the workflow waits."""

    reason: str
    fields: StepFields = field(default_factory=lambda: StepFields())


@dataclass(frozen=True)
class GiveUp:
    """The step tried as often as it may and the world still disagrees: it is recorded as given
    up (never as done), audited as failed with the alarm metric, and the workflow goes on to the
    next step. ``fields`` are recorded with it."""

    reason: str
    fields: StepFields = field(default_factory=lambda: StepFields())


StepResult = Done | Wait | GiveUp
StepFn = Callable[[WorkflowContext, InstanceRecord], StepResult]
# What a workflow does each time it waits, before the continuation is scheduled.
WhileWaiting = Callable[[WorkflowContext, InstanceRecord], None]


@dataclass(frozen=True)
class Step:
    name: str
    run: StepFn
    enters: InstanceState | None = None  # the state the record moves to once the step is done


@dataclass(frozen=True)
class Progress:
    instance_id: str
    state: str
    waiting_for: str = ""
    steps_done: tuple[str, ...] = ()


def run_steps(
    ctx: WorkflowContext,
    instance_id: str,
    steps: Sequence[Step],
    while_waiting: WhileWaiting | None = None,
) -> Progress:
    """Do the steps not yet done, in order, until one waits, the deadline nears, or all are."""
    record = ctx.app.state.get_instance(instance_id)
    if record is None:
        return Progress(instance_id, "unknown")
    done_now: list[str] = []
    for step in steps:
        if record.done(step.name) or record.gave_up(step.name):
            continue
        if not ctx.deadline.allows(ctx.settings.api_timeout_s):
            ctx.continue_later(instance_id, f"out of time before {step.name}")
            return Progress(instance_id, record.state, f"time: {step.name}", tuple(done_now))
        try:
            result = step.run(ctx, record)
        except (VerificationFailed, TransientError) as exc:
            # Not done, and said so; tried again on the next look (continuation or timer).
            _note_error(ctx, instance_id, f"{step.name}: {exc}")
            ctx.audit(step.name, "failed", str(exc), instance_id)
            result = Wait(f"{step.name} failed: {exc}")
        except FleetError as exc:
            # Permanent: trying again will fail the same way. The record says why the instance
            # is stuck, the operator is alarmed, and the invocation fails (FC retries it, then
            # the dead letter keeps the event).
            _note_error(ctx, instance_id, f"{step.name}: {exc}")
            ctx.alarm(step.name, f"permanent failure: {exc}", instance_id)
            raise
        if isinstance(result, GiveUp):
            record = _record_given_up(ctx, instance_id, step, result) or record
            ctx.alarm(step.name, f"given up: {result.reason}", instance_id)
            continue
        if isinstance(result, Wait):
            record = _record_wait(ctx, instance_id, result) or record
            if while_waiting is not None:
                while_waiting(ctx, record)
            ctx.continue_later(instance_id, result.reason)
            return Progress(instance_id, record.state, result.reason, tuple(done_now))
        updated = _record_done(ctx, instance_id, step, result)
        if updated is None:
            return Progress(instance_id, "unknown")
        record = updated
        done_now.append(step.name)
        ctx.audit(
            step.name,
            "ok",
            result.note or f"{step.name} verified",
            instance_id,
            state=record.state,
            **(result.fields if result.audited else {}),
        )
    return Progress(instance_id, record.state, "", tuple(done_now))


def _record_done(ctx: WorkflowContext, instance_id: str, step: Step, result: Done) -> InstanceRecord | None:
    def change(current: InstanceRecord) -> InstanceRecord:
        updated = current.with_step(step.name, ctx.now())
        # What went wrong before is over, but a step given up stays the record's error.
        still_wrong = "; ".join(f"{name}: {why}" for name, why in updated.given_up.items())[:500]
        updated = replace(replace(updated, last_error=still_wrong), **result.fields)
        if step.enters is not None and updated.state != step.enters:
            updated = updated.moved_to(step.enters)
        return updated

    return ctx.update(instance_id, change)


def _record_given_up(
    ctx: WorkflowContext, instance_id: str, step: Step, result: GiveUp
) -> InstanceRecord | None:
    def change(current: InstanceRecord) -> InstanceRecord:
        given_up = {**current.given_up, step.name: result.reason[:500]}
        updated = replace(current, given_up=given_up, **result.fields)
        return replace(updated, last_error=f"{step.name}: {result.reason}"[:500])

    return ctx.update(instance_id, change)


def _record_wait(ctx: WorkflowContext, instance_id: str, result: Wait) -> InstanceRecord | None:
    if not result.fields:
        return None
    return ctx.update(instance_id, lambda r: replace(r, **result.fields))


def _note_error(ctx: WorkflowContext, instance_id: str, error: str) -> None:
    ctx.update(instance_id, lambda r: replace(r, last_error=error[:500]))
