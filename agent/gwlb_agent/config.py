"""The agent's configuration: flags over environment over file over defaults.

File: TOML (``/etc/gwlb-agent/agent.toml`` unless ``--config`` or ``GWLB_AGENT_CONFIG`` says
otherwise). Environment: ``GWLB_AGENT_<FIELD>``, ``GWLB_AGENT_<SECTION>__<FIELD>`` for a section;
lists are comma-separated. A bad value anywhere is a ConfigError naming the field and where the
value came from, and the CLI exits 78 (EX_CONFIG) so that systemd does not restart-loop on it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from gwlb_fleet.geneve import GENEVE_PORT

DEFAULT_CONFIG_PATH = Path("/etc/gwlb-agent/agent.toml")
ENV_PREFIX = "GWLB_AGENT_"


class ConfigError(ValueError):
    pass


def _endpoint(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not ADDRESS:PORT")
    ipaddress.IPv4Address(host or "0.0.0.0")
    return value


class FlowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tcp_idle_timeout: float = Field(350.0, gt=0, description="seconds; the GWLB's TCP idle timeout")
    idle_timeout: float = Field(120.0, gt=0, description="seconds; UDP, ICMP and others")
    export_interval: float = Field(60.0, gt=0, description="seconds between records of long flows")
    close_linger: float = Field(2.0, ge=0, description="seconds after FIN/RST before the record")
    denied_idle_timeout: float = Field(10.0, gt=0, description="seconds; denied flows never close")
    mid_stream_pickup: bool = Field(
        True, description="a TCP flow first seen mid-stream may be judged as the reply of its peer's"
    )
    max_flows: int = Field(2_000_000, gt=0)
    max_queued_records: int = Field(200_000, gt=0, description="hand-off to the sink thread")


class FlowLogSettings(BaseModel):
    """Where flow records go: a local JSON-lines file, SLS, or both."""

    model_config = ConfigDict(extra="forbid")

    path: Path | None = Field(Path("/var/lib/gwlb-agent/flows.jsonl"), description="JSON lines")
    sls_endpoint: str | None = Field(None, description="e.g. cn-hangzhou-intranet.log.aliyuncs.com")
    sls_project: str | None = None
    sls_logstore: str = "flow-logs"
    ram_role: str | None = Field(None, description="credentials from the instance's RAM role")
    access_key_id: str | None = None
    access_key_secret: SecretStr | None = None
    metadata_endpoint: str = "http://100.100.100.200"
    spool_dir: Path = Path("/var/lib/gwlb-agent/spool")
    spool_max_bytes: int = Field(256 << 20, ge=64 << 10)
    batch_delay: float = Field(2.0, gt=0, le=60, description="seconds a batch may wait to fill")
    batch_bytes: int = Field(3 << 20, ge=64 << 10, le=5 << 20, description="SLS takes up to 5 MB")
    retry_max_delay: float = Field(30.0, gt=0, description="seconds between attempts while SLS is down")
    permanent_error_delay: float = Field(
        60.0, gt=0, description="longest wait between attempts after e.g. Unauthorized (from 1 s, doubling)"
    )
    request_timeout: float = Field(10.0, gt=0, le=60, description="seconds for one SLS request")
    slow_request: float = Field(2.0, gt=0, description="seconds; a slower SLS request is logged as slow")

    @field_validator("path", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value in ("", "none") else value

    @model_validator(mode="after")
    def _sls_complete(self) -> FlowLogSettings:
        if self.sls_endpoint:
            if not self.sls_project:
                raise ValueError("sls_project is required with sls_endpoint")
            if not self.ram_role and not (self.access_key_id and self.access_key_secret):
                raise ValueError("SLS needs ram_role, or access_key_id and access_key_secret")
        return self


class CloudMonitorSettings(BaseModel):
    """The agent's metrics to CloudMonitor (PutCustomMetric), for the scaling alarms."""

    model_config = ConfigDict(extra="forbid")

    region: str = Field("", description="on; e.g. cn-hangzhou (empty: metrics are not published)")
    endpoint: str = Field("", description="default: the SDK's for the region")
    protocol: Literal["https", "http"] = "https"
    interval: float = Field(60.0, ge=5, description="seconds between publications")
    scaling_group_id: str = Field("", description="the groupId dimension the alarm rules average over")
    group_id: int = Field(
        0,
        ge=0,
        description="the CloudMonitor application group (GroupId) the scaling rules address;"
        " `gwlb-fleet setup` prints it (F-CMS-11); 0 = none, which no rule of the fleet's reads",
    )
    ram_role: str | None = None
    access_key_id: str | None = None
    access_key_secret: SecretStr | None = None

    @model_validator(mode="after")
    def _credentials(self) -> CloudMonitorSettings:
        if self.region and not self.ram_role and not (self.access_key_id and self.access_key_secret):
            raise ValueError("CloudMonitor needs ram_role, or access_key_id and access_key_secret")
        return self


class TunSettings(BaseModel):
    """``mode = "tun"``: the kernel's ruleset decides (gwlb_agent.kernel)."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field(
        "gwlb-tun0", min_length=1, max_length=15, description="the tun device the agent creates"
    )
    route_table: int = Field(
        6081, gt=0, lt=2**31, description="policy-routing table: default route into the tun"
    )
    rule_priority: int = Field(
        100, gt=0, lt=32766, description="priority of `iif <device> lookup <route_table>` (before main)"
    )
    queue_length: int = Field(4096, ge=64, description="packets the tun holds for the agent (txqueuelen)")
    probe_source: ipaddress.IPv4Address = Field(
        ipaddress.IPv4Address("192.0.2.253"),
        description="health probe through the kernel: the ruleset must forward it; no flow may use it",
    )
    probe_destination: ipaddress.IPv4Address = ipaddress.IPv4Address("192.0.2.254")
    probe_port: int = Field(6082, gt=0, lt=65536, description="UDP source and destination port of the probe")
    probe_interval: float = Field(0.1, gt=0, le=1.0, description="seconds between probes")
    probe_timeout: float = Field(
        1.0, gt=0, le=10.0, description="seconds without a probe back before /health fails"
    )
    nflog_group: int = Field(
        1,
        ge=0,
        le=0xFFFF,
        description="the NFLOG group the ruleset logs its verdicts to (docs/kernel-records.md);"
        " the agent binds it: one agent per group and namespace",
    )
    suricata_eve: Path | None = Field(
        None, description="Suricata's eve.json, when Suricata inspects (alerts and drops in the records)"
    )

    @field_validator("route_table")
    @classmethod
    def _not_reserved(cls, value: int) -> int:
        if value in (253, 254, 255):
            raise ValueError("tables 253, 254 and 255 are the kernel's default, main and local")
        return value

    @model_validator(mode="after")
    def _probe_is_forwarded(self) -> TunSettings:
        if self.probe_source == self.probe_destination:
            raise ValueError("probe_source and probe_destination must differ (the probe is forwarded)")
        if self.probe_timeout <= self.probe_interval:
            raise ValueError("probe_timeout must be longer than probe_interval")
        return self


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["inline", "tun"] = Field(
        "inline",
        description="inline: the agent's policy decides; tun: the kernel's ruleset decides"
        " (packets through a tun device, [tun])",
    )

    appliance_id: str = Field(default_factory=socket.gethostname, min_length=1)
    instance_id: str = Field("", description="the ECS instance id, in flow-log tags")
    zone: str = ""
    listen: str = f"0.0.0.0:{GENEVE_PORT}"
    health: str = "0.0.0.0:8080"
    gwlb_cidrs: list[ipaddress.IPv4Network] = Field(
        min_length=1, description="the only sources the agent answers: the GWLB's addresses"
    )
    health_allow_cidrs: list[ipaddress.IPv4Network] = Field(
        default_factory=list, description="besides gwlb_cidrs and loopback"
    )
    policy: Path = Path("/etc/gwlb-agent/policy.toml")
    batch_size: int = Field(64, ge=1, le=1024)
    max_inner_size: int = Field(8500, ge=576, le=9000)
    rcvbuf_bytes: int = Field(32 << 20, ge=1 << 16)
    stall_after: float = Field(0.5, gt=0, le=1.0, description="seconds without a loop beat")
    honour_critical_options: bool = False
    dataplane: Literal["auto", "xdp", "socket"] = Field(
        "socket",
        description="inline mode: xdp answers the packets of decided flows in the kernel (XDP) and"
        " fails to start where it cannot load; auto uses xdp where it loads and logs why not;"
        " socket forwards every packet through the agent",
    )
    xdp_interface: str = Field(
        "",
        max_length=15,
        description="the data interface for XDP (inline mode) and for the tun offload's decapsulation"
        " (tun mode); empty: the one the GWLB is reached by",
    )
    xdp_attach: Literal["native-or-generic", "native", "generic"] = Field(
        "native-or-generic", description="XDP in the driver (native), or generic XDP (any interface, slower)"
    )
    # The fast path's own capacity, apart from the flow table's (flows.max_flows, 2,000,000): its
    # two maps (verdicts, a hash, and counters slots, a per-CPU array) hold 2 entries a flow (one
    # per direction), preallocated and locked in the kernel, and are read on every packet.
    # 131,072 flows (262,144 entries a map) take 42 MiB of kernel memory on 2 CPUs (memlock in
    # fdinfo; the per-CPU slots add 8 MiB a CPU) where 2,000,000 flows took 921 MiB, and a 4 MiB
    # bucket array instead of 64 MiB, far kinder to cache and TLB; still more hot flows than a
    # busy appliance answers at once. Flows
    # beyond it (mostly a flow table's idle tail) stay on the agent's path (xdp_map_full_total).
    xdp_max_flows: int = Field(
        131_072,
        gt=0,
        le=1 << 26,  # two entries a flow: well within the kernel's 4 GiB limit on a map's buckets
        description="flows whose verdicts the XDP fast path holds (at most flows.max_flows is used);"
        " the rest stay on the agent's path",
    )
    tun_offload: Literal["auto", "tc", "off"] = Field(
        "auto",
        description="tun mode: tc keeps Geneve in the kernel (TC programs on the data interface and"
        " the tun) for flows whose header the agent has learned, every packet still forwarded"
        " through the tun and the ruleset, and fails to start where it cannot load; auto uses it"
        " where it loads and logs why not; off: every packet through the agent",
    )
    # The offload's flow map: one entry a flow direction, preallocated and locked in the kernel
    # (400 bytes an entry with its bucket, whatever the CPUs: 131,072 entries take 50 MiB,
    # memlock in the map's fdinfo). Flow directions beyond it stay on the agent's path
    # (tun_offload_map_full_total).
    tun_offload_max_flows: int = Field(
        131_072,
        gt=0,
        le=1 << 22,
        description="flow directions whose Geneve header the tun offload holds in the kernel;"
        " the rest stay on the agent's path",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_budget: float = Field(
        10.0,
        gt=0,
        le=25,
        description="seconds from SIGTERM to exit: records not in SLS by then are in the spool"
        " (systemd kills at TimeoutStopSec, 30 s)",
    )
    flows: FlowSettings = Field(default_factory=FlowSettings)
    flow_log: FlowLogSettings = Field(default_factory=FlowLogSettings)
    cloudmonitor: CloudMonitorSettings = Field(default_factory=CloudMonitorSettings)
    tun: TunSettings = Field(default_factory=TunSettings)

    @field_validator("listen", "health")
    @classmethod
    def _is_endpoint(cls, value: str) -> str:
        return _endpoint(value)

    @field_validator("gwlb_cidrs", "health_allow_cidrs", mode="before")
    @classmethod
    def _strict_false(cls, value: Any) -> Any:
        # "10.0.1.7/24" is almost always a typo for a network; accept it as its network anyway.
        if isinstance(value, list):
            return [ipaddress.IPv4Network(v, strict=False) if isinstance(v, str) else v for v in value]
        return value

    @property
    def listen_address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host or "0.0.0.0", int(port)

    @property
    def health_address(self) -> tuple[str, int]:
        host, _, port = self.health.rpartition(":")
        return host or "0.0.0.0", int(port)


_LIST_FIELDS = {"gwlb_cidrs", "health_allow_cidrs"}


def _from_environment(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        value: Any = [v.strip() for v in raw.split(",") if v.strip()] if path[-1] in _LIST_FIELDS else raw
        target = values
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
        origins[".".join(path)] = f"environment {name}"
    return values, origins


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _layers(
    config_path: str | Path | None,
    flags: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The merged settings (flags over environment over file) and where each came from."""
    environ = os.environ if environ is None else environ
    explicit = config_path or environ.get(ENV_PREFIX + "CONFIG")
    path = Path(explicit) if explicit else DEFAULT_CONFIG_PATH
    file_values: dict[str, Any] = {}
    if explicit or path.exists():
        try:
            file_values = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {path}: cannot read: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    origins = {key: f"config file {path}" for key in _flatten(file_values)}
    env_values, env_origins = _from_environment(environ)
    origins.update(env_origins)
    flag_values = {k: v for k, v in (flags or {}).items() if v is not None}
    origins.update({key: "command line" for key in _flatten(flag_values)})
    return _merge(_merge(file_values, env_values), flag_values), origins


def load_config(
    config_path: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> AgentConfig:
    """Build the effective configuration. Raises ConfigError naming the field and its origin."""
    merged, origins = _layers(config_path, flags, environ)
    try:
        return AgentConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origins)) from None


class _ControlSettings(BaseModel):
    """What the control commands (drain, undrain, status) need: where the agent answers."""

    model_config = ConfigDict(extra="ignore")
    health: str = AgentConfig.model_fields["health"].default

    @field_validator("health")
    @classmethod
    def _is_endpoint(cls, value: str) -> str:
        return _endpoint(value)


def load_health_address(
    config_path: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[str, int]:
    """The running agent's health address, from the same layers as ``load_config``."""
    merged, origins = _layers(config_path, flags, environ)
    try:
        settings = _ControlSettings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origins)) from None
    host, _, port = settings.health.rpartition(":")
    return host or "0.0.0.0", int(port)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            keys += _flatten(value, f"{prefix}{key}.")
        else:
            keys.append(prefix + key)
    return keys


def _describe(exc: ValidationError, origins: Mapping[str, str]) -> str:
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"] if not isinstance(part, int))
        origin = origins.get(field, "defaults")
        message = error["msg"]
        if error["type"] == "missing":
            message = "required, and not set in the file, environment or flags"
        elif error["type"] == "extra_forbidden":
            message = "not a known setting"
        problems.append(f"{field}: {message} (from {origin})")
    return "invalid configuration: " + "; ".join(problems)


def render_toml(config: AgentConfig) -> str:
    """The effective configuration as a TOML file that ``--config`` would accept.

    Secrets are never printed: a set secret shows as a comment saying so.
    """
    lines = _toml_lines(config)
    for name, value in config:
        if isinstance(value, BaseModel):
            lines += ["", f"[{name}]", *_toml_lines(value)]
    return "\n".join(lines) + "\n"


def _toml_lines(model: BaseModel) -> list[str]:
    lines = []
    data = model.model_dump(mode="json")
    for name, value in model:
        if isinstance(value, BaseModel) or value is None:
            continue
        if isinstance(value, SecretStr):
            lines.append(f"# {name} is set (not shown)")
            continue
        lines.append(f"{name} = {_toml_value(data[name])}")
    return lines


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
