"""The emulator's settings: the server group's (scheduler, failover mode, health check,
connection draining) and the lab's (tun, addresses, Geneve option layout, timeouts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gwlb_fleet.geneve import GENEVE_PORT
from gwlb_lab.gwlb.encap import Encapsulator
from gwlb_lab.gwlb.health import HealthCheckSettings
from gwlb_lab.gwlb.scheduler import DEFAULT_SEED, SCHEDULERS, Scheduler

FailoverMode = Literal["NoRebalance", "Rebalance"]
FAILOVER_MODES: tuple[FailoverMode, ...] = ("NoRebalance", "Rebalance")


@dataclass(frozen=True)
class EmulatorConfig:
    tun: str = "gwlb0"
    local_address: str = "198.19.0.1"  # the GWLB's address on the data network
    geneve_port: int = GENEVE_PORT
    encapsulator: Encapsulator = field(default_factory=Encapsulator)  # option layout and ids
    # The server group (CreateServerGroup / UpdateServerGroupAttribute).
    scheduler: Scheduler = "5TCH"
    failover_mode: FailoverMode = "NoRebalance"  # ServerFailoverMode
    health: HealthCheckSettings = field(default_factory=HealthCheckSettings)
    connection_drain: bool = True  # ConnectionDrainConfig.ConnectionDrainEnabled
    drain_timeout: float = 300.0  # ConnectionDrainConfig.ConnectionDrainTimeout, seconds
    # The lab's.
    hash_seed: bytes = DEFAULT_SEED
    tcp_idle_timeout: float = 350.0
    idle_timeout: float = 120.0
    max_flows: int = 100_000
    poll_interval: float = 0.5  # how often the membership source is read
    status_address: tuple[str, int] | None = None  # GET /status, /flows when set

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, not {self.scheduler!r}")
        if self.failover_mode not in FAILOVER_MODES:
            raise ValueError(f"failover mode must be one of {', '.join(FAILOVER_MODES)}, "
                             f"not {self.failover_mode!r}")
        # The cloud's range is 1-3600 s; the lab also allows a fraction of a second.
        if not 0 < self.drain_timeout <= 3600:
            raise ValueError(f"connection drain timeout {self.drain_timeout} s is not in (0, 3600]")
        for name in ("tcp_idle_timeout", "idle_timeout", "poll_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_flows < 1:
            raise ValueError("max_flows must be at least 1")

    def describe(self) -> dict[str, object]:
        health = self.health
        return {
            "scheduler": self.scheduler, "failover_mode": self.failover_mode,
            "connection_drain": self.connection_drain, "drain_timeout_s": self.drain_timeout,
            "health_check": {"enabled": health.enabled, "protocol": health.protocol,
                             "port": health.port, "path": health.path,
                             "interval_s": health.interval, "timeout_s": health.timeout,
                             "healthy_threshold": health.healthy_threshold,
                             "unhealthy_threshold": health.unhealthy_threshold},
            "layout": self.encapsulator.layout,
        }
