"""MonitorPort over alibabacloud_cms20190101: custom metrics and the alarm rules on them.

PutCustomMetric takes at most 21 points a call. Alarm rules are upserts keyed by RuleId: our own
metrics get a PutCustomMetricRule, cloud metrics (ECS CPU, GWLB unhealthy servers) a
PutResourceMetricRule. CloudMonitor can answer HTTP 200 with an error in the body (``Code`` other
than "200", ``Success`` false): that is an error too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from alibabacloud_cms20190101 import models as cms_models
from alibabacloud_cms20190101.client import Client as CmsClient

from gwlb_fleet.alibaba.errors import error_for
from gwlb_fleet.alibaba.tea import RetryPolicy, TeaApi, body_of
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.ports import AlarmRule, MetricPoint
from gwlb_fleet.settings import Settings

RAM_ACTIONS: frozenset[str] = frozenset(
    {"cms:PutCustomMetric", "cms:PutCustomMetricRule", "cms:PutResourceMetricRule"}
)

MAX_POINTS_PER_CALL = 21  # CloudMonitor's limit for PutCustomMetric
RAW_VALUE = "0"  # PutCustomMetric Type: 0 = a raw value (1 = already aggregated)
ALL_RESOURCES = [{"resource": "_ALL"}]


class MonitorAdapter:
    def __init__(self, api: TeaApi, now: Callable[[], float] = time.time) -> None:
        self.api = api
        self.now = now

    @classmethod
    def from_settings(cls, settings: Settings, retry_policy: RetryPolicy | None = None) -> MonitorAdapter:
        return cls(TeaApi.from_settings("cms", settings, CmsClient, retry_policy))

    @property
    def client(self) -> Any:
        return self.api.client

    def put_custom_metrics(self, points: Sequence[MetricPoint], deadline: Deadline) -> None:
        for start in range(0, len(points), MAX_POINTS_PER_CALL):
            batch = points[start : start + MAX_POINTS_PER_CALL]
            request = cms_models.PutCustomMetricRequest(metric_list=[self._metric(point) for point in batch])
            self._checked("PutCustomMetric", self.client.put_custom_metric_with_options, request, deadline)

    def ensure_alarm_rules(self, rules: Sequence[AlarmRule], deadline: Deadline) -> None:
        for rule in rules:
            if rule.custom:
                self._checked(
                    "PutCustomMetricRule",
                    self.client.put_custom_metric_rule_with_options,
                    custom_metric_rule(rule),
                    deadline,
                )
            else:
                self._checked(
                    "PutResourceMetricRule",
                    self.client.put_resource_metric_rule_with_options,
                    resource_metric_rule(rule),
                    deadline,
                )

    def _metric(self, point: MetricPoint) -> Any:
        time_ms = point.time_ms or int(self.now() * 1000)
        return cms_models.PutCustomMetricRequestMetricList(
            metric_name=point.name,
            dimensions=json.dumps(point.dimensions, sort_keys=True, separators=(",", ":")),
            group_id=str(point.group_id),
            time=str(time_ms),
            type=RAW_VALUE,
            values=json.dumps({"value": point.value}, separators=(",", ":")),
        )

    def _checked(self, action: str, method: Callable[..., Any], request: Any, deadline: Deadline) -> None:
        body = body_of(self.api.call(action, method, request, deadline=deadline))
        code = str(body.code or "200")
        if code != "200" or getattr(body, "success", None) is False:
            raise error_for("cms", action, code, str(body.message or "the answer says it failed"))


def custom_metric_rule(rule: AlarmRule) -> Any:
    return cms_models.PutCustomMetricRuleRequest(
        rule_id=rule.rule_id,
        rule_name=rule.name,
        group_id=str(rule.group_id),
        metric_name=rule.metric,
        resources=_resources(rule),
        threshold=_number(rule.threshold),
        comparison_operator=rule.comparison,
        statistics=rule.statistics,
        period=str(rule.period_s),
        evaluation_count=rule.times,
        level=rule.level,
        silence_time=rule.silence_s,
        webhook=rule.webhook or None,
    )


def resource_metric_rule(rule: AlarmRule) -> Any:
    level = {"CRITICAL": "critical", "WARN": "warn", "INFO": "info"}[rule.level]
    condition = getattr(cms_models, f"PutResourceMetricRuleRequestEscalations{level.capitalize()}")(
        comparison_operator=rule.comparison,
        statistics=rule.statistics,
        threshold=_number(rule.threshold),
        times=rule.times,
    )
    return cms_models.PutResourceMetricRuleRequest(
        rule_id=rule.rule_id,
        rule_name=rule.name,
        namespace=rule.namespace,
        metric_name=rule.metric,
        resources=_resources(rule),
        period=str(rule.period_s),
        silence_time=rule.silence_s,
        webhook=rule.webhook or None,
        escalations=cms_models.PutResourceMetricRuleRequestEscalations(**{level: condition}),
    )


def _resources(rule: AlarmRule) -> str:
    resources = [dict(sorted(r.items())) for r in rule.resources] or ALL_RESOURCES
    return json.dumps(resources, separators=(",", ":"))


def _number(value: float) -> str:
    """Thresholds as CloudMonitor shows them: 80, not 80.0."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
