"""EssPort over alibabacloud_ess20220222: the scaling group, its instances, activities and
lifecycle actions.

ESS serialises scaling activities: while one runs, ScaleWithAdjustment and RemoveInstances answer
``ScalingActivityInProgress``, raised here as ScalingConflict (not retried in place: an activity
can wait hours on its lifecycle hooks). RecordLifecycleActionHeartbeat is the one call whose wire
keys are lower camel case (``lifecycleHookId``, ``lifecycleActionToken``, ``heartbeatTimeout``);
the SDK sends them so, and the contract test checks it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from alibabacloud_ess20220222 import models as ess_models
from alibabacloud_ess20220222.client import Client as EssClient

from gwlb_fleet.alibaba.tea import RetryPolicy, TeaApi, body_of
from gwlb_fleet.alibaba.tea import SetupApi as _SetupApi
from gwlb_fleet.alibaba.tea import setup_calls as _setup_calls
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import NotFound, PermanentError
from gwlb_fleet.ports import LifecycleAction, LifecycleResult, ScalingActivity, ScalingGroup, ScalingInstance
from gwlb_fleet.settings import Settings

RAM_ACTIONS: frozenset[str] = frozenset(
    {
        "ess:DescribeScalingGroups",
        "ess:DescribeScalingInstances",
        "ess:DescribeScalingActivities",
        "ess:DescribeLifecycleActions",
        "ess:RecordLifecycleActionHeartbeat",
        "ess:CompleteLifecycleAction",
        "ess:ScaleWithAdjustment",
        "ess:RemoveInstances",
        "ess:SetInstanceHealth",
        "ess:ModifyScalingConfiguration",
    }
)

PAGE_SIZE = 50  # ESS's largest page
MAX_PAGES = 100
MAX_INSTANCES_PER_CALL = 20  # RemoveInstances takes at most 20 ids
HEARTBEAT_RANGE_S = (30, 21600)  # what ESS accepts for a lifecycle action's timeout


def client_token(action: str, *parts: str) -> str:
    """One token per adapter call, reused by its retries: a request ESS got but whose answer was
    lost is not applied twice (see gwlb_fleet.alibaba.gwlb.client_token for why not per operation)."""
    seed = "\n".join((action, *parts, uuid.uuid4().hex))
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


class EssAdapter:
    def __init__(self, api: TeaApi, region: str) -> None:
        self.api = api
        self.region = region

    @classmethod
    def from_settings(cls, settings: Settings, retry_policy: RetryPolicy | None = None) -> EssAdapter:
        return cls(TeaApi.from_settings("ess", settings, EssClient, retry_policy), settings.region)

    @property
    def client(self) -> Any:
        return self.api.client

    # --- reading ------------------------------------------------------------------------------------

    def describe_group(self, group_id: str, deadline: Deadline) -> ScalingGroup:
        request = ess_models.DescribeScalingGroupsRequest(region_id=self.region, scaling_group_ids=[group_id])
        body = body_of(
            self.api.call(
                "DescribeScalingGroups",
                self.client.describe_scaling_groups_with_options,
                request,
                deadline=deadline,
            )
        )
        for group in body.scaling_groups or []:
            if group.scaling_group_id == group_id:
                return ScalingGroup(
                    group_id=group_id,
                    min_size=int(group.min_size or 0),
                    max_size=int(group.max_size or 0),
                    desired=None if group.desired_capacity is None else int(group.desired_capacity),
                    total=int(group.total_capacity or 0),
                    lifecycle_state=str(group.lifecycle_state or ""),
                    scaling_configuration_id=str(group.active_scaling_configuration_id or ""),
                )
        raise NotFound(
            f"scaling group {group_id} does not exist", code="InvalidScalingGroupId.NotFound", service="ess"
        )

    def list_instances(self, group_id: str, deadline: Deadline) -> list[ScalingInstance]:
        instances: list[ScalingInstance] = []
        for page in range(1, MAX_PAGES + 1):
            request = ess_models.DescribeScalingInstancesRequest(
                region_id=self.region, scaling_group_id=group_id, page_number=page, page_size=PAGE_SIZE
            )
            body = body_of(
                self.api.call(
                    "DescribeScalingInstances",
                    self.client.describe_scaling_instances_with_options,
                    request,
                    deadline=deadline,
                )
            )
            batch = body.scaling_instances or []
            instances.extend(_instance(item) for item in batch)
            if len(batch) < PAGE_SIZE or len(instances) >= int(body.total_count or 0):
                return instances
        raise _too_many_pages("DescribeScalingInstances")

    def in_progress_activities(self, group_id: str, deadline: Deadline) -> list[ScalingActivity]:
        activities: list[ScalingActivity] = []
        for page in range(1, MAX_PAGES + 1):
            request = ess_models.DescribeScalingActivitiesRequest(
                region_id=self.region,
                scaling_group_id=group_id,
                status_code="InProgress",
                page_number=page,
                page_size=PAGE_SIZE,
            )
            body = body_of(
                self.api.call(
                    "DescribeScalingActivities",
                    self.client.describe_scaling_activities_with_options,
                    request,
                    deadline=deadline,
                )
            )
            batch = body.scaling_activities or []
            activities.extend(
                ScalingActivity(
                    activity_id=str(item.scaling_activity_id),
                    status=str(item.status_code or ""),
                    description=str(item.description or ""),
                )
                for item in batch
            )
            if len(batch) < PAGE_SIZE or len(activities) >= int(body.total_count or 0):
                return activities
        raise _too_many_pages("DescribeScalingActivities")

    def lifecycle_actions(self, activity_id: str, deadline: Deadline) -> list[LifecycleAction]:
        actions: list[LifecycleAction] = []
        next_token: str | None = None
        for _ in range(MAX_PAGES):
            request = ess_models.DescribeLifecycleActionsRequest(
                region_id=self.region,
                scaling_activity_id=activity_id,
                lifecycle_action_status="Pending",
                max_results=PAGE_SIZE,
                next_token=next_token,
            )
            body = body_of(
                self.api.call(
                    "DescribeLifecycleActions",
                    self.client.describe_lifecycle_actions_with_options,
                    request,
                    deadline=deadline,
                )
            )
            actions.extend(
                LifecycleAction(
                    hook_id=str(item.lifecycle_hook_id),
                    token=str(item.lifecycle_action_token),
                    instance_ids=tuple(str(i) for i in item.instance_ids or []),
                    status=str(item.lifecycle_action_status or ""),
                )
                for item in body.lifecycle_actions or []
            )
            next_token = body.next_token
            if not next_token:
                return actions
        raise _too_many_pages("DescribeLifecycleActions")

    # --- lifecycle actions ----------------------------------------------------------------------------

    def heartbeat(self, hook_id: str, token: str, timeout_s: int, deadline: Deadline) -> None:
        low, high = HEARTBEAT_RANGE_S
        request = ess_models.RecordLifecycleActionHeartbeatRequest(
            region_id=self.region,
            lifecycle_hook_id=hook_id,
            lifecycle_action_token=token,
            heartbeat_timeout=min(max(int(timeout_s), low), high),
        )
        # An action no longer in progress raises NotFound: the flow must know its hook is gone.
        self.api.call(
            "RecordLifecycleActionHeartbeat",
            self.client.record_lifecycle_action_heartbeat_with_options,
            request,
            deadline=deadline,
        )

    def complete(self, hook_id: str, token: str, result: LifecycleResult, deadline: Deadline) -> None:
        action = "CompleteLifecycleAction"
        request = ess_models.CompleteLifecycleActionRequest(
            region_id=self.region,
            lifecycle_hook_id=hook_id,
            lifecycle_action_token=token,
            lifecycle_action_result=result,
            client_token=client_token(action, hook_id, token, result),
        )
        self.api.act(action, self.client.complete_lifecycle_action_with_options, request, deadline=deadline)

    # --- capacity -----------------------------------------------------------------------------------------

    def scale_by(self, group_id: str, delta: int, deadline: Deadline) -> str:
        if delta == 0:
            raise ValueError("scale_by needs a non-zero delta")
        action = "ScaleWithAdjustment"
        request = ess_models.ScaleWithAdjustmentRequest(
            scaling_group_id=group_id,
            adjustment_type="QuantityChangeInCapacity",
            adjustment_value=delta,
            client_token=client_token(action, group_id, str(delta)),
        )
        body = body_of(
            self.api.call(action, self.client.scale_with_adjustment_with_options, request, deadline=deadline)
        )
        return str(body.scaling_activity_id or "")

    def remove_instances(self, group_id: str, instance_ids: Sequence[str], deadline: Deadline) -> str:
        """Instances no longer in the group are ignored (IgnoreInvalidInstance): removing them
        again is success. The activity id, or "" when there was nothing left to remove."""
        ids = list(instance_ids)
        if not ids:
            return ""
        if len(ids) > MAX_INSTANCES_PER_CALL:
            raise ValueError(
                f"RemoveInstances takes at most {MAX_INSTANCES_PER_CALL} instances, not {len(ids)}"
            )
        action = "RemoveInstances"
        request = ess_models.RemoveInstancesRequest(
            region_id=self.region,
            scaling_group_id=group_id,
            instance_ids=ids,
            decrease_desired_capacity=True,
            ignore_invalid_instance=True,
            client_token=client_token(action, group_id, *ids),
        )
        body = body_of(
            self.api.call(action, self.client.remove_instances_with_options, request, deadline=deadline)
        )
        return str(body.scaling_activity_id or "")

    def set_instance_health(self, instance_id: str, healthy: bool, deadline: Deadline) -> None:
        request = ess_models.SetInstanceHealthRequest(
            instance_id=instance_id, health_status="Healthy" if healthy else "Unhealthy"
        )
        self.api.call(
            "SetInstanceHealth", self.client.set_instance_health_with_options, request, deadline=deadline
        )

    def update_user_data(self, scaling_configuration_id: str, user_data_b64: str, deadline: Deadline) -> None:
        request = ess_models.ModifyScalingConfigurationRequest(
            scaling_configuration_id=scaling_configuration_id, user_data=user_data_b64
        )
        self.api.call(
            "ModifyScalingConfiguration",
            self.client.modify_scaling_configuration_with_options,
            request,
            deadline=deadline,
        )


def _instance(item: Any) -> ScalingInstance:
    health: Literal["Healthy", "Unhealthy"] = "Unhealthy" if item.health_status == "Unhealthy" else "Healthy"
    return ScalingInstance(
        instance_id=str(item.instance_id),
        lifecycle_state=str(item.lifecycle_state or ""),
        health_status=health,
        zone=str(item.zone_id or ""),
        created=str(item.created_time or item.creation_time or ""),
    )


def _too_many_pages(action: str) -> PermanentError:
    return PermanentError(f"{action} did not end after {MAX_PAGES} pages", code="Paging", service="ess")


# --- set-up (gwlb_fleet.deploy, the deployer's credentials; not in the functions' policy) -----------

SETUP_CALLS = _setup_calls(
    ess_models,
    "DescribeLifecycleHooks",  # F-ESS-2
    "CreateLifecycleHook",  # F-ESS-1
    "ModifyLifecycleHook",  # F-ESS-10
    "DeleteLifecycleHook",  # F-ESS-2
)
SETUP_RAM_ACTIONS: frozenset[str] = frozenset(f"ess:{action}" for action in SETUP_CALLS)


def eventbus_arn(region: str, account_id: str) -> str:
    """Where a lifecycle hook must notify for EventBridge to deliver it to the lifecycle function:
    the default event bus, exactly (F-ESS-3)."""
    return f"acs:eventbridge:{region}:{account_id}:eventbus/default"


def setup_api(settings: Settings, retry_policy: RetryPolicy | None = None) -> _SetupApi:
    return _SetupApi(TeaApi.from_settings("ess", settings, EssClient, retry_policy), SETUP_CALLS)


# --- preflight (gwlb-fleet preflight, the deployer's credentials; read only) -------------------------

PREFLIGHT_CALLS = _setup_calls(
    ess_models,
    "DescribeScalingConfigurations",  # F-ESS-11
    "DescribeLifecycleHooks",  # F-ESS-2
)
PREFLIGHT_RAM_ACTIONS: frozenset[str] = frozenset(f"ess:{action}" for action in PREFLIGHT_CALLS)


def preflight_api(settings: Settings, retry_policy: RetryPolicy | None = None) -> _SetupApi:
    return _SetupApi(TeaApi.from_settings("ess", settings, EssClient, retry_policy), PREFLIGHT_CALLS)
