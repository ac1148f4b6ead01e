"""Simple Message Queue (formerly MNS) in memory: queues (mns-open CreateQueue /
GetQueueAttributes / DeleteQueue, F-MNS-1) and their messages, which the lab's MNS trigger reads."""

from __future__ import annotations

import re
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gwlb_fleet.alibaba.fakes.openapi import FakeOpenApiService

QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,119}")  # F-MNS-1 (SAFE: 120)
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
            if not QUEUE_NAME.fullmatch(name):
                raise self._fail(
                    "InvalidQueueName", f"{name!r}: letters, digits and -, at most 120"
                )  # F-MNS-4
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
                raise self._fail("QueueAlreadyExist", f"queue {name} exists")  # F-MNS-4
            self.queues[name] = FakeQueue(name, attributes)
            return {"Code": 200, "Success": True, "Status": "SUCCESS"}

    def api_get_queue_attributes(self, name: str) -> dict[str, Any]:
        with self._api("GetQueueAttributes"):
            queue = self._queue(name)
            return {
                "Code": 200,
                "Success": True,
                "Data": {"QueueName": name, **queue.attributes, "ActiveMessages": len(queue.messages)},
            }

    def api_delete_queue(self, name: str) -> dict[str, Any]:
        with self._api("DeleteQueue"):
            self._queue(name)
            del self.queues[name]
            return {"Code": 200, "Success": True}

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
            raise self._fail("QueueNotExist", f"queue {name} does not exist")  # F-MNS-4
        return self.queues[name]
