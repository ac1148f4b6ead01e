"""The PAN-OS XML API as gwlb-fleet speaks it to Panorama: commands, xpaths, answers, error codes.

One text of each request and one reading of each answer, shared by the real adapter (over
pan-os-python), the in-memory fake and the lab's local Panorama, so that the three cannot drift
apart. Nothing here imports pan-os-python: the fake and the lab do without it.

Sources: the commands are those pan-os-python and Palo Alto's own autoscaling code send
(``show devices all``, ``show jobs id``, ``request bootstrap vm-auth-key generate``, the
``sw_fw_license`` plugin's ``deactivate`` and ``show ... devices``); the error codes are the
documented "PAN-OS XML API Error Codes"; the messages matched below are the ones pan-os-python
itself classifies (``PanDevice.XapiWrapper.classify_exception``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from xml.sax.saxutils import escape

from gwlb_fleet.errors import FleetError, NotFound, PermanentError, TransientError
from gwlb_fleet.ports import CommitJob, PanDevice

SERVICE = "panorama"

# --- where things live in Panorama's configuration --------------------------------------------------

PANORAMA_ROOT = "/config/devices/entry[@name='localhost.localdomain']"
DEVICE_GROUPS_XPATH = PANORAMA_ROOT + "/device-group"
TEMPLATE_STACKS_XPATH = PANORAMA_ROOT + "/template-stack"
MANAGED_DEVICES_XPATH = "/config/mgt-config/devices"

# Names are spliced into xpaths ('...') and op commands ("..."): refuse what would break out.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/@-]{0,62}$")


def checked_name(kind: str, value: str) -> str:
    if not _SAFE_NAME.match(value):
        raise PermanentError(
            f"{kind} {value!r} is not a name PAN-OS accepts", code="BadName", service=SERVICE
        )
    return value


def device_group_member_xpath(device_group: str, serial: str) -> str:
    group, serial = checked_name("device group", device_group), checked_name("serial", serial)
    return f"{DEVICE_GROUPS_XPATH}/entry[@name='{group}']/devices/entry[@name='{serial}']"


def template_stack_member_xpath(template_stack: str, serial: str) -> str:
    stack, serial = checked_name("template stack", template_stack), checked_name("serial", serial)
    return f"{TEMPLATE_STACKS_XPATH}/entry[@name='{stack}']/devices/entry[@name='{serial}']"


def managed_device_xpath(serial: str) -> str:
    return f"{MANAGED_DEVICES_XPATH}/entry[@name='{checked_name('serial', serial)}']"


# --- operational commands (pan-os-python's string form: values in double quotes) ----------------------

SHOW_DEVICES = "show devices all"
SHOW_SESSION_INFO = "show session info"
LICENCE_PLUGIN_ADMIN = "__sw_fw_license"  # the plugin's changes are this admin's, for a partial commit


# --- commits (F-PAN-1, F-PAN-2) -----------------------------------------------------------------------

PARTIAL_COMMIT_ACTION = "partial"  # F-PAN-1: type=commit&action=partial
# Admin names as PAN-OS allows them, and the plugin's own ``__sw_fw_license``.
_ADMIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._@-]{0,62}$")


def commit_admins(configured: Sequence[str]) -> list[str]:
    """Whose changes a commit of ours takes: the automation's admin(s) and the licence plugin's
    (F-PAN-1, F-PAN-3) — never another administrator's pending work."""
    admins = [name for name in configured if name]
    if not admins:
        raise PermanentError(
            "PANORAMA_COMMIT_ADMINS must name the admin whose API key gwlb-fleet uses: a commit takes"
            " only that admin's changes and the licence plugin's",
            code="NotConfigured",
            service=SERVICE,
        )
    for name in admins:
        if not _ADMIN_NAME.match(name):
            raise PermanentError(
                f"admin {name!r} is not a PAN-OS admin name", code="BadName", service=SERVICE
            )
    return list(dict.fromkeys([*admins, LICENCE_PLUGIN_ADMIN]))


def partial_commit(admins: Sequence[str], description: str) -> str:
    """F-PAN-1: the ``cmd`` of a partial commit of these admins' changes (sent with
    ``action=partial``)."""
    members = "".join(f"<member>{escape(name)}</member>" for name in admins)
    text = f"<description>{escape(description)}</description>" if description else ""
    return f"<commit>{text}<partial><admin>{members}</admin></partial></commit>"


def parse_commit_answer(response: ET.Element | None) -> str:
    """F-PAN-2: a commit's answer (``<response>``) -> its job id, or "" when there was nothing to
    commit (no ``result/job``)."""
    job = response.find("./result/job") if response is not None else None
    text = (job.text or "").strip() if job is not None else ""
    if text and not text.isdigit():
        raise PermanentError(f"commit answered job {text!r}", code="BadAnswer", service=SERVICE)
    return text


# --- pushes to the firewalls: commit-all (F-PAN-4, F-PAN-2) ------------------------------------------

COMMIT_ALL_ACTION = "all"  # F-PAN-4: type=commit&action=all
PushKind = Literal["device-group", "template-stack"]


@dataclass(frozen=True)
class PushTarget:
    """What a commit-all pushes: a device group's policy and objects, or a template stack's
    network and device configuration, to the firewalls in it."""

    kind: PushKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.replace('-', ' ')} {self.name}"

    def command(self, description: str) -> str:
        """F-PAN-4: the ``cmd`` of the commit-all, as pan-os-python's PanoramaCommitAll builds it
        (sent with ``action=all``)."""
        name = escape(checked_name(self.kind, self.name))
        text = f"<description>{escape(description)}</description>" if description else ""
        if self.kind == "device-group":
            scope = f'<device-group><entry name="{name}"/></device-group>'
            return f"<commit-all><shared-policy>{scope}{text}</shared-policy></commit-all>"
        return f"<commit-all><template-stack><name>{name}</name>{text}</template-stack></commit-all>"


@dataclass(frozen=True)
class DevicePush:
    """One firewall's part of a commit-all job (F-PAN-2: ``devices/entry``)."""

    serial: str
    name: str
    result: str  # OK | FAIL | PEND ...
    details: str = ""


@dataclass(frozen=True)
class PushJob:
    job: CommitJob
    devices: tuple[DevicePush, ...]

    @property
    def failed_devices(self) -> tuple[DevicePush, ...]:
        return tuple(d for d in self.devices if d.result != "OK")

    @property
    def succeeded(self) -> bool:
        """F-PAN-2: finished is not succeeded; the job's result and every device's must be OK."""
        return self.job.succeeded and not self.failed_devices


def parse_push_job(job_id: str, result: ET.Element | None) -> PushJob:
    """F-PAN-2: a commit-all's ``show jobs id`` answer, with each device's serial, name, result
    and detail lines."""
    job = parse_job(job_id, result)
    entries = result.findall("./job/devices/entry") if result is not None else []
    devices = []
    for entry in entries:
        lines = [line.text.strip() for line in entry.iter("line") if line.text and line.text.strip()]
        devices.append(
            DevicePush(
                serial=(entry.findtext("serial-no") or entry.get("name") or "").strip(),
                name=(entry.findtext("devicename") or "").strip(),
                result=(entry.findtext("result") or "").strip(),
                details="; ".join(lines) or (entry.findtext("details") or "").strip(),
            )
        )
    return PushJob(job, tuple(devices))


def show_job(job_id: str) -> str:
    if not job_id.isdigit():
        raise PermanentError(f"job id {job_id!r} is not a number", code="BadJobId", service=SERVICE)
    return f'show jobs id "{job_id}"'


def generate_vm_auth_key(lifetime_hours: int) -> str:
    return f'request bootstrap vm-auth-key generate lifetime "{int(lifetime_hours)}"'


def deactivate_licence(license_manager: str, serial: str) -> str:
    manager = checked_name("license manager", license_manager)
    return (
        f'request plugins sw_fw_license deactivate license-manager "{manager}" '
        f'devices member "{checked_name("serial", serial)}"'
    )


def show_licensed_devices(license_manager: str) -> str:
    manager = checked_name("license manager", license_manager)
    return f'show plugins sw_fw_license devices license-manager "{manager}"'


# --- reading answers --------------------------------------------------------------------------------


def parse_managed_devices(result: ET.Element | None) -> dict[str, tuple[str, str, bool]]:
    """``show devices all`` -> serial: (ip, hostname, connected)."""
    devices: dict[str, tuple[str, str, bool]] = {}
    for entry in result.findall("devices/entry") if result is not None else []:
        serial = entry.findtext("serial") or entry.get("name") or ""
        if serial:
            connected = (entry.findtext("connected") or "").strip().lower() == "yes"
            devices[serial] = (
                entry.findtext("ip-address") or "",
                entry.findtext("hostname") or "",
                connected,
            )
    return devices


def parse_members(config: ET.Element | None) -> dict[str, str]:
    """A device-group or template-stack node (``<device-group><entry name=...><devices>...``)
    -> serial: the name of the entry it belongs to."""
    members: dict[str, str] = {}
    for entry in config.findall("entry") if config is not None else []:
        for device in entry.findall("devices/entry"):
            serial = device.get("name")
            if serial:
                members[serial] = entry.get("name") or ""
    return members


def merge_devices(
    managed: dict[str, tuple[str, str, bool]], groups: dict[str, str], stacks: dict[str, str]
) -> list[PanDevice]:
    """One record per serial Panorama knows, managed or only still referenced (drift to repair)."""
    serials = sorted(set(managed) | set(groups) | set(stacks))
    devices = []
    for serial in serials:
        ip, hostname, connected = managed.get(serial, ("", "", False))
        devices.append(
            PanDevice(serial, ip, hostname, connected, groups.get(serial, ""), stacks.get(serial, ""))
        )
    return devices


def parse_job(job_id: str, result: ET.Element | None) -> CommitJob:
    job = result.find("job") if result is not None else None
    if job is None:
        raise NotFound(f"job {job_id} is not in the answer", code="JobNotFound", service=SERVICE)
    lines = [line.text.strip() for line in job.iter("line") if line.text and line.text.strip()]
    return CommitJob(
        job_id=job.findtext("id") or job_id,
        status=(job.findtext("status") or "").strip(),
        result=(job.findtext("result") or "").strip(),
        details="; ".join(lines),
    )


def parse_vm_auth_key(result: ET.Element | None) -> str:
    """``VM auth key 755036225328715 generated. Expires at: 2025/01/31 11:35:34``."""
    text = (result.text or "") if result is not None else ""
    found = re.search(r"VM auth key (\S+) generated", text)
    if not found:
        raise PermanentError(
            f"unexpected vm-auth-key answer: {text[:100]!r}", code="BadAnswer", service=SERVICE
        )
    return found.group(1)


def parse_licensed_serials(result: ET.Element | None) -> set[str]:
    """The serials the ``sw_fw_license`` plugin lists under a license manager. The plugin's answer
    is not documented; Palo Alto's own code reads entries with ``<serial>`` and ``<ip>`` children
    one level below ``<result>``'s first child. Any element with a ``<serial>`` child counts."""
    if result is None:
        return set()
    return {serial.text.strip() for serial in result.iter("serial") if serial.text and serial.text.strip()}


def parse_active_sessions(result: ET.Element | None) -> int:
    """``show session info``: ``<num-active>`` is the firewall's live session count."""
    text = result.findtext("num-active") if result is not None else None
    if text is None or not text.strip().isdigit():
        raise PermanentError("show session info has no num-active", code="BadAnswer", service=SERVICE)
    return int(text)


# --- errors -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PanosFailure:
    """What an XML API call answered when it failed: ``code`` is the response's code attribute
    ("" when there is none), ``http_status`` the HTTP status (PAN-OS answers 403 to a bad key)."""

    code: str
    message: str
    http_status: int = 200


# Messages without a code that mean "busy, try again": a commit, an install or an HA sync is
# running, or another admin holds the configuration lock.
_BUSY = (
    "another commit/validate is in progress",
    "a commit is in progress",
    "you cannot commit while an install is in progress",
    "configuration is locked by",
    "commit is locked by",
    "another sync is in progress",
    "session timed out",
)
_INTERNAL_CODES = {"2", "3", "4", "5", "11", "21"}
_CODE_NAMES = {
    "1": "UnknownCommand",
    "6": "BadXpath",
    "7": "ObjectNotPresent",
    "8": "ObjectNotUnique",
    "10": "ReferenceCountNotZero",
    "12": "InvalidObject",
    "13": "ObjectNotFound",
    "14": "OperationNotPossible",
    "15": "OperationDenied",
    "16": "Unauthorized",
    "17": "InvalidCommand",
    "18": "MalformedCommand",
    "22": "SessionTimedOut",
    "400": "BadRequest",
    "403": "Forbidden",
}


def is_busy(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _BUSY)


def is_missing(failure: PanosFailure) -> bool:
    """The object, or the job, is not there."""
    lowered = failure.message.lower()
    return failure.code in ("7", "13") or "not found" in lowered or "no such node" in lowered


def domain_error(failure: PanosFailure, action: str) -> FleetError:
    """The domain error for a failed call: busy and server trouble are transient, a missing object
    is NotFound, everything else (bad key, bad xpath, references left) is permanent."""
    message = f"{action}: {failure.message or 'failed'}"
    if failure.http_status >= 500 or failure.http_status == 429:
        return TransientError(message, code=f"HTTP{failure.http_status}", service=SERVICE)
    if failure.http_status == 403 or failure.code in ("403", "16"):
        return PermanentError(message, code=_CODE_NAMES.get(failure.code, "Forbidden"), service=SERVICE)
    if is_busy(failure.message) or failure.code == "22":
        return TransientError(message, code="Busy", service=SERVICE)
    if failure.code in _INTERNAL_CODES:
        return TransientError(message, code="InternalError", service=SERVICE)
    if is_missing(failure):
        return NotFound(message, code=_CODE_NAMES.get(failure.code, "NotFound"), service=SERVICE)
    return PermanentError(
        message, code=_CODE_NAMES.get(failure.code, failure.code or "Error"), service=SERVICE
    )


# --- log forwarding to the intake: HTTP server profile, log forwarding profile, rules (F-PANLF-*) ---------
#
# Element names and places are pan-os-python's models (panos.device.HttpServerProfile, HttpServer,
# Http<Type>Header; panos.objects.LogForwardingProfile, LogForwardingProfileMatchList;
# panos.policies.SecurityRule): what PAN-OS accepts. The profile is in a template's shared scope,
# the forwarding profile in a device group, the rules in the device group's pre-rulebase.

TEMPLATES_XPATH = PANORAMA_ROOT + "/template"
# F-PANLF-2: the format sections an HTTP server profile has, one per log type
HTTP_FORMAT_TYPES = frozenset(
    {
        "config", "system", "threat", "traffic", "hip-match", "url", "data", "wildfire", "tunnel",
        "userid", "gtp", "auth", "sctp", "iptag", "globalprotect", "decryption",
    }
)  # fmt: skip
# F-PANLF-4: the log types a match list entry takes (PAN-OS 10.0+)
FORWARDING_LOG_TYPES = frozenset(
    {"traffic", "threat", "wildfire", "url", "data", "gtp", "tunnel", "auth", "sctp", "decryption"}
)
TLS_VERSIONS = frozenset({"1.0", "1.1", "1.2"})  # F-PANLF-3
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTPS"})  # F-PANLF-3
ALL_LOGS = "All Logs"  # F-PANLF-4: the filter that matches every log of the type
# Documented elements gwlb-fleet does not set: read, so that a profile carrying one differs from ours.
_PROFILE_OTHERS = frozenset({"tag-registration"})
_SERVER_OTHERS = frozenset({"username", "password"})
_FORMAT_OTHERS = frozenset({"params"})
_FORWARDING_OTHERS = frozenset({"enhanced-application-logging", "disable-override"})
_MATCH_OTHERS = frozenset(
    {"action-desc", "send-to-panorama", "send-snmptrap", "send-email", "send-syslog", "actions"}
)
RULE_LOG_ELEMENTS = frozenset({"log-setting", "log-start", "log-end"})  # F-PANLF-5


class ConfigSchemaError(ValueError):
    """A configuration element PAN-OS would refuse: an unknown or misplaced element, a bad value.
    The message names it."""


def http_profiles_xpath(template: str) -> str:
    """F-PANLF-1: the template's shared scope (the profile is every vsys's)."""
    name = checked_name("template", template)
    return f"{TEMPLATES_XPATH}/entry[@name='{name}']/config/shared/log-settings/http"


def http_profile_xpath(template: str, profile: str) -> str:
    return f"{http_profiles_xpath(template)}/entry[@name='{checked_name('HTTP server profile', profile)}']"


def forwarding_profiles_xpath(device_group: str) -> str:
    """F-PANLF-4."""
    group = checked_name("device group", device_group)
    return f"{DEVICE_GROUPS_XPATH}/entry[@name='{group}']/log-settings/profiles"


def forwarding_profile_xpath(device_group: str, profile: str) -> str:
    name = checked_name("log forwarding profile", profile)
    return f"{forwarding_profiles_xpath(device_group)}/entry[@name='{name}']"


def security_rules_xpath(device_group: str) -> str:
    """F-PANLF-5: the device group's pre-rulebase."""
    group = checked_name("device group", device_group)
    return f"{DEVICE_GROUPS_XPATH}/entry[@name='{group}']/pre-rulebase/security/rules"


def security_rule_xpath(device_group: str, rule: str) -> str:
    return f"{security_rules_xpath(device_group)}/entry[@name='{checked_name('security rule', rule)}']"


_Q = r"\[@name='([^']+)'\]"
_LOG_XPATHS = (
    ("http-profiles", re.escape(TEMPLATES_XPATH) + rf"/entry{_Q}/config/shared/log-settings/http"),
    ("forwarding-profiles", re.escape(DEVICE_GROUPS_XPATH) + rf"/entry{_Q}/log-settings/profiles"),
    ("rules", re.escape(DEVICE_GROUPS_XPATH) + rf"/entry{_Q}/pre-rulebase/security/rules"),
)


@dataclass(frozen=True)
class LogXpath:
    """Where an xpath points among the log forwarding configuration: ``kind`` (http-profiles,
    forwarding-profiles, rules), ``scope`` (the template or device group), ``entry`` (the profile
    or rule, '' for the whole container), ``leaf`` (an element below the entry, '' for none)."""

    kind: str
    scope: str
    entry: str = ""
    leaf: str = ""


def parse_log_xpath(xpath: str) -> LogXpath | None:
    """The log forwarding xpath ``xpath`` names, or None when it names none of them."""
    for kind, pattern in _LOG_XPATHS:
        found = re.fullmatch(pattern + rf"(?:/entry{_Q}(?:/([a-z-]+))?)?", xpath)
        if found:
            return LogXpath(kind, found.group(1), found.group(2) or "", found.group(3) or "")
    return None


@dataclass(frozen=True)
class HttpServer:
    """F-PANLF-3: one server of an HTTP server profile."""

    name: str
    address: str
    port: int = 443
    protocol: str = "HTTPS"
    tls_version: str = "1.2"
    certificate_profile: str = ""
    http_method: str = "POST"
    others: tuple[str, ...] = ()  # documented elements present that gwlb-fleet does not set


@dataclass(frozen=True)
class HttpFormat:
    """F-PANLF-2: what the profile sends for one log type: the URL path (``url-format``), headers
    and the payload of PAN-OS ``$field`` variables."""

    log_type: str
    name: str
    url_format: str
    payload: str
    headers: tuple[tuple[str, str], ...] = ()
    others: tuple[str, ...] = ()


@dataclass(frozen=True)
class HttpServerProfile:
    name: str
    servers: tuple[HttpServer, ...]
    formats: tuple[HttpFormat, ...]
    others: tuple[str, ...] = ()

    def element(self) -> str:
        """The ``<entry>``, as pan-os-python writes it (F-PANLF-2/3)."""
        formats = "".join(_format_element(f) for f in self.formats)
        servers = "".join(_server_element(s) for s in self.servers)
        return (
            f'<entry name="{escape(self.name)}"><format>{formats}</format><server>{servers}</server></entry>'
        )

    @classmethod
    def parse(cls, entry: ET.Element) -> HttpServerProfile:
        """An ``<entry>`` of ``log-settings/http``; ``ConfigSchemaError`` names what PAN-OS refuses."""
        name = _entry_name(entry, "HTTP server profile")
        where = f"HTTP server profile {name}"
        _only(entry, {"format", "server"} | _PROFILE_OTHERS, where)
        servers = tuple(_parse_server(s, where) for s in _entries(entry.find("server"), f"{where} server"))
        if not servers:
            raise ConfigSchemaError(f"{where}: no server")
        formats = []
        format_node = entry.find("format")
        for section in list(format_node) if format_node is not None else []:
            if section.tag not in HTTP_FORMAT_TYPES:
                raise ConfigSchemaError(f"{where}: format <{section.tag}> is not a log type")
            formats.append(_parse_format(section, where))
        others = tuple(sorted(c.tag for c in entry if c.tag in _PROFILE_OTHERS))
        return cls(name, servers, tuple(sorted(formats, key=lambda f: f.log_type)), others)


@dataclass(frozen=True)
class ForwardingMatch:
    """F-PANLF-4: one match list entry: logs of ``log_type`` passing ``filter`` go to the HTTP
    server profiles ``send_http``."""

    name: str
    log_type: str
    filter: str
    send_http: tuple[str, ...]
    others: tuple[str, ...] = ()


@dataclass(frozen=True)
class ForwardingProfile:
    name: str
    description: str
    matches: tuple[ForwardingMatch, ...]
    others: tuple[str, ...] = ()

    def element(self) -> str:
        text = f"<description>{escape(self.description)}</description>" if self.description else ""
        matches = "".join(
            f'<entry name="{escape(m.name)}"><log-type>{escape(m.log_type)}</log-type>'
            f"<filter>{escape(m.filter)}</filter>"
            f"<send-http>{''.join(f'<member>{escape(p)}</member>' for p in m.send_http)}</send-http></entry>"
            for m in self.matches
        )
        return f'<entry name="{escape(self.name)}">{text}<match-list>{matches}</match-list></entry>'

    @classmethod
    def parse(cls, entry: ET.Element) -> ForwardingProfile:
        name = _entry_name(entry, "log forwarding profile")
        where = f"log forwarding profile {name}"
        _only(entry, {"description", "match-list"} | _FORWARDING_OTHERS, where)
        matches = tuple(_parse_match(m, where) for m in _entries(entry.find("match-list"), where))
        others = tuple(sorted(c.tag for c in entry if c.tag in _FORWARDING_OTHERS))
        description = (entry.findtext("description") or "").strip()
        return cls(name, description, tuple(sorted(matches, key=lambda m: m.name)), others)


@dataclass(frozen=True)
class RuleLogging:
    """F-PANLF-5: a security rule's logging: its log forwarding profile and log at session end."""

    rule: str
    log_setting: str
    log_end: bool

    def element(self) -> str:
        """The children a ``set`` on the rule's entry merges into it."""
        return f"<log-setting>{escape(self.log_setting)}</log-setting><log-end>{_yes(self.log_end)}</log-end>"

    @classmethod
    def parse(cls, entry: ET.Element) -> RuleLogging:
        name = _entry_name(entry, "security rule")
        log_end = (entry.findtext("log-end") or "yes").strip()  # PAN-OS logs at session end by default
        if log_end not in ("yes", "no"):
            raise ConfigSchemaError(f"security rule {name}: log-end {log_end!r} is not yes or no")
        return cls(name, (entry.findtext("log-setting") or "").strip(), log_end == "yes")


def parse_rules(rules: ET.Element | None) -> list[RuleLogging]:
    """``pre-rulebase/security/rules`` -> each rule's logging, in rulebase order."""
    return [RuleLogging.parse(entry) for entry in _entries(rules, "security rules")]


def merge_set(target: ET.Element, addition: ET.Element) -> None:
    """What ``action=set`` does (F-PANLF-6): ``addition``'s children merged into ``target`` —
    entries by name and elements by tag merged recursively, members added, texts replaced;
    nothing already there is removed."""
    if addition.text and addition.text.strip():
        target.text = addition.text
    for child in addition:
        if child.tag == "member":
            if all(m.text != child.text for m in target.findall("member")):
                target.append(_copy(child))
            continue
        match = (
            next((e for e in target.findall("entry") if e.get("name") == child.get("name")), None)
            if child.tag == "entry"
            else target.find(child.tag)
        )
        if match is None:
            target.append(_copy(child))
        else:
            merge_set(match, child)


def _copy(element: ET.Element) -> ET.Element:
    return ET.fromstring(ET.tostring(element))


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _entry_name(entry: ET.Element, kind: str) -> str:
    name = entry.get("name") or ""
    if entry.tag != "entry" or not name:
        raise ConfigSchemaError(f"{kind}: <{entry.tag}> is not an <entry name=...>")
    return name


def _entries(container: ET.Element | None, where: str) -> list[ET.Element]:
    if container is None:
        return []
    misplaced = [c.tag for c in container if c.tag != "entry"]
    if misplaced:
        raise ConfigSchemaError(f"{where}: <{misplaced[0]}> where only <entry> may be")
    return list(container)


def _only(element: ET.Element, allowed: set[str] | frozenset[str], where: str) -> None:
    for child in element:
        if child.tag not in allowed:
            raise ConfigSchemaError(f"{where}: unexpected element <{child.tag}>")


def _members(element: ET.Element | None, where: str) -> tuple[str, ...]:
    if element is None:
        return ()
    misplaced = [c.tag for c in element if c.tag != "member"]
    if misplaced:
        raise ConfigSchemaError(f"{where}: <{misplaced[0]}> where only <member> may be")
    return tuple((m.text or "").strip() for m in element)


def _server_element(server: HttpServer) -> str:
    profile = (
        f"<certificate-profile>{escape(server.certificate_profile)}</certificate-profile>"
        if server.certificate_profile
        else ""
    )
    return (
        f'<entry name="{escape(server.name)}"><address>{escape(server.address)}</address>'
        f"<protocol>{server.protocol}</protocol><port>{int(server.port)}</port>"
        f"<tls-version>{server.tls_version}</tls-version>{profile}"
        f"<http-method>{escape(server.http_method)}</http-method></entry>"
    )


def _parse_server(entry: ET.Element, where: str) -> HttpServer:
    name = _entry_name(entry, f"{where} server")
    here = f"{where} server {name}"
    known = {"address", "protocol", "port", "tls-version", "certificate-profile", "http-method"}
    _only(entry, known | _SERVER_OTHERS, here)
    address = (entry.findtext("address") or "").strip()
    protocol = (entry.findtext("protocol") or "HTTPS").strip()
    port_text = (entry.findtext("port") or "443").strip()
    tls_version = (entry.findtext("tls-version") or "").strip()
    if not address:
        raise ConfigSchemaError(f"{here}: no address")
    if protocol not in HTTP_PROTOCOLS:
        raise ConfigSchemaError(f"{here}: protocol {protocol!r} is not HTTP or HTTPS")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigSchemaError(f"{here}: port {port_text!r} is not a port")
    if tls_version and tls_version not in TLS_VERSIONS:
        raise ConfigSchemaError(f"{here}: tls-version {tls_version!r} is not one of {sorted(TLS_VERSIONS)}")
    return HttpServer(
        name,
        address,
        int(port_text),
        protocol,
        tls_version,
        (entry.findtext("certificate-profile") or "").strip(),
        (entry.findtext("http-method") or "POST").strip(),
        tuple(sorted(c.tag for c in entry if c.tag in _SERVER_OTHERS)),
    )


def _format_element(fmt: HttpFormat) -> str:
    headers = "".join(
        f'<entry name="{escape(name)}"><value>{escape(value)}</value></entry>' for name, value in fmt.headers
    )
    return (
        f"<{fmt.log_type}><name>{escape(fmt.name)}</name><url-format>{escape(fmt.url_format)}</url-format>"
        f"<headers>{headers}</headers><payload>{escape(fmt.payload)}</payload></{fmt.log_type}>"
    )


def _parse_format(section: ET.Element, where: str) -> HttpFormat:
    here = f"{where} format {section.tag}"
    _only(section, {"name", "url-format", "payload", "headers"} | _FORMAT_OTHERS, here)
    headers = []
    for header in _entries(section.find("headers"), f"{here} headers"):
        name = _entry_name(header, f"{here} header")
        _only(header, {"value"}, f"{here} header {name}")
        headers.append((name, header.findtext("value") or ""))
    return HttpFormat(
        section.tag,
        (section.findtext("name") or "").strip(),
        (section.findtext("url-format") or "").strip(),
        section.findtext("payload") or "",
        tuple(sorted(headers)),
        tuple(sorted(c.tag for c in section if c.tag in _FORMAT_OTHERS)),
    )


def _parse_match(entry: ET.Element, where: str) -> ForwardingMatch:
    name = _entry_name(entry, f"{where} match list")
    here = f"{where} match list {name}"
    _only(entry, {"log-type", "filter", "send-http"} | _MATCH_OTHERS, here)
    log_type = (entry.findtext("log-type") or "").strip()
    if log_type not in FORWARDING_LOG_TYPES:
        raise ConfigSchemaError(f"{here}: log-type {log_type!r} is not one of {sorted(FORWARDING_LOG_TYPES)}")
    return ForwardingMatch(
        name,
        log_type,
        (entry.findtext("filter") or "").strip(),
        _members(entry.find("send-http"), f"{here} send-http"),
        tuple(sorted(c.tag for c in entry if c.tag in _MATCH_OTHERS)),
    )
