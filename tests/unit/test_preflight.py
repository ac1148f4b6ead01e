"""Each preflight check over the fakes (the lab's world after ``gwlb-fleet setup``, read through the
lab endpoint's handlers in-process): PASS as seeded, FAIL with the fix when one thing is broken."""

from __future__ import annotations

import pytest

from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.deploy import preflight
from gwlb_fleet.deploy.preflight import FC_ROLE, Reader, Result
from gwlb_fleet.settings import Settings
from gwlb_lab.cloud.network import APPLIANCE_GROUP, FUNCTION_ROLE, INSTANCE_TYPE
from tests.preflightworld import PLAN, environment, in_process_apis, lab_cloud, set_up

pytestmark = pytest.mark.unit


@pytest.fixture
def settings() -> Settings:
    return Settings.from_environ(environment())


@pytest.fixture
def cloud(settings: Settings) -> FakeCloud:
    world = lab_cloud()
    set_up(world, settings)
    return world


def check(cloud: FakeCloud, settings: Settings, name: str) -> Result:
    [result] = [r for r in preflight.run(settings, in_process_apis(cloud)) if r.name == name]
    return result


def failed(cloud: FakeCloud, settings: Settings, name: str, *fix: str) -> Result:
    result = check(cloud, settings, name)
    assert not result.ok and not result.error, result.line()
    assert result.line().startswith(f"FAIL {name}: ")
    for text in fix:
        assert text in result.fix, result.line()
    return result


def test_all_pass_on_the_labs_world(cloud: FakeCloud, settings: Settings) -> None:
    results = preflight.run(settings, in_process_apis(cloud))
    assert [r.name for r in results] == [name for name, _ in preflight.CHECKS]
    assert all(r.ok for r in results), [r.line() for r in results if not r.ok]
    assert preflight.exit_status(results) == 0


def test_an_endpoint_zone_outside_the_gwlbs_fails(cloud: FakeCloud, settings: Settings) -> None:
    cloud.privatelink.zones["ep-lab-i"][0]["ZoneId"] = "cn-hangzhou-k"
    failed(cloud, settings, "gwlb-endpoint-zones", "move ep-lab-i out of ['cn-hangzhou-k']")


def test_an_endpoint_not_connected_fails(cloud: FakeCloud, settings: Settings) -> None:
    cloud.privatelink.endpoints["ep-lab-h"]["ConnectionStatus"] = "Pending"
    failed(cloud, settings, "gwlb-endpoint-zones", "accept the connection of ep-lab-h")


def test_no_endpoint_service_for_the_gwlb_fails(cloud: FakeCloud, settings: Settings) -> None:
    cloud.privatelink.services.clear()
    failed(cloud, settings, "gwlb-endpoint-zones", "create an endpoint service for GWLB gwlb-lab")


def test_an_endpoint_without_a_route_fails(cloud: FakeCloud, settings: Settings) -> None:
    cloud.vpc.route_tables["vtb-lab-business-i"].entries.clear()
    result = failed(cloud, settings, "route-tables", "GatewayLoadBalancerEndpoint = ep-lab-i")
    assert "ep-lab-i <- no route" in result.saw


def test_a_route_by_the_entrys_own_next_hop_counts(cloud: FakeCloud, settings: Settings) -> None:
    """F-VPC-1: a route may carry its next hop in the entry itself rather than NextHops."""
    entry = cloud.vpc.route_tables["vtb-lab-business-i"].entries[0]
    del entry["NextHops"]
    entry.update({"NextHopType": "GatewayLoadBalancerEndpoint", "NextHopId": "ep-lab-i"})
    assert check(cloud, settings, "route-tables").ok


def test_a_security_group_without_6081_fails(cloud: FakeCloud, settings: Settings) -> None:
    rules = cloud.ecs.security_groups[APPLIANCE_GROUP]
    rules[:] = [r for r in rules if r["IpProtocol"] != "UDP"]
    failed(
        cloud, settings, "security-groups", f"add inbound Accept rules to {APPLIANCE_GROUP}: UDP 6081/6081"
    )


def test_a_rule_narrower_than_a_gwlb_vswitch_fails(cloud: FakeCloud, settings: Settings) -> None:
    for rule in cloud.ecs.security_groups[APPLIANCE_GROUP]:
        if rule["IpProtocol"] == "TCP":
            rule["SourceCidrIp"] = "198.19.0.0/25"  # the first zone's vSwitch only
    failed(cloud, settings, "security-groups", "TCP 8080/8080 from 198.19.0.128/25")


def test_a_drop_at_the_same_priority_wins(cloud: FakeCloud, settings: Settings) -> None:
    """F-ECS-6: equal priority, Drop before Accept; a lower-priority Drop does not matter."""
    drop = {"Direction": "ingress", "IpProtocol": "ALL", "PortRange": "-1/-1", "SourceCidrIp": "0.0.0.0/0"}
    cloud.ecs.security_groups[APPLIANCE_GROUP].append({**drop, "Policy": "Drop", "Priority": "2"})
    assert check(cloud, settings, "security-groups").ok
    cloud.ecs.security_groups[APPLIANCE_GROUP].append({**drop, "Policy": "Drop", "Priority": "1"})
    failed(cloud, settings, "security-groups", "UDP 6081/6081 from 198.19.0.0/25")


def test_a_health_check_that_is_off_fails(cloud: FakeCloud, settings: Settings) -> None:
    cloud.gwlb.server_group_attributes[PLAN.server_group_id]["HealthCheckConfig"]["HealthCheckEnabled"] = (
        False
    )
    failed(cloud, settings, "security-groups", "enable the server group's health check")


def test_an_instance_type_without_jumbo_frames_or_enis_fails(cloud: FakeCloud, settings: Settings) -> None:
    cloud.ecs.instance_types[INSTANCE_TYPE]["JumboFrameSupport"] = False
    result = failed(cloud, settings, "instance-types", "JumboFrameSupport")
    assert "does not support jumbo frames" in result.saw
    cloud.ecs.instance_types[INSTANCE_TYPE].update(JumboFrameSupport=True, EniQuantity=1)
    assert "has 1 ENIs, 2 needed" in failed(cloud, settings, "instance-types", "EniQuantity >= 2").saw


def test_a_missing_hook_fails(cloud: FakeCloud, settings: Settings) -> None:
    hooks = cloud.ess.groups[PLAN.scaling_group_id].hooks
    hooks[:] = [h for h in hooks if h.name != "gwlb-fleet-scale-in"]
    result = failed(cloud, settings, "lifecycle-hooks", "run `gwlb-fleet setup`", "eventbus/default")
    assert "gwlb-fleet-scale-in missing" in result.saw


def test_a_hook_with_another_notification_arn_fails(cloud: FakeCloud, settings: Settings) -> None:
    cloud.ess.groups[PLAN.scaling_group_id].hooks[0].notification_arn = ""
    assert "notifies nothing" in failed(cloud, settings, "lifecycle-hooks", "NotificationArn").saw


def test_the_guides_messages_spelling_of_a_target_passes(cloud: FakeCloud, settings: Settings) -> None:
    """F-CMS-7: either spelling of the MNS target is our queue."""
    for targets in cloud.cms.targets.values():
        for target in targets:
            target["Arn"] = target["Arn"].removesuffix("/message") + "/messages"
    assert check(cloud, settings, "alarm-rules").ok


def test_a_rule_without_its_queue_target_fails(cloud: FakeCloud, settings: Settings) -> None:
    cloud.cms.targets["gwlb-fleet-scale-in-flows"] = []
    result = failed(cloud, settings, "alarm-rules", "run `gwlb-fleet setup`")
    assert "gwlb-fleet-scale-in-flows does not push to queue gwlb-fleet-scale-alarms" in result.saw


def test_the_step_failure_rule_needs_its_contact_group_not_a_queue(
    cloud: FakeCloud, settings: Settings
) -> None:
    """The operator's rule is for people: no target (set-up sets none), its contact group named."""
    rule = "gwlb-fleet-step-failures"
    assert rule not in cloud.cms.targets
    result = check(cloud, settings, "alarm-rules")
    assert result.ok and f"{rule} -> contact groups ['gwlb-lab-ops']" in result.saw
    cloud.cms.rules[rule]["ContactGroups"] = "someone-else"
    assert (
        f"{rule} does not notify contact group gwlb-lab-ops"
        in failed(cloud, settings, "alarm-rules", "run `gwlb-fleet setup`").saw
    )
    del cloud.cms.rules[rule]
    assert f"rule {rule} missing" in failed(cloud, settings, "alarm-rules", "run `gwlb-fleet setup`").saw


def test_a_missing_or_doubled_application_group_fails(cloud: FakeCloud, settings: Settings) -> None:
    assert check(cloud, settings, "monitor-group").ok
    cloud.cms.api_create_monitor_group({"GroupName": settings.monitor_group_name})  # F-CMS-11: not unique
    assert "2 application groups" in failed(cloud, settings, "monitor-group", "run `gwlb-fleet setup`").saw
    cloud.cms.monitor_groups.clear()
    assert "(none)" in failed(cloud, settings, "monitor-group", "run `gwlb-fleet setup`").saw


def test_a_missing_dead_letter_queue_fails(cloud: FakeCloud, settings: Settings) -> None:
    del cloud.mns.queues[settings.dead_letter_queue]
    result = failed(cloud, settings, "dead-letter-queue", "run `gwlb-fleet setup`")
    assert f"queue {settings.dead_letter_queue} missing" in result.saw


def test_a_missing_service_role_fails(cloud: FakeCloud, settings: Settings) -> None:
    cloud.ram.roles.discard(FC_ROLE)
    assert f"{FC_ROLE} missing" in failed(cloud, settings, "ram-roles", "authorise the services").saw


def test_a_function_role_not_trusted_by_fc_fails(cloud: FakeCloud, settings: Settings) -> None:
    cloud.ram.trusted_by[FUNCTION_ROLE] = "ecs.aliyuncs.com"
    result = failed(cloud, settings, "ram-roles", f"create {FUNCTION_ROLE} trusted by fc.aliyuncs.com")
    assert "not trusted by fc.aliyuncs.com" in result.saw


def test_a_missing_secret_fails(cloud: FakeCloud, settings: Settings) -> None:
    cloud.kms.secrets.clear()
    result = failed(
        cloud, settings, "secrets", "create it in KMS Secrets Manager", "$GWLB_SETUP_SECRET_PANORAMA_API_KEY"
    )
    assert "(PANORAMA_API_KEY_SECRET) missing" in result.saw


def test_no_panorama_secret_named_fails_for_vm_series(cloud: FakeCloud) -> None:
    settings = Settings.from_environ({**environment(), "PANORAMA_API_KEY_SECRET": ""})
    assert "PANORAMA_API_KEY_SECRET is not set" in failed(cloud, settings, "secrets").saw


def test_reads_are_shared_between_checks(cloud: FakeCloud, settings: Settings) -> None:
    reader = Reader(in_process_apis(cloud), settings)  # type: ignore[arg-type]
    preflight.check_endpoint_zones(reader)
    before = len(cloud.gwlb.calls)
    preflight.check_routes(reader)
    assert len(cloud.gwlb.calls) == before, "the GWLB was read again"


def test_the_deploy_doc_grants_every_read_and_names_every_check() -> None:
    """docs/deploy.md gives the deployer each preflight read and lists each check by its name."""
    from pathlib import Path

    from gwlb_fleet.alibaba import ecs, ess, gwlb, kms, privatelink, vpc

    doc = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    for module in (gwlb, privatelink, vpc, ecs, ess, kms):
        missing = [a for a in sorted(module.PREFLIGHT_RAM_ACTIONS) if f"`{a}`" not in doc]
        assert not missing, f"docs/deploy.md does not grant the deployer {missing}"
    assert all(f"| `{name}` |" in doc for name, _ in preflight.CHECKS)
