"""ESS 2022-02-22 on the local endpoint: the SDK sends these in the query string (POST /).
RecordLifecycleActionHeartbeat's keys are lower camel case, and only those are accepted for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gwlb_fleet.alibaba.errors import ApiError
from gwlb_fleet.alibaba.fakes.ess import FakeEss
from gwlb_lab.api.params import Params

PRODUCT = "ess"
VERSION = "2022-02-22"


def required_strings(p: Params, name: str) -> list[str]:
    """A list the model marks required: ``Name.1`` at least (MissingParameter as for a scalar)."""
    values = p.strings(name)
    if not values:
        raise ApiError("ess", "MissingParameter", f"{name} is mandatory for this action.")
    return values


def describe_groups(ess: FakeEss, p: Params) -> dict[str, Any]:
    p.required("RegionId")
    return ess.api_describe_scaling_groups(
        p.strings("ScalingGroupIds"), p.integer("PageNumber", 1), p.integer("PageSize", 10)
    )


def describe_instances(ess: FakeEss, p: Params) -> dict[str, Any]:
    p.required("RegionId")  # F-ESS-12: ScalingGroupId is optional (then: every group's instances)
    page_number, page_size = p.integer("PageNumber", 1), p.integer("PageSize", 10)
    if p.text("ScalingGroupId"):
        return ess.api_describe_scaling_instances(
            p.text("ScalingGroupId"), page_number, page_size, p.strings("InstanceIds")
        )
    rows: list[dict[str, Any]] = []
    for group_id in sorted(ess.groups):
        answer = ess.api_describe_scaling_instances(group_id, 1, 1 << 30, p.strings("InstanceIds"))
        rows.extend(answer["ScalingInstances"])
    start = (max(1, page_number) - 1) * max(1, page_size)
    return {
        "ScalingInstances": rows[start : start + max(1, page_size)],
        "TotalCount": len(rows),
        "PageNumber": page_number,
        "PageSize": page_size,
    }


def describe_activities(ess: FakeEss, p: Params) -> dict[str, Any]:
    p.required("RegionId")
    group_id, activity_ids = p.text("ScalingGroupId"), p.strings("ScalingActivityIds")
    if bool(group_id) == bool(activity_ids):  # F-ESS-12: exactly one of the two
        raise ApiError(
            "ess",
            "MissingParameter" if not group_id else "InvalidParameter",
            "Specify one of ScalingGroupId and ScalingActivityIds, not both.",
        )
    if group_id:
        return ess.api_describe_scaling_activities(
            group_id, p.text("StatusCode"), p.integer("PageNumber", 1), p.integer("PageSize", 10)
        )
    found = [
        a.wire()
        for a in reversed(list(ess.activities.values()))
        if a.activity_id in activity_ids and (not p.text("StatusCode") or a.status == p.text("StatusCode"))
    ]
    return {"ScalingActivities": found, "TotalCount": len(found), "PageNumber": 1, "PageSize": len(found)}


def describe_lifecycle_actions(ess: FakeEss, p: Params) -> dict[str, Any]:
    # F-ESS-7, F-ESS-12: only ScalingActivityId is required (RegionId is optional in the model)
    return ess.api_describe_lifecycle_actions(
        p.required("ScalingActivityId"),
        p.text("LifecycleActionStatus"),
        p.integer("MaxResults", 10),
        p.text("NextToken"),
    )


def heartbeat(ess: FakeEss, p: Params) -> dict[str, Any]:
    return ess.api_record_lifecycle_action_heartbeat(
        p.required("lifecycleHookId"), p.required("lifecycleActionToken"), p.integer("heartbeatTimeout", 600)
    )


def complete(ess: FakeEss, p: Params) -> dict[str, Any]:
    return ess.api_complete_lifecycle_action(
        p.required("LifecycleHookId"),
        p.required("LifecycleActionToken"),
        p.text("LifecycleActionResult", "CONTINUE"),
        p.text("ClientToken"),
    )


def scale_with_adjustment(ess: FakeEss, p: Params) -> dict[str, Any]:
    p.required("AdjustmentValue")  # F-ESS-12
    return ess.api_scale_with_adjustment(
        p.required("ScalingGroupId"),
        p.required("AdjustmentType"),
        p.integer("AdjustmentValue", 0),
        p.text("ClientToken"),
    )


def remove_instances(ess: FakeEss, p: Params) -> dict[str, Any]:
    return ess.api_remove_instances(
        p.required("ScalingGroupId"),
        required_strings(p, "InstanceIds"),  # F-ESS-8
        p.boolean("DecreaseDesiredCapacity", True),
        p.boolean("IgnoreInvalidInstance", False),
        p.text("ClientToken"),
    )


def set_health(ess: FakeEss, p: Params) -> dict[str, Any]:
    return ess.api_set_instance_health(p.required("InstanceId"), p.required("HealthStatus"))


def set_protection(ess: FakeEss, p: Params) -> dict[str, Any]:
    p.required("ProtectedFromScaleIn")  # F-ESS-12
    return ess.api_set_instances_protection(
        p.required("ScalingGroupId"),
        required_strings(p, "InstanceIds"),
        p.boolean("ProtectedFromScaleIn", False),
    )


def modify_configuration(ess: FakeEss, p: Params) -> dict[str, Any]:
    return ess.api_modify_scaling_configuration(p.required("ScalingConfigurationId"), p.text("UserData"))


def describe_configurations(ess: FakeEss, p: Params) -> dict[str, Any]:
    p.required("RegionId")  # F-ESS-11
    return ess.api_describe_scaling_configurations(
        p.text("ScalingGroupId"),
        p.strings("ScalingConfigurationIds"),
        p.integer("PageNumber", 1),
        p.integer("PageSize", 10),
    )


HANDLERS: dict[str, Callable[[FakeEss, Params], dict[str, Any]]] = {
    "DescribeLifecycleHooks": lambda ess, p: ess.api_describe_lifecycle_hooks(
        p.text("ScalingGroupId"),
        p.text("LifecycleHookName"),
        p.integer("PageNumber", 1),
        p.integer("PageSize", 50),
    ),
    "CreateLifecycleHook": lambda ess, p: ess.api_create_lifecycle_hook(p.values),
    "ModifyLifecycleHook": lambda ess, p: ess.api_modify_lifecycle_hook(p.values),
    "DeleteLifecycleHook": lambda ess, p: ess.api_delete_lifecycle_hook(p.values),
    "DescribeScalingGroups": describe_groups,
    "DescribeScalingInstances": describe_instances,
    "DescribeScalingActivities": describe_activities,
    "DescribeLifecycleActions": describe_lifecycle_actions,
    "RecordLifecycleActionHeartbeat": heartbeat,
    "CompleteLifecycleAction": complete,
    "ScaleWithAdjustment": scale_with_adjustment,
    "RemoveInstances": remove_instances,
    "SetInstanceHealth": set_health,
    "SetInstancesProtection": set_protection,
    "ModifyScalingConfiguration": modify_configuration,
    "DescribeScalingConfigurations": describe_configurations,  # preflight: F-ESS-11
}
