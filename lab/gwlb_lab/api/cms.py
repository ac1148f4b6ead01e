"""CloudMonitor 2019-01-01 on the local endpoint: custom metrics, alarm rules and their targets,
metric metadata, contact groups (query string)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gwlb_fleet.alibaba.fakes.cms import FakeCms
from gwlb_lab.api.params import Params

PRODUCT = "cms"
VERSION = "2019-01-01"


def put_custom_metric(cms: FakeCms, p: Params) -> dict[str, Any]:
    return cms.api_put_custom_metric(p.objects("MetricList"))


def put_custom_metric_rule(cms: FakeCms, p: Params) -> dict[str, Any]:
    return cms.api_put_custom_metric_rule(p.values)


def put_resource_metric_rule(cms: FakeCms, p: Params) -> dict[str, Any]:
    return cms.api_put_resource_metric_rule(p.values)


def put_metric_rule_targets(cms: FakeCms, p: Params) -> dict[str, Any]:
    return cms.api_put_metric_rule_targets(p.text("RuleId"), p.objects("Targets"))


HANDLERS: dict[str, Callable[[FakeCms, Params], dict[str, Any]]] = {
    "DescribeContactGroupList": lambda cms, p: cms.api_describe_contact_group_list(
        p.integer("PageNumber", 1), p.integer("PageSize", 100)
    ),
    "DescribeMetricMetaList": lambda cms, p: cms.api_describe_metric_meta_list(
        p.text("Namespace"), p.text("MetricName"), p.integer("PageNumber", 1), p.integer("PageSize", 30)
    ),
    "DescribeMetricRuleList": lambda cms, p: cms.api_describe_metric_rule_list(p.text("RuleIds")),
    "PutMetricRuleTargets": put_metric_rule_targets,
    "DescribeMetricRuleTargets": lambda cms, p: cms.api_describe_metric_rule_targets(p.text("RuleId")),
    "DeleteMetricRules": lambda cms, p: cms.api_delete_metric_rules(p.strings("Id")),
    "PutCustomMetric": put_custom_metric,
    "PutCustomMetricRule": put_custom_metric_rule,
    "PutResourceMetricRule": put_resource_metric_rule,
    "CreateMonitorGroup": lambda cms, p: cms.api_create_monitor_group(p.values),  # F-CMS-11
    "DescribeMonitorGroups": lambda cms, p: cms.api_describe_monitor_groups(p.values),
    "DeleteMonitorGroup": lambda cms, p: cms.api_delete_monitor_group(p.values),
}
