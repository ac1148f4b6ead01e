"""What the SLS command-line tools (scripts/sls-setup, scripts/audit) share: where SLS is, whose
keys, and time arguments.

The endpoint and project come from ``--endpoint`` / ``--project`` or ``SLS_ENDPOINT`` /
``SLS_PROJECT``, the variables the functions read too (gwlb_fleet.settings); keys from
``ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``_SECRET`` (and ``ALIBABA_CLOUD_SECURITY_TOKEN`` for STS keys),
or the instance's RAM role named by ``ALIBABA_CLOUD_ECS_METADATA``. Keys are never taken on the
command line (other users can read it) and never printed. An endpoint may be
``http://127.0.0.1:PORT``: the local SLS (gwlb_lab.sls).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import SecretStr, ValidationError

from gwlb_fleet.settings import Settings
from gwlb_fleet.sls.client import Sls, SlsConfig

EX_OK, EX_FAILURE, EX_USAGE = 0, 1, 64
# One spelling for the operator's tools and the functions: the settings' own variable names.
ENV_ENDPOINT = str(Settings.model_fields["sls_endpoint"].validation_alias)
ENV_PROJECT = str(Settings.model_fields["sls_project"].validation_alias)
ENV_KEY_ID = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ENV_KEY_SECRET = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
ENV_TOKEN = "ALIBABA_CLOUD_SECURITY_TOKEN"
ENV_RAM_ROLE = "ALIBABA_CLOUD_ECS_METADATA"


class UsageError(ValueError):
    pass


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where SLS is (keys come from the environment only)")
    group.add_argument(
        "--endpoint",
        help=f"e.g. cn-hangzhou.log.aliyuncs.com, or http://127.0.0.1:PORT for the "
        f"local SLS (default: ${ENV_ENDPOINT})",
    )
    group.add_argument("--project", help=f"the SLS project (default: ${ENV_PROJECT})")
    group.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")


def sls_config(args: argparse.Namespace, environ: Mapping[str, str]) -> SlsConfig:
    endpoint = args.endpoint or environ.get(ENV_ENDPOINT, "")
    project = args.project or environ.get(ENV_PROJECT, "")
    if not endpoint:
        raise UsageError(f"no SLS endpoint: give --endpoint or set {ENV_ENDPOINT}")
    if not project:
        raise UsageError(f"no SLS project: give --project or set {ENV_PROJECT}")
    key_id = environ.get(ENV_KEY_ID, "")
    secret = environ.get(ENV_KEY_SECRET, "")
    role = environ.get(ENV_RAM_ROLE, "")
    if not (key_id and secret) and not role:
        raise UsageError(f"no credentials: set {ENV_KEY_ID} and {ENV_KEY_SECRET} (or {ENV_RAM_ROLE} on ECS)")
    token = environ.get(ENV_TOKEN, "")
    try:
        return SlsConfig(
            endpoint=endpoint,
            project=project,
            access_key_id=key_id or None,
            access_key_secret=SecretStr(secret) if secret else None,
            security_token=SecretStr(token) if token else None,
            ram_role=None if key_id and secret else role,
            timeout=args.timeout,
        )
    except ValidationError as exc:
        raise UsageError(f"bad SLS settings: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None


def connect(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Sls:
    return Sls(sls_config(args, os.environ if environ is None else environ))


_RELATIVE = re.compile(r"-\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: float) -> int:
    """Epoch seconds from ``now``, epoch seconds, ``-15m`` / ``-1h`` / ``-7d``, or an ISO time
    (UTC unless it says otherwise)."""
    value = text.strip()
    if value.lower() == "now":
        return int(now)
    relative = _RELATIVE.fullmatch(value)
    if relative:
        return int(now - float(relative.group(1)) * _UNITS[relative.group(2).lower()])
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return int(float(value))
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{text!r} is not a time: use epoch seconds, an ISO time (2024-05-01T12:00:00Z), "
            "'now' or a relative time like -15m, -1h, -7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())
