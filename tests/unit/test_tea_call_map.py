"""TeaApi.call_map: a parameter the SDK's request model does not know fails before the call,
naming the parameter and the action, instead of being dropped by ``from_map`` without a word
(which would pass the lab, reading the same parameters, and fail in the cloud)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from alibabacloud_cms20190101 import models as cms_models
from alibabacloud_ess20220222 import models as ess_models

from gwlb_fleet.alibaba.tea import RetryPolicy, TeaApi, dropped_keys
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import PermanentError


class Recorder:
    def __init__(self) -> None:
        self.requests: list[Any] = []

    def __call__(self, request: Any, runtime: Any) -> Any:
        self.requests.append(request)
        return SimpleNamespace(body=SimpleNamespace(to_map=lambda: {"RequestId": "r-1"}))


def api(service: Any = "ess") -> TeaApi:
    return TeaApi(service, client=None, timeout_s=5, retry_policy=RetryPolicy(attempts=1))


def test_a_misspelt_parameter_fails_naming_it_and_the_action() -> None:
    method = Recorder()
    params = {"ScalingGroupId": "asg-1", "LifecycleHookNme": "hook"}
    with pytest.raises(PermanentError) as err:
        api().call_map(
            "DeleteLifecycleHook", method, ess_models.DeleteLifecycleHookRequest, params, Deadline.after(5)
        )
    assert err.value.code == "UnknownParameter"
    assert "DeleteLifecycleHook" in str(err.value) and "LifecycleHookNme" in str(err.value)
    assert method.requests == []  # nothing was sent


def test_a_misspelt_nested_parameter_is_named_by_its_path() -> None:
    method = Recorder()
    params = {
        "RuleId": "r",
        "Targets": [{"Id": "1", "Arn": "acs:mns:cn-hangzhou:1:/queues/q/message", "Levle": "CRITICAL"}],
    }
    with pytest.raises(PermanentError) as err:
        api("cms").call_map(
            "PutMetricRuleTargets", method, cms_models.PutMetricRuleTargetsRequest, params, Deadline.after(5)
        )
    assert "Targets.1.Levle" in str(err.value) and "PutMetricRuleTargets" in str(err.value)
    assert method.requests == []


def test_known_parameters_go_through_as_given() -> None:
    method = Recorder()
    params = {
        "RuleId": "r",
        "Targets": [{"Id": "1", "Arn": "acs:mns:cn-hangzhou:1:/queues/q/message", "Level": "CRITICAL"}],
        "Unused": None,  # None is sent by no one: not an unknown parameter
    }
    body = api("cms").call_map(
        "PutMetricRuleTargets", method, cms_models.PutMetricRuleTargetsRequest, params, Deadline.after(5)
    )
    assert body == {"RequestId": "r-1"}
    [request] = method.requests
    assert request.rule_id == "r" and request.targets[0].level == "CRITICAL"


def test_dropped_keys_compares_nested_maps_and_lists() -> None:
    sent = {"A": 1, "B": {"C": 2, "D": 3}, "E": [{"F": 4}, {"G": 5}], "H": None}
    read = {"A": 1, "B": {"C": 2}, "E": [{"F": 4}, {}]}
    assert dropped_keys(sent, read) == ["B.D", "E.2.G"]
    assert dropped_keys({"X": 1}, {}) == ["X"]
