"""gwlb-fleet's SLS resources on the local endpoint, made by the same code as on SLS
(gwlb_fleet.sls.setup, through the real SDK over HTTP)."""

from __future__ import annotations

from gwlb_fleet.sls import setup as sls_setup
from gwlb_fleet.sls.client import Sls, SlsConfig
from gwlb_lab.sls.server import LocalSls


def sls_config(local: LocalSls, project: str) -> SlsConfig:
    """Settings for gwlb_fleet.sls.client.Sls that reach ``local`` with a key it accepts."""
    key_id, secret = local.credentials()
    return SlsConfig.model_validate(
        {"endpoint": local.endpoint, "project": project, "access_key_id": key_id, "access_key_secret": secret}
    )


def set_up(local: LocalSls, project: str) -> list[sls_setup.Step]:
    return sls_setup.apply(Sls(sls_config(local, project)))
