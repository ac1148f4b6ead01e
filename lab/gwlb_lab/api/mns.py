"""Simple Message Queue (mns-open 2022-01-19) on the local endpoint: queues (query string, RPC)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gwlb_fleet.alibaba.fakes.mns import FakeMns
from gwlb_lab.api.params import Params

PRODUCT = "mns"
VERSION = "2022-01-19"

HANDLERS: dict[str, Callable[[FakeMns, Params], dict[str, Any]]] = {
    "CreateQueue": lambda mns, p: mns.api_create_queue(p.values),
    "GetQueueAttributes": lambda mns, p: mns.api_get_queue_attributes(p.required("QueueName")),
    "DeleteQueue": lambda mns, p: mns.api_delete_queue(p.required("QueueName")),
}
