"""CloudMonitor's alarm side for the lab: the rules the control plane put (through the real SDK,
into ``FakeCms.rules``) evaluated over the points CloudMonitor received, and alarm events out.

Every rule is evaluated once per period over the points of the last period (and a second and a
half more: the agents publish on their own clocks) that belong to it. A custom-metric rule's
resource ``dimension`` string must EQUAL the point's dimensions written as CloudMonitor writes
them, ``k1=v1&k2=v2`` with the keys in ascending order (F-CMS-19: no source says a rule on a subset
of a series' dimensions matches it), and the point must have been published in the rule's
application group (``GroupId``, F-CMS-11). A resource rule's ``{"key": "value"}`` entries must
each be among the point's dimensions (``_ALL``: any). Points are grouped by series (their
dimensions); the statistic is taken over each series' values, then combined across series the
same way. The scale rules watch the one series ``groupId=<scaling group>`` every agent adds its
raw point to: ``Average`` is the group's average active flows per appliance. ``times`` breaching
periods in a row make the rule ALERT; one that
does not breach makes it OK; no points at all, INSUFFICIENT_DATA.

Events, as the functions receive them: CloudMonitor writes the alarm body to an MNS queue (the
rule's target, F-CMS-7, F-CMS-14) and the queue trigger delivers it as a CloudEvent (F-FCT-4),
both built by gwlb_fleet.events' ``alarm_body`` / ``alarm_message``: on every change to ALERT or
from ALERT to OK, and again every ``silence_s`` while a rule stays ALERT — a load that does not go
away asks again.

Custom metrics (the agents' PutCustomMetric) arrive in ``FakeCms.points``; cloud metrics
(``acs_gwlb``'s UnHealthyServerCount) are the cloud's own and come in through ``publish``.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gwlb_fleet.alibaba.fakes.cms import FakeCms
from gwlb_fleet.events import alarm_body, alarm_message
from gwlb_fleet.ports import MetricPoint

State = Literal["INSUFFICIENT_DATA", "OK", "ALERT"]
KEEP_POINTS_S = 600.0
WINDOW_SLACK_S = 1.5  # a period looks back this much further: publication jitter

COMPARE: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanThreshold": lambda v, t: v > t,
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
    "LessThanThreshold": lambda v, t: v < t,
    "LessThanOrEqualToThreshold": lambda v, t: v <= t,
    "EqualToThreshold": lambda v, t: v == t,
    "NotEqualToThreshold": lambda v, t: v != t,
    # PutCustomMetricRule's symbols (F-CMS-4)
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
    "=": lambda v, t: v == t,
    "!=": lambda v, t: v != t,
}
SYMBOL = {
    "GreaterThanThreshold": ">", "GreaterThanOrEqualToThreshold": ">=", "LessThanThreshold": "<",
    "LessThanOrEqualToThreshold": "<=", "EqualToThreshold": "==", "NotEqualToThreshold": "!=",
}


@dataclass(frozen=True)
class Rule:
    rule_id: str
    name: str
    metric: str
    namespace: str  # "" for custom metrics
    comparison: str
    threshold: float
    statistic: str
    times: int
    period_s: float
    silence_s: float
    level: str
    resources: tuple[dict[str, str], ...]  # () = every series
    group_id: int | None = None  # a custom rule's application group (F-CMS-11); None: a cloud metric
    dimension_strings: tuple[str, ...] = ()  # a custom rule's series, exactly as sent (F-CMS-19)

    @property
    def expression(self) -> str:
        return f"${self.statistic}{SYMBOL.get(self.comparison, self.comparison)}{self.threshold:g}"

    def matches(self, point: MetricPoint) -> bool:
        """The rule's metric and resources, and for a custom metric its application group: a
        point published under another GroupId is not this rule's (F-CMS-4, F-CMS-11)."""
        if self.group_id is not None:
            return (
                point.group_id == self.group_id
                and point.name == self.metric
                and dimension_string(point.dimensions) in self.dimension_strings
            )
        return point.name == self.metric and (
            not self.resources
            or any(all(point.dimensions.get(k) == v for k, v in r.items()) for r in self.resources)
        )


def dimension_string(dimensions: dict[str, str]) -> str:
    """A series' dimensions as a custom rule names them: ``k1=v1&k2=v2``, keys ascending (F-CMS-19)."""
    return "&".join(f"{k}={v}" for k, v in sorted(dimensions.items()))


def _resource(entry: dict[str, Any]) -> dict[str, str]:
    """A custom rule's ``{"groupId": 0, "dimension": "k1=v1&k2=v2"}`` (F-CMS-4, F-CMS-19) or a
    resource rule's ``{"dimension key": "value"}`` (F-CMS-1), as a dimension map (for the alarm
    body's resources)."""
    if "dimension" in entry:
        pairs = (part.partition("=") for part in str(entry["dimension"]).split("&") if part)
        return {k: v for k, _, v in pairs}
    return {str(k): str(v) for k, v in entry.items()}


def rule_from_params(rule_id: str, params: dict[str, str], kind: str, time_scale: float = 1.0) -> Rule:
    """A rule from the parameters the SDK sent (PutCustomMetricRule / PutResourceMetricRule).
    ``time_scale`` shrinks the rule's periods: the lab runs CloudMonitor's minutes in seconds
    (a rule's Period is at least 60 s, F-CMS-4)."""
    entries = json.loads(params.get("Resources") or "[]")
    resources = tuple(_resource(r) for r in entries if r.get("resource") != "_ALL")
    common: dict[str, Any] = {
        "rule_id": rule_id,
        "name": params.get("RuleName", rule_id),
        "metric": params["MetricName"],
        "period_s": float(params.get("Period") or 60) * time_scale,
        "silence_s": float(params.get("SilenceTime") or 86400) * time_scale,
        "resources": resources,
    }
    if kind == "PutCustomMetricRule":
        return Rule(namespace="", comparison=params["ComparisonOperator"],
                    group_id=int(params.get("GroupId") or 0),
                    dimension_strings=tuple(str(r.get("dimension", "")) for r in entries),
                    threshold=float(params["Threshold"]), statistic=params.get("Statistics", "Average"),
                    times=int(params.get("EvaluationCount") or 1), level=params.get("Level", "CRITICAL"),
                    **common)
    for level in ("Critical", "Warn", "Info"):
        prefix = f"Escalations.{level}."
        if prefix + "ComparisonOperator" in params:
            return Rule(namespace=params.get("Namespace", ""),
                        comparison=params[prefix + "ComparisonOperator"],
                        threshold=float(params[prefix + "Threshold"]),
                        statistic=params.get(prefix + "Statistics", "Average"),
                        times=int(params.get(prefix + "Times") or 1), level=level.upper(), **common)
    raise ValueError(f"rule {rule_id}: no escalation")


def aggregate(statistic: str, series: Sequence[Sequence[float]]) -> float:
    """The statistic of each series, then across the series."""
    per_series = [_statistic(statistic, values) for values in series if values]
    return _statistic(statistic, per_series)


def _statistic(statistic: str, values: Sequence[float]) -> float:
    if statistic in ("Maximum", "Value"):  # acs_gwlb's metrics report one Value a period (F-CMS-10)
        return max(values)
    if statistic == "Minimum":
        return min(values)
    if statistic == "Sum":
        return float(sum(values))
    return float(statistics.fmean(values))


@dataclass
class AlarmState:
    rule: Rule
    state: State = "INSUFFICIENT_DATA"
    breaches: int = 0
    value: float | None = None
    series: int = 0
    evaluated_at: float = 0.0
    changed_at: float = 0.0
    notified_at: float = 0.0
    notifications: int = 0

    def snapshot(self) -> dict[str, Any]:
        r = self.rule
        return {
            "rule_id": r.rule_id, "name": r.name, "metric": r.metric, "expression": r.expression,
            "times": r.times, "period_s": r.period_s, "state": self.state, "breaches": self.breaches,
            "value": None if self.value is None else round(self.value, 2), "series": self.series,
            "changed_at": self.changed_at, "notifications": self.notifications,
        }


@dataclass(frozen=True)
class Notification:
    rule: Rule
    state: State
    value: float
    dimensions: dict[str, str]

    def event(self, region: str, account: str = "1234567890123456",
              queue: str = "gwlb-fleet-alarms") -> dict[str, Any]:
        """The CloudEvent the queue trigger delivers for this notification (see
        tests/events/mns-cms-alarm-*.json)."""
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        r = self.rule
        body = alarm_body(
            r.rule_id, r.name, r.level if self.state == "ALERT" else "OK",
            pre_level="OK" if self.state == "ALERT" else r.level, resources=self.dimensions,
            metric_name=r.metric, namespace=r.namespace or f"acs_customMetric_{account}",
            statistics=r.statistic, comparison_operator=r.comparison, threshold=r.threshold,
            times=r.times, value=self.value, period_s=int(r.period_s), time_ms=int(now * 1000),
            batch_id=str(uuid.uuid4()), user_id=account,
        )
        return alarm_message(body, queue=queue, region=region, account_id=account, time=stamp)


@dataclass
class AlarmEvaluator:
    cms: FakeCms
    clock: Callable[[], float] = time.time
    time_scale: float = 1.0  # the lab's seconds per CloudMonitor second
    states: dict[str, AlarmState] = field(default_factory=dict)
    _cloud_points: list[tuple[str, MetricPoint]] = field(default_factory=list)  # (namespace, point)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, namespace: str, point: MetricPoint) -> None:
        """A cloud service's own metric point (acs_gwlb, ...)."""
        with self._lock:
            self._cloud_points.append((namespace, point))

    def rules(self) -> list[Rule]:
        with self.cms._lock:  # the API threads write the rules
            items = [(rule_id, dict(params), self.cms.rule_kinds.get(rule_id, ""))
                     for rule_id, params in self.cms.rules.items()]
        return [rule_from_params(rule_id, params, kind, self.time_scale) for rule_id, params, kind in items]

    def evaluate(self) -> list[Notification]:
        """Evaluate the rules whose period is due; the events to send."""
        now = self.clock()
        self._prune(now)
        out: list[Notification] = []
        for rule in self.rules():
            state = self.states.get(rule.rule_id)
            if state is None or state.rule != rule:
                state = self.states[rule.rule_id] = AlarmState(rule, changed_at=now)
            if now - state.evaluated_at < rule.period_s:
                continue
            notification = self._evaluate(state, now)
            if notification is not None:
                out.append(notification)
        return out

    def _evaluate(self, state: AlarmState, now: float) -> Notification | None:
        rule = state.rule
        state.evaluated_at = now
        series: dict[tuple[tuple[str, str], ...], list[float]] = {}
        for point in self._points(rule, now - rule.period_s - WINDOW_SLACK_S, now):
            series.setdefault(tuple(sorted(point.dimensions.items())), []).append(point.value)
        previous = state.state
        state.series = len(series)
        if not series:
            new: State = "INSUFFICIENT_DATA"
            state.value, state.breaches = None, 0
        else:
            state.value = aggregate(rule.statistic, list(series.values()))
            breached = COMPARE[rule.comparison](state.value, rule.threshold)
            state.breaches = state.breaches + 1 if breached else 0
            new = "ALERT" if state.breaches >= rule.times else "OK"
        state.state = new
        if new != previous:
            state.changed_at = now
        repeat = new == "ALERT" and now - state.notified_at >= rule.silence_s
        if (new == "ALERT" and (previous != "ALERT" or repeat)) or (new == "OK" and previous == "ALERT"):
            state.notified_at = now
            state.notifications += 1
            dims = dict(rule.resources[0]) if rule.resources else {}
            return Notification(rule, new, state.value or 0.0, dims)
        return None

    def _points(self, rule: Rule, start: float, end: float) -> list[MetricPoint]:
        if rule.namespace:
            with self._lock:
                candidates = [p for ns, p in self._cloud_points if ns == rule.namespace]
        else:
            with self.cms._lock:
                candidates = list(self.cms.points)
        return [p for p in candidates if start < p.time_ms / 1000.0 <= end and rule.matches(p)]

    def _prune(self, now: float) -> None:
        horizon_ms = (now - KEEP_POINTS_S) * 1000
        with self.cms._lock:
            if self.cms.points and self.cms.points[0].time_ms < horizon_ms:
                self.cms.points[:] = [p for p in self.cms.points if p.time_ms >= horizon_ms]
        with self._lock:
            self._cloud_points[:] = [(ns, p) for ns, p in self._cloud_points if p.time_ms >= horizon_ms]

    def snapshot(self) -> list[dict[str, Any]]:
        return [s.snapshot() for s in self.states.values()]
