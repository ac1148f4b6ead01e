"""What the lab's cloud is: the fleet's ids and sizes, and the timings that make minutes of cloud
behaviour fit in a few minutes of a scenario.

The runner writes a ``CloudConfig`` as JSON into the run directory; ``python -m gwlb_lab.cloud``
reads it. Every timing here has its cloud counterpart named beside it; ``function_env`` is what
the control plane's settings (gwlb_fleet.settings) get, exactly the variables template.yml sets.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

GWLB_ADDRESS = "198.19.0.1"  # the gwlb namespace's address on the data bridge
DATA_NETWORK = "198.19.0.0/24"
FIRST_APPLIANCE_HOST = 10  # appliance n gets 198.19.0.(10 + n)
OPENAPI_PORT = 9100  # GWLB, ESS, ECS, CloudMonitor, FC on one port (gwlb_lab.api)
SLS_PORT = 9200
LAB_PANORAMA_ADMIN = "gwlb-fleet"  # FakePanorama.api_user: whose changes our partial commits take
PANORAMA_PORT = 9443  # loopback only: the control plane runs in this process
AGENT_HEALTH_PORT = 8080
SLS_PROJECT = "gwlb-lab"
PANORAMA_KEY_SECRET = "gwlb-lab/panorama-api-key"  # the lab's KMS holds Panorama's key under this name
PANLOGS_PORT = 9300  # the panlogs function's HTTP trigger (gwlb_lab.cloud.intake), HTTPS
PANLOGS_TOKEN_SECRET = "gwlb-lab/panlogs-token"  # the lab's KMS holds the intake's token under this name
LAB_ACCESS_KEY = ("lab-access-key", "lab-access-secret")  # the local endpoints check no signature
FUNCTIONS = ("lifecycle", "scale", "health", "reconcile")


def appliance_address(number: int) -> str:
    """The n-th ECS instance's data ENI address: its namespace's data interface (F-GWLB-2)."""
    host = FIRST_APPLIANCE_HOST + number
    if not FIRST_APPLIANCE_HOST < host < 255:
        raise ValueError(f"appliance {number}: the lab's data network has no address left for it")
    return f"198.19.0.{host}"


ApplianceKind = Literal["vmseries", "linux"]  # the control plane's APPLIANCE_KIND
Inspection = Literal["agent", "kernel"]
LabKind = Literal["vmseries", "linux", "kernel"]  # scripts/lab --kind
LAB_KINDS: tuple[LabKind, ...] = ("vmseries", "linux", "kernel")


@dataclass(frozen=True)
class FleetPlan:
    # vmseries: the stand-in firewall (the agent as its data plane, registered with Panorama,
    # forwarding PAN-OS logs to the intake); linux: the agent alone, shipping its flow records to SLS.
    appliance_kind: ApplianceKind = "vmseries"
    # Who decides on a Linux appliance: agent, its own policy (inline mode); kernel, the appliance's
    # nftables ruleset (the agent in tun mode, its records from conntrack and NFLOG). The control
    # plane cannot tell the two apart: it sees Linux appliances either way.
    inspection: Inspection = "agent"
    region: str = "cn-hangzhou"
    scaling_group_id: str = "asg-lab-fleet"
    server_group_id: str = "sgp-lab-fleet"
    listener_id: str = "lsn-lab-fleet"
    min_size: int = 2
    max_size: int = 3
    desired: int = 2
    hook_timeout_s: int = 300  # ESS: 30-21600
    zones: tuple[str, ...] = ("cn-hangzhou-h", "cn-hangzhou-i")
    device_group: str = "gwlb-fw"
    template_stack: str = "gwlb-stack"
    template: str = "gwlb-template"  # in the stack: the HTTP server profile set-up writes lives here
    license_manager: str = "gwlb-lm"

    def __post_init__(self) -> None:
        if self.inspection == "kernel" and self.appliance_kind != "linux":
            raise ValueError("kernel inspection is for Linux appliances (a VM-Series inspects itself)")

    @classmethod
    def of_kind(cls, kind: LabKind) -> FleetPlan:
        """The plan of ``scripts/lab --kind``: kernel is a Linux fleet whose kernels inspect."""
        if kind == "kernel":
            return cls(appliance_kind="linux", inspection="kernel")
        return cls(appliance_kind=kind)

    @property
    def lab_kind(self) -> LabKind:
        return "kernel" if self.inspection == "kernel" else self.appliance_kind


@dataclass(frozen=True)
class Timings:
    # The GWLB server group (the cloud allows interval 1-50 s, thresholds 2-10, drain 1-3600 s).
    health_interval_s: float = 1.0
    health_timeout_s: float = 0.5
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2
    failover_mode: Literal["NoRebalance", "Rebalance"] = "Rebalance"
    scheduler: Literal["5TCH", "3TCH", "2TCH"] = "5TCH"
    drain_s: int = 12  # ConnectionDrainTimeout; the member is Draining this long
    adding_s: int = 2  # a new member is Adding this long, then Available
    # The agents: PutCustomMetric every this many seconds (the agent's minimum is 5).
    metric_interval_s: float = 5.0
    # CloudMonitor alarm rules (the cloud's shortest period is 60 s).
    alarm_period_s: int = 5
    scale_out_above: float = 24.0  # average active flows per appliance
    scale_out_periods: int = 2
    scale_in_below: float = 5.0
    scale_in_periods: int = 3
    alarm_silence_s: int = 15  # an alarm that holds is sent again after this
    unhealthy_period_s: int = 2
    # Function Compute: timers, and the delays of the async invocation's retries.
    health_timer_s: float = 3.0  # template.yml: every minute
    reconcile_timer_s: float = 20.0  # template.yml: every 5 minutes
    fc_retry_delays_s: tuple[float, ...] = (1.0, 2.0, 4.0)
    workers: int = 4
    # The control plane's own settings (gwlb_fleet.settings), in the lab's scale.
    poll_interval_s: int = 2
    drain_timeout_s: int = 45
    launch_timeout_s: int = 120
    hook_heartbeat_s: int = 60
    scale_out_cooldown_s: int = 20
    scale_in_cooldown_s: int = 30
    warmup_s: int = 15
    unhealthy_observations: int = 2
    unhealthy_spacing_s: int = 1
    function_timeout_s: int = 60
    api_timeout_s: float = 5.0


@dataclass(frozen=True)
class CloudConfig:
    run_dir: Path
    ns_prefix: str  # the lab's namespaces are named ``<ns_prefix><role>``
    owner_pid: int = 0  # stop when this process is gone (the runner of a scenario); 0: never
    host_mount_fd: int = -1  # the runner's mount namespace, to make appliance namespaces in
    plan: FleetPlan = field(default_factory=FleetPlan)
    timings: Timings = field(default_factory=Timings)

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "cloud.sock"

    @property
    def state_db(self) -> Path:
        return self.run_dir / "state.db"

    def write(self, path: Path) -> None:
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> CloudConfig:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            run_dir=Path(data["run_dir"]),
            ns_prefix=data["ns_prefix"],
            owner_pid=int(data.get("owner_pid", 0)),
            host_mount_fd=int(data.get("host_mount_fd", -1)),
            plan=_build(FleetPlan, data.get("plan", {})),
            timings=_build(Timings, data.get("timings", {})),
        )

    def function_env(self, openapi: str, sls: str, panorama_host: str, panorama_ca: Path,
                     panlogs_url: str = "") -> dict[str, str]:
        """The control plane's environment: the real adapters, pointed at the local endpoints.
        ``panlogs_url``: the panlogs function's HTTP trigger (a VM-Series fleet's log forwarding)."""
        plan, t = self.plan, self.timings
        key_id, secret = LAB_ACCESS_KEY
        panlogs = {
            "PANORAMA_TEMPLATE": plan.template,
            "PANLOGS_INTAKE_URL": panlogs_url,
            "PANLOGS_TOKEN_SECRET": PANLOGS_TOKEN_SECRET,  # the value is in the lab's KMS
            "FLOW_LOGSTORE": "flow-logs",
        } if panlogs_url else {}
        return {
            "FLEET_REGION": plan.region,
            "SCALING_GROUP_ID": plan.scaling_group_id,
            "GWLB_SERVER_GROUP_ID": plan.server_group_id,
            "GWLB_LISTENER_ID": plan.listener_id,
            "APPLIANCE_KIND": plan.appliance_kind,
            "API_PROTOCOL": "http",
            **{
                f"{product}_ENDPOINT": openapi
                for product in ("GWLB", "ESS", "ECS", "CMS", "FC", "KMS", "MNS", "RAM", "VPC", "PRIVATELINK")
            },
            "ALIBABA_CLOUD_ACCESS_KEY_ID": key_id,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": secret,
            "STATE_STORE": "sqlite",
            "STATE_SQLITE_PATH": str(self.state_db),
            "PANORAMA_HOST": panorama_host,
            "PANORAMA_API_KEY_SECRET": PANORAMA_KEY_SECRET,  # the value is in the lab's KMS
            "PANORAMA_CA_FILE": str(panorama_ca),
            "PANORAMA_DEVICE_GROUP": plan.device_group,
            "PANORAMA_TEMPLATE_STACK": plan.template_stack,
            "PANORAMA_LICENSE_MANAGER": plan.license_manager,
            "PANORAMA_COMMIT_ADMINS": LAB_PANORAMA_ADMIN,  # the admin of the lab Panorama's API key
            "VMSERIES_HEALTH_PORT": str(AGENT_HEALTH_PORT),
            "AGENT_HEALTH_PORT": str(AGENT_HEALTH_PORT),
            "SLS_ENDPOINT": sls,
            "SLS_PROJECT": SLS_PROJECT,
            "AUDIT_LOGSTORE": "fleet-audit",
            "FUNCTION_TIMEOUT_S": str(t.function_timeout_s),
            "API_TIMEOUT_S": str(t.api_timeout_s),
            "POLL_INTERVAL_S": str(t.poll_interval_s),
            "DRAIN_TIMEOUT_S": str(t.drain_timeout_s),
            "LAUNCH_TIMEOUT_S": str(t.launch_timeout_s),
            "HOOK_HEARTBEAT_S": str(t.hook_heartbeat_s),
            "SCALE_OUT_COOLDOWN_S": str(t.scale_out_cooldown_s),
            "SCALE_IN_COOLDOWN_S": str(t.scale_in_cooldown_s),
            "WARMUP_S": str(t.warmup_s),
            "UNHEALTHY_OBSERVATIONS": str(t.unhealthy_observations),
            "UNHEALTHY_SPACING_S": str(t.unhealthy_spacing_s),
            # gwlb-fleet setup (gwlb_fleet.deploy): rules in CloudMonitor's units (Period >= 60 s,
            # F-CMS-4), which the lab's alarm evaluation runs at alarm_period_s per 60 s.
            "ACCOUNT_ID": "1234567890123456",
            "ALARM_CONTACT_GROUP": "gwlb-lab-ops",
            "ALARM_PERIOD_S": "60",
            "ALARM_SILENCE_S": str(max(60, round(t.alarm_silence_s * 60 / t.alarm_period_s))),
            "SCALE_OUT_FLOWS_ABOVE": f"{t.scale_out_above:g}",
            "SCALE_OUT_PERIODS": str(t.scale_out_periods),
            "SCALE_IN_FLOWS_BELOW": f"{t.scale_in_below:g}",
            "SCALE_IN_PERIODS": str(t.scale_in_periods),
            "HOOK_TIMEOUT_S": str(plan.hook_timeout_s),
            **panlogs,
        }


def _build(cls: type[Any], values: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known}
    return cls(**converted)
