"""Settings take only queue names MNS takes (F-MNS-1, F-MNS-4: a letter first, letters/digits/``-``,
at most 120), so set-up never sends a name the lab (or MNS) refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gwlb_fleet.alibaba.fakes.mns import QUEUE_NAME, QUEUE_NAME_MAX
from gwlb_fleet.settings import Settings

BASE = {
    "FLEET_REGION": "cn-hangzhou",
    "SCALING_GROUP_ID": "asg-1",
    "GWLB_SERVER_GROUP_ID": "sgp-1",
    "GWLB_LISTENER_ID": "lsn-1",
}
VARIABLES = ["SCALE_ALARM_QUEUE", "HEALTH_ALARM_QUEUE", "DEAD_LETTER_QUEUE"]


@pytest.mark.parametrize("variable", VARIABLES)
@pytest.mark.parametrize("name", ["1alarms", "-alarms", "alarms_1", "a" * 121])
def test_settings_refuse_what_mns_refuses(variable: str, name: str) -> None:
    assert not (QUEUE_NAME.fullmatch(name) and len(name) <= QUEUE_NAME_MAX)  # the lab refuses it too
    with pytest.raises(ValidationError):
        Settings.from_environ({**BASE, variable: name})


@pytest.mark.parametrize("variable", VARIABLES)
@pytest.mark.parametrize("name", ["a", "Alarms-1", "a" * 120])
def test_settings_take_what_mns_takes(variable: str, name: str) -> None:
    assert QUEUE_NAME.fullmatch(name) and len(name) <= QUEUE_NAME_MAX
    settings = Settings.from_environ({**BASE, variable: name})
    assert name in (settings.scale_alarm_queue, settings.health_alarm_queue, settings.dead_letter_queue)
