"""Panorama over pan-os-python: managed devices, device groups, template stacks, commits.

Three things pan-os-python does that the control plane cannot live with are changed here:

- It builds its connection without an SSL context, and pan-python then *skips certificate
  verification*. ``_VerifiedPanorama`` passes a verifying context: the system CAs, or
  ``PANORAMA_CA_FILE`` for a Panorama with a private CA (the lab's self-signed one).
- Its HTTP timeout is the 1200 s job timeout. Each call here gets at most ``API_TIMEOUT_S``, and
  never more than the invocation has left.
- Its commit (``PanoramaCommit``) is a full commit, or a partial one sent without
  ``action=partial`` (F-PAN-1). Commits here go through pan-python's ``xapi.commit`` as the
  documented partial commit of our admin's and the licence plugin's changes only; the answer's
  ``result/job`` is the job, whose *result* (not only its end) the flows read (F-PAN-2).

Reads report what Panorama has *committed* (the running configuration and ``show devices
all``): reading back after the commit job finished is how the flows verify a removal.

The flows' commit is a Panorama (partial) commit, not a commit-all: removing a terminated firewall
from device groups, template stacks and managed devices, and the licence plugin's deactivation,
are Panorama's own configuration; nothing needs pushing to the remaining firewalls. Set-up's log
forwarding does need the firewalls to have it: ``push`` is a commit-all of a device group or a
template stack (F-PAN-4), and ``push_job`` reads its job with each firewall's result (F-PAN-2).

``RAM_ACTIONS`` is empty on purpose: Panorama is not an Alibaba Cloud service; it is reached over
HTTPS with its own API key and no RAM action is involved. The key is a KMS secret
(``PANORAMA_API_KEY_SECRET``, F-KMS-1), asked of the SecretsPort before each call (its cache makes
that cheap, F-KMS-4) and read anew once when Panorama refuses it: a rotated key is picked up
without a restart. It never appears in a log line or an error (pan-python masks it in its own).
"""

from __future__ import annotations

import http.client
import logging
import re
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pan.xapi
from panos import errors as panos_errors
from panos.base import PanDevice as _SdkDevice
from panos.panorama import Panorama

from gwlb_fleet import retry
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import FleetError, NotFound, PermanentError, TransientError
from gwlb_fleet.panos import xmlapi
from gwlb_fleet.panos.xmlapi import SERVICE, PanosFailure
from gwlb_fleet.ports import CommitJob, PanDevice, SecretsPort
from gwlb_fleet.settings import Settings

RAM_ACTIONS: frozenset[str] = frozenset()

log = logging.getLogger("gwlb_fleet.panos.panorama")
T = TypeVar("T")

# What Panorama answers a refused key with (HTTP 403 "Invalid Credential", code 16): worth one
# fresh read of the secret, in case it was rotated.
KEY_REFUSED = frozenset({"Forbidden", "Unauthorized"})
ApiKeySource = Callable[[Deadline, bool], str]  # (deadline, read anew) -> the key

NOTHING_TO_COMMIT = ""  # commit()'s job id when there was nothing to commit; job() of it is FIN OK


class _VerifiedPanorama(Panorama):  # type: ignore[misc]  # pan-os-python has no type hints
    """A Panorama whose connection verifies Panorama's certificate."""

    _api_key: Any  # pan-os-python's: the key its connection objects are built with

    def __init__(self, hostname: str, port: int, api_key: str, ssl_context: ssl.SSLContext) -> None:
        super().__init__(hostname, api_key=api_key, port=port)
        self._ssl_context = ssl_context

    def generate_xapi(self) -> Any:
        return _SdkDevice.XapiWrapper(
            api_key=self._api_key,
            hostname=self.hostname,
            port=self.port,
            timeout=self.timeout,
            pan_device=self,
            ssl_context=self._ssl_context,
        )

    def use_api_key(self, api_key: str) -> None:
        """Sign the next calls with ``api_key`` (a new connection object carries it)."""
        if api_key != self._api_key:
            self._api_key = api_key
            self._xapi_private = None


def verifying_context(ca_file: str) -> ssl.SSLContext:
    """Certificates checked against ``ca_file``, or the system CAs when it is ''."""
    return ssl.create_default_context(cafile=ca_file or None)


def split_host(host: str) -> tuple[str, int]:
    """``panorama.example.com`` or ``10.0.0.5:8443`` or ``[::1]:8443`` -> (host, port)."""
    found = re.fullmatch(r"\[(?P<v6>[^\]]+)\](?::(?P<p6>\d+))?|(?P<name>[^:]+)(?::(?P<port>\d+))?", host)
    if not found:
        raise PermanentError(f"PANORAMA_HOST {host!r} is not host[:port]", code="BadHost", service=SERVICE)
    port = found.group("p6") or found.group("port")
    return found.group("v6") or found.group("name"), int(port) if port else 443


class PanoramaAdapter:
    """PanoramaPort. ``op`` is public for the licence plugin and the VM-Series probe."""

    def __init__(
        self,
        device: Any,
        api_timeout_s: float = 10.0,
        commit_admins: Sequence[str] = (),
        sleep: Callable[[float], None] = time.sleep,
        *,
        api_key: ApiKeySource | None = None,
    ) -> None:
        """``api_key``: where each call's key comes from (None: the device carries its own)."""
        self._device = device
        self._api_key = api_key
        self._api_timeout_s = api_timeout_s
        self._commit_admins = list(commit_admins)
        self._sleep = sleep
        # pan-os-python keeps each answer on its connection object: one call at a time.
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, secrets: SecretsPort, sleep: Callable[[float], None] = time.sleep
    ) -> PanoramaAdapter:
        if not settings.panorama_host or not settings.panorama_api_key_secret:
            raise PermanentError(
                "PANORAMA_HOST and PANORAMA_API_KEY_SECRET are needed for VM-Series",
                code="NotConfigured",
                service=SERVICE,
            )
        host, port = split_host(settings.panorama_host)
        # No key yet: the first call asks the SecretsPort for it (F-KMS-1).
        device = _VerifiedPanorama(host, port, "", verifying_context(settings.panorama_ca_file))
        admins = [name.strip() for name in settings.panorama_commit_admins.split(",") if name.strip()]
        name = settings.panorama_api_key_secret

        def api_key(deadline: Deadline, fresh: bool) -> str:
            return secrets.refresh(name, deadline) if fresh else secrets.get(name, deadline)

        return cls(device, settings.api_timeout_s, admins, sleep, api_key=api_key)

    # --- PanoramaPort ---------------------------------------------------------------------------

    def devices(self, deadline: Deadline) -> list[PanDevice]:
        managed = xmlapi.parse_managed_devices(self.op(xmlapi.SHOW_DEVICES, deadline))
        groups = xmlapi.parse_members(
            self._running_config(xmlapi.DEVICE_GROUPS_XPATH, "device-group", deadline)
        )
        stacks = xmlapi.parse_members(
            self._running_config(xmlapi.TEMPLATE_STACKS_XPATH, "template-stack", deadline)
        )
        return xmlapi.merge_devices(managed, groups, stacks)

    def remove_from_device_group(self, serial: str, device_group: str, deadline: Deadline) -> None:
        self._delete(
            xmlapi.device_group_member_xpath(device_group, serial), "remove_from_device_group", deadline
        )

    def remove_from_template_stack(self, serial: str, template_stack: str, deadline: Deadline) -> None:
        self._delete(
            xmlapi.template_stack_member_xpath(template_stack, serial),
            "remove_from_template_stack",
            deadline,
        )

    def remove_managed_device(self, serial: str, deadline: Deadline) -> None:
        self._delete(xmlapi.managed_device_xpath(serial), "remove_managed_device", deadline)

    def commit(self, description: str, deadline: Deadline) -> str:
        """A partial commit of our admin's changes and the licence plugin's (F-PAN-1): another
        administrator's pending changes stay pending. Sent with ``action=partial``, which
        pan-os-python's PanoramaCommit leaves out."""
        cmd = xmlapi.partial_commit(xmlapi.commit_admins(self._commit_admins), description)

        def start() -> str:
            xapi = self._device.xapi
            xapi.commit(cmd=cmd, action=xmlapi.PARTIAL_COMMIT_ACTION)
            return xmlapi.parse_commit_answer(xapi.element_root)  # F-PAN-2

        job_id = self._call("commit", deadline, start)
        log.info(
            "panorama commit", extra={"job_id": job_id or "none needed", "commit_description": description}
        )
        return job_id

    def job(self, job_id: str, deadline: Deadline) -> CommitJob:
        if job_id == NOTHING_TO_COMMIT:
            return CommitJob(job_id, "FIN", "OK", "nothing to commit")
        return xmlapi.parse_job(job_id, self.op(xmlapi.show_job(job_id), deadline))

    def push(self, target: xmlapi.PushTarget, description: str, deadline: Deadline) -> str:
        """A commit-all of ``target`` to its firewalls (F-PAN-4): its job id, or "" when Panorama
        started none. Only set-up pushes (gwlb_fleet.deploy.panlogs); the flows never do."""
        cmd = target.command(description)

        def start() -> str:
            xapi = self._device.xapi
            xapi.commit(cmd=cmd, action=xmlapi.COMMIT_ALL_ACTION)
            return xmlapi.parse_commit_answer(xapi.element_root)  # F-PAN-2

        job_id = self._call("commit-all", deadline, start)
        log.info("panorama push", extra={"job_id": job_id or "none", "push_target": str(target)})
        return job_id

    def push_job(self, job_id: str, deadline: Deadline) -> xmlapi.PushJob:
        """A commit-all job, with each firewall's result (F-PAN-2)."""
        return xmlapi.parse_push_job(job_id, self.op(xmlapi.show_job(job_id), deadline))

    def generate_vm_auth_key(self, lifetime_hours: int, deadline: Deadline) -> str:
        return xmlapi.parse_vm_auth_key(self.op(xmlapi.generate_vm_auth_key(lifetime_hours), deadline))

    # --- configuration set-up makes (gwlb_fleet.deploy.panlogs.PanoramaConfigApi) --------------------

    def config_get(self, xpath: str, deadline: Deadline) -> ET.Element | None:
        """The node at ``xpath`` in the candidate configuration (``action=get``), None when absent."""
        return self._config_node("get", xpath, deadline)

    def config_show(self, xpath: str, deadline: Deadline) -> ET.Element | None:
        """The node at ``xpath`` in the running (committed) configuration (``action=show``), None
        when absent."""
        return self._config_node("show", xpath, deadline)

    def config_set(self, xpath: str, element: str, deadline: Deadline) -> None:
        """``action=set``: ``element`` merged into the node at ``xpath`` (F-PANLF-6)."""
        self._call("config set", deadline, lambda: self._device.xapi.set(xpath=xpath, element=element))

    def config_edit(self, xpath: str, element: str, deadline: Deadline) -> None:
        """``action=edit``: the node at ``xpath`` replaced by ``element``, or created (F-PANLF-7)."""
        self._call("config edit", deadline, lambda: self._device.xapi.edit(xpath=xpath, element=element))

    def config_delete(self, xpath: str, deadline: Deadline) -> None:
        """``action=delete``; a node already gone is success."""
        self._delete(xpath, "config delete", deadline)

    def _config_node(self, action: str, xpath: str, deadline: Deadline) -> ET.Element | None:
        def read() -> ET.Element | None:
            xapi = self._device.xapi
            (xapi.get if action == "get" else xapi.show)(xpath=xpath)
            return xapi.element_root  # type: ignore[no-any-return]

        try:
            answer = self._call(f"config {action}", deadline, read)
        except NotFound:
            return None  # PAN-OS answers a show of a missing node with an error (code 7)
        result = answer.find("result") if answer is not None else None
        return result[0] if result is not None and len(result) else None  # get: an empty <result/>

    # --- the calls ------------------------------------------------------------------------------------

    def op(self, command: str, deadline: Deadline, target: str = "") -> ET.Element | None:
        """An operational command (pan-os-python's string form); ``target`` sends it on to the
        managed firewall with that serial. The answer's ``<result>``."""
        extra = {"target": xmlapi.checked_name("serial", target)} if target else None
        answer = self._call(command, deadline, lambda: self._device.op(command, extra_qs=extra))
        return answer.find("result") if answer is not None else None

    def _running_config(self, xpath: str, node: str, deadline: Deadline) -> ET.Element | None:
        try:
            answer = self._call(f"show {node}", deadline, lambda: self._device.xapi.show(xpath))
        except NotFound:
            return None  # none configured
        return answer.find(f"result/{node}") if answer is not None else None

    def _delete(self, xpath: str, action: str, deadline: Deadline) -> None:
        try:
            self._call(action, deadline, lambda: self._device.xapi.delete(xpath))
        except NotFound:
            log.info("already gone", extra={"action": action, "xpath": xpath})

    def _call(self, action: str, deadline: Deadline, operation: Callable[[], T]) -> T:
        try:
            return self._call_with_key(action, deadline, operation)
        except PermanentError as exc:
            if self._api_key is None or exc.code not in KEY_REFUSED:
                raise
            # Refused: maybe rotated since this instance read it. One fresh read; the same key
            # again means it really is refused.
            used = self._device._api_key
            if self._api_key(deadline, True) == used:
                raise
            log.info("panorama refused the cached api key; retrying with the current secret")
            return self._call_with_key(action, deadline, operation)

    def _call_with_key(self, action: str, deadline: Deadline, operation: Callable[[], T]) -> T:
        def attempt() -> T:
            with self._lock:
                if self._api_key is not None:
                    self._device.use_api_key(self._api_key(deadline, False))
                xapi = self._device.xapi
                # pan-python wants whole seconds; a call never outlives the invocation.
                xapi.timeout = max(1, int(min(self._api_timeout_s, deadline.remaining())))
                try:
                    return operation()
                except (pan.xapi.PanXapiError, OSError, http.client.HTTPException) as exc:
                    raise translate(exc, getattr(xapi, "status_code", None), action) from exc

        return retry.call(
            attempt,
            deadline=deadline,
            transient=lambda exc: isinstance(exc, TransientError),
            service=SERVICE,
            action=action,
            sleep=self._sleep,
        )


_HTTP_STATUS = re.compile(r"URLError: code: (\d{3})")
_TLS_FAILURES = (
    "certificate_verify_failed",
    "ssl.certificateerror",
    "wrong_version_number",
    "hostname mismatch",
)


def translate(exc: BaseException, status_code: str | None, action: str) -> FleetError:
    """A pan-os-python / pan-python error as a domain error."""
    text = str(exc)
    if isinstance(exc, (OSError, http.client.HTTPException)):
        # Raised past pan-python: the connection dropped, or a read timed out.
        return TransientError(f"{action}: {text or type(exc).__name__}", code="Unreachable", service=SERVICE)
    if any(marker in text.lower() for marker in _TLS_FAILURES):
        # Retrying cannot fix a certificate Panorama's CA did not sign: say so at once.
        return PermanentError(
            f"{action}: TLS verification failed: {text}", code="TlsVerification", service=SERVICE
        )
    if isinstance(exc, (panos_errors.PanConnectionTimeout, panos_errors.PanURLError)) or text.startswith(
        "URLError:"
    ):
        status = _HTTP_STATUS.search(text)
        if status is None:
            return TransientError(f"{action}: {text}", code="Unreachable", service=SERVICE)
        reason = text.split("reason:", 1)[-1].strip()
        return xmlapi.domain_error(PanosFailure(status.group(1), reason, int(status.group(1))), action)
    if isinstance(
        exc,
        (
            panos_errors.PanCommitInProgress,
            panos_errors.PanInstallInProgress,
            panos_errors.PanLockError,
            panos_errors.PanHASyncInProgress,
            panos_errors.PanSessionTimedOut,
        ),
    ):
        return TransientError(f"{action}: {text}", code="Busy", service=SERVICE)
    return xmlapi.domain_error(PanosFailure(status_code or "", text), action)
