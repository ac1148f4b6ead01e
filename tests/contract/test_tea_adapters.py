"""The Alibaba Cloud adapters through the real Tea SDKs, against the lab's local OpenAPI endpoint.

For every operation the adapters use: the action, API version, HTTP method and the exact
parameters the SDK put on the wire (form body for GWLB, query string for the others), and the
answer parsed into the ports' dataclasses. Then the error paths: throttling retried, persistent
throttling surfacing as TransientError within the deadline, "already done" answers as success,
ESS's activity lock as ScalingConflict, a 403 as PermanentError, no answer at all as transient.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gwlb_fleet.alibaba import errors as openapi_errors
from gwlb_fleet.alibaba.cms import MonitorAdapter
from gwlb_fleet.alibaba.ecs import EcsAdapter
from gwlb_fleet.alibaba.ess import EssAdapter
from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.alibaba.fakes.cms import metric_params
from gwlb_fleet.alibaba.fc import FcScheduler
from gwlb_fleet.alibaba.gwlb import GwlbAdapter
from gwlb_fleet.alibaba.tea import SDK_LOGGERS, RetryPolicy, sdk_config
from gwlb_fleet.clock import FakeClock
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import DeadlineExceeded, NotFound, PermanentError, ScalingConflict, TransientError
from gwlb_fleet.ports import (
    EcsInstance,
    LifecycleAction,
    Member,
    MemberHealth,
    MetricPoint,
    ScalingActivity,
    ScalingGroup,
)
from gwlb_fleet.settings import Settings
from gwlb_lab.api import LocalOpenApi, RecordedRequest

GROUP, SERVER_GROUP, LISTENER, REGION = "asg-fleet", "sgp-fleet", "lsn-fleet", "cn-hangzhou"
FAST = RetryPolicy(attempts=5, first_wait=0.01, max_wait=0.05)


# The data ENI of the fleet's first instance (10.1.0.5): the GWLB's members are ENIs (F-GWLB-2).
A_ENI = "eni-fake00000001b"


@pytest.fixture
def cloud() -> FakeCloud:
    cloud = FakeCloud(clock=FakeClock())
    cloud.seed_fleet(GROUP, SERVER_GROUP, LISTENER, min_size=0, max_size=30, desired=2)
    return cloud


@pytest.fixture
def api(cloud: FakeCloud) -> Iterator[LocalOpenApi]:
    with LocalOpenApi(cloud) as local:
        yield local


def settings_for(api: LocalOpenApi, **extra: str) -> Settings:
    return Settings.model_validate(
        {
            "FLEET_REGION": REGION,
            "SCALING_GROUP_ID": GROUP,
            "GWLB_SERVER_GROUP_ID": SERVER_GROUP,
            "GWLB_LISTENER_ID": LISTENER,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-lab",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "lab-secret",
            "ALIBABA_CLOUD_SECURITY_TOKEN": "lab-sts-token",
            "API_TIMEOUT_S": "5",
            **api.env(),
            **extra,
        }
    )


@pytest.fixture
def settings(api: LocalOpenApi) -> Settings:
    return settings_for(api)


def deadline(seconds: float = 30.0) -> Deadline:
    return Deadline.after(seconds, margin=0.0)


def only(api: LocalOpenApi, action: str) -> RecordedRequest:
    requests = api.recorded(action)
    assert len(requests) == 1, [r.action for r in api.requests]
    return requests[0]


def assert_rpc(request: RecordedRequest, action: str, version: str, in_form: bool) -> None:
    assert request.method == "POST" and request.path == "/"
    assert request.headers["x-acs-action"] == action
    assert request.headers["x-acs-version"] == version
    assert request.status == 200, request.code
    # signed, with the function role's STS token
    assert request.headers["authorization"].startswith("ACS3-HMAC-SHA256 Credential=LTAI-lab,")
    assert request.headers["x-acs-security-token"] == "lab-sts-token"
    if in_form:
        assert request.query == {} and request.form
    else:
        assert request.form == {}


# --- GWLB -----------------------------------------------------------------------------------------


def test_gwlb_add_server_sends_one_eni_server_on_the_geneve_port(
    api: LocalOpenApi, settings: Settings
) -> None:
    gwlb = GwlbAdapter.from_settings(settings, FAST)
    gwlb.add_server(SERVER_GROUP, A_ENI, "10.1.0.5", deadline())

    request = only(api, "AddServersToServerGroup")
    assert_rpc(request, "AddServersToServerGroup", "2024-04-15", in_form=True)
    token = request.form.pop("ClientToken")
    assert len(token) == 32 and token.isalnum()
    assert request.form == {
        "ServerGroupId": SERVER_GROUP,
        "Servers.1.ServerId": A_ENI,
        "Servers.1.ServerIp": "10.1.0.5",
        "Servers.1.ServerType": "Eni",  # F-GWLB-2: the data ENI
        "Servers.1.Port": "6081",
    }
    assert api.cloud.gwlb.server_groups[SERVER_GROUP].members[A_ENI].status == "Adding"


def test_gwlb_add_of_a_member_already_there_is_success(api: LocalOpenApi, settings: Settings) -> None:
    gwlb = GwlbAdapter.from_settings(settings, FAST)
    gwlb.add_server(SERVER_GROUP, A_ENI, "10.1.0.5", deadline())
    gwlb.add_server(SERVER_GROUP, A_ENI, "10.1.0.5", deadline())  # answered "already", read back: Adding

    adds = api.recorded("AddServersToServerGroup")
    assert [r.code for r in adds] == ["", openapi_errors.ASSUMED_ALREADY_MEMBER]
    assert adds[0].form["ClientToken"] != adds[1].form["ClientToken"]
    assert api.recorded("ListServerGroupServers")[0].form["ServerIds.1"] == A_ENI


def test_gwlb_remove_sends_the_server_and_a_missing_member_is_success(
    api: LocalOpenApi, settings: Settings
) -> None:
    api.cloud.gwlb.add_polls = 0
    gwlb = GwlbAdapter.from_settings(settings, FAST)
    gwlb.add_server(SERVER_GROUP, A_ENI, "10.1.0.5", deadline())
    api.clear()

    gwlb.remove_server(SERVER_GROUP, A_ENI, "10.1.0.5", deadline())
    request = only(api, "RemoveServersFromServerGroup")
    assert_rpc(request, "RemoveServersFromServerGroup", "2024-04-15", in_form=True)
    assert request.form.pop("ClientToken")
    assert request.form == {
        "ServerGroupId": SERVER_GROUP,
        "Servers.1.ServerId": A_ENI,
        "Servers.1.ServerIp": "10.1.0.5",
        "Servers.1.ServerType": "Eni",  # F-GWLB-2: the data ENI
        "Servers.1.Port": "6081",
    }
    assert api.cloud.gwlb.server_groups[SERVER_GROUP].members[A_ENI].status == "Removing"

    gwlb.remove_server(SERVER_GROUP, "i-never", "10.1.0.9", deadline())  # 404 ResourceNotFound.BackendServer
    assert api.recorded("RemoveServersFromServerGroup")[-1].status == 404
    assert api.recorded("RemoveServersFromServerGroup")[-1].code == "ResourceNotFound.BackendServer"


def test_gwlb_remove_of_a_member_already_leaving_is_success(api: LocalOpenApi, settings: Settings) -> None:
    gwlb = GwlbAdapter.from_settings(settings, FAST)
    gwlb.add_server(SERVER_GROUP, A_ENI, "10.1.0.5", deadline())
    gwlb.remove_server(SERVER_GROUP, A_ENI, "10.1.0.5", deadline())
    gwlb.remove_server(SERVER_GROUP, A_ENI, "10.1.0.5", deadline())  # a retried event: still Removing
    assert api.recorded("RemoveServersFromServerGroup")[-1].code == "IncorrectStatus.BackendServer"


def test_gwlb_remove_from_a_group_that_does_not_exist_is_not_found(settings: Settings) -> None:
    gwlb = GwlbAdapter.from_settings(settings, FAST)
    with pytest.raises(NotFound) as err:
        gwlb.remove_server("sgp-gone", A_ENI, "10.1.0.5", deadline())
    assert err.value.code == "ResourceNotFound.ServerGroup" and err.value.service == "gwlb"


def test_gwlb_list_members_pages_through_the_group(api: LocalOpenApi, settings: Settings) -> None:
    for n in range(150):
        api.cloud.gwlb.api_add_servers_to_server_group(
            SERVER_GROUP, [{"ServerId": f"i-{n:03d}", "ServerIp": f"10.1.0.{n}", "ServerType": "Ecs"}]
        )
    api.clear()
    members = GwlbAdapter.from_settings(settings, FAST).list_members(SERVER_GROUP, deadline())

    assert len(members) == 150
    assert members[0] == Member("i-000", "10.1.0.0", "Adding", 6081, "Ecs")
    pages = api.recorded("ListServerGroupServers")
    assert [r.form for r in pages] == [
        {"ServerGroupId": SERVER_GROUP, "MaxResults": "100"},
        {"ServerGroupId": SERVER_GROUP, "MaxResults": "100", "NextToken": "100"},
    ]


def test_gwlb_listener_health_with_reasons(api: LocalOpenApi, settings: Settings) -> None:
    api.cloud.gwlb.add_polls = 0
    api.cloud.gwlb.api_add_servers_to_server_group(
        SERVER_GROUP,
        [
            {"ServerId": "i-a", "ServerIp": "10.1.0.5", "ServerType": "Ecs"},
            {"ServerId": "i-b", "ServerIp": "10.1.0.6", "ServerType": "Ecs"},
        ],
    )
    api.cloud.gwlb.tick()
    api.cloud.gwlb.set_health("i-b", "Unhealthy", "CONNECT_TIMEOUT")
    health = GwlbAdapter.from_settings(settings, FAST).listener_health(LISTENER, deadline())

    assert health == [
        MemberHealth("i-a", "10.1.0.5", "Healthy", ""),
        MemberHealth("i-b", "10.1.0.6", "Unhealthy", "CONNECT_TIMEOUT"),
    ]
    request = only(api, "GetListenerHealthStatus")
    assert_rpc(request, "GetListenerHealthStatus", "2024-04-15", in_form=True)
    assert request.form == {"ListenerId": LISTENER, "MaxResults": "100"}


# --- ESS ------------------------------------------------------------------------------------------


def test_ess_describe_group(api: LocalOpenApi, settings: Settings) -> None:
    group = EssAdapter.from_settings(settings, FAST).describe_group(GROUP, deadline())
    assert group == ScalingGroup(GROUP, 0, 30, 2, 2, "Active", f"asc-{GROUP}")
    request = only(api, "DescribeScalingGroups")
    assert_rpc(request, "DescribeScalingGroups", "2022-02-22", in_form=False)
    assert request.query == {"RegionId": REGION, "ScalingGroupIds.1": GROUP}


def test_ess_describe_a_group_that_is_not_there_is_not_found(settings: Settings) -> None:
    with pytest.raises(NotFound) as err:
        EssAdapter.from_settings(settings, FAST).describe_group("asg-none", deadline())
    assert err.value.code == "InvalidScalingGroupId.NotFound"


def test_ess_list_instances_pages_by_fifty(api: LocalOpenApi, settings: Settings) -> None:
    api.cloud.ess.create_group("asg-big", max_size=80, desired=60)
    instances = EssAdapter.from_settings(settings, FAST).list_instances("asg-big", deadline())

    assert len(instances) == 60
    assert {i.zone for i in instances} == {"cn-hangzhou-h", "cn-hangzhou-i"}
    first = instances[0]
    assert first.lifecycle_state == "InService" and first.health_status == "Healthy" and first.created
    assert [r.query for r in api.recorded("DescribeScalingInstances")] == [
        {"RegionId": REGION, "ScalingGroupId": "asg-big", "PageNumber": "1", "PageSize": "50"},
        {"RegionId": REGION, "ScalingGroupId": "asg-big", "PageNumber": "2", "PageSize": "50"},
    ]


def test_ess_scale_out_activity_lifecycle_action_heartbeat_and_complete(
    api: LocalOpenApi, settings: Settings
) -> None:
    ess = EssAdapter.from_settings(settings, FAST)
    activity_id = ess.scale_by(GROUP, 1, deadline())

    scale = only(api, "ScaleWithAdjustment")
    assert_rpc(scale, "ScaleWithAdjustment", "2022-02-22", in_form=False)
    assert scale.query.pop("ClientToken")
    assert scale.query == {
        "ScalingGroupId": GROUP,
        "AdjustmentType": "QuantityChangeInCapacity",
        "AdjustmentValue": "1",
    }

    activities = ess.in_progress_activities(GROUP, deadline())
    assert activities == [ScalingActivity(activity_id, "InProgress", activities[0].description)]
    assert only(api, "DescribeScalingActivities").query == {
        "RegionId": REGION,
        "ScalingGroupId": GROUP,
        "StatusCode": "InProgress",
        "PageNumber": "1",
        "PageSize": "50",
    }

    [action] = ess.lifecycle_actions(activity_id, deadline())
    assert (
        isinstance(action, LifecycleAction) and action.status == "Pending" and len(action.instance_ids) == 1
    )
    assert only(api, "DescribeLifecycleActions").query == {
        "RegionId": REGION,
        "ScalingActivityId": activity_id,
        "LifecycleActionStatus": "Pending",
        "MaxResults": "50",
    }

    ess.heartbeat(action.hook_id, action.token, 900, deadline())
    beat = only(api, "RecordLifecycleActionHeartbeat")
    assert_rpc(beat, "RecordLifecycleActionHeartbeat", "2022-02-22", in_form=False)
    # the one ESS call whose keys are lower camel case
    assert beat.query == {
        "RegionId": REGION,
        "lifecycleHookId": action.hook_id,
        "lifecycleActionToken": action.token,
        "heartbeatTimeout": "900",
    }

    ess.complete(action.hook_id, action.token, "CONTINUE", deadline())
    complete = only(api, "CompleteLifecycleAction")
    assert complete.query.pop("ClientToken")
    assert complete.query == {
        "RegionId": REGION,
        "LifecycleHookId": action.hook_id,
        "LifecycleActionToken": action.token,
        "LifecycleActionResult": "CONTINUE",
    }
    instance = api.cloud.ess.groups[GROUP].instances[action.instance_ids[0]]
    assert instance.lifecycle_state == "InService"
    assert ess.in_progress_activities(GROUP, deadline()) == []

    # completing it again (a retried event) is success; a heartbeat now says the action is gone
    ess.complete(action.hook_id, action.token, "CONTINUE", deadline())
    assert (
        api.recorded("CompleteLifecycleAction")[-1].code == "LifecycleHookIdAndLifecycleActionToken.Invalid"
    )
    with pytest.raises(NotFound):
        ess.heartbeat(action.hook_id, action.token, 900, deadline())


def test_ess_another_activity_in_progress_is_a_scaling_conflict_not_retried(
    api: LocalOpenApi, settings: Settings
) -> None:
    ess = EssAdapter.from_settings(settings, FAST)
    ess.scale_by(GROUP, 1, deadline())  # waits on its scale-out hook
    with pytest.raises(ScalingConflict) as err:
        ess.scale_by(GROUP, 1, deadline())
    assert err.value.code == "ScalingActivityInProgress"
    with pytest.raises(ScalingConflict):
        ess.remove_instances(GROUP, ["i-x"], deadline())
    assert len(api.recorded("ScaleWithAdjustment")) == 2 and len(api.recorded("RemoveInstances")) == 1


def test_ess_remove_instances_lowers_desired_and_ignores_instances_gone(
    api: LocalOpenApi, settings: Settings
) -> None:
    victim = next(iter(api.cloud.ess.groups[GROUP].instances))
    ess = EssAdapter.from_settings(settings, FAST)
    activity_id = ess.remove_instances(GROUP, [victim, "i-gone"], deadline())

    request = only(api, "RemoveInstances")
    assert_rpc(request, "RemoveInstances", "2022-02-22", in_form=False)
    assert request.query.pop("ClientToken")
    assert request.query == {
        "RegionId": REGION,
        "ScalingGroupId": GROUP,
        "InstanceIds.1": victim,
        "InstanceIds.2": "i-gone",
        "DecreaseDesiredCapacity": "True",
        "IgnoreInvalidInstance": "True",
    }
    assert activity_id.startswith("asa-")
    group = api.cloud.ess.groups[GROUP]
    assert group.desired == 1 and group.instances[victim].lifecycle_state == "Removing:Wait"


def test_ess_health_and_user_data(api: LocalOpenApi, settings: Settings) -> None:
    instance_id = next(iter(api.cloud.ess.groups[GROUP].instances))
    api.cloud.ess.api_set_instances_protection(GROUP, [instance_id], True)
    ess = EssAdapter.from_settings(settings, FAST)
    ess.set_instance_health(instance_id, False, deadline())
    ess.update_user_data(f"asc-{GROUP}", "cGFub3JhbWEtc2VydmVy", deadline())

    assert only(api, "SetInstanceHealth").query == {"InstanceId": instance_id, "HealthStatus": "Unhealthy"}
    assert only(api, "ModifyScalingConfiguration").query == {
        "ScalingConfigurationId": f"asc-{GROUP}",
        "UserData": "cGFub3JhbWEtc2VydmVy",
    }
    for action in ("SetInstanceHealth", "ModifyScalingConfiguration"):
        assert_rpc(only(api, action), action, "2022-02-22", in_form=False)
    listed = {i.instance_id: i for i in ess.list_instances(GROUP, deadline())}
    assert listed[instance_id].health_status == "Unhealthy"
    assert listed[instance_id].lifecycle_state == "Protected"
    assert api.cloud.ess.user_data[f"asc-{GROUP}"] == "cGFub3JhbWEtc2VydmVy"


# --- ECS ------------------------------------------------------------------------------------------


def test_ecs_describe_instances_data_and_management_addresses(api: LocalOpenApi, settings: Settings) -> None:
    ecs_fake = api.cloud.ecs
    ecs_fake.data_interface = False
    single = ecs_fake.launch("cn-hangzhou-i")
    two_nics = next(iter(ecs_fake.instances.values()))
    found = EcsAdapter.from_settings(settings, FAST).describe_instances(
        [two_nics.instance_id, single.instance_id, "i-gone"], deadline()
    )

    assert found == [
        EcsInstance(two_nics.instance_id, "Running", two_nics.private_ip, two_nics.zone, two_nics.data_ip),
        EcsInstance(single.instance_id, "Running", single.private_ip, "cn-hangzhou-i", single.private_ip),
    ]
    assert two_nics.data_ip and two_nics.data_ip != two_nics.private_ip
    request = only(api, "DescribeInstances")
    assert_rpc(request, "DescribeInstances", "2014-05-26", in_form=False)
    assert request.query == {
        "RegionId": REGION,
        "InstanceIds": f'["{two_nics.instance_id}", "{single.instance_id}", "i-gone"]',
        "MaxResults": "100",
    }


def test_ecs_describe_more_than_a_hundred_ids_takes_one_call_a_hundred(
    api: LocalOpenApi, settings: Settings
) -> None:
    ids = [f"i-{n:04d}" for n in range(150)]
    assert EcsAdapter.from_settings(settings, FAST).describe_instances(ids, deadline()) == []
    assert [len(json.loads(r.query["InstanceIds"])) for r in api.recorded("DescribeInstances")] == [100, 50]
    assert EcsAdapter.from_settings(settings, FAST).describe_instances([], deadline()) == []


# --- CloudMonitor ---------------------------------------------------------------------------------


def test_cms_put_custom_metrics_in_batches_of_21(api: LocalOpenApi, settings: Settings) -> None:
    points = [
        MetricPoint("active_flows", float(n), {"instanceId": f"i-{n}"}, 1_700_000_000_000 + n)
        for n in range(25)
    ]
    MonitorAdapter.from_settings(settings, FAST).put_custom_metrics(points, deadline())

    calls = api.recorded("PutCustomMetric")
    assert [len({k.split(".")[1] for k in r.query}) for r in calls] == [21, 4]
    for request in calls:
        assert_rpc(request, "PutCustomMetric", "2019-01-01", in_form=False)
    expected = {f"MetricList.1.{k}": v for k, v in metric_params(points[21], 0).items()}
    assert {k: v for k, v in calls[1].query.items() if k.startswith("MetricList.1.")} == expected
    assert expected["MetricList.1.Values"] == '{"value":21.0}'
    assert api.cloud.cms.points == points


def test_cms_point_without_a_time_gets_now(api: LocalOpenApi, settings: Settings) -> None:
    MonitorAdapter.from_settings(settings, FAST).put_custom_metrics([MetricPoint("cpu", 1.5)], deadline())
    sent = int(only(api, "PutCustomMetric").query["MetricList.1.Time"])
    assert abs(sent / 1000 - time.time()) < 60


def test_cms_error_in_a_200_answer_is_an_error(api: LocalOpenApi, settings: Settings) -> None:
    api.cloud.cms.api_put_custom_metric = lambda metric_list: {"Code": "206", "Message": "partly"}  # type: ignore[method-assign]
    with pytest.raises(PermanentError) as err:
        MonitorAdapter.from_settings(settings, FAST).put_custom_metrics([MetricPoint("cpu", 1.0)], deadline())
    assert err.value.code == "206"


# --- FC -------------------------------------------------------------------------------------------


def test_fc_call_later_is_an_async_invocation_with_a_delay(api: LocalOpenApi, settings: Settings) -> None:
    FcScheduler.from_settings(settings, FAST).call_later(
        "gwlb-fleet-lifecycle", b'{"step":"drain"}', 120, deadline()
    )

    request = only(api, "InvokeFunction")
    assert (
        request.method == "POST" and request.path == "/2023-03-30/functions/gwlb-fleet-lifecycle/invocations"
    )
    assert request.headers["x-acs-version"] == "2023-03-30"
    assert request.headers["x-fc-invocation-type"] == "Async"
    assert request.headers["x-fc-async-delay"] == "120"
    assert request.body == b'{"step":"drain"}' and request.status == 202
    [scheduled] = api.cloud.fc.scheduled
    assert scheduled.delay_s == 120 and scheduled.payload == b'{"step":"drain"}'


def test_fc_delays_past_the_documented_range_are_capped(api: LocalOpenApi, settings: Settings) -> None:
    FcScheduler.from_settings(settings, FAST).call_later("gwlb-fleet-lifecycle", b"{}", 7200, deadline())
    request = only(api, "InvokeFunction")
    assert request.headers["x-fc-async-delay"] == "3599" and request.status == 202  # F-FC-4: (0, 3600)


def test_fc_follow_up_due_at_once_sends_no_delay_header(api: LocalOpenApi, settings: Settings) -> None:
    FcScheduler.from_settings(settings, FAST).call_later("gwlb-fleet-lifecycle", b"{}", 0, deadline())
    request = only(api, "InvokeFunction")
    assert "x-fc-async-delay" not in request.headers  # F-FC-4: 0 is outside (0, 3600)
    assert request.headers["x-fc-invocation-type"] == "Async" and request.status == 202
    [scheduled] = api.cloud.fc.scheduled
    assert scheduled.delay_s == 0


@pytest.mark.parametrize("value", ["0", "3600", "abc"])
def test_lab_fc_endpoint_refuses_a_delay_outside_the_documented_range(
    api: LocalOpenApi, settings: Settings, value: str
) -> None:
    """Through the real SDK: a delay header the documented range (0, 3600) excludes is refused
    with FC's InvalidArgument, not clamped (F-FC-4)."""
    from alibabacloud_fc20230330 import models as fc_models
    from alibabacloud_fc20230330.client import Client as FcClient
    from darabonba.runtime import RuntimeOptions

    client = FcClient(sdk_config("fc", settings))
    headers = fc_models.InvokeFunctionHeaders(
        x_fc_invocation_type="Async", common_headers={"x-fc-async-delay": value}
    )
    request = fc_models.InvokeFunctionRequest(body=io.BytesIO(b"{}"))
    with pytest.raises(Exception) as err:
        client.invoke_function_with_options("gwlb-fleet-lifecycle", request, headers, RuntimeOptions())
    assert getattr(err.value, "code", "") == "InvalidArgument"
    assert only(api, "InvokeFunction").status == 400
    assert api.cloud.fc.scheduled == []


def test_fc_short_names_get_the_deployed_prefix(api: LocalOpenApi) -> None:
    settings = settings_for(api, FUNCTION_PREFIX="fleet-prod")
    FcScheduler.from_settings(settings, FAST).call_later("lifecycle", b"{}", 5, deadline())
    assert only(api, "InvokeFunction").path == "/2023-03-30/functions/fleet-prod-lifecycle/invocations"


def test_fc_follow_up_is_a_continuation_event_for_the_lifecycle_function(api: LocalOpenApi) -> None:
    from gwlb_fleet.events import ContinueEvent, parse_event
    from gwlb_fleet.ports import FollowUp

    settings = settings_for(api, FUNCTION_PREFIX="fleet-prod")
    FcScheduler.from_settings(settings, FAST).follow_up(FollowUp("i-a", "booting", "i-a/1"), 30, deadline())
    request = only(api, "InvokeFunction")
    assert request.path == "/2023-03-30/functions/fleet-prod-lifecycle/invocations"
    assert request.headers["x-fc-async-delay"] == "30"
    event = parse_event(request.body)
    assert isinstance(event, ContinueEvent) and event.envelope.id == "i-a/1"
    assert (event.work.instance_id, event.work.reason) == ("i-a", "booting")


def test_fc_function_that_does_not_exist_is_not_found(api: LocalOpenApi, settings: Settings) -> None:
    api.cloud.fc.functions = {"gwlb-fleet-lifecycle"}
    with pytest.raises(NotFound) as err:
        FcScheduler.from_settings(settings, FAST).call_later("nope", b"{}", 1, deadline())
    assert err.value.code == "FunctionNotFound"


# --- errors, retries and deadlines ----------------------------------------------------------------


def test_throttling_is_retried_then_succeeds_with_the_same_client_token(
    api: LocalOpenApi, settings: Settings
) -> None:
    api.cloud.gwlb.fail_next = ["Throttling.User", "ServiceUnavailable"]
    GwlbAdapter.from_settings(settings, FAST).add_server(SERVER_GROUP, A_ENI, "10.1.0.5", deadline())

    adds = api.recorded("AddServersToServerGroup")
    assert [(r.status, r.code) for r in adds] == [
        (400, "Throttling.User"),
        (503, "ServiceUnavailable"),
        (200, ""),
    ]
    assert len({r.form["ClientToken"] for r in adds}) == 1  # one operation, deduplicated by the service


def test_throttling_exception_from_retry_after_is_retried(cloud: FakeCloud) -> None:
    with LocalOpenApi(cloud, retry_after_s=1) as api:
        cloud.ess.fail_next = ["Throttling"]
        group = EssAdapter.from_settings(settings_for(api), FAST).describe_group(GROUP, deadline())
        assert group.group_id == GROUP
        assert [r.code for r in api.recorded("DescribeScalingGroups")] == ["Throttling", ""]


def test_a_lock_held_is_retried(api: LocalOpenApi, settings: Settings) -> None:
    api.cloud.gwlb.fail_next = ["Conflict.Lock", "IncorrectStatus.ServerGroup"]
    GwlbAdapter.from_settings(settings, FAST).remove_server(SERVER_GROUP, "i-a", "10.1.0.5", deadline())
    assert [r.code for r in api.recorded("RemoveServersFromServerGroup")] == [
        "Conflict.Lock",
        "IncorrectStatus.ServerGroup",
        "ResourceNotFound.BackendServer",
    ]


def test_persistent_throttling_is_a_transient_error_within_the_deadline(
    api: LocalOpenApi, settings: Settings
) -> None:
    api.cloud.ess.throttled = True
    policy = RetryPolicy(attempts=1000, first_wait=0.05, max_wait=0.2)
    started = time.monotonic()
    with pytest.raises(TransientError) as err:
        EssAdapter.from_settings(settings, policy).describe_group(GROUP, Deadline.after(1.5, margin=0.5))
    took = time.monotonic() - started
    assert err.value.code == "Throttling" and err.value.service == "ess"
    assert not isinstance(err.value, DeadlineExceeded)
    assert took < 1.0 + 0.5  # stopped when the next wait would have passed the deadline
    assert 2 < len(api.recorded("DescribeScalingGroups")) < 40


def test_forbidden_is_permanent_at_once(api: LocalOpenApi, settings: Settings) -> None:
    api.cloud.ecs.fail_next = ["Forbidden.RAM"]
    with pytest.raises(PermanentError) as err:
        EcsAdapter.from_settings(settings, FAST).describe_instances(["i-a"], deadline())
    assert err.value.code == "Forbidden.RAM" and not isinstance(err.value, NotFound)
    assert [r.status for r in api.recorded("DescribeInstances")] == [403]


def test_no_time_left_sends_nothing(api: LocalOpenApi, settings: Settings) -> None:
    with pytest.raises(DeadlineExceeded):
        EssAdapter.from_settings(settings, FAST).describe_group(GROUP, Deadline.after(1, margin=2))
    assert api.requests == []


def test_no_answer_at_all_is_transient(settings: Settings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"  # bound, never listening: refused
        refused = settings.model_copy(update={"ess_endpoint": dead})
        with pytest.raises(TransientError) as err:
            EssAdapter.from_settings(refused, FAST).describe_group(GROUP, deadline())
    assert err.value.service == "ess" and err.value.code == "NetworkError"


# --- building clients -----------------------------------------------------------------------------


def test_the_sdk_debug_handlers_are_removed() -> None:
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        assert logger.handlers == [] and logger.level == logging.WARNING


def test_config_from_settings(api: LocalOpenApi) -> None:
    config: Any = sdk_config("gwlb", settings_for(api))
    assert (config.endpoint, config.protocol, config.region_id) == (api.endpoint, "HTTP", REGION)
    assert (config.read_timeout, config.connect_timeout) == (5000, 5000)
    assert config.security_token == "lab-sts-token"

    with_scheme: Any = sdk_config("ess", settings_for(api, ESS_ENDPOINT="https://ess.example.internal:8443/"))
    assert (with_scheme.endpoint, with_scheme.protocol) == ("ess.example.internal:8443", "HTTPS")

    default: Any = sdk_config("cms", settings_for(api, CMS_ENDPOINT="", API_PROTOCOL="https"))
    assert default.endpoint is None and default.protocol == "HTTPS"  # the SDK picks the region's


def test_missing_credentials_are_permanent(api: LocalOpenApi) -> None:
    settings = settings_for(api, ALIBABA_CLOUD_ACCESS_KEY_SECRET="")
    with pytest.raises(PermanentError, match="ALIBABA_CLOUD_ACCESS_KEY_SECRET"):
        GwlbAdapter.from_settings(settings)


def test_every_module_names_its_ram_actions() -> None:
    from gwlb_fleet.alibaba import cms, ecs, ess, fc, gwlb

    actions = set().union(*(m.RAM_ACTIONS for m in (gwlb, ess, ecs, cms, fc)))
    assert {"gwlb:AddServersToServerGroup", "ess:CompleteLifecycleAction", "fc:InvokeFunction"} <= actions
    assert all(a.split(":")[0] in {"gwlb", "ess", "ecs", "cms", "fc"} for a in actions)
