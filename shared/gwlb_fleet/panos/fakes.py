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
others stay pending. A full commit takes all.

Two layers: ``api_*`` methods answer like the XML API does, failing with ``PanosError`` (a PAN-OS
code and message; the lab server renders it as XML), and the PanoramaPort / LicensingPort
methods above them map those failures to domain errors with ``gwlb_fleet.panos.xmlapi.domain_error``, the
mapping the real adapter uses.

Fault injection: ``fail_next`` (names from ``FAULTS``, one per API call, in order),
``unreachable`` (every call fails as if Panorama did not answer), ``fail_commits`` (commit jobs
end FIN FAIL), ``sticky_licences`` (deactivation answers OK but the licence stays counted: what
users of other tools reported as "delicensed" firewalls that kept their licence).
"""

from __future__ import annotations

import contextlib
import re
import threading
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

    def copy(self) -> PanoramaConfig:
        return PanoramaConfig(
            set(self.managed),
            {name: set(members) for name, members in self.device_groups.items()},
            {name: set(members) for name, members in self.template_stacks.items()},
        )


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


@dataclass
class FakePanorama:
    device_groups: tuple[str, ...] = ("gwlb-fw",)
    template_stacks: tuple[str, ...] = ("gwlb-stack",)
    license_managers: tuple[str, ...] = ("gwlb-lm",)
    job_polls: int = 1  # looks at a job that still answer ACT
    fail_next: list[str] = field(default_factory=list)
    unreachable: bool = False
    fail_commits: bool = False
    sticky_licences: set[str] = field(default_factory=set)
    api_user: str = "gwlb-fleet"  # the admin whose API key the control plane uses
    commit_admins: tuple[str, ...] = ("gwlb-fleet",)  # PANORAMA_COMMIT_ADMINS, for the port's commits

    def __post_init__(self) -> None:
        self.firewalls: dict[str, ManagedDevice] = {}
        self.licences: dict[str, Licence] = {}
        self.running = PanoramaConfig(
            device_groups={name: set() for name in self.device_groups},
            template_stacks={name: set() for name in self.template_stacks},
        )
        self.candidate = self.running.copy()
        self.pending: list[Change] = []  # uncommitted changes, in order, each with its admin
        self.jobs: dict[str, Job] = {}
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

    def generate_vm_auth_key(self, lifetime_hours: int, deadline: Deadline) -> str:
        return self._port("generate_vm_auth_key", lambda: self.api_generate_vm_auth_key(lifetime_hours))

    def licensing(self, license_manager: str = "") -> FakeLicensing:
        """LicensingPort through the plugin of this Panorama."""
        return FakeLicensing(self, license_manager or self.license_managers[0])

    # --- internals -----------------------------------------------------------------------------------------

    def _finish(self, job: Job) -> None:
        job.status = "FIN"
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

    def _license_manager(self, name: str) -> None:
        if name not in self.license_managers:
            raise PanosError(PanosFailure("", f"license manager {name} not found"))

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
