"""An in-memory ESS: a scaling group, its instances, lifecycle hooks and actions, and activities.

What it keeps, as the service does:

- Activities are serialised: while one is InProgress, ScaleWithAdjustment and RemoveInstances
  answer ``ScalingActivityInProgress`` (the port raises ScalingConflict).
- A scale-out creates instances (in the linked FakeEcs, zones balanced). With a SCALE_OUT hook
  they wait in ``Pending:Wait``; the hook's lifecycle action (one per hook and activity, with a
  token) stays Pending until completed, or until its timeout passes, when the hook's default
  result applies. CONTINUE puts them InService; ABANDON and ROLLBACK release them.
- A scale-in (RemoveInstances, or ScaleWithAdjustment below zero: oldest unprotected first)
  moves instances to ``Removing:Wait`` under a SCALE_IN hook; CONTINUE and ABANDON release them,
  ROLLBACK puts them back InService.
- Heartbeats push a pending action's timeout out, at most 20 per action and to 6 hours after
  its start in all (F-ESS-6: ``LifecycleAction.RecordTimesExceeded`` / ``TimeExceeded``);
  completing an action that is no longer pending (finished, timed out) answers
  ``LifecycleHookIdAndLifecycleActionToken.Invalid``, which the port, like the adapter, counts as success.
- Health (SetInstanceHealth) and scale-in protection (SetInstancesProtection: lifecycle state
  Protected) are kept per instance.

Time is the FakeClock: ``clock.advance(...)`` then any call (or ``tick()``) times actions out.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, Literal

from gwlb_fleet.alibaba.errors import ApiError
from gwlb_fleet.alibaba.fakes.ecs import FakeEcs
from gwlb_fleet.alibaba.fakes.openapi import FakeOpenApiService
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.ports import (
    LifecycleAction,
    LifecycleResult,
    ScalingActivity,
    ScalingGroup,
    ScalingInstance,
    Transition,
)

RESULTS = ("CONTINUE", "ABANDON", "ROLLBACK")
HEARTBEAT_RANGE_S = (30, 21600)
MAX_HEARTBEATS = 20  # F-ESS-6: per lifecycle action
MAX_ACTION_S = 6 * 3600  # F-ESS-6: the action's timeouts in all
MAX_IDS = 20
MAX_HOOKS = 6  # F-ESS-1 (SAFE reading)
HOOK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{1,63}")  # F-ESS-1
# F-ESS-3: the notification targets the API documents
EVENT_BUS_ARN = re.compile(r"acs:eventbridge:[a-z0-9-]+:\d+:eventbus/default")
NOTIFICATION_ARN = re.compile(
    r"acs:eventbridge:[a-z0-9-]+:\d+:eventbus/default"
    r"|acs:mns:[a-z0-9-]+:\d+:(queue|topic)/[A-Za-z0-9-]+"
    r"|acs:oos:[a-z0-9-]+:\d+:template/[A-Za-z0-9_.-]+"
)


@dataclass
class FakeScalingInstance:
    instance_id: str
    zone: str
    created: str
    lifecycle_state: str = "InService"
    health: str = "Healthy"
    protected: bool = False

    def wire(self, group: FakeScalingGroup) -> dict[str, Any]:
        return {
            "InstanceId": self.instance_id,
            "ScalingGroupId": group.group_id,
            "ScalingConfigurationId": group.scaling_configuration_id,
            "LifecycleState": "Protected"
            if self.protected and self.lifecycle_state == "InService"
            else self.lifecycle_state,
            "HealthStatus": self.health,
            "ZoneId": self.zone,
            "CreationType": "AutoCreated",
            "CreatedTime": self.created,
        }


@dataclass
class FakeHook:
    hook_id: str
    transition: Transition
    timeout_s: int = 600
    default_result: LifecycleResult = "CONTINUE"
    name: str = ""
    notification_arn: str = ""  # where ESS notifies: only the event bus reaches EventBridge (F-ESS-3)
    metadata: str = ""

    def wire(self, group_id: str) -> dict[str, Any]:
        return {
            "LifecycleHookId": self.hook_id,
            "LifecycleHookName": self.name or self.hook_id,
            "LifecycleHookStatus": "Active",
            "LifecycleTransition": self.transition,
            "DefaultResult": self.default_result,
            "HeartbeatTimeout": self.timeout_s,
            "NotificationArn": self.notification_arn,
            "NotificationMetadata": self.metadata,
            "ScalingGroupId": group_id,
        }


@dataclass
class FakeLifecycleAction:
    token: str
    hook: FakeHook
    activity_id: str
    instance_ids: list[str]
    expires_at: float
    status: str = "Pending"  # Pending | Proceed | Abandon | Timeout
    result: str = ""
    started: float = 0.0
    heartbeats: int = 0  # accepted RecordLifecycleActionHeartbeat calls (F-ESS-6: at most 20)

    def wire(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "LifecycleHookId": self.hook.hook_id,
            "LifecycleActionToken": self.token,
            "LifecycleActionStatus": self.status,
            "InstanceIds": list(self.instance_ids),
        }
        if self.result:
            answer["LifecycleActionResult"] = self.result
        return answer


@dataclass
class FakeActivity:
    activity_id: str
    group_id: str
    transition: Transition
    instance_ids: list[str]
    description: str
    start_time: str
    status: str = "InProgress"  # InProgress | Successful | Failed

    def wire(self) -> dict[str, Any]:
        return {
            "ScalingActivityId": self.activity_id,
            "ScalingGroupId": self.group_id,
            "StatusCode": self.status,
            "Description": self.description,
            "StartTime": self.start_time,
            "ScalingInstanceNumber": len(self.instance_ids),
        }


@dataclass
class FakeScalingGroup:
    group_id: str
    min_size: int
    max_size: int
    desired: int
    zones: tuple[str, ...]
    scaling_configuration_id: str
    lifecycle_state: str = "Active"
    instances: dict[str, FakeScalingInstance] = field(default_factory=dict)
    hooks: list[FakeHook] = field(default_factory=list)

    def wire(self) -> dict[str, Any]:
        states = [i.lifecycle_state for i in self.instances.values()]
        return {
            "ScalingGroupId": self.group_id,
            "ScalingGroupName": self.group_id,
            "MinSize": self.min_size,
            "MaxSize": self.max_size,
            "DesiredCapacity": self.desired,
            "TotalCapacity": len(states),
            "ActiveCapacity": states.count("InService"),
            "PendingWaitCapacity": states.count("Pending:Wait"),
            "RemovingWaitCapacity": states.count("Removing:Wait"),
            "LifecycleState": self.lifecycle_state,
            "ActiveScalingConfigurationId": self.scaling_configuration_id,
        }


@dataclass
class FakeEss(FakeOpenApiService):
    service: ClassVar[str] = "ess"

    ecs: FakeEcs = field(default_factory=FakeEcs)
    groups: dict[str, FakeScalingGroup] = field(default_factory=dict)
    actions: dict[str, FakeLifecycleAction] = field(default_factory=dict)  # by token
    activities: dict[str, FakeActivity] = field(default_factory=dict)
    user_data: dict[str, str] = field(default_factory=dict)  # scaling configuration -> UserData
    replies: dict[str, dict[str, Any]] = field(default_factory=dict)  # ClientToken -> the first answer
    # What preflight reads of a scaling configuration besides its id (F-ESS-11): InstanceType(s),
    # SecurityGroupId(s), NetworkInterfaces, as DescribeScalingConfigurations answers them.
    configuration_attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    _serial: int = 0

    # --- set-up ---------------------------------------------------------------------------------------------

    def create_group(
        self,
        group_id: str,
        min_size: int = 0,
        max_size: int = 10,
        desired: int = 0,
        zones: Sequence[str] = ("cn-hangzhou-h", "cn-hangzhou-i"),
        scaling_configuration_id: str = "",
    ) -> FakeScalingGroup:
        with self._lock:
            group = FakeScalingGroup(
                group_id, min_size, max_size, 0, tuple(zones), scaling_configuration_id or f"asc-{group_id}"
            )
            self.groups[group_id] = group
            self.user_data.setdefault(group.scaling_configuration_id, "")
            for _ in range(desired):
                instance = self._launch(group)
                group.instances[instance.instance_id] = instance
            group.desired = desired
            return group

    def add_hook(
        self,
        group_id: str,
        transition: Transition,
        timeout_s: int = 600,
        default_result: LifecycleResult = "CONTINUE",
    ) -> FakeHook:
        with self._lock:
            hook = FakeHook(self._id("ash"), transition, timeout_s, default_result)
            self.groups[group_id].hooks.append(hook)
            return hook

    def pending_actions(self, group_id: str = "") -> list[FakeLifecycleAction]:
        with self._lock:
            self._expire()
            return [
                action
                for action in self.actions.values()
                if action.status == "Pending"
                and (not group_id or self.activities[action.activity_id].group_id == group_id)
            ]

    def tick(self) -> None:
        """Apply what time did: lifecycle actions past their timeout."""
        with self._lock:
            self._expire()

    def replace_unhealthy(self, group_id: str) -> str:
        """One step of ESS's own health management, for a caller that plays time (the lab):
        unhealthy in-service instances are removed (a scale-in activity, through the SCALE_IN
        hook, the desired capacity kept), and once they are gone the group is brought back up to
        its desired capacity (a scale-out activity). Nothing starts while an activity is in
        progress. The id of the activity started, or "".

        ESS's documentation does not say whether a health-check removal goes through the scale-in
        hook; the control plane assumes it does (gwlb_fleet.workflows.health), and reconcile cleans up
        after an instance that went without one."""
        with self._lock:
            self._expire()
            group = self._group(group_id)
            if group.lifecycle_state != "Active" or any(
                a.status == "InProgress" and a.group_id == group_id for a in self.activities.values()
            ):
                return ""
            unhealthy = [
                i.instance_id
                for i in group.instances.values()
                if i.health == "Unhealthy" and i.lifecycle_state == "InService"
            ]
            if unhealthy:
                return self._scale_in(group, unhealthy, "the health check: unhealthy").activity_id
            missing = group.desired - len(group.instances)
            if missing > 0:
                return self._scale_out(group, missing, "the desired capacity").activity_id
            return ""

    # --- the API: reading -----------------------------------------------------------------------------------

    def api_describe_scaling_groups(
        self, scaling_group_ids: Sequence[str] = (), page_number: int = 1, page_size: int = 10
    ) -> dict[str, Any]:
        with self._api("DescribeScalingGroups"):
            self._expire()
            groups = [
                g for g in self.groups.values() if not scaling_group_ids or g.group_id in scaling_group_ids
            ]
            page = _page(groups, page_number, page_size)
            return {
                "ScalingGroups": [g.wire() for g in page],
                "TotalCount": len(groups),
                "PageNumber": page_number,
                "PageSize": page_size,
            }

    def api_describe_scaling_instances(
        self,
        scaling_group_id: str,
        page_number: int = 1,
        page_size: int = 10,
        instance_ids: Sequence[str] = (),
    ) -> dict[str, Any]:
        with self._api("DescribeScalingInstances"):
            self._expire()
            group = self._group(scaling_group_id)
            instances = [
                i for i in group.instances.values() if not instance_ids or i.instance_id in instance_ids
            ]
            page = _page(instances, page_number, page_size)
            return {
                "ScalingInstances": [i.wire(group) for i in page],
                "TotalCount": len(instances),
                "PageNumber": page_number,
                "PageSize": page_size,
            }

    def api_describe_scaling_activities(
        self, scaling_group_id: str, status_code: str = "", page_number: int = 1, page_size: int = 10
    ) -> dict[str, Any]:
        with self._api("DescribeScalingActivities"):
            self._expire()
            self._group(scaling_group_id)
            activities = [
                a
                for a in reversed(list(self.activities.values()))  # newest first, as ESS lists them
                if a.group_id == scaling_group_id and (not status_code or a.status == status_code)
            ]
            page = _page(activities, page_number, page_size)
            return {
                "ScalingActivities": [a.wire() for a in page],
                "TotalCount": len(activities),
                "PageNumber": page_number,
                "PageSize": page_size,
            }

    def api_describe_lifecycle_actions(
        self,
        scaling_activity_id: str,
        lifecycle_action_status: str = "",
        max_results: int = 10,
        next_token: str = "",
    ) -> dict[str, Any]:
        with self._api("DescribeLifecycleActions"):
            self._expire()
            actions = [
                a
                for a in self.actions.values()
                if a.activity_id == scaling_activity_id
                and (not lifecycle_action_status or a.status == lifecycle_action_status)
            ]
            start = int(next_token or 0)
            end = start + max(1, max_results)
            return {
                "LifecycleActions": [a.wire() for a in actions[start:end]],
                "NextToken": str(end) if end < len(actions) else "",
                "MaxResults": max_results,
                "TotalCount": len(actions),
            }

    # --- the API: lifecycle actions -------------------------------------------------------------------------

    def api_record_lifecycle_action_heartbeat(
        self, lifecycle_hook_id: str, lifecycle_action_token: str, heartbeat_timeout: int = 600
    ) -> dict[str, Any]:
        with self._api("RecordLifecycleActionHeartbeat"):
            self._expire()
            low, high = HEARTBEAT_RANGE_S
            if not low <= heartbeat_timeout <= high:
                raise self._fail("InvalidParamter", f"heartbeatTimeout must be {low} to {high} seconds")
            action = self._pending(lifecycle_hook_id, lifecycle_action_token)
            now = self.clock()
            if action.heartbeats >= MAX_HEARTBEATS:  # F-ESS-6
                raise self._fail(
                    "LifecycleAction.RecordTimesExceeded", "exceed lifecycleAction max record times"
                )
            if now + heartbeat_timeout > action.started + MAX_ACTION_S:  # F-ESS-6
                raise self._fail("LifecycleAction.TimeExceeded", "exceed lifecycleAction max suspend time")
            action.heartbeats += 1
            action.expires_at = now + heartbeat_timeout
            return {}

    def api_complete_lifecycle_action(
        self,
        lifecycle_hook_id: str,
        lifecycle_action_token: str,
        lifecycle_action_result: str = "CONTINUE",
        client_token: str = "",
    ) -> dict[str, Any]:
        with self._api("CompleteLifecycleAction"):
            if client_token in self.replies:
                return self.replies[client_token]
            self._expire()
            if lifecycle_action_result not in RESULTS:
                raise self._fail("InvalidParamter", f"LifecycleActionResult {lifecycle_action_result!r}")
            action = self._pending(lifecycle_hook_id, lifecycle_action_token)
            self._finish(
                action,
                "Abandon" if lifecycle_action_result == "ABANDON" else "Proceed",
                lifecycle_action_result,
            )
            return self._reply(client_token, {})

    # --- the API: capacity ----------------------------------------------------------------------------------

    def api_scale_with_adjustment(
        self, scaling_group_id: str, adjustment_type: str, adjustment_value: int, client_token: str = ""
    ) -> dict[str, Any]:
        with self._api("ScaleWithAdjustment"):
            if client_token in self.replies:
                return self.replies[client_token]
            self._expire()
            group = self._active_group(scaling_group_id)
            target = _target(group, adjustment_type, adjustment_value)
            clamped = min(max(target, group.min_size), group.max_size)
            if clamped == group.desired:
                code = "IncorrectCapacity.MaxSize" if target > group.desired else "IncorrectCapacity.MinSize"
                raise self._fail(
                    code, f"the group is already at {group.desired} ({group.min_size}..{group.max_size})"
                )
            if clamped > group.desired:
                activity = self._scale_out(group, clamped - group.desired)
            else:
                victims = self._victims(group, group.desired - clamped)
                activity = self._scale_in(group, victims, "ScaleWithAdjustment")
            group.desired = clamped
            return self._reply(client_token, {"ScalingActivityId": activity.activity_id})

    def api_remove_instances(
        self,
        scaling_group_id: str,
        instance_ids: Sequence[str],
        decrease_desired_capacity: bool = True,
        ignore_invalid_instance: bool = False,
        client_token: str = "",
    ) -> dict[str, Any]:
        with self._api("RemoveInstances"):
            if client_token in self.replies:
                return self.replies[client_token]
            self._expire()
            group = self._active_group(scaling_group_id)
            if not instance_ids or len(instance_ids) > MAX_IDS:
                raise self._fail("InvalidParameter", f"InstanceIds takes 1 to {MAX_IDS} ids")
            ignored = [i for i in instance_ids if i not in group.instances]
            if ignored and not ignore_invalid_instance:
                raise self._fail("InvalidInstanceId.NotFound", f'Instance "{ignored[0]}" does not exist.')
            removable = [i for i in dict.fromkeys(instance_ids) if i in group.instances]
            answer: dict[str, Any] = {
                "IgnoredInstances": [
                    {"InstanceId": i, "Code": "InvalidInstanceId.NotFound", "Message": "not in the group"}
                    for i in ignored
                ]
            }
            if not removable:
                return self._reply(client_token, answer)
            if len(group.instances) - len(removable) < group.min_size:
                raise self._fail(
                    "IncorrectCapacity.MinSize",
                    "To remove the instances, the total capacity will be lesser than the MinSize.",
                )
            activity = self._scale_in(group, removable, "RemoveInstances")
            if decrease_desired_capacity:
                group.desired = max(group.min_size, group.desired - len(removable))
            answer["ScalingActivityId"] = activity.activity_id
            return self._reply(client_token, answer)

    def api_set_instance_health(self, instance_id: str, health_status: str) -> dict[str, Any]:
        with self._api("SetInstanceHealth"):
            if health_status not in ("Healthy", "Unhealthy"):
                raise self._fail("InvalidParameter", f"HealthStatus {health_status!r}")
            self._instance(instance_id).health = health_status
            return {}

    def api_set_instances_protection(
        self, scaling_group_id: str, instance_ids: Sequence[str], protected_from_scale_in: bool
    ) -> dict[str, Any]:
        with self._api("SetInstancesProtection"):
            group = self._group(scaling_group_id)
            missing = [i for i in instance_ids if i not in group.instances]
            if missing:
                raise self._fail("InvalidInstanceId.NotFound", f'Instance "{missing[0]}" does not exist.')
            for instance_id in instance_ids:
                group.instances[instance_id].protected = protected_from_scale_in
            return {}

    def api_modify_scaling_configuration(
        self, scaling_configuration_id: str, user_data: str
    ) -> dict[str, Any]:
        with self._api("ModifyScalingConfiguration"):
            if scaling_configuration_id not in self.user_data:
                raise self._fail(
                    "InvalidScalingConfigurationId.NotFound",
                    "The specified scaling configuration does not exist.",
                )
            self.user_data[scaling_configuration_id] = user_data
            return {}

    # --- lifecycle hooks (gwlb_fleet.deploy's set-up calls) -------------------------------------------------

    def api_describe_scaling_configurations(
        self, group_id: str, ids: Sequence[str], page: int, size: int
    ) -> dict[str, Any]:
        """F-ESS-11: PageSize at most 50; the group's configurations (each group has one, active)."""
        with self._api("DescribeScalingConfigurations"):
            if not 1 <= size <= 50 or page < 1:
                raise self._fail("InvalidParameter", f"PageNumber {page} / PageSize {size}: 1 to 50")
            rows = [
                {
                    "ScalingConfigurationId": group.scaling_configuration_id,
                    "ScalingGroupId": gid,
                    "LifecycleState": "Active",
                    **self.configuration_attributes.get(group.scaling_configuration_id, {}),
                }
                for gid, group in self.groups.items()
                if (not group_id or gid == group_id) and (not ids or group.scaling_configuration_id in ids)
            ]
            start = (page - 1) * size
            return {
                "ScalingConfigurations": rows[start : start + size],
                "TotalCount": len(rows),
                "PageNumber": page,
                "PageSize": size,
            }

    def api_describe_lifecycle_hooks(self, group_id: str, name: str, page: int, size: int) -> dict[str, Any]:
        with self._api("DescribeLifecycleHooks"):  # F-ESS-2
            if not 1 <= size <= 50:
                raise self._fail("InvalidParamter", f"PageSize {size}: 1 to 50")
            hooks = [
                hook.wire(gid)
                for gid, group in self.groups.items()
                if not group_id or gid == group_id
                for hook in group.hooks
                if not name or (hook.name or hook.hook_id) == name
            ]
            start = (page - 1) * size
            return {
                "LifecycleHooks": hooks[start : start + size],
                "TotalCount": len(hooks),
                "PageNumber": page,
                "PageSize": size,
            }

    def api_create_lifecycle_hook(self, params: dict[str, str]) -> dict[str, Any]:
        with self._api("CreateLifecycleHook"):  # F-ESS-1
            group = self._hook_group(params)
            transition = _hook_choice(
                self, params, "LifecycleTransition", ("SCALE_OUT", "SCALE_IN"), required=True
            )
            name = params.get("LifecycleHookName", "")
            if name and not HOOK_NAME.fullmatch(name):
                raise self._fail("InvalidParamter", f"LifecycleHookName {name!r}")
            if name and any((h.name or h.hook_id) == name for h in group.hooks):
                raise self._fail(  # F-ESS-10
                    "InvalidLifecycleHookName.Duplicate",
                    "The specified value of parameter lifecycleHookName is duplicated.",
                )
            if len(group.hooks) >= MAX_HOOKS:
                raise self._fail(  # F-ESS-10
                    "QuotaExceeded.LifecycleHook",
                    f"Lifecycle hook quota exceeded in the specified scaling group ({MAX_HOOKS}).",
                )
            hook = FakeHook(self._id("ash"), transition)  # type: ignore[arg-type]
            self._apply_hook(hook, params)
            hook.name = name or hook.hook_id
            group.hooks.append(hook)
            return {"LifecycleHookId": hook.hook_id}

    def api_modify_lifecycle_hook(self, params: dict[str, str]) -> dict[str, Any]:
        with self._api("ModifyLifecycleHook"):  # F-ESS-10
            hook = self._find_hook(params)
            self._apply_hook(hook, params)
            return {}

    def api_delete_lifecycle_hook(self, params: dict[str, str]) -> dict[str, Any]:
        with self._api("DeleteLifecycleHook"):  # F-ESS-2
            hook = self._find_hook(params)
            for group in self.groups.values():
                if hook in group.hooks:
                    group.hooks.remove(hook)
            return {}

    def _hook_group(self, params: dict[str, str]) -> FakeScalingGroup:
        group_id = params.get("ScalingGroupId", "")
        if not group_id:
            raise self._fail("MissingParameter", "ScalingGroupId is mandatory for this action.")
        if group_id not in self.groups:
            raise self._fail("InvalidScalingGroupId.NotFound", "The specified scaling group does not exist.")
        return self.groups[group_id]

    def _find_hook(self, params: dict[str, str]) -> FakeHook:
        hook_id, name = params.get("LifecycleHookId", ""), params.get("LifecycleHookName", "")
        if not hook_id and not (name and params.get("ScalingGroupId")):
            raise self._fail("MissingParameter", "LifecycleHookId, or ScalingGroupId and LifecycleHookName")
        hooks = (
            self._hook_group(params).hooks
            if not hook_id
            else [h for g in self.groups.values() for h in g.hooks]
        )
        for hook in hooks:
            if (hook_id and hook.hook_id == hook_id) or (not hook_id and (hook.name or hook.hook_id) == name):
                return hook
        if hook_id:  # F-ESS-10: the id wins over the name when both are given
            raise self._fail(
                "InvalidLifecycleHookId.NotExist", "The specified lifecycleHookId does not exist."
            )
        raise self._fail(
            "InvalidLifecycleHookName.NotExist",
            "The specified lifecycleHookName you provided does not exist.",
        )

    def _apply_hook(self, hook: FakeHook, params: dict[str, str]) -> None:
        if "DefaultResult" in params:
            hook.default_result = _hook_choice(self, params, "DefaultResult", ("CONTINUE", "ABANDON"))  # type: ignore[assignment]
        if "HeartbeatTimeout" in params:
            timeout = params["HeartbeatTimeout"]
            if not timeout.isdigit() or not HEARTBEAT_RANGE_S[0] <= int(timeout) <= HEARTBEAT_RANGE_S[1]:
                raise self._fail("InvalidParamter", f"HeartbeatTimeout {timeout}: 30 to 21600")  # F-ESS-1
            hook.timeout_s = int(timeout)
        if "NotificationArn" in params:
            arn = params["NotificationArn"]
            if arn and not NOTIFICATION_ARN.fullmatch(arn):
                raise self._fail(  # F-ESS-3, F-ESS-10
                    "InvalidNotificationArn", f"The specified parameter notificationArn is invalid: {arn!r}"
                )
            hook.notification_arn = arn
        metadata = params.get("NotificationMetadata", hook.metadata)
        if metadata and not hook.notification_arn:
            raise self._fail("InvalidParamter", "NotificationMetadata needs a NotificationArn")  # F-ESS-1
        if len(metadata) > 128:
            raise self._fail("InvalidParamter", "NotificationMetadata: at most 128 characters")
        hook.metadata = metadata

    def eventbridge_actions(self, group_id: str) -> list[FakeLifecycleAction]:
        """The pending actions EventBridge gets: those of hooks that notify the event bus (F-ESS-3)."""
        return [a for a in self.pending_actions(group_id) if EVENT_BUS_ARN.fullmatch(a.hook.notification_arn)]

    # --- EssPort --------------------------------------------------------------------------------------------

    def describe_group(self, group_id: str, deadline: Deadline) -> ScalingGroup:
        answer = self._port("DescribeScalingGroups", partial(self.api_describe_scaling_groups, [group_id]))
        for g in answer["ScalingGroups"]:
            return ScalingGroup(
                group_id=g["ScalingGroupId"],
                min_size=g["MinSize"],
                max_size=g["MaxSize"],
                desired=g["DesiredCapacity"],
                total=g["TotalCapacity"],
                lifecycle_state=g["LifecycleState"],
                scaling_configuration_id=g["ActiveScalingConfigurationId"],
            )
        raise ApiError(
            "ess", "InvalidScalingGroupId.NotFound", "The specified scaling group does not exist."
        ).domain("DescribeScalingGroups")

    def list_instances(self, group_id: str, deadline: Deadline) -> list[ScalingInstance]:
        found: list[ScalingInstance] = []
        for page in range(1, 1000):
            answer = self._port(
                "DescribeScalingInstances", partial(self.api_describe_scaling_instances, group_id, page, 50)
            )
            found.extend(
                ScalingInstance(
                    instance_id=i["InstanceId"],
                    lifecycle_state=i["LifecycleState"],
                    health_status=_health(i["HealthStatus"]),
                    zone=i["ZoneId"],
                    created=i["CreatedTime"],
                )
                for i in answer["ScalingInstances"]
            )
            if len(found) >= answer["TotalCount"] or not answer["ScalingInstances"]:
                break
        return found

    def in_progress_activities(self, group_id: str, deadline: Deadline) -> list[ScalingActivity]:
        answer = self._port(
            "DescribeScalingActivities",
            partial(self.api_describe_scaling_activities, group_id, "InProgress", 1, 50),
        )
        return [
            ScalingActivity(a["ScalingActivityId"], a["StatusCode"], a["Description"])
            for a in answer["ScalingActivities"]
        ]

    def lifecycle_actions(self, activity_id: str, deadline: Deadline) -> list[LifecycleAction]:
        answer = self._port(
            "DescribeLifecycleActions",
            partial(self.api_describe_lifecycle_actions, activity_id, "Pending", 50),
        )
        return [
            LifecycleAction(
                hook_id=a["LifecycleHookId"],
                token=a["LifecycleActionToken"],
                instance_ids=tuple(a["InstanceIds"]),
                status=a["LifecycleActionStatus"],
            )
            for a in answer["LifecycleActions"]
        ]

    def heartbeat(self, hook_id: str, token: str, timeout_s: int, deadline: Deadline) -> None:
        low, high = HEARTBEAT_RANGE_S
        timeout = min(max(int(timeout_s), low), high)
        self._port(
            "RecordLifecycleActionHeartbeat",
            partial(self.api_record_lifecycle_action_heartbeat, hook_id, token, timeout),
        )

    def complete(self, hook_id: str, token: str, result: LifecycleResult, deadline: Deadline) -> None:
        self._port_act(
            "CompleteLifecycleAction", partial(self.api_complete_lifecycle_action, hook_id, token, result)
        )

    def scale_by(self, group_id: str, delta: int, deadline: Deadline) -> str:
        if delta == 0:
            raise ValueError("scale_by needs a non-zero delta")
        answer = self._port(
            "ScaleWithAdjustment",
            partial(self.api_scale_with_adjustment, group_id, "QuantityChangeInCapacity", delta),
        )
        return str(answer.get("ScalingActivityId", ""))

    def remove_instances(self, group_id: str, instance_ids: Sequence[str], deadline: Deadline) -> str:
        if not instance_ids:
            return ""
        if len(instance_ids) > MAX_IDS:
            raise ValueError(f"RemoveInstances takes at most {MAX_IDS} instances, not {len(instance_ids)}")
        answer = self._port(
            "RemoveInstances",
            partial(self.api_remove_instances, group_id, list(instance_ids), True, True),
        )
        return str(answer.get("ScalingActivityId", ""))

    def set_instance_health(self, instance_id: str, healthy: bool, deadline: Deadline) -> None:
        self._port(
            "SetInstanceHealth",
            partial(self.api_set_instance_health, instance_id, "Healthy" if healthy else "Unhealthy"),
        )

    def update_user_data(self, scaling_configuration_id: str, user_data_b64: str, deadline: Deadline) -> None:
        self._port(
            "ModifyScalingConfiguration",
            partial(self.api_modify_scaling_configuration, scaling_configuration_id, user_data_b64),
        )

    # --- the machinery --------------------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}-fake{self._serial:06d}"

    def _reply(self, client_token: str, answer: dict[str, Any]) -> dict[str, Any]:
        if client_token:
            self.replies[client_token] = answer
        return answer

    def _group(self, group_id: str) -> FakeScalingGroup:
        group = self.groups.get(group_id)
        if group is None:
            raise self._fail("InvalidScalingGroupId.NotFound", "The specified scaling group does not exist.")
        return group

    def _active_group(self, group_id: str) -> FakeScalingGroup:
        group = self._group(group_id)
        if group.lifecycle_state != "Active":
            raise self._fail(
                "IncorrectScalingGroupStatus",
                "The current status of the specified scaling group does not support this action.",
            )
        if any(a.status == "InProgress" and a.group_id == group_id for a in self.activities.values()):
            raise self._fail(
                "ScalingActivityInProgress",
                "You cannot delete a scaling group or launch a new scaling activity while there is a scaling "
                "activity in progress for the specified scaling group.",
            )
        return group

    def _instance(self, instance_id: str) -> FakeScalingInstance:
        for group in self.groups.values():
            if instance_id in group.instances:
                return group.instances[instance_id]
        raise self._fail("InvalidInstanceId.NotFound", f'Instance "{instance_id}" does not exist.')

    def _pending(self, hook_id: str, token: str) -> FakeLifecycleAction:
        action = self.actions.get(token)
        if action is None or action.hook.hook_id != hook_id or action.status != "Pending":
            raise self._fail(
                "LifecycleHookIdAndLifecycleActionToken.Invalid",
                "The specified lifecycleActionToken and lifecycleHookId you provided does not match any in "
                "process lifecycle action.",
            )
        return action

    def _launch(self, group: FakeScalingGroup) -> FakeScalingInstance:
        in_zone = {zone: 0 for zone in group.zones}
        for instance in group.instances.values():
            in_zone[instance.zone] = in_zone.get(instance.zone, 0) + 1
        zone = min(group.zones, key=lambda z: in_zone[z])  # ESS balances zones
        ecs = self.ecs.launch(zone)
        return FakeScalingInstance(ecs.instance_id, zone, _iso(self.clock()))

    def _victims(self, group: FakeScalingGroup, count: int) -> list[str]:
        candidates = [
            i for i in group.instances.values() if i.lifecycle_state == "InService" and not i.protected
        ]
        candidates.sort(key=lambda i: i.created)  # oldest first
        return [i.instance_id for i in candidates[:count]]

    def _scale_out(
        self, group: FakeScalingGroup, count: int, cause: str = "ScaleWithAdjustment"
    ) -> FakeActivity:
        instances = [self._launch(group) for _ in range(count)]
        hooks = [h for h in group.hooks if h.transition == "SCALE_OUT"]
        for instance in instances:
            instance.lifecycle_state = "Pending:Wait" if hooks else "InService"
            group.instances[instance.instance_id] = instance
        return self._activity(group, "SCALE_OUT", [i.instance_id for i in instances], cause, hooks)

    def _scale_in(self, group: FakeScalingGroup, instance_ids: list[str], cause: str) -> FakeActivity:
        hooks = [h for h in group.hooks if h.transition == "SCALE_IN"]
        for instance_id in instance_ids:
            group.instances[instance_id].lifecycle_state = "Removing:Wait" if hooks else "Removing"
        return self._activity(group, "SCALE_IN", instance_ids, cause, hooks)

    def _activity(
        self,
        group: FakeScalingGroup,
        transition: Transition,
        instance_ids: list[str],
        cause: str,
        hooks: list[FakeHook],
    ) -> FakeActivity:
        verb = "Add" if transition == "SCALE_OUT" else "Remove"
        activity = FakeActivity(
            self._id("asa"),
            group.group_id,
            transition,
            instance_ids,
            f'"{verb} {len(instance_ids)} ECS instance(s)" by {cause}',
            _iso(self.clock()),
        )
        self.activities[activity.activity_id] = activity
        for hook in hooks:
            token = self._id("token")
            self.actions[token] = FakeLifecycleAction(
                token,
                hook,
                activity.activity_id,
                list(instance_ids),
                self.clock() + hook.timeout_s,
                started=self.clock(),
            )
        if not hooks:
            self._conclude(activity)
        return activity

    def _finish(self, action: FakeLifecycleAction, status: str, result: str) -> None:
        action.status, action.result = status, result
        activity = self.activities[action.activity_id]
        if all(a.status != "Pending" for a in self.actions.values() if a.activity_id == activity.activity_id):
            self._conclude(activity)

    def _expire(self) -> None:
        now = self.clock()
        for action in list(self.actions.values()):
            if action.status == "Pending" and now >= action.expires_at:
                self._finish(action, "Timeout", action.hook.default_result)

    def _conclude(self, activity: FakeActivity) -> None:
        """Every lifecycle action of the activity is over: apply the results."""
        group = self.groups[activity.group_id]
        results = {a.result for a in self.actions.values() if a.activity_id == activity.activity_id}
        verdict = "ROLLBACK" if "ROLLBACK" in results else "ABANDON" if "ABANDON" in results else "CONTINUE"
        present = [i for i in activity.instance_ids if i in group.instances]
        if activity.transition == "SCALE_OUT":
            if verdict == "CONTINUE":
                for instance_id in present:
                    group.instances[instance_id].lifecycle_state = "InService"
            else:
                self._release(group, present)
                group.desired = max(group.min_size, group.desired - len(present))
        elif verdict == "ROLLBACK":
            for instance_id in present:
                group.instances[instance_id].lifecycle_state = "InService"
            group.desired = min(group.max_size, group.desired + len(present))
        else:
            self._release(group, present)
        # A scale-in abandoned still removes its instances: the activity did what it set out to.
        done = verdict == "CONTINUE" or (activity.transition == "SCALE_IN" and verdict == "ABANDON")
        activity.status = "Successful" if done else "Failed"

    def _release(self, group: FakeScalingGroup, instance_ids: list[str]) -> None:
        for instance_id in instance_ids:
            group.instances.pop(instance_id, None)
            self.ecs.release(instance_id)


def _target(group: FakeScalingGroup, adjustment_type: str, value: int) -> int:
    if adjustment_type == "QuantityChangeInCapacity":
        return group.desired + value
    if adjustment_type == "PercentChangeInCapacity":
        return group.desired + int(group.desired * value / 100)
    if adjustment_type == "TotalCapacity":
        return value
    raise ApiError("ess", "InvalidParameter", f"AdjustmentType {adjustment_type!r}")


def _page(rows: list[Any], page_number: int, page_size: int) -> list[Any]:
    start = (max(1, page_number) - 1) * max(1, page_size)
    return rows[start : start + max(1, page_size)]


def _health(value: str) -> Literal["Healthy", "Unhealthy"]:
    return "Unhealthy" if value == "Unhealthy" else "Healthy"


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _hook_choice(
    ess: FakeEss, params: dict[str, str], name: str, allowed: tuple[str, ...], required: bool = False
) -> str:
    # F-ESS-10: the hook calls' error tables list one code for a bad value, spelt "InvalidParamter"
    value = params.get(name, "")
    if not value and required:
        raise ess._fail("MissingParameter", f"{name} is mandatory for this action.")
    if value not in allowed:
        raise ess._fail("InvalidParamter", f"{name} {value!r}: one of {', '.join(allowed)}")
    return value
