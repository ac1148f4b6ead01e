"""The operator's step-failure alarm rule (``plan.step_failure_rule``) through the real SDK against
the lab's local CloudMonitor endpoint: set-up puts it and reads it back with no push target,
``--plan`` shows it, teardown deletes it, and the endpoint refuses it without what F-CMS-4 requires."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gwlb_fleet import cli
from gwlb_fleet.alibaba import cms
from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.alibaba.tea import RetryPolicy
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.deploy import cloud as deploy_cloud
from gwlb_fleet.deploy import plan, run
from gwlb_fleet.errors import FleetError
from gwlb_fleet.ports import STEP_FAILURE_METRIC
from gwlb_fleet.settings import Settings
from gwlb_lab.api import LocalOpenApi
from tests.contract.fleet import CONTACT_GROUP, FleetIds, environment

pytestmark = pytest.mark.contract
RULE = "gwlb-fleet-step-failures"
NO_RETRY = RetryPolicy(attempts=1, sleep=lambda s: None)
REQUIRED = (  # PutCustomMetricRule's required parameters (F-CMS-4)
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


def put_rule(settings: Settings, params: dict[str, object]) -> dict[str, object]:
    api = cms.setup_api(settings, NO_RETRY)
    return api.invoke("PutCustomMetricRule", params, Deadline.after(10))


def test_setup_puts_the_step_failure_rule_for_people_and_teardown_deletes_it(
    cloud: FakeCloud, api: LocalOpenApi, settings: Settings
) -> None:
    x = deploy_cloud.executor(settings, planning=False)
    run.setup(settings, x)

    put = api.recorded("PutCustomMetricRule")
    [sent] = [r.params for r in put if r.params["RuleId"] == RULE]
    assert {k: sent[k] for k in ("MetricName", "GroupId", "Resources")} == {
        "MetricName": STEP_FAILURE_METRIC,
        "GroupId": "0",  # in no application group, as the functions publish it (F-CMS-11)
        "Resources": '[{"groupId":0,"dimension":"scaling_group_id=asg-deploy"}]',  # F-CMS-19
    }
    assert {k: sent[k] for k in ("Statistics", "ComparisonOperator", "Threshold", "EvaluationCount")} == {
        "Statistics": "Sum",  # failures in the period (F-CMS-19)
        "ComparisonOperator": ">=",  # a symbol (F-CMS-4)
        "Threshold": "1",
        "EvaluationCount": "1",
    }
    assert sent["Level"] == "CRITICAL" and sent["ContactGroups"] == CONTACT_GROUP
    assert f"rule {RULE}: PutCustomMetricRule" in x.report  # read back (F-CMS-16)
    read_back = [r.params for r in api.recorded("DescribeMetricRuleList")]
    assert {"RuleIds": RULE} in read_back
    # for people: no push target set or looked for, while every other rule has its queue
    assert not any(r.params.get("RuleId") == RULE for r in api.recorded("PutMetricRuleTargets"))
    assert not any(r.params.get("RuleId") == RULE for r in api.recorded("DescribeMetricRuleTargets"))
    assert RULE not in cloud.cms.targets
    assert set(cloud.cms.targets) == set(cloud.cms.rules) - {RULE}

    run.teardown(settings, deploy_cloud.executor(settings, planning=False))
    assert RULE not in cloud.cms.rules and not cloud.cms.rules


def test_plan_on_the_command_line_shows_the_step_failure_rule_and_no_target_for_it(
    api: LocalOpenApi, fleet_ids: FleetIds, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "settings.env"
    env = environment(api, fleet_ids, ALARM_CONTACT_GROUP=CONTACT_GROUP)
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    assert cli.main(["setup", "--plan", "--env-file", str(env_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    [rule] = [line for line in lines if "PutCustomMetricRule" in line and f'"RuleId": "{RULE}"' in line]
    params = json.loads(rule.split("PutCustomMetricRule ", 1)[1])
    assert params["MetricName"] == STEP_FAILURE_METRIC and params["GroupId"] == "0"
    assert params["Statistics"] == "Sum" and params["ComparisonOperator"] == ">="
    assert not [line for line in lines if "PutMetricRuleTargets" in line and RULE in line]
    assert cli.main(["teardown", "--plan", "--env-file", str(env_file)]) == 0
    [delete] = [line for line in capsys.readouterr().out.splitlines() if "DeleteMetricRules" in line]
    assert RULE in delete
    assert not api.requests  # --plan makes no call


@pytest.mark.parametrize("missing", REQUIRED)
def test_the_lab_cloudmonitor_refuses_the_step_failure_rule_without_a_required_parameter(
    settings: Settings, missing: str
) -> None:
    rule = dict(plan.step_failure_rule(settings).params)
    del rule[missing]
    with pytest.raises(FleetError) as refused:
        put_rule(settings, rule)
    assert refused.value.code == "MissingParameter" and missing in str(refused.value)
    assert put_rule(settings, dict(plan.step_failure_rule(settings).params))  # whole, it is taken


@pytest.mark.parametrize(
    "change",
    [
        {"ComparisonOperator": "GreaterThanOrEqualToThreshold"},  # a word: PutCustomMetricRule's are symbols
        {"Statistics": "Value"},  # not an aggregation of custom metrics (F-CMS-19)
        {"GroupId": "3000001"},  # no such application group, nor the Resources' groupId (F-CMS-11)
    ],
)
def test_the_lab_cloudmonitor_refuses_the_step_failure_rule_otherwise_wrong(
    settings: Settings, change: dict[str, str]
) -> None:
    rule = dict(plan.step_failure_rule(settings).params, **change)
    with pytest.raises(FleetError) as refused:
        put_rule(settings, rule)
    assert refused.value.code == "InvalidParameter"
