"""The executor set-up runs with: the real SDK adapters (the deployer's credentials, from the
settings), or none at all for ``--plan``."""

from __future__ import annotations

from gwlb_fleet.deploy.run import Executor
from gwlb_fleet.settings import Settings


def executor(settings: Settings, planning: bool) -> Executor:
    if planning:
        return Executor(None)
    from gwlb_fleet.alibaba import cms, ess, mns, ram

    apis = {
        "mns": mns.setup_api(settings),
        "cms": cms.setup_api(settings),
        "ess": ess.setup_api(settings),
        "ram": ram.setup_api(settings),
    }
    return Executor(apis, extra={"sls": lambda: set_up_sls(settings), "ots": lambda: set_up_tables(settings)})


def set_up_sls(settings: Settings) -> list[str]:
    """gwlb_fleet.sls.setup: the project, logstores, indexes and saved searches (F-SLS-1)."""
    from gwlb_fleet.sls import setup as sls_setup
    from gwlb_fleet.sls.client import Sls, SlsConfig, SlsError

    config = SlsConfig(
        endpoint=settings.sls_endpoint,
        project=settings.sls_project,
        access_key_id=settings.access_key_id or None,
        access_key_secret=settings.access_key_secret,
        security_token=settings.security_token,
    )
    sls = Sls(config)
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
    return lines


def set_up_tables(settings: Settings) -> list[str]:
    from gwlb_fleet.state.tablestore import TablestoreStateStore

    created = TablestoreStateStore.from_settings(settings).create_tables()  # F-OTS-2
    return [f"ots table {name}: created" for name in created] or ["ots tables: present"]
