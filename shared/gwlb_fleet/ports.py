"""The control plane's ports: what the flows need from each cloud and vendor service.

Each port is a Protocol; ``fleet/adapters`` holds the real adapters (vendor SDKs) and
``fleet/fakes`` in-memory fakes that keep state and fail with the services' own error codes.
Adapters retry only transient errors, inside themselves, within the invocation's ``Deadline``;
anything else surfaces as a ``gwlb_fleet.errors`` domain error. Calls are idempotent where the
service allows: "already registered", "already removed", "already gone" are success.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.geneve import GENEVE_PORT

# --- GWLB ----------------------------------------------------------------------------------------

MemberStatus = Literal["Adding", "Available", "Draining", "Removing", "Replacing"]
HealthStatus = Literal["Healthy", "Unhealthy", "Initial", "Unused", "Unavailable"]


ServerType = Literal["Ecs", "Eni", "Eci", "Ip"]  # F-GWLB-1


@dataclass(frozen=True, slots=True)
class Member:
    server_id: str  # the appliance's data ENI id (ServerType Eni, F-GWLB-2)
    server_ip: str
    status: MemberStatus
    port: int = GENEVE_PORT
    server_type: ServerType = "Eni"


@dataclass(frozen=True, slots=True)
class MemberHealth:
    server_id: str
    server_ip: str
    status: HealthStatus
    reason: str = ""


class GwlbPort(Protocol):
    def add_server(self, server_group_id: str, eni_id: str, eni_ip: str, deadline: Deadline) -> None:
        """Ask for the appliance's data ENI to be added as a member (``ServerType Eni``, F-GWLB-2;
        asynchronous: it starts as Adding). Idempotent."""
        ...

    def remove_server(
        self,
        server_group_id: str,
        server_id: str,
        server_ip: str,
        deadline: Deadline,
        server_type: ServerType = "Eni",
    ) -> None:
        """Ask for the member to be removed, with the group's connection draining (the way it was
        added: an ENI, or an ``Ecs`` member left by an older version). Idempotent: a member that
        is not there is success."""
        ...

    def list_members(self, server_group_id: str, deadline: Deadline) -> list[Member]: ...

    def listener_health(self, listener_id: str, deadline: Deadline) -> list[MemberHealth]: ...


# --- ESS -----------------------------------------------------------------------------------------

LifecycleResult = Literal["CONTINUE", "ABANDON", "ROLLBACK"]
Transition = Literal["SCALE_OUT", "SCALE_IN"]


@dataclass(frozen=True, slots=True)
class ScalingGroup:
    group_id: str
    min_size: int
    max_size: int
    desired: int | None
    total: int  # instances in the group, any state
    lifecycle_state: str  # Active | Inactive | Deleting
    scaling_configuration_id: str = ""


@dataclass(frozen=True, slots=True)
class ScalingInstance:
    instance_id: str
    lifecycle_state: (
        str  # InService | Pending | Pending:Wait | Removing | Removing:Wait | Protected | Standby
    )
    health_status: Literal["Healthy", "Unhealthy"]
    zone: str = ""
    created: str = ""  # ESS's creation time, for "oldest first" tie breaks


@dataclass(frozen=True, slots=True)
class LifecycleAction:
    hook_id: str
    token: str
    instance_ids: tuple[str, ...]
    transition: Transition | None = None
    status: str = ""  # Pending | Timeout | Proceed | Abandon


@dataclass(frozen=True, slots=True)
class ScalingActivity:
    activity_id: str
    status: str  # InProgress | Successful | Failed | Rejected ...
    description: str = ""


class EssPort(Protocol):
    def describe_group(self, group_id: str, deadline: Deadline) -> ScalingGroup: ...

    def list_instances(self, group_id: str, deadline: Deadline) -> list[ScalingInstance]: ...

    def in_progress_activities(self, group_id: str, deadline: Deadline) -> list[ScalingActivity]: ...

    def lifecycle_actions(self, activity_id: str, deadline: Deadline) -> list[LifecycleAction]:
        """Pending lifecycle actions of a scaling activity: recovers a lost hook token."""
        ...

    def heartbeat(self, hook_id: str, token: str, timeout_s: int, deadline: Deadline) -> None: ...

    def complete(self, hook_id: str, token: str, result: LifecycleResult, deadline: Deadline) -> None:
        """Finish a lifecycle action. An action that is already finished is success."""
        ...

    def scale_by(self, group_id: str, delta: int, deadline: Deadline) -> str:
        """Change the group's size by ``delta`` (a scaling activity; ESS serialises them).
        Returns the activity id. Raises ScalingConflict while another activity runs."""
        ...

    def remove_instances(self, group_id: str, instance_ids: Sequence[str], deadline: Deadline) -> str:
        """Remove exactly these instances (their scale-in hooks run), lowering the desired size."""
        ...

    def set_instance_health(self, instance_id: str, healthy: bool, deadline: Deadline) -> None: ...

    def update_user_data(
        self, scaling_configuration_id: str, user_data_b64: str, deadline: Deadline
    ) -> None: ...


# --- ECS -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EcsInstance:
    instance_id: str
    status: str  # Pending | Starting | Running | Stopping | Stopped
    private_ip: str  # the primary ENI's address (management)
    zone: str
    data_ip: str = ""  # the data interface's address, where the GWLB sends Geneve


@dataclass(frozen=True, slots=True)
class NetworkInterface:
    """An ENI attached to an instance (F-ECS-1, DescribeNetworkInterfaces)."""

    eni_id: str
    instance_id: str
    type: Literal["Primary", "Secondary"]
    private_ip: str  # the ENI's primary private address (``PrivateIpAddress``)
    status: str = ""  # Available | Attaching | InUse | Detaching | Deleting
    device_index: int | None = None  # Attachment.DeviceIndex, when ECS reports it
    vswitch_id: str = ""


class EcsPort(Protocol):
    def describe_instances(self, instance_ids: Sequence[str], deadline: Deadline) -> list[EcsInstance]:
        """Instances that exist; ids that are gone are simply absent."""
        ...

    def network_interfaces(self, instance_id: str, deadline: Deadline) -> list[NetworkInterface]:
        """The ENIs attached to the instance, primary and secondary (F-ECS-1)."""
        ...


# --- CloudMonitor ----------------------------------------------------------------------------------

# Counted once per workflow step that failed for good (``WorkflowContext.alarm``), in the series
# {STEP_FAILURE_DIMENSION: <scaling group>} and no application group; `gwlb-fleet setup`'s operator
# rule watches exactly that series (``gwlb_fleet.deploy.plan.step_failure_rule``). Here, not in the
# workflows, because deploy may not import them.
STEP_FAILURE_METRIC = "gwlb_fleet_step_failures"
STEP_FAILURE_DIMENSION = "scaling_group_id"


@dataclass(frozen=True, slots=True)
class MetricPoint:
    name: str
    value: float
    dimensions: dict[str, str] = field(default_factory=dict)
    time_ms: int = 0
    group_id: int = 0  # CloudMonitor application group, 0 = none


class MonitorPort(Protocol):
    def put_custom_metrics(self, points: Sequence[MetricPoint], deadline: Deadline) -> None:
        """Publish points (the adapter sends at most 21 a call, CloudMonitor's limit)."""
        ...


# --- Panorama and licences ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PanDevice:
    serial: str
    ip: str
    hostname: str = ""
    connected: bool = False
    device_group: str = ""
    template_stack: str = ""


@dataclass(frozen=True, slots=True)
class CommitJob:
    job_id: str
    status: str  # ACT | PEND | FIN
    result: str  # PEND | OK | FAIL
    details: str = ""

    @property
    def finished(self) -> bool:
        return self.status == "FIN"

    @property
    def succeeded(self) -> bool:
        return self.finished and self.result == "OK"


class PanoramaPort(Protocol):
    def devices(self, deadline: Deadline) -> list[PanDevice]:
        """Managed devices with their connection state, device group and template stack."""
        ...

    def remove_from_device_group(self, serial: str, device_group: str, deadline: Deadline) -> None: ...

    def remove_from_template_stack(self, serial: str, template_stack: str, deadline: Deadline) -> None: ...

    def remove_managed_device(self, serial: str, deadline: Deadline) -> None: ...

    def commit(self, description: str, deadline: Deadline) -> str:
        """Start a Panorama commit; the job id, or "" when there is nothing to commit (the
        changes were committed before: ``job("")`` is a finished, successful job)."""
        ...

    def job(self, job_id: str, deadline: Deadline) -> CommitJob: ...

    def generate_vm_auth_key(self, lifetime_hours: int, deadline: Deadline) -> str:
        """A new bootstrap vm-auth-key (``request bootstrap vm-auth-key generate``)."""
        ...


class LicensingPort(Protocol):
    def deactivate(self, serial: str, deadline: Deadline) -> None:
        """Release the firewall's licence. Already released is success."""
        ...

    def is_licensed(self, serial: str, deadline: Deadline) -> bool:
        """Read back: does the licence server still count this serial as licensed?"""
        ...


# --- the appliance's own agent --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApplianceStatus:
    healthy: bool
    draining: bool
    active_flows: int


class AppliancePort(Protocol):
    def status(self, data_ip: str, serial: str, deadline: Deadline) -> ApplianceStatus | None:
        """The appliance's view of itself, or None if it does not answer. Linux NVA: the agent's
        /status on the data interface. VM-Series: PAN-OS's session count, through Panorama
        (``serial``) or the firewall's API, and its health-check port on the data interface."""
        ...


# --- continuation: waiting across invocations -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A workflow's request to look at one instance again: which, why, and the id of the
    continuation event, which the instance's record names as the one it expects."""

    instance_id: str
    reason: str
    event_id: str


class SchedulerPort(Protocol):
    def follow_up(self, work: FollowUp, delay_s: int, deadline: Deadline) -> None:
        """Deliver ``work`` as a continuation event (gwlb_fleet.events.ContinueEvent) after
        ``delay_s`` seconds to the function that continues workflows — which one is the adapter's
        wiring (FC: an asynchronous invocation with a delay). How a workflow waits without
        sleeping inside one invocation."""
        ...


# --- secrets: KMS Secrets Manager ------------------------------------------------------------------------


class SecretsPort(Protocol):
    """Secret values by their names (Panorama's API key, licence auth codes): read through the
    function's role at run time, never from the environment (F-KMS-1). A value is a plain
    ``str`` only as long as it is used: callers never log it, never store it in a record."""

    def get(self, name: str, deadline: Deadline) -> str:
        """The secret's current value (stage ACSCurrent). An instance reuses a value it read for
        at most the cache TTL (F-KMS-4). Unknown name: NotFound."""
        ...

    def refresh(self, name: str, deadline: Deadline) -> str:
        """Read the value anew, past the cache: once, after the value was refused (a rotated
        key), before giving up."""
        ...
