"""The agent assembled: sockets, packet loop, flow export, health endpoint, signals.

Threads: the packet loop owns the flow table; the export thread owns the sink; the health
server answers from its own threads; the main thread handles signals and supervises.
SIGTERM/SIGINT: stop forwarding, write a record for every live flow, flush, exit 0, all within
``shutdown_budget`` seconds (10 by default; systemd kills at 30): records SLS has not
acknowledged by then are in the flow-log spool, and the next start sends them.
SIGHUP: reload the policy (a bad file is refused and the old policy stays) and reopen the flow
log. SIGUSR1: drain. SIGUSR2: stop draining.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

from gwlb_agent import systemd
from gwlb_agent.batchio import BatchSocket
from gwlb_agent.cloudmonitor import MetricsPublisher
from gwlb_agent.config import AgentConfig
from gwlb_agent.dataplane import DataPlane
from gwlb_agent.drops import DROP_NAMES
from gwlb_agent.export import FlowSink, JsonLinesSink, RecordExporter
from gwlb_agent.flowtable import FlowRecordBuilder, FlowTable, Timeouts
from gwlb_agent.health import Control, HealthServer, Liveness
from gwlb_agent.inspection import Chain
from gwlb_agent.metrics import Snapshot
from gwlb_agent.policy import Policy, PolicyError, PolicyModel, RuleStage, load_policy
from gwlb_agent.processor import Inspection, PacketProcessor

if TYPE_CHECKING:
    from gwlb_agent.kernel.flowlog import KernelFlowLog
    from gwlb_agent.kernel.records import FlowIdentities
    from gwlb_agent.kernel.tun import KernelPath, TunDataPlane
    from gwlb_agent.xdp.fastpath import FastPath

log = logging.getLogger("gwlb_agent")


def build_sinks(config: AgentConfig) -> list[FlowSink]:
    """The configured flow-record sinks: the JSON-lines file and/or SLS."""
    settings = config.flow_log
    sinks: list[FlowSink] = []
    if settings.path is not None:
        sinks.append(JsonLinesSink(settings.path))
    if settings.sls_endpoint and settings.sls_project:
        from gwlb_agent.shipper import Identity, ShipperSettings, SlsShipper
        from gwlb_agent.spool import Spool
        from gwlb_fleet.sls.client import Sls, SlsConfig

        sls = Sls(
            SlsConfig(
                endpoint=settings.sls_endpoint,
                project=settings.sls_project,
                access_key_id=settings.access_key_id,
                access_key_secret=settings.access_key_secret,
                ram_role=settings.ram_role,
                metadata_endpoint=settings.metadata_endpoint,
                timeout=settings.request_timeout,
            )
        )
        sinks.append(
            SlsShipper(
                sls,
                Spool(settings.spool_dir, settings.spool_max_bytes),
                Identity(config.appliance_id, config.instance_id, config.zone),
                ShipperSettings(
                    logstore=settings.sls_logstore,
                    batch_bytes=settings.batch_bytes,
                    batch_delay=settings.batch_delay,
                    transient_backoff_max=settings.retry_max_delay,
                    permanent_backoff=settings.permanent_error_delay,
                    slow_request=settings.slow_request,
                    shutdown_budget=config.shutdown_budget,
                ),
            )
        )
    return sinks


def build_inspection(policy: Policy, generation: int) -> Inspection:
    return Inspection(policy=policy, chain=Chain([RuleStage(policy)]), generation=generation)


def initial_policy(config: AgentConfig) -> Policy:
    """The policy file in inline mode. In tun mode the kernel's ruleset decides and the file is
    not read; the (unused) inline processor gets an empty policy."""
    if config.mode == "tun":
        return Policy(PolicyModel(default_action="allow"), source="<tun mode: the kernel decides>")
    return load_policy(config.policy)


class Agent:
    def __init__(self, config: AgentConfig, sinks: list[FlowSink] | None = None) -> None:
        self.config = config
        policy = initial_policy(config)
        self.exporter = RecordExporter(
            build_sinks(config) if sinks is None else sinks,
            appliance_id=config.appliance_id,
            # Tun mode: the kernel flow log hands over finished FlowRecords, nothing to convert.
            convert=None if config.mode == "tun" else FlowRecordBuilder(config.appliance_id, config.zone),
            max_queued=config.flows.max_queued_records,
        )
        flows = config.flows
        self.table = FlowTable(
            on_flow_end=self.exporter.submit,
            timeouts=Timeouts(
                tcp_idle=flows.tcp_idle_timeout,
                other_idle=flows.idle_timeout,
                export_interval=flows.export_interval,
                close_linger=flows.close_linger,
                denied_idle=flows.denied_idle_timeout,
            ),
            max_flows=flows.max_flows,
        )
        self.processor = PacketProcessor(
            self.table,
            build_inspection(policy, generation=1),
            gwlb_networks=list(config.gwlb_cidrs),
            max_inner=config.max_inner_size,
            honour_critical=config.honour_critical_options,
            mid_stream_pickup=flows.mid_stream_pickup,
        )
        self.liveness = Liveness(stall_after=config.stall_after)
        self.policy_reloads_failed = 0
        self._stop_loop = threading.Event()
        self._wake = threading.Event()
        self._pending: set[str] = set()
        self._stop_signals: set[str] = set()  # names, for the log line: a handler must not log
        self.io: BatchSocket | None = None
        self.dataplane: DataPlane | TunDataPlane | None = None
        self.kernel_path: KernelPath | None = None
        self.flow_log: KernelFlowLog | None = None
        self.flow_log_failure: BaseException | None = None
        self._flow_log_thread: threading.Thread | None = None
        self.fast_path: FastPath | None = None
        self.health: HealthServer | None = None
        self._loop_thread: threading.Thread | None = None
        self.metrics_publisher: MetricsPublisher | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        config = self.config
        self.io = BatchSocket(
            config.listen_address,
            batch=config.batch_size,
            max_datagram=config.max_inner_size + 300,
            rcvbuf=config.rcvbuf_bytes,
        )
        if config.mode == "tun":
            from gwlb_agent.kernel.records import FlowIdentities
            from gwlb_agent.kernel.tun import KernelPath  # pyroute2 only where tun mode runs

            identities = FlowIdentities(max_flows=config.flows.max_flows)
            self.kernel_path = KernelPath(config, self.io, self.liveness, identities)
            self.dataplane = self.kernel_path.dataplane
            try:
                self.flow_log = self._open_kernel_flow_log(identities)
            except BaseException:
                self._close_kernel_path()
                raise
        else:
            if config.dataplane != "socket":
                self.fast_path = self._open_fast_path()
            self.dataplane = DataPlane(
                self.io, self.processor, self.table, self.liveness, fast_path=self.fast_path
            )
        control = Control(self.liveness, self.snapshot, self.set_draining)
        try:
            self.health = HealthServer(
                config.health_address, control, [*config.gwlb_cidrs, *config.health_allow_cidrs]
            )
        except BaseException:
            self._close_kernel_path()  # nothing else would remove its rule before the next start
            self._close_fast_path()
            if self.flow_log is not None:
                self.flow_log.close()
            raise
        self.exporter.start()
        if self.flow_log is not None:
            self._flow_log_thread = threading.Thread(
                target=self._run_flow_log, name="kernel-flow-log", daemon=True
            )
            self._flow_log_thread.start()
        self._loop_thread = threading.Thread(target=self._run_loop, name="packet-loop", daemon=True)
        self._loop_thread.start()
        self.health.start()
        self.metrics_publisher = self._start_metrics_publisher()
        log.info(
            "agent started",
            extra={
                "listen": config.listen,
                "health": config.health,
                "appliance_id": config.appliance_id,
                "policy": str(config.policy),
            },
        )

    def _open_kernel_flow_log(self, identities: FlowIdentities) -> KernelFlowLog:
        """Tun mode's flow records: the kernel's verdicts and counters joined with the GWLB
        identity the tun path remembers, handed to the exporter as the inline table's are.
        Opened here, in the agent's namespace, where the appliance forwards."""
        from gwlb_agent.kernel.flowlog import KernelFlowLog
        from gwlb_agent.kernel.records import KernelFlowRecords

        config = self.config
        records = KernelFlowRecords(
            config.appliance_id,
            identities,
            zone=config.zone,
            denied_idle=config.flows.denied_idle_timeout,
            max_pending=config.flows.max_flows,
            export_interval=config.flows.export_interval,
        )
        return KernelFlowLog(records, self.exporter.submit, config.tun.nflog_group, config.tun.suricata_eve)

    def _run_flow_log(self) -> None:
        assert self.flow_log is not None
        try:
            self.flow_log.run()
        except Exception as exc:
            self.flow_log_failure = exc
            log.exception("kernel flow log failed: no flow records are written")
        finally:
            self._wake.set()  # the main thread notices and stops: records must not stop silently

    def _stop_kernel_flow_log(self, timeout: float) -> None:
        """Stop reading the kernel; the records of denied flows still open go to the exporter."""
        if self.flow_log is None or self._flow_log_thread is None:
            return
        self.flow_log.stop()
        self._flow_log_thread.join(timeout=timeout)
        if self._flow_log_thread.is_alive():
            log.error("kernel flow log did not stop in %.1fs: its last records are lost", timeout)

    def _open_fast_path(self) -> FastPath | None:
        """``dataplane = "xdp"``: the XDP fast path or an error; ``"auto"``: it, or None and why."""
        from gwlb_agent.bpf.libbpf import XdpError
        from gwlb_agent.xdp.fastpath import open_fast_path

        try:
            fast_path = open_fast_path(self.config)
        except XdpError as exc:
            if self.config.dataplane == "xdp":
                raise
            log.warning(
                "XDP fast path not used: every packet goes through the agent", extra={"reason": str(exc)}
            )
            return None
        self.processor.decided = []
        self.table.other_path = fast_path
        self.liveness.path_problem = fast_path.problem
        attachment = fast_path.program.attachment
        log.info(
            "XDP fast path attached",
            extra={"interface": attachment.ifname, "mode": attachment.mode} if attachment else {},
        )
        return fast_path

    def _close_fast_path(self) -> None:
        if self.fast_path is not None:
            self.fast_path.close()

    def _start_metrics_publisher(self) -> MetricsPublisher | None:
        settings = self.config.cloudmonitor
        if not settings.region:
            return None
        from gwlb_agent.cloudmonitor import monitor_publisher

        dimensions = {"instanceId": self.config.instance_id or self.config.appliance_id}
        if settings.scaling_group_id:
            dimensions["groupId"] = settings.scaling_group_id
        if self.config.zone:
            dimensions["zoneId"] = self.config.zone
        publisher = MetricsPublisher(
            self.snapshot,
            monitor_publisher(settings),
            dimensions,
            settings.interval,
            group_id=settings.group_id,
        )
        publisher.start()
        return publisher

    def _run_loop(self) -> None:
        assert self.dataplane is not None
        try:
            self.dataplane.run(self._stop_loop)
        finally:
            self._wake.set()  # the main thread notices a loop that ended and acts on it

    def stop(self, budget: float | None = None) -> None:
        """Stop forwarding, write a record for every live flow, hand them to the sinks and close
        them, within ``budget`` seconds (default: the configured shutdown_budget)."""
        budget = self.config.shutdown_budget if budget is None else budget
        deadline = time.monotonic() + budget
        # Its last publication may hang on CloudMonitor: stop it alongside, not before, the rest.
        publisher_stopped = self._stop_in_background(self.metrics_publisher)
        self._stop_loop.set()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout=min(5.0, budget / 4))
        self._close_kernel_path()
        self._stop_kernel_flow_log(timeout=min(2.0, budget / 4))
        finished = self.table.flush_all("shutdown")  # merges the fast path's last counts
        self._close_fast_path()
        # What is left after the sinks: the health server and sockets, which close at once.
        self.exporter.close(deadline=deadline - min(0.5, budget / 10))
        if self.health is not None:
            self.health.shutdown()
            self.health.server_close()
        if self.io is not None:
            self.io.close()
        if publisher_stopped is not None:
            publisher_stopped.join(max(0.0, deadline - time.monotonic()))
        spool = self.exporter.metrics()
        log.info(
            "agent stopped",
            extra={
                "flows_flushed": finished,
                "records_exported": self.exporter.exported,
                "records_dropped": self.exporter.dropped,
                "records_spooled": int(spool.get("sls_spool_records", 0)),
                "stop_s": round(budget - (deadline - time.monotonic()), 3),
            },
        )

    def _close_kernel_path(self) -> None:
        if self.kernel_path is not None:
            self.kernel_path.close()  # idempotent; the counters stay readable

    @staticmethod
    def _stop_in_background(publisher: MetricsPublisher | None) -> threading.Thread | None:
        if publisher is None:
            return None
        thread = threading.Thread(target=publisher.stop, name="metrics-stop", daemon=True)
        thread.start()
        return thread

    # --- control ----------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Load the policy file again; on error keep the running policy and say why. In tun
        mode there is no policy file: only the flow log is reopened."""
        if self.config.mode == "tun":
            self.exporter.request_reopen()
            return True
        try:
            policy = load_policy(self.config.policy)
        except PolicyError as exc:
            self.policy_reloads_failed += 1
            log.error("policy reload refused; the running policy stays", extra={"error": str(exc)})
            return False
        current = self.processor.inspection
        # One reference swap: the packet loop sees the old or the new inspection, never a mix.
        self.processor.inspection = build_inspection(policy, current.generation + 1)
        self.exporter.request_reopen()
        log.info("policy reloaded", extra={"generation": current.generation + 1, "rules": len(policy.rules)})
        return True

    def set_draining(self, draining: bool) -> None:
        if self.liveness.draining != draining:
            log.info("draining" if draining else "serving again")
        self.liveness.draining = draining

    def snapshot(self) -> Snapshot:
        healthy, reason = self.liveness.status()
        counters = self.dataplane.counters if self.dataplane else None
        drops = self.kernel_path.dataplane.drops if self.kernel_path is not None else self.processor.drops
        extra = self.exporter.metrics()
        if self.flow_log is not None:
            extra.update(self.flow_log.metrics())
        snapshot = Snapshot(
            packets_in=counters.packets_in if counters else 0,
            packets_out=counters.packets_out if counters else 0,
            bytes_in=counters.bytes_in if counters else 0,
            bytes_out=counters.bytes_out if counters else 0,
            drops={name: drops[i] for i, name in enumerate(DROP_NAMES)},
            # tun mode: the flows from the GWLB that conntrack holds open (the kernel's flow table)
            flows_active=self.flow_log.records.active if self.flow_log is not None else self.table.count,
            flows_created=self.table._next_seq,
            flows_picked_up=self.processor.picked_up,
            records_emitted=self.table.records_emitted,
            records_exported=self.exporter.exported,
            records_dropped=self.exporter.dropped,
            sink_errors=self.exporter.errors,
            policy_generation=self.processor.inspection.generation,
            policy_reloads_failed=self.policy_reloads_failed,
            healthy=healthy,
            draining=self.liveness.draining,
            health_reason=reason,
            extra=extra,
        )
        if self.kernel_path is not None:  # tun mode: its metrics, the offload's packets and bytes
            return self.kernel_path.dataplane.fold_into(snapshot)
        return snapshot if self.fast_path is None else self.fast_path.fold_into(snapshot)

    # --- the main thread ------------------------------------------------------------------------

    def run_until_signalled(self) -> int:
        """Install signal handlers, serve until SIGTERM/SIGINT or a loop failure; exit code."""
        for signum, action in (
            (signal.SIGTERM, "stop"),
            (signal.SIGINT, "stop"),
            (signal.SIGHUP, "reload"),
            (signal.SIGUSR1, "drain"),
            (signal.SIGUSR2, "undrain"),
        ):
            signal.signal(signum, self._signal_handler(action))
        self.start()
        systemd.notify("READY=1")
        watchdog = systemd.watchdog_interval()
        exit_code = 0
        while True:
            self._wake.wait(timeout=watchdog or 1.0)
            self._wake.clear()
            pending, self._pending = self._pending, set()
            if "reload" in pending:
                self.reload()
            if "drain" in pending or "undrain" in pending:
                self.set_draining("drain" in pending)
            if "stop" in pending:
                log.info(
                    "stop signal received: stopping",
                    extra={
                        "signals": sorted(self._stop_signals),
                        "shutdown_budget_s": self.config.shutdown_budget,
                    },
                )
                break
            if self._loop_thread is not None and not self._loop_thread.is_alive():
                log.error(
                    "packet loop died; stopping so that the service manager restarts us",
                    extra={"error": repr(self.dataplane.failure if self.dataplane else None)},
                )
                exit_code = 1
                break
            if self._flow_log_thread is not None and not self._flow_log_thread.is_alive():
                log.error(
                    "kernel flow log died; stopping so that the service manager restarts us",
                    extra={"error": repr(self.flow_log_failure)},
                )
                exit_code = 1
                break
            if watchdog and self.liveness.status()[1] != "packet loop not running":
                systemd.notify("WATCHDOG=1")
        systemd.notify("STOPPING=1")
        self.stop()
        return exit_code

    def _signal_handler(self, action: str):  # type: ignore[no-untyped-def]
        def handle(signum: int, frame: FrameType | None) -> None:
            if action == "stop":
                self._stop_signals.add(signal.Signals(signum).name)
            self._pending.add(action)
            self._wake.set()

        return handle


def wait_for_health(agent: Agent, timeout: float = 5.0) -> bool:
    """For tests and the lab: True once the loop beats."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent.liveness.status()[0] or agent.liveness.draining:
            return True
        time.sleep(0.01)
    return False
