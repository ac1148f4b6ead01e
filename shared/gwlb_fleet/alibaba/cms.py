"""MonitorPort over alibabacloud_cms20190101: the agents' custom metrics; and the set-up calls
(alarm rules, their push targets, metric metadata, contact groups) that gwlb_fleet.deploy makes
with the deployer's credentials, never the functions' role (``SETUP_RAM_ACTIONS``).

PutCustomMetric takes at most 21 points a call. CloudMonitor can answer HTTP 200 with an error in
the body (``Code`` other than "200", ``Success`` false, a non-empty ``FailData``): that is an
error too (F-CMS-6).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from alibabacloud_cms20190101 import models as cms_models
from alibabacloud_cms20190101.client import Client as CmsClient

from gwlb_fleet.alibaba.errors import error_for
from gwlb_fleet.alibaba.tea import RetryPolicy, SetupApi, TeaApi, body_of, setup_calls
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.ports import MetricPoint
from gwlb_fleet.settings import Settings

RAM_ACTIONS: frozenset[str] = frozenset({"cms:PutCustomMetric"})

# gwlb_fleet.deploy's calls, made with the deployer's credentials: not in the functions' policy.
SETUP_CALLS = setup_calls(
    cms_models,
    "DescribeContactGroupList",  # F-CMS-15
    "DescribeMetricMetaList",  # F-CMS-9
    "PutCustomMetricRule",  # F-CMS-4
    "PutResourceMetricRule",  # F-CMS-1
    "DescribeMetricRuleList",  # F-CMS-16
    "PutMetricRuleTargets",  # F-CMS-6
    "DescribeMetricRuleTargets",  # F-CMS-8
    "DeleteMetricRules",  # F-CMS-8
    "DescribeMonitorGroups",  # F-CMS-11
    "CreateMonitorGroup",  # F-CMS-11
    "DeleteMonitorGroup",  # F-CMS-11
)
SETUP_RAM_ACTIONS: frozenset[str] = frozenset(f"cms:{action}" for action in SETUP_CALLS)

MAX_POINTS_PER_CALL = 21  # CloudMonitor's limit for PutCustomMetric
RAW_VALUE = "0"  # PutCustomMetric Type: 0 = a raw value (1 = already aggregated)


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


def body_verdict(action: str, body: Mapping[str, Any]) -> None:
    """CloudMonitor's failures in a 200 body (F-CMS-6): ``Code`` not 200, ``Success`` false, or
    targets listed in ``FailData``."""
    code = str(body.get("Code") or "200")
    failed = ((body.get("FailData") or {}).get("Targets") or {}).get("Target") or []
    if code != "200" or body.get("Success") is False or failed:
        detail = f"; targets not set: {failed}" if failed else ""
        message = f"{body.get('Message') or 'the answer says it failed'}{detail}"
        raise error_for("cms", action, code if code != "200" else "FailData", message)


def setup_api(settings: Settings, retry_policy: RetryPolicy | None = None) -> SetupApi:
    api = TeaApi.from_settings("cms", settings, CmsClient, retry_policy)
    return SetupApi(api, SETUP_CALLS, body_verdict)
