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
