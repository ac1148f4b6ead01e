"""The GWLB emulator behind the lab's local OpenAPI endpoint: the real SDK adapter adds and
removes servers (the appliances' data ENIs, ServerType Eni: F-GWLB-2), the emulator follows the
membership — each member named by the instance that owns the ENI, sent to at the ENI's address —
and GetListenerHealthStatus (through the real SDK) answers with what the emulator's health checks
found."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.alibaba.gwlb import GwlbAdapter
from gwlb_fleet.alibaba.tea import RetryPolicy
from gwlb_fleet.clock import FakeClock
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.ports import MemberHealth
from gwlb_fleet.settings import Settings
from gwlb_lab.api import LocalOpenApi
from gwlb_lab.gwlb.config import EmulatorConfig
from gwlb_lab.gwlb.health import CONNECT_FAIL, CheckResult, HealthCheckSettings
from gwlb_lab.gwlb.members import FakeGwlbMembers, Member
from gwlb_lab.gwlb.service import GwlbEmulator

GROUP, SERVER_GROUP, LISTENER = "asg-fleet", "sgp-fleet", "lsn-fleet"
# The two appliances' data ENIs (ServerId, ServerIp): the fake ECS's first two instances.
A, B = ("eni-fake00000001b", "198.19.0.11"), ("eni-fake00000002b", "198.19.0.12")
OWNER = {A[0]: "i-fake00000001", B[0]: "i-fake00000002"}


@pytest.fixture
def api() -> Iterator[LocalOpenApi]:
    cloud = FakeCloud(clock=FakeClock())
    cloud.ecs.data_ip_for = lambda n: f"198.19.0.{10 + n}"
    cloud.seed_fleet(GROUP, SERVER_GROUP, LISTENER)
    for _ in (A, B):
        cloud.ecs.launch("cn-hangzhou-h")
    with LocalOpenApi(cloud) as local:
        yield local


def adapter(api: LocalOpenApi) -> GwlbAdapter:
    settings = Settings.model_validate({
        "FLEET_REGION": "cn-hangzhou", "SCALING_GROUP_ID": GROUP,
        "GWLB_SERVER_GROUP_ID": SERVER_GROUP, "GWLB_LISTENER_ID": LISTENER,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-lab", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "lab-secret",
        "API_TIMEOUT_S": "5", **api.env()})
    return GwlbAdapter.from_settings(settings, RetryPolicy(attempts=3, first_wait=0.01, max_wait=0.05))


def deadline() -> Deadline:
    return Deadline.after(30, margin=0.0)


def read_until(gwlb: GwlbAdapter, server_id: str, status: str) -> None:
    """Read the group (each read moves the fake's members a step) until the member is ``status``
    ("gone": out of the group)."""
    for _ in range(20):
        found = [m.status for m in gwlb.list_members(SERVER_GROUP, deadline()) if m.server_id == server_id]
        if (found[0] if found else "gone") == status:
            return
    raise AssertionError(f"{server_id} never {status}")


def test_the_real_adapter_drives_the_emulator_and_reads_its_health(api: LocalOpenApi) -> None:
    gwlb = adapter(api)
    passing = {A[0]}

    def probe(member: Member) -> CheckResult:
        assert member.address == {OWNER[A[0]]: A[1], OWNER[B[0]]: B[1]}[member.member_id]
        if member.member_id in {OWNER[p] for p in passing}:
            return CheckResult(True, "http 200 ok")
        return CheckResult(False, "tcp 8080: Connection refused", CONNECT_FAIL)

    emulator = GwlbEmulator(
        EmulatorConfig(health=HealthCheckSettings(interval=1.0, healthy_threshold=2, unhealthy_threshold=2)),
        FakeGwlbMembers(api.cloud.gwlb, SERVER_GROUP, LISTENER), probe=probe, clock=lambda: 0.0)

    for server_id, ip in (A, B):
        gwlb.add_server(SERVER_GROUP, server_id, ip, deadline())
    emulator.sync()
    assert gwlb.listener_health(LISTENER, deadline()) == [
        MemberHealth(*A, "Initial"), MemberHealth(*B, "Initial")]

    for server_id, _ in (A, B):
        read_until(gwlb, server_id, "Available")
    emulator.sync()
    emulator.checker.run_due(0.0)
    emulator.checker.run_due(1.0)
    assert gwlb.listener_health(LISTENER, deadline()) == [
        MemberHealth(*A, "Healthy"), MemberHealth(*B, "Unhealthy", CONNECT_FAIL)]
    assert emulator.unhealthy_count() == 1
    assert [m.member_id for m in emulator.members.candidates()] == [OWNER[A[0]]]

    gwlb.remove_server(SERVER_GROUP, *B, deadline())
    assert api.cloud.gwlb.calls.count("RemoveServersFromServerGroup") == 1
    emulator.sync()
    leaving = emulator.members.get(OWNER[B[0]])
    assert leaving is not None and leaving.leaving
    read_until(gwlb, B[0], "gone")
    emulator.sync()
    assert [m.member_id for m in emulator.members] == [OWNER[A[0]]]
    assert gwlb.listener_health(LISTENER, deadline()) == [MemberHealth(*A, "Healthy")]
