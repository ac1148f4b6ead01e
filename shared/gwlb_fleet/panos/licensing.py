"""Licence release for VM-Series: through Panorama's licence plugin, or the licensing API.

``PanoramaLicensing`` (the default): Panorama's ``sw_fw_license`` plugin, the path Palo Alto's
own autoscaling code uses (terraform-aws/google-swfw-modules)::

    request plugins sw_fw_license deactivate license-manager "<lm>" devices member "<serial>"
    show plugins sw_fw_license devices license-manager "<lm>"       (read back)

The deactivation is made by the plugin's admin (``__sw_fw_license``) and takes effect with the
next Panorama commit: the flow commits once after licence and device removal (a partial commit,
``PANORAMA_COMMIT_ADMINS``, must list ``__sw_fw_license``). The read back assumes that a serial the
plugin still lists under the license manager still holds its licence: the plugin's answer is not
documented; Palo Alto's code reads ``<serial>`` and ``<ip>`` from its entries.

``LicensingApiClient`` (when ``LICENSING_CLIENT_ID`` is set): the Software NGFW credits licensing
API, for fleets licensed by a deployment profile (auth code) rather than the plugin. Documented
(Palo Alto, "Generate Your OAuth Client Credentials"): the token is an OAuth2 client-credentials
grant at ``identity.paloaltonetworks.com/as/token.oauth2`` with scope ``fwflex-service``, sent on
as a bare ``token:`` header to ``api.paloaltonetworks.com/tms/v1``. The read back,
``GET /tms/v1/firewallserialnumbers?auth_code=`` -> ``{"vm_series": [serial, ...]}``, is what
public scripts against the API use. The deactivation call itself ("Deactivate a VM-Series Firewall
Using the API") could not be read from any source reachable here: ``DEACTIVATE_PATH`` and its
JSON body are an ASSUMPTION, kept in one place; a wrong guess fails loudly (HTTP 404 ->
PermanentError), never silently, because every deactivation is read back.

The OAuth client secret and the auth code are KMS secrets (``LICENSING_CLIENT_SECRET_SECRET``,
``LICENSING_AUTH_CODE_SECRET``, F-KMS-1), asked of the SecretsPort at each use (cached there,
F-KMS-4): never settings, never logged.

RAM_ACTIONS: none — neither path is an Alibaba Cloud service.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from gwlb_fleet import retry
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import FleetError, NotFound, PermanentError, TransientError
from gwlb_fleet.panos import xmlapi
from gwlb_fleet.ports import LicensingPort, PanoramaPort, SecretsPort
from gwlb_fleet.settings import Settings

RAM_ACTIONS: frozenset[str] = frozenset()

log = logging.getLogger("gwlb_fleet.panos.licensing")


@runtime_checkable
class PanoramaOperations(Protocol):
    """What the plugin path needs of Panorama: operational commands (PanoramaAdapter.op)."""

    def op(self, command: str, deadline: Deadline, target: str = "") -> Any: ...


class PanoramaLicensing:
    """LicensingPort through the ``sw_fw_license`` plugin of Panorama."""

    def __init__(self, panorama: PanoramaOperations, license_manager: str) -> None:
        self._panorama = panorama
        self._license_manager = xmlapi.checked_name("license manager", license_manager)

    def deactivate(self, serial: str, deadline: Deadline) -> None:
        try:
            self._panorama.op(xmlapi.deactivate_licence(self._license_manager, serial), deadline)
        except NotFound:
            # The plugin does not know the serial here: released before (a retried event), or
            # never licensed by this license manager. Either way it holds no licence of ours.
            if self.is_licensed(serial, deadline):
                raise
            log.info("licence already released", extra={"serial": serial})

    def is_licensed(self, serial: str, deadline: Deadline) -> bool:
        result = self._panorama.op(xmlapi.show_licensed_devices(self._license_manager), deadline)
        return serial in xmlapi.parse_licensed_serials(result)


SERVICE = "licensing"
TOKEN_SCOPE = "fwflex-service"
SERIALS_PATH = "/tms/v1/firewallserialnumbers"
DEACTIVATE_PATH = "/tms/v1/firewallserialnumbers/deactivate"  # ASSUMED: see the module docstring
TOKEN_REFRESH_BEFORE_S = 60.0


SecretValue = Callable[[Deadline], str]  # a secret's current value, read when it is used


class LicensingApiClient:
    """LicensingPort over the Software NGFW credits licensing API (OAuth2 client credentials)."""

    def __init__(
        self,
        api_endpoint: str,
        token_url: str,
        client_id: str,
        client_secret: SecretValue,
        auth_code: SecretValue,
        ssl_context: ssl.SSLContext,
        api_timeout_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api_endpoint.rstrip("/")
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._auth_code = auth_code
        self._ssl = ssl_context
        self._api_timeout_s = api_timeout_s
        self._sleep = sleep
        self._clock = clock
        self._token: tuple[str, float] | None = None  # (token, monotonic time to refresh at)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, secrets: SecretsPort, sleep: Callable[[float], None] = time.sleep
    ) -> LicensingApiClient:
        client_secret = settings.licensing_client_secret_secret
        auth_code = settings.licensing_auth_code_secret
        if not client_secret or not auth_code:
            raise PermanentError(
                "LICENSING_CLIENT_ID needs LICENSING_CLIENT_SECRET_SECRET and LICENSING_AUTH_CODE_SECRET",
                code="NotConfigured",
                service=SERVICE,
            )
        return cls(
            settings.licensing_api_endpoint,
            settings.licensing_token_url,
            settings.licensing_client_id,
            lambda deadline: secrets.get(client_secret, deadline),
            lambda deadline: secrets.get(auth_code, deadline),
            ssl.create_default_context(cafile=settings.licensing_ca_file or None),
            settings.api_timeout_s,
            sleep,
        )

    def deactivate(self, serial: str, deadline: Deadline) -> None:
        body = {"authCode": self._auth_code(deadline), "serialNumbers": [serial]}
        try:
            self._request("POST", DEACTIVATE_PATH, deadline, json_body=body)
        except NotFound:
            if self.is_licensed(serial, deadline):
                raise
            log.info("licence already released", extra={"serial": serial})

    def is_licensed(self, serial: str, deadline: Deadline) -> bool:
        query = {"auth_code": self._auth_code(deadline)}
        answer = self._request("GET", SERIALS_PATH, deadline, query=query)
        serials = answer.get("vm_series") if isinstance(answer, dict) else None
        if not isinstance(serials, list):
            raise PermanentError(
                "firewallserialnumbers has no vm_series list", code="BadAnswer", service=SERVICE
            )
        return serial in {str(s) for s in serials}

    # --- HTTP ------------------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        deadline: Deadline,
        query: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
    ) -> Any:
        url = self._api + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(json_body).encode() if json_body is not None else None

        def attempt() -> Any:
            headers = {"token": self._access_token(deadline), "Accept": "application/json"}
            if data is not None:
                headers["Content-Type"] = "application/json"
            try:
                return self._send(urllib.request.Request(url, data, headers, method=method), deadline, path)
            except PermanentError as exc:
                if exc.code == "HTTP401":
                    self._token = None  # expired or revoked early: one fresh token, then give up
                    headers["token"] = self._access_token(deadline)
                    return self._send(
                        urllib.request.Request(url, data, headers, method=method), deadline, path
                    )
                raise

        return self._retry(attempt, f"{method} {path}", deadline)

    def _access_token(self, deadline: Deadline) -> str:
        with self._lock:
            if self._token is not None and self._clock() < self._token[1]:
                return self._token[0]
            form = urllib.parse.urlencode(
                {
                    "client_id": self._client_id,
                    "client_secret": self._client_secret(deadline),
                    "scope": TOKEN_SCOPE,
                    "grant_type": "client_credentials",
                }
            ).encode()
            request = urllib.request.Request(
                self._token_url, form, {"Content-Type": "application/x-www-form-urlencoded"}, method="POST"
            )
            answer = self._send(request, deadline, "token")
            token = answer.get("access_token") if isinstance(answer, dict) else None
            if not isinstance(token, str) or not token:
                raise PermanentError(
                    "the token answer has no access_token", code="BadAnswer", service=SERVICE
                )
            lifetime = float(answer.get("expires_in") or 300)
            self._token = (token, self._clock() + max(lifetime - TOKEN_REFRESH_BEFORE_S, lifetime / 2))
            return token

    def _send(self, request: urllib.request.Request, deadline: Deadline, action: str) -> Any:
        timeout = max(0.5, min(self._api_timeout_s, deadline.remaining()))
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._ssl) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise http_error(exc.code, _error_message(exc), action) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise PermanentError(
                    f"{action}: TLS verification failed: {reason}", code="TlsVerification", service=SERVICE
                ) from None
            raise TransientError(f"{action}: {reason}", code="Unreachable", service=SERVICE) from None
        try:
            return json.loads(body) if body.strip() else {}
        except ValueError:
            raise PermanentError(
                f"{action}: the answer is not JSON", code="BadAnswer", service=SERVICE
            ) from None

    def _retry(self, attempt: Callable[[], Any], action: str, deadline: Deadline) -> Any:
        return retry.call(
            attempt,
            deadline=deadline,
            transient=lambda exc: isinstance(exc, TransientError),
            service=SERVICE,
            action=action,
            sleep=self._sleep,
        )


def http_error(status: int, message: str, action: str) -> FleetError:
    """4xx are the request's fault (404: no such serial), 5xx and 429 the service's."""
    text = f"{action}: HTTP {status}: {message}"
    if status >= 500 or status == 429:
        return TransientError(text, code=f"HTTP{status}", service=SERVICE)
    if status == 404:
        return NotFound(text, code="HTTP404", service=SERVICE)
    return PermanentError(text, code=f"HTTP{status}", service=SERVICE)


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        return str(exc.reason)
    if isinstance(body, dict):
        for key in ("message", "Message", "error_description", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return str(exc.reason)


def licensing_from_settings(
    settings: Settings, panorama: PanoramaPort, secrets: SecretsPort
) -> LicensingPort:
    """The licensing API where its credentials are configured, else Panorama's licence plugin."""
    if settings.licensing_client_id:
        return LicensingApiClient.from_settings(settings, secrets)
    if not settings.license_manager:
        raise PermanentError(
            "VM-Series licences are released through PANORAMA_LICENSE_MANAGER or the licensing API"
            " (LICENSING_CLIENT_ID): neither is configured",
            code="NotConfigured",
            service=SERVICE,
        )
    if not isinstance(panorama, PanoramaOperations):
        raise TypeError(f"{type(panorama).__name__} cannot run Panorama operational commands")
    return PanoramaLicensing(panorama, settings.license_manager)
