"""The wiring: which adapter serves each port, built once per FC instance, on first use.

A function imports only what its workflow touches: each property imports its adapter (and with
it the vendor SDK) the first time it is read, so that the scale function never pays for Panorama's
or Tablestore's imports at cold start.

Credentials: FC puts the function role's STS credentials in the environment and replaces them
before they expire while the instance lives on (F-FC-1, F-FC-2). An App built from the
environment re-reads them at every invocation (``refresh_credentials``, called by the handler
frame); when they changed, the adapters that hold clients signed with them (CREDENTIAL_BOUND) are
dropped and rebuilt on first use. Secrets cached by ``secrets`` and Panorama's connection survive.

One way to build it, one way to hand it to the handlers: ``App(settings, **ports)`` builds an App
(the ports not given are the real adapters, built on first use); ``get_app()`` is the process's
App, built from the environment on first use, unless ``serving(app)`` hands the handlers another
one for a while (the functional tests, ``gwlb-fleet invoke --fakes``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

from gwlb_fleet.settings import Settings, load_settings

if TYPE_CHECKING:
    from gwlb_fleet.alibaba.tea import TeaApi
    from gwlb_fleet.ports import (
        AppliancePort,
        EcsPort,
        EssPort,
        GwlbPort,
        LicensingPort,
        MonitorPort,
        PanoramaPort,
        SchedulerPort,
        SecretsPort,
    )
    from gwlb_fleet.sls.auditlog import AuditLogPort
    from gwlb_fleet.sls.flowwriter import FlowLogPort
    from gwlb_fleet.state.records import StateStore


# The ports whose adapters sign requests with the settings' credentials (Tea, Tablestore, SLS).
CREDENTIAL_BOUND = ("state", "gwlb", "ess", "ecs", "monitor", "scheduler", "audit", "kms_api", "flow_log")


class App:
    """The adapters of one process. Tests and ``gwlb-fleet invoke --fakes`` pass fakes instead.

    ``environ``: where ``refresh_credentials`` reads the credentials at each invocation (the
    process environment for the App built from it); None keeps the settings' credentials."""

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
        secrets: SecretsPort | None = None,
        flow_log: FlowLogPort | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._environ = environ
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
            "secrets": secrets,
            "flow_log": flow_log,
        }
        self._given = {name for name, port in given.items() if port is not None}
        for name in self._given:
            self.__dict__[name] = given[name]  # wins over the cached_property

    def refresh_credentials(self) -> bool:
        """Take the credentials the environment holds now (F-FC-2). True when they changed: the
        adapters built with the old ones are dropped, to be rebuilt on first use."""
        if self._environ is None:
            return False
        settings = self.settings.with_credentials_from(self._environ)
        if settings is self.settings:
            return False
        self.settings = settings
        for name in CREDENTIAL_BOUND:
            if name not in self._given:
                self.__dict__.pop(name, None)
        return True

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

        return PanoramaAdapter.from_settings(self.settings, self.secrets)

    @cached_property
    def licensing(self) -> LicensingPort:
        from gwlb_fleet.panos.licensing import licensing_from_settings

        return licensing_from_settings(self.settings, self.panorama, self.secrets)

    @cached_property
    def appliance(self) -> AppliancePort:
        from gwlb_fleet.appliance.probes import AgentStatusProbe

        return AgentStatusProbe.from_settings(self.settings, self.secrets)

    @cached_property
    def scheduler(self) -> SchedulerPort:
        from gwlb_fleet.alibaba.fc import FcScheduler

        return FcScheduler.from_settings(self.settings)

    @cached_property
    def secrets(self) -> SecretsPort:
        from gwlb_fleet.alibaba.kms import KmsSecrets

        # The cache lives as long as the App; the client is the current ``kms_api``.
        return KmsSecrets(lambda: self.kms_api, self.settings.secret_cache_ttl_s, self.clock)

    @cached_property
    def kms_api(self) -> TeaApi:
        from gwlb_fleet.alibaba.kms import kms_api

        return kms_api(self.settings)

    @cached_property
    def audit(self) -> AuditLogPort:
        from gwlb_fleet.sls.auditwriter import audit_log_from_settings

        return audit_log_from_settings(self.settings)

    @cached_property
    def flow_log(self) -> FlowLogPort:
        from gwlb_fleet.sls.flowwriter import flow_log_from_settings

        return flow_log_from_settings(self.settings)


_served: App | None = None  # handed over by ``serving``


def get_app() -> App:
    """The process's App: FC reuses an instance for many invocations, so is this."""
    return _served if _served is not None else _from_environment()


@lru_cache(maxsize=1)
def _from_environment() -> App:
    return App(load_settings(), environ=os.environ)


@contextlib.contextmanager
def serving(app: App) -> Iterator[App]:
    """Make ``app`` the process's App (what ``get_app`` returns) until the block ends."""
    global _served
    previous, _served = _served, app
    try:
        yield app
    finally:
        _served = previous
