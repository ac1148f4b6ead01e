"""Simple Message Queue (formerly MNS) in memory: queues (mns-open CreateQueue /
GetQueueAttributes / DeleteQueue, F-MNS-1) and their messages, which the lab's MNS trigger reads."""

from __future__ import annotations

import re
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gwlb_fleet.alibaba.fakes.openapi import FakeOpenApiService

# F-MNS-1/F-MNS-4: a letter first, then letters, digits and "-" (InvalidQueueName); at most 120
# characters (SAFE: Terraform's 120 over the error table's 256; QueueNameLengthError)
QUEUE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
QUEUE_NAME_MAX = 120
# F-MNS-4: every mns-open answer says how it went in the body (GetQueueAttributes' documented sample)
OK: dict[str, Any] = {"Code": 200, "Status": "Success", "Message": "operation success", "Success": True}
RANGES = {  # F-MNS-1
    "DelaySeconds": (0, 604800),
    "MaximumMessageSize": (1024, 65536),
    "MessageRetentionPeriod": (60, 604800),
    "VisibilityTimeout": (1, 43200),
    "PollingWaitSeconds": (0, 30),
}
DEFAULTS = {
    "DelaySeconds": 0,
    "MaximumMessageSize": 65536,
    "MessageRetentionPeriod": 345600,
    "VisibilityTimeout": 30,
    "PollingWaitSeconds": 0,
}


@dataclass
class FakeQueue:
    name: str
    attributes: dict[str, int]
    messages: deque[dict[str, str]] = field(default_factory=deque)


@dataclass
class FakeMns(FakeOpenApiService):
    service: ClassVar[str] = "mns"

    queues: dict[str, FakeQueue] = field(default_factory=dict)

    def api_create_queue(self, params: dict[str, str]) -> dict[str, Any]:
        with self._api("CreateQueue"):
            name = params.get("QueueName", "")
            if not name:
                raise self._fail("MissingParameter", "QueueName is mandatory for this action.")
            if len(name) > QUEUE_NAME_MAX:
                raise self._fail(  # F-MNS-4
                    "QueueNameLengthError", f"Queue name length should between 1 and {QUEUE_NAME_MAX}."
                )
            if not QUEUE_NAME.fullmatch(name):
                raise self._fail(  # F-MNS-4
                    "InvalidQueueName",
                    "The queue name you provided is invalid. QueueName should start with alpha"
                    " and contain only alpha, digit or - .",
                )
            attributes = dict(DEFAULTS)
            for key, (low, high) in RANGES.items():
                if key in params:
                    value = params[key]
                    if not value.isdigit() or not low <= int(value) <= high:
                        raise self._fail(
                            "InvalidArgument", f"{key} should be between {low} and {high}"
                        )  # F-MNS-4
                    attributes[key] = int(value)
            if name in self.queues:
                raise self._fail(  # F-MNS-4
                    "QueueAlreadyExist", "The queue you want to create is already exist."
                )
            self.queues[name] = FakeQueue(name, attributes)
            return dict(OK)

    def api_get_queue_attributes(self, name: str) -> dict[str, Any]:
        with self._api("GetQueueAttributes"):
            queue = self._queue(name)
            return {
                **OK,
                "Data": {"QueueName": name, **queue.attributes, "ActiveMessages": len(queue.messages)},
            }

    def api_delete_queue(self, name: str) -> dict[str, Any]:
        with self._api("DeleteQueue"):
            self._queue(name)
            del self.queues[name]
            return dict(OK)

    def send(self, name: str, body: str) -> str:
        """A message into the queue (what CloudMonitor does for a rule's target, F-CMS-14)."""
        with self._lock:
            queue = self._queue(name)
            message_id = uuid.uuid4().hex.upper()
            queue.messages.append({"MessageId": message_id, "MessageBody": body})
            return message_id

    def receive(self, name: str) -> list[dict[str, str]]:
        """Every message waiting (the lab's MNS trigger takes and deletes them)."""
        with self._lock:
            queue = self.queues.get(name)
            if queue is None:
                return []
            out = list(queue.messages)
            queue.messages.clear()
            return out

    def _queue(self, name: str) -> FakeQueue:
        if not name:
            raise self._fail("MissingParameter", "QueueName is mandatory for this action.")
        if name not in self.queues:
            raise self._fail("QueueNotExist", "The queue name you provided is not exist.")  # F-MNS-4
        return self.queues[name]
