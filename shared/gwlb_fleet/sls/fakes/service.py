"""An in-memory SLS: decodes what it is sent like the service does, fails on demand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aliyun.log.log_logs_pb2 import LogGroup  # type: ignore[attr-defined]  # generated, no stubs

from gwlb_fleet.sls.client import PutResult, SlsError

# What a fault mode answers, as the real service would.
FAULTS: dict[str, Callable[[], SlsError]] = {
    "refuse": lambda: SlsError("LogRequestError", "connection refused"),
    "5xx": lambda: SlsError("InternalServerError", "internal error", 500),
    "503": lambda: SlsError("ServerBusy", "server busy", 503),
    "403": lambda: SlsError("Unauthorized", "AccessKeyId is disabled", 403),
    "404": lambda: SlsError("LogStoreNotExist", "logstore flow-logs does not exist", 404),
}


@dataclass
class StoredLog:
    logstore: str
    time: int
    contents: dict[str, str]
    topic: str
    source: str
    tags: dict[str, str]


@dataclass
class FakeSls:
    project: str = "gwlb-fleet"
    fault: str | None = None
    fail_next: list[str] = field(default_factory=list)  # faults for the next calls, in order
    logs: list[StoredLog] = field(default_factory=list)
    requests: int = 0

    def put_log_group(self, logstore: str, log_group: bytes) -> PutResult:
        self.requests += 1
        fault = self.fail_next.pop(0) if self.fail_next else self.fault
        if fault:
            raise FAULTS[fault]()
        group = LogGroup()
        group.ParseFromString(log_group)
        if len(log_group) > 5 << 20:
            raise SlsError("PostBodyTooLarge", f"body of {len(log_group)} bytes is over 5 MB", 413)
        if len(group.Logs) > 4096:
            raise SlsError("InvalidLogSize", f"{len(group.Logs)} logs is over 4096", 400)
        tags = {tag.Key: tag.Value for tag in group.LogTags}
        for entry in group.Logs:
            contents = {
                c.Key: c.Value.decode() if isinstance(c.Value, bytes) else c.Value for c in entry.Contents
            }
            self.logs.append(StoredLog(logstore, entry.Time, contents, group.Topic, group.Source, tags))
        return PutResult(f"fake-{self.requests}", len(log_group), len(log_group))

    def abort_requests(self) -> int:
        """Nothing waits on an in-memory call: nothing to cut off."""
        return 0

    def records(self, kind: str = "flow") -> list[dict[str, str]]:
        return [log.contents for log in self.logs if log.contents.get("kind") == kind]
