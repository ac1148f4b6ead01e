"""gwlb-fleet's SLS resources on the local endpoint, made by the same code as on SLS
(fleet.slssetup, through the real SDK over HTTP)."""

from __future__ import annotations

from fleet import slssetup
from fleet.sls import Sls, SlsConfig
from lab.sls.server import LocalSls


def sls_config(local: LocalSls, project: str) -> SlsConfig:
    """Settings for fleet.sls.Sls that reach ``local`` with a key it accepts."""
    key_id, secret = local.credentials()
    return SlsConfig.model_validate(
        {"endpoint": local.endpoint, "project": project, "access_key_id": key_id, "access_key_secret": secret}
    )


def set_up(local: LocalSls, project: str) -> list[slssetup.Step]:
    return slssetup.apply(Sls(sls_config(local, project)))
