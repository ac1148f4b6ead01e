"""What the contract tests that set up a fleet share: its ids, the fake cloud seeded with it (the
service roles and the contact group set-up needs), and the environment its settings are read from.
The fixtures in tests/contract/conftest.py build on these; a module names its own ids by overriding
the ``fleet_ids`` fixture."""

from __future__ import annotations

from dataclasses import dataclass

from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.alibaba.ram import SERVICE_ROLES
from gwlb_lab.api import LocalOpenApi

ACCOUNT = "1234567890123456"
CONTACT_GROUP = "gwlb-ops"


@dataclass(frozen=True)
class FleetIds:
    group: str
    server_group: str
    listener: str


def seeded_cloud(ids: FleetIds) -> FakeCloud:
    fake = FakeCloud()
    fake.seed_fleet(ids.group, ids.server_group, ids.listener, hooks=False)
    fake.ram.roles.update(SERVICE_ROLES)
    fake.cms.contact_groups.append(CONTACT_GROUP)
    return fake


def environment(api: LocalOpenApi, ids: FleetIds, **more: str) -> dict[str, str]:
    return {
        **api.env(),
        "FLEET_REGION": "cn-hangzhou",
        "SCALING_GROUP_ID": ids.group,
        "GWLB_SERVER_GROUP_ID": ids.server_group,
        "GWLB_LISTENER_ID": ids.listener,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "id",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "secret",
        "ACCOUNT_ID": ACCOUNT,
        **more,
    }
