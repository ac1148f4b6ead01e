"""The PAN-OS XML API subset gwlb-fleet uses, answered from a FakePanorama.

Requests are ``/api/`` with form parameters (pan-python POSTs them; GET works too): ``type=keygen``,
``type=op`` (the commands in gwlb_fleet.panos.xmlapi), ``type=config`` ``get`` / ``show`` /
``delete`` on the device-group, template-stack and managed-device xpaths, ``get`` / ``show`` /
``set`` / ``edit`` / ``delete`` of the log forwarding configuration (HTTP server profiles in a
template, log forwarding profiles and the pre-rulebase's security rules in a device group;
F-PANLF-*: unknown or misplaced elements and bad values are refused with code 12, other xpaths
with code 6), ``type=commit`` (full, or partial by admin with ``action=partial``, F-PAN-1; the API
key is the admin ``api_user``'s; a commit-all of a device group or a template stack with
``action=all``, F-PAN-4, whose job lists each firewall with its result, F-PAN-2). Answers are
PAN-OS's ``<response status="success|error" code="...">`` documents; a bad or missing key is HTTP 403
``Invalid Credential``, as PAN-OS answers it. What PAN-OS does not document and is assumed here:
deleting an object that is not there answers ``status="error" code="7"`` (Object not present),
the licence plugin's device list is ``<result><devices><entry><serial/><ip/>...``.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape

from gwlb_fleet.panos import xmlapi
from gwlb_fleet.panos.fakes import FakePanorama, Job, ManagedDevice, PanoramaConfig, PanosError
from gwlb_fleet.panos.xmlapi import PanosFailure


@dataclass(frozen=True)
class ApiRequest:
    """One XML API request as the server understood it, for tests to assert on."""

    type: str
    action: str = ""
    cmd: str = ""
    xpath: str = ""
    target: str = ""
    authorized: bool = True
    element: str = ""


@dataclass(frozen=True)
class XmlAnswer:
    status: int  # HTTP
    body: str
    reason: str = ""  # HTTP reason phrase; PAN-OS says "Invalid Credential" with its 403
    drop: bool = False  # close the connection unanswered (Panorama unreachable)


def success(inner: str = "", code: str = "") -> XmlAnswer:
    code_attr = f' code="{code}"' if code else ""
    return XmlAnswer(200, f'<response status="success"{code_attr}>{inner}</response>')


def failure(fault: PanosFailure) -> XmlAnswer:
    if fault.http_status == 0:
        return XmlAnswer(0, "", drop=True)
    code_attr = f' code="{escape(fault.code)}"' if fault.code else ""
    body = f'<response status="error"{code_attr}><msg><line>{escape(fault.message)}</line></msg></response>'
    if fault.http_status == 403:
        message = escape(fault.message)
        body = f'<response status="error" code="403"><result><msg>{message}</msg></result></response>'
    reason = fault.message if fault.http_status == 403 else ""
    return XmlAnswer(fault.http_status, body, reason)


INVALID_CREDENTIAL = PanosFailure("403", "Invalid Credential", 403)


class XmlApi:
    """Dispatches XML API requests to a FakePanorama; keeps an API key and admin passwords."""

    def __init__(
        self, panorama: FakePanorama, api_key: str, users: dict[str, str], api_user: str = ""
    ) -> None:
        self.panorama = panorama
        self.api_key = api_key
        self.api_user = api_user or panorama.api_user  # the admin the API key belongs to
        self.users = users
        self.requests: list[ApiRequest] = []

    def answer(self, params: dict[str, str], header_key: str | None) -> XmlAnswer:
        kind = params.get("type", "")
        key = params.get("key") or header_key or ""
        authorized = kind == "keygen" or secrets.compare_digest(key.encode(), self.api_key.encode())
        self.requests.append(
            ApiRequest(
                kind,
                params.get("action", ""),
                params.get("cmd", ""),
                params.get("xpath", ""),
                params.get("target", ""),
                authorized,
                params.get("element", ""),
            )
        )
        if not authorized:
            return failure(INVALID_CREDENTIAL)
        try:
            if kind == "keygen":
                return self._keygen(params)
            if kind == "op":
                return self._op(params.get("cmd", ""), params.get("target", ""))
            if kind == "config":
                return self._config(
                    params.get("action", ""), params.get("xpath", ""), params.get("element", "")
                )
            if kind == "commit":
                return self._commit(params.get("cmd", ""), params.get("action", ""))
        except PanosError as exc:
            return failure(exc.failure)
        return failure(PanosFailure("400", f"Invalid type {kind!r}", 400))

    # --- keygen ----------------------------------------------------------------------------------------

    def _keygen(self, params: dict[str, str]) -> XmlAnswer:
        user, password = params.get("user", ""), params.get("password", "")
        expected = self.users.get(user)
        if expected is None or not secrets.compare_digest(password.encode(), expected.encode()):
            return failure(INVALID_CREDENTIAL)
        return success(f"<result><key>{escape(self.api_key)}</key></result>")

    # --- op ------------------------------------------------------------------------------------------------

    def _op(self, cmd: str, target: str) -> XmlAnswer:
        try:
            root = ET.fromstring(cmd)
        except ET.ParseError:
            return failure(PanosFailure("18", "Malformed command"))
        words = _words(root)
        fake = self.panorama
        if words[:2] == ["show", "session"] and words[2:] == ["info"]:
            if not target:
                return failure(PanosFailure("17", "show session info is unexpected on Panorama"))
            return success(_session_info(fake.api_active_sessions(target)))
        if target:
            return failure(PanosFailure("17", f"{' '.join(words)} cannot be sent on to a firewall"))
        if words == ["show", "devices", "all"] or words == ["show", "devices", "connected"]:
            devices = fake.api_managed_devices()
            if words[2] == "connected":
                devices = [d for d in devices if d.connected]
            return success(
                f"<result><devices>{''.join(_device_entry(d) for d in devices)}</devices></result>"
            )
        if words[:3] == ["show", "jobs", "id"]:
            return success(_job(fake.api_job(_text(root, "jobs/id"))))
        if words[:4] == ["request", "plugins", "sw_fw_license", "deactivate"]:
            manager = _text(root, "plugins/sw_fw_license/deactivate/license-manager")
            serials = [m.text or "" for m in root.findall("plugins/sw_fw_license/deactivate/devices/member")]
            for serial in serials:
                fake.api_deactivate(manager, serial)
            return success("<result><msg>Deactivation requested</msg></result>")
        if words[:4] == ["show", "plugins", "sw_fw_license", "devices"]:
            licensed = fake.api_licensed_devices(_text(root, "plugins/sw_fw_license/devices/license-manager"))
            entries = "".join(
                f'<entry name="{escape(s)}"><serial>{escape(s)}</serial><ip>{escape(ip)}</ip></entry>'
                for s, ip in licensed.items()
            )
            return success(f"<result><devices>{entries}</devices></result>")
        if words[:4] == ["request", "bootstrap", "vm-auth-key", "generate"]:
            lifetime = _text(root, "bootstrap/vm-auth-key/generate/lifetime")
            key = fake.api_generate_vm_auth_key(int(lifetime) if lifetime.isdigit() else 0)
            return success(f"<result>VM auth key {key} generated. Expires at: 2099/01/31 11:35:34</result>")
        return failure(PanosFailure("17", f"{' '.join(words)} is unexpected"))

    # --- config ------------------------------------------------------------------------------------------

    def _config(self, action: str, xpath: str, element: str = "") -> XmlAnswer:
        if action in ("get", "show") and xmlapi.parse_log_xpath(xpath) is not None:
            return self._log_node(action, xpath)
        if action in ("set", "edit"):
            (self.panorama.api_set if action == "set" else self.panorama.api_edit)(
                xpath, element, self.api_user
            )
            return success("<msg>command succeeded</msg>", code="20")
        if action in ("get", "show"):
            node = _config_node(self.panorama.api_config(running=action == "show"), xpath)
            counts = ' total-count="1" count="1"' if action == "get" else ""
            return success(f"<result{counts}>{node}</result>")
        if action == "delete":
            if not self.panorama.api_delete(xpath, self.api_user):
                return failure(PanosFailure("7", "Object doesn't exist"))
            return success("<msg>command succeeded</msg>", code="20")
        return failure(PanosFailure("400", f"action {action!r} is not supported here", 400))

    def _log_node(self, action: str, xpath: str) -> XmlAnswer:
        """The log forwarding configuration (F-PANLF-*): ``get`` of a missing entry answers an
        empty result, ``show`` of one "No such node" (code 7)."""
        node = self.panorama.log_node(xpath, running=action == "show")
        if node is None:
            if action == "show":
                return failure(PanosFailure("7", "No such node"))
            return success('<result total-count="0" count="0"/>')
        counts = ' total-count="1" count="1"' if action == "get" else ""
        return success(f"<result{counts}>{ET.tostring(node, encoding='unicode')}</result>")

    # --- commit -----------------------------------------------------------------------------------------

    def _commit(self, cmd: str, action: str) -> XmlAnswer:
        """A full commit (``<commit>``, no action), or the documented partial commit by admin
        (F-PAN-1: ``action=partial`` with ``<partial><admin><member>``): only those admins'
        changes are committed, the others' stay pending. A ``<partial>`` without
        ``action=partial`` (what pan-os-python sends) is refused: the documented request carries
        it, and that is the one gwlb-fleet must send."""
        if action == xmlapi.COMMIT_ALL_ACTION:
            return self._commit_all(cmd)
        if action not in ("", xmlapi.PARTIAL_COMMIT_ACTION):
            return failure(PanosFailure("17", f"commit action {action!r} is not supported here"))
        try:
            root = ET.fromstring(cmd or "<commit/>")
        except ET.ParseError:
            return failure(PanosFailure("18", "Malformed command"))
        if root.tag != "commit":
            return failure(PanosFailure("17", f"{root.tag} is unexpected"))
        partial = root.find("partial")
        admins = [(m.text or "").strip() for m in root.findall("partial/admin/member")]
        if action == xmlapi.PARTIAL_COMMIT_ACTION:
            if partial is None or not admins or not all(admins):
                return failure(PanosFailure("18", "partial commit: <partial><admin><member> is missing"))
            unknown = [e.tag for e in partial if e.tag != "admin"]
            if unknown:
                unsupported = f"partial commit of {', '.join(unknown)} is not supported here"
                return failure(PanosFailure("17", unsupported))
        elif partial is not None:
            return failure(PanosFailure("17", "a <partial> commit needs action=partial"))
        job_id = self.panorama.api_commit(root.findtext("description") or "", admins, self.api_user)
        if job_id is None:
            return success("<msg>There are no changes to commit.</msg>", code="19")
        return success(
            f"<result><msg><line>Commit job enqueued with jobid {job_id}</line></msg>"
            f"<job>{job_id}</job></result>",
            code="19",
        )

    def _commit_all(self, cmd: str) -> XmlAnswer:
        """A commit-all (F-PAN-4, ``action=all``) of one device group
        (``<commit-all><shared-policy><device-group><entry name=DG/>``) or one template stack
        (``<commit-all><template-stack><name>TS</name>``), as pan-os-python's PanoramaCommitAll
        builds them; other scopes are refused."""
        try:
            root = ET.fromstring(cmd)
        except ET.ParseError:
            return failure(PanosFailure("18", "Malformed command"))
        if root.tag != "commit-all" or len(root) != 1:
            return failure(PanosFailure("17", "commit-all: one <shared-policy> or <template-stack> expected"))
        body = root[0]
        groups = [e.get("name", "") for e in body.findall("device-group/entry")]
        target: xmlapi.PushTarget | None = None
        if body.tag == "shared-policy" and len(groups) == 1 and groups[0]:
            target = xmlapi.PushTarget("device-group", groups[0])
        elif body.tag == "template-stack" and _text(body, "name"):
            target = xmlapi.PushTarget("template-stack", _text(body, "name"))
        if target is None:
            return failure(PanosFailure("17", f"commit-all of <{body.tag}> is not supported here"))
        job_id = self.panorama.api_commit_all(target, _text(body, "description"), self.api_user)
        return success(
            f"<result><msg><line>Job enqueued with jobid {job_id}</line></msg><job>{job_id}</job></result>",
            code="19",
        )


def _words(root: ET.Element) -> list[str]:
    """The keywords of an op command: the element names down the first-child chain."""
    words, node = [root.tag], root
    while len(node) > 0:
        node = node[0]
        words.append(node.tag)
    return words


def _text(root: ET.Element, path: str) -> str:
    return (root.findtext(path) or "").strip()


def _device_entry(device: ManagedDevice) -> str:
    serial = escape(device.serial)
    return (
        f'<entry name="{serial}"><serial>{serial}</serial>'
        f"<connected>{'yes' if device.connected else 'no'}</connected>"
        f"<hostname>{escape(device.hostname)}</hostname><ip-address>{escape(device.ip)}</ip-address>"
        f"<model>{escape(device.model)}</model><sw-version>{escape(device.sw_version)}</sw-version>"
        "<multi-vsys>no</multi-vsys>"
        '<vsys><entry name="vsys1"><display-name>vsys1</display-name></entry></vsys>'
        "</entry>"
    )


def _session_info(active: int) -> str:
    return (
        f"<result><num-active>{active}</num-active><num-tcp>{active}</num-tcp><num-udp>0</num-udp>"
        "<num-icmp>0</num-icmp><num-max>256000</num-max></result>"
    )


def _job(job: Job) -> str:
    details = "".join(f"<line>{escape(line)}</line>" for line in job.details.split("; ") if line)
    return (
        f"<result><job><tenq>2025/01/01 00:00:00</tenq><id>{escape(job.job_id)}</id>"
        f"<user>{escape(job.user)}</user><type>{job.job_type}</type><status>{job.status}</status>"
        f"<queued>NO</queued><stoppable>no</stoppable><result>{job.result}</result>"
        f"<tfin>2025/01/01 00:00:01</tfin><description>{escape(job.description)}</description>"
        f"<progress>100</progress><details>{details}</details><warnings/>{_job_devices(job)}</job></result>"
    )


def _job_devices(job: Job) -> str:
    """A commit-all job's ``devices/entry`` (F-PAN-2: serial-no, devicename, result, details)."""
    if job.push is None:
        return ""
    entries = "".join(
        f'<entry name="{escape(d.serial)}"><serial-no>{escape(d.serial)}</serial-no>'
        f"<devicename>{escape(d.devicename)}</devicename><result>{escape(d.result)}</result>"
        f"<tstart>2025/01/01 00:00:00</tstart><tfin>2025/01/01 00:00:01</tfin>"
        f"<details><msg><errors><line>{escape(d.details)}</line></errors></msg></details></entry>"
        for d in job.devices
    )
    return f"<devices>{entries}</devices>"


_CONFIG_XPATHS = {
    xmlapi.DEVICE_GROUPS_XPATH: "device-group",
    xmlapi.TEMPLATE_STACKS_XPATH: "template-stack",
    xmlapi.MANAGED_DEVICES_XPATH: "devices",
}


def _config_node(config: PanoramaConfig, xpath: str) -> str:
    node = _CONFIG_XPATHS.get(xpath)
    if node is None:
        raise PanosError(PanosFailure("6", f"Bad Xpath: {xpath}"))
    if node == "devices":
        entries = "".join(f'<entry name="{escape(s)}"/>' for s in sorted(config.managed))
        return f"<devices>{entries}</devices>"
    groups = config.device_groups if node == "device-group" else config.template_stacks
    entries = "".join(
        f'<entry name="{escape(name)}"><devices>'
        + "".join(f'<entry name="{escape(s)}"/>' for s in sorted(members))
        + "</devices></entry>"
        for name, members in sorted(groups.items())
    )
    return f"<{node}>{entries}</{node}>"
