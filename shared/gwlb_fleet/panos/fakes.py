"""An in-memory Panorama and its licence plugin, for the flows' tests and the lab's local Panorama.

It keeps what the real one keeps: managed devices with their connection state, device groups
and template stacks — a *candidate* configuration made of the *running* one and each admin's
pending changes, which only a commit job that finishes OK makes running — commit jobs (ACT, then
FIN OK or FIN FAIL after ``job_polls`` looks), and the licences the ``sw_fw_license`` plugin
(license manager) and the licensing API (deployment-profile auth code) count per serial.

Changes belong to the admin who made them: API deletions to ``api_user`` (the admin of the API
key), the plugin's deactivations to ``__sw_fw_license`` (F-PAN-3: the plugin keeps listing the
serial until a commit of that admin's changes finishes OK), anyone else's to whoever
``stage_change`` names. A partial commit (F-PAN-1) takes only the named admins' changes; the
others stay pending. A full commit takes all. A commit-all (F-PAN-4) pushes a device group's or a
template stack's running configuration to its firewalls: its job lists each firewall with its
result (F-PAN-2), and ``pushed`` records what reached which firewall.

Two layers: ``api_*`` methods answer like the XML API does, failing with ``PanosError`` (a PAN-OS
code and message; the lab server renders it as XML), and the PanoramaPort / LicensingPort
methods above them map those failures to domain errors with ``gwlb_fleet.panos.xmlapi.domain_error``, the
mapping the real adapter uses.

Fault injection: ``fail_next`` (names from ``FAULTS``, one per API call, in order),
``unreachable`` (every call fails as if Panorama did not answer), ``fail_commits`` (commit jobs
end FIN FAIL), ``fail_pushes`` (serials whose part of a commit-all fails; a disconnected firewall's
fails too), ``sticky_licences`` (deactivation answers OK but the licence stays counted: what
users of other tools reported as "delicensed" firewalls that kept their licence).
"""

from __future__ import annotations

import contextlib
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TypeVar

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import NotFound, TransientError
from gwlb_fleet.panos import xmlapi
from gwlb_fleet.panos.xmlapi import SERVICE, PanosFailure
from gwlb_fleet.ports import CommitJob, PanDevice

T = TypeVar("T")

FAULTS: dict[str, PanosFailure] = {
    "403": PanosFailure("403", "Invalid Credential", 403),
    "500": PanosFailure("", "Internal Server Error", 500),
    "503": PanosFailure("", "Service Unavailable", 503),
    "commit-in-progress": PanosFailure("", "Another commit/validate is in progress. Please try again later"),
    "locked": PanosFailure("", "Configuration is locked by admin"),
    "7": PanosFailure("7", "Object not present"),
    "10": PanosFailure("10", "Reference count not zero"),
    "17": PanosFailure("17", "Invalid command"),
    "unreachable": PanosFailure("", "unreachable", 0),
}


class PanosError(Exception):
    def __init__(self, failure: PanosFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass
class ManagedDevice:
    serial: str
    ip: str
    hostname: str = ""
    connected: bool = True
    model: str = "PA-VM"
    sw_version: str = "11.1.2"
    active_sessions: int = 0


@dataclass
class PanoramaConfig:
    managed: set[str] = field(default_factory=set)
    device_groups: dict[str, set[str]] = field(default_factory=dict)
    template_stacks: dict[str, set[str]] = field(default_factory=dict)
    # Log forwarding (F-PANLF-*), each entry as its XML text: (template, name) -> HTTP server
    # profile; (device group, name) -> log forwarding profile; device group -> rule -> rule entry.
    http_profiles: dict[tuple[str, str], str] = field(default_factory=dict)
    forwarding_profiles: dict[tuple[str, str], str] = field(default_factory=dict)
    rules: dict[str, dict[str, str]] = field(default_factory=dict)

    def copy(self) -> PanoramaConfig:
        return PanoramaConfig(
            set(self.managed),
            {name: set(members) for name, members in self.device_groups.items()},
            {name: set(members) for name, members in self.template_stacks.items()},
            dict(self.http_profiles),
            dict(self.forwarding_profiles),
            {group: dict(rules) for group, rules in self.rules.items()},
        )

    def log_entries(self, kind: str, scope: str) -> dict[str, str]:
        """The entries (name -> XML text) of one log forwarding container (xmlapi.LogXpath.kind)."""
        if kind == "rules":
            return dict(self.rules.get(scope, {}))
        store = self.http_profiles if kind == "http-profiles" else self.forwarding_profiles
        return {name: text for (where, name), text in store.items() if where == scope}


@dataclass
class Licence:
    license_manager: str
    auth_code: str
    ip: str = ""


@dataclass(eq=False)
class Change:
    """One pending change of one admin: a config edit, or (the plugin's) a licence release."""

    admin: str
    description: str
    edit: Callable[[PanoramaConfig], bool] | None = None
    release: str = ""  # the serial whose licence the plugin releases when this is committed


@dataclass(frozen=True)
class DeviceResult:
    """One firewall's part of a commit-all job (F-PAN-2: ``devices/entry``)."""

    serial: str
    devicename: str
    result: str  # OK | FAIL
    details: str = ""


@dataclass
class Job:
    job_id: str
    description: str
    user: str
    changes: list[Change]  # what FIN OK makes running
    polls_left: int
    fail: bool
    status: str = "ACT"
    result: str = "PEND"
    details: str = ""
    push: xmlapi.PushTarget | None = None  # a commit-all: what it pushes
    devices: list[DeviceResult] = field(default_factory=list)  # a commit-all's, once FIN

    @property
    def job_type(self) -> str:
        return "Commit" if self.push is None else "CommitAll"


@dataclass
class FakePanorama:
    device_groups: tuple[str, ...] = ("gwlb-fw",)
    template_stacks: tuple[str, ...] = ("gwlb-stack",)
    license_managers: tuple[str, ...] = ("gwlb-lm",)
    job_polls: int = 1  # looks at a job that still answer ACT
    fail_next: list[str] = field(default_factory=list)
    unreachable: bool = False
    fail_commits: bool = False
    fail_pushes: set[str] = field(default_factory=set)  # serials whose part of a commit-all fails
    sticky_licences: set[str] = field(default_factory=set)
    api_user: str = "gwlb-fleet"  # the admin whose API key the control plane uses
    commit_admins: tuple[str, ...] = ("gwlb-fleet",)  # PANORAMA_COMMIT_ADMINS, for the port's commits
    templates: tuple[str, ...] = ("gwlb-template",)  # the template stack's template
    # The security rules the operator wrote in each device group's pre-rulebase (gwlb-fleet never
    # creates one): two it manages by their prefix, one it leaves alone.
    security_rules: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"gwlb-fw": ("gwlb-allow-inspected", "admin-ssh", "gwlb-deny-rest")}
    )

    def __post_init__(self) -> None:
        self.firewalls: dict[str, ManagedDevice] = {}
        self.licences: dict[str, Licence] = {}
        self.running = PanoramaConfig(
            device_groups={name: set() for name in self.device_groups},
            template_stacks={name: set() for name in self.template_stacks},
            rules={
                group: {rule: _rule_entry(rule) for rule in rules}
                for group, rules in self.security_rules.items()
            },
        )
        self.candidate = self.running.copy()
        self.pending: list[Change] = []  # uncommitted changes, in order, each with its admin
        self.jobs: dict[str, Job] = {}
        self.pushed: dict[str, list[xmlapi.PushTarget]] = {}  # serial -> what reached it, in order
        self.calls: list[str] = []  # API calls in order, e.g. "delete /config/..."
        self.vm_auth_keys: list[str] = []
        self._next_job = 1
        self._lock = threading.RLock()

    # --- arranging a scene -----------------------------------------------------------------------------

    def add_firewall(
        self,
        serial: str,
        ip: str,
        *,
        hostname: str = "",
        connected: bool = True,
        device_group: str | None = None,
        template_stack: str | None = None,
        license_manager: str | None = None,
        auth_code: str = "",
        active_sessions: int = 0,
    ) -> None:
        """A firewall that bootstrapped: managed, in its device group and template stack (both
        committed), licensed by the plugin's license manager."""
        with self._lock:
            self.firewalls[serial] = ManagedDevice(
                serial, ip, hostname or f"fw-{serial[-4:]}", connected, active_sessions=active_sessions
            )
            for config in (self.running, self.candidate):
                config.managed.add(serial)
                dg = self.device_groups[0] if device_group is None else device_group
                ts = self.template_stacks[0] if template_stack is None else template_stack
                if dg:
                    config.device_groups.setdefault(dg, set()).add(serial)
                if ts:
                    config.template_stacks.setdefault(ts, set()).add(serial)
            lm = self.license_managers[0] if license_manager is None else license_manager
            if lm or auth_code:
                self.licences[serial] = Licence(lm, auth_code, ip)

    def set_connected(self, serial: str, connected: bool) -> None:
        with self._lock:
            self.firewalls[serial].connected = connected

    def set_sessions(self, serial: str, active: int) -> None:
        with self._lock:
            self.firewalls[serial].active_sessions = active

    def licensed(self, serial: str) -> bool:
        return serial in self.licences

    # --- the XML API's view --------------------------------------------------------------------------

    def api_managed_devices(self) -> list[ManagedDevice]:
        """``show devices all``: the committed managed devices, with their connection state."""
        with self._call("op show devices all"):
            return [
                self.firewalls.get(s) or ManagedDevice(s, "", connected=False)
                for s in sorted(self.running.managed)
            ]

    def api_config(self, running: bool) -> PanoramaConfig:
        """``type=config`` ``show`` (running) or ``get`` (candidate)."""
        with self._call("config show" if running else "config get"):
            return (self.running if running else self.candidate).copy()

    def api_delete(self, xpath: str, user: str = "") -> bool:
        """``type=config&action=delete`` by ``user`` (default ``api_user``). False: the object was
        not there (PAN-OS answers success)."""
        with self._call(f"delete {xpath}"):
            where = xmlapi.parse_log_xpath(xpath)
            if where is not None:
                return self._delete_log_config(where, user or self.api_user, xpath)
            kind, name, serial = _parse_member_xpath(xpath)
            config = self.candidate
            if kind == "managed" and serial in config.managed:
                references = [f"device-group {dg}" for dg, m in config.device_groups.items() if serial in m]
                references += [
                    f"template-stack {ts}" for ts, m in config.template_stacks.items() if serial in m
                ]
                if references:
                    raise PanosError(
                        PanosFailure(
                            "10",
                            f"{serial} cannot be deleted because of references from: {', '.join(references)}",
                        )
                    )
            edit = _deletion(kind, name, serial)
            if not edit(config.copy()):
                return False
            self._stage(Change(user or self.api_user, f"delete {xpath}", edit=edit))
            return True

    def api_set(self, xpath: str, element: str, user: str = "") -> None:
        """``type=config&action=set`` by ``user`` of the log forwarding configuration (F-PANLF-6):
        a profile ``<entry>`` into its container, or a rule's logging elements into the rule's
        entry, merged with what is there. Anything else, or a result PAN-OS would refuse, fails
        naming it: code 6 for an xpath, 12 for an element (PAN-OS's "Invalid object")."""
        with self._call(f"set {xpath}"):
            where = xmlapi.parse_log_xpath(xpath)
            if where is None or where.leaf or (where.kind != "rules") == bool(where.entry):
                raise PanosError(PanosFailure("6", f"Bad Xpath: {xpath}"))
            self._scope_exists(where)
            merged = self._merged(where, _element(element))
            self._stage(Change(user or self.api_user, f"set {xpath}", edit=_setting(where, merged)))

    def api_edit(self, xpath: str, element: str, user: str = "") -> None:
        """``type=config&action=edit`` (F-PANLF-7): the profile entry at ``xpath`` replaced by
        ``element`` (the same ``<entry name=...>``), or created."""
        with self._call(f"edit {xpath}"):
            where = xmlapi.parse_log_xpath(xpath)
            if where is None or where.leaf or where.kind == "rules" or not where.entry:
                raise PanosError(PanosFailure("6", f"Bad Xpath: {xpath}"))
            self._scope_exists(where)
            entries = list(_element(element))
            if len(entries) != 1 or entries[0].tag != "entry" or entries[0].get("name") != where.entry:
                raise PanosError(
                    PanosFailure(
                        "12", f'edit {where.entry}: the element must be <entry name="{where.entry}">'
                    )
                )
            _checked(where.kind, entries[0])
            text = ET.tostring(entries[0], encoding="unicode")
            self._stage(
                Change(user or self.api_user, f"edit {xpath}", edit=_setting(where, (where.entry, text)))
            )

    def log_node(self, xpath: str, running: bool) -> ET.Element | None:
        """``get`` (candidate) or ``show`` (running) of a log forwarding xpath: the container or the
        entry (None when there is no such entry), as PAN-OS answers it inside ``<result>``."""
        with self._call(f"config {'show' if running else 'get'} {xpath}"):
            where = xmlapi.parse_log_xpath(xpath)
            if where is None or where.leaf:
                raise PanosError(PanosFailure("6", f"Bad Xpath: {xpath}"))
            return render_log_node(self.running if running else self.candidate, where)

    def stage_change(
        self, admin: str, description: str, edit: Callable[[PanoramaConfig], bool] | None = None
    ) -> None:
        """Another administrator's uncommitted change (a test's scene)."""
        with self._lock:
            self._stage(Change(admin, description, edit=edit))

    def pending_of(self, admin: str) -> list[Change]:
        with self._lock:
            return [c for c in self.pending if c.admin == admin]

    def api_commit(self, description: str, admins: list[str], user: str = "") -> str | None:
        """``type=commit``: a full commit (``admins`` empty) or a partial commit of ``admins``'
        changes (F-PAN-1). A job id, or None when there are no such changes to commit."""
        with self._call("commit"):
            changes = [c for c in self.pending if not admins or c.admin in admins]
            if not changes:
                return None
            job_id = str(self._next_job)
            self._next_job += 1
            self.jobs[job_id] = Job(
                job_id, description, user or self.api_user, changes, self.job_polls, self.fail_commits
            )
            return job_id

    def api_commit_all(self, target: xmlapi.PushTarget, description: str, user: str = "") -> str:
        """``type=commit&action=all`` (F-PAN-4): a job that pushes the *running* configuration of
        ``target`` to the firewalls in it. When it finishes, each member gets a result: OK when
        connected and not in ``fail_pushes``, FAIL otherwise; the job's own result stays OK (Panorama
        did its part), so a reader must look at each device's (F-PAN-2)."""
        with self._call(f"commit-all {target}"):
            scopes = (
                self.running.device_groups if target.kind == "device-group" else self.running.template_stacks
            )
            if target.name not in scopes:
                raise PanosError(PanosFailure("12", f"{target} does not exist"))
            job_id = str(self._next_job)
            self._next_job += 1
            self.jobs[job_id] = Job(
                job_id, description, user or self.api_user, [], self.job_polls, False, push=target
            )
            return job_id

    def api_job(self, job_id: str) -> Job:
        """``show jobs id N``. Each look moves an ACT job on; at the end it finishes, after the
        jobs queued before it (Panorama runs commits one at a time, in order)."""
        with self._call(f"op show jobs id {job_id}"):
            job = self.jobs.get(job_id)
            if job is None:
                raise PanosError(PanosFailure("", f"job {job_id} not found"))
            if job.status != "FIN":
                if job.polls_left > 0:
                    job.polls_left -= 1
                else:
                    for queued in sorted(self.jobs.values(), key=lambda j: int(j.job_id)):
                        if queued.status != "FIN" and int(queued.job_id) <= int(job_id):
                            self._finish(queued)
            return replace(job)

    def finish_jobs(self) -> None:
        """Let every queued commit run to its end (time passing, in a test)."""
        with self._lock:
            for job in sorted(self.jobs.values(), key=lambda j: int(j.job_id)):
                if job.status != "FIN":
                    self._finish(job)

    def api_deactivate(self, license_manager: str, serial: str) -> None:
        """The plugin's deactivation: a change of ``__sw_fw_license``; the licence is released
        (and the serial leaves the plugin's list) when a commit of it finishes OK (F-PAN-3)."""
        with self._call(f"op deactivate {license_manager} {serial}"):
            self._license_manager(license_manager)
            licence = self.licences.get(serial)
            if licence is None or licence.license_manager != license_manager:
                raise PanosError(
                    PanosFailure("", f"Device {serial} not found in license manager {license_manager}")
                )
            if serial in self.sticky_licences:
                return  # answers success; nothing changes
            if not any(c.release == serial for c in self.pending):
                self._stage(Change(xmlapi.LICENCE_PLUGIN_ADMIN, f"deactivate {serial}", release=serial))

    def api_licensed_devices(self, license_manager: str) -> dict[str, str]:
        """The plugin's devices of a license manager: serial -> ip."""
        with self._call(f"op show licensed devices {license_manager}"):
            self._license_manager(license_manager)
            return {
                s: lic.ip
                for s, lic in sorted(self.licences.items())
                if lic.license_manager == license_manager
            }

    def api_serials_of_auth_code(self, auth_code: str) -> list[str]:
        """The licensing API's firewall serial numbers of a deployment profile."""
        with self._call(f"licensing serials {auth_code}"):
            return sorted(s for s, lic in self.licences.items() if lic.auth_code == auth_code)

    def api_deactivate_serial(self, auth_code: str, serial: str) -> None:
        """The licensing API's deactivation of one firewall."""
        with self._call(f"licensing deactivate {serial}"):
            licence = self.licences.get(serial)
            if licence is None or licence.auth_code != auth_code:
                raise PanosError(PanosFailure("404", f"serial number {serial} not found", 404))
            if serial not in self.sticky_licences:
                del self.licences[serial]

    def api_generate_vm_auth_key(self, lifetime_hours: int) -> str:
        with self._call("op vm-auth-key generate"):
            key = f"{755036225328715 + len(self.vm_auth_keys)}"
            self.vm_auth_keys.append(key)
            return key

    def api_active_sessions(self, serial: str) -> int:
        """``show session info`` sent on to a firewall (``target``): it must be connected."""
        with self._call(f"op show session info target {serial}"):
            device = self.firewalls.get(serial)
            if device is None or serial not in self.running.managed:
                raise PanosError(PanosFailure("", f"Device {serial} not found"))
            if not device.connected:
                raise PanosError(PanosFailure("", f"Device {serial} is not connected"))
            return int(device.active_sessions)

    # --- PanoramaPort -----------------------------------------------------------------------------------

    def devices(self, deadline: Deadline) -> list[PanDevice]:
        managed = self._port("devices", self.api_managed_devices)
        running = self._port("devices", lambda: self.api_config(running=True))
        groups = {s: name for name, members in running.device_groups.items() for s in members}
        stacks = {s: name for name, members in running.template_stacks.items() for s in members}
        known = {d.serial: (d.ip, d.hostname, d.connected) for d in managed}
        return xmlapi.merge_devices(known, groups, stacks)

    def remove_from_device_group(self, serial: str, device_group: str, deadline: Deadline) -> None:
        self._delete(xmlapi.device_group_member_xpath(device_group, serial), "remove_from_device_group")

    def remove_from_template_stack(self, serial: str, template_stack: str, deadline: Deadline) -> None:
        self._delete(xmlapi.template_stack_member_xpath(template_stack, serial), "remove_from_template_stack")

    def remove_managed_device(self, serial: str, deadline: Deadline) -> None:
        self._delete(xmlapi.managed_device_xpath(serial), "remove_managed_device")

    def commit(self, description: str, deadline: Deadline) -> str:
        """As the adapter does: a partial commit of our admin's and the plugin's changes (F-PAN-1)."""
        admins = xmlapi.commit_admins(self.commit_admins)
        return self._port("commit", lambda: self.api_commit(description, admins, self.api_user)) or ""

    def job(self, job_id: str, deadline: Deadline) -> CommitJob:
        if job_id == "":
            return CommitJob("", "FIN", "OK", "nothing to commit")
        job = self._port("job", lambda: self.api_job(job_id))
        return CommitJob(job.job_id, job.status, job.result, job.details)

    def push(self, target: xmlapi.PushTarget, description: str, deadline: Deadline) -> str:
        return self._port("commit-all", lambda: self.api_commit_all(target, description, self.api_user))

    def push_job(self, job_id: str, deadline: Deadline) -> xmlapi.PushJob:
        job = self._port("job", lambda: self.api_job(job_id))
        return xmlapi.PushJob(
            CommitJob(job.job_id, job.status, job.result, job.details),
            tuple(xmlapi.DevicePush(d.serial, d.devicename, d.result, d.details) for d in job.devices),
        )

    def generate_vm_auth_key(self, lifetime_hours: int, deadline: Deadline) -> str:
        return self._port("generate_vm_auth_key", lambda: self.api_generate_vm_auth_key(lifetime_hours))

    # --- the configuration calls set-up makes (gwlb_fleet.deploy.panlogs.PanoramaConfigApi) ---------------

    def config_get(self, xpath: str, deadline: Deadline) -> ET.Element | None:
        return self._port("config get", lambda: self.log_node(xpath, running=False))

    def config_show(self, xpath: str, deadline: Deadline) -> ET.Element | None:
        return self._port("config show", lambda: self.log_node(xpath, running=True))

    def config_set(self, xpath: str, element: str, deadline: Deadline) -> None:
        self._port("config set", lambda: self.api_set(xpath, element))

    def config_edit(self, xpath: str, element: str, deadline: Deadline) -> None:
        self._port("config edit", lambda: self.api_edit(xpath, element))

    def config_delete(self, xpath: str, deadline: Deadline) -> None:
        self._delete(xpath, "config delete")

    def licensing(self, license_manager: str = "") -> FakeLicensing:
        """LicensingPort through the plugin of this Panorama."""
        return FakeLicensing(self, license_manager or self.license_managers[0])

    # --- internals -----------------------------------------------------------------------------------------

    def _finish(self, job: Job) -> None:
        job.status = "FIN"
        if job.push is not None:
            self._push(job, job.push)
            return
        if job.fail:
            job.result = "FAIL"
            job.details = "Validation Error: commit failed (injected)"
            return  # its changes stay pending
        job.result, job.details = "OK", "Configuration committed successfully"
        for change in job.changes:
            if change not in self.pending:
                continue  # committed by an earlier job
            self.pending.remove(change)
            if change.edit is not None:
                change.edit(self.running)
            if change.release:
                self.licences.pop(change.release, None)
        self._rebuild_candidate()

    def _stage(self, change: Change) -> None:
        self.pending.append(change)
        if change.edit is not None:
            change.edit(self.candidate)

    def _rebuild_candidate(self) -> None:
        self.candidate = self.running.copy()
        for change in self.pending:
            if change.edit is not None:
                change.edit(self.candidate)

    def _scope_exists(self, where: xmlapi.LogXpath) -> None:
        """The lab is stricter than PAN-OS, which would create the template, device group or rule
        a ``set`` names: gwlb-fleet creates none of them, so a set that would is a bug."""
        if where.kind == "http-profiles" and where.scope not in self.templates:
            raise PanosError(PanosFailure("12", f"template {where.scope} does not exist"))
        if where.kind != "http-profiles" and where.scope not in self.candidate.device_groups:
            raise PanosError(PanosFailure("12", f"device group {where.scope} does not exist"))
        if where.kind == "rules" and where.entry not in self.candidate.rules.get(where.scope, {}):
            raise PanosError(
                PanosFailure("12", f"security rule {where.entry} does not exist in {where.scope}")
            )

    def _merged(self, where: xmlapi.LogXpath, addition: ET.Element) -> tuple[str, str]:
        """(entry name, entry XML) after merging ``addition`` (the ``set``'s element), checked as
        PAN-OS checks it."""
        current = self.candidate.log_entries(where.kind, where.scope)
        if where.kind == "rules":
            unsupported = [c.tag for c in addition if c.tag not in xmlapi.RULE_LOG_ELEMENTS]
            if unsupported:
                raise PanosError(
                    PanosFailure("17", f"setting <{unsupported[0]}> of a rule is not supported here")
                )
            name, addition = where.entry, _wrapped(where.entry, addition)
        else:
            entries = list(addition)
            if len(entries) != 1 or entries[0].tag != "entry" or not entries[0].get("name"):
                raise PanosError(
                    PanosFailure("12", f"{where.kind}: the element must be one <entry name=...>")
                )
            name, addition = entries[0].get("name") or "", entries[0]
        target = ET.fromstring(current[name]) if name in current else ET.Element("entry", name=name)
        xmlapi.merge_set(target, addition)
        _checked(where.kind, target)
        return name, ET.tostring(target, encoding="unicode")

    def _delete_log_config(self, where: xmlapi.LogXpath, user: str, xpath: str) -> bool:
        """Deleting a profile, or a rule's log-setting. A log forwarding profile a rule of its
        device group still names is refused, as PAN-OS refuses a referenced object (code 10)."""
        current = self.candidate.log_entries(where.kind, where.scope)
        if (
            not where.entry
            or (where.kind == "rules") != (where.leaf == "log-setting")
            or where.leaf
            not in (
                "",
                "log-setting",
            )
        ):
            raise PanosError(PanosFailure("6", f"Bad Xpath: {xpath}"))
        if where.entry not in current:
            return False
        if where.kind == "rules" and ET.fromstring(current[where.entry]).find("log-setting") is None:
            return False
        if where.kind == "forwarding-profiles":
            users = [
                rule
                for rule, text in self.candidate.rules.get(where.scope, {}).items()
                if (ET.fromstring(text).findtext("log-setting") or "") == where.entry
            ]
            if users:
                raise PanosError(
                    PanosFailure(
                        "10",
                        f"{where.entry} cannot be deleted because of references from: {', '.join(users)}",
                    )
                )
        self._stage(Change(user, f"delete {xpath}", edit=_log_deletion(where)))
        return True

    def _license_manager(self, name: str) -> None:
        if name not in self.license_managers:
            raise PanosError(PanosFailure("", f"license manager {name} not found"))

    def _push(self, job: Job, target: xmlapi.PushTarget) -> None:
        members = sorted(self._scopes(target).get(target.name, set()))
        job.devices = [self._push_to(serial, target) for serial in members]
        job.result, job.details = "OK", f"Commit-all of {target} done"

    def _scopes(self, target: xmlapi.PushTarget) -> dict[str, set[str]]:
        running = self.running
        return running.device_groups if target.kind == "device-group" else running.template_stacks

    def _push_to(self, serial: str, target: xmlapi.PushTarget) -> DeviceResult:
        device = self.firewalls.get(serial)
        name = device.hostname if device is not None else ""
        if device is None or not device.connected:
            return DeviceResult(serial, name, "FAIL", "device is not connected")
        if serial in self.fail_pushes:
            return DeviceResult(serial, name, "FAIL", "commit failed on the device (injected)")
        self.pushed.setdefault(serial, []).append(target)
        return DeviceResult(serial, name, "OK", "Configuration committed successfully")

    def _delete(self, xpath: str, action: str) -> None:
        with contextlib.suppress(NotFound):  # already gone is success
            self._port(action, lambda: self.api_delete(xpath))

    def _port(self, action: str, call: Callable[[], T]) -> T:
        """Run an API call as the adapter sees it: PAN-OS failures as domain errors."""
        try:
            return call()
        except PanosError as exc:
            if exc.failure.http_status == 0:
                raise TransientError(
                    f"{action}: Panorama does not answer", code="Unreachable", service=SERVICE
                ) from None
            raise xmlapi.domain_error(exc.failure, action) from None

    @contextlib.contextmanager
    def _call(self, name: str) -> Iterator[None]:
        """One API call: recorded, serialised, and failed when a fault says so."""
        with self._lock:
            self.calls.append(name)
            fault = self.fail_next.pop(0) if self.fail_next else ("unreachable" if self.unreachable else None)
            if fault is not None:
                raise PanosError(FAULTS[fault])
            yield


def _deletion(kind: str, name: str, serial: str) -> Callable[[PanoramaConfig], bool]:
    """The edit that deletes what an xpath names; it says whether there was anything to delete."""

    def edit(config: PanoramaConfig) -> bool:
        if kind == "managed":
            found = serial in config.managed
            config.managed.discard(serial)
            return found
        groups = config.device_groups if kind == "device-group" else config.template_stacks
        found = serial in groups.get(name, set())
        groups.get(name, set()).discard(serial)
        return found

    return edit


def _rule_entry(rule: str) -> str:
    """A rule as an operator wrote it; the fields gwlb-fleet never touches are only carried."""
    any_ = "<member>any</member>"
    return (
        f'<entry name="{rule}"><from>{any_}</from><to>{any_}</to><source>{any_}</source>'
        f"<destination>{any_}</destination><application>{any_}</application>"
        f"<service><member>application-default</member></service><action>allow</action></entry>"
    )


def _wrapped(rule: str, children: ET.Element) -> ET.Element:
    entry = ET.Element("entry", name=rule)
    entry.extend(list(children))
    return entry


def _element(element: str) -> ET.Element:
    """A ``set``/``edit``'s element text, under one wrapper (it may be several elements)."""
    try:
        return ET.fromstring(f"<x>{element}</x>")
    except ET.ParseError as exc:
        raise PanosError(PanosFailure("18", f"Malformed element: {exc}")) from None


def _checked(kind: str, entry: ET.Element) -> None:
    """An entry as PAN-OS would check it; refused with "Invalid object" (code 12) naming the fault."""
    try:
        if kind == "http-profiles":
            xmlapi.HttpServerProfile.parse(entry)
        elif kind == "forwarding-profiles":
            xmlapi.ForwardingProfile.parse(entry)
        else:
            xmlapi.RuleLogging.parse(entry)
    except xmlapi.ConfigSchemaError as exc:
        raise PanosError(PanosFailure("12", f"Invalid object: {exc}")) from None


def _store(config: PanoramaConfig, where: xmlapi.LogXpath) -> dict[tuple[str, str], str]:
    return config.http_profiles if where.kind == "http-profiles" else config.forwarding_profiles


def _setting(where: xmlapi.LogXpath, merged: tuple[str, str]) -> Callable[[PanoramaConfig], bool]:
    name, text = merged

    def edit(config: PanoramaConfig) -> bool:
        if where.kind == "rules":
            config.rules.setdefault(where.scope, {})[name] = text
        else:
            _store(config, where)[(where.scope, name)] = text
        return True

    return edit


def _log_deletion(where: xmlapi.LogXpath) -> Callable[[PanoramaConfig], bool]:
    def edit(config: PanoramaConfig) -> bool:
        if where.kind != "rules":
            return _store(config, where).pop((where.scope, where.entry), None) is not None
        rules = config.rules.get(where.scope, {})
        if where.entry not in rules:
            return False
        entry = ET.fromstring(rules[where.entry])
        found = entry.find("log-setting")
        if found is None:
            return False
        entry.remove(found)
        rules[where.entry] = ET.tostring(entry, encoding="unicode")
        return True

    return edit


_CONTAINER_TAGS = {"http-profiles": "http", "forwarding-profiles": "profiles", "rules": "rules"}


def render_log_node(config: PanoramaConfig, where: xmlapi.LogXpath) -> ET.Element | None:
    """The node a ``get``/``show`` of a log forwarding xpath answers with (inside ``<result>``)."""
    entries = config.log_entries(where.kind, where.scope)
    if where.entry:
        return ET.fromstring(entries[where.entry]) if where.entry in entries else None
    container = ET.Element(_CONTAINER_TAGS[where.kind])
    container.extend(ET.fromstring(text) for _name, text in sorted(entries.items()) if where.kind != "rules")
    if where.kind == "rules":  # rulebase order, not sorted
        container.extend(ET.fromstring(text) for text in entries.values())
    return container


def _parse_member_xpath(xpath: str) -> tuple[str, str, str]:
    """-> (kind, name, serial) for the three xpaths deletions use; PanosError for any other."""
    for kind, pattern in (
        ("device-group", r"/device-group/entry\[@name='([^']+)'\]/devices/entry\[@name='([^']+)'\]"),
        ("template-stack", r"/template-stack/entry\[@name='([^']+)'\]/devices/entry\[@name='([^']+)'\]"),
    ):
        found = re.fullmatch(re.escape(xmlapi.PANORAMA_ROOT) + pattern, xpath)
        if found:
            return kind, found.group(1), found.group(2)
    found = re.fullmatch(re.escape(xmlapi.MANAGED_DEVICES_XPATH) + r"/entry\[@name='([^']+)'\]", xpath)
    if found:
        return "managed", "", found.group(1)
    raise PanosError(PanosFailure("6", f"Bad Xpath: {xpath}"))


@dataclass
class FakeLicensing:
    """LicensingPort through a FakePanorama's licence plugin (a license manager)."""

    panorama: FakePanorama
    license_manager: str

    def deactivate(self, serial: str, deadline: Deadline) -> None:
        try:
            self.panorama._port(
                "deactivate", lambda: self.panorama.api_deactivate(self.license_manager, serial)
            )
        except NotFound:
            if self.is_licensed(serial, deadline):
                raise
            return  # already released

    def is_licensed(self, serial: str, deadline: Deadline) -> bool:
        serials = self.panorama._port(
            "is_licensed", lambda: self.panorama.api_licensed_devices(self.license_manager)
        )
        return serial in serials
