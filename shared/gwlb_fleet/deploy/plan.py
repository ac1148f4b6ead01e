"""The calls set-up makes, by their wire names as docs/api-facts.md lists them, and the values it
derives from the settings. No secrets: names only.

A ``Call`` is one API call; ``Discovered`` stands in a parameter for a value set-up reads from
the cloud first (the GWLB metric's spelling, its Statistics: F-CMS-10, F-CMS-3), shown as such by
``--plan``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gwlb_fleet.alibaba.ess import eventbus_arn
from gwlb_fleet.alibaba.mns import queue_target_arn
from gwlb_fleet.settings import Settings

ServiceName = Literal["mns", "cms", "ess", "ram", "sls", "ots"]

AGENT_METRIC = "active_flows"  # what the agents publish (gwlb_agent.cloudmonitor)
AGENT_DIMENSION = "groupId"  # the agents' dimension: the scaling group's id
GWLB_NAMESPACE = "acs_gwlb"  # F-CMS-10
UNHEALTHY_METRIC = "servergroupunhealthyhostcount"  # matched case-insensitively: F-CMS-10
SERVER_GROUP_DIMENSION = "servergroupid"  # the same
STATISTICS_PREFERENCE = ("Maximum", "Value", "Average")  # the first one the metric lists: F-CMS-3
NO_APPLICATION_GROUP = "0"  # F-CMS-4/F-CMS-11: the agents publish with GroupId 0
QUEUE_VISIBILITY_S = 60  # F-MNS-1: a message a trigger took comes back after this if not deleted
QUEUE_RETENTION_S = 86400  # F-MNS-1: an alarm older than a day is not worth acting on


@dataclass(frozen=True)
class Discovered:
    """A value read at set-up time from ``action``'s answer."""

    action: str
    field: str

    def __str__(self) -> str:
        return f"<{self.field} from {self.action}>"


@dataclass(frozen=True)
class Call:
    service: ServiceName
    action: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.service:<4} {self.action} {json.dumps(self.params, sort_keys=True, default=str)}"


@dataclass(frozen=True)
class AlarmPlan:
    """One alarm rule and the queue its target points at."""

    rule_id: str
    queue: str
    custom: bool


@dataclass(frozen=True)
class HookPlan:
    name: str
    transition: Literal["SCALE_OUT", "SCALE_IN"]
    default_result: str


def queues(settings: Settings) -> list[str]:
    return [settings.scale_alarm_queue, settings.health_alarm_queue]


def create_queue(settings: Settings, queue: str) -> Call:
    return Call(
        "mns",
        "CreateQueue",  # F-MNS-1
        {
            "QueueName": queue,
            "VisibilityTimeout": QUEUE_VISIBILITY_S,
            "MessageRetentionPeriod": QUEUE_RETENTION_S,
        },
    )


def scale_rules(settings: Settings) -> list[Call]:
    """The agents' metric, averaged over the scaling group: PutCustomMetricRule takes symbols
    (F-CMS-4) and always ContactGroups."""
    resources = json.dumps(
        [{"groupId": 0, "dimension": f"{AGENT_DIMENSION}={settings.scaling_group_id}"}], separators=(",", ":")
    )
    common = {
        "GroupId": NO_APPLICATION_GROUP,
        "MetricName": AGENT_METRIC,
        "Resources": resources,
        "ContactGroups": settings.alarm_contact_group,
        "Statistics": "Average",
        "Level": "CRITICAL",
        "Period": str(settings.alarm_period_s),
        "SilenceTime": settings.alarm_silence_s,
    }
    out = f"{settings.scale_out_alarm_prefix}-flows"
    in_ = f"{settings.scale_in_alarm_prefix}-flows"
    return [
        Call(
            "cms",
            "PutCustomMetricRule",
            {
                "RuleId": out,
                "RuleName": out,
                "ComparisonOperator": ">",
                "Threshold": _number(settings.scale_out_flows_above),
                "EvaluationCount": settings.scale_out_periods,
                **common,
            },
        ),
        Call(
            "cms",
            "PutCustomMetricRule",
            {
                "RuleId": in_,
                "RuleName": in_,
                "ComparisonOperator": "<",
                "Threshold": _number(settings.scale_in_flows_below),
                "EvaluationCount": settings.scale_in_periods,
                **common,
            },
        ),
    ]


def unhealthy_rule(settings: Settings, metric: Any, statistics: Any, dimension: Any) -> Call:
    """acs_gwlb's unhealthy-server count per server group: PutResourceMetricRule takes words
    (F-CMS-2); the metric's name, Statistics and dimension are what DescribeMetricMetaList says
    (F-CMS-3, F-CMS-10)."""
    rule_id = f"{settings.health_alarm_prefix}-servers"
    resources = (
        json.dumps([{dimension: settings.server_group_id}], separators=(",", ":"))
        if isinstance(dimension, str)
        else f'[{{"{dimension}":"{settings.server_group_id}"}}]'
    )
    return Call(
        "cms",
        "PutResourceMetricRule",
        {
            "RuleId": rule_id,
            "RuleName": rule_id,
            "Namespace": GWLB_NAMESPACE,
            "MetricName": metric,
            "Resources": resources,
            "ContactGroups": settings.alarm_contact_group,
            "Period": str(settings.alarm_period_s),
            "SilenceTime": settings.alarm_silence_s,
            "Escalations": {
                "Critical": {
                    "Statistics": statistics,
                    "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                    "Threshold": "1",
                    "Times": 1,
                }
            },
        },
    )


def alarms(settings: Settings) -> list[AlarmPlan]:
    return [
        AlarmPlan(f"{settings.scale_out_alarm_prefix}-flows", settings.scale_alarm_queue, True),
        AlarmPlan(f"{settings.scale_in_alarm_prefix}-flows", settings.scale_alarm_queue, True),
        AlarmPlan(f"{settings.health_alarm_prefix}-servers", settings.health_alarm_queue, False),
    ]


def rule_targets(settings: Settings, alarm: AlarmPlan) -> Call:
    """The rule's one push target: its MNS queue, ARN as the API reference spells it (F-CMS-6/7)."""
    arn = queue_target_arn(settings.region, settings.account_id, alarm.queue)
    return Call(
        "cms", "PutMetricRuleTargets", {"RuleId": alarm.rule_id, "Targets": [{"Id": "1", "Arn": arn}]}
    )


def hooks(settings: Settings) -> list[HookPlan]:
    prefix = settings.function_prefix
    return [
        HookPlan(f"{prefix}-scale-out", "SCALE_OUT", settings.scale_out_hook_default_result),
        HookPlan(f"{prefix}-scale-in", "SCALE_IN", settings.scale_in_hook_default_result),
    ]


def hook_params(settings: Settings, hook: HookPlan) -> dict[str, Any]:
    """CreateLifecycleHook's parameters (F-ESS-1), notifying the event bus (F-ESS-3)."""
    return {
        "ScalingGroupId": settings.scaling_group_id,
        "LifecycleHookName": hook.name,
        "LifecycleTransition": hook.transition,
        "DefaultResult": hook.default_result,
        "HeartbeatTimeout": settings.hook_timeout_s,
        "NotificationArn": eventbus_arn(settings.region, settings.account_id),
    }


def _number(value: float) -> str:
    """Thresholds as CloudMonitor shows them: 80, not 80.0."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
