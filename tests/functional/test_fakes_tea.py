"""The fakes of GWLB, ESS, ECS, CloudMonitor and FC: their state machines and their failures,
through the ports the flows use (and the ``api_*`` layer where the port hides a detail)."""

from __future__ import annotations

import pytest

from gwlb_fleet.alibaba.errors import ApiError
from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.alibaba.fakes.cms import FakeCms
from gwlb_fleet.alibaba.fakes.fc import FakeFc
from gwlb_fleet.alibaba.fakes.gwlb import FakeGwlb
from gwlb_fleet.clock import FakeClock
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import NotFound, PermanentError, ScalingConflict, TransientError
from gwlb_fleet.ports import Member, MemberHealth, MetricPoint

SG, LSN, ASG = "sgp-1", "lsn-1", "asg-1"


# The data ENIs of the two instances the fleet starts with (addresses 10.1.0.5 and 10.1.0.6): the
# GWLB's members are ENIs (F-GWLB-2), checked against ECS.
A_ENI, B_ENI = "eni-fake00000001b", "eni-fake00000002b"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cloud(clock: FakeClock) -> FakeCloud:
    cloud = FakeCloud(clock=clock)
    cloud.seed_fleet(ASG, SG, LSN, min_size=1, max_size=4, desired=2, hook_timeout_s=600)
    return cloud


def soon(clock: FakeClock, seconds: float = 60.0) -> Deadline:
    return Deadline.after(seconds, margin=0.0, clock=clock)


def status(gwlb: FakeGwlb, clock: FakeClock, server_id: str = A_ENI) -> str:
    """One read of the group: the member's status, or "gone"."""
    found = [m for m in gwlb.list_members(SG, soon(clock)) if m.server_id == server_id]
    return found[0].status if found else "gone"


# --- GWLB ----------------------------------------------------------------------------------------


def test_gwlb_member_is_adding_then_available_after_polls(cloud: FakeCloud, clock: FakeClock) -> None:
    gwlb = cloud.gwlb
    gwlb.add_polls = 2
    gwlb.add_server(SG, A_ENI, "10.1.0.5", soon(clock))
    assert gwlb.list_members(SG, soon(clock)) == [Member(A_ENI, "10.1.0.5", "Adding")]
    assert gwlb.list_members(SG, soon(clock)) == [Member(A_ENI, "10.1.0.5", "Adding")]
    assert gwlb.list_members(SG, soon(clock)) == [Member(A_ENI, "10.1.0.5", "Available")]


def test_gwlb_tick_moves_members_without_reading(cloud: FakeCloud, clock: FakeClock) -> None:
    cloud.gwlb.add_polls = 2
    cloud.gwlb.add_server(SG, A_ENI, "10.1.0.5", soon(clock))
    cloud.gwlb.tick()
    cloud.gwlb.tick()
    assert cloud.gwlb.server_groups[SG].members[A_ENI].status == "Available"


def test_gwlb_remove_drains_then_the_member_is_gone(cloud: FakeCloud, clock: FakeClock) -> None:
    gwlb = cloud.gwlb
    gwlb.add_polls, gwlb.remove_polls, gwlb.drain_polls = 0, 1, 2
    gwlb.add_server(SG, A_ENI, "10.1.0.5", soon(clock))
    gwlb.tick()
    gwlb.remove_server(SG, A_ENI, "10.1.0.5", soon(clock))
    seen = [status(gwlb, clock) for _ in range(4)]
    assert seen == ["Removing", "Draining", "Draining", "gone"]


def test_gwlb_without_connection_draining_removal_skips_draining(clock: FakeClock) -> None:
    gwlb = FakeGwlb(clock=clock, add_polls=0, remove_polls=1)
    gwlb.create_server_group(SG, connection_drain=False)
    gwlb.add_server(SG, A_ENI, "10.1.0.5", soon(clock))
    gwlb.remove_server(SG, A_ENI, "10.1.0.5", soon(clock))
    assert [status(gwlb, clock) for _ in range(2)] == ["Removing", "gone"]


def test_gwlb_adding_back_a_draining_member_returns_it(cloud: FakeCloud, clock: FakeClock) -> None:
    gwlb = cloud.gwlb
    gwlb.add_polls, gwlb.remove_polls, gwlb.drain_polls = 1, 0, 5
    gwlb.add_server(SG, A_ENI, "10.1.0.5", soon(clock))
    gwlb.remove_server(SG, A_ENI, "10.1.0.5", soon(clock))
    gwlb.tick()
    assert gwlb.server_groups[SG].members[A_ENI].status == "Draining"
    gwlb.add_server(SG, A_ENI, "10.1.0.5", soon(clock))
    assert [status(gwlb, clock) for _ in range(2)] == ["Adding", "Available"]


def test_gwlb_add_and_remove_are_idempotent(cloud: FakeCloud, clock: FakeClock) -> None:
    gwlb = cloud.gwlb
    gwlb.add_server(SG, A_ENI, "10.1.0.5", soon(clock))
    gwlb.add_server(SG, A_ENI, "10.1.0.5", soon(clock))
    gwlb.remove_server(SG, A_ENI, "10.1.0.5", soon(clock))
    gwlb.remove_server(SG, A_ENI, "10.1.0.5", soon(clock))  # already leaving
    gwlb.remove_server(SG, "i-never", "10.1.0.9", soon(clock))  # never there
    gwlb.api_add_servers_to_server_group(SG, [{"ServerId": B_ENI, "ServerType": "Ecs"}])
    with pytest.raises(ApiError) as err:  # what the port's idempotence covers
        gwlb.api_add_servers_to_server_group(SG, [{"ServerId": B_ENI, "ServerType": "Ecs"}])
    assert err.value.code == "ResourceAlreadyExist.Server"


def test_gwlb_client_token_replay_is_not_applied_twice(cloud: FakeCloud) -> None:
    gwlb = cloud.gwlb
    server = {"ServerId": A_ENI, "ServerIp": "10.1.0.5", "ServerType": "Ecs", "Port": 6081}
    gwlb.api_add_servers_to_server_group(SG, [server], client_token="t-1")
    gwlb.api_add_servers_to_server_group(SG, [server], client_token="t-1")  # the lost answer's retry
    assert list(gwlb.server_groups[SG].members) == [A_ENI]


def test_gwlb_health_defaults_and_settable(cloud: FakeCloud, clock: FakeClock) -> None:
    gwlb = cloud.gwlb
    gwlb.add_polls = 1
    gwlb.add_server(SG, A_ENI, "10.1.0.5", soon(clock))
    gwlb.add_server(SG, B_ENI, "10.1.0.6", soon(clock))
    assert {h.status for h in gwlb.listener_health(LSN, soon(clock))} == {"Initial"}
    gwlb.tick()
    gwlb.set_health(B_ENI, "Unhealthy", "HTTP_CODE_NOT_MATCH")
    assert gwlb.listener_health(LSN, soon(clock)) == [
        MemberHealth(A_ENI, "10.1.0.5", "Healthy"),
        MemberHealth(B_ENI, "10.1.0.6", "Unhealthy", "HTTP_CODE_NOT_MATCH"),
    ]
    with pytest.raises(NotFound):
        gwlb.listener_health("lsn-none", soon(clock))


def test_gwlb_faults_map_like_the_adapter(cloud: FakeCloud, clock: FakeClock) -> None:
    gwlb = cloud.gwlb
    gwlb.fail_next = ["Conflict.Lock", "Forbidden.NoPermission"]
    with pytest.raises(TransientError) as transient:
        gwlb.list_members(SG, soon(clock))
    assert transient.value.code == "Conflict.Lock"
    with pytest.raises(PermanentError) as denied:
        gwlb.list_members(SG, soon(clock))
    assert denied.value.code == "Forbidden.NoPermission"
    gwlb.throttled = True
    with pytest.raises(TransientError, match="Throttling"):
        gwlb.add_server(SG, "i-a", "10.1.0.5", soon(clock))
    gwlb.throttled = False
    assert gwlb.list_members(SG, soon(clock)) == []
    with pytest.raises(NotFound) as missing:
        gwlb.add_server("sgp-none", "i-a", "10.1.0.5", soon(clock))
    assert missing.value.code == "ResourceNotFound.ServerGroup"


# --- ESS -----------------------------------------------------------------------------------------------


def test_ess_group_and_instances(cloud: FakeCloud, clock: FakeClock) -> None:
    group = cloud.ess.describe_group(ASG, soon(clock))
    assert (group.min_size, group.max_size, group.desired, group.total) == (1, 4, 2, 2)
    instances = cloud.ess.list_instances(ASG, soon(clock))
    assert {i.zone for i in instances} == {"cn-hangzhou-h", "cn-hangzhou-i"}  # zones balanced
    assert {i.instance_id for i in instances} == set(cloud.ecs.instances)
    with pytest.raises(NotFound):
        cloud.ess.describe_group("asg-none", soon(clock))


def test_ess_scale_out_waits_on_its_hook_and_conflicts_meanwhile(cloud: FakeCloud, clock: FakeClock) -> None:
    ess = cloud.ess
    activity = ess.scale_by(ASG, 1, soon(clock))
    assert [a.activity_id for a in ess.in_progress_activities(ASG, soon(clock))] == [activity]
    with pytest.raises(ScalingConflict) as conflict:
        ess.scale_by(ASG, 1, soon(clock))
    assert conflict.value.code == "ScalingActivityInProgress"
    with pytest.raises(ScalingConflict):
        ess.remove_instances(ASG, [next(iter(ess.groups[ASG].instances))], soon(clock))

    [action] = ess.lifecycle_actions(activity, soon(clock))
    [new_id] = action.instance_ids
    assert ess.groups[ASG].instances[new_id].lifecycle_state == "Pending:Wait"
    assert new_id in cloud.ecs.instances and cloud.ecs.instances[new_id].data_ip

    ess.complete(action.hook_id, action.token, "CONTINUE", soon(clock))
    assert ess.groups[ASG].instances[new_id].lifecycle_state == "InService"
    assert ess.in_progress_activities(ASG, soon(clock)) == []
    assert ess.activities[activity].status == "Successful"
    ess.complete(action.hook_id, action.token, "CONTINUE", soon(clock))  # again: already done, success
    assert ess.describe_group(ASG, soon(clock)).desired == 3


def test_ess_heartbeat_extends_and_timeout_applies_the_default_result(
    cloud: FakeCloud, clock: FakeClock
) -> None:
    ess = cloud.ess
    activity = ess.scale_by(ASG, 1, soon(clock))
    [action] = ess.lifecycle_actions(activity, soon(clock))
    clock.advance(500)
    ess.heartbeat(action.hook_id, action.token, 600, soon(clock))
    clock.advance(500)  # 1000 s after the start: past the hook's 600, inside the heartbeat's
    assert ess.lifecycle_actions(activity, soon(clock)) == [action]

    clock.advance(200)  # the heartbeat's 600 s have passed: the default result (ABANDON) applies
    assert ess.lifecycle_actions(activity, soon(clock)) == []
    [new_id] = action.instance_ids
    assert new_id not in ess.groups[ASG].instances and new_id not in cloud.ecs.instances
    assert ess.activities[activity].status == "Failed"
    with pytest.raises(NotFound) as gone:
        ess.heartbeat(action.hook_id, action.token, 600, soon(clock))
    assert gone.value.code == "LifecycleHookIdAndLifecycleActionToken.Invalid"
    ess.complete(action.hook_id, action.token, "CONTINUE", soon(clock))  # timed out: success too


def test_ess_scale_in_waits_on_its_hook_and_rollback_keeps_the_instance(
    cloud: FakeCloud, clock: FakeClock
) -> None:
    ess = cloud.ess
    victim, other = list(ess.groups[ASG].instances)
    activity = ess.remove_instances(ASG, [victim], soon(clock))
    assert ess.groups[ASG].instances[victim].lifecycle_state == "Removing:Wait"
    assert ess.describe_group(ASG, soon(clock)).desired == 1
    [action] = ess.lifecycle_actions(activity, soon(clock))
    ess.complete(action.hook_id, action.token, "ROLLBACK", soon(clock))
    assert ess.groups[ASG].instances[victim].lifecycle_state == "InService"
    assert ess.describe_group(ASG, soon(clock)).desired == 2

    activity = ess.remove_instances(ASG, [other], soon(clock))
    [action] = ess.lifecycle_actions(activity, soon(clock))
    ess.complete(action.hook_id, action.token, "CONTINUE", soon(clock))
    assert other not in ess.groups[ASG].instances and other not in cloud.ecs.instances


def test_ess_remove_respects_min_size_and_ignores_instances_gone(cloud: FakeCloud, clock: FakeClock) -> None:
    ess = cloud.ess
    ids = list(ess.groups[ASG].instances)
    with pytest.raises(PermanentError) as too_few:
        ess.remove_instances(ASG, ids, soon(clock))
    assert too_few.value.code == "IncorrectCapacity.MinSize"
    assert ess.remove_instances(ASG, ["i-gone"], soon(clock)) == ""
    with pytest.raises(ApiError) as strict:
        ess.api_remove_instances(ASG, ["i-gone"], ignore_invalid_instance=False)
    assert strict.value.code == "InvalidInstanceId.NotFound" and strict.value.status == 404


def test_ess_scale_in_by_adjustment_takes_the_oldest_unprotected(cloud: FakeCloud, clock: FakeClock) -> None:
    ess = cloud.ess
    oldest, newest = list(ess.groups[ASG].instances)
    ess.groups[ASG].instances[newest].created = "2099-01-01T00:00:00Z"
    ess.api_set_instances_protection(ASG, [oldest], True)
    assert {i.instance_id: i.lifecycle_state for i in ess.list_instances(ASG, soon(clock))}[
        oldest
    ] == "Protected"
    activity = ess.scale_by(ASG, -1, soon(clock))
    [action] = ess.lifecycle_actions(activity, soon(clock))
    assert action.instance_ids == (newest,)


def test_ess_health_user_data_and_bounds(cloud: FakeCloud, clock: FakeClock) -> None:
    ess = cloud.ess
    instance_id = next(iter(ess.groups[ASG].instances))
    ess.set_instance_health(instance_id, False, soon(clock))
    assert {i.instance_id: i.health_status for i in ess.list_instances(ASG, soon(clock))}[
        instance_id
    ] == "Unhealthy"
    with pytest.raises(NotFound):
        ess.set_instance_health("i-gone", False, soon(clock))
    config = ess.describe_group(ASG, soon(clock)).scaling_configuration_id
    ess.update_user_data(config, "dXNlcg==", soon(clock))
    assert ess.user_data[config] == "dXNlcg=="
    with pytest.raises(NotFound):
        ess.update_user_data("asc-none", "x", soon(clock))
    ess.groups[ASG].hooks.clear()
    ess.scale_by(ASG, 2, soon(clock))  # no hooks: done at once
    with pytest.raises(PermanentError) as at_max:
        ess.scale_by(ASG, 1, soon(clock))
    assert at_max.value.code == "IncorrectCapacity.MaxSize"


def test_ess_throttling_storm(cloud: FakeCloud, clock: FakeClock) -> None:
    cloud.ess.throttled = True
    with pytest.raises(TransientError):
        cloud.ess.describe_group(ASG, soon(clock))
    cloud.ess.throttled = False
    cloud.ess.fail_next = ["ScalingActivityInProgress"]
    with pytest.raises(ScalingConflict):
        cloud.ess.scale_by(ASG, 1, soon(clock))


# --- ECS -----------------------------------------------------------------------------------------------


def test_ecs_describes_what_exists(cloud: FakeCloud, clock: FakeClock) -> None:
    ids = list(cloud.ecs.instances)
    cloud.ecs.release(ids[0])
    found = cloud.ecs.describe_instances([*ids, "i-gone"], soon(clock))
    assert [i.instance_id for i in found] == ids[1:]
    assert found[0].data_ip != found[0].private_ip and found[0].status == "Running"


# --- CloudMonitor ---------------------------------------------------------------------------------------


def test_cms_batches_points_and_refuses_more_than_21_a_call(clock: FakeClock) -> None:
    cms = FakeCms(clock=clock)
    cms.put_custom_metrics([MetricPoint("flows", float(n)) for n in range(45)], soon(clock))
    assert cms.calls == ["PutCustomMetric"] * 3 and len(cms.points) == 45
    assert cms.points[0].time_ms == int(clock.now * 1000)
    with pytest.raises(ApiError) as err:
        cms.api_put_custom_metric([{"MetricName": "x", "Values": '{"value":1}'}] * 22)
    assert err.value.code == "InvalidParameter"


def test_fc_scheduled_calls_come_due_in_order(clock: FakeClock) -> None:
    fc = FakeFc(clock=clock)
    fc.call_later("lifecycle", b"second", 120, soon(clock))
    fc.call_later("lifecycle", b"first", 60, soon(clock))
    fc.call_later("reconcile", b"late", 99999, soon(clock))  # capped at 3599 s (F-FC-4)
    assert fc.due() == []
    clock.advance(120)
    assert [c.payload for c in fc.due()] == [b"first", b"second"]
    assert fc.due() == []
    assert [(c.function, c.delay_s) for c in fc.due(clock.now + 3600)] == [("reconcile", 3599)]


def test_fc_delay_header_outside_its_documented_range_is_refused(clock: FakeClock) -> None:
    fc = FakeFc(clock=clock)
    for value in ("0", "3600", "-5", "1.5", ""):  # F-FC-4: (0, 3600), whole seconds
        with pytest.raises(ApiError) as err:
            fc.api_invoke_function("lifecycle", b"{}", "Async", value)
        assert err.value.code == "InvalidArgument" and err.value.status == 400
    assert fc.scheduled == []
    fc.api_invoke_function("lifecycle", b"{}", "Async", "3599")
    fc.api_invoke_function("lifecycle", b"{}", "Async", None)  # no header: at once
    assert [c.delay_s for c in fc.scheduled] == [3599, 0]


def test_fc_follow_up_due_at_once_is_queued_without_a_delay(clock: FakeClock) -> None:
    fc = FakeFc(clock=clock)
    fc.call_later("lifecycle", b"now", 0, soon(clock))
    assert [(c.payload, c.delay_s) for c in fc.due()] == [(b"now", 0)]


def test_fc_unknown_function_and_faults(clock: FakeClock) -> None:
    fc = FakeFc(clock=clock, functions={"lifecycle"})
    with pytest.raises(NotFound):
        fc.call_later("nope", b"", 1, soon(clock))
    fc.fail_next = ["TooManyRequests"]
    with pytest.raises(TransientError):
        fc.call_later("lifecycle", b"", 1, soon(clock))
    fc.call_later("lifecycle", b"", 1, soon(clock))
    assert len(fc.scheduled) == 1
