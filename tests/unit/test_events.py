"""Every captured-style example under tests/events parses; every bad one names what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from gwlb_fleet.errors import BadEvent
from gwlb_fleet.events import (
    MNS_QUEUE_MESSAGE_TYPE,
    MNS_SOURCE,
    AlarmEvent,
    LifecycleEvent,
    TimerEvent,
    alarm_body,
    alarm_message,
    parse_event,
    parse_events,
    queue_of,
)

EVENTS = Path(__file__).resolve().parents[1] / "events"


def load(name: str) -> bytes:
    return (EVENTS / name).read_bytes()


def test_every_example_parses() -> None:
    examples = sorted(p.name for p in EVENTS.glob("*.json"))
    assert len(examples) >= 12
    for name in examples:
        assert parse_events(load(name))


def test_every_bad_example_is_refused() -> None:
    for path in sorted((EVENTS / "bad").glob("*.json")):
        with pytest.raises(BadEvent):
            parse_events(path.read_bytes())


# --- CloudMonitor alarms through MNS (F-CMS-14, F-FCT-4) ------------------------------------------------


def doc_example_body() -> dict[str, object]:
    """Appendix A.1 of docs/api-facts.md, its ``//`` comments removed (the fixture's messageBody)."""
    event = json.loads(load("mns-cms-alarm-doc-example.json"))
    body = json.loads(event["data"]["messageBody"])
    assert isinstance(body, dict)
    return body


def test_the_documented_example_parses_field_by_field() -> None:
    event = parse_event(load("mns-cms-alarm-doc-example.json"))
    assert isinstance(event, AlarmEvent)
    envelope, message, alarm = event.envelope, event.message, event.alarm
    assert (envelope.source, envelope.type) == (MNS_SOURCE, MNS_QUEUE_MESSAGE_TYPE)
    assert envelope.dedup_key == "acs:mns/bffb9722-9c48-407b-9895-b038f78f****"
    assert event.queue == "zeus" and message.message_id == "C6DB60D1574661357FA227277445****"
    assert (alarm.rule_id, alarm.rule_name) == (
        "putNewAlarm_group_778af9ba-a291-46ab-ac53-3983bcee****",
        "test",
    )
    assert (alarm.cur_level, alarm.pre_level, alarm.alerting) == (
        "WARN",
        "OK",
        True,
    )  # eventName AlertOk: ignored
    assert alarm.resources == alarm.dimensions == {"instanceId": "i-uf61rfofjd2iku7e****"}
    assert alarm.metric_name == "memory_actualusedspace" and alarm.namespace == "acs_ecs_dashboard"
    assert (alarm.period, alarm.group_id, alarm.time_ms, alarm.last_time) == (
        60,
        "12345",
        1534736160000,
        327362743,
    )
    assert alarm.escalation.level == 3 and alarm.escalation.threshold == "0" and alarm.escalation.times == 1
    assert alarm.value == 470687744.0  # metricData[escalation.statistics = Average]
    assert alarm.batch_id == "4272653-152082****-0"
    assert event.dedup_key == (
        "cms-alarm/putNewAlarm_group_778af9ba-a291-46ab-ac53-3983bcee****/4272653-152082****-0/1534736160000/WARN"
    )


def test_the_fixtures_bodies_are_the_documented_example_with_values_changed() -> None:
    """Appendix A: only values change — same field names, same value types."""
    reference = doc_example_body()
    for name in (
        "mns-cms-alarm-scale-out-active-flows.json",
        "mns-cms-alarm-scale-in-ok.json",
        "mns-cms-alarm-gwlb-unhealthy.json",
    ):
        body = json.loads(json.loads(load(name))["data"]["messageBody"])
        assert list(body) == list(reference), name
        assert {k: type(v) for k, v in body.items()} == {k: type(v) for k, v in reference.items()}, name


def test_the_scale_and_health_fixtures() -> None:
    out, ok, gwlb = (
        parse_event(load(name))
        for name in (
            "mns-cms-alarm-scale-out-active-flows.json",
            "mns-cms-alarm-scale-in-ok.json",
            "mns-cms-alarm-gwlb-unhealthy.json",
        )
    )
    assert isinstance(out, AlarmEvent) and isinstance(ok, AlarmEvent) and isinstance(gwlb, AlarmEvent)
    assert out.envelope.source == "MNS-gwlb-fleet-scale-cms-scaling-alarms"  # FC's own source spelling
    assert (out.alarm.rule_name, out.alarm.cur_level, out.alarm.metric_name) == (
        "gwlb-fleet-scale-out-flows",
        "CRITICAL",
        "active_flows",
    )
    assert (
        out.alarm.dimensions == {"groupId": "asg-bp1gwlbfleet0001"} and out.queue == "gwlb-fleet-scale-alarms"
    )
    assert (ok.alarm.cur_level, ok.alarm.pre_level, ok.alarm.alerting) == ("OK", "WARN", False)
    assert gwlb.alarm.namespace == "acs_gwlb" and gwlb.queue == "gwlb-fleet-health-alarms"
    assert gwlb.alarm.dimensions["instanceId"] == "gwlb-bp1example0001"


def test_a_base64_body_is_the_same_alarm_in_another_message() -> None:
    plain = parse_event(load("mns-cms-alarm-scale-out-active-flows.json"))
    encoded = parse_event(load("mns-cms-alarm-base64-body.json"))
    assert isinstance(plain, AlarmEvent) and isinstance(encoded, AlarmEvent)
    assert encoded.alarm == plain.alarm
    assert encoded.envelope.dedup_key != plain.envelope.dedup_key
    assert encoded.dedup_key == plain.dedup_key  # F-FCT-5: one notification, one decision


def test_a_batch_is_a_list_of_events() -> None:
    events = parse_events(load("mns-cms-alarm-batch.json"))
    assert [type(e) for e in events] == [AlarmEvent, AlarmEvent]
    assert len({e.dedup_key for e in events if isinstance(e, AlarmEvent)}) == 2
    with pytest.raises(BadEvent, match="empty list"):
        parse_events(b"[]")
    with pytest.raises(BadEvent) as err:
        parse_events(json.dumps([json.loads(load("mns-cms-alarm-scale-in-ok.json")), 3]).encode())
    assert err.value.field == "[1]"


def test_the_builders_make_what_the_parser_reads() -> None:
    body = alarm_body(
        "rule-1",
        "gwlb-fleet-scale-out-flows",
        "WARN",
        resources={"groupId": "asg-1"},
        metric_name="active_flows",
        namespace="acs_customMetric_1",
        value=42.0,
        time_ms=1000,
        batch_id="b-1",
    )
    assert list(body) == [k for k in doc_example_body() if k not in ("groupBy", "productGroupName")]
    event = parse_event(
        alarm_message(body, queue="q-1", region="cn-hangzhou", account_id="1", event_id="e-1")
    )
    assert isinstance(event, AlarmEvent)
    assert event.envelope.subject == "acs:mns:cn-hangzhou:1:queues/q-1" and event.queue == "q-1"
    assert isinstance(event.envelope.data, dict) and isinstance(event.envelope.data["messageBody"], str)
    assert (event.alarm.rule_name, event.alarm.cur_level, event.alarm.value) == (
        "gwlb-fleet-scale-out-flows",
        "WARN",
        42.0,
    )
    assert (
        event.alarm.dimensions == {"groupId": "asg-1"} and event.dedup_key == "cms-alarm/rule-1/b-1/1000/WARN"
    )


def test_a_bare_data_object_is_read_as_its_message() -> None:
    """eventSchema RawData delivers only ``data`` (F-FCT-4)."""
    data = json.loads(load("mns-cms-alarm-scale-out-active-flows.json"))["data"]
    event = parse_event(data)
    assert isinstance(event, AlarmEvent) and event.envelope.id == data["messageId"]


def test_an_alarm_without_batch_or_time_is_identified_by_its_envelope() -> None:
    body = doc_example_body()
    del body["batchId"], body["time"]
    event = parse_event(alarm_message(body, queue="q", region="r", account_id="1", event_id="only-id"))
    assert isinstance(event, AlarmEvent) and event.dedup_key == "acs:mns/only-id"


@pytest.mark.parametrize(
    ("subject", "queue"),
    [
        ("acs:mns:cn-hangzhou:1234:queues/zeus", "zeus"),
        ("acs:mns:cn-hangzhou:1234:/queues/zeus/messages", "zeus"),
        ("acs:mns:cn-hangzhou:1234:topics/zeus", ""),
        ("", ""),
    ],
)
def test_queue_of_a_subject(subject: str, queue: str) -> None:
    assert queue_of(subject) == queue


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
    event = parse_event(load("mns-cms-alarm-scale-out-active-flows.json"))
    assert isinstance(event, AlarmEvent)
    with pytest.raises(ValidationError, match=r"cur_level\n  Instance is frozen"):
        event.alarm.cur_level = "OK"  # type: ignore[misc]
    with pytest.raises(ValidationError, match=r"\bid\n  Instance is frozen"):
        event.envelope.id = "another"  # type: ignore[misc]
    raw = json.loads(load("mns-cms-alarm-scale-out-active-flows.json"))
    raw["aliyunnewattribute"] = "x"
    raw["data"]["newMessageField"] = "y"
    body = json.loads(raw["data"]["messageBody"])
    body["newAlarmField"] = "z"
    raw["data"]["messageBody"] = json.dumps(body)
    grown = parse_event(raw)
    assert isinstance(grown, AlarmEvent) and grown.alarm == event.alarm
    assert grown.message.message_id == event.message.message_id
    # The envelope keeps ``data`` as it came (the inner model reads it); nothing else is kept.
    assert grown.envelope.model_dump(exclude={"data"}) == event.envelope.model_dump(exclude={"data"})


@pytest.mark.parametrize(
    ("name", "event_id", "field"),
    [
        ("bad/alarm-body-not-json.json", "bad-alarm-1", "data.messageBody"),
        ("bad/alarm-no-cur-level.json", "bad-alarm-2", "data.messageBody.curLevel"),
        ("bad/alarm-resources-not-json.json", "bad-alarm-3", "data.messageBody.resources"),
        ("bad/alarm-unknown-level.json", "bad-alarm-4", "data.messageBody.curLevel"),
        ("bad/lifecycle-no-group.json", "bad-2", "data.scalingGroupId"),
        ("bad/lifecycle-content-no-group.json", "bad-5", "data.content.scalingGroupId"),
        ("bad/lifecycle-pascal-empty-group.json", "bad-6", "data.ScalingGroupId"),
        ("bad/lifecycle-unknown-transition.json", "bad-7", "data.content.lifecycleTransition"),
        ("bad/lifecycle-instance-id-not-text.json", "bad-8", "data.InstanceIds.1"),
        ("bad/lifecycle-content-not-json.json", "bad-9", "data.content"),
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


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("bad/lifecycle-no-group.json", "not in the event"),
        ("bad/lifecycle-content-no-group.json", "not in the event"),
        ("bad/lifecycle-pascal-empty-group.json", "''"),
        ("bad/lifecycle-unknown-transition.json", "'SCALE_SIDEWAYS'"),
        ("bad/lifecycle-instance-id-not-text.json", "42"),
        ("bad/alarm-unknown-level.json", "'ALERT'"),
    ],
)
def test_bad_events_say_the_value_the_event_gave(name: str, said: str) -> None:
    """Issue 13 item 8: the message names the field as the event spells it, and its value."""
    with pytest.raises(BadEvent) as err:
        parse_event(load(name))
    assert str(err.value).startswith(f"{err.value.field}: ")
    assert said in str(err.value)
    assert "scaling_group_id" not in str(err.value) and "instance_ids" not in str(err.value)


@pytest.mark.parametrize(
    ("spelling", "value", "field"),
    [
        ("ScalingGroupId", 7, "data.ScalingGroupId"),
        ("scalingGroupId", ["asg-1"], "data.scalingGroupId"),
        ("LifecycleTransition", "SIDEWAYS", "data.LifecycleTransition"),
        ("lifecycleHookId", 5, "data.lifecycleHookId"),
        ("LifecycleActionToken", {"t": 1}, "data.LifecycleActionToken"),
        ("LifecycleHookName", 1.5, "data.LifecycleHookName"),
        ("defaultResult", 0, "data.defaultResult"),
        ("ScalingActivityId", True, "data.ScalingActivityId"),
        ("activityId", 3, "data.activityId"),
        ("instanceIdList", 3, "data.instanceIdList"),
        ("RequestId", 9, "data.RequestId"),
    ],
)
def test_every_hook_field_is_named_as_the_event_spells_it(spelling: str, value: object, field: str) -> None:
    data: dict[str, object] = {"ScalingGroupId": "asg-1", spelling: value}
    raw = {"specversion": "1.0", "id": "h-1", "source": "acs.ess", "type": "ess:LifecycleHook:ScaleIn"}
    for where, wrapped in ((field, data), (field.replace("data.", "data.content.", 1), {"content": data})):
        with pytest.raises(BadEvent) as err:
            parse_event({**raw, "data": wrapped})
        assert (err.value.field, err.value.event_id) == (where, "h-1")
        assert str(err.value).startswith(f"{where}: ") and repr(value) in str(err.value)


ALARM_FIELDS_BAD = {
    "ruleId": "",
    "ruleName": None,
    "curLevel": "X",
    "preLevel": 3,
    "resources": "{x",
    "escalation": 5,
    "metricData": [1],
    "metricName": 7,
    "namespace": [1],
    "period": "abc",
    "groupId": [1],
    "lastTime": "x",
    "time": "y",
    "userId": [2],
    "eventName": 1,
    "batchId": {"b": 1},
    "version": 2,
    "escalation.level": "z",
    "escalation.times": "w",
    "escalation.threshold": [3],
    "escalation.comparisonOperator": 4,
    "escalation.statistics": 5,
    "escalation.tag": 6,
}


@pytest.mark.parametrize(("key", "value"), list(ALARM_FIELDS_BAD.items()))
def test_every_alarm_field_is_named_by_its_message_body_path_and_value(key: str, value: object) -> None:
    body = alarm_body("rule-1", "scale-out", "WARN", resources={"groupId": "asg-1"}, value=1.0)
    if key.startswith("escalation."):
        body["escalation"] = {**body["escalation"], key.split(".", 1)[1]: value}
    else:
        body[key] = value
    raw = alarm_message(body, queue="gwlb-fleet-scale-alarms", region="cn-hangzhou", account_id="1")
    with pytest.raises(BadEvent) as err:
        parse_event(raw)
    assert err.value.field == f"data.messageBody.{key}"
    assert str(err.value).startswith(f"data.messageBody.{key}: ") and repr(value) in str(err.value)
