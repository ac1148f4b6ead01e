"""The lab's ESS endpoint requires exactly the parameters the SDK model marks "This parameter is
required" (F-ESS-12): every call with only those is taken (it may still be refused, but not for a
missing parameter), and dropping any one of them is ``MissingParameter``. The required set is read
from the installed model, so a lab stricter or laxer than the model fails here."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from typing import Any

import pytest
from alibabacloud_ess20220222 import models as ess_models
from alibabacloud_ess20220222.client import Client as EssClient
from darabonba.runtime import RuntimeOptions
from Tea.exceptions import TeaException

from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.alibaba.tea import sdk_config
from gwlb_fleet.settings import Settings
from gwlb_lab.api import LocalOpenApi

pytestmark = pytest.mark.contract
GROUP = "asg-req"

# a value for every parameter any of these calls requires (wire name -> SDK attribute value)
VALUES: dict[str, Any] = {
    "region_id": "cn-hangzhou",
    "scaling_group_id": GROUP,
    "scaling_activity_id": "asa-none",
    "adjustment_type": "QuantityChangeInCapacity",
    "adjustment_value": 1,
    "instance_ids": ["i-none"],
    "protected_from_scale_in": True,
    "instance_id": "i-none",
    "health_status": "Unhealthy",
    "scaling_configuration_id": "asc-none",
    "lifecycle_hook_id": "ash-none",
    "lifecycle_action_token": "token-none",
}
ACTIONS = [
    "DescribeScalingGroups",
    "DescribeScalingInstances",
    "DescribeLifecycleActions",
    "RecordLifecycleActionHeartbeat",
    "CompleteLifecycleAction",
    "ScaleWithAdjustment",
    "RemoveInstances",
    "SetInstanceHealth",
    "SetInstancesProtection",
    "ModifyScalingConfiguration",
    "DescribeScalingConfigurations",
]


def required(action: str) -> list[str]:
    """The attributes the model's ``__init__`` comments mark required."""
    source = inspect.getsource(getattr(ess_models, f"{action}Request").__init__)
    names, comments = [], []
    for line in source.split("):", 1)[1].splitlines():
        text = line.strip()
        if text.startswith("#"):
            comments.append(text)
        elif match := re.match(r"self\.(\w+) = ", text):
            if any("This parameter is required" in c for c in comments):
                names.append(match.group(1))
            comments = []
    return names


@pytest.fixture
def client() -> Iterator[Any]:
    cloud = FakeCloud()
    cloud.seed_fleet(GROUP, "sgp-req", "lsn-req", min_size=2, desired=2, hooks=False)
    with LocalOpenApi(cloud) as api:
        settings = Settings.from_environ(
            {
                **api.env(),
                "FLEET_REGION": "cn-hangzhou",
                "SCALING_GROUP_ID": GROUP,
                "GWLB_SERVER_GROUP_ID": "sgp-req",
                "GWLB_LISTENER_ID": "lsn-req",
                "ALIBABA_CLOUD_ACCESS_KEY_ID": "id",
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "secret",
            }
        )
        yield EssClient(sdk_config("ess", settings))


def call(client: Any, action: str, params: dict[str, Any]) -> str:
    """The code the lab answers ("" when it takes the call)."""
    method = re.sub(r"(?<!^)(?=[A-Z])", "_", action).lower() + "_with_options"
    request = getattr(ess_models, f"{action}Request")(**params)
    try:
        getattr(client, method)(request, RuntimeOptions(autoretry=False, max_attempts=0))
    except TeaException as exc:
        return str(exc.code)
    return ""


def test_the_models_mark_what_the_facts_say() -> None:
    assert required("DescribeLifecycleActions") == ["scaling_activity_id"]  # F-ESS-7, F-ESS-12
    assert set(required("ScaleWithAdjustment")) == {"adjustment_type", "adjustment_value", "scaling_group_id"}
    assert set(required("SetInstancesProtection")) == {
        "instance_ids",
        "protected_from_scale_in",
        "scaling_group_id",
    }
    assert required("DescribeScalingInstances") == ["region_id"]


@pytest.mark.parametrize("action", ACTIONS)
def test_the_lab_requires_exactly_what_the_model_requires(client: Any, action: str) -> None:
    names = required(action)
    assert names, action
    full = {name: VALUES[name] for name in names}
    assert call(client, action, full) != "MissingParameter", f"{action}: {names} should be enough"
    for name in names:
        less = {k: v for k, v in full.items() if k != name}
        assert call(client, action, less) == "MissingParameter", f"{action} without {name}"


def test_activities_need_one_of_group_and_activity_ids(client: Any) -> None:  # F-ESS-12
    action = "DescribeScalingActivities"
    assert required(action) == ["region_id"]
    region = {"region_id": "cn-hangzhou"}
    assert call(client, action, region) == "MissingParameter"
    assert call(client, action, {**region, "scaling_group_id": GROUP}) == ""
    assert call(client, action, {**region, "scaling_activity_ids": ["asa-none"]}) == ""
    both = {**region, "scaling_group_id": GROUP, "scaling_activity_ids": ["asa-none"]}
    assert call(client, action, both) == "InvalidParameter"


def test_instances_of_every_group_without_a_group_id(client: Any) -> None:  # F-ESS-12
    request = ess_models.DescribeScalingInstancesRequest(region_id="cn-hangzhou")
    answer = client.describe_scaling_instances_with_options(request, RuntimeOptions())
    assert answer.body.total_count == len(answer.body.scaling_instances) >= 2
