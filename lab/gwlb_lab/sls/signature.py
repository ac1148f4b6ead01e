"""Request signatures as SLS checks them.

V1 (the SDK's default): ``Authorization: LOG <AccessKeyId>:<base64 HMAC-SHA1>`` over the method,
``Content-MD5``, ``Content-Type``, ``Date``, the sorted ``x-log-*`` / ``x-acs-*`` headers and
the resource with its sorted parameters. ``x-log-date`` is a copy of ``Date`` the SDK adds
*after* signing (for proxies that drop ``Date``), so it is not part of the signed text.

V4: ``SLS4-HMAC-SHA256 Credential=<AccessKeyId>/<yyyymmdd>/<region>/sls/aliyun_v4_request,
Signature=<hex>``, HMAC-SHA256 over a canonical request, keys derived per day and region.

With no keys configured any well-formed signature passes (the header must still be there).
"""

from __future__ import annotations

import base64
import calendar
import email.utils
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from urllib.parse import quote

from gwlb_lab.sls.errors import ApiError

MAX_SKEW = 15 * 60
_V4 = re.compile(
    r"^SLS4-HMAC-SHA256 Credential=(?P<akid>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]*)"
    r"/sls/aliyun_v4_request,\s*Signature=(?P<sig>[0-9a-f]{64})$"
)


def _signed_header(name: str) -> bool:
    return name.startswith("x-acs-") or (name.startswith("x-log-") and not name.startswith("x-log-meta-"))


def canonical_resource(resource: str, params: Mapping[str, str]) -> str:
    if not params:
        return resource
    return resource + "?" + "&".join(f"{k}={v}" for k, v in sorted(params.items()))


def sign_v1(
    secret: str, method: str, resource: str, params: Mapping[str, str], headers: Mapping[str, str]
) -> str:
    """``headers``: lower-case names."""
    text = (
        "\n".join((method, headers.get("content-md5", ""), headers.get("content-type", ""), _date(headers)))
        + "\n"
    )
    for name in sorted(headers):
        if _signed_header(name) and name != "x-log-date":
            text += f"{name}:{headers[name]}\n"
    text += canonical_resource(resource, params)
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def sign_v4(
    secret: str,
    region: str,
    method: str,
    resource: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
) -> str:
    signed = {
        name: value.strip()
        for name, value in headers.items()
        if name in ("content-type", "host") or _signed_header(name)
    }
    names = sorted(signed)
    query = "&".join(k + ("=" + quote(v.encode(), safe="~") if v else "") for k, v in sorted(params.items()))
    canonical = "\n".join(
        (
            method,
            resource,
            query,
            "".join(f"{n}:{signed[n]}\n" for n in names),
            ";".join(names),
            headers.get("x-log-content-sha256", ""),
        )
    )
    now = headers.get("x-log-date", "")
    day = now[:8]
    scope = f"{day}/{region}/sls/aliyun_v4_request"
    to_sign = f"SLS4-HMAC-SHA256\n{now}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = hmac.new(("aliyun_v4" + secret).encode(), day.encode(), hashlib.sha256).digest()
    for part in (region, "sls", "aliyun_v4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _date(headers: Mapping[str, str]) -> str:
    return headers.get("date") or headers.get("x-log-date") or ""


def _check_clock(when: float, now: float) -> None:
    if abs(when - now) > MAX_SKEW:
        raise ApiError(
            400,
            "RequestTimeExpired",
            f"the request was signed at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(when))}, "
            f"more than {MAX_SKEW // 60} minutes from the server's time",
        )


def _secret(keys: Mapping[str, str], akid: str) -> str:
    secret = keys.get(akid)
    if secret is None:
        raise ApiError(401, "Unauthorized", f"AccessKeyId not found: {akid}")
    return secret


def authenticate(
    method: str,
    resource: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    keys: Mapping[str, str] | None,
    now: float | None = None,
) -> str:
    """The request's AccessKeyId, or ApiError. ``headers``: lower-case names."""
    now = time.time() if now is None else now
    auth = headers.get("authorization", "")
    if not auth:
        raise ApiError(401, "Unauthorized", "no Authorization header: the request is not signed")
    if auth.startswith("LOG "):
        akid, sep, signature = auth[4:].strip().partition(":")
        if not sep or not akid or not signature:
            raise ApiError(401, "Unauthorized", "Authorization must be 'LOG <AccessKeyId>:<signature>'")
        date = _date(headers)
        if not date:
            raise ApiError(400, "MissingDate", "Date does not exist in http header.")
        try:
            when = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            raise ApiError(400, "InvalidDateFormat", f"Date {date} must follow RFC822.") from None
        _check_clock(when, now)
        method_name = headers.get("x-log-signaturemethod")
        if method_name is None:
            raise ApiError(
                400, "MissingSignatureMethod", "x-log-signaturemethod does not exist in http header."
            )
        if method_name.lower() != "hmac-sha1":
            raise ApiError(400, "InvalidSignatureMethod", f"signature method {method_name} is unsupported.")
        if keys is not None:
            expected = sign_v1(_secret(keys, akid), method, resource, params, headers)
            if not hmac.compare_digest(expected, signature):
                raise ApiError(401, "SignatureNotMatch", f"signature {signature} not match")
        return akid
    if auth.startswith("SLS4-HMAC-SHA256"):
        m = _V4.match(auth)
        if m is None:
            raise ApiError(
                401,
                "Unauthorized",
                "Authorization must be 'SLS4-HMAC-SHA256 Credential=<AccessKeyId>/<date>/<region>"
                "/sls/aliyun_v4_request,Signature=<hex>'",
            )
        stamp = headers.get("x-log-date", "")
        try:
            when = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            raise ApiError(
                400, "InvalidDateFormat", f"x-log-date {stamp!r} must be yyyymmddThhmmssZ"
            ) from None
        if stamp[:8] != m["date"]:
            raise ApiError(401, "SignatureNotMatch", "the credential's date is not x-log-date's")
        _check_clock(when, now)
        if keys is not None:
            expected = sign_v4(_secret(keys, m["akid"]), m["region"], method, resource, params, headers)
            if not hmac.compare_digest(expected, m["sig"]):
                raise ApiError(401, "SignatureNotMatch", f"signature {m['sig']} not match")
        return m["akid"]
    raise ApiError(401, "Unauthorized", f"unsupported Authorization scheme {auth.split(' ', 1)[0]!r}")
