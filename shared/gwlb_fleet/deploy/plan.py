"""The calls set-up makes, by their wire names as docs/api-facts.md lists them, and the values it
derives from the settings. No secrets: names only.

A ``Call`` is one API call; ``Discovered`` stands in a parameter for a value set-up reads from
the cloud first (the GWLB metric's spelling, its Statistics: F-CMS-10, F-CMS-3), shown as such by
``--plan``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from gwlb_fleet.alibaba.ess import eventbus_arn
from gwlb_fleet.alibaba.mns import queue_target_arn
from gwlb_fleet.ports import STEP_FAILURE_DIMENSION, STEP_FAILURE_METRIC
from gwlb_fleet.settings import Settings

if TYPE_CHECKING:
    from gwlb_fleet.panos.xmlapi import PushTarget

ServiceName = Literal["mns", "cms", "ess", "ram", "kms", "sls", "ots", "gwlb", "panorama"]

AGENT_METRIC = "active_flows"  # what the agents publish (gwlb_agent.cloudmonitor)
AGENT_DIMENSION = "groupId"  # the scale rules' one dimension: the scaling group's id, exactly the
# series every agent also publishes active_flows under (F-CMS-19; gwlb_agent.cloudmonitor)
GWLB_NAMESPACE = "acs_gwlb"  # F-CMS-10
UNHEALTHY_METRIC = "servergroupunhealthyhostcount"  # matched case-insensitively: F-CMS-10
SERVER_GROUP_DIMENSION = "servergroupid"  # the same
LOAD_BALANCER_DIMENSIONS = ("instanceid", "loadbalancerid")  # the GWLB's id (F-CMS-10)
UNSET_DIMENSIONS = ("userid", "regionid")  # never named in Resources (F-CMS-10)
STATISTICS_PREFERENCE = ("Maximum", "Value", "Average")  # the first one the metric lists: F-CMS-3
NO_APPLICATION_GROUP = "0"  # PutCustomMetricRule's GroupId for points published in no group: F-CMS-4
STEP_FAILURE_STATISTICS = "Sum"  # an aggregation of custom metrics (F-CMS-19): failures in the period
QUEUE_VISIBILITY_S = 60  # F-MNS-1: a message a trigger took comes back after this if not deleted
QUEUE_RETENTION_S = 86400  # F-MNS-1: an alarm older than a day is not worth acting on
DEAD_LETTER_RETENTION_S = 604800  # F-MNS-1's maximum: an operator has a week to read failed events
FUNCTION_LOG_RETENTION_DAYS = 30  # the functions' own logs (FC's logConfig); the audit log is separate
SECRET_VERSION = "v1"  # F-KMS-2: CreateSecret's VersionId, unique within the secret (its first)
# The deployer gives a missing secret's value to `gwlb-fleet setup` in the environment, one
# variable per secret setting (never an argument, never a file the repository holds):
# PANORAMA_API_KEY_SECRET names the secret, GWLB_SETUP_SECRET_PANORAMA_API_KEY holds its value.
SECRET_SETTINGS = (
    "PANORAMA_API_KEY_SECRET",
    "BOOTSTRAP_AUTHCODES_SECRET",
    "LICENSING_CLIENT_SECRET_SECRET",
    "LICENSING_AUTH_CODE_SECRET",
    "PANLOGS_TOKEN_SECRET",  # the intake's token, which the HTTP server profile sends (deploy.panlogs)
)
SECRET_VALUE_PREFIX = "GWLB_SETUP_SECRET_"


@dataclass(frozen=True)
class Discovered:
    """A value read at set-up time from ``action``'s answer."""

    action: str
    field: str

    def __str__(self) -> str:
        return f"<{self.field} from {self.action}>"


@dataclass(frozen=True)
class FromEnvironment:
    """A secret value in a call's parameters, by the variable that holds it: the executor reads
    the variable only when it makes the call; printing, logging or planning shows the name."""

    variable: str

    def __str__(self) -> str:
        return f"<from ${self.variable}>"

    __repr__ = __str__


@dataclass(frozen=True)
class Call:
    service: ServiceName
    action: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.service:<4} {self.action} {json.dumps(self.params, sort_keys=True, default=str)}"


@dataclass(frozen=True)
class AlarmPlan:
    """One alarm rule and the queue its target points at; ``queue`` empty: an operator's rule,
    which notifies its contact group and pushes to no function."""

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


def create_dead_letter_queue(settings: Settings) -> Call:
    """The queue the functions' async config names as its failure destination (F-FC-5, F-FC-6)."""
    return Call(
        "mns",
        "CreateQueue",  # F-MNS-1
        {"QueueName": settings.dead_letter_queue, "MessageRetentionPeriod": DEAD_LETTER_RETENTION_S},
    )


def secrets(settings: Settings) -> list[tuple[str, str, str]]:
    """(setting, secret name, the variable that may hold its value) for each secret the settings
    name (F-KMS-1)."""
    by_alias = {
        str(f.validation_alias).upper(): getattr(settings, name) for name, f in Settings.model_fields.items()
    }
    return [
        (setting, by_alias[setting], secret_variable(setting))
        for setting in SECRET_SETTINGS
        if by_alias.get(setting)
    ]


def secret_variable(setting: str) -> str:
    """PANORAMA_API_KEY_SECRET -> GWLB_SETUP_SECRET_PANORAMA_API_KEY."""
    return SECRET_VALUE_PREFIX + setting.removesuffix("_SECRET")


def create_secret(name: str, variable: str) -> Call:
    """CreateSecret with the safe parameters (F-KMS-2): a Generic text secret, its first version,
    under KMS's default key; the value read from ``variable`` when the call is made."""
    return Call(
        "kms",
        "CreateSecret",
        {
            "SecretName": name,
            "VersionId": SECRET_VERSION,
            "SecretData": FromEnvironment(variable),
            "SecretDataType": "text",
            "Description": "gwlb-fleet (created by gwlb-fleet setup)",
        },
    )


def monitor_group(settings: Settings) -> Call:
    """The application group the agents' custom metrics and the scaling rules share (F-CMS-11)."""
    return Call(
        "cms",
        "CreateMonitorGroup",
        {"GroupName": settings.monitor_group_name, "ContactGroups": settings.alarm_contact_group},
    )


def scale_rules(settings: Settings, group_id: Any) -> list[Call]:
    """The agents' metric in the series ``groupId=<scaling group>`` — the one every agent adds its
    raw point to, so its period Average is the mean per appliance; a rule matches only the series
    whose dimension string equals its own (F-CMS-19) — in the fleet's application group
    (``group_id``: F-CMS-4, F-CMS-11): PutCustomMetricRule takes symbols (F-CMS-4) and always
    ContactGroups."""
    common = {
        "GroupId": str(group_id),
        "MetricName": AGENT_METRIC,
        "Resources": _custom_resources(group_id, f"{AGENT_DIMENSION}={settings.scaling_group_id}"),
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


def step_failure_rule_id(settings: Settings) -> str:
    return f"{settings.function_prefix}-step-failures"


def step_failure_rule(settings: Settings) -> Call:
    """The operator's alarm: a workflow step failed for good (``WorkflowContext.alarm`` publishes a
    point of 1 for each). Its series exactly as published, ``scaling_group_id=<scaling group>``
    (F-CMS-19), in no application group (GroupId 0, F-CMS-4): a custom rule reads the points
    published with its own GroupId (F-CMS-11), and the functions publish with none — the group's
    id exists only once set-up has run, and changes when teardown and set-up remake it; a stale id
    would silence this alarm. ``Sum`` over the period counts the failures, ``>=`` 1 in one period
    alerts; CRITICAL, to the contact group only: no push target, it is for people."""
    rule_id = step_failure_rule_id(settings)
    return Call(
        "cms",
        "PutCustomMetricRule",
        {
            "RuleId": rule_id,
            "RuleName": rule_id,
            "GroupId": NO_APPLICATION_GROUP,
            "MetricName": STEP_FAILURE_METRIC,
            "Resources": _custom_resources(
                NO_APPLICATION_GROUP, f"{STEP_FAILURE_DIMENSION}={settings.scaling_group_id}"
            ),
            "ContactGroups": settings.alarm_contact_group,
            "Statistics": STEP_FAILURE_STATISTICS,
            "ComparisonOperator": ">=",
            "Threshold": "1",
            "EvaluationCount": 1,
            "Level": "CRITICAL",
            "Period": str(settings.alarm_period_s),
            "SilenceTime": settings.alarm_silence_s,
        },
    )


def _custom_resources(group_id: Any, dimension: str) -> str:
    """A custom rule's one series: its application group's id and the exact dimension string
    (F-CMS-4, F-CMS-19)."""
    resource_group: Any = int(group_id) if str(group_id).isdigit() else str(group_id)
    return json.dumps([{"groupId": resource_group, "dimension": dimension}], separators=(",", ":"))


def unhealthy_resources(settings: Settings, dimensions: Any, load_balancer_id: Any) -> Any:
    """The rule's one resource: a value for EVERY dimension DescribeMetricMetaList lists for the
    metric but userId/regionId (F-CMS-10) — the GWLB's id (``load_balancer_id``, from
    ListServerGroups' RelatedLoadBalancerIds, F-GWLB-9) for instanceId/loadBalancerId, the server
    group's id for serverGroupId. ``ValueError`` names a dimension with no known value. Planning
    (``dimensions`` discovered later): the discovery shown as such."""
    if isinstance(dimensions, Discovered):
        return dimensions
    resource: dict[str, Any] = {}
    for dimension in dimensions:
        key = str(dimension).lower()
        if key in UNSET_DIMENSIONS:
            continue
        if key in LOAD_BALANCER_DIMENSIONS:
            resource[dimension] = load_balancer_id
        elif key == SERVER_GROUP_DIMENSION:
            resource[dimension] = settings.server_group_id
        else:
            raise ValueError(dimension)
    return resource


def unhealthy_rule(settings: Settings, metric: Any, statistics: Any, resource: Any) -> Call:
    """acs_gwlb's unhealthy-server count of the fleet's server group: PutResourceMetricRule takes
    words (F-CMS-2); the metric's name, Statistics and dimensions are what DescribeMetricMetaList
    says (F-CMS-3, F-CMS-10); ``resource`` is ``unhealthy_resources``'s."""
    rule_id = f"{settings.health_alarm_prefix}-servers"
    resources = (
        json.dumps([resource], separators=(",", ":"), default=str)
        if isinstance(resource, Mapping)
        else f"[{resource}]"
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
        AlarmPlan(step_failure_rule_id(settings), "", True),
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


# --- PAN-OS log forwarding to the intake (gwlb_fleet.deploy.panlogs), through Panorama's XML API ------


def log_forwarding_calls(settings: Settings) -> list[Call]:
    """The XML API requests set-up makes in Panorama (F-PANLF-1..7, F-PAN-1/2/4), for ``--plan``: the
    token shows as the secret's name; the managed rules and the job id are read at set-up time."""
    from gwlb_fleet.deploy import panlogs
    from gwlb_fleet.panos import xmlapi

    want = panlogs.wanted(settings, f"<KMS secret {settings.panlogs_token_secret}>")
    profile = xmlapi.http_profile_xpath(want.template, want.profile.name)
    forwarding = xmlapi.forwarding_profile_xpath(want.device_group, want.forwarding.name)
    rules = xmlapi.security_rules_xpath(want.device_group)
    rule = f"{rules}/entry[@name='<each {want.rule_prefix}* rule>']"
    admins = [name.strip() for name in settings.panorama_commit_admins.split(",") if name.strip()]
    return [
        _xml_api("type=config&action=get", xpath=profile),
        _xml_api("type=config&action=edit", xpath=profile, element=want.profile.element()),
        _xml_api("type=config&action=get", xpath=forwarding),
        _xml_api("type=config&action=edit", xpath=forwarding, element=want.forwarding.element()),
        _xml_api("type=config&action=get", xpath=rules),
        _xml_api(
            "type=config&action=set",
            xpath=rule,
            element=xmlapi.RuleLogging("", want.forwarding.name, True).element(),
        ),
        _xml_api(
            "type=commit&action=partial",
            cmd=xmlapi.partial_commit(xmlapi.commit_admins(admins) if admins else [], "gwlb-fleet setup"),
        ),
        _xml_api("type=op", cmd=str(Discovered("type=commit&action=partial", "result/job"))),
        *(_xml_api("type=config&action=show", xpath=xpath) for xpath in (profile, forwarding, rules)),
        *_push_calls(panlogs.push_order(want), panlogs.PUSH_DESCRIPTION),
    ]


def _push_calls(targets: Sequence[PushTarget], description: str) -> list[Call]:
    """Each commit-all (F-PAN-4) and the look at its job (F-PAN-2): made only when the run wrote
    or committed something (gwlb_fleet.deploy.panlogs)."""
    calls = []
    for target in targets:
        calls.append(_xml_api("type=commit&action=all", cmd=target.command(description)))
        calls.append(_xml_api("type=op", cmd=str(Discovered("type=commit&action=all", "result/job"))))
    return calls


def log_forwarding_removal_calls(settings: Settings) -> list[Call]:
    """Teardown's requests: the rules that name the forwarding profile detached, both profiles
    deleted, a partial commit, the read back."""
    from gwlb_fleet.deploy import panlogs
    from gwlb_fleet.panos import xmlapi

    want = panlogs.wanted(settings, "")
    profile = xmlapi.http_profile_xpath(want.template, want.profile.name)
    forwarding = xmlapi.forwarding_profile_xpath(want.device_group, want.forwarding.name)
    rules = xmlapi.security_rules_xpath(want.device_group)
    rule = f"{rules}/entry[@name='<each rule logging to {want.forwarding.name}>']/log-setting"
    return [
        _xml_api("type=config&action=get", xpath=rules),
        _xml_api("type=config&action=delete", xpath=rule),
        _xml_api("type=config&action=delete", xpath=forwarding),
        _xml_api("type=config&action=delete", xpath=profile),
        _xml_api("type=commit&action=partial", cmd="<commit><partial><admin>...</admin></partial></commit>"),
        *(_xml_api("type=config&action=show", xpath=xpath) for xpath in (forwarding, profile, rules)),
        *_push_calls(panlogs.push_order(want)[::-1], panlogs.TEARDOWN_PUSH_DESCRIPTION),
    ]


def _xml_api(request: str, **params: str) -> Call:
    return Call("panorama", request, params)
