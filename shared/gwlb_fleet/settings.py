"""The control plane's settings: one class, read once from the environment.

Business code never reads ``os.environ``; it is handed a ``Settings``. Every variable the
functions get from ``template.yml`` is a field here, and every required field is set there (a
test keeps the two in step). The credentials FC hands over are ``SecretStr``: they print as
``**********``. Other secrets (Panorama's API key, licence auth codes) are never settings: they live
in KMS Secrets Manager, read at run time (gwlb_fleet.ports.SecretsPort); the settings name them.

Read with a plain pydantic model (``Settings.from_environ``), not pydantic-settings: the functions'
cold start pays for every module they import, and the environment's names are the fields' aliases.

Endpoints default to what each SDK picks for the region; each can be pointed elsewhere (the lab's local
servers, over plain HTTP with ``API_PROTOCOL=http``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

CREDENTIAL_VARIABLES = (
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ALIBABA_CLOUD_SECURITY_TOKEN",
)


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def from_environ(cls, *sources: Mapping[str, str]) -> Settings:
        """The settings from environment-like mappings, the first that names a variable winning
        (default: the process environment). Names are matched without regard to case."""
        values: dict[str, str] = {}
        for source in reversed(sources or (os.environ,)):
            values.update({name.upper(): value for name, value in source.items()})
        return cls.model_validate(values)

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
    kms_endpoint: str = Field("", validation_alias="KMS_ENDPOINT")
    mns_endpoint: str = Field("", validation_alias="MNS_ENDPOINT", description="set-up only (mns-open)")
    ram_endpoint: str = Field("", validation_alias="RAM_ENDPOINT", description="set-up only (GetRole)")
    vpc_endpoint: str = Field("", validation_alias="VPC_ENDPOINT", description="preflight only (routes)")
    privatelink_endpoint: str = Field(
        "", validation_alias="PRIVATELINK_ENDPOINT", description="preflight only (GWLB endpoints)"
    )
    # FC names the functions "<prefix>-lifecycle", ... (template.yml vars.functionPrefix); the
    # flows schedule continuations by the short name.
    function_prefix: str = Field("gwlb-fleet", validation_alias="FUNCTION_PREFIX")

    # --- credentials: FC 3.0 (python3.12) puts the function role's STS keys in these -----------------
    access_key_id: str = Field("", validation_alias="ALIBABA_CLOUD_ACCESS_KEY_ID")
    access_key_secret: SecretStr | None = Field(None, validation_alias="ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    security_token: SecretStr | None = Field(None, validation_alias="ALIBABA_CLOUD_SECURITY_TOKEN")

    # --- state ---------------------------------------------------------------------------------------
    state_store: Literal["sqlite", "tablestore"] = Field("sqlite", validation_alias="STATE_STORE")
    sqlite_path: Path = Field(Path("/tmp/gwlb-fleet/state.db"), validation_alias="STATE_SQLITE_PATH")
    tablestore_endpoint: str = Field("", validation_alias="TABLESTORE_ENDPOINT")
    tablestore_instance: str = Field("", validation_alias="TABLESTORE_INSTANCE")
    table_prefix: str = Field("gwlb_fleet", validation_alias="STATE_TABLE_PREFIX")

    # --- Panorama and licences ----------------------------------------------------------------------
    panorama_host: str = Field("", validation_alias="PANORAMA_HOST")
    # --- secrets: KMS Secrets Manager holds the values, the settings only their names (F-KMS-1) ----------
    panorama_api_key_secret: str = Field(
        "", validation_alias="PANORAMA_API_KEY_SECRET", description="the secret holding Panorama's API key"
    )
    secret_cache_ttl_s: int = Field(
        900,
        ge=0,
        le=3600,  # F-KMS-4: no longer than Alibaba's own Secrets Manager client keeps a secret
        validation_alias="SECRET_CACHE_TTL_S",
        description="how long a warm instance reuses a secret it read",
    )
    panorama_ca_file: str = Field("", validation_alias="PANORAMA_CA_FILE", description="'' = system CAs")
    device_group: str = Field("", validation_alias="PANORAMA_DEVICE_GROUP")
    template_stack: str = Field("", validation_alias="PANORAMA_TEMPLATE_STACK")
    license_manager: str = Field("", validation_alias="PANORAMA_LICENSE_MANAGER")
    panorama_commit_admins: str = Field(
        "",
        validation_alias="PANORAMA_COMMIT_ADMINS",
        description="the admin(s) whose API key gwlb-fleet uses, comma-separated: its commits are"
        " partial commits of these admins' changes and the licence plugin's (__sw_fw_license, always"
        " added), F-PAN-1; required for VM-Series",
    )
    # The Software NGFW credits licensing API, used instead of the plugin where configured.
    licensing_client_id: str = Field("", validation_alias="LICENSING_CLIENT_ID")
    licensing_client_secret_secret: str = Field(
        "",
        validation_alias="LICENSING_CLIENT_SECRET_SECRET",
        description="the secret holding the OAuth client secret",
    )
    licensing_auth_code_secret: str = Field(
        "",
        validation_alias="LICENSING_AUTH_CODE_SECRET",
        description="the secret holding the deployment profile's auth code",
    )
    licensing_api_endpoint: str = Field(
        "https://api.paloaltonetworks.com", validation_alias="LICENSING_API_ENDPOINT"
    )
    licensing_token_url: str = Field(
        "https://identity.paloaltonetworks.com/as/token.oauth2", validation_alias="LICENSING_TOKEN_URL"
    )
    licensing_ca_file: str = Field("", validation_alias="LICENSING_CA_FILE", description="'' = system CAs")

    # --- appliance probes --------------------------------------------------------------------------------
    agent_health_port: int = Field(8080, ge=1, le=65535, validation_alias="AGENT_HEALTH_PORT")
    vmseries_health_port: int = Field(
        80,
        ge=1,
        le=65535,
        validation_alias="VMSERIES_HEALTH_PORT",
        description="the GWLB health-check port PAN-OS answers on the data interface",
    )
    appliance_probe_timeout_s: float = Field(3.0, gt=0, validation_alias="APPLIANCE_PROBE_TIMEOUT_S")

    # --- audit log ----------------------------------------------------------------------------------------
    sls_endpoint: str = Field("", validation_alias="SLS_ENDPOINT")
    sls_project: str = Field("", validation_alias="SLS_PROJECT")
    audit_logstore: str = Field("fleet-audit", validation_alias="AUDIT_LOGSTORE")
    audit_log_path: Path = Field(
        Path("/tmp/gwlb-fleet/audit.jsonl"),
        validation_alias="AUDIT_LOG_PATH",
        description="the audit log's file when there is no SLS_ENDPOINT",
    )
    audit_write_budget_s: float = Field(10.0, gt=0, validation_alias="AUDIT_WRITE_BUDGET_S")

    # --- the PAN-OS log intake (gwlb_fleet.intake) ------------------------------------------------------
    flow_logstore: str = Field("flow-logs", validation_alias="FLOW_LOGSTORE")
    flow_write_budget_s: float = Field(
        5.0, gt=0, validation_alias="FLOW_WRITE_BUDGET_S", description="retries of one intake write to SLS"
    )
    # the secret's name and the header PAN-OS sends it in: panlogs_token_secret, panlogs_auth_header
    panlogs_max_body_bytes: int = Field(
        4 << 20, ge=1024, validation_alias="PANLOGS_MAX_BODY_BYTES", description="larger bodies get 413"
    )

    # --- timing --------------------------------------------------------------------------------------------
    function_timeout_s: int = Field(300, ge=10, validation_alias="FUNCTION_TIMEOUT_S")
    api_timeout_s: float = Field(10.0, gt=0, validation_alias="API_TIMEOUT_S")

    # --- the flows ----------------------------------------------------------------------------------------
    launch_timeout_s: int = Field(
        1800,
        ge=60,
        validation_alias="LAUNCH_TIMEOUT_S",
        description="give up on an appliance that is not ready by then",
    )
    drain_timeout_s: int = Field(
        300,
        ge=0,
        validation_alias="DRAIN_TIMEOUT_S",
        description="stop waiting for live flows to end after this",
    )
    poll_interval_s: int = Field(
        20, ge=1, validation_alias="POLL_INTERVAL_S", description="how soon a waiting flow looks again"
    )
    hook_heartbeat_s: int = Field(
        600,
        ge=30,
        le=21600,
        validation_alias="HOOK_HEARTBEAT_S",
        description="HeartbeatTimeout asked for when a hook is extended",
    )
    commit_attempts: int = Field(3, ge=1, validation_alias="COMMIT_ATTEMPTS")
    licence_release_attempts: int = Field(
        4,
        ge=1,
        validation_alias="LICENCE_RELEASE_ATTEMPTS",
        description="deactivations whose read back still counts the licence before the step is given up",
    )
    licence_release_backoff_s: float = Field(
        60.0,
        ge=0,
        validation_alias="LICENCE_RELEASE_BACKOFF_S",
        description="wait before the second deactivation; doubled for each one after",
    )
    scale_out_step: int = Field(1, ge=1, validation_alias="SCALE_OUT_STEP")
    scale_in_step: int = Field(
        1, ge=1, le=1, validation_alias="SCALE_IN_STEP", description="scale in one chosen victim at a time"
    )
    scale_out_cooldown_s: int = Field(180, ge=0, validation_alias="SCALE_OUT_COOLDOWN_S")
    scale_in_cooldown_s: int = Field(900, ge=0, validation_alias="SCALE_IN_COOLDOWN_S")
    warmup_s: int = Field(
        600,
        ge=0,
        validation_alias="WARMUP_S",
        description="a new appliance's metrics do not count for scale-in before this",
    )
    scale_out_alarm_prefix: str = Field("gwlb-fleet-scale-out", validation_alias="SCALE_OUT_ALARM_PREFIX")
    scale_in_alarm_prefix: str = Field("gwlb-fleet-scale-in", validation_alias="SCALE_IN_ALARM_PREFIX")
    health_alarm_prefix: str = Field("gwlb-fleet-unhealthy", validation_alias="HEALTH_ALARM_PREFIX")
    unhealthy_observations: int = Field(
        3,
        ge=1,
        validation_alias="UNHEALTHY_OBSERVATIONS",
        description="consecutive unhealthy checks before replacing",
    )
    unhealthy_spacing_s: int = Field(
        15, ge=0, validation_alias="UNHEALTHY_SPACING_S", description="checks closer together count as one"
    )
    max_replace_fraction: float = Field(0.34, gt=0, le=1, validation_alias="MAX_REPLACE_FRACTION")

    # --- VM-Series bootstrap (init-cfg.txt in the scaling configuration) -----------------------------------
    scaling_configuration_id: str = Field("", validation_alias="SCALING_CONFIGURATION_ID")
    bootstrap_panorama_server: str = Field(
        "", validation_alias="BOOTSTRAP_PANORAMA_SERVER", description="the address firewalls register with"
    )
    bootstrap_authcodes_secret: str = Field(
        "",
        validation_alias="BOOTSTRAP_AUTHCODES_SECRET",
        description="the secret holding init-cfg's authcodes",
    )
    bootstrap_plugin_op_commands: str = Field("", validation_alias="BOOTSTRAP_PLUGIN_OP_COMMANDS")
    vm_auth_key_lifetime_hours: int = Field(8760, ge=1, validation_alias="VM_AUTH_KEY_LIFETIME_HOURS")
    vm_auth_key_renew_before_s: int = Field(
        30 * 86400, ge=3600, validation_alias="VM_AUTH_KEY_RENEW_BEFORE_S"
    )

    # --- set-up (gwlb-fleet setup; the functions do not read these) --------------------------------------
    account_id: str = Field(
        "", validation_alias="ACCOUNT_ID", description="the main account's id, for ARNs (F-CMS-7, F-ESS-3)"
    )
    scale_alarm_queue: str = Field(
        "gwlb-fleet-scale-alarms",
        max_length=120,
        pattern=r"^[A-Za-z][A-Za-z0-9-]*$",  # F-MNS-1, F-MNS-4: a letter first
        validation_alias="SCALE_ALARM_QUEUE",
        description="MNS queue the scaling alarms are pushed to (the scale function's trigger)",
    )
    health_alarm_queue: str = Field(
        "gwlb-fleet-health-alarms",
        max_length=120,
        pattern=r"^[A-Za-z][A-Za-z0-9-]*$",  # F-MNS-1, F-MNS-4: a letter first
        validation_alias="HEALTH_ALARM_QUEUE",
        description="MNS queue the unhealthy-server alarm is pushed to (the health function's trigger)",
    )
    alarm_contact_group: str = Field(
        "", validation_alias="ALARM_CONTACT_GROUP", description="CloudMonitor contact group (must exist)"
    )
    monitor_group_name: str = Field(
        "gwlb-fleet",
        min_length=1,
        validation_alias="MONITOR_GROUP_NAME",
        description="CloudMonitor application group of the agents' metrics and the scaling rules (F-CMS-11)",
    )
    dead_letter_queue: str = Field(
        "gwlb-fleet-dead-letter",
        max_length=120,
        pattern=r"^[A-Za-z][A-Za-z0-9-]*$",  # F-MNS-1, F-MNS-4: a letter first
        validation_alias="DEAD_LETTER_QUEUE",
        description="MNS queue the functions' failed async events land in (F-FC-6); setup creates it",
    )
    function_logstore: str = Field(
        "function-logs",
        validation_alias="FUNCTION_LOGSTORE",
        description="SLS logstore FC writes the functions' own logs to (logConfig); setup creates it",
    )
    alarm_period_s: int = Field(60, ge=60, multiple_of=60, validation_alias="ALARM_PERIOD_S")  # F-CMS-4
    alarm_silence_s: int = Field(300, ge=60, validation_alias="ALARM_SILENCE_S")
    scale_out_flows_above: float = Field(
        20000, gt=0, validation_alias="SCALE_OUT_FLOWS_ABOVE", description="mean active flows per appliance"
    )
    scale_out_periods: int = Field(2, ge=1, validation_alias="SCALE_OUT_PERIODS")
    scale_in_flows_below: float = Field(2000, ge=0, validation_alias="SCALE_IN_FLOWS_BELOW")
    scale_in_periods: int = Field(5, ge=1, validation_alias="SCALE_IN_PERIODS")
    hook_timeout_s: int = Field(
        900, ge=30, le=21600, validation_alias="HOOK_TIMEOUT_S", description="the hooks' HeartbeatTimeout"
    )  # F-ESS-1
    scale_out_hook_default_result: Literal["CONTINUE", "ABANDON"] = Field(
        "ABANDON", validation_alias="SCALE_OUT_HOOK_DEFAULT_RESULT"
    )
    scale_in_hook_default_result: Literal["CONTINUE", "ABANDON"] = Field(
        "CONTINUE", validation_alias="SCALE_IN_HOOK_DEFAULT_RESULT"
    )
    # PAN-OS log forwarding to the intake function (gwlb_fleet.deploy.panlogs; docs/deploy.md)
    panorama_template: str = Field(
        "",
        validation_alias="PANORAMA_TEMPLATE",
        description="the template (in PANORAMA_TEMPLATE_STACK) that holds the HTTP server profile",
    )
    panlogs_intake_url: str = Field(
        "",
        pattern=r"^(https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?)?$",
        validation_alias="PANLOGS_INTAKE_URL",
        description="https://host[:port] of the intake function's HTTP trigger (its urlInternet);"
        " '' = set-up does not configure log forwarding",
    )
    panlogs_token_secret: str = Field(
        "",
        validation_alias="PANLOGS_TOKEN_SECRET",
        description="the secret holding the token PAN-OS sends the intake in PANLOGS_AUTH_HEADER",
    )
    panlogs_auth_header: str = Field(
        "X-Gwlb-Fleet-Token",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$",
        validation_alias="PANLOGS_AUTH_HEADER",
        description="the HTTP header the HTTP server profile sets to the token; the intake checks it",
    )
    panlogs_http_profile: str = Field("gwlb-fleet-intake", validation_alias="PANLOGS_HTTP_PROFILE")
    panlogs_forwarding_profile: str = Field("gwlb-fleet-logs", validation_alias="PANLOGS_FORWARDING_PROFILE")
    panlogs_rule_prefix: str = Field(
        "gwlb-",
        min_length=1,
        validation_alias="PANLOGS_RULE_PREFIX",
        description="the device group's pre-rulebase security rules named so get the forwarding profile",
    )
    panlogs_certificate_profile: str = Field(
        "",
        validation_alias="PANLOGS_CERTIFICATE_PROFILE",
        description="the certificate profile PAN-OS checks the intake's certificate with ('' = none)",
    )
    function_role_name: str = Field(
        "gwlb-fleet-functions",
        validation_alias="FUNCTION_ROLE_NAME",
        description="the functions' execution role (template.yml vars.roleName): preflight reads it",
    )  # F-RAM-2

    def with_credentials_from(self, environ: Mapping[str, str]) -> Settings:
        """These settings with the credentials ``environ`` holds now (itself when they are the same).

        FC puts the function role's STS credentials in the environment and replaces them before
        they expire, while an instance lives on (F-FC-1, F-FC-2): they are read at every
        invocation, the rest of the settings once."""
        names = {name.upper(): value for name, value in environ.items()}
        key_id, secret, token = (names.get(name, "") for name in CREDENTIAL_VARIABLES)
        if (key_id, secret, token) == self.credentials():
            return self
        return self.model_copy(
            update={
                "access_key_id": key_id,
                "access_key_secret": SecretStr(secret) if secret else None,
                "security_token": SecretStr(token) if token else None,
            }
        )

    def credentials(self) -> tuple[str, str, str]:
        """(access key id, secret, security token), '' where unset."""
        return (
            self.access_key_id,
            self.access_key_secret.get_secret_value() if self.access_key_secret else "",
            self.security_token.get_secret_value() if self.security_token else "",
        )

    def endpoint(self, service: Literal["gwlb", "ess", "ecs", "cms", "fc", "kms"]) -> str | None:
        """The configured endpoint, or None: the SDK then picks the region's own (its table knows
        that CloudMonitor is metrics.<region>, FC 3.0 fcv3.<region>, ESS central regions ess.)."""
        configured: str = getattr(self, f"{service}_endpoint")
        return configured or None


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """The settings of this process, read once (an FC instance serves many invocations)."""
    return Settings.from_environ()
