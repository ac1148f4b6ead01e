"""The control plane's settings: one class, read once from the environment.

Business code never reads ``os.environ``; it is handed a ``Settings``. Every variable the
functions get from ``template.yml`` is a field here, and every required field is set there (a
test keeps the two in step). Secrets are ``SecretStr``: they print as ``**********``.

Endpoints default to the region's public ones; each can be pointed elsewhere (the lab's local
servers, over plain HTTP with ``API_PROTOCOL=http``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", frozen=True)

    # --- where --------------------------------------------------------------------------------
    region: str = Field(min_length=1, validation_alias="FLEET_REGION", description="e.g. cn-hangzhou")
    scaling_group_id: str = Field(min_length=1, validation_alias="SCALING_GROUP_ID")
    server_group_id: str = Field(min_length=1, validation_alias="GWLB_SERVER_GROUP_ID")
    listener_id: str = Field(min_length=1, validation_alias="GWLB_LISTENER_ID")
    appliance_kind: Literal["vmseries", "linux"] = Field("vmseries", validation_alias="APPLIANCE_KIND")

    # --- endpoints (default: the region's) ---------------------------------------------------------
    api_protocol: Literal["https", "http"] = Field("https", validation_alias="API_PROTOCOL")
    gwlb_endpoint: str = Field("", validation_alias="GWLB_ENDPOINT")
    ess_endpoint: str = Field("", validation_alias="ESS_ENDPOINT")
    ecs_endpoint: str = Field("", validation_alias="ECS_ENDPOINT")
    cms_endpoint: str = Field("", validation_alias="CMS_ENDPOINT")
    fc_endpoint: str = Field("", validation_alias="FC_ENDPOINT")

    # --- state ---------------------------------------------------------------------------------------
    state_store: Literal["sqlite", "tablestore"] = Field("sqlite", validation_alias="STATE_STORE")
    sqlite_path: Path = Field(Path("/tmp/gwlb-fleet/state.db"), validation_alias="STATE_SQLITE_PATH")
    tablestore_endpoint: str = Field("", validation_alias="TABLESTORE_ENDPOINT")
    tablestore_instance: str = Field("", validation_alias="TABLESTORE_INSTANCE")
    table_prefix: str = Field("gwlb_fleet", validation_alias="STATE_TABLE_PREFIX")

    # --- Panorama and licences ----------------------------------------------------------------------
    panorama_host: str = Field("", validation_alias="PANORAMA_HOST")
    panorama_api_key: SecretStr | None = Field(None, validation_alias="PANORAMA_API_KEY")
    panorama_ca_file: str = Field("", validation_alias="PANORAMA_CA_FILE", description="'' = system CAs")
    device_group: str = Field("", validation_alias="PANORAMA_DEVICE_GROUP")
    template_stack: str = Field("", validation_alias="PANORAMA_TEMPLATE_STACK")
    license_manager: str = Field("", validation_alias="PANORAMA_LICENSE_MANAGER")

    # --- audit log ----------------------------------------------------------------------------------------
    sls_endpoint: str = Field("", validation_alias="SLS_ENDPOINT")
    sls_project: str = Field("", validation_alias="SLS_PROJECT")
    audit_logstore: str = Field("fleet-audit", validation_alias="AUDIT_LOGSTORE")

    # --- timing --------------------------------------------------------------------------------------------
    function_timeout_s: int = Field(300, ge=10, validation_alias="FUNCTION_TIMEOUT_S")
    api_timeout_s: float = Field(10.0, gt=0, validation_alias="API_TIMEOUT_S")

    def endpoint(self, service: Literal["gwlb", "ess", "ecs", "cms", "fc"]) -> str:
        configured: str = getattr(self, f"{service}_endpoint")
        if configured:
            return configured
        if service == "fc":
            return f"{self.region}.fc.aliyuncs.com"
        return f"{service}.{self.region}.aliyuncs.com"


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """The settings of this process, read once (an FC instance serves many invocations)."""
    return Settings()  # the fields come from the environment
