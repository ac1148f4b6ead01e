"""CloudMonitor 2019-01-01 on the local endpoint: custom metrics and alarm rules (query string)."""

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


HANDLERS: dict[str, Callable[[FakeCms, Params], dict[str, Any]]] = {
    "PutCustomMetric": put_custom_metric,
    "PutCustomMetricRule": put_custom_metric_rule,
    "PutResourceMetricRule": put_resource_metric_rule,
}
