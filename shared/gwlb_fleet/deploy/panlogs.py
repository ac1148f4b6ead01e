"""PAN-OS log forwarding to the intake function, made by ``gwlb-fleet setup`` in Panorama.

Three things, through the XML API (gwlb_fleet.panos.xmlapi has their xpaths and elements,
F-PANLF-1..7):

- an HTTP server profile (``PANLOGS_HTTP_PROFILE``) in the template's shared scope
  (``PANORAMA_TEMPLATE``): one HTTPS server, the intake's host and port, and for the traffic and
  threat logs the intake's path, our payload (gwlb_fleet.panos.panlogs) and the token header
  (``PANLOGS_AUTH_HEADER``, the value of the KMS secret ``PANLOGS_TOKEN_SECRET``);
- a log forwarding profile (``PANLOGS_FORWARDING_PROFILE``) in the device group, sending all
  traffic and all threat logs to that server profile;
- on each security rule of the device group's pre-rulebase whose name starts with
  ``PANLOGS_RULE_PREFIX``: that forwarding profile, and logging at session end.

The two profiles are ours and written whole (``edit``, which replaces: F-PANLF-7); a rule is the
operator's, and only its two logging elements are merged into it (``set``: F-PANLF-6). Then a
partial commit of our admin's changes (F-PAN-1), its job followed to its result (F-PAN-2), and
every object read back from the running configuration: anything not as written fails set-up,
naming it. Then the push to the firewalls: a commit-all of the template stack (the server
profile), then of the device group (the forwarding profile that names it, and the rules), each
job followed to its end; the job's result and every firewall's must be OK (F-PAN-4, F-PAN-2),
or set-up fails naming the firewalls that did not take it.

A second run changes nothing: Panorama has nothing to commit and nothing is pushed. The push is
made only when this run wrote or committed something, so a run after a failed push does not push
again by itself; the failure says so, and what to do (docs/deploy.md).

Teardown detaches the forwarding profile from every rule of the device group that names it (a
referenced profile cannot be deleted), deletes the two profiles, commits, reads back and pushes
(device group first: the forwarding profile must leave the firewalls before the server profile
it names).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import PermanentError
from gwlb_fleet.panos import panlogs, xmlapi
from gwlb_fleet.panos.xmlapi import (
    ForwardingMatch,
    ForwardingProfile,
    HttpFormat,
    HttpServer,
    HttpServerProfile,
    PushJob,
    PushTarget,
)
from gwlb_fleet.ports import CommitJob
from gwlb_fleet.settings import Settings

COMMIT_DESCRIPTION = "gwlb-fleet setup: PAN-OS log forwarding to the intake"
TEARDOWN_DESCRIPTION = "gwlb-fleet teardown: PAN-OS log forwarding to the intake removed"
PUSH_DESCRIPTION = "gwlb-fleet setup: log forwarding to the intake, to the firewalls"
TEARDOWN_PUSH_DESCRIPTION = "gwlb-fleet teardown: log forwarding to the intake removed from the firewalls"
JOB_POLL_S = 2.0
SERVER_NAME = "intake"
LOG_TYPES = ("threat", "traffic")  # what the intake maps (issue 14); HTTP_PAYLOADS has one each
TLS_VERSION = "1.2"

T = TypeVar("T")


class PanoramaConfigApi(Protocol):
    """What set-up needs of Panorama: the PanoramaAdapter, the FakePanorama."""

    def config_get(self, xpath: str, deadline: Deadline) -> ET.Element | None: ...
    def config_show(self, xpath: str, deadline: Deadline) -> ET.Element | None: ...
    def config_set(self, xpath: str, element: str, deadline: Deadline) -> None: ...
    def config_edit(self, xpath: str, element: str, deadline: Deadline) -> None: ...
    def config_delete(self, xpath: str, deadline: Deadline) -> None: ...
    def commit(self, description: str, deadline: Deadline) -> str: ...
    def job(self, job_id: str, deadline: Deadline) -> CommitJob: ...
    def push(self, target: PushTarget, description: str, deadline: Deadline) -> str: ...
    def push_job(self, job_id: str, deadline: Deadline) -> PushJob: ...


class LogForwardingFailed(PermanentError):
    """Panorama did not end up as set-up wrote it; the message names what and where."""


@dataclass(frozen=True)
class LogForwarding:
    """What set-up wants in Panorama."""

    template: str
    template_stack: str  # the stack holding ``template``: what the push sends to the firewalls
    device_group: str
    rule_prefix: str
    profile: HttpServerProfile
    forwarding: ForwardingProfile


def enabled(settings: Settings) -> bool:
    """Configured for a VM-Series fleet once the intake's URL is known (after the first deploy)."""
    return settings.appliance_kind == "vmseries" and bool(settings.panlogs_intake_url)


def missing_settings(settings: Settings) -> list[str]:
    return [
        alias
        for alias, value in (
            ("PANORAMA_HOST", settings.panorama_host),
            ("PANORAMA_API_KEY_SECRET", settings.panorama_api_key_secret),
            ("PANORAMA_COMMIT_ADMINS", settings.panorama_commit_admins),
            ("PANORAMA_TEMPLATE", settings.panorama_template),
            ("PANORAMA_TEMPLATE_STACK", settings.template_stack),
            ("PANORAMA_DEVICE_GROUP", settings.device_group),
            ("PANLOGS_TOKEN_SECRET", settings.panlogs_token_secret),
        )
        if not value
    ]


def wanted(settings: Settings, token: str) -> LogForwarding:
    """The profiles for these settings; ``token`` is the intake's shared secret (in plans, a
    stand-in that names the secret)."""
    url = urlsplit(settings.panlogs_intake_url)
    server = HttpServer(
        SERVER_NAME,
        url.hostname or "",
        url.port or 443,
        "HTTPS",
        TLS_VERSION,
        settings.panlogs_certificate_profile,
        "POST",
    )
    header = ((settings.panlogs_auth_header, token), ("Content-Type", "application/json"))
    formats = tuple(
        HttpFormat(
            log_type,
            f"gwlb-fleet-{log_type}",
            panlogs.INTAKE_PATH,
            panlogs.HTTP_PAYLOADS[log_type],
            tuple(sorted(header)),
        )
        for log_type in LOG_TYPES
    )
    name = settings.panlogs_http_profile
    matches = tuple(ForwardingMatch(f"gwlb-fleet-{t}", t, xmlapi.ALL_LOGS, (name,)) for t in LOG_TYPES)
    return LogForwarding(
        settings.panorama_template,
        settings.template_stack,
        settings.device_group,
        settings.panlogs_rule_prefix,
        HttpServerProfile(name, (server,), formats),
        ForwardingProfile(settings.panlogs_forwarding_profile, "gwlb-fleet: logs to the intake", matches),
    )


# --- set-up ---------------------------------------------------------------------------------------


def apply(
    api: PanoramaConfigApi,
    want: LogForwarding,
    deadline: Deadline,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Write, commit, read back, push. Lines for set-up's report; never the token."""
    written = [
        _ensure_profile(api, _profile_place(want), want.profile, deadline),
        _ensure_profile(api, _forwarding_place(want), want.forwarding, deadline),
    ]
    rules = managed_rules(api, want, deadline)
    written.extend(_attach(api, want, rule, deadline) for rule in rules)
    committed = commit(api, COMMIT_DESCRIPTION, deadline, sleep)
    lines = [line for line, _ in written] + [committed.line]
    lines.extend(read_back(api, want, [r.rule for r in rules], deadline))
    if not committed.job_id and not any(changed for _, changed in written):
        return [*lines, "panorama push: nothing changed, nothing pushed"]
    # The template stack first: the device group's forwarding profile names its server profile.
    for target in push_order(want):
        lines.append(push(api, target, PUSH_DESCRIPTION, deadline, sleep))
    return lines


@dataclass(frozen=True)
class _Place:
    what: str  # for messages: "HTTP server profile P in template T"
    xpath: str
    parse: Callable[[ET.Element], HttpServerProfile | ForwardingProfile]


def _profile_place(want: LogForwarding) -> _Place:
    return _Place(
        f"HTTP server profile {want.profile.name} in template {want.template}",
        xmlapi.http_profile_xpath(want.template, want.profile.name),
        HttpServerProfile.parse,
    )


def _forwarding_place(want: LogForwarding) -> _Place:
    return _Place(
        f"log forwarding profile {want.forwarding.name} in device group {want.device_group}",
        xmlapi.forwarding_profile_xpath(want.device_group, want.forwarding.name),
        ForwardingProfile.parse,
    )


def _ensure_profile(
    api: PanoramaConfigApi, place: _Place, want: HttpServerProfile | ForwardingProfile, deadline: Deadline
) -> tuple[str, bool]:
    """Ours, written whole when the candidate differs (``edit`` replaces: a ``set`` would leave a
    stale header or server in place)."""
    current = _parsed(place, api.config_get(place.xpath, deadline))
    if current == want:
        return f"panorama {place.what}: present", False
    api.config_edit(place.xpath, want.element(), deadline)
    return f"panorama {place.what}: {'rewritten' if current is not None else 'created'}", True


def managed_rules(
    api: PanoramaConfigApi, want: LogForwarding, deadline: Deadline
) -> list[xmlapi.RuleLogging]:
    """The pre-rulebase's security rules named with the prefix. None: set-up fails, since no
    log would ever be forwarded."""
    xpath = xmlapi.security_rules_xpath(want.device_group)
    rules = [r for r in _rules(api.config_get(xpath, deadline), want) if r.rule.startswith(want.rule_prefix)]
    if not rules:
        raise LogForwardingFailed(
            f"device group {want.device_group} has no pre-rulebase security rule named {want.rule_prefix}*:"
            " write the rules first, or set PANLOGS_RULE_PREFIX",
            code="NoManagedRules",
        )
    return rules


def _attach(
    api: PanoramaConfigApi, want: LogForwarding, rule: xmlapi.RuleLogging, deadline: Deadline
) -> tuple[str, bool]:
    attached = xmlapi.RuleLogging(rule.rule, want.forwarding.name, True)
    if rule == attached:
        return f"panorama rule {rule.rule}: logs to {want.forwarding.name}", False
    api.config_set(xmlapi.security_rule_xpath(want.device_group, rule.rule), attached.element(), deadline)
    before = f"was {rule.log_setting!r}" if rule.log_setting else "had none"
    return f"panorama rule {rule.rule}: log-setting {want.forwarding.name}, log-end yes ({before})", True


@dataclass(frozen=True)
class Committed:
    job_id: str  # "" when Panorama had nothing to commit
    line: str


def commit(
    api: PanoramaConfigApi, description: str, deadline: Deadline, sleep: Callable[[float], None] = time.sleep
) -> Committed:
    """A partial commit of our admin's changes (F-PAN-1), followed to its result (F-PAN-2)."""
    job_id = api.commit(description, deadline)
    if not job_id:
        return Committed("", "panorama commit: nothing to commit")
    job = _finished(lambda: api.job(job_id, deadline), f"Panorama commit job {job_id}", deadline, sleep)
    if job.result != "OK":
        raise LogForwardingFailed(
            f"Panorama commit job {job_id} ended {job.result}: {job.details or 'no details'}",
            code="CommitFailed",
        )
    return Committed(job_id, f"panorama commit job {job_id}: OK")


def push(
    api: PanoramaConfigApi,
    target: PushTarget,
    description: str,
    deadline: Deadline,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """A commit-all of ``target`` (F-PAN-4), followed to its end; the job's result and each
    firewall's must be OK (F-PAN-2), or LogForwardingFailed naming the firewalls that failed."""
    job_id = api.push(target, description, deadline)
    if not job_id:
        raise LogForwardingFailed(
            f"Panorama started no job for the push of {target}: the firewalls did not receive it",
            code="PushNotStarted",
        )
    what = f"Panorama push of {target} (job {job_id})"
    pushed = _finished(lambda: api.push_job(job_id, deadline), what, deadline, sleep)
    failed = pushed.failed_devices
    if failed:
        names = "; ".join(
            f"{d.serial}{f' ({d.name})' if d.name else ''}: {d.result or 'no result'}"
            + (f", {d.details}" if d.details else "")
            for d in failed
        )
        raise LogForwardingFailed(
            f"{what}: {len(failed)} of {len(pushed.devices)} firewall(s) did not take it: {names}."
            f" Panorama has the configuration: once they are fixed, push {target} to them"
            " (Panorama > Commit > Push to Devices)",
            code="PushFailed",
        )
    if pushed.job.result != "OK":
        raise LogForwardingFailed(
            f"{what} ended {pushed.job.result}: {pushed.job.details or 'no details'}", code="PushFailed"
        )
    return f"panorama push of {target}: job {job_id} OK on {len(pushed.devices)} firewall(s)"


JobT = TypeVar("JobT", CommitJob, PushJob)


def _finished(
    look: Callable[[], JobT], what: str, deadline: Deadline, sleep: Callable[[float], None]
) -> JobT:
    """The job once FIN (F-PAN-2: finished is not succeeded; the caller reads the result)."""
    while True:
        job = look()
        status = job.status if isinstance(job, CommitJob) else job.job.status
        if status == "FIN":
            return job
        if deadline.remaining() < JOB_POLL_S:
            raise LogForwardingFailed(
                f"{what} has not finished ({status}); look at it in Panorama and run set-up again",
                code="CommitNotFinished",
            )
        sleep(JOB_POLL_S)


def push_order(want: LogForwarding) -> tuple[PushTarget, PushTarget]:
    """In the order set-up pushes: the template stack (server profile) before the device group
    (the forwarding profile naming it, the rules naming that)."""
    return PushTarget("template-stack", want.template_stack), PushTarget("device-group", want.device_group)


def read_back(api: PanoramaConfigApi, want: LogForwarding, rules: list[str], deadline: Deadline) -> list[str]:
    """The running configuration has each object as written; anything else fails, naming it."""
    for place, expected in ((_profile_place(want), want.profile), (_forwarding_place(want), want.forwarding)):
        found = _parsed(place, api.config_show(place.xpath, deadline))
        if found is None:
            raise LogForwardingFailed(
                f"{place.what}: committed, but not in the running configuration", code="NotCommitted"
            )
        if found != expected:
            raise LogForwardingFailed(
                f"{place.what}: the running configuration differs from what set-up wrote"
                f" ({_difference(expected, found)})",
                code="NotAsWritten",
            )
    running = {
        r.rule: r
        for r in _rules(api.config_show(xmlapi.security_rules_xpath(want.device_group), deadline), want)
    }
    for rule in rules:
        found_rule = running.get(rule)
        if found_rule != xmlapi.RuleLogging(rule, want.forwarding.name, True):
            raise LogForwardingFailed(
                f"security rule {rule} in device group {want.device_group}: the running configuration has"
                f" {found_rule}, not log-setting {want.forwarding.name} with log-end yes",
                code="NotAsWritten",
            )
    return [f"panorama read back: {len(rules)} rule(s) and both profiles as written"]


# --- teardown -------------------------------------------------------------------------------------


def remove(
    api: PanoramaConfigApi,
    want: LogForwarding,
    deadline: Deadline,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Detach, delete, commit, read back that nothing of ours is left."""
    lines = []
    rules = _rules(api.config_get(xmlapi.security_rules_xpath(want.device_group), deadline), want)
    for rule in rules:
        if rule.log_setting == want.forwarding.name:
            api.config_delete(
                xmlapi.security_rule_xpath(want.device_group, rule.rule) + "/log-setting", deadline
            )
            lines.append(f"panorama rule {rule.rule}: log-setting {want.forwarding.name} removed")
    for place in (_forwarding_place(want), _profile_place(want)):  # the referenced profile last
        api.config_delete(place.xpath, deadline)
        lines.append(f"panorama {place.what}: deleted (or was not there)")
    committed = commit(api, TEARDOWN_DESCRIPTION, deadline, sleep)
    lines.append(committed.line)
    for place in (_forwarding_place(want), _profile_place(want)):
        if api.config_show(place.xpath, deadline) is not None:
            raise LogForwardingFailed(
                f"{place.what}: deleted and committed, but still running", code="NotRemoved"
            )
    left = [
        r.rule
        for r in _rules(api.config_show(xmlapi.security_rules_xpath(want.device_group), deadline), want)
        if r.log_setting == want.forwarding.name
    ]
    if left:
        raise LogForwardingFailed(
            f"security rules {', '.join(left)} still log to {want.forwarding.name} after the commit",
            code="NotRemoved",
        )
    if not committed.job_id:
        return [*lines, "panorama push: nothing removed, nothing pushed"]
    # The device group first: its forwarding profile names the template's server profile.
    for target in reversed(push_order(want)):
        lines.append(push(api, target, TEARDOWN_PUSH_DESCRIPTION, deadline, sleep))
    return lines


# --- reading -------------------------------------------------------------------------------------------


def _parsed(place: _Place, node: ET.Element | None) -> HttpServerProfile | ForwardingProfile | None:
    if node is None:
        return None
    try:
        return place.parse(node)
    except xmlapi.ConfigSchemaError as exc:
        raise LogForwardingFailed(
            f"{place.what}: Panorama answered what set-up cannot read: {exc}", code="BadAnswer"
        ) from exc


def _rules(node: ET.Element | None, want: LogForwarding) -> list[xmlapi.RuleLogging]:
    try:
        return xmlapi.parse_rules(node)
    except xmlapi.ConfigSchemaError as exc:
        raise LogForwardingFailed(
            f"device group {want.device_group}'s rules: {exc}", code="BadAnswer"
        ) from exc


def _difference(
    expected: HttpServerProfile | ForwardingProfile, found: HttpServerProfile | ForwardingProfile
) -> str:
    """Which fields differ, by name only: a header's value is the token."""
    fields = [
        name
        for name in type(expected).__dataclass_fields__
        if getattr(expected, name) != getattr(found, name)
    ]
    return "differs in " + ", ".join(fields)
