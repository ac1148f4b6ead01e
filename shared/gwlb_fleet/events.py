"""What EventBridge and FC's timer deliver, as models.

FC hands a handler ``bytes``. EventBridge wraps each event in a CloudEvents 1.0 envelope with
Alibaba's ``aliyun*`` extensions; the envelope ignores fields it does not know, the inner models
are frozen. Three sources:

- CloudMonitor metric alarms (``acs.cms``): the fields of CloudMonitor's alarm callback
  (``alertName``, ``alertState``, ``curValue``, ``dimensions``, ...). ``curValue`` arrives as a
  string and ``dimensions`` as a ``{k=v, ...}`` string or an object: both are accepted.
- ESS lifecycle hooks (``acs.ess``, ``ess:LifecycleHook:ScaleOut|ScaleIn|Test``). Their ``data``
  is not documented; we accept the names of ESS's lifecycle notifications (lower camel case, as
  MNS delivers them, possibly under ``content``) and their upper camel case API spelling. What is
  missing (a lost token) the flow recovers with ``DescribeLifecycleActions``.
- The timer trigger: ``{"triggerTime", "triggerName", "payload"}``, no envelope.

``parse_event`` raises ``BadEvent`` naming the field that is wrong and the event's id.
"""

from __future__ import annotations

import json
import re
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
ALARM_SOURCE = "acs.cms"
ALARM_TYPE = "cms:Alarm:ThresholdAlarm"  # a CloudMonitor threshold alarm


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


# --- CloudMonitor --------------------------------------------------------------------------------

_DIMENSION = re.compile(r"\s*([^=,{}\s]+)\s*=\s*([^,{}]*)")


def _dimensions(value: Any) -> Any:
    """``{instanceId=i-abc, userId=1}`` (the callback's string form) or an object."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") or text.startswith('{"'):
            value = json.loads(text)
        else:
            return {k: v.strip() for k, v in _DIMENSION.findall(text)}
    if isinstance(value, list):  # [{"instanceId": "i-abc"}, ...]
        merged: dict[str, str] = {}
        for item in value:
            merged.update({str(k): str(v) for k, v in dict(item).items()})
        return merged
    return value


def _number(value: Any) -> Any:
    if isinstance(value, str):
        return float(value.strip()) if value.strip() else None
    return value


class AlarmData(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    alert_name: str = Field(alias="alertName", min_length=1)
    alert_state: Literal["OK", "ALERT", "INSUFFICIENT_DATA"] = Field(alias="alertState")
    cur_value: Annotated[float | None, BeforeValidator(_number)] = Field(None, alias="curValue")
    dimensions: Annotated[dict[str, str], BeforeValidator(_dimensions)] = Field(default_factory=dict)
    metric_name: str = Field("", alias="metricName")
    namespace: str = ""
    expression: str = ""
    trigger_level: str = Field("", alias="triggerLevel")
    rule_id: str = Field("", alias="ruleId")
    timestamp: Annotated[float | None, BeforeValidator(_number)] = None


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


def _hook_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    body = data.get("content", data)
    if isinstance(body, str):
        body = json.loads(body)
    found: dict[str, Any] = {}
    for name, spellings in _HOOK_FIELDS.items():
        for spelling in spellings:
            if spelling in body and body[spelling] not in (None, ""):
                found[name] = body[spelling]
                break
    ids = found.get("instance_ids")
    if isinstance(ids, str):  # "i-a,i-b" or '["i-a"]'
        found["instance_ids"] = json.loads(ids) if ids.startswith("[") else [i for i in ids.split(",") if i]
    return found


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
    model_config = ConfigDict(frozen=True)
    envelope: CloudEvent
    alarm: AlarmData


class LifecycleEvent(BaseModel):
    model_config = ConfigDict(frozen=True)
    envelope: CloudEvent
    hook: LifecycleHookData


Event = AlarmEvent | LifecycleEvent | TimerEvent | ContinueEvent


def decode(raw: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadEvent(f"the event is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadEvent(f"the event is a JSON {type(value).__name__}, not an object")
    return value


def parse_event(raw: bytes | str | Mapping[str, Any]) -> Event:
    """The event FC delivered, as a model; BadEvent names what is wrong."""
    data = decode(raw)
    if "triggerTime" in data and "specversion" not in data:
        return _validate(TimerEvent, data, "")
    envelope = _validate(CloudEvent, data, str(data.get("id", "")))
    if envelope.type in LIFECYCLE_TYPES:
        if not isinstance(envelope.data, Mapping):
            raise BadEvent("data: the lifecycle hook event has no data object", "data", envelope.id)
        fields = _hook_fields(envelope.data)
        fields.setdefault("transition", LIFECYCLE_TYPES[envelope.type])
        hook = _validate(LifecycleHookData, fields, envelope.id, prefix="data.")
        return LifecycleEvent(envelope=envelope, hook=hook)
    if envelope.type == CONTINUE_TYPE:
        return ContinueEvent(
            envelope=envelope, work=_validate(ContinueData, envelope.data, envelope.id, "data.")
        )
    if envelope.source == ALARM_SOURCE or envelope.type.startswith("cms:"):
        if not isinstance(envelope.data, Mapping):
            raise BadEvent("data: the alarm event has no data object", "data", envelope.id)
        alarm = _validate(AlarmData, envelope.data, envelope.id, prefix="data.")
        return AlarmEvent(envelope=envelope, alarm=alarm)
    raise BadEvent(
        f"type: no handler for events of type {envelope.type!r} from {envelope.source!r}", "type", envelope.id
    )


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], data: Any, event_id: str, prefix: str = "") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = prefix + ".".join(str(part) for part in error["loc"])
        raise BadEvent(f"{where}: {error['msg']}", where, event_id) from None
    except (ValueError, TypeError) as exc:
        raise BadEvent(f"{prefix.rstrip('.')}: {exc}", prefix.rstrip("."), event_id) from None
