"""The agent's metrics to CloudMonitor, for the scaling alarms (``PutCustomMetric``).

Every ``interval`` seconds: active flows, packets and bytes per second in and out, drops per
second, flow records lost, and whether the appliance is healthy and draining — dimensioned by
instance, scaling group and zone — in the CloudMonitor application group the fleet's scaling
rules address (``[cloudmonitor] group_id``, the
GroupId `gwlb-fleet setup` made: F-CMS-11). ``active_flows`` is also sent a second time with
exactly the scaling alarms' dimension, ``{"groupId": <scaling group>}``: a custom-metric rule
watches the one series whose dimension string equals its own (F-CMS-19), so every appliance adds
its raw point to that one group series and the period's ``Average`` is the mean per appliance. Sent in
batches of at most 21 points (CloudMonitor's limit per call), from a thread of its own; a failed
publish is logged and counted, and the next interval sends fresh numbers (old rates are stale).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from gwlb_agent.config import CloudMonitorSettings
from gwlb_agent.metrics import Snapshot
from gwlb_fleet.ports import MetricPoint

log = logging.getLogger("gwlb_agent.cloudmonitor")

MAX_POINTS_PER_CALL = 21
GROUP_DIMENSION = "groupId"  # the scaling group's id: the scale rules' dimension (gwlb_fleet.deploy.plan)
GROUP_SERIES_METRICS = ("active_flows",)  # also published as the group's series (F-CMS-19)


def points_from(
    snapshot: Snapshot,
    previous: Snapshot | None,
    elapsed: float,
    dimensions: dict[str, str],
    time_ms: int,
    group_id: int = 0,
) -> list[MetricPoint]:
    """The metrics of one interval: gauges as they are, counters as per-second rates, in the
    application group ``group_id`` (PutCustomMetric's GroupId, F-CMS-11, F-CMS-12)."""

    def rate(now_value: float, before: float) -> float:
        return max(0.0, now_value - before) / elapsed if previous is not None and elapsed > 0 else 0.0

    before = previous or snapshot
    values = {
        "active_flows": float(snapshot.flows_active),
        "packets_in_per_second": rate(snapshot.packets_in, before.packets_in),
        "packets_out_per_second": rate(snapshot.packets_out, before.packets_out),
        "bytes_in_per_second": rate(snapshot.bytes_in, before.bytes_in),
        "drops_per_second": rate(sum(snapshot.drops.values()), sum(before.drops.values())),
        "flow_records_lost": float(
            snapshot.records_dropped + snapshot.extra.get("sls_records_lost_spool_full_total", 0.0)
        ),
        "healthy": float(snapshot.healthy),
        "draining": float(snapshot.draining),
    }
    points = [MetricPoint(name, value, dict(dimensions), time_ms, group_id) for name, value in values.items()]
    group = dimensions.get(GROUP_DIMENSION)
    if group and dimensions != {GROUP_DIMENSION: group}:  # F-CMS-19: the scale rules' exact series
        points += [
            MetricPoint(name, values[name], {GROUP_DIMENSION: group}, time_ms, group_id)
            for name in GROUP_SERIES_METRICS
        ]
    return points


def batches(points: Sequence[MetricPoint], size: int = MAX_POINTS_PER_CALL) -> list[list[MetricPoint]]:
    return [list(points[i : i + size]) for i in range(0, len(points), size)]


class MetricsPublisher:
    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        publish: Callable[[list[MetricPoint]], None],
        dimensions: dict[str, str],
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        group_id: int = 0,
    ) -> None:
        self.snapshot = snapshot
        self.group_id = group_id
        self.publish = publish
        self.dimensions = dimensions
        self.interval = interval
        self._clock = clock
        self._wall_clock = wall_clock
        self._previous: tuple[Snapshot, float] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.published = 0
        self.failures = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cloudmonitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.publish_once()

    def publish_once(self) -> int:
        """Publish one interval's points; the number sent (0 after a failure, which is logged)."""
        snapshot, now = self.snapshot(), self._clock()
        previous, elapsed = (self._previous[0], now - self._previous[1]) if self._previous else (None, 0.0)
        self._previous = (snapshot, now)
        points = points_from(
            snapshot, previous, elapsed, self.dimensions, int(self._wall_clock() * 1000), self.group_id
        )
        try:
            for batch in batches(points):
                self.publish(batch)
        except Exception as exc:  # noqa: BLE001 - any failure: counted, logged, next interval tries again
            self.failures += 1
            log.error("publishing metrics to CloudMonitor failed", extra={"error": str(exc)})
            return 0
        self.published += len(points)
        return len(points)


def monitor_publisher(settings: CloudMonitorSettings) -> Callable[[list[MetricPoint]], None]:
    """``PutCustomMetric`` through fleet's CloudMonitor adapter (retries within 10 s a batch),
    with the instance's RAM role or configured keys."""
    from alibabacloud_cms20190101.client import Client as CmsClient
    from alibabacloud_tea_openapi.models import Config

    from gwlb_fleet.alibaba.cms import MonitorAdapter
    from gwlb_fleet.alibaba.tea import TeaApi, quiet_sdk_loggers
    from gwlb_fleet.deadline import Deadline

    config = Config(
        region_id=settings.region,
        endpoint=settings.endpoint or None,
        protocol=settings.protocol.upper(),
        read_timeout=10_000,
        connect_timeout=5_000,
    )
    if settings.ram_role:
        from alibabacloud_credentials.client import Client as CredentialClient
        from alibabacloud_credentials.models import Config as CredentialConfig

        config.credential = CredentialClient(
            CredentialConfig(type="ecs_ram_role", role_name=settings.ram_role)
        )
    else:
        config.access_key_id = settings.access_key_id
        config.access_key_secret = (
            settings.access_key_secret.get_secret_value() if settings.access_key_secret else ""
        )
    adapter = MonitorAdapter(TeaApi("cms", CmsClient(config), timeout_s=10.0))
    quiet_sdk_loggers()

    def publish(points: list[MetricPoint]) -> None:
        adapter.put_custom_metrics(points, Deadline.after(10.0, margin=0.0))

    return publish
