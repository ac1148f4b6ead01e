"""The lab's cloud in one process, inside the gwlb namespace: everything that in Alibaba Cloud is
a managed service, played by the fakes and local endpoints, around the product's own code.

- Alibaba Cloud OpenAPI (gwlb_lab.api: GWLB, ESS, ECS, CloudMonitor, FC) on 0.0.0.0:9100, over one
  ``FakeCloud`` on the wall clock: the control plane's real SDK adapters call it on loopback, the
  agents publish their metrics to it at 198.19.0.1.
- SLS (gwlb_lab.sls) on 0.0.0.0:9200: the agents' flow logs, the control plane's audit log, and the
  audit queries; Panorama (gwlb_lab.panorama, HTTPS, a private CA) on 127.0.0.1:9443.
- The GWLB data plane (gwlb_lab.gwlb's ``GwlbEmulator``) on the tun and the data bridge, its members
  read from the fake GWLB's server group, its health checks written back into it.
- ESS's instances are appliance namespaces running the real agent (gwlb_lab.cloud.appliances).
- A VM-Series fleet's log intake: the panlogs function (functions/panlogs.py) behind FC's HTTP
  trigger on 198.19.0.1:9300, HTTPS (gwlb_lab.cloud.intake); set-up writes Panorama's log
  forwarding to it, and the stand-in firewalls forward their traffic and threat logs there.
- EventBridge and Function Compute: ESS's pending lifecycle actions, FC's delayed invocations,
  CloudMonitor's alarm events and the timers go to the real handlers (functions/*.py), with FC's
  retries and dead letters (gwlb_lab.cloud.functions).

Time passes for the fakes here: ``FakeGwlb.tick()`` once a second (a member is Adding for a few
seconds, Draining for the drain time, then gone), ESS's lifecycle actions time out on the wall
clock, ESS replaces unhealthy instances and keeps the group at its desired capacity.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from gwlb_fleet.alibaba.errors import ApiError
from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.alibaba.fakes.cmsrules import UNHEALTHY_METRIC_NAME
from gwlb_fleet.alibaba.fakes.ecs import FakeEcs
from gwlb_fleet.alibaba.fakes.gwlb import FakeGwlb
from gwlb_fleet.alibaba.mns import queue_of_target as mns_queue_of
from gwlb_fleet.alibaba.ram import SERVICE_ROLES
from gwlb_fleet.clock import SystemClock
from gwlb_fleet.events import LIFECYCLE_SOURCE, LIFECYCLE_TYPE_OF, alarm_message
from gwlb_fleet.panos.fakes import FakePanorama
from gwlb_fleet.ports import MetricPoint
from gwlb_lab.api import LocalOpenApi
from gwlb_lab.cloud.alarms import AlarmEvaluator
from gwlb_lab.cloud.appliances import POLICY_RULES, ApplianceHost
from gwlb_lab.cloud.config import (
    FUNCTIONS,
    GWLB_ADDRESS,
    OPENAPI_PORT,
    PANLOGS_PORT,
    PANLOGS_TOKEN_SECRET,
    PANORAMA_KEY_SECRET,
    PANORAMA_PORT,
    SLS_PORT,
    SLS_PROJECT,
    CloudConfig,
    appliance_address,
)
from gwlb_lab.cloud.functions import FunctionRunner, real_handlers
from gwlb_lab.cloud.intake import HttpTrigger
from gwlb_lab.cloud.network import GWLB_ID, seed_account
from gwlb_lab.control import ControlError, ControlServer
from gwlb_lab.gwlb.config import EmulatorConfig
from gwlb_lab.gwlb.encap import Encapsulator
from gwlb_lab.gwlb.health import HealthCheckSettings
from gwlb_lab.gwlb.members import FakeGwlbMembers
from gwlb_lab.gwlb.service import GwlbEmulator
from gwlb_lab.netns import alive
from gwlb_lab.panorama import LocalPanorama
from gwlb_lab.sls import LocalSls
from gwlb_lab.sls.client import set_up, sls_config

log = logging.getLogger("gwlb_lab.cloud")

TICK_S = 0.25
GWLB_INSTANCE = GWLB_ID  # the GWLB the server group is related to: the unhealthy rule names it (F-CMS-10)
LAB_ACCOUNT = "1234567890123456"
LAB_CONTACT_GROUP = "gwlb-lab-ops"


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch * 1000) % 1000:03d}Z"


class LabCloud:
    def __init__(self, config: CloudConfig) -> None:
        self.config = config
        self.started = time.time()
        self.stop_requested = threading.Event()  # wakes wait()
        self.stopping = threading.Event()  # the teardown began: the cloud's threads end
        self._stop_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        plan, t = config.plan, config.timings
        self.cloud = FakeCloud(clock=SystemClock())
        # ECS instances are appliance namespaces: a management ENI (primary, 10.0.x.y: what
        # Panorama sees) and a data ENI (secondary) whose address is the namespace's, where the
        # GWLB sends Geneve once the control plane registers that ENI (F-GWLB-2).
        self.cloud.ecs = FakeEcs(clock=self.cloud.clock, data_interface=True,
                                 data_ip_for=appliance_address)
        self.cloud.ess.ecs = self.cloud.ecs
        # Member phases last seconds (tick() once a second), whoever reads the group.
        self.cloud.gwlb = FakeGwlb(clock=self.cloud.clock, add_polls=t.adding_s, remove_polls=1,
                                   drain_polls=t.drain_s, advance_on_read=False, ecs=self.cloud.ecs)
        self.cloud.seed_fleet(plan.scaling_group_id, plan.server_group_id, plan.listener_id,
                              min_size=plan.min_size, max_size=plan.max_size, desired=0,
                              hook_timeout_s=plan.hook_timeout_s, hooks=False)  # setup makes them
        # What an account has before set-up: the service roles (F-RAM-2) and a contact group.
        self.cloud.ram.roles.update(SERVICE_ROLES)
        self.cloud.cms.contact_groups.append(LAB_CONTACT_GROUP)
        # The network, roles and instance type `gwlb-fleet preflight` reads (gwlb_lab.cloud.network).
        seed_account(self.cloud, plan)
        # The operator's rulebase: the appliances' policy rules (gwlb_lab.cloud.appliances), which
        # set-up attaches log forwarding to; the template that holds the HTTP server profile.
        self.panorama = FakePanorama(device_groups=(plan.device_group,),
                                     template_stacks=(plan.template_stack,),
                                     license_managers=(plan.license_manager,),
                                     templates=(plan.template,),
                                     security_rules={plan.device_group: POLICY_RULES})
        self.api: LocalOpenApi | None = None
        self.sls: LocalSls | None = None
        self.local_panorama: LocalPanorama | None = None
        self.emulator: GwlbEmulator | None = None
        self.control: ControlServer | None = None
        self.intake: HttpTrigger | None = None  # the panlogs function's HTTP trigger (VM-Series)
        self.host = ApplianceHost(config, self.cloud.ecs, self.panorama)
        self.alarms = AlarmEvaluator(self.cloud.cms, time_scale=t.alarm_period_s / 60)
        self.functions: FunctionRunner | None = None
        self.delivered: set[str] = set()  # lifecycle action tokens already sent as events
        self.health_log: list[dict[str, Any]] = []  # the emulator's health transitions
        self.traffic: dict[str, dict[str, Any]] = {}  # per member: its last counters
        self._health_seen: dict[str, str] = {}
        self._state_store: Any = None
        self._next_timer = {"health": 0.0, "reconcile": time.time() + config.timings.reconcile_timer_s}

    # --- start and stop ------------------------------------------------------------------------

    def start(self) -> None:
        config, plan, t = self.config, self.config.plan, self.config.timings
        run = config.run_dir
        self.api = LocalOpenApi(self.cloud, "0.0.0.0", OPENAPI_PORT).start()
        self.sls = LocalSls("0.0.0.0", SLS_PORT, db=str(run / "sls.db")).start()
        self._set_up_sls()
        self.local_panorama = LocalPanorama(run / "panorama", "127.0.0.1", PANORAMA_PORT,
                                            panorama=self.panorama).start()
        # Panorama's key is a KMS secret (F-KMS-1): the functions read it from the lab's KMS.
        self.cloud.kms.put_secret(PANORAMA_KEY_SECRET, self.local_panorama.api_key)
        panlogs_url = self._start_intake() if self.host.vmseries else ""
        os.environ.update(config.function_env(
            openapi=f"127.0.0.1:{OPENAPI_PORT}", sls=self.sls.endpoint,
            panorama_host=self.local_panorama.host, panorama_ca=self.local_panorama.ca_file,
            panlogs_url=panlogs_url))
        self._set_up()
        self.emulator = GwlbEmulator(
            EmulatorConfig(
                tun="gwlb0", local_address=GWLB_ADDRESS, scheduler=t.scheduler,
                failover_mode=t.failover_mode, connection_drain=True, drain_timeout=float(t.drain_s),
                health=HealthCheckSettings(protocol="http", port=8080, path="/health",
                                           interval=t.health_interval_s, timeout=t.health_timeout_s,
                                           healthy_threshold=t.healthy_threshold,
                                           unhealthy_threshold=t.unhealthy_threshold)),
            FakeGwlbMembers(self.cloud.gwlb, plan.server_group_id, plan.listener_id))
        self.emulator.start()
        self.functions = FunctionRunner(real_handlers(FUNCTIONS), t.function_timeout_s, t.workers,
                                        retry_delays_s=t.fc_retry_delays_s)
        self.functions.start()
        # ESS brings the enabled group up to its size, through the scale-out hook.
        with self.cloud.ess._lock:
            self.cloud.ess.groups[plan.scaling_group_id].desired = plan.desired
        for target, name in ((self._tick_forever, "cloud-tick"), (self._watch_forever, "appliance-watch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self.control = ControlServer(config.socket_path, self.routes()).start()
        log.info("lab cloud started", extra={"openapi": f"{GWLB_ADDRESS}:{OPENAPI_PORT}",
                                             "sls": f"{GWLB_ADDRESS}:{SLS_PORT}",
                                             "panorama": self.local_panorama.host})

    def _start_intake(self) -> str:
        """The panlogs function behind its HTTP trigger, the token it checks in the lab's KMS (as
        set-up's KMS step would put it from the deployer's environment: F-KMS-1): its URL."""
        handler = real_handlers(("panlogs",))["panlogs"]
        self.intake = HttpTrigger(handler, self.config.run_dir / "intake", GWLB_ADDRESS, PANLOGS_PORT,
                                  timeout_s=self.config.timings.function_timeout_s).start()
        self.cloud.kms.put_secret(PANLOGS_TOKEN_SECRET, secrets.token_urlsafe(24))
        self.host.intake_ca = self.intake.ca_file
        return self.intake.url

    def _set_up_sls(self) -> None:
        assert self.sls is not None
        for step in set_up(self.sls, SLS_PROJECT):
            log.info("sls setup", extra={"step": str(step)})

    def _set_up(self) -> None:
        """``gwlb-fleet setup``'s code through the real SDK adapters against the local endpoints:
        queues, the application group, alarm rules and their targets, lifecycle hooks (SLS:
        _set_up_sls). Before any appliance launches: their agents' config takes the group's id."""
        from gwlb_fleet.deploy import cloud as deploy_cloud
        from gwlb_fleet.deploy import run
        from gwlb_fleet.settings import load_settings

        x = deploy_cloud.executor(load_settings(), planning=False)
        x.extra = {**x.extra, "sls": lambda: []}  # the lab's SLS is set up by _set_up_sls
        run.setup(load_settings(), x)
        for line in x.report:
            log.info("setup", extra={"step": line})
        # the agents publish into the application group the scaling rules address (F-CMS-11)
        self.host.monitor_group_id = int(x.outputs["monitor_group_id"])

    def stop(self) -> None:
        """Everything, in an order that loses nothing: no new events, agents flush to SLS."""
        with self._stop_lock:
            if self.stopping.is_set():
                return
            self.stopping.set()
        for thread in self._threads:
            thread.join(5)
        if self.functions is not None:
            self.functions.stop()
        self.host.stop_all()  # a VM-Series sends its last logs to the intake
        if self.emulator is not None:
            self.emulator.stop()
        if self.intake is not None:
            self.intake.stop()
        for server in (self.control, self.api, self.local_panorama):
            if server is not None:
                with contextlib.suppress(OSError):
                    server.stop()
        if self.sls is not None:
            time.sleep(0.5)  # the agents' last batches
            self.sls.stop()
        log.info("lab cloud stopped")

    def wait(self) -> None:
        """Until a stop is asked for, the runner that owns this cloud is gone, or the GWLB data
        path failed."""
        while not self.stop_requested.wait(0.5):
            owner = self.config.owner_pid
            if owner and not alive(owner):
                log.warning("the runner is gone: stopping", extra={"owner_pid": owner})
                break
            if self.emulator is not None and self.emulator.failed:
                log.error("the GWLB data path failed: stopping",
                          extra={"error": self.emulator.data_path_error})
                break

    # --- time passing -------------------------------------------------------------------------------

    def _tick_forever(self) -> None:
        last_second = 0.0
        while not self.stopping.wait(TICK_S):
            now = time.time()
            try:
                if now - last_second >= 1.0:
                    last_second = now
                    self._each_second(now)
                self._deliver(now)
            except Exception:
                log.exception("cloud tick failed")

    def _each_second(self, now: float) -> None:
        plan = self.config.plan
        self.cloud.gwlb.tick()
        self.cloud.ess.tick()
        activity = self.cloud.ess.replace_unhealthy(plan.scaling_group_id)
        if activity:
            log.info("ESS started an activity of its own", extra={"activity_id": activity})
        self.host.sync()
        if self.emulator is not None:
            self.alarms.publish("acs_gwlb", MetricPoint(
                UNHEALTHY_METRIC_NAME, float(self.emulator.unhealthy_count()),
                {"instanceId": GWLB_INSTANCE, "serverGroupId": plan.server_group_id}, int(now * 1000)))
            self._follow_emulator(now)
        if self.api is not None and len(self.api.requests) > 2000:
            self.api.clear()  # the endpoint records every request for contract tests; not needed here

    def _owner_of(self, server_id: str) -> str:
        """The instance whose data ENI a member is (F-GWLB-2), "" when ECS no longer has it."""
        eni = self.cloud.ecs.eni(server_id)
        return str(eni["InstanceId"]) if eni else ""

    def _follow_emulator(self, now: float) -> None:
        assert self.emulator is not None
        status = self.emulator.status()
        for member in status.get("members", []):
            member_id = str(member["id"])
            self.traffic[member_id] = {k: member.get(k, 0) for k in (
                "packets_sent", "bytes_sent", "packets_returned", "bytes_returned", "flows_created",
                "flows_moved_in", "flows_moved_out")}
            health = str(member["health"])
            if self._health_seen.get(member_id) != health:
                if member_id in self._health_seen or health != "initial":
                    at = now - float(member.get("health_for_s") or 0.0)
                    self.health_log.append({"member": member_id, "health": health, "at": at,
                                            "reason": member.get("health_reason", "")})
                self._health_seen[member_id] = health

    def _deliver(self, now: float) -> None:
        """What EventBridge and FC would deliver now."""
        assert self.functions is not None
        plan, t = self.config.plan, self.config.timings
        for action in self.cloud.ess.eventbridge_actions(plan.scaling_group_id):  # F-ESS-3
            if action.token in self.delivered:
                continue
            self.delivered.add(action.token)
            self.functions.submit("lifecycle", json.dumps(self.hook_event(action)).encode(), "ess hook")
        for call in self.cloud.fc.due():
            function = call.function.rsplit("-", 1)[-1]
            self.functions.submit(function, call.payload, "fc delayed call")
        for notification in self.alarms.evaluate():
            self._push_to_targets(notification)
        for queue, function in self._queue_triggers():
            for message in self.cloud.mns.receive(queue):  # the MNS trigger (F-FCT-1, F-FCT-4)
                event = alarm_message(message["MessageBody"], queue=queue, region=plan.region,
                                      account_id=LAB_ACCOUNT, message_id=message["MessageId"], time=_iso(now))
                self.functions.submit(function, json.dumps(event).encode(), "mns alarm")
        for function, every in (("health", t.health_timer_s), ("reconcile", t.reconcile_timer_s)):
            if now >= self._next_timer[function]:
                self._next_timer[function] = now + every
                timer = {"triggerTime": _iso(now), "triggerName": f"{function}-timer", "payload": ""}
                self.functions.submit(function, json.dumps(timer).encode(), "timer")

    def _push_to_targets(self, notification: Any) -> None:
        """As CloudMonitor does: the alarm body to each of the rule's targets (what
        PutMetricRuleTargets stored, F-CMS-6/7/14). A rule with no target delivers nothing."""
        rule = notification.rule
        with self.cloud.cms._lock:
            targets = list(self.cloud.cms.targets.get(rule.rule_id, []))
        if not targets:
            log.warning("alarm with no target: nothing delivered", extra={"rule_id": rule.rule_id})
            return
        event = notification.event(self.config.plan.region, LAB_ACCOUNT)
        for target in targets:
            queue = mns_queue_of(target["Arn"])
            if queue is None:
                log.warning("alarm target is not an MNS queue", extra={"arn": target["Arn"]})
                continue
            try:
                self.cloud.mns.send(queue, event["data"]["messageBody"])
            except ApiError as exc:
                log.warning("alarm target queue refused it", extra={"queue": queue, "code": exc.code})

    def _queue_triggers(self) -> list[tuple[str, str]]:
        """template.yml's MNS triggers: each alarm queue feeds one function."""
        from gwlb_fleet.settings import load_settings

        settings = load_settings()
        return [(settings.scale_alarm_queue, "scale"), (settings.health_alarm_queue, "health")]

    def hook_event(self, action: Any) -> dict[str, Any]:
        """The EventBridge event ESS sends for a pending lifecycle action."""
        transition = action.hook.transition
        plan = self.config.plan
        return {
            "specversion": "1.0",
            "id": f"ess-{action.token}",
            "source": LIFECYCLE_SOURCE,
            "type": LIFECYCLE_TYPE_OF[transition],
            "subject": f"acs:ess:{plan.region}:1234567890123456:scalinggroup/{plan.scaling_group_id}",
            "time": _iso(time.time()),
            "aliyunregionid": plan.region,
            "data": {
                "lifecycleHookId": action.hook.hook_id,
                "lifecycleActionToken": action.token,
                "scalingGroupId": plan.scaling_group_id,
                "lifecycleTransition": transition,
                "defaultResult": action.hook.default_result,
                "scalingActivityId": action.activity_id,
                "instanceIds": list(action.instance_ids),
            },
        }

    def _watch_forever(self) -> None:
        while not self.stopping.wait(1.0):
            try:
                self.host.watch()
                self.host.forward_logs()
            except Exception:
                log.exception("watching the appliances failed")

    # --- control ----------------------------------------------------------------------------------

    def routes(self) -> dict[tuple[str, str], Any]:
        return {
            ("GET", "/status"): lambda body: self.status(),
            ("POST", "/kill"): lambda body: self._appliance_action(body, "kill"),
            ("POST", "/pause"): lambda body: self._appliance_action(body, "pause"),
            ("POST", "/resume"): lambda body: self._appliance_action(body, "resume"),
            ("POST", "/audit"): lambda body: self.audit_queries(float(body.get("since", self.started - 60))),
            ("GET", "/flow-records"): lambda body: self.flow_records(),
            ("POST", "/stop"): self._stop_route,
        }

    def _stop_route(self, body: dict[str, Any]) -> dict[str, Any]:
        self.stop_requested.set()
        return {"stopping": True}

    def _appliance_action(self, body: dict[str, Any], action: str) -> dict[str, Any]:
        name = str(body.get("appliance", ""))
        try:
            return self.host.signal(name, action)
        except KeyError:
            known = ", ".join(a["name"] for a in self.host.snapshot() if a["state"] != "gone")
            raise ControlError(f"no appliance {name!r} (running: {known or 'none'})") from None
        except ProcessLookupError as exc:
            raise ControlError(str(exc)) from None

    def status(self) -> dict[str, Any]:
        plan = self.config.plan
        ess = self.cloud.ess
        with ess._lock:
            group = ess.groups[plan.scaling_group_id]
            instances = [{"instance_id": i.instance_id, "lifecycle_state": i.lifecycle_state,
                          "health": i.health, "zone": i.zone} for i in group.instances.values()]
            activities = [{"activity_id": a.activity_id, "transition": a.transition, "status": a.status,
                           "description": a.description, "instances": list(a.instance_ids),
                           "start_time": a.start_time} for a in ess.activities.values()]
            sizes = {"min": group.min_size, "max": group.max_size, "desired": group.desired,
                     "total": len(group.instances)}
        gwlb = self.cloud.gwlb
        with gwlb._lock:
            members = [{"server_id": m.server_id, "server_type": m.server_type, "ip": m.server_ip,
                        "instance_id": self._owner_of(m.server_id), "status": m.status,
                        "health": gwlb.health.get(m.server_id, ("Initial", ""))[0]}
                       for m in gwlb.server_groups[plan.server_group_id].members.values()]
        functions = self.functions
        return {
            "time": time.time(),
            "started": self.started,
            "config": {"scaling_group_id": plan.scaling_group_id, "server_group_id": plan.server_group_id,
                       "timings": self.config.timings.__dict__},
            "group": sizes,
            "instances": instances,
            "activities": activities[-10:],
            "records": self._records(),
            "members": members,
            "emulator": self.emulator.status() if self.emulator else {},
            "health_log": self.health_log[-50:],
            "traffic": self.traffic,
            "appliances": self.host.snapshot(),
            "alarms": self.alarms.snapshot(),
            "functions": {
                "pending": functions.pending if functions else 0,
                "counts": dict(functions.counts) if functions else {},
                "recent": list(functions.recent)[-40:] if functions else [],
                "dead_letters": list(functions.dead_letters) if functions else [],
            },
            "panorama": self._panorama(),
            "audit": self._recent_audit(),
            "sls": self._sls_counts(),
            "panlogs": self._panlogs(),
        }

    def _panlogs(self) -> dict[str, Any]:
        """The log intake's answers by status, and each firewall's forwarding counts."""
        if self.intake is None:
            return {}
        return {"intake": self.intake.snapshot(),
                "firewalls": {a["serial"]: a["panlogs"] for a in self.host.snapshot() if a["panlogs"]}}

    def _records(self) -> list[dict[str, Any]]:
        """Our records, from the control plane's state store (read, never written, here)."""
        if self._state_store is None:
            from gwlb_fleet.settings import load_settings
            from gwlb_fleet.state.sqlite import SqliteStateStore

            self._state_store = SqliteStateStore.from_settings(load_settings())
        store = self._state_store
        return [{"instance_id": r.instance_id, "state": r.state, "serial": r.serial,
                 "data_ip": r.data_ip, "zone": r.zone, "steps": sorted(r.steps, key=lambda s: r.steps[s]),
                 "updated": r.updated, "last_error": r.last_error,
                 "step_times": dict(r.steps)}
                for r in store.list_instances(self.config.plan.scaling_group_id)]

    def _panorama(self) -> dict[str, Any]:
        p = self.panorama
        with p._lock:
            return {
                "devices": [{"serial": s, "ip": p.firewalls[s].ip if s in p.firewalls else "",
                             "connected": p.firewalls[s].connected if s in p.firewalls else False,
                             "sessions": p.firewalls[s].active_sessions if s in p.firewalls else 0}
                            for s in sorted(p.running.managed)],
                "licensed": sorted(p.licences),
                "ever_registered": sorted(p.firewalls),
                "commits": [{"job_id": j.job_id, "status": j.status, "result": j.result,
                             "description": j.description} for j in p.jobs.values()],
            }

    def _recent_audit(self, limit: int = 40) -> list[dict[str, str]]:
        if self.sls is None:
            return []
        logs = self.sls.store.logs(SLS_PROJECT, "fleet-audit")
        return [dict(entry.contents) for entry in logs[-limit:]]

    def _sls_counts(self) -> dict[str, int]:
        if self.sls is None:
            return {}
        store = self.sls.store
        return {"flow-logs": store.count(SLS_PROJECT, "flow-logs"),
                "fleet-audit": store.count(SLS_PROJECT, "fleet-audit")}

    def flow_records(self) -> dict[str, Any]:
        """The flow records in SLS by action, rule and stage, and how many of each carry this GWLB's
        identity (its address and the endpoint id of its Geneve options): what the appliances
        recorded themselves, in the columns the audit queries do not show."""
        assert self.sls is not None
        endpoint = f"{Encapsulator().endpoint_id:016x}"
        groups: dict[tuple[str, str, str], dict[str, int]] = {}
        for entry in self.sls.store.logs(SLS_PROJECT, "flow-logs"):
            record = entry.contents
            if record.get("kind") != "flow":
                continue
            key = (record.get("action", ""), record.get("rule", ""), record.get("stage", ""))
            counts = groups.setdefault(key, {"records": 0, "gwlb_identity": 0})
            counts["records"] += 1
            if record.get("gwlb_ip") == GWLB_ADDRESS and record.get("endpoint_id") == endpoint \
                    and record.get("vni", "") != "":
                counts["gwlb_identity"] += 1
        return {"groups": [{"action": action, "rule": rule, "stage": stage, **counts}
                           for (action, rule, stage), counts in sorted(groups.items())]}

    def audit_queries(self, since: float) -> dict[str, Any]:
        """Every audit query (gwlb_fleet.sls.queries), through the real SDK against the local SLS."""
        from gwlb_fleet.sls import queries
        from gwlb_fleet.sls.client import Sls

        assert self.sls is not None
        sls = Sls(sls_config(self.sls, SLS_PROJECT))
        until = int(time.time()) + 1
        answers: dict[str, Any] = {}
        for name, query in queries.QUERIES.items():
            try:
                rows = queries.run(sls, query, int(since), until)
                answers[name] = {"title": query.title, "logstore": query.logstore, "rows": rows,
                                 "table": queries.render_table(query, rows)}
            except Exception as exc:  # noqa: BLE001 - one failing query is reported, the others still run
                answers[name] = {"title": query.title, "logstore": query.logstore, "rows": [],
                                 "error": f"{type(exc).__name__}: {exc}"}
        return answers



def default_run_dir() -> Path:
    return Path.cwd() / ".lab" / "cloud"
