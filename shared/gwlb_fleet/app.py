"""The wiring: which adapter serves each port, built once per FC instance, on first use.

A function imports only what its workflow touches: each property imports its adapter (and with
it the vendor SDK) the first time it is read, so that the scale function never pays for Panorama's
or Tablestore's imports at cold start.

One way to build it, one way to hand it to the handlers: ``App(settings, **ports)`` builds an App
(the ports not given are the real adapters, built on first use); ``get_app()`` is the process's
App, built from the environment on first use, unless ``serving(app)`` hands the handlers another
one for a while (the functional tests, ``gwlb-fleet invoke --fakes``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

from gwlb_fleet.settings import Settings, load_settings

if TYPE_CHECKING:
    from gwlb_fleet.ports import (
        AppliancePort,
        EcsPort,
        EssPort,
        GwlbPort,
        LicensingPort,
        MonitorPort,
        PanoramaPort,
        SchedulerPort,
    )
    from gwlb_fleet.sls.auditlog import AuditLogPort
    from gwlb_fleet.state.records import StateStore


class App:
    """The adapters of one process. Tests and ``gwlb-fleet invoke --fakes`` pass fakes instead."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,  # epoch seconds; functional tests pass a fake clock
        state: StateStore | None = None,
        gwlb: GwlbPort | None = None,
        ess: EssPort | None = None,
        ecs: EcsPort | None = None,
        monitor: MonitorPort | None = None,
        panorama: PanoramaPort | None = None,
        licensing: LicensingPort | None = None,
        appliance: AppliancePort | None = None,
        scheduler: SchedulerPort | None = None,
        audit: AuditLogPort | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        given = {
            "state": state,
            "gwlb": gwlb,
            "ess": ess,
            "ecs": ecs,
            "monitor": monitor,
            "panorama": panorama,
            "licensing": licensing,
            "appliance": appliance,
            "scheduler": scheduler,
            "audit": audit,
        }
        for name, port in given.items():
            if port is not None:
                self.__dict__[name] = port  # wins over the cached_property

    @cached_property
    def state(self) -> StateStore:
        if self.settings.state_store == "tablestore":
            from gwlb_fleet.state.tablestore import TablestoreStateStore

            return TablestoreStateStore.from_settings(self.settings)
        from gwlb_fleet.state.sqlite import SqliteStateStore

        return SqliteStateStore.from_settings(self.settings)

    @cached_property
    def gwlb(self) -> GwlbPort:
        from gwlb_fleet.alibaba.gwlb import GwlbAdapter

        return GwlbAdapter.from_settings(self.settings)

    @cached_property
    def ess(self) -> EssPort:
        from gwlb_fleet.alibaba.ess import EssAdapter

        return EssAdapter.from_settings(self.settings)

    @cached_property
    def ecs(self) -> EcsPort:
        from gwlb_fleet.alibaba.ecs import EcsAdapter

        return EcsAdapter.from_settings(self.settings)

    @cached_property
    def monitor(self) -> MonitorPort:
        from gwlb_fleet.alibaba.cms import MonitorAdapter

        return MonitorAdapter.from_settings(self.settings)

    @cached_property
    def panorama(self) -> PanoramaPort:
        from gwlb_fleet.panos.panorama import PanoramaAdapter

        return PanoramaAdapter.from_settings(self.settings)

    @cached_property
    def licensing(self) -> LicensingPort:
        from gwlb_fleet.panos.licensing import licensing_from_settings

        return licensing_from_settings(self.settings, self.panorama)

    @cached_property
    def appliance(self) -> AppliancePort:
        from gwlb_fleet.appliance.probes import AgentStatusProbe

        return AgentStatusProbe.from_settings(self.settings)

    @cached_property
    def scheduler(self) -> SchedulerPort:
        from gwlb_fleet.alibaba.fc import FcScheduler

        return FcScheduler.from_settings(self.settings)

    @cached_property
    def audit(self) -> AuditLogPort:
        from gwlb_fleet.sls.auditwriter import audit_log_from_settings

        return audit_log_from_settings(self.settings)


_served: App | None = None  # handed over by ``serving``


def get_app() -> App:
    """The process's App: FC reuses an instance for many invocations, so is this."""
    return _served if _served is not None else _from_environment()


@lru_cache(maxsize=1)
def _from_environment() -> App:
    return App(load_settings())


@contextlib.contextmanager
def serving(app: App) -> Iterator[App]:
    """Make ``app`` the process's App (what ``get_app`` returns) until the block ends."""
    global _served
    previous, _served = _served, app
    try:
        yield app
    finally:
        _served = previous
