"""What FC's triggers deliver, as models.

FC hands a handler ``bytes``. EventBridge wraps each event in a CloudEvents 1.0 envelope with
Alibaba's ``aliyun*`` extensions; the envelope ignores fields it does not know, the inner models
are frozen. Four shapes:

- CloudMonitor metric alarms. CloudMonitor has no EventBridge alarm event (F-EB-1): a rule's
  target writes the alarm to an MNS queue (F-CMS-7), and an FC ``eventbridge`` trigger with
  source type MNS reads the queue (F-FCT-1). Each message reaches the function as a CloudEvent of
  type ``mns:Queue:SendMessage`` whose ``data.messageBody`` is the alarm as a JSON *string*
  (F-FCT-4, F-CMS-14): ``AlarmEvent`` = envelope + ``MnsMessage`` + frozen ``AlarmBody``.
  ``alarm_body`` and ``alarm_message`` build the same shapes for the lab and the tests.
- ESS lifecycle hooks (``acs.ess``, ``ess:LifecycleHook:ScaleOut|ScaleIn|Test``). Their ``data``
  is not documented; we accept the names of ESS's lifecycle notifications (lower camel case, as
  MNS delivers them, possibly under ``content``) and their upper camel case API spelling. What is
  missing (a lost token) the flow recovers with ``DescribeLifecycleActions``.
- The timer trigger: ``{"triggerTime", "triggerName", "payload"}``, no envelope.
- A workflow's own continuation (``gwlb-fleet:Flow:Continue``).

``parse_event`` takes one event, ``parse_events`` also a batch (a JSON list: the event-streaming
form of the queue trigger, F-FCT-4); both raise ``BadEvent`` naming the field as the event spells
it (``data.messageBody.curLevel``) and the event's id.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from gwlb_fleet.errors import BadEvent

# The event types and sources EventBridge delivers; the lab and the tests build events with them.
LIFECYCLE_SOURCE = "acs.ess"
LIFECYCLE_TYPES = {
    "ess:LifecycleHook:ScaleOut": "SCALE_OUT",
    "ess:LifecycleHook:ScaleIn": "SCALE_IN",
    "ess:LifecycleHook:Test": "TEST",
}
LIFECYCLE_TYPE_OF = {transition: type_ for type_, transition in LIFECYCLE_TYPES.items()}
# A message of an MNS queue, as the queue trigger delivers it (F-FCT-4). The EventBridge sample
# says source ``acs:mns``; FC's own trigger samples carry ``MNS-<function>-<trigger>`` (the event
# source FC creates, F-FCT-7): the type, not the source, says what the event is.
MNS_SOURCE = "acs:mns"
MNS_QUEUE_MESSAGE_TYPE = "mns:Queue:SendMessage"
# CloudMonitor's alarm levels in the message body (F-CMS-18: CRITICAL|WARN|INFO are the rule
# levels, OK is "recovered"; any other value is refused). The first three mean "alerting".
ALARM_LEVELS = ("CRITICAL", "WARN", "INFO", "OK")
ALERT_LEVELS = frozenset({"CRITICAL", "WARN", "INFO"})


class CloudEvent(BaseModel):
    """The CloudEvents 1.0 envelope, with Alibaba's extension attributes."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    specversion: str = "1.0"
    subject: str = ""
    time: str = ""
    datacontenttype: str = "application/json"
    data: Any = None
    aliyunaccountid: str = ""
    aliyunregionid: str = ""
    aliyuneventbusname: str = ""
    aliyunpublishtime: str = ""
    aliyunoriginalaccountid: str = ""

    @property
    def dedup_key(self) -> str:
        """EventBridge's identity of an event: (source, id)."""
        return f"{self.source}/{self.id}"


# --- CloudMonitor alarms, through an MNS queue ------------------------------------------------------

AlarmLevel = Literal["CRITICAL", "WARN", "INFO", "OK"]


def trigger_source(function_name: str, trigger_name: str) -> str:
    """The ``source`` FC's queue trigger gives its events (F-FCT-7)."""
    return f"MNS-{function_name}-{trigger_name}"


def queue_subject(region: str, account_id: str, queue: str) -> str:
    """The ``subject`` of a queue message's CloudEvent (F-FCT-4)."""
    return f"acs:mns:{region}:{account_id}:queues/{queue}"


def queue_of(subject: str) -> str:
    """The queue name in a CloudEvent's ``subject``; "" if it is not a queue's."""
    match = re.fullmatch(r"acs:mns:[^:]*:[^:]*:/?queues/([^/]+)(?:/.*)?", subject)
    return match.group(1) if match else ""


def _resources(value: Any) -> Any:
    """``resources`` is a JSON string (F-CMS-14): ``"{\"instanceId\": \"i-...\"}"``; an object (or
    a list of them) is taken as it is. Anything else is not the documented field."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError("not a JSON string (F-CMS-14: resources is JSON text)") from None
    if isinstance(value, list):  # [{"instanceId": "i-abc"}, ...]
        merged: dict[str, Any] = {}
        for item in value:
            if not isinstance(item, Mapping):
                raise ValueError("a list of something other than objects")
            merged.update(item)
        value = merged
    if not isinstance(value, Mapping):
        raise ValueError(f"a JSON {type(value).__name__}, not an object")
    return {str(k): str(v) for k, v in value.items()}


def _metric_name(value: Any) -> Any:
    """``memory_actualusedspace#60`` (F-CMS-14): the name without the ``#period`` suffix."""
    return re.sub(r"#\d+$", "", value) if isinstance(value, str) else value


def _text(value: Any) -> Any:
    """A field documented as a string that may come as a number (``groupId``, ``threshold``)."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _integer(value: Any) -> Any:
    """``period: "60"``, ``time: 1534736160000`` (F-CMS-14): numbers, sometimes as strings."""
    if isinstance(value, str):
        return int(value.strip()) if value.strip() else None
    return value


Text = Annotated[str, BeforeValidator(_text)]
Integer = Annotated[int | None, BeforeValidator(_integer)]


class Escalation(BaseModel):
    """The condition that fired (F-CMS-14): ``level`` is a number, ``threshold`` a string."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    comparison_operator: str = Field("", alias="comparisonOperator")
    level: Integer = None
    statistics: str = ""
    tag: str = ""
    threshold: Text = ""
    times: Integer = None


class AlarmBody(BaseModel):
    """CloudMonitor's alarm message body (F-CMS-14, Appendix A.1). Missing optional fields and
    extra ones are tolerated; the rule, its name and the current level are required (F-CMS-18).
    State comes from ``curLevel`` only: the documented example pairs ``WARN`` with
    ``eventName: AlertOk``."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    rule_id: str = Field(alias="ruleId", min_length=1)
    rule_name: str = Field(alias="ruleName", min_length=1)
    cur_level: AlarmLevel = Field(alias="curLevel")
    pre_level: str = Field("", alias="preLevel")  # informative only: never decides anything
    resources: Annotated[dict[str, str], BeforeValidator(_resources)] = Field(default_factory=dict)
    escalation: Escalation = Field(default_factory=Escalation)
    metric_data: dict[str, Any] = Field(default_factory=dict, alias="metricData")
    metric_name: Annotated[str, BeforeValidator(_metric_name)] = Field("", alias="metricName")
    namespace: str = ""
    period: Integer = None
    group_id: Text = Field("", alias="groupId")
    batch_id: Text = Field("", alias="batchId")
    time_ms: Integer = Field(None, alias="time")
    last_time: Integer = Field(None, alias="lastTime")
    user_id: Text = Field("", alias="userId")
    event_name: str = Field("", alias="eventName")
    version: str = ""

    @property
    def alerting(self) -> bool:
        return self.cur_level in ALERT_LEVELS

    @property
    def dimensions(self) -> dict[str, str]:
        """The body has no ``dimensions`` field: the alarm's resources are its dimensions
        (Appendix B, F-CMS-14)."""
        return dict(self.resources)

    @property
    def value(self) -> float | None:
        """The value the rule compared: ``metricData[<escalation.statistics>]`` (``Average`` in
        the documented example, ``Value`` for acs_gwlb), else the only statistic there is."""
        data = self.metric_data
        candidates = [self.escalation.statistics] if self.escalation.statistics else []
        candidates += [k for k in ("Value", "Average", "Maximum", "Minimum", "Sum") if k in data]
        for key in candidates:
            number = data.get(key)
            if isinstance(number, int | float) and not isinstance(number, bool):
                return float(number)
        return None

    @property
    def identity(self) -> str:
        """One alarm notification, whichever MNS message carries it (F-FCT-5, F-FCT-7): the rule, its batch
        (CloudMonitor's trace id), the time and the level. Without batch and time there is
        nothing to tell two notifications apart: "" (the envelope's identity is used instead)."""
        if not self.batch_id and self.time_ms is None:
            return ""
        return f"cms-alarm/{self.rule_id}/{self.batch_id}/{self.time_ms}/{self.cur_level}"


class MnsMessage(BaseModel):
    """``data`` of a queue message (F-FCT-4); ``messageBody`` is text."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    request_id: str = Field("", alias="requestId")
    message_id: str = Field("", alias="messageId")
    message_body: str = Field(alias="messageBody")


def _message_body(body: Any) -> Any:
    """The alarm JSON in ``messageBody``: text (IsBase64Decode false, F-FCT-2), base64 text of it
    (a trigger left with the default IsBase64Decode true, or a producer that encodes; F-FCT-4), or
    an object already. ``ValueError`` when it is none of them."""
    if isinstance(body, Mapping):
        return dict(body)
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        pass
    try:
        return json.loads(base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError):
        raise ValueError("not JSON, nor base64 of JSON (F-CMS-14: the alarm is a JSON text)") from None


def alarm_body(
    rule_id: str,
    rule_name: str,
    cur_level: str,
    *,
    pre_level: str = "OK",
    resources: Mapping[str, str] | None = None,
    metric_name: str = "",
    namespace: str = "",
    statistics: str = "Average",
    comparison_operator: str = "GreaterThanOrEqualToThreshold",
    threshold: float | str = 0,
    times: int = 1,
    value: float | None = None,
    period_s: int = 60,
    time_ms: int = 0,
    batch_id: str = "",
    user_id: str = "",
    group_id: str = "",
) -> dict[str, Any]:
    """An alarm message body as CloudMonitor writes it (F-CMS-14, the field names and value types
    of Appendix A.1): ``resources`` as JSON text, ``period`` and ``groupId`` as strings, the
    escalation's ``level`` as a number and ``threshold`` as a string, the value in ``metricData``
    under the rule's statistic."""
    resources = dict(resources or {})
    metric_data: dict[str, Any] = {"timestamp": time_ms, "userId": user_id, **resources}
    if value is not None:
        metric_data[statistics] = value
    return {
        "ruleId": rule_id,
        "ruleName": rule_name,
        "curLevel": cur_level,
        "preLevel": pre_level,
        "resources": json.dumps(resources),
        "escalation": {
            "comparisonOperator": comparison_operator,
            "level": {"CRITICAL": 4, "WARN": 3, "INFO": 2}.get(cur_level, 0),  # A.1: WARN is 3
            "statistics": statistics,
            "tag": cur_level,
            "threshold": f"{threshold:g}" if isinstance(threshold, int | float) else threshold,
            "times": times,
        },
        "metricData": metric_data,
        "metricName": metric_name,
        "namespace": namespace,
        "period": str(period_s),
        "groupId": group_id,
        "lastTime": 0,
        "time": time_ms,
        "userId": user_id,
        "eventName": "AlertOk" if cur_level == "OK" else "Alert",
        "eventType": "Alert",
        "batchId": batch_id or str(uuid.uuid4()),
        "version": "1.0",
    }


def alarm_message(
    body: Mapping[str, Any] | str,
    *,
    queue: str,
    region: str,
    account_id: str,
    source: str = MNS_SOURCE,
    event_id: str = "",
    message_id: str = "",
    request_id: str = "",
    time: str = "2026-11-21T09:30:00.000Z",
    event_bus: str = "",
) -> dict[str, Any]:
    """The CloudEvent FC's queue trigger delivers for one message of ``queue`` whose body is
    ``body`` (F-FCT-4): ``data.messageBody`` is the body as JSON text."""
    text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    message_id = message_id or uuid.uuid4().hex.upper()
    return {
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "specversion": "1.0",
        "type": MNS_QUEUE_MESSAGE_TYPE,
        "datacontenttype": "application/json; charset=utf-8",
        "subject": queue_subject(region, account_id, queue),
        "time": time,
        "aliyunaccountid": account_id,
        "aliyunpublishtime": time,
        "aliyuneventbusname": event_bus or source,
        "aliyunregionid": region,
        "data": {
            "requestId": request_id or uuid.uuid4().hex.upper()[:24],
            "messageId": message_id,
            "messageBody": text,
        },
    }


# --- ESS lifecycle hooks -----------------------------------------------------------------------------

# Each field's accepted spellings, first match wins.
_HOOK_FIELDS: dict[str, tuple[str, ...]] = {
    "hook_id": ("lifecycleHookId", "LifecycleHookId"),
    "hook_name": ("lifecycleHookName", "LifecycleHookName"),
    "token": ("lifecycleActionToken", "LifecycleActionToken"),
    "scaling_group_id": ("scalingGroupId", "ScalingGroupId"),
    "transition": ("lifecycleTransition", "LifecycleTransition"),
    "default_result": ("defaultResult", "DefaultResult"),
    "activity_id": ("scalingActivityId", "ScalingActivityId", "activityId"),
    "instance_ids": ("instanceIds", "InstanceIds", "instanceIdList"),
    "request_id": ("requestId", "RequestId"),
}


class LifecycleHookData(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    hook_id: str = ""
    hook_name: str = ""
    token: str = ""
    scaling_group_id: str = Field(min_length=1)
    transition: Literal["SCALE_OUT", "SCALE_IN", "TEST"]
    default_result: str = ""
    activity_id: str = ""
    instance_ids: tuple[str, ...] = ()
    request_id: str = ""


# What a hook event left out: named as absent, not with a value.
_ABSENT = object()


def _hook_fields(data: Mapping[str, Any], event_id: str) -> tuple[dict[str, Any], dict[str, tuple[str, Any]]]:
    """The hook's fields, and where the event has each: its own path (``data.content.scalingGroupId``,
    ``data.ScalingGroupId``; the first accepted spelling for one it lacks) and the value there."""
    if "content" in data:
        body, prefix = data["content"], "data.content."
        if isinstance(body, str):
            try:
                body = json.loads(body)
            except json.JSONDecodeError as exc:
                where = "data.content"
                raise BadEvent(f"{where}: not JSON ({exc}): {_shown(body)}", where, event_id) from None
        if not isinstance(body, Mapping):
            where = "data.content"
            message = f"{where}: a JSON {type(body).__name__}, not an object: {_shown(body)}"
            raise BadEvent(message, where, event_id)
    else:
        body, prefix = data, "data."
    found: dict[str, Any] = {}
    places: dict[str, tuple[str, Any]] = {}
    for name, spellings in _HOOK_FIELDS.items():
        present = [spelling for spelling in spellings if spelling in body]
        used = next((spelling for spelling in present if body[spelling] not in (None, "")), None)
        if used is not None:
            found[name] = body[used]
            places[name] = (prefix + used, body[used])
        elif present:  # spelled, but empty
            places[name] = (prefix + present[0], body[present[0]])
        else:
            places[name] = (prefix + spellings[0], _ABSENT)
    ids = found.get("instance_ids")
    if isinstance(ids, str):  # "i-a,i-b" or '["i-a"]'
        try:
            found["instance_ids"] = (
                json.loads(ids) if ids.startswith("[") else [i for i in ids.split(",") if i]
            )
        except json.JSONDecodeError:
            where = places["instance_ids"][0]
            raise BadEvent(f"{where}: not a list of instance ids: {_shown(ids)}", where, event_id) from None
    return found, places


# --- the timer ------------------------------------------------------------------------------------------


class TimerEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    trigger_time: str = Field(alias="triggerTime", min_length=1)
    trigger_name: str = Field(alias="triggerName", min_length=1)
    payload: str = ""

    @property
    def dedup_key(self) -> str:
        return f"timer/{self.trigger_name}/{self.trigger_time}"


# --- continuations: a flow waking itself up -------------------------------------------------------------

CONTINUE_TYPE = "gwlb-fleet:Flow:Continue"
CONTINUE_SOURCE = "gwlb-fleet"
# The function whose handler takes ContinueEvent (gwlb_functions.lifecycle): where the scheduler's
# adapters (gwlb_fleet.alibaba.fc and its fake) deliver a workflow's follow-ups.
CONTINUE_FUNCTION = "lifecycle"


class ContinueData(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    instance_id: str = Field(min_length=1)
    reason: str = ""


class ContinueEvent(BaseModel):
    """A flow that must wait (an appliance booting, a member draining) schedules this to itself
    through FC's delayed async invocation instead of sleeping; the timer is the safety net."""

    model_config = ConfigDict(frozen=True)
    envelope: CloudEvent
    work: ContinueData


def continuation(instance_id: str, reason: str, event_id: str) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": CONTINUE_SOURCE,
            "type": CONTINUE_TYPE,
            "data": {"instance_id": instance_id, "reason": reason},
        }
    ).encode()


# --- parsing --------------------------------------------------------------------------------------------


class AlarmEvent(BaseModel):
    """A CloudMonitor alarm: the queue message's envelope, the message, the alarm in it."""

    model_config = ConfigDict(frozen=True)
    envelope: CloudEvent
    message: MnsMessage
    alarm: AlarmBody

    @property
    def queue(self) -> str:
        return queue_of(self.envelope.subject)

    @property
    def audit_inputs(self) -> dict[str, Any]:
        """What a decision on this alarm was made from, for the audit log."""
        alarm = self.alarm
        return {
            "alarm": alarm.rule_name,
            "rule_id": alarm.rule_id,
            "level": alarm.cur_level,
            "previous_level": alarm.pre_level,
            "metric": alarm.metric_name,
            "namespace": alarm.namespace,
            "value": alarm.value,
            "dimensions": alarm.dimensions,
            "batch_id": alarm.batch_id,
            "message_id": self.message.message_id,
        }

    @property
    def dedup_key(self) -> str:
        """The alarm's own identity when it has one, so that the same notification written twice
        (two MNS messages, two envelopes) is one decision; else the envelope's (F-FCT-5)."""
        return self.alarm.identity or self.envelope.dedup_key


class LifecycleEvent(BaseModel):
    model_config = ConfigDict(frozen=True)
    envelope: CloudEvent
    hook: LifecycleHookData


Event = AlarmEvent | LifecycleEvent | TimerEvent | ContinueEvent


def decode(raw: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    value = _json(raw)
    if not isinstance(value, dict):
        raise BadEvent(f"the event is a JSON {type(value).__name__}, not an object")
    return value


def _json(raw: bytes | str | Mapping[str, Any]) -> Any:
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadEvent(f"the event is not JSON: {exc}") from None


def parse_events(raw: bytes | str | Mapping[str, Any]) -> list[Event]:
    """One event, or a batch: the queue trigger in event-streaming mode pushes a JSON list of
    CloudEvents (F-FCT-4). Every element must parse; BadEvent names the first that does not."""
    value = _json(raw)
    if isinstance(value, list):
        if not value:
            raise BadEvent("the event is an empty list")
        events = []
        for n, item in enumerate(value):
            if not isinstance(item, dict):
                raise BadEvent(f"[{n}]: a JSON {type(item).__name__}, not an object", f"[{n}]")
            events.append(parse_event(item))
        return events
    return [parse_event(value)]


def parse_event(raw: bytes | str | Mapping[str, Any]) -> Event:
    """The event FC delivered, as a model; BadEvent names what is wrong."""
    data = decode(raw)
    if "triggerTime" in data and "specversion" not in data:
        return _validate(TimerEvent, data, "")
    if "messageBody" in data and "specversion" not in data:
        # eventSchema RawData delivers ``data`` alone (F-FCT-4): its message id is the only id.
        data = {
            "id": str(data.get("messageId", "")),
            "source": MNS_SOURCE,
            "type": MNS_QUEUE_MESSAGE_TYPE,
            "data": data,
        }
    envelope = _validate(CloudEvent, data, str(data.get("id", "")))
    if envelope.type in LIFECYCLE_TYPES:
        if not isinstance(envelope.data, Mapping):
            raise BadEvent("data: the lifecycle hook event has no data object", "data", envelope.id)
        fields, places = _hook_fields(envelope.data, envelope.id)
        fields.setdefault("transition", LIFECYCLE_TYPES[envelope.type])
        hook = _validate(LifecycleHookData, fields, envelope.id, places=places)
        return LifecycleEvent(envelope=envelope, hook=hook)
    if envelope.type == CONTINUE_TYPE:
        return ContinueEvent(
            envelope=envelope, work=_validate(ContinueData, envelope.data, envelope.id, "data.")
        )
    if envelope.type == MNS_QUEUE_MESSAGE_TYPE:
        return _alarm_event(envelope)
    raise BadEvent(
        f"type: no handler for events of type {envelope.type!r} from {envelope.source!r}", "type", envelope.id
    )


def _alarm_event(envelope: CloudEvent) -> AlarmEvent:
    if not isinstance(envelope.data, Mapping):
        raise BadEvent("data: the queue message has no data object", "data", envelope.id)
    message = _validate(MnsMessage, _stringify_body(envelope.data), envelope.id, prefix="data.")
    try:
        body = _message_body(envelope.data["messageBody"])
    except ValueError as exc:
        raise BadEvent(f"data.messageBody: {exc}", "data.messageBody", envelope.id) from None
    if not isinstance(body, Mapping):
        where = "data.messageBody"
        raise BadEvent(f"{where}: a JSON {type(body).__name__}, not an alarm object", where, envelope.id)
    alarm = _validate(AlarmBody, body, envelope.id, prefix="data.messageBody.")
    return AlarmEvent(envelope=envelope, message=message, alarm=alarm)


def _stringify_body(data: Mapping[str, Any]) -> dict[str, Any]:
    fields = dict(data)
    if isinstance(fields.get("messageBody"), Mapping):
        fields["messageBody"] = json.dumps(fields["messageBody"])
    return fields


M = TypeVar("M", bound=BaseModel)


def _validate(
    model: type[M],
    data: Any,
    event_id: str,
    prefix: str = "",
    places: Mapping[str, tuple[str, Any]] | None = None,
) -> M:
    """``model`` from ``data``, or BadEvent naming the field as the event spells it and the value
    it gave. ``places`` maps a model field to the event's path and value for it (the hook's
    fields, which the event spells in several ways); else the path is ``prefix`` + the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(part) for part in error["loc"]]
        value = error.get("input", _ABSENT)
        if places is not None and loc and loc[0] in places:
            path, given = places[loc[0]]
            where = ".".join([path, *loc[1:]])
            if error["type"] == "missing":
                value = given
        else:
            where = prefix + ".".join(loc)
            if error["type"] == "missing":
                value = _ABSENT
        said = "not in the event" if value is _ABSENT else f"the event gives {_shown(value)}"
        raise BadEvent(f"{where}: {error['msg']} ({said})", where, event_id) from None
    except (ValueError, TypeError) as exc:
        raise BadEvent(f"{prefix.rstrip('.')}: {exc}", prefix.rstrip("."), event_id) from None


def _shown(value: Any, limit: int = 200) -> str:
    """A value as a message shows it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
