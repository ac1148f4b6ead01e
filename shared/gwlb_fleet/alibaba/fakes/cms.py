"""An in-memory CloudMonitor: custom metric points as received, and alarm rules by rule id.

``metric_params`` and ``rule_params`` say what goes on the wire for a point and a rule, in the
flattened form the SDK sends (``MetricList.1.MetricName``, ``Escalations.Critical.Threshold``):
the contract tests hold the real adapter to them, so the fake and the adapter cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

from gwlb_fleet.alibaba.fakes.openapi import FakeOpenApiService
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.ports import AlarmRule, MetricPoint

MAX_POINTS_PER_CALL = 21
ALL_RESOURCES = '[{"resource":"_ALL"}]'
COMPARISONS = frozenset(
    {
        "GreaterThanOrEqualToThreshold",
        "GreaterThanThreshold",
        "LessThanOrEqualToThreshold",
        "LessThanThreshold",
        "EqualToThreshold",
        "NotEqualToThreshold",
    }
)


def metric_params(point: MetricPoint, now_ms: int) -> dict[str, str]:
    """One MetricList entry of PutCustomMetric (without the ``MetricList.N.`` prefix)."""
    return {
        "MetricName": point.name,
        "Dimensions": json.dumps(point.dimensions, sort_keys=True, separators=(",", ":")),
        "GroupId": str(point.group_id),
        "Time": str(point.time_ms or now_ms),
        "Type": "0",
        "Values": json.dumps({"value": point.value}, separators=(",", ":")),
    }


def rule_params(rule: AlarmRule) -> dict[str, str]:
    """The parameters of the PutCustomMetricRule or PutResourceMetricRule call for ``rule``."""
    resources = (
        json.dumps([dict(sorted(r.items())) for r in rule.resources], separators=(",", ":"))
        if rule.resources
        else ALL_RESOURCES
    )
    common = {
        "RuleId": rule.rule_id,
        "RuleName": rule.name,
        "MetricName": rule.metric,
        "Resources": resources,
        "Period": str(rule.period_s),
        "SilenceTime": str(rule.silence_s),
    }
    if rule.webhook:
        common["Webhook"] = rule.webhook
    threshold = (
        str(int(rule.threshold)) if float(rule.threshold).is_integer() else repr(float(rule.threshold))
    )
    if rule.custom:
        return {
            **common,
            "GroupId": str(rule.group_id),
            "Threshold": threshold,
            "ComparisonOperator": rule.comparison,
            "Statistics": rule.statistics,
            "EvaluationCount": str(rule.times),
            "Level": rule.level,
        }
    level = {"CRITICAL": "Critical", "WARN": "Warn", "INFO": "Info"}[rule.level]
    return {
        **common,
        "Namespace": rule.namespace,
        f"Escalations.{level}.ComparisonOperator": rule.comparison,
        f"Escalations.{level}.Statistics": rule.statistics,
        f"Escalations.{level}.Threshold": threshold,
        f"Escalations.{level}.Times": str(rule.times),
    }


@dataclass
class FakeCms(FakeOpenApiService):
    service: ClassVar[str] = "cms"

    points: list[MetricPoint] = field(default_factory=list)
    rules: dict[str, dict[str, str]] = field(default_factory=dict)  # rule id -> its parameters
    rule_kinds: dict[str, str] = field(default_factory=dict)  # rule id -> the action that put it

    # --- the API ----------------------------------------------------------------------------------

    def api_put_custom_metric(self, metric_list: Sequence[Mapping[str, str]]) -> dict[str, Any]:
        with self._api("PutCustomMetric"):
            if not metric_list or len(metric_list) > MAX_POINTS_PER_CALL:
                raise self._fail(
                    "InvalidParameter",
                    f"MetricList takes 1 to {MAX_POINTS_PER_CALL} entries, not {len(metric_list)}",
                )
            parsed = [_point(entry) for entry in metric_list]
            self.points.extend(parsed)
            return {"Code": "200", "Message": ""}

    def api_put_custom_metric_rule(self, params: Mapping[str, str]) -> dict[str, Any]:
        with self._api("PutCustomMetricRule"):
            return self._put_rule(
                "PutCustomMetricRule", params, ("RuleId", "RuleName", "MetricName", "Resources")
            )

    def api_put_resource_metric_rule(self, params: Mapping[str, str]) -> dict[str, Any]:
        with self._api("PutResourceMetricRule"):
            return self._put_rule(
                "PutResourceMetricRule", params, ("RuleId", "RuleName", "Namespace", "MetricName")
            )

    def _put_rule(self, action: str, params: Mapping[str, str], required: Sequence[str]) -> dict[str, Any]:
        missing = [name for name in required if not params.get(name)]
        if missing:
            raise self._fail("MissingParameter", f"{missing[0]} is mandatory for this action.")
        comparisons = {v for k, v in params.items() if k.endswith("ComparisonOperator")}
        if not comparisons or not comparisons <= COMPARISONS:
            raise self._fail("InvalidParameter", f"ComparisonOperator {sorted(comparisons)}")
        self.rules[params["RuleId"]] = dict(params)
        self.rule_kinds[params["RuleId"]] = action
        return {"Code": "200", "Message": "", "Success": True}

    # --- MonitorPort ------------------------------------------------------------------------------------

    def put_custom_metrics(self, points: Sequence[MetricPoint], deadline: Deadline) -> None:
        now_ms = int(self.clock() * 1000)
        for start in range(0, len(points), MAX_POINTS_PER_CALL):
            batch = [metric_params(point, now_ms) for point in points[start : start + MAX_POINTS_PER_CALL]]
            self._port("PutCustomMetric", partial(self.api_put_custom_metric, batch))

    def ensure_alarm_rules(self, rules: Sequence[AlarmRule], deadline: Deadline) -> None:
        for rule in rules:
            params = rule_params(rule)
            if rule.custom:
                self._port("PutCustomMetricRule", partial(self.api_put_custom_metric_rule, params))
            else:
                self._port("PutResourceMetricRule", partial(self.api_put_resource_metric_rule, params))


def _point(entry: Mapping[str, str]) -> MetricPoint:
    values = json.loads(entry.get("Values") or "{}")
    return MetricPoint(
        name=entry.get("MetricName", ""),
        value=float(values.get("value", 0.0)),
        dimensions=dict(json.loads(entry.get("Dimensions") or "{}")),
        time_ms=int(entry.get("Time") or 0),
        group_id=int(entry.get("GroupId") or 0),
    )
