"""``setup`` and ``teardown``: the plan's calls made, or (``planning``) only listed.

Set-up describes before it creates, counts the documented "already exists" answers as success,
and reads every created thing back; a rule's targets are read back from CloudMonitor, a hook's
NotificationArn from ESS. Teardown removes what set-up made, in reverse, "not found" being
success. The SLS logstores and the Tablestore tables hold the audit log and the fleet's state: teardown
keeps them (and says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gwlb_fleet.alibaba.mns import is_queue_target
from gwlb_fleet.alibaba.ram import SERVICE_ROLES
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.deploy import plan
from gwlb_fleet.deploy.plan import Call, Discovered
from gwlb_fleet.errors import FleetError, NotFound, PermanentError
from gwlb_fleet.settings import Settings

log = logging.getLogger("gwlb_fleet.deploy")

CALL_BUDGET_S = 60.0
PAGE_SIZE = 100
MAX_PAGES = 50


class Api(Protocol):
    def invoke(self, action: str, params: Mapping[str, Any], deadline: Deadline) -> dict[str, Any]: ...


class SetupFailed(PermanentError):
    """What set-up found wrong and cannot fix itself (a missing role, a contact group)."""


@dataclass
class Executor:
    """Makes the calls (``apis`` by service), or with ``apis`` None only records them."""

    apis: Mapping[str, Api] | None
    # sls, ots: made by their own SDKs' code (gwlb_fleet.sls.setup, state.tablestore), one run each
    extra: Mapping[str, Callable[[], list[str]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    report: list[str] = field(default_factory=list)

    @property
    def planning(self) -> bool:
        return self.apis is None

    def call(self, call: Call, *, missing_ok: bool = False) -> dict[str, Any] | None:
        """The answer; None when planning, or when the thing is not there and ``missing_ok``."""
        self.calls.append(call)
        if self.apis is None:
            return None
        try:
            return self.apis[call.service].invoke(call.action, call.params, Deadline.after(CALL_BUDGET_S))
        except NotFound:
            if missing_ok:
                return None
            raise

    def act(self, call: Call, *, done_codes: frozenset[str] = frozenset()) -> None:
        """A change; an answer in ``done_codes`` (already there / already gone) is success."""
        try:
            self.call(call)
        except FleetError as exc:
            if exc.code not in done_codes:
                raise
            self.note(f"{call.action} {_name(call)}: already so ({exc.code})")

    def run_extra(self, service: str, calls: list[Call]) -> None:
        self.calls.extend(calls)
        if not self.planning:
            for line in self.extra[service]():
                self.note(line)

    def note(self, line: str) -> None:
        self.report.append(line)
        log.info("deploy", extra={"step": line})


def _name(call: Call) -> str:
    for key in ("QueueName", "RuleId", "LifecycleHookName", "RoleName", "Namespace"):
        if key in call.params:
            return str(call.params[key])
    return ""


# --- set-up -----------------------------------------------------------------------------------------


def setup(settings: Settings, x: Executor) -> None:
    _require(settings)
    check_roles(x)
    check_contact_group(settings, x)
    for queue in plan.queues(settings):
        ensure_queue(settings, x, queue)
    metric, statistics, dimension = discover_unhealthy_metric(x)
    for rule in [*plan.scale_rules(settings), plan.unhealthy_rule(settings, metric, statistics, dimension)]:
        ensure_rule(x, rule)
    for alarm in plan.alarms(settings):
        ensure_targets(settings, x, alarm)
    for hook in plan.hooks(settings):
        ensure_hook(settings, x, hook)
    for service, calls in data_stores(settings).items():
        x.run_extra(service, calls)


def _require(settings: Settings) -> None:
    missing = [
        alias
        for alias, value in (
            ("ACCOUNT_ID", settings.account_id),
            ("ALARM_CONTACT_GROUP", settings.alarm_contact_group),
        )
        if not value
    ]
    if missing:
        raise SetupFailed(f"set-up needs {', '.join(missing)}", code="NotConfigured")


def check_roles(x: Executor) -> None:
    """Service roles set-up cannot create for the operator (F-RAM-1/2, F-CMS-13, F-ESS-9)."""
    for role in SERVICE_ROLES:
        found = x.call(Call("ram", "GetRole", {"RoleName": role}), missing_ok=True)
        if found is None and not x.planning:
            raise SetupFailed(
                f"RAM role {role} does not exist: create it (docs/deploy.md) and run set-up again",
                code="EntityNotExist.Role",
            )
        if found is not None:
            x.note(f"role {role}: present")


def check_contact_group(settings: Settings, x: Executor) -> None:
    """Every rule names it (F-CMS-1/4/5): it must exist; set-up does not create contacts."""
    for page in range(1, MAX_PAGES + 1):
        body = x.call(Call("cms", "DescribeContactGroupList", {"PageNumber": page, "PageSize": PAGE_SIZE}))
        if body is None:
            return
        groups = (body.get("ContactGroupList") or {}).get("ContactGroup") or []
        if any(group.get("Name") == settings.alarm_contact_group for group in groups):
            x.note(f"contact group {settings.alarm_contact_group}: present")
            return
        if len(groups) < PAGE_SIZE:
            break
    raise SetupFailed(
        f"CloudMonitor contact group {settings.alarm_contact_group!r} does not exist: create it first",
        code="ContactGroupNotFound",
    )


def ensure_queue(settings: Settings, x: Executor, queue: str) -> None:
    describe = Call("mns", "GetQueueAttributes", {"QueueName": queue})  # F-MNS-1
    if x.call(describe, missing_ok=True) is None:
        x.act(plan.create_queue(settings, queue), done_codes=frozenset({"QueueAlreadyExist"}))  # F-MNS-4
        if not x.planning:
            if x.call(describe, missing_ok=True) is None:
                raise SetupFailed(f"queue {queue}: created, but GetQueueAttributes does not find it")
            x.note(f"queue {queue}: created")
    elif not x.planning:
        x.note(f"queue {queue}: present")


def discover_unhealthy_metric(x: Executor) -> tuple[Any, Any, Any]:
    """The GWLB unhealthy-server metric as CloudMonitor lists it (F-CMS-9/10): its spelling, a
    Statistics it allows (F-CMS-3) and its server-group dimension. Fails loudly when not listed."""
    action = "DescribeMetricMetaList"
    metas: list[dict[str, Any]] = []
    for page in range(1, MAX_PAGES + 1):
        params = {"Namespace": plan.GWLB_NAMESPACE, "PageNumber": page, "PageSize": PAGE_SIZE}
        body = x.call(Call("cms", action, params))
        if body is None:
            return (
                Discovered(action, "MetricName"),
                Discovered(action, "Statistics"),
                Discovered(action, "Dimensions"),
            )
        found = (body.get("Resources") or {}).get("Resource") or []
        metas.extend(found)
        if len(found) < PAGE_SIZE:
            break
    meta = next((m for m in metas if str(m.get("MetricName", "")).lower() == plan.UNHEALTHY_METRIC), None)
    if meta is None:
        raise SetupFailed(
            f"{plan.GWLB_NAMESPACE} lists no metric like {plan.UNHEALTHY_METRIC}", code="MetricNotFound"
        )
    allowed = [s.strip() for s in str(meta.get("Statistics", "")).split(",") if s.strip()]
    statistics = next((s for s in plan.STATISTICS_PREFERENCE if s in allowed), allowed[0] if allowed else "")
    dimensions = [d.strip() for d in str(meta.get("Dimensions", "")).split(",") if d.strip()]
    dimension = next((d for d in dimensions if d.lower() == plan.SERVER_GROUP_DIMENSION), None)
    if not statistics or dimension is None:
        raise SetupFailed(
            f"{meta['MetricName']}: Statistics {allowed} / Dimensions {dimensions} do not allow a per server"
            " group rule",
            code="MetricNotUsable",
        )
    x.note(
        f"metric {plan.GWLB_NAMESPACE}/{meta['MetricName']}: Statistics {statistics}, dimension {dimension}"
    )
    return meta["MetricName"], statistics, dimension


def ensure_rule(x: Executor, rule: Call) -> None:
    """An upsert keyed by RuleId (F-CMS-1/4), read back with DescribeMetricRuleList (F-CMS-16)."""
    x.call(rule)
    rule_id = rule.params["RuleId"]
    body = x.call(Call("cms", "DescribeMetricRuleList", {"RuleIds": rule_id}))
    if body is None:
        return
    alarms = (body.get("Alarms") or {}).get("Alarm") or []
    if not any(
        a.get("RuleId") == rule_id and a.get("MetricName") == rule.params["MetricName"] for a in alarms
    ):
        raise SetupFailed(f"rule {rule_id}: put, but DescribeMetricRuleList does not show it")
    x.note(f"rule {rule_id}: {rule.action}")


def ensure_targets(settings: Settings, x: Executor, alarm: plan.AlarmPlan) -> None:
    """The rule pushes to its queue (F-CMS-6/7); read back with DescribeMetricRuleTargets (F-CMS-8)."""
    describe = Call("cms", "DescribeMetricRuleTargets", {"RuleId": alarm.rule_id})
    if _targets_queue(settings, x.call(describe), alarm):
        x.note(f"rule {alarm.rule_id}: target {alarm.queue} present")
        return
    x.call(plan.rule_targets(settings, alarm))  # failures in a 200 body raise: F-CMS-6
    if x.planning:
        return
    if not _targets_queue(settings, x.call(describe), alarm):
        raise SetupFailed(f"rule {alarm.rule_id}: target set, but DescribeMetricRuleTargets does not show it")
    x.note(f"rule {alarm.rule_id}: target {alarm.queue} set")


def _targets_queue(settings: Settings, body: dict[str, Any] | None, alarm: plan.AlarmPlan) -> bool:
    if body is None:
        return False
    targets = (body.get("Targets") or {}).get("Target") or []
    return any(
        is_queue_target(str(t.get("Arn", "")), settings.region, settings.account_id, alarm.queue)
        for t in targets
    )


def ensure_hook(settings: Settings, x: Executor, hook: plan.HookPlan) -> None:
    """A hook whose NotificationArn is the event bus (F-ESS-3); created, or modified to match,
    then read back with DescribeLifecycleHooks (F-ESS-2)."""
    want = plan.hook_params(settings, hook)
    current = _hook(settings, x, hook)
    if current is not None and all(current.get(k) == v for k, v in want.items()):
        x.note(f"hook {hook.name}: present")
        return
    if current is None:
        x.call(Call("ess", "CreateLifecycleHook", want))
    else:
        changes = {k: v for k, v in want.items() if k != "LifecycleTransition"}
        if current.get("LifecycleTransition") != hook.transition:
            raise SetupFailed(
                f"hook {hook.name} exists for {current.get('LifecycleTransition')}, not {hook.transition}"
            )
        x.call(Call("ess", "ModifyLifecycleHook", changes))  # F-ESS-10
    if x.planning:
        return
    after = _hook(settings, x, hook)
    if after is None or any(after.get(k) != v for k, v in want.items()):
        raise SetupFailed(f"hook {hook.name}: DescribeLifecycleHooks shows {after}, not {want}")
    x.note(f"hook {hook.name}: {'created' if current is None else 'modified'}")


def _hook(settings: Settings, x: Executor, hook: plan.HookPlan) -> dict[str, Any] | None:
    body = x.call(
        Call(
            "ess",
            "DescribeLifecycleHooks",
            {"ScalingGroupId": settings.scaling_group_id, "LifecycleHookName": hook.name},
        )
    )
    found = [h for h in (body or {}).get("LifecycleHooks") or [] if h.get("LifecycleHookName") == hook.name]
    return found[0] if found else None


def data_stores(settings: Settings) -> dict[str, list[Call]]:
    """SLS (gwlb_fleet.sls.setup's specs, F-SLS-1) and, with a Tablestore state store, its tables
    (F-OTS-2): made by their own SDKs' code, listed here with the rest."""
    from gwlb_fleet.sls.queries import QUERIES
    from gwlb_fleet.sls.setup import logstore_specs

    calls: list[Call] = []
    stores: dict[str, list[Call]] = {}
    if settings.sls_project:
        calls.append(Call("sls", "create_project", {"project_name": settings.sls_project}))
        for spec in logstore_specs():
            calls.append(
                Call(
                    "sls",
                    "create_logstore",
                    {
                        "project": settings.sls_project,
                        "logstore": spec.name,
                        "ttl": spec.retention_days,
                        "shard_count": spec.shards,
                    },
                )
            )
            calls.append(
                Call("sls", "create_index", {"project": settings.sls_project, "logstore": spec.name})
            )
        for query in QUERIES.values():
            calls.append(
                Call(
                    "sls",
                    "create_savedsearch",
                    {"project": settings.sls_project, "savedsearchName": query.savedsearch_name},
                )
            )
        stores["sls"] = calls
    if settings.state_store == "tablestore":
        stores["ots"] = [Call("ots", "create_table", {"table_meta": f"{settings.table_prefix}_*"})]
    return stores


# --- teardown -------------------------------------------------------------------------------------


def teardown(settings: Settings, x: Executor) -> None:
    """What set-up made, in reverse; "not found" is success."""
    for hook in reversed(plan.hooks(settings)):
        params = {"ScalingGroupId": settings.scaling_group_id, "LifecycleHookName": hook.name}
        if _hook(settings, x, hook) is None and not x.planning:
            x.note(f"hook {hook.name}: not there")
            continue
        _gone(x, Call("ess", "DeleteLifecycleHook", params), f"hook {hook.name}")
    rule_ids = [alarm.rule_id for alarm in reversed(plan.alarms(settings))]
    _gone(x, Call("cms", "DeleteMetricRules", {"Id": rule_ids}), f"rules {', '.join(rule_ids)}")  # F-CMS-8
    for queue in reversed(plan.queues(settings)):
        _gone(x, Call("mns", "DeleteQueue", {"QueueName": queue}), f"queue {queue}")
    if settings.sls_project:
        x.note(f"kept: SLS project {settings.sls_project} (the audit log and flow logs)")
    if settings.state_store == "tablestore":
        x.note(f"kept: Tablestore tables {settings.table_prefix}_* (the fleet's state)")


def _gone(x: Executor, call: Call, what: str) -> None:
    try:
        x.call(call)
    except NotFound as exc:
        x.note(f"{what}: already gone ({exc.code})")
        return
    if not x.planning:
        x.note(f"{what}: deleted")
