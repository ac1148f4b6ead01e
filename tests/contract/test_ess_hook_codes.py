"""ESS lifecycle hooks through the real SDK against the lab's local OpenAPI endpoint: the error codes
the hook calls' error tables give (F-ESS-10), and what the adapters make of them. A hook named by
ScalingGroupId + LifecycleHookName that is not there answers ``InvalidLifecycleHookName.NotExist``
(the id code only for a LifecycleHookId), and teardown takes it as already gone."""

from __future__ import annotations

from typing import Any

import pytest

from gwlb_fleet.alibaba import errors as openapi_errors
from gwlb_fleet.alibaba import ess
from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.alibaba.tea import RetryPolicy
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.deploy import cloud as deploy_cloud
from gwlb_fleet.deploy import plan, run
from gwlb_fleet.errors import NotFound, PermanentError
from gwlb_fleet.settings import Settings
from gwlb_lab.api import LocalOpenApi
from tests.contract.fleet import ACCOUNT, FleetIds

pytestmark = pytest.mark.contract
GROUP = "asg-hooks"
NO_RETRY = RetryPolicy(attempts=1, sleep=lambda s: None)


@pytest.fixture
def fleet_ids() -> FleetIds:
    return FleetIds(GROUP, "sgp-hooks", "lsn-hooks")


def invoke(settings: Settings, action: str, params: dict[str, Any]) -> dict[str, Any]:
    return ess.setup_api(settings, NO_RETRY).invoke(action, params, Deadline.after(10))


def a_hook(settings: Settings) -> dict[str, Any]:
    return plan.hook_params(settings, plan.hooks(settings)[0])


def test_deleting_a_hook_by_name_that_is_gone_is_not_found_and_already_done(
    api: LocalOpenApi, settings: Settings
) -> None:
    with pytest.raises(NotFound) as gone:
        invoke(settings, "DeleteLifecycleHook", {"ScalingGroupId": GROUP, "LifecycleHookName": "nope"})
    assert gone.value.code == "InvalidLifecycleHookName.NotExist"
    assert api.requests[-1].status == 400  # F-ESS-10: the tables answer it with 400, not 404
    assert openapi_errors.is_already_done("ess", "DeleteLifecycleHook", gone.value.code)


def test_a_hook_by_id_that_is_gone_answers_the_id_code(settings: Settings) -> None:
    with pytest.raises(NotFound) as gone:
        invoke(settings, "DeleteLifecycleHook", {"LifecycleHookId": "ash-nope"})
    assert gone.value.code == "InvalidLifecycleHookId.NotExist"


def test_modifying_a_hook_by_name_that_is_gone_is_not_found(settings: Settings) -> None:
    with pytest.raises(NotFound) as gone:
        invoke(
            settings,
            "ModifyLifecycleHook",
            {"ScalingGroupId": GROUP, "LifecycleHookName": "nope", "HeartbeatTimeout": 900},
        )
    assert gone.value.code == "InvalidLifecycleHookName.NotExist"


def test_a_bad_notification_arn_answers_invalid_notification_arn(
    api: LocalOpenApi, cloud: FakeCloud, settings: Settings
) -> None:
    hook = dict(a_hook(settings), NotificationArn=f"acs:ess:cn-hangzhou:{ACCOUNT}:queue/q")  # ROS's form
    with pytest.raises(PermanentError) as refused:
        invoke(settings, "CreateLifecycleHook", hook)
    assert refused.value.code == "InvalidNotificationArn"
    assert api.requests[-1].status == 400
    assert not cloud.ess.groups[GROUP].hooks


def test_a_duplicate_hook_name_answers_the_documented_code(settings: Settings) -> None:
    invoke(settings, "CreateLifecycleHook", a_hook(settings))
    with pytest.raises(PermanentError) as again:
        invoke(settings, "CreateLifecycleHook", a_hook(settings))
    assert again.value.code == "InvalidLifecycleHookName.Duplicate"


def test_teardown_racing_a_hook_deletion_takes_it_as_gone(cloud: FakeCloud, settings: Settings) -> None:
    """The hook is there when teardown describes it and gone when it deletes it (an operator, a
    second teardown): the delete's not-found answer is success, and teardown goes on."""
    run.setup(settings, deploy_cloud.executor(settings, planning=False))
    assert len(cloud.ess.groups[GROUP].hooks) == 2
    delete = cloud.ess.api_delete_lifecycle_hook
    raced: list[str] = []

    def deleted_first(params: dict[str, str]) -> dict[str, Any]:
        hooks = cloud.ess.groups[GROUP].hooks
        hooks[:] = [h for h in hooks if h.name != params.get("LifecycleHookName")]
        raced.append(params.get("LifecycleHookName", ""))
        return delete(params)

    cloud.ess.api_delete_lifecycle_hook = deleted_first  # type: ignore[method-assign]
    x = deploy_cloud.executor(settings, planning=False)
    run.teardown(settings, x)
    assert len(raced) == 2 and not cloud.ess.groups[GROUP].hooks
    gone = [line for line in x.report if "already gone (InvalidLifecycleHookName.NotExist)" in line]
    assert len(gone) == 2
    assert not cloud.cms.rules  # and went on to the rules
