"""An in-memory CloudMonitor: custom metric points as received; alarm rules, their targets, the
metric metadata and contact groups (``FakeCms`` extends ``FakeCmsRules``, fakes/cmsrules.py).

``metric_params`` says what goes on the wire for a point, in the flattened form the SDK sends
(``MetricList.1.MetricName``): the contract tests hold the real adapter to it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

from gwlb_fleet.alibaba.fakes.cmsrules import FakeCmsRules
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.ports import MetricPoint

MAX_POINTS_PER_CALL = 21


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


@dataclass
class FakeCms(FakeCmsRules):
    service: ClassVar[str] = "cms"

    points: list[MetricPoint] = field(default_factory=list)

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

    # rules, targets, metadata, contact groups: gwlb_fleet.alibaba.fakes.cmsrules

    # --- MonitorPort ------------------------------------------------------------------------------------

    def put_custom_metrics(self, points: Sequence[MetricPoint], deadline: Deadline) -> None:
        now_ms = int(self.clock() * 1000)
        for start in range(0, len(points), MAX_POINTS_PER_CALL):
            batch = [metric_params(point, now_ms) for point in points[start : start + MAX_POINTS_PER_CALL]]
            self._port("PutCustomMetric", partial(self.api_put_custom_metric, batch))


def _point(entry: Mapping[str, str]) -> MetricPoint:
    values = json.loads(entry.get("Values") or "{}")
    return MetricPoint(
        name=entry.get("MetricName", ""),
        value=float(values.get("value", 0.0)),
        dimensions=dict(json.loads(entry.get("Dimensions") or "{}")),
        time_ms=int(entry.get("Time") or 0),
        group_id=int(entry.get("GroupId") or 0),
    )
