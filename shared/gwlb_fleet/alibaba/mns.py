"""Simple Message Queue (formerly MNS) over alibabacloud_mns_open20220119: the alarm queues that
CloudMonitor pushes to (F-CMS-7) and the functions' MNS triggers read (F-FCT-1).

Set-up only (gwlb_fleet.deploy, the deployer's credentials): the functions never call MNS, so
there is no ``RAM_ACTIONS`` here for their policy, only ``SETUP_RAM_ACTIONS``.
"""

from __future__ import annotations

import re

from alibabacloud_mns_open20220119 import models as mns_models
from alibabacloud_mns_open20220119.client import Client as MnsClient

from gwlb_fleet.alibaba.tea import RetryPolicy, SetupApi, TeaApi, setup_calls
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


def setup_api(settings: Settings, retry_policy: RetryPolicy | None = None) -> SetupApi:
    return SetupApi(TeaApi.from_settings("mns", settings, MnsClient, retry_policy), SETUP_CALLS)
