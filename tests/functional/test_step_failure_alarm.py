"""A step that fails for good reaches a person: the point ``WorkflowContext.alarm`` publishes through
the real lifecycle handler is in the series of the rule `gwlb-fleet setup` puts
(``plan.step_failure_rule``), and the lab's CloudMonitor evaluation (gwlb_lab.cloud.alarms, which
matches GroupId and the dimension string exactly: F-CMS-11, F-CMS-19) turns it into an alert."""

from __future__ import annotations

from pathlib import Path

import pytest

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.deploy import plan
from gwlb_fleet.errors import PermanentError
from gwlb_fleet.ports import STEP_FAILURE_METRIC
from gwlb_lab.cloud.alarms import AlarmEvaluator
from tests.functional.world import GROUP, World

CONTACT_GROUP = "gwlb-ops"
IN_APPLICATION_GROUP = "step-failures-in-the-fleets-group"


def fail_a_step_for_good(world: World) -> None:
    """A scale-in whose deregistration is refused for good (the role lost a permission)."""
    world.cloud.ess.scale_by(GROUP, 1, Deadline.after(60))
    world.deliver_hooks()
    (instance_id,) = world.ess_instances()
    world.boot(instance_id)
    world.settle()
    world.cloud.ess.remove_instances(GROUP, [instance_id], Deadline.after(60))
    (action,) = world.new_hook_actions()
    world.cloud.gwlb.fail_next = ["Forbidden.RAM"]
    with pytest.raises(PermanentError, match=r"Forbidden\.RAM"):
        world.invoke("lifecycle", world.hook_event(action))


def test_a_step_failure_point_fires_setups_step_failure_rule_and_only_that(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, kind="linux", alarm_contact_group=CONTACT_GROUP)
    cms = world.cloud.cms
    cms.contact_groups.append(CONTACT_GROUP)
    rule = plan.step_failure_rule(world.settings)
    cms.api_put_custom_metric_rule({k: str(v) for k, v in rule.params.items()})  # as the SDK sends it
    # the same rule in the fleet's application group, as the scale rules are: the functions'
    # points are not in it, so it never fires (F-CMS-11)
    group_id = cms.api_create_monitor_group({"GroupName": world.settings.monitor_group_name})["GroupId"]
    resources = rule.params["Resources"].replace('"groupId":0', f'"groupId":{group_id}')
    cms.api_put_custom_metric_rule(
        {k: str(v) for k, v in rule.params.items()}
        | {"RuleId": IN_APPLICATION_GROUP, "GroupId": str(group_id), "Resources": resources}
    )
    alarms = AlarmEvaluator(cms, clock=world.clock)

    fail_a_step_for_good(world)
    [point] = [p for p in cms.points if p.name == STEP_FAILURE_METRIC]
    world.clock.advance(1)
    [alert] = alarms.evaluate()

    assert alert.rule.rule_id == plan.step_failure_rule_id(world.settings) == "gwlb-fleet-step-failures"
    assert alert.state == "ALERT" and alert.value == point.value == 1.0  # Sum: one failure
    assert alert.dimensions == {"scaling_group_id": GROUP} == point.dimensions
    states = {s["rule_id"]: s["state"] for s in alarms.snapshot()}
    assert states[IN_APPLICATION_GROUP] == "INSUFFICIENT_DATA"
