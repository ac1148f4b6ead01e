"""Every captured-style example under tests/events parses; every bad one names what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from gwlb_fleet.errors import BadEvent
from gwlb_fleet.events import AlarmEvent, LifecycleEvent, TimerEvent, parse_event

EVENTS = Path(__file__).resolve().parents[1] / "events"


def load(name: str) -> bytes:
    return (EVENTS / name).read_bytes()


def test_every_example_parses() -> None:
    examples = sorted(p.name for p in EVENTS.glob("*.json"))
    assert len(examples) >= 8
    for name in examples:
        parse_event(load(name))


def test_alarm_with_string_value_and_dimensions() -> None:
    event = parse_event(load("cms-alarm-active-flows.json"))
    assert isinstance(event, AlarmEvent)
    alarm = event.alarm
    assert (alarm.alert_name, alarm.alert_state, alarm.cur_value) == (
        "gwlb-fleet-scale-out-flows",
        "ALERT",
        182340.0,
    )
    assert alarm.dimensions == {"groupId": "asg-bp1gwlbfleet0001", "userId": "1234567890123456"}
    assert alarm.metric_name == "active_flows" and alarm.trigger_level == "WARN"
    assert event.envelope.dedup_key == "acs.cms/45ef4dewdwe1-7c35-447a-bd93-fab****"
    assert event.envelope.aliyunregionid == "cn-hangzhou"


def test_alarm_with_numbers_and_an_object() -> None:
    event = parse_event(load("cms-alarm-ok-object-dimensions.json"))
    assert isinstance(event, AlarmEvent)
    assert event.alarm.cur_value == 12.5 and event.alarm.dimensions == {"instanceId": "i-bp1appliance0002"}
    assert event.alarm.alert_state == "OK"


def test_lifecycle_hook_lower_camel_case() -> None:
    event = parse_event(load("ess-lifecycle-scale-out.json"))
    assert isinstance(event, LifecycleEvent)
    hook = event.hook
    assert (hook.hook_id, hook.token, hook.transition) == (
        "ash-bp1launchhook0001",
        "6B4D3F2C-1A0B-4C8D-9E7F-5A6B7C8D9E0F",
        "SCALE_OUT",
    )
    assert hook.instance_ids == ("i-bp1appliance0003",) and hook.activity_id == "asa-bp1activity00001"


def test_lifecycle_hook_under_content_as_mns_delivers_it() -> None:
    event = parse_event(load("ess-lifecycle-scale-in-content.json"))
    assert isinstance(event, LifecycleEvent)
    assert event.hook.transition == "SCALE_IN" and event.hook.instance_ids == ("i-bp1appliance0001",)


def test_lifecycle_hook_upper_camel_case_and_comma_separated_ids() -> None:
    event = parse_event(load("ess-lifecycle-pascal-case.json"))
    assert isinstance(event, LifecycleEvent)
    assert event.hook.instance_ids == ("i-bp1appliance0004", "i-bp1appliance0005")
    assert event.hook.token == "AAAA1111-2222-3333-4444-555566667777"


def test_lifecycle_hook_without_token_takes_the_transition_from_the_type() -> None:
    event = parse_event(load("ess-lifecycle-no-token.json"))
    assert isinstance(event, LifecycleEvent)
    assert event.hook.token == "" and event.hook.transition == "SCALE_IN"
    assert event.hook.activity_id == "asa-bp1activity00004"  # enough to recover the token


def test_hook_test_event() -> None:
    event = parse_event(load("ess-lifecycle-test.json"))
    assert isinstance(event, LifecycleEvent) and event.hook.transition == "SCALE_OUT"


def test_timer() -> None:
    event = parse_event(load("timer-reconcile.json"))
    assert isinstance(event, TimerEvent)
    assert event.dedup_key == "timer/reconcile-every-minute/2026-11-21T09:35:00Z"


def test_envelopes_ignore_unknown_fields_and_models_are_frozen() -> None:
    event = parse_event(load("cms-alarm-active-flows.json"))
    assert isinstance(event, AlarmEvent)
    with pytest.raises(ValidationError, match=r"alert_state\n  Instance is frozen"):
        event.alarm.alert_state = "OK"  # type: ignore[misc]
    with pytest.raises(ValidationError, match=r"\bid\n  Instance is frozen"):
        event.envelope.id = "another"  # type: ignore[misc]
    raw = json.loads(load("cms-alarm-active-flows.json"))
    raw["aliyunnewattribute"] = "x"
    raw["data"]["newAlarmField"] = "y"
    grown = parse_event(raw)
    assert isinstance(grown, AlarmEvent) and grown.alarm == event.alarm
    # The envelope keeps ``data`` as it came (the inner model reads it); nothing else is kept.
    assert grown.envelope.model_dump(exclude={"data"}) == event.envelope.model_dump(exclude={"data"})


@pytest.mark.parametrize(
    ("name", "event_id", "field"),
    [
        ("bad/alarm-bad-state.json", "bad-1", "data.alertState"),
        ("bad/lifecycle-no-group.json", "bad-2", "data.scaling_group_id"),
        ("bad/envelope-no-id.json", "", "id"),
        ("bad/unknown-type.json", "bad-4", "type"),
        ("bad/not-json.json", "", ""),
    ],
)
def test_bad_events_name_the_field_and_the_event(name: str, event_id: str, field: str) -> None:
    with pytest.raises(BadEvent) as err:
        parse_event(load(name))
    assert err.value.event_id == event_id
    assert err.value.field == field
    assert str(err.value)
