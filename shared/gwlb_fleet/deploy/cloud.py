"""The executor set-up runs with: the real SDK adapters (the deployer's credentials, from the
settings), or none at all for ``--plan``."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.deploy import plan
from gwlb_fleet.deploy.run import Executor, function_logstore_spec
from gwlb_fleet.settings import Settings


def executor(settings: Settings, planning: bool, environ: Mapping[str, str] | None = None) -> Executor:
    """``environ``: where a missing secret's value is read from (set-up's own environment,
    ``plan.secret_variable``); only the variables of the secrets the settings name are kept."""
    wanted = {variable for _setting, _name, variable in plan.secrets(settings)}
    values = {k: v for k, v in (os.environ if environ is None else environ).items() if k in wanted}
    if planning:
        return Executor(None, environ=values)
    from gwlb_fleet.alibaba import cms, ess, gwlb, kms, mns, ram

    apis = {
        "gwlb": gwlb.preflight_api(settings),  # ListServerGroups: the GWLB's id (F-GWLB-9, F-CMS-10)
        "mns": mns.setup_api(settings),
        "cms": cms.setup_api(settings),
        "ess": ess.setup_api(settings),
        "ram": ram.setup_api(settings),
        "kms": kms.setup_api(settings),
    }
    return Executor(
        apis,
        extra={
            "sls": lambda: set_up_sls(settings),
            "ots": lambda: set_up_tables(settings),
            "panorama": lambda: set_up_log_forwarding(settings),
            "panorama-teardown": lambda: tear_down_log_forwarding(settings),
        },
        environ=values,
    )


def set_up_sls(settings: Settings) -> list[str]:
    """gwlb_fleet.sls.setup: the project, logstores, indexes and saved searches (F-SLS-1)."""
    from gwlb_fleet.sls import setup as sls_setup
    from gwlb_fleet.sls.auditwriter import sls_config_of
    from gwlb_fleet.sls.client import Sls, SlsError

    sls = Sls(sls_config_of(settings))
    lines = []
    try:
        sls.call("get_project", settings.sls_project)
    except SlsError as exc:
        if exc.code != "ProjectNotExist":
            raise
        try:
            sls.call("create_project", settings.sls_project, "gwlb-fleet: flow logs and audit log")
        except SlsError as again:
            if again.code != "ProjectAlreadyExist":  # F-SLS-1
                raise
        lines.append(f"sls project {settings.sls_project}: created")
    lines.extend(f"sls {step}" for step in sls_setup.apply(sls))
    lines.extend(set_up_function_logstore(sls, settings))
    return lines


def set_up_function_logstore(sls: Any, settings: Settings) -> list[str]:
    """The functions' own logs (template.yml logConfig): the logstore must exist before FC is
    given it (F-FCT-8's reading), full-text indexed (F-SLS-1)."""
    from gwlb_fleet.sls import setup as sls_setup

    functions = sls_setup.Setup(sls)
    spec = function_logstore_spec(settings)
    step = functions.logstore(spec)
    index = functions.index(spec, step.status == "created")
    return [f"sls {s}" for s in (step, index)]


def set_up_tables(settings: Settings) -> list[str]:
    from gwlb_fleet.state.tablestore import TablestoreStateStore

    created = TablestoreStateStore.from_settings(settings).create_tables()  # F-OTS-2
    return [f"ots table {name}: created" for name in created] or ["ots tables: present"]


PANORAMA_BUDGET_S = 1200.0  # writes, a commit job, the read back, two pushes to every firewall


def set_up_log_forwarding(settings: Settings) -> list[str]:
    """gwlb_fleet.deploy.panlogs over the PanoramaAdapter, the token read from KMS with the
    deployer's credentials (F-KMS-3)."""
    from gwlb_fleet.deploy import panlogs

    panorama, secrets = _panorama(settings)
    deadline = Deadline.after(PANORAMA_BUDGET_S)
    want = panlogs.wanted(settings, secrets.get(settings.panlogs_token_secret, deadline))
    return panlogs.apply(panorama, want, deadline)


def tear_down_log_forwarding(settings: Settings) -> list[str]:
    from gwlb_fleet.deploy import panlogs

    panorama, _secrets = _panorama(settings)
    return panlogs.remove(panorama, panlogs.wanted(settings, ""), Deadline.after(PANORAMA_BUDGET_S))


def _panorama(settings: Settings) -> tuple[Any, Any]:
    from gwlb_fleet.alibaba.kms import KmsSecrets
    from gwlb_fleet.panos.panorama import PanoramaAdapter

    secrets = KmsSecrets.from_settings(settings, time.monotonic)
    return PanoramaAdapter.from_settings(settings, secrets), secrets
