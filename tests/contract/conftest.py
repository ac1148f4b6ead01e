"""Fixtures the contract tests share: a fleet seeded in a fake cloud (``cloud``), the lab's local
OpenAPI endpoint over it (``api``) and the settings that reach it (``settings``). A module gives its
own ids by overriding ``fleet_ids``, or its own world by overriding ``cloud``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.settings import Settings
from gwlb_lab.api import LocalOpenApi
from tests.contract.fleet import CONTACT_GROUP, FleetIds, environment, seeded_cloud


@pytest.fixture
def fleet_ids() -> FleetIds:
    return FleetIds("asg-deploy", "sgp-deploy", "lsn-deploy")


@pytest.fixture
def cloud(fleet_ids: FleetIds) -> FakeCloud:
    return seeded_cloud(fleet_ids)


@pytest.fixture
def api(cloud: FakeCloud) -> Iterator[LocalOpenApi]:
    with LocalOpenApi(cloud) as local:
        yield local


@pytest.fixture
def settings(api: LocalOpenApi, fleet_ids: FleetIds) -> Settings:
    return Settings.from_environ(environment(api, fleet_ids, ALARM_CONTACT_GROUP=CONTACT_GROUP))
