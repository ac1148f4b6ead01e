"""``gwlb-fleet preflight`` through the real SDKs (GWLB, PrivateLink, VPC, ECS, ESS, CloudMonitor,
RAM, KMS) against the lab's local OpenAPI endpoint, on the lab's own world after ``gwlb-fleet
setup``: every check passes; breaking one thing fails that check, with its fix, and exit 2; a
service that refuses the caller is an ERROR naming it, exit 1. Preflight only reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from gwlb_fleet import cli
from gwlb_fleet.alibaba import cms, ecs, ess, gwlb, kms, privatelink, ram, vpc
from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.deploy import cloud as deploy_cloud
from gwlb_fleet.deploy import run
from gwlb_fleet.deploy.preflight import CHECKS
from gwlb_fleet.settings import Settings
from gwlb_lab.api import LocalOpenApi
from gwlb_lab.cloud.network import APPLIANCE_GROUP
from tests.preflightworld import PLAN, environment, lab_cloud

pytestmark = pytest.mark.contract

READS = (
    gwlb.PREFLIGHT_CALLS.keys()
    | privatelink.PREFLIGHT_CALLS.keys()
    | vpc.PREFLIGHT_CALLS.keys()
    | ecs.PREFLIGHT_CALLS.keys()
    | ess.PREFLIGHT_CALLS.keys()
    | kms.PREFLIGHT_CALLS.keys()
    | {"DescribeMetricRuleList", "DescribeMetricRuleTargets", "GetRole"}
    | {"DescribeMonitorGroups", "GetQueueAttributes"}  # F-CMS-11, F-MNS-1: reads
)


@pytest.fixture
def cloud() -> FakeCloud:
    return lab_cloud()


@pytest.fixture
def env_file(api: LocalOpenApi, tmp_path: Path) -> Path:
    values = {**environment(), **api.env(), "API_TIMEOUT_S": "5"}
    settings = Settings.from_environ(values)
    run.setup(settings, deploy_cloud.executor(settings, planning=False))  # the hooks, rules, targets
    api.clear()
    path = tmp_path / "preflight.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def preflight(env_file: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, str]]:
    status = cli.main(["preflight", "--env-file", str(env_file)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(CHECKS), lines
    return status, {line.split()[1].rstrip(":"): line for line in lines}


def test_every_check_passes_on_the_labs_world_and_only_reads(
    env_file: Path, api: LocalOpenApi, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines = preflight(env_file, capsys)
    assert all(line.startswith("PASS ") for line in lines.values()), lines
    assert status == 0
    made = {r.action for r in api.requests}
    assert made <= READS, f"preflight made calls that are not its reads: {made - READS}"
    assert {"ListLoadBalancers", "ListVpcEndpointZones", "DescribeRouteEntryList", "DescribeSecret"} <= made
    assert {"DescribeMonitorGroups", "GetQueueAttributes"} <= made  # the group and the dead-letter queue
    entries = api.recorded("DescribeRouteEntryList")
    assert all("NextHopType" not in r.params for r in entries), "F-VPC-1: next hops filtered client-side"
    assert api.recorded("ListServerGroups")[0].params["ServerGroupIds.1"] == PLAN.server_group_id


def test_a_hook_notifying_another_arn_fails(
    env_file: Path, cloud: FakeCloud, capsys: pytest.CaptureFixture[str]
) -> None:
    cloud.ess.groups[PLAN.scaling_group_id].hooks[0].notification_arn = "acs:mns:cn-hangzhou:1:queue/x"
    status, lines = preflight(env_file, capsys)
    assert status == 2
    assert lines["lifecycle-hooks"].startswith("FAIL ")
    assert "acs:mns:cn-hangzhou:1:queue/x" in lines["lifecycle-hooks"]
    assert "fix: run `gwlb-fleet setup`" in lines["lifecycle-hooks"]
    assert sum(line.startswith("FAIL") for line in lines.values()) == 1


def test_a_rule_without_targets_fails(
    env_file: Path, cloud: FakeCloud, capsys: pytest.CaptureFixture[str]
) -> None:
    cloud.cms.targets["gwlb-fleet-unhealthy-servers"] = []
    status, lines = preflight(env_file, capsys)
    assert status == 2
    assert lines["alarm-rules"].startswith("FAIL ")
    assert "gwlb-fleet-unhealthy-servers -> no target" in lines["alarm-rules"]
    assert "gwlb-fleet-health-alarms" in lines["alarm-rules"]


def test_a_security_group_without_6081_fails(
    env_file: Path, cloud: FakeCloud, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = cloud.ecs.security_groups[APPLIANCE_GROUP]
    cloud.ecs.security_groups[APPLIANCE_GROUP] = [r for r in rules if r["IpProtocol"] != "UDP"]
    status, lines = preflight(env_file, capsys)
    assert status == 2
    assert lines["security-groups"].startswith("FAIL ")
    assert (
        f"fix: add inbound Accept rules to {APPLIANCE_GROUP}: UDP 6081/6081 from 198.19.0.0/25"
        in (lines["security-groups"])
    )


def test_a_refused_read_is_an_error_naming_the_service(
    env_file: Path, cloud: FakeCloud, capsys: pytest.CaptureFixture[str]
) -> None:
    cloud.vpc.fail_next = ["Forbidden.RAM"]
    status, lines = preflight(env_file, capsys)
    assert status == 1
    assert lines["route-tables"].startswith("ERROR route-tables: could not look: vpc DescribeRouteTableList:")
    assert "Forbidden.RAM" in lines["route-tables"]


def test_the_lab_refuses_a_next_hop_filter_the_model_does_not_list(api: LocalOpenApi, env_file: Path) -> None:
    """F-VPC-1: the filter's enumeration has no GatewayLoadBalancerEndpoint; the endpoint says so."""
    from gwlb_fleet.deadline import Deadline
    from gwlb_fleet.errors import PermanentError

    settings = Settings.from_environ(cli.read_env_file(env_file))
    reads = vpc.preflight_api(settings)
    params = {
        "RegionId": PLAN.region,
        "RouteTableId": "vtb-lab-business-h",
        "NextHopType": "GatewayLoadBalancerEndpoint",
    }
    with pytest.raises(PermanentError) as refused:
        reads.invoke("DescribeRouteEntryList", params, Deadline.after(10))
    assert refused.value.code == "InvalidParameter"
    with pytest.raises(PermanentError) as missing:
        reads.invoke("DescribeRouteEntryList", {"RouteTableId": "vtb-lab-business-h"}, Deadline.after(10))
    assert missing.value.code == "MissingParameter"


def test_preflight_actions_are_not_the_functions() -> None:
    """Deployer-only reads: none of them is in the functions' RAM_ACTIONS (their policy)."""
    for module in (gwlb, privatelink, vpc, ecs, ess, kms, cms, ram):
        functions = getattr(module, "RAM_ACTIONS", frozenset())
        assert not functions & getattr(module, "PREFLIGHT_RAM_ACTIONS", frozenset()), module.__name__
