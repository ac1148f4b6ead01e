"""The Software NGFW licensing API subset LicensingApiClient uses, answered from a FakePanorama.

    POST /as/token.oauth2                       client_credentials -> {"access_token", "expires_in"}
    GET  /tms/v1/firewallserialnumbers?auth_code=X          header token -> {"vm_series": [...]}
    POST /tms/v1/firewallserialnumbers/deactivate           header token, JSON {"authCode", "serialNumbers"}

The first two are documented (or used by public scripts); the deactivation path and body are
the same ASSUMPTION as in gwlb_fleet.panos.licensing (see there). Tokens last ``token_lifetime_s``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from gwlb_fleet.panos.fakes import FakePanorama, PanosError
from gwlb_fleet.panos.licensing import DEACTIVATE_PATH, SERIALS_PATH, TOKEN_SCOPE

TOKEN_PATH = "/as/token.oauth2"


@dataclass(frozen=True)
class JsonAnswer:
    status: int
    body: dict[str, Any]
    drop: bool = False


@dataclass
class LicensingApi:
    panorama: FakePanorama
    client_id: str
    client_secret: str
    token_lifetime_s: int = 3599
    clock: Callable[[], float] = time.monotonic
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)

    def __post_init__(self) -> None:
        self._tokens: dict[str, float] = {}

    def handles(self, path: str) -> bool:
        return path == TOKEN_PATH or path.startswith("/tms/")

    def answer(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> JsonAnswer:
        self.requests.append((method, path))
        if path == TOKEN_PATH and method == "POST":
            return self._token(dict(parse_qsl(body.decode(errors="replace"))))
        expires = self._tokens.get(headers.get("token", ""))
        if expires is None or self.clock() > expires:
            return JsonAnswer(401, {"message": "Invalid or expired token"})
        try:
            if path == SERIALS_PATH and method == "GET":
                auth_code = dict(parse_qsl(query)).get("auth_code", "")
                return JsonAnswer(200, {"vm_series": self.panorama.api_serials_of_auth_code(auth_code)})
            if path == DEACTIVATE_PATH and method == "POST":
                request = json.loads(body or b"{}")
                for serial in request.get("serialNumbers", []):
                    self.panorama.api_deactivate_serial(str(request.get("authCode", "")), str(serial))
                return JsonAnswer(200, {"success": True, "message": "Deactivated"})
        except PanosError as exc:
            fault = exc.failure
            return JsonAnswer(
                fault.http_status or 400, {"message": fault.message}, drop=fault.http_status == 0
            )
        except ValueError:
            return JsonAnswer(400, {"message": "the body is not JSON"})
        return JsonAnswer(404, {"message": f"no {method} {path}"})

    def _token(self, form: dict[str, str]) -> JsonAnswer:
        good = _same(form.get("client_id", ""), self.client_id) and _same(
            form.get("client_secret", ""), self.client_secret
        )
        if not good or form.get("grant_type") != "client_credentials" or form.get("scope") != TOKEN_SCOPE:
            return JsonAnswer(401, {"error": "invalid_client"})
        token = secrets.token_urlsafe(24)
        self._tokens[token] = self.clock() + self.token_lifetime_s
        return JsonAnswer(
            200, {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime_s}
        )

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (a revoked or expired token, in a test)."""
        self._tokens.clear()


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())
