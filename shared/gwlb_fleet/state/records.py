"""The control plane's state: one record per instance, one per processed event.

Instance records carry the lifecycle state machine::

    launching -> ready -> in_service -> draining -> delicensed -> gone
         \\________________________________________________________/^  (abandoned launches)

and the verified steps of the flows that move them (``steps``): a step is recorded only after
its side effect was read back. Every update is a compare-and-set on ``version``: two invocations
racing on one instance cannot both win; the loser reloads and re-decides.

Idempotency records make a delivered-twice event harmless: one conditional write creates the
record *in progress*, expiring at invocation start plus the function timeout (so that a crashed
invocation does not block its retry forever); the result is stored when it completes and a
duplicate gets that result.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

InstanceState = Literal["launching", "ready", "in_service", "draining", "delicensed", "gone"]

# Which state may follow which. "gone" is reachable from anywhere: an instance can vanish.
TRANSITIONS: dict[str, frozenset[str]] = {
    "launching": frozenset({"ready", "draining", "gone"}),
    "ready": frozenset({"in_service", "draining", "gone"}),
    "in_service": frozenset({"draining", "gone"}),
    "draining": frozenset({"delicensed", "gone"}),
    "delicensed": frozenset({"gone"}),
    "gone": frozenset(),
}


@dataclass(frozen=True)
class InstanceRecord:
    instance_id: str
    scaling_group_id: str
    state: InstanceState = "launching"
    version: int = 0
    zone: str = ""
    private_ip: str = ""
    data_ip: str = ""
    data_eni_id: str = ""  # the ENI registered in the GWLB server group (ServerType Eni, F-GWLB-2)
    serial: str = ""
    hook_id: str = ""
    hook_token: str = ""
    hook_transition: str = ""
    hook_deadline: float = 0.0  # epoch seconds the open lifecycle hook times out
    phase_deadline: float = 0.0  # epoch seconds the current wait (readiness, drain) gives up
    steps: dict[str, float] = field(default_factory=dict)  # verified step -> epoch seconds
    created: float = 0.0
    updated: float = 0.0
    last_error: str = ""
    # --- what the workflows remember between invocations -----------------------------------------
    # The hook event that created the record, and its scaling activity.
    hook_event: str = ""
    activity_id: str = ""
    # Reconcile adopted the instance (an ESS instance with no record): its ESS lifecycle state then.
    adopted: str = ""
    # Launch: the serial a firewall showed before it was ready (it may hold a licence already).
    serial_seen: str = ""
    # Why the instance is leaving: a launch given up (ends in ABANDON), or a terminate started.
    abandoned: str = ""
    terminate_reason: str = ""
    # The lifecycle hook: the last heartbeat sent, and when ESS was found to have finished it alone.
    last_heartbeat: float = 0.0
    hook_expired: float = 0.0
    # The current lifecycle action's heartbeat budget (F-ESS-6: 20 heartbeats, 6 hours): when we
    # took the action, the heartbeats sent for it, and when the budget ran out (no more are sent).
    hook_started: float = 0.0
    heartbeats: int = 0
    hook_budget_spent: float = 0.0
    # Health: consecutive unhealthy checks, the last one's time, when ESS was told to replace it.
    unhealthy_seen: int = 0
    unhealthy_last_seen: float = 0.0
    replacing_since: float = 0.0
    # Terminate: the GWLB group left, how it ended (a member still draining, live flows cut)...
    server_group_id: str = ""
    member_left_draining: bool = False
    flows_cut: int = 0
    # ... and the Panorama commit: the job running, failures in a row, the last failure, the last OK.
    commit_job: str = ""
    commit_failures: int = 0
    commit_failed_at: float = 0.0
    last_commit_job: str = ""
    # The one continuation the workflow waits for, and when it is due (workflows.context).
    next_continuation: str = ""
    next_continuation_due: float = 0.0
    # Licence release: deactivations that read back still licensed, and when the next may start.
    release_attempts: int = 0
    release_retry_at: float = 0.0
    # Steps given up after their bounded attempts (step -> why): never counted as done.
    given_up: dict[str, str] = field(default_factory=dict)

    def done(self, step: str) -> bool:
        return step in self.steps

    def gave_up(self, step: str) -> bool:
        return step in self.given_up

    def with_step(self, step: str, at: float) -> InstanceRecord:
        return replace(self, steps={**self.steps, step: at})

    def with_action(self, hook_id: str, token: str, now: float, timeout_s: float) -> InstanceRecord:
        """Take a lifecycle action: a token other than the one held is a new action, timing out
        ``timeout_s`` from now, with a fresh heartbeat budget (F-ESS-6 counts per action)."""
        if token and token != self.hook_token:
            return replace(
                self,
                hook_id=hook_id,
                hook_token=token,
                hook_started=now,
                hook_deadline=now + timeout_s,
                heartbeats=0,
                hook_budget_spent=0.0,
            )
        return replace(self, hook_id=hook_id, hook_token=token)

    def moved_to(self, state: InstanceState) -> InstanceRecord:
        if state != self.state and state not in TRANSITIONS[self.state]:
            raise ValueError(f"{self.instance_id}: {self.state} -> {state} is not a transition")
        return replace(self, state=state)


@dataclass(frozen=True)
class GroupRecord:
    """Per scaling group: what the scale and health flows must remember between events."""

    group_id: str
    version: int = 0
    last_scale_out: float = 0.0  # epoch seconds of the last scale-out decision carried out
    last_scale_in: float = 0.0
    vm_auth_key_expires: float = 0.0  # the bootstrap key in the scaling configuration
    # Reconcile's release of orphan Panorama devices (F-PAN-2, F-PAN-3): the commit job it waits
    # for, the serials that commit releases, and licences the plugin still listed after one.
    orphan_commit_job: str = ""
    orphan_serials: str = ""  # comma-separated
    orphan_unreleased: str = ""  # comma-separated


IdempotencyStatus = Literal["in_progress", "completed"]


@dataclass(frozen=True)
class IdempotencyRecord:
    key: str
    status: IdempotencyStatus
    expires_at: float  # epoch seconds; an in-progress record past it counts as expired
    result: dict[str, Any] | None = None


class VersionConflict(Exception):
    """A compare-and-set lost: someone else updated the record first."""


class AlreadyExists(Exception):
    pass


class StateStore(Protocol):
    # --- instances --------------------------------------------------------------------------
    def get_instance(self, instance_id: str) -> InstanceRecord | None: ...

    def create_instance(self, record: InstanceRecord) -> InstanceRecord:
        """Insert with version 1. Raises AlreadyExists if the instance has a record."""
        ...

    def update_instance(self, record: InstanceRecord) -> InstanceRecord:
        """Write ``record`` if the stored version is still ``record.version``; returns it with
        the version incremented. Raises VersionConflict otherwise."""
        ...

    def list_instances(self, scaling_group_id: str) -> list[InstanceRecord]: ...

    # --- groups --------------------------------------------------------------------------------------
    def get_group(self, group_id: str) -> GroupRecord | None: ...

    def put_group(self, record: GroupRecord) -> GroupRecord:
        """Create (version 0 -> 1) or compare-and-set update, like instances."""
        ...

    # --- idempotency --------------------------------------------------------------------------------
    def begin(self, key: str, now: float, expires_at: float) -> IdempotencyRecord | None:
        """One conditional write: create the record in progress, or take over an expired one.
        Returns None when it is ours now, else the existing (live) record."""
        ...

    def complete(self, key: str, result: dict[str, Any], keep_until: float) -> None: ...

    def release(self, key: str) -> None:
        """Drop an in-progress record after a failure, so that the retry can run at once."""
        ...
