"""The wiring: which adapter serves each port, built once per FC instance, on first use.

A function imports only what its flow touches: each property imports its adapter (and with it
the vendor SDK) the first time it is read, so that the scale function never pays for Panorama's
or Tablestore's imports at cold start.
"""

from __future__ import annotations

import time
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

from fleet.settings import Settings, load_settings

if TYPE_CHECKING:
    from fleet.auditlog import AuditLogPort
    from fleet.ports import (
        AppliancePort,
        EcsPort,
        EssPort,
        GwlbPort,
        LicensingPort,
        MonitorPort,
        PanoramaPort,
        SchedulerPort,
    )
    from fleet.state import StateStore


class App:
    """The adapters of one process. Tests and ``gwlb-fleet invoke --fakes`` pass fakes instead."""

    clock = staticmethod(time.time)  # epoch seconds; functional tests pass a fake clock

    def __init__(self, settings: Settings, **overrides: object) -> None:
        self.settings = settings
        for name, port in overrides.items():
            if not hasattr(type(self), name):
                raise AttributeError(f"App has no port {name!r}")
            self.__dict__[name] = port  # wins over the cached_property

    @cached_property
    def state(self) -> StateStore:
        if self.settings.state_store == "tablestore":
            from fleet.statestore.tablestore import TablestoreStateStore

            return TablestoreStateStore.from_settings(self.settings)
        from fleet.statestore.sqlite import SqliteStateStore

        return SqliteStateStore.from_settings(self.settings)

    @cached_property
    def gwlb(self) -> GwlbPort:
        from fleet.adapters.gwlb import GwlbAdapter

        return GwlbAdapter.from_settings(self.settings)

    @cached_property
    def ess(self) -> EssPort:
        from fleet.adapters.ess import EssAdapter

        return EssAdapter.from_settings(self.settings)

    @cached_property
    def ecs(self) -> EcsPort:
        from fleet.adapters.ecs import EcsAdapter

        return EcsAdapter.from_settings(self.settings)

    @cached_property
    def monitor(self) -> MonitorPort:
        from fleet.adapters.cms import MonitorAdapter

        return MonitorAdapter.from_settings(self.settings)

    @cached_property
    def panorama(self) -> PanoramaPort:
        from fleet.adapters.panorama import PanoramaAdapter

        return PanoramaAdapter.from_settings(self.settings)

    @cached_property
    def licensing(self) -> LicensingPort:
        from fleet.adapters.licensing import licensing_from_settings

        return licensing_from_settings(self.settings, self.panorama)

    @cached_property
    def appliance(self) -> AppliancePort:
        from fleet.adapters.appliance import AgentStatusProbe

        return AgentStatusProbe.from_settings(self.settings)

    @cached_property
    def scheduler(self) -> SchedulerPort:
        from fleet.adapters.fc import FcScheduler

        return FcScheduler.from_settings(self.settings)

    @cached_property
    def audit(self) -> AuditLogPort:
        from fleet.adapters.auditlog import audit_log_from_settings

        return audit_log_from_settings(self.settings)


@lru_cache(maxsize=1)
def get_app() -> App:
    """The process's App: FC reuses an instance for many invocations, so is this."""
    return App(load_settings())
