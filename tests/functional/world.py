"""A fleet in memory for the flows' functional tests: the fake cloud, Panorama, the appliances,
the audit log and a real SQLite state store, driven through the real FC handlers.

ESS's lifecycle actions become the EventBridge events ESS would send; CloudMonitor's alarms the
MNS queue messages the queue triggers deliver (gwlb_fleet.events' builders); the continuations the
flows schedule run when the fake clock reaches them. ``settle()`` plays both until nothing is
left to do, the way EventBridge, FC and time would.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.alibaba.fakes.ess import FakeLifecycleAction
from gwlb_fleet.app import App
from gwlb_fleet.appliance.fakes import FakeAppliances
from gwlb_fleet.events import LIFECYCLE_SOURCE, LIFECYCLE_TYPE_OF, alarm_body, alarm_message
from gwlb_fleet.panos.fakes import FakePanorama
from gwlb_fleet.settings import Settings
from gwlb_fleet.sls.fakes.auditlog import FakeAuditLog
from gwlb_fleet.state.records import InstanceRecord
from gwlb_fleet.state.sqlite import SqliteStateStore
from gwlb_functions import ASYNC_RETRIES

GROUP = "asg-bp1gwlbfleet0001"
SERVER_GROUP = "sgp-bp1example0001"
LISTENER = "lsn-bp1example0001"
ACCOUNT = "1234567890123456"
SCALE_QUEUE = "gwlb-fleet-scale-alarms"
HEALTH_QUEUE = "gwlb-fleet-health-alarms"


@dataclass
class Context:
    """What the handlers read of FC's context."""

    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    remaining_ms: int = 300_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


class World:
    def __init__(self, tmp_path: Path, monkeypatch: Any, kind: str = "vmseries", **settings: Any) -> None:
        self.cloud = FakeCloud()
        self.clock = self.cloud.clock
        self.cloud.seed_fleet(
            GROUP, SERVER_GROUP, LISTENER, min_size=0, max_size=4, desired=0, hook_timeout_s=900
        )
        self.panorama = FakePanorama()
        self.appliances = FakeAppliances()
        self.audit = FakeAuditLog()
        self.kind = kind
        self.settings = Settings(
            **{  # type: ignore[arg-type]
                "FLEET_REGION": "cn-hangzhou",
                "SCALING_GROUP_ID": GROUP,
                "GWLB_SERVER_GROUP_ID": SERVER_GROUP,
                "GWLB_LISTENER_ID": LISTENER,
                "APPLIANCE_KIND": kind,
                "STATE_SQLITE_PATH": str(tmp_path / "state.db"),
                "PANORAMA_LICENSE_MANAGER": "gwlb-lm",
                "FUNCTION_TIMEOUT_S": 300,
                **{k.upper(): v for k, v in settings.items()},
            }
        )
        self.state = SqliteStateStore.from_settings(self.settings)
        self.app = App(
            self.settings,
            state=self.state,
            gwlb=self.cloud.gwlb,
            ess=self.cloud.ess,
            ecs=self.cloud.ecs,
            monitor=self.cloud.cms,
            scheduler=self.cloud.fc,
            panorama=self.panorama,
            licensing=self.panorama.licensing("gwlb-lm"),
            appliance=self.appliances,
            audit=self.audit,
            secrets=self.cloud.kms.port(self.settings.secret_cache_ttl_s, self.clock),
            clock=self.clock,
        )
        import gwlb_fleet.app

        # The handlers are the real functions/*.py; their App is ours.
        monkeypatch.setattr(gwlb_fleet.app, "get_app", lambda: self.app)
        self.delivered: set[str] = set()  # lifecycle action tokens whose event was sent
        self.retries: list[tuple[str, bytes, int]] = []  # (function, event, attempts): FC's async retry
        self.dead_letters: list[tuple[str, bytes, str]] = []
        self.boot_serials: dict[str, str] = {}

    # --- delivering events ---------------------------------------------------------------------------

    def handler(self, function: str) -> Callable[[bytes, Any], dict[str, Any]]:
        import importlib

        module = importlib.import_module(f"gwlb_functions.{function}")
        return module.handler  # type: ignore[no-any-return]

    def invoke(self, function: str, event: bytes | dict[str, Any]) -> dict[str, Any]:
        raw = event if isinstance(event, bytes) else json.dumps(event).encode()
        return self.handler(function)(raw, Context())

    def hook_event(
        self, action: FakeLifecycleAction, event_id: str | None = None, **drop: bool
    ) -> dict[str, Any]:
        """The EventBridge event ESS sends for a pending lifecycle action."""
        data = {
            "lifecycleHookId": action.hook.hook_id,
            "lifecycleActionToken": action.token,
            "scalingGroupId": GROUP,
            "lifecycleTransition": action.hook.transition,
            "scalingActivityId": action.activity_id,
            "instanceIds": list(action.instance_ids),
            "defaultResult": action.hook.default_result,
        }
        for key in drop:
            data.pop(key, None)
        return {
            "specversion": "1.0",
            "id": event_id or f"ev-{action.token}",
            "source": LIFECYCLE_SOURCE,
            "type": LIFECYCLE_TYPE_OF[action.hook.transition],
            "time": "2026-11-21T10:00:00Z",
            "data": data,
        }

    def alarm(
        self,
        name: str,
        level: str = "CRITICAL",
        value: float = 100.0,
        metric: str = "active_flows",
        event_id: str | None = None,
        batch_id: str | None = None,
    ) -> dict[str, Any]:
        """A CloudMonitor alarm as the queue trigger delivers it (F-CMS-14, F-FCT-4). One call is
        one notification (a new batch) unless ``event_id`` or ``batch_id`` say which."""
        health = name.startswith(self.settings.health_alarm_prefix)
        body = alarm_body(
            name,
            name,
            level,
            pre_level="OK" if level != "OK" else "CRITICAL",
            resources={"instanceId": "gwlb-bp1example0001"} if health else {"groupId": GROUP},
            metric_name=f"{metric}#60",
            namespace="acs_gwlb" if health else f"acs_customMetric_{ACCOUNT}",
            statistics="Value" if health else "Average",
            value=value,
            time_ms=int(self.clock() * 1000),
            batch_id=batch_id or (f"batch-{event_id}" if event_id else ""),
            user_id=ACCOUNT,
        )
        return alarm_message(
            body,
            queue=HEALTH_QUEUE if health else SCALE_QUEUE,
            region=self.settings.region,
            account_id=ACCOUNT,
            event_id=event_id or uuid.uuid4().hex,
        )

    def timer(self) -> dict[str, Any]:
        return {"triggerTime": f"t{self.clock()}", "triggerName": "reconcile", "payload": ""}

    def new_hook_actions(self) -> list[FakeLifecycleAction]:
        fresh = [a for a in self.cloud.ess.pending_actions(GROUP) if a.token not in self.delivered]
        self.delivered.update(a.token for a in fresh)
        return fresh

    def deliver_hooks(self) -> list[dict[str, Any]]:
        return [self.invoke("lifecycle", self.hook_event(a)) for a in self.new_hook_actions()]

    def run_continuations(self) -> int:
        calls = self.cloud.fc.due()
        for call in calls:
            self.invoke("lifecycle", call.payload)
        return len(calls)

    # --- the appliances: booting, registering, answering -------------------------------------------------

    def boot(self, instance_id: str, healthy: bool = True, flows: int = 0) -> None:
        """The appliance came up: a VM-Series registered with Panorama; its data plane answers."""
        instance = self.ecs_instance(instance_id)
        if self.kind == "vmseries":
            serial = self.boot_serials.setdefault(instance_id, f"0079000{len(self.boot_serials) + 1:05d}")
            if serial not in self.panorama.firewalls:
                self.panorama.add_firewall(serial, instance.private_ip)
        self.appliances.set(instance.data_ip or instance.private_ip, healthy=healthy, active_flows=flows)

    def ecs_instance(self, instance_id: str) -> Any:
        return self.cloud.ecs.describe_instances([instance_id], _no_deadline())[0]

    def settle(self, step_s: float = 20.0, limit: int = 200, each: Callable[[], None] | None = None) -> None:
        """Let time pass: deliver hook events, run due continuations, retry what failed (as FC's
        async invocation does, as often as template.yml says, then the dead letter), until nothing
        is left."""
        for _ in range(limit):
            if each:
                each()
            self.cloud.gwlb.tick()
            self.cloud.ess.tick()
            self.disconnect_released()
            self.panorama.finish_jobs()
            retries, self.retries = self.retries, []
            for function, event, attempts in retries:
                self._attempt(function, event, attempts)
            for action in self.new_hook_actions():
                self._attempt("lifecycle", json.dumps(self.hook_event(action)).encode(), 0)
            for call in self.cloud.fc.due():
                self._attempt("lifecycle", call.payload, 0)
            if not self.retries and not self.cloud.fc.scheduled and not self.new_pending():
                return
            self.clock.advance(step_s)
        raise AssertionError(f"the fleet did not settle: {self.retries or self.cloud.fc.scheduled}")

    def disconnect_released(self) -> None:
        """A firewall whose instance ECS released no longer talks to Panorama."""
        live = {i.private_ip for i in self.cloud.ecs.instances.values()}
        for serial, firewall in list(self.panorama.firewalls.items()):
            if firewall.connected and firewall.ip not in live:
                self.panorama.set_connected(serial, False)

    def _attempt(self, function: str, event: bytes, attempts: int) -> None:
        try:
            self.invoke(function, event)
        except Exception as exc:  # noqa: BLE001 - FC retries whatever the handler raised
            if attempts >= ASYNC_RETRIES[function]:  # FC's async invocation: then the dead letter
                self.dead_letters.append((function, event, repr(exc)))
            else:
                self.retries.append((function, event, attempts + 1))

    def new_pending(self) -> bool:
        return any(a.token not in self.delivered for a in self.cloud.ess.pending_actions(GROUP))

    # --- looking ----------------------------------------------------------------------------------------

    def record(self, instance_id: str) -> InstanceRecord:
        record = self.state.get_instance(instance_id)
        assert record is not None, instance_id
        return record

    def ess_instances(self) -> dict[str, str]:
        return {
            i.instance_id: i.lifecycle_state for i in self.cloud.ess.list_instances(GROUP, _no_deadline())
        }

    def members(self) -> dict[str, str]:
        """Members by the instance whose data ENI each is (registered as ServerType Eni)."""
        members = self.cloud.gwlb.list_members(SERVER_GROUP, _no_deadline())
        assert all(m.server_type == "Eni" for m in members), members
        return {instance_of_eni(m.server_id): m.status for m in members}

    def set_health(self, instance_id: str, status: Any, reason: str = "") -> None:
        """The GWLB's health check of the instance's member: its data ENI."""
        self.cloud.gwlb.set_health(eni_of(instance_id), status, reason)

    def member_enis(self) -> dict[str, str]:
        return {m.server_id: m.status for m in self.cloud.gwlb.list_members(SERVER_GROUP, _no_deadline())}

    def consistent(self) -> None:
        """The four records agree (ESS, the GWLB server group, Panorama, the licences) with the
        state store, both ways: every in-service instance is a member and (VM-Series) a licensed,
        managed device; nothing gone holds a member, a device or a licence — but a licence whose
        release was given up, which its record says; and nothing is a member, a device or a
        licence without a record that owns it."""
        members, ess = self.members(), self.ess_instances()
        serials = {d.serial for d in self.panorama.devices(_no_deadline())}
        records = list(self.state.list_instances(GROUP))
        for record in records:
            if record.state == "in_service":
                assert record.instance_id in ess, record
                assert members.get(record.instance_id) == "Available", (record.instance_id, members)
                if self.kind == "vmseries":
                    assert record.serial in serials and self.panorama.licensed(record.serial), record
            if record.state == "gone":
                assert record.instance_id not in members, (record.instance_id, members)
                if self.kind == "vmseries" and record.serial:
                    assert record.serial not in serials, record.serial
                    released = not self.panorama.licensed(record.serial)
                    assert released or record.gave_up("licence_released"), record.serial
        owners = {r.instance_id for r in records if r.state != "gone"}
        assert set(members) <= owners, ("members without a record", set(members) - owners)
        in_service = {i for i, lifecycle in ess.items() if lifecycle == "InService"}
        recorded = {r.instance_id for r in records if r.state == "in_service"}
        assert in_service <= recorded, ("in service without a record", in_service - recorded)
        if self.kind == "vmseries":
            owned = {r.serial for r in records if r.state != "gone" and r.serial}
            flagged = {r.serial for r in records if r.gave_up("licence_released")}
            assert serials <= owned, ("Panorama devices no record owns", serials - owned)
            licensed = set(self.panorama.licences)
            assert licensed <= owned | flagged, ("licences no record owns", licensed - owned - flagged)

    def lose_record(self, instance_id: str) -> None:
        """The state store lost the instance's record (or it was launched before the control plane
        was deployed): nothing of it is known but what the cloud and Panorama say."""
        with sqlite3.connect(self.settings.sqlite_path) as db:
            db.execute("DELETE FROM instances WHERE instance_id = ?", (instance_id,))
        assert self.state.get_instance(instance_id) is None

    def records(self) -> Iterator[InstanceRecord]:
        yield from self.state.list_instances(GROUP)


def eni_of(instance_id: str) -> str:
    """The fake ECS's data ENI of an instance (see instance_of_eni)."""
    return f"eni-{instance_id.removeprefix('i-')}b"


def instance_of_eni(eni_id: str) -> str:
    """The fake ECS names an instance's ENIs ``eni-<id>a`` (primary) and ``eni-<id>b`` (data)."""
    return "i-" + eni_id.removeprefix("eni-")[:-1]


def _no_deadline() -> Any:
    from gwlb_fleet.deadline import Deadline

    return Deadline.after(3600)
