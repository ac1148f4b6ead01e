"""The real Tea SDKs against the lab's local OpenAPI endpoint for issue 12 part C: ECS
DescribeNetworkInterfaces (F-ECS-1), GWLB members of ServerType Eni (F-GWLB-1/2) and ESS's
heartbeat limits (F-ESS-6), each answered with the service's own codes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gwlb_fleet.alibaba.ecs import EcsAdapter
from gwlb_fleet.alibaba.ess import EssAdapter
from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.alibaba.gwlb import GwlbAdapter
from gwlb_fleet.alibaba.tea import RetryPolicy
from gwlb_fleet.clock import FakeClock
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import LimitExceeded, PermanentError
from gwlb_fleet.ports import NetworkInterface
from gwlb_fleet.settings import Settings
from gwlb_lab.api import LocalOpenApi

GROUP, SERVER_GROUP, LISTENER = "asg-fleet", "sgp-fleet", "lsn-fleet"
POLICY = RetryPolicy(attempts=2, first_wait=0.01, max_wait=0.02)


@pytest.fixture
def api() -> Iterator[LocalOpenApi]:
    cloud = FakeCloud(clock=FakeClock())
    cloud.seed_fleet(GROUP, SERVER_GROUP, LISTENER)
    with LocalOpenApi(cloud) as local:
        yield local


def settings(api: LocalOpenApi) -> Settings:
    return Settings.model_validate(
        {
            "FLEET_REGION": "cn-hangzhou",
            "SCALING_GROUP_ID": GROUP,
            "GWLB_SERVER_GROUP_ID": SERVER_GROUP,
            "GWLB_LISTENER_ID": LISTENER,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-lab",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "lab-secret",
            "API_TIMEOUT_S": "5",
            **api.env(),
        }
    )


def deadline() -> Deadline:
    return Deadline.after(30, margin=0.0)


def sent(api: LocalOpenApi, action: str) -> dict[str, str]:
    (request,) = [r for r in api.requests if r.action == action]
    return request.params


def test_describe_network_interfaces_finds_both_enis(api: LocalOpenApi) -> None:
    instance = api.cloud.ecs.launch("cn-hangzhou-h")
    api.cloud.ecs.launch("cn-hangzhou-i")  # another instance's ENIs are not listed
    ecs = EcsAdapter.from_settings(settings(api), POLICY)
    enis = ecs.network_interfaces(instance.instance_id, deadline())
    assert enis == [
        NetworkInterface(
            instance.primary_eni,
            instance.instance_id,
            "Primary",
            instance.private_ip,
            "InUse",
            0,
            "vsw-fake-mgmt",
        ),
        NetworkInterface(
            instance.data_eni,
            instance.instance_id,
            "Secondary",
            instance.data_ip,
            "InUse",
            1,
            "vsw-fake-data",
        ),
    ]
    params = sent(api, "DescribeNetworkInterfaces")
    assert params["RegionId"] == "cn-hangzhou" and params["InstanceId"] == instance.instance_id
    assert 10 <= int(params["MaxResults"]) <= 500  # F-ECS-1


def test_the_lab_endpoint_checks_describe_network_interfaces(api: LocalOpenApi) -> None:
    from gwlb_lab.api import ecs as ecs_endpoint
    from gwlb_lab.api.params import Params

    with pytest.raises(Exception, match="RegionId"):
        ecs_endpoint.describe_network_interfaces(api.cloud.ecs, Params("ecs", {"InstanceId": "i-1"}))
    with pytest.raises(Exception, match="Type"):
        ecs_endpoint.describe_network_interfaces(
            api.cloud.ecs, Params("ecs", {"RegionId": "cn-hangzhou", "Type": "Tertiary"})
        )


def test_an_eni_member_is_sent_as_server_type_eni(api: LocalOpenApi) -> None:
    instance = api.cloud.ecs.launch("cn-hangzhou-h")
    gwlb = GwlbAdapter.from_settings(settings(api), POLICY)
    gwlb.add_server(SERVER_GROUP, instance.data_eni, instance.data_ip, deadline())
    params = sent(api, "AddServersToServerGroup")
    assert {k: v for k, v in params.items() if k.startswith("Servers.1.")} == {
        "Servers.1.ServerId": instance.data_eni,
        "Servers.1.ServerIp": instance.data_ip,
        "Servers.1.ServerType": "Eni",
        "Servers.1.Port": "6081",
    }
    (member,) = gwlb.list_members(SERVER_GROUP, deadline())
    assert (member.server_id, member.server_type, member.server_ip) == (
        instance.data_eni,
        "Eni",
        instance.data_ip,
    )
    gwlb.remove_server(SERVER_GROUP, member.server_id, member.server_ip, deadline())
    removed = sent(api, "RemoveServersFromServerGroup")
    assert removed["Servers.1.ServerType"] == "Eni" and removed["Servers.1.ServerId"] == instance.data_eni


def test_an_eni_member_with_another_address_or_no_such_eni_is_refused(api: LocalOpenApi) -> None:
    instance = api.cloud.ecs.launch("cn-hangzhou-h")
    gwlb = GwlbAdapter.from_settings(settings(api), POLICY)
    with pytest.raises(PermanentError) as wrong_ip:
        gwlb.add_server(SERVER_GROUP, instance.data_eni, instance.private_ip, deadline())
    assert wrong_ip.value.code == "IllegalParam.ServerIp"
    with pytest.raises(PermanentError) as no_eni:
        gwlb.add_server(SERVER_GROUP, "eni-nothere0000", "10.1.0.9", deadline())
    assert no_eni.value.code == "ResourceNotFound.Eni"
    assert gwlb.list_members(SERVER_GROUP, deadline()) == []


def test_heartbeat_limits_come_back_with_their_codes(api: LocalOpenApi) -> None:
    ess = EssAdapter.from_settings(settings(api), POLICY)
    api.cloud.ess.scale_by(GROUP, 1, deadline())
    (action,) = api.cloud.ess.pending_actions(GROUP)
    api.cloud.clock.advance(60)  # type: ignore[attr-defined]
    with pytest.raises(LimitExceeded) as too_long:
        ess.heartbeat(action.hook.hook_id, action.token, 21600, deadline())  # past 6 h from the start
    assert too_long.value.code == "LifecycleAction.TimeExceeded"
    for _ in range(20):
        ess.heartbeat(action.hook.hook_id, action.token, 600, deadline())
    with pytest.raises(LimitExceeded) as too_many:
        ess.heartbeat(action.hook.hook_id, action.token, 600, deadline())
    assert too_many.value.code == "LifecycleAction.RecordTimesExceeded"
    refused = [r for r in api.requests if r.action == "RecordLifecycleActionHeartbeat" and r.code]
    assert [r.status for r in refused] == [400, 400]  # answered once each: not retried
