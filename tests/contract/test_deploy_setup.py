"""gwlb-fleet setup / teardown through the real SDKs against the lab's local OpenAPI endpoint: the
calls made, idempotency, teardown after a partial set-up, and the endpoint refusing what the
cloud refuses, with the codes docs/api-facts.md gives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gwlb_fleet.alibaba import cms, ess, mns
from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.alibaba.tea import RetryPolicy
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.deploy import cloud as deploy_cloud
from gwlb_fleet.deploy import plan, run
from gwlb_fleet.errors import FleetError
from gwlb_fleet.settings import Settings
from gwlb_lab.api import LocalOpenApi
from tests.contract.fleet import ACCOUNT

pytestmark = pytest.mark.contract
ROOT = Path(__file__).resolve().parents[2]
FACTS = (ROOT / "docs" / "api-facts.md").read_text()
NO_RETRY = RetryPolicy(attempts=1, sleep=lambda s: None)


def executor(settings: Settings) -> run.Executor:
    return deploy_cloud.executor(settings, planning=False)


def state(cloud: FakeCloud) -> tuple[object, ...]:
    return (
        sorted(cloud.mns.queues),
        {k: dict(v) for k, v in cloud.cms.rules.items()},
        {k: list(v) for k, v in cloud.cms.targets.items()},
        [h.wire("asg-deploy") | {"LifecycleHookId": ""} for h in cloud.ess.groups["asg-deploy"].hooks],
    )


def test_setup_creates_everything_and_reads_it_back(
    cloud: FakeCloud, api: LocalOpenApi, settings: Settings
) -> None:
    run.setup(settings, executor(settings))
    assert set(cloud.mns.queues) == {
        settings.scale_alarm_queue,
        settings.health_alarm_queue,
        settings.dead_letter_queue,  # the functions' async config names it (F-FC-6)
    }
    assert cloud.cms.rule_kinds == {
        "gwlb-fleet-scale-out-flows": "PutCustomMetricRule",
        "gwlb-fleet-scale-in-flows": "PutCustomMetricRule",
        "gwlb-fleet-unhealthy-servers": "PutResourceMetricRule",
        "gwlb-fleet-step-failures": "PutCustomMetricRule",  # the operator's: contact group only
    }
    assert "gwlb-fleet-step-failures" not in cloud.cms.targets
    unhealthy = cloud.cms.rules["gwlb-fleet-unhealthy-servers"]
    assert unhealthy["MetricName"] == "ServerGroupUnHealthyHostCount"  # discovered: F-CMS-10
    assert unhealthy["Escalations.Critical.Statistics"] == "Value"  # listed by the metric: F-CMS-3
    # every dimension the metric lists but userId/regionId, the GWLB's id from ListServerGroups
    assert unhealthy["Resources"] == '[{"instanceId":"gwlb-sgp-deploy","serverGroupId":"sgp-deploy"}]'
    assert cloud.cms.rules["gwlb-fleet-scale-out-flows"]["ComparisonOperator"] == ">"  # F-CMS-4
    assert all(p["ContactGroups"] == "gwlb-ops" for p in cloud.cms.rules.values())
    assert cloud.cms.targets["gwlb-fleet-unhealthy-servers"] == [
        {"Id": "1", "Arn": f"acs:mns:cn-hangzhou:{ACCOUNT}:/queues/gwlb-fleet-health-alarms/message"}
    ]
    hooks = {h.name: h for h in cloud.ess.groups["asg-deploy"].hooks}
    assert {h.notification_arn for h in hooks.values()} == {
        f"acs:eventbridge:cn-hangzhou:{ACCOUNT}:eventbus/default"
    }
    assert hooks["gwlb-fleet-scale-out"].default_result == "ABANDON"
    # what the SDK put on the wire: flattened as the facts name them
    targets = api.recorded("PutMetricRuleTargets")[0].params
    assert targets["Targets.1.Arn"].endswith("/queues/gwlb-fleet-scale-alarms/message")
    assert api.recorded("CreateLifecycleHook")[0].params["NotificationArn"].startswith("acs:eventbridge:")


def test_setup_twice_is_the_same_state(cloud: FakeCloud, api: LocalOpenApi, settings: Settings) -> None:
    run.setup(settings, executor(settings))
    before = state(cloud)
    api.clear()
    run.setup(settings, executor(settings))
    assert state(cloud) == before
    made = {r.action for r in api.requests}
    assert not made & {"CreateQueue", "CreateLifecycleHook", "ModifyLifecycleHook", "PutMetricRuleTargets"}


def test_setup_modifies_a_hook_that_drifted(cloud: FakeCloud, settings: Settings) -> None:
    run.setup(settings, executor(settings))
    cloud.ess.groups["asg-deploy"].hooks[0].notification_arn = ""
    run.setup(settings, executor(settings))
    assert all(
        h.notification_arn.startswith("acs:eventbridge:") for h in cloud.ess.groups["asg-deploy"].hooks
    )


def test_teardown_after_a_partial_setup(cloud: FakeCloud, settings: Settings) -> None:
    cloud.cms.fail_next = ["InvalidParameter"]  # refused half way
    with pytest.raises(FleetError):
        run.setup(settings, executor(settings))
    run.setup(settings, _failing_after_queues(settings))
    run.teardown(settings, executor(settings))
    assert set(cloud.mns.queues) == {settings.dead_letter_queue}  # kept: an operator's failed events
    assert not cloud.cms.rules and not cloud.ess.groups["asg-deploy"].hooks
    assert not cloud.cms.monitor_groups
    run.teardown(settings, executor(settings))  # nothing left: "not found" is success


def _failing_after_queues(settings: Settings) -> run.Executor:
    return executor(settings)


def test_setup_fails_on_a_missing_role_or_contact_group(cloud: FakeCloud, settings: Settings) -> None:
    cloud.ram.roles.discard("AliyunCloudMonitorDefaultRole")
    with pytest.raises(run.SetupFailed, match="AliyunCloudMonitorDefaultRole"):
        run.setup(settings, executor(settings))
    cloud.ram.roles.add("AliyunCloudMonitorDefaultRole")
    cloud.cms.contact_groups.clear()
    with pytest.raises(run.SetupFailed, match="contact group"):
        run.setup(settings, executor(settings))


def test_an_unlisted_metric_fails_setup_loudly(cloud: FakeCloud, settings: Settings) -> None:
    cloud.cms.metric_meta = [m for m in cloud.cms.metric_meta if "Health" not in m["MetricName"]]
    with pytest.raises(run.SetupFailed, match="servergroupunhealthyhostcount"):
        run.setup(settings, executor(settings))


# --- the endpoint refuses what CloudMonitor, ESS and MNS refuse ---------------------------------------


def invoke(api_of: object, action: str, params: dict[str, object]) -> dict[str, object]:
    return api_of.invoke(action, params, Deadline.after(10))  # type: ignore[attr-defined,no-any-return]


def test_words_to_put_custom_metric_rule_are_refused(settings: Settings) -> None:
    rule = dict(plan.scale_rules(settings, "0")[0].params, ComparisonOperator="GreaterThanThreshold")
    with pytest.raises(FleetError) as refused:
        invoke(cms.setup_api(settings, NO_RETRY), "PutCustomMetricRule", rule)
    assert refused.value.code == "InvalidParameter"


def test_missing_contact_groups_is_refused(settings: Settings) -> None:
    rule = {k: v for k, v in plan.scale_rules(settings, "0")[0].params.items() if k != "ContactGroups"}
    with pytest.raises(FleetError) as refused:
        invoke(cms.setup_api(settings, NO_RETRY), "PutCustomMetricRule", rule)
    assert refused.value.code == "MissingParameter"


@pytest.mark.parametrize(
    ("statistics", "operator"), [("Average", "GreaterThanOrEqualToThreshold"), ("Value", ">=")]
)
def test_resource_rule_checks_statistics_and_words(
    settings: Settings, statistics: str, operator: str
) -> None:
    resource = {"instanceId": "gwlb-sgp-deploy", "serverGroupId": "sgp-deploy"}
    rule = plan.unhealthy_rule(settings, "ServerGroupUnHealthyHostCount", statistics, resource)
    params = dict(rule.params)
    params["Escalations"] = {"Critical": dict(params["Escalations"]["Critical"], ComparisonOperator=operator)}
    with pytest.raises(FleetError) as refused:
        invoke(cms.setup_api(settings, NO_RETRY), "PutResourceMetricRule", params)
    assert refused.value.code == "InvalidParameter"


def test_a_bad_notification_arn_is_refused(settings: Settings) -> None:
    hook = plan.hook_params(settings, plan.hooks(settings)[0])
    hook["NotificationArn"] = (
        f"acs:ess:cn-hangzhou:{ACCOUNT}:queue/q"  # ROS's spelling: not the API's (F-ESS-3)
    )
    with pytest.raises(FleetError) as refused:
        invoke(ess.setup_api(settings, NO_RETRY), "CreateLifecycleHook", hook)
    assert refused.value.code == "InvalidNotificationArn"  # F-ESS-10


def test_a_target_failing_in_a_200_body_is_a_failure(cloud: FakeCloud, settings: Settings) -> None:
    run.setup(settings, executor(settings))
    bad = {
        "RuleId": "gwlb-fleet-scale-out-flows",
        "Targets": [{"Id": "2", "Arn": "acs:fc:cn-hangzhou:1:functions/x"}],
    }
    with pytest.raises(FleetError) as refused:
        invoke(cms.setup_api(settings, NO_RETRY), "PutMetricRuleTargets", bad)
    assert refused.value.code == "FailData"  # F-CMS-6


def test_queue_exists_and_not_found_codes(settings: Settings) -> None:
    queues = mns.setup_api(settings, NO_RETRY)
    invoke(queues, "CreateQueue", {"QueueName": "q-1"})
    with pytest.raises(FleetError) as again:
        invoke(queues, "CreateQueue", {"QueueName": "q-1"})
    assert again.value.code == "QueueAlreadyExist"
    with pytest.raises(FleetError) as gone:
        invoke(queues, "GetQueueAttributes", {"QueueName": "q-2"})
    assert gone.value.code == "QueueNotExist"


# --- --plan --------------------------------------------------------------------------------------------


def test_plan_makes_no_call_and_names_only_documented_actions_and_parameters(
    api: LocalOpenApi, settings: Settings
) -> None:
    x = deploy_cloud.executor(settings, planning=True)
    run.setup(settings, x)
    run.teardown(settings, x)
    assert not api.requests
    undocumented = set()
    for call in x.calls:
        for name in [call.action, *_keys(call.params)]:
            if not re.search(rf"\b{re.escape(name)}\b", FACTS):
                undocumented.add(f"{call.action}.{name}")
    assert not undocumented, f"not named in docs/api-facts.md: {sorted(undocumented)}"


def _keys(params: object) -> list[str]:
    if isinstance(params, dict):
        return [k for key, value in params.items() for k in (key, *_keys(value))]
    if isinstance(params, list):
        return [k for item in params for k in _keys(item)]
    return []


# --- the alarm rules' dimensions, Statistics and contact groups (F-CMS-10, F-CMS-19, F-CMS-15) --------


def _unhealthy(settings: Settings, resource: dict[str, str]) -> dict[str, object]:
    return dict(plan.unhealthy_rule(settings, "ServerGroupUnHealthyHostCount", "Value", resource).params)


@pytest.mark.parametrize(
    "resource",
    [
        {"serverGroupId": "sgp-deploy"},  # the GWLB's id missing: the rule would match nothing
        {"instanceId": "gwlb-sgp-deploy"},
        {"instanceId": "gwlb-sgp-deploy", "serverGroupId": "sgp-deploy", "zoneId": "z"},
    ],
)
def test_a_resource_rule_must_name_the_metrics_dimensions(
    settings: Settings, resource: dict[str, str]
) -> None:
    with pytest.raises(FleetError) as refused:
        invoke(cms.setup_api(settings, NO_RETRY), "PutResourceMetricRule", _unhealthy(settings, resource))
    assert refused.value.code == "InvalidParameter"
    ok = {"instanceId": "gwlb-sgp-deploy", "serverGroupId": "sgp-deploy"}
    assert invoke(cms.setup_api(settings, NO_RETRY), "PutResourceMetricRule", _unhealthy(settings, ok))


def test_setup_fails_naming_a_dimension_it_has_no_value_for(cloud: FakeCloud, settings: Settings) -> None:
    for meta in cloud.cms.metric_meta:
        if meta["MetricName"] == "ServerGroupUnHealthyHostCount":
            meta["Dimensions"] += ",availableZone"
    with pytest.raises(run.SetupFailed, match="availableZone"):
        run.setup(settings, executor(settings))
    assert "gwlb-fleet-unhealthy-servers" not in cloud.cms.rules


def test_setup_fails_when_the_server_group_has_no_gwlb(cloud: FakeCloud, settings: Settings) -> None:
    cloud.gwlb.server_group_attributes["sgp-deploy"]["RelatedLoadBalancerIds"] = []
    with pytest.raises(run.SetupFailed, match="used by GWLB none"):
        run.setup(settings, executor(settings))


@pytest.mark.parametrize(
    "change",
    [
        {"Statistics": "Value"},  # not an aggregation of custom metrics (F-CMS-19)
        {"ContactGroups": "nobody"},  # no such contact group (F-CMS-15)
        {"Resources": '[{"groupId":5,"dimension":"groupId=asg-deploy"}]'},  # not the rule's GroupId
        {"Resources": '[{"groupId":0,"dimension":"groupId"}]'},  # not k=v
    ],
)
def test_a_custom_rule_is_refused_what_the_docs_do_not_allow(
    settings: Settings, change: dict[str, str]
) -> None:
    rule = dict(plan.scale_rules(settings, "0")[0].params, **change)
    with pytest.raises(FleetError) as refused:
        invoke(cms.setup_api(settings, NO_RETRY), "PutCustomMetricRule", rule)
    assert refused.value.code == "InvalidParameter"
    assert invoke(
        cms.setup_api(settings, NO_RETRY),
        "PutCustomMetricRule",
        dict(plan.scale_rules(settings, "0")[0].params),
    )
