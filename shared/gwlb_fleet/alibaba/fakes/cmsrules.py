"""CloudMonitor's alarm side in memory: contact groups, metric metadata, alarm rules and their push
targets, checked as docs/api-facts.md says CloudMonitor checks them.

- PutCustomMetricRule takes symbols, Put{Resource}MetricRule words (F-CMS-2, F-CMS-4); the other
  form is refused. ContactGroups is required on both (F-CMS-1, F-CMS-4).
- A resource rule's Statistics must be one DescribeMetricMetaList lists for the metric (F-CMS-3);
  a custom rule's, one of the aggregations CloudMonitor computes for custom metrics (F-CMS-19).
- A resource rule's ``Resources`` must name every dimension of the metric but ``userId`` and
  ``regionId`` (F-CMS-10); a custom rule's entries are ``{"groupId": <the rule's GroupId>,
  "dimension": "k1=v1&k2=v2"}`` (F-CMS-4, F-CMS-19). The string is kept as sent: the alarm
  evaluation matches it exactly against the published series' (keys in ascending order), so a rule
  on a series nobody publishes never fires — as the cloud would behave.
- Every contact group named in ``ContactGroups`` must exist (F-CMS-15).
- PutMetricRuleTargets reports a target it cannot set in ``FailData`` of a 200 answer (F-CMS-6);
  ARNs are checked against the documented forms (F-CMS-7).
- Application groups (F-CMS-11): CreateMonitorGroup needs ``GroupName`` (names are not unique: a
  second group of the same name is a new id), DescribeMonitorGroups filters by ``GroupName``
  (contains, case-insensitively: the API does not say exact) and pages, DeleteMonitorGroup needs
  the ``GroupId`` of a group that exists. PutCustomMetricRule's ``GroupId`` must be ``0`` (no
  group) or a group that exists.

Parameters arrive flattened as the SDK sends them (``Escalations.Critical.Statistics``,
``Targets.1.Arn``, ``Id.1``). Error codes: CloudMonitor's pages document no specific code for a
bad enumeration, so these answer ``InvalidParameter`` / ``MissingParameter`` (F-CMS-17).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gwlb_fleet.alibaba.fakes.openapi import FakeOpenApiService

SYMBOLS = frozenset({">=", "=", "<=", ">", "<", "!="})  # F-CMS-4
WORDS = frozenset(  # F-CMS-2
    {
        "GreaterThanOrEqualToThreshold",
        "GreaterThanThreshold",
        "LessThanOrEqualToThreshold",
        "LessThanThreshold",
        "NotEqualToThreshold",
        "EqualToThreshold",
        "GreaterThanYesterday",
        "LessThanYesterday",
        "GreaterThanLastWeek",
        "LessThanLastWeek",
        "GreaterThanLastPeriod",
        "LessThanLastPeriod",
    }
)
LEVELS = ("Critical", "Warn", "Info")
MAX_TARGETS = 5  # F-CMS-6
TARGET_ARN = re.compile(  # F-CMS-7
    r"acs:mns:[a-z0-9-]+:\d+:/(queues|topics)/[A-Za-z0-9-]+/messages?"
    r"|acs:ess:[a-z0-9-]+:\d+:scalingGroupId/[^:]+:scalingRuleId/.+"
    r"|acs:log:[a-z0-9-]+:\d+:project/[^/]+/logstore/.+"
    r"|acs:fc:[a-z0-9-]+:\d+:services/[^/]+/functions/.+"
)
# F-CMS-19: the aggregations CloudMonitor computes from raw custom-metric points
CUSTOM_STATISTICS = frozenset(
    {"Average", "Maximum", "Minimum", "Sum", "SampleCount", "SumPerSecond", "CountPerSecond", "LastValue"}
    | {f"P{n}" for n in range(10, 100, 10)}
)
UNSET_DIMENSIONS = frozenset({"userId", "regionId"})  # F-CMS-10: never named in a rule's Resources
DIMENSION_STRING = re.compile(r"[^=&,]+=[^=&,]*(&[^=&,]+=[^=&,]*)*")  # F-CMS-19: k1=v1&k2=v2
UNHEALTHY_METRIC_NAME = "ServerGroupUnHealthyHostCount"  # the lab's spelling (F-CMS-10)
_GWLB_DIMENSIONS = "userId,regionId,instanceId,availableZone,addressIpVersion"
# The lab's DescribeMetricMetaList for acs_gwlb (F-CMS-10): the one place the unhealthy-server
# metric's spelling lives; set-up discovers it from here as it would from CloudMonitor.
GWLB_METRICS: tuple[dict[str, str], ...] = (
    *(
        {
            "Namespace": "acs_gwlb",
            "MetricName": name,
            "Statistics": "Value",
            "Dimensions": _GWLB_DIMENSIONS,
            "Periods": "60",
            "Unit": unit,
            "Description": name,
        }
        for name, unit in (
            ("NewConnection", "Count/s"),
            ("ActiveConnection", "Count"),
            ("PacketRX", "Packets/s"),
            ("PacketTX", "Packets/s"),
            ("TrafficRX", "bits/s"),
            ("TrafficTX", "bits/s"),
        )
    ),
    {
        "Namespace": "acs_gwlb",
        "MetricName": UNHEALTHY_METRIC_NAME,
        "Statistics": "Value",
        # F-CMS-10 (undocumented here): the GWLB's id and the server group, as ALB's sister metric
        # names loadBalancerId and serverGroupId; set-up must fill every one but userId/regionId
        "Dimensions": "userId,regionId,instanceId,serverGroupId",
        "Periods": "60",
        "Unit": "Count",
        "Description": "unhealthy servers in a server group",
    },
)


@dataclass
class FakeCmsRules(FakeOpenApiService):
    contact_groups: list[str] = field(default_factory=list)
    metric_meta: list[dict[str, str]] = field(default_factory=lambda: [dict(m) for m in GWLB_METRICS])
    rules: dict[str, dict[str, str]] = field(default_factory=dict)  # rule id -> its parameters
    rule_kinds: dict[str, str] = field(default_factory=dict)  # rule id -> the action that put it
    targets: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # rule id -> Targets
    monitor_groups: dict[int, dict[str, str]] = field(default_factory=dict)  # id -> GroupName, ContactGroups
    next_group_id: int = 3_000_001

    def api_describe_contact_group_list(self, page: int, size: int) -> dict[str, Any]:
        with self._api("DescribeContactGroupList"):  # F-CMS-15
            names = self.contact_groups[(page - 1) * size : page * size]
            return _ok(
                {
                    "ContactGroupList": {"ContactGroup": [{"Name": n} for n in names]},
                    "Total": len(self.contact_groups),
                }
            )

    def api_describe_metric_meta_list(
        self, namespace: str, metric: str, page: int, size: int
    ) -> dict[str, Any]:
        with self._api("DescribeMetricMetaList"):  # F-CMS-9
            found = [
                m
                for m in self.metric_meta
                if (not namespace or m["Namespace"] == namespace)
                and (not metric or m["MetricName"] == metric)
            ]
            return _ok(
                {
                    "Resources": {"Resource": found[(page - 1) * size : page * size]},
                    "TotalCount": str(len(found)),
                }
            )

    def api_create_monitor_group(self, params: Mapping[str, str]) -> dict[str, Any]:
        with self._api("CreateMonitorGroup"):  # F-CMS-11
            self._required(params, "GroupName")
            group_id = self.next_group_id
            self.next_group_id += 1
            self.monitor_groups[group_id] = {
                "GroupName": params["GroupName"],
                "ContactGroups": params.get("ContactGroups", ""),
            }
            return _ok({"GroupId": group_id})

    def api_describe_monitor_groups(self, params: Mapping[str, str]) -> dict[str, Any]:
        with self._api("DescribeMonitorGroups"):  # F-CMS-11
            page, size = _page(params.get("PageNumber"), 1), _page(params.get("PageSize"), 30)
            name = params.get("GroupName", "").lower()
            ids = {i for i in params.get("GroupId", "").split(",") if i}
            found = [
                {"GroupId": gid, "GroupName": g["GroupName"], "Type": "custom"}
                for gid, g in sorted(self.monitor_groups.items())
                if name in g["GroupName"].lower() and (not ids or str(gid) in ids)
            ]
            return _ok(
                {
                    "Resources": {"Resource": found[(page - 1) * size : page * size]},
                    "Total": len(found),
                    "PageNumber": page,
                    "PageSize": size,
                }
            )

    def api_delete_monitor_group(self, params: Mapping[str, str]) -> dict[str, Any]:
        with self._api("DeleteMonitorGroup"):  # F-CMS-11
            self._required(params, "GroupId")
            group_id = params["GroupId"]
            if not group_id.isdigit():
                raise self._fail("InvalidQueryParameter", f"GroupId {group_id!r} is not an integer")
            group = self.monitor_groups.pop(int(group_id), None)
            if group is None:  # the not-found code is undocumented (F-CMS-11): the documented 400
                raise self._fail("InvalidQueryParameter", f"application group {group_id} does not exist")
            return _ok({"Group": {"GroupName": group["GroupName"]}})

    def api_put_custom_metric_rule(self, params: Mapping[str, str]) -> dict[str, Any]:
        with self._api("PutCustomMetricRule"):  # F-CMS-4
            self._required(
                params,
                "RuleId",
                "ComparisonOperator",
                "ContactGroups",
                "EvaluationCount",
                "Level",
                "MetricName",
                "Resources",
                "Statistics",
                "Threshold",
            )
            self._choice(params["ComparisonOperator"], SYMBOLS, "ComparisonOperator")
            self._choice(params["Level"], frozenset({"CRITICAL", "WARN", "INFO"}), "Level")
            self._period(params)
            self._choice(params["Statistics"], CUSTOM_STATISTICS, "Statistics")  # F-CMS-19
            group_id = params.get("GroupId", "") or "0"
            if group_id != "0" and (not group_id.isdigit() or int(group_id) not in self.monitor_groups):
                raise self._fail("InvalidParameter", f"GroupId {group_id}: no such application group")
            try:
                resources = json.loads(params["Resources"])
                ok = (
                    isinstance(resources, list)
                    and bool(resources)
                    and all(
                        isinstance(r, dict)
                        and str(r.get("groupId")) == group_id
                        and DIMENSION_STRING.fullmatch(str(r.get("dimension", "")))
                        for r in resources
                    )
                )
            except ValueError:
                ok = False
            if not ok:
                raise self._fail(
                    "InvalidParameter",
                    f'Resources: [{{"groupId":{group_id},"dimension":"k1=v1&k2=v2"}}] (the rule\'s GroupId)',
                )
            self._contact_groups(params["ContactGroups"])
            return self._store("PutCustomMetricRule", params)

    def api_put_resource_metric_rule(self, params: Mapping[str, str]) -> dict[str, Any]:
        with self._api("PutResourceMetricRule"):  # F-CMS-1
            self._required(params, "RuleId", "RuleName", "Namespace", "MetricName", "ContactGroups")
            levels = [lv for lv in LEVELS if any(k.startswith(f"Escalations.{lv}.") for k in params)]
            if not levels:
                raise self._fail("InvalidParameter", "Escalations: set at least one level")
            meta = next(
                (
                    m
                    for m in self.metric_meta
                    if m["Namespace"] == params["Namespace"] and m["MetricName"] == params["MetricName"]
                ),
                None,
            )
            if meta is None and any(m["Namespace"] == params["Namespace"] for m in self.metric_meta):
                raise self._fail(
                    "InvalidParameter", f"{params['Namespace']} has no metric {params['MetricName']}"
                )
            for level in levels:
                prefix = f"Escalations.{level}."
                self._required(
                    params, *(prefix + k for k in ("Statistics", "ComparisonOperator", "Threshold", "Times"))
                )
                self._choice(params[prefix + "ComparisonOperator"], WORDS, "ComparisonOperator")
                allowed = set((meta or {}).get("Statistics", params[prefix + "Statistics"]).split(","))
                if params[prefix + "Statistics"] not in allowed:  # F-CMS-3
                    raise self._fail(
                        "InvalidParameter",
                        f"Statistics {params[prefix + 'Statistics']!r}: one of {sorted(allowed)}",
                    )
            self._period(params)
            if meta is not None:
                self._resource_dimensions(params.get("Resources", ""), meta)
            self._contact_groups(params["ContactGroups"])
            return self._store("PutResourceMetricRule", params)

    def api_describe_metric_rule_list(self, rule_ids: str) -> dict[str, Any]:
        with self._api("DescribeMetricRuleList"):  # F-CMS-16
            wanted = {r for r in rule_ids.split(",") if r} or set(self.rules)
            alarms = [
                {
                    "RuleId": rid,
                    "RuleName": p.get("RuleName", rid),
                    "MetricName": p["MetricName"],
                    "Namespace": p.get("Namespace", ""),
                    "ContactGroups": p["ContactGroups"],
                }
                for rid, p in self.rules.items()
                if rid in wanted
            ]
            return _ok({"Alarms": {"Alarm": alarms}, "Total": str(len(alarms))})

    def api_put_metric_rule_targets(self, rule_id: str, targets: list[dict[str, str]]) -> dict[str, Any]:
        with self._api("PutMetricRuleTargets"):  # F-CMS-6
            if not rule_id:
                raise self._fail("MissingParameter", "RuleId is mandatory for this action.")
            if not targets or any(not t.get("Id") or not t.get("Arn") for t in targets):
                raise self._fail("MissingParameter", "Targets.N.Id and Targets.N.Arn are mandatory.")
            if rule_id not in self.rules:
                raise self._fail("InvalidParameter", f"rule {rule_id} does not exist")
            current = {t["Id"]: t for t in self.targets.get(rule_id, [])}
            failed = [t for t in targets if not TARGET_ARN.fullmatch(t["Arn"])]
            for target in targets:
                if target not in failed:
                    current[target["Id"]] = dict(target)
            if len(current) > MAX_TARGETS:
                raise self._fail("InvalidParameter", f"at most {MAX_TARGETS} targets a rule")
            self.targets[rule_id] = list(current.values())
            if failed:
                return {"Code": "200", "Success": True, "FailData": {"Targets": {"Target": failed}}}
            return _ok({})

    def api_describe_metric_rule_targets(self, rule_id: str) -> dict[str, Any]:
        with self._api("DescribeMetricRuleTargets"):  # F-CMS-8
            if not rule_id:
                raise self._fail("MissingParameter", "RuleId is mandatory for this action.")
            return _ok({"Targets": {"Target": list(self.targets.get(rule_id, []))}})

    def api_delete_metric_rules(self, rule_ids: list[str]) -> dict[str, Any]:
        with self._api("DeleteMetricRules"):  # F-CMS-8
            if not rule_ids:
                raise self._fail("MissingParameter", "Id is mandatory for this action.")
            for rule_id in rule_ids:
                self.rules.pop(rule_id, None)
                self.rule_kinds.pop(rule_id, None)
                self.targets.pop(rule_id, None)
            return _ok({})

    def _store(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        self.rules[params["RuleId"]] = dict(params)
        self.rule_kinds[params["RuleId"]] = action
        return _ok({})

    def _resource_dimensions(self, raw: str, meta: Mapping[str, str]) -> None:
        """``Resources`` is optional (F-CMS-1; absent or ``_ALL``: every resource); when it names
        resources, every entry names each dimension the metric has but userId/regionId, with a
        value, and nothing else (F-CMS-10)."""
        wanted = {d for d in meta.get("Dimensions", "").split(",") if d} - UNSET_DIMENSIONS
        if not raw:
            return
        try:
            entries = json.loads(raw)
        except ValueError:
            entries = None
        if entries == [{"resource": "_ALL"}]:
            return
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            raise self._fail(
                "InvalidParameter", f"Resources: a JSON list of {{dimension: value}}: {sorted(wanted)}"
            )
        for entry in entries:
            keys = {str(k) for k, v in entry.items() if str(v)}
            if keys != wanted:
                raise self._fail(
                    "InvalidParameter",
                    f"Resources: {meta['MetricName']} has dimensions {sorted(wanted)}, not {sorted(keys)}",
                )

    def _contact_groups(self, names: str) -> None:
        for name in (n.strip() for n in names.split(",")):
            if name not in self.contact_groups:  # F-CMS-15, F-CMS-17: no documented code
                raise self._fail("InvalidParameter", f"ContactGroups: no contact group {name!r}")

    def _required(self, params: Mapping[str, str], *names: str) -> None:
        for name in names:
            if not params.get(name):
                raise self._fail("MissingParameter", f"{name} is mandatory for this action.")

    def _choice(self, value: str, allowed: frozenset[str], name: str) -> None:
        if value not in allowed:
            raise self._fail("InvalidParameter", f"{name} {value!r}: one of {', '.join(sorted(allowed))}")

    def _period(self, params: Mapping[str, str]) -> None:
        period = params.get("Period", "")
        if period and (not period.isdigit() or int(period) < 60 or int(period) % 60):  # F-CMS-4, F-CMS-10
            raise self._fail("InvalidParameter", f"Period {period}: 60 or a multiple of 60")


def _page(value: str | None, default: int) -> int:
    return int(value) if value and value.isdigit() and int(value) > 0 else default


def _ok(body: dict[str, Any]) -> dict[str, Any]:
    return {"Code": "200", "Success": True, **body}
