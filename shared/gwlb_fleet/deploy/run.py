"""``setup`` and ``teardown``: the plan's calls made, or (``planning``) only listed.

Set-up describes before it creates, counts the documented "already exists" answers as success,
and reads every created thing back; a rule's targets are read back from CloudMonitor, a hook's
NotificationArn from ESS. Teardown removes what set-up made, in reverse, "not found" being
success. The SLS logstores and the Tablestore tables hold the audit log and the fleet's state, the
dead-letter queue an operator's failed events, the KMS secrets the keys: teardown keeps them all
(and says so).

Secret values reach set-up only through its environment (``plan.secret_variable``); a call holds
them as ``plan.FromEnvironment``, which prints as the variable's name, and the executor reads the
variable only as it makes the call: no report line, plan line, log record or error carries one.
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
from gwlb_fleet.deploy.plan import Call, Discovered, FromEnvironment
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
    # where secret values come from (plan.FromEnvironment): set-up's own environment
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)
    calls: list[Call] = field(default_factory=list)
    report: list[str] = field(default_factory=list)
    # what set-up found or made that others need: the application group's id (the agents' GroupId)
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def planning(self) -> bool:
        return self.apis is None

    def call(self, call: Call, *, missing_ok: bool = False) -> dict[str, Any] | None:
        """The answer; None when planning, or when the thing is not there and ``missing_ok``."""
        self.calls.append(call)
        if self.apis is None:
            return None
        params = {k: self._value(v) for k, v in call.params.items()}
        try:
            return self.apis[call.service].invoke(call.action, params, Deadline.after(CALL_BUDGET_S))
        except NotFound:
            if missing_ok:
                return None
            raise

    def _value(self, value: Any) -> Any:
        if not isinstance(value, FromEnvironment):
            return value
        secret = self.environ.get(value.variable, "")
        if not secret:
            raise SetupFailed(f"{value.variable} is not set", code="NotConfigured")
        return secret

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
    for key in (
        "QueueName",
        "RuleId",
        "LifecycleHookName",
        "RoleName",
        "SecretName",
        "GroupName",
        "Namespace",
    ):
        if key in call.params:
            return str(call.params[key])
    return ""


# --- set-up -----------------------------------------------------------------------------------------


def setup(settings: Settings, x: Executor) -> None:
    """Everything the functions' deploy needs first (template.yml runs this in a global
    ``pre-deploy`` action, F-SDV-1, F-FCT-8): checks, secrets, queues (the alarm queues and the
    dead-letter queue), the application group, rules (the operator's step-failure rule among
    them) and the targets of those that feed a function, hooks, SLS (with the function logstore)
    and Tablestore."""
    _require(settings)
    check_roles(x)
    check_contact_group(settings, x)
    for _setting, name, variable in plan.secrets(settings):
        ensure_secret(x, name, variable)
    for queue in plan.queues(settings):
        ensure_queue(settings, x, queue)
    ensure_queue(settings, x, settings.dead_letter_queue, plan.create_dead_letter_queue(settings))
    group_id = ensure_monitor_group(settings, x)
    metric, statistics, dimensions = discover_unhealthy_metric(x)
    resource = unhealthy_resource(settings, x, metric, dimensions)
    rules = [
        *plan.scale_rules(settings, group_id),
        plan.unhealthy_rule(settings, metric, statistics, resource),
        plan.step_failure_rule(settings),
    ]
    for rule in rules:
        ensure_rule(x, rule)
    for alarm in plan.alarms(settings):
        if alarm.queue:  # an operator's rule notifies its contact group alone
            ensure_targets(settings, x, alarm)
    for hook in plan.hooks(settings):
        ensure_hook(settings, x, hook)
    for service, calls in data_stores(settings).items():
        x.run_extra(service, calls)
    ensure_log_forwarding(settings, x)


def ensure_log_forwarding(settings: Settings, x: Executor) -> None:
    """PAN-OS log forwarding to the intake function, in Panorama (gwlb_fleet.deploy.panlogs): last,
    since it needs the intake's URL, known only once the functions are deployed
    (``PANLOGS_INTAKE_URL``; docs/deploy.md says in which order)."""
    from gwlb_fleet.deploy import panlogs

    if not panlogs.enabled(settings):
        if settings.appliance_kind == "vmseries":
            x.note("panorama log forwarding: not configured (PANLOGS_INTAKE_URL is not set; docs/deploy.md)")
        return
    missing = panlogs.missing_settings(settings)
    if missing:
        raise SetupFailed(f"log forwarding to the intake needs {', '.join(missing)}", code="NotConfigured")
    x.run_extra("panorama", plan.log_forwarding_calls(settings))


def remove_log_forwarding(settings: Settings, x: Executor) -> None:
    from gwlb_fleet.deploy import panlogs

    if not panlogs.enabled(settings):
        return
    missing = panlogs.missing_settings(settings)
    if missing:
        raise SetupFailed(
            f"removing log forwarding to the intake needs {', '.join(missing)}", code="NotConfigured"
        )
    x.run_extra("panorama-teardown", plan.log_forwarding_removal_calls(settings))


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


def ensure_secret(x: Executor, name: str, variable: str) -> None:
    """The secret entry exists (DescribeSecret, F-KMS-6); when missing, created from ``variable``
    (CreateSecret, F-KMS-2) and read back, or set-up fails with the fix. Never the value in a line."""
    describe = Call("kms", "DescribeSecret", {"SecretName": name})
    if x.call(describe, missing_ok=True) is not None:
        x.note(f"secret {name}: present")
        return
    if not x.planning and not x.environ.get(variable):
        raise SetupFailed(
            f"KMS secret {name} does not exist: export {variable} with its value for this set-up run,"
            " or create the secret in KMS Secrets Manager (docs/deploy.md), and run set-up again",
            code="SecretNotFound",
        )
    x.act(plan.create_secret(name, variable), done_codes=frozenset({"Rejected.ResourceExist"}))  # F-KMS-5
    if x.planning:
        return
    if x.call(describe, missing_ok=True) is None:
        raise SetupFailed(f"secret {name}: created, but DescribeSecret does not find it")
    x.note(f"secret {name}: created from ${variable}")


def ensure_monitor_group(settings: Settings, x: Executor) -> Any:
    """The fleet's application group by name (DescribeMonitorGroups; CreateMonitorGroup when
    absent, then read back): its GroupId, which the scaling rules address and the agents
    publish with (F-CMS-4, F-CMS-11)."""
    found = _monitor_group(settings, x)
    if found is not None:
        x.note(f"monitor group {settings.monitor_group_name}: present ({found})")
    else:
        created = x.call(plan.monitor_group(settings))
        if created is None:
            return Discovered("CreateMonitorGroup", "GroupId")
        found = _monitor_group(settings, x)
        if found is None or found != str(created.get("GroupId")):
            raise SetupFailed(
                f"monitor group {settings.monitor_group_name}: created as {created.get('GroupId')},"
                f" but DescribeMonitorGroups shows {found}"
            )
        x.note(f"monitor group {settings.monitor_group_name}: created ({found})")
    x.outputs["monitor_group_id"] = found
    return found


def _monitor_group(settings: Settings, x: Executor) -> str | None:
    """The id of the one group named exactly so (GroupName may match more loosely: filter)."""
    matches: list[str] = []
    for page in range(1, MAX_PAGES + 1):
        params = {"GroupName": settings.monitor_group_name, "PageNumber": page, "PageSize": PAGE_SIZE}
        body = x.call(Call("cms", "DescribeMonitorGroups", params))
        if body is None:
            return None
        groups = (body.get("Resources") or {}).get("Resource") or []
        matches += [str(g["GroupId"]) for g in groups if g.get("GroupName") == settings.monitor_group_name]
        if len(groups) < PAGE_SIZE:
            break
    if len(matches) > 1:
        raise SetupFailed(
            f"{len(matches)} CloudMonitor application groups are named {settings.monitor_group_name}"
            f" ({', '.join(matches)}): delete the extra ones or set MONITOR_GROUP_NAME",
            code="AmbiguousMonitorGroup",
        )
    return matches[0] if matches else None


def ensure_queue(settings: Settings, x: Executor, queue: str, create: Call | None = None) -> None:
    describe = Call("mns", "GetQueueAttributes", {"QueueName": queue})  # F-MNS-1
    if x.call(describe, missing_ok=True) is None:
        create = create or plan.create_queue(settings, queue)
        x.act(create, done_codes=frozenset({"QueueAlreadyExist"}))  # F-MNS-4
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
    if not statistics or not any(d.lower() == plan.SERVER_GROUP_DIMENSION for d in dimensions):
        raise SetupFailed(
            f"{meta['MetricName']}: Statistics {allowed} / Dimensions {dimensions} do not allow a per server"
            " group rule",
            code="MetricNotUsable",
        )
    x.note(
        f"metric {plan.GWLB_NAMESPACE}/{meta['MetricName']}: Statistics {statistics},"
        f" dimensions {','.join(dimensions)}"
    )
    return meta["MetricName"], statistics, dimensions


def unhealthy_resource(settings: Settings, x: Executor, metric: Any, dimensions: Any) -> Any:
    """The unhealthy-server rule's resource: every dimension of the metric filled (F-CMS-10), the
    GWLB's id from ListServerGroups (F-GWLB-9, as preflight derives it); fails naming a dimension
    set-up has no value for."""
    load_balancer: Any = Discovered("ListServerGroups", "RelatedLoadBalancerIds")
    if isinstance(dimensions, Discovered) or any(
        str(d).lower() in plan.LOAD_BALANCER_DIMENSIONS for d in dimensions
    ):
        body = x.call(Call("gwlb", "ListServerGroups", {"ServerGroupIds": [settings.server_group_id]}))
        if body is not None:
            related = related_load_balancers(body, settings.server_group_id)
            if related is None or len(related) != 1:
                raise SetupFailed(
                    f"server group {settings.server_group_id} is used by GWLB {related or 'none'}: attach it"
                    " to one GWLB through its IP listener",
                    code="ServerGroupNotAttached",
                )
            load_balancer = related[0]
    try:
        return plan.unhealthy_resources(settings, dimensions, load_balancer)
    except ValueError as exc:
        raise SetupFailed(
            f"{metric}: set-up knows no value for its dimension {exc.args[0]!r} (F-CMS-10)",
            code="MetricNotUsable",
        ) from exc


def related_load_balancers(body: Mapping[str, Any], server_group_id: str) -> list[str] | None:
    """The GWLB ids ListServerGroups relates to ``server_group_id`` (F-GWLB-9); None: no such group."""
    groups = [g for g in body.get("ServerGroups") or [] if g.get("ServerGroupId") == server_group_id]
    if not groups:
        return None
    return [str(i) for i in groups[0].get("RelatedLoadBalancerIds") or []]


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
    """SLS (gwlb_fleet.sls.setup's specs and the functions' own logstore, F-SLS-1) and, with a
    Tablestore state store, its tables (F-OTS-2): made by their own SDKs' code, listed here with
    the rest."""
    from gwlb_fleet.sls.queries import QUERIES
    from gwlb_fleet.sls.setup import logstore_specs

    calls: list[Call] = []
    stores: dict[str, list[Call]] = {}
    if settings.sls_project:
        calls.append(Call("sls", "create_project", {"project_name": settings.sls_project}))
        for spec in [*logstore_specs(), function_logstore_spec(settings)]:
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


def function_logstore_spec(settings: Settings) -> Any:
    """The logstore FC writes the functions' logs to (template.yml logConfig): full-text index only."""
    from gwlb_fleet.sls.setup import LogstoreSpec

    return LogstoreSpec(settings.function_logstore, plan.FUNCTION_LOG_RETENTION_DAYS, 2, {})


# --- teardown -------------------------------------------------------------------------------------


def teardown(settings: Settings, x: Executor) -> None:
    """What set-up made, in reverse; "not found" is success. Kept: the dead-letter queue (an
    operator's failed events), the logstores, the tables and the secrets."""
    remove_log_forwarding(settings, x)  # set-up made it last
    for hook in reversed(plan.hooks(settings)):
        params = {"ScalingGroupId": settings.scaling_group_id, "LifecycleHookName": hook.name}
        if _hook(settings, x, hook) is None and not x.planning:
            x.note(f"hook {hook.name}: not there")
            continue
        _gone(x, Call("ess", "DeleteLifecycleHook", params), f"hook {hook.name}")
    rule_ids = [alarm.rule_id for alarm in reversed(plan.alarms(settings))]
    _gone(x, Call("cms", "DeleteMetricRules", {"Id": rule_ids}), f"rules {', '.join(rule_ids)}")  # F-CMS-8
    group_id = _monitor_group(settings, x)  # after its rules (F-CMS-11)
    if group_id is not None or x.planning:
        shown: Any = int(group_id) if group_id else Discovered("DescribeMonitorGroups", "GroupId")
        _gone(x, Call("cms", "DeleteMonitorGroup", {"GroupId": shown}), f"monitor group {shown}")  # F-CMS-11
    else:
        x.note(f"monitor group {settings.monitor_group_name}: not there")
    for queue in reversed(plan.queues(settings)):
        _gone(x, Call("mns", "DeleteQueue", {"QueueName": queue}), f"queue {queue}")
    keep_dead_letter_queue(settings, x)
    for _setting, name, _variable in plan.secrets(settings):
        x.note(f"kept: KMS secret {name} (teardown never deletes secrets)")
    if settings.sls_project:
        x.note(
            f"kept: SLS project {settings.sls_project} (the audit log, flow logs and"
            f" {settings.function_logstore})"
        )
    if settings.state_store == "tablestore":
        x.note(f"kept: Tablestore tables {settings.table_prefix}_* (the fleet's state)")


def keep_dead_letter_queue(settings: Settings, x: Executor) -> None:
    """Never deleted: it holds the events FC gave up on, and the functions (until ``s remove``)
    may still write to it. Teardown says how many messages it holds (F-MNS-1)."""
    queue = settings.dead_letter_queue
    body = x.call(Call("mns", "GetQueueAttributes", {"QueueName": queue}), missing_ok=True)
    if body is None:
        if x.planning:
            x.note(f"kept: dead-letter queue {queue} (the events FC gave up on; delete it by hand)")
        else:
            x.note(f"dead-letter queue {queue}: not there")
        return
    data = body.get("Data") or {}
    held = sum(int(data.get(k) or 0) for k in ("ActiveMessages", "InactiveMessages", "DelayMessages"))
    x.note(f"kept: dead-letter queue {queue} ({held} message{'s' if held != 1 else ''}; delete it by hand)")


def _gone(x: Executor, call: Call, what: str) -> None:
    try:
        x.call(call)
    except NotFound as exc:
        x.note(f"{what}: already gone ({exc.code})")
        return
    if not x.planning:
        x.note(f"{what}: deleted")
