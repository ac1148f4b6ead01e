"""Simple Message Queue (formerly MNS) over alibabacloud_mns_open20220119: the alarm queues that
CloudMonitor pushes to (F-CMS-7) and the functions' MNS triggers read (F-FCT-1).

Set-up only (gwlb_fleet.deploy, the deployer's credentials): the functions never call MNS, so
there is no ``RAM_ACTIONS`` here for their policy, only ``SETUP_RAM_ACTIONS``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from alibabacloud_mns_open20220119 import models as mns_models
from alibabacloud_mns_open20220119.client import Client as MnsClient

from gwlb_fleet.alibaba.errors import error_for
from gwlb_fleet.alibaba.tea import RetryPolicy, SetupApi, TeaApi, setup_calls
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.settings import Settings

SETUP_CALLS = setup_calls(mns_models, "GetQueueAttributes", "CreateQueue", "DeleteQueue")  # F-MNS-1
SETUP_RAM_ACTIONS: frozenset[str] = frozenset(f"mns:{action}" for action in SETUP_CALLS)


def queue_target_arn(region: str, account_id: str, queue: str) -> str:
    """The queue as a CloudMonitor push target, spelt as the API reference and SDK model do
    (F-CMS-7: ``/message``; the guide's ``/messages`` is accepted only when reading back)."""
    return f"acs:mns:{region}:{account_id}:/queues/{queue}/message"


def is_queue_target(arn: str, region: str, account_id: str, queue: str) -> bool:
    base = f"acs:mns:{region}:{account_id}:/queues/{queue}/"
    return arn in (base + "message", base + "messages")  # F-CMS-7


def queue_of_target(arn: str) -> str | None:
    """The queue a CloudMonitor MNS target names (either spelling, F-CMS-7), None for another kind."""
    match = re.fullmatch(r"acs:mns:[^:]+:[^:]+:/queues/([^/]+)/messages?", arn)
    return match.group(1) if match else None


def body_verdict(action: str, body: Mapping[str, Any]) -> None:
    """mns-open says in the body whether the call worked (F-MNS-4): an answer is a success only
    when ``Success`` is true and ``Code`` is 200, whatever the HTTP status was. ``Code`` is an
    HTTP-like number, so a 4xx/5xx there classifies the error as that status would."""
    code = str(body.get("Code"))
    if body.get("Success") is True and code == "200":
        return
    status = int(code) if code.isdigit() and 400 <= int(code) <= 599 else 0
    message = str(body.get("Message") or body.get("Status") or "the answer does not say it succeeded")
    raise error_for("mns", action, code if code not in ("None", "200") else "Success.False", message, status)


class MnsSetupApi(SetupApi):
    """The set-up calls with mns-open's body verdict, and GetQueueAttributes checked to describe
    the queue asked for (``Data.QueueName``, F-MNS-1)."""

    def invoke(self, action: str, params: Mapping[str, Any], deadline: Deadline) -> dict[str, Any]:
        body = super().invoke(action, params, deadline)
        if action == "GetQueueAttributes":
            named = (body.get("Data") or {}).get("QueueName")
            if named != params.get("QueueName"):
                raise error_for(
                    "mns", action, "UnexpectedAnswer", f"asked for {params.get('QueueName')!r}, got {named!r}"
                )
        return body


def setup_api(settings: Settings, retry_policy: RetryPolicy | None = None) -> SetupApi:
    api = TeaApi.from_settings("mns", settings, MnsClient, retry_policy)
    return MnsSetupApi(api, SETUP_CALLS, body_verdict)
