"""The lab's account for preflight tests: the fleet, the network and roles the lab seeds
(gwlb_lab.cloud.network), a contact group and Panorama's secret, then ``gwlb-fleet setup`` run
over it, so that every check has what it looks for. ``InProcessApi`` answers a describe call from
the lab's local OpenAPI endpoint without HTTP (the unit tests); the contract test goes through the
real SDKs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from gwlb_fleet.alibaba.errors import error_for
from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.deploy import run
from gwlb_fleet.settings import Settings
from gwlb_lab.api import LocalOpenApi, cms, ecs, ess, gwlb, kms, mns, privatelink, ram, vpc
from gwlb_lab.cloud.config import PANORAMA_KEY_SECRET, FleetPlan
from gwlb_lab.cloud.network import seed_account

PLAN = FleetPlan()
ACCOUNT = "1234567890123456"
CONTACT_GROUP = "gwlb-lab-ops"
VERSIONS = {m.PRODUCT: m.VERSION for m in (cms, ecs, ess, gwlb, kms, mns, privatelink, ram, vpc)}


def lab_cloud() -> FakeCloud:
    cloud = FakeCloud()
    cloud.seed_fleet(PLAN.scaling_group_id, PLAN.server_group_id, PLAN.listener_id, hooks=False)
    seed_account(cloud, PLAN)
    cloud.cms.contact_groups.append(CONTACT_GROUP)
    cloud.kms.put_secret(PANORAMA_KEY_SECRET, "lab-panorama-key")
    return cloud


def environment() -> dict[str, str]:
    return {
        "FLEET_REGION": PLAN.region,
        "SCALING_GROUP_ID": PLAN.scaling_group_id,
        "GWLB_SERVER_GROUP_ID": PLAN.server_group_id,
        "GWLB_LISTENER_ID": PLAN.listener_id,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "lab-access-key",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "lab-access-secret",
        "ACCOUNT_ID": ACCOUNT,
        "ALARM_CONTACT_GROUP": CONTACT_GROUP,
        "PANORAMA_API_KEY_SECRET": PANORAMA_KEY_SECRET,
    }


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """RPC parameters as the Tea SDKs put them on the wire: ``Name.1``, ``Name.1.Field``."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            for index, item in enumerate(value, 1):
                if isinstance(item, Mapping):
                    flat.update(flatten(item, f"{name}.{index}."))
                else:
                    flat[f"{name}.{index}"] = str(item)
        elif isinstance(value, bool):
            flat[name] = "true" if value else "false"
        else:
            flat[name] = str(value)
    return flat


class InProcessApi:
    """``gwlb_fleet.deploy.run.Api`` over the lab endpoint's ``answer``: no socket."""

    def __init__(self, local: LocalOpenApi, service: str) -> None:
        self.local, self.service = local, service

    def invoke(self, action: str, params: Mapping[str, Any], deadline: Deadline) -> dict[str, Any]:
        headers = {"x-acs-action": action, "x-acs-version": VERSIONS[self.service]}
        answer = self.local.answer("POST", "/?" + urlencode(flatten(params)), headers, b"")
        body: dict[str, Any] = json.loads(answer.body)
        if answer.status >= 400:
            raise error_for(self.service, action, body["Code"], body["Message"], answer.status)
        return body


def in_process_apis(cloud: FakeCloud) -> dict[str, InProcessApi]:
    local = LocalOpenApi(cloud)
    return {service: InProcessApi(local, service) for service in VERSIONS}


def set_up(cloud: FakeCloud, settings: Settings) -> None:
    """``gwlb-fleet setup``'s own code over the fakes: queues, rules and targets, hooks."""
    run.setup(settings, run.Executor(in_process_apis(cloud)))  # type: ignore[arg-type]
