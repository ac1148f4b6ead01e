"""Function Compute 2023-03-30 on the local endpoint: InvokeFunction, a ROA call
(``POST /2023-03-30/functions/{name}/invocations``) whose body is the payload and whose
invocation type and delay are headers. The delay header, when sent, must be in FC 3.0's
documented range (F-FC-4, gwlb_fleet.alibaba.fcdelay): out of range is refused with
``InvalidArgument``, never clamped."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import unquote

from gwlb_fleet.alibaba.fakes.fc import FakeFc
from gwlb_fleet.alibaba.fcdelay import HEADER

PRODUCT = "fc"
VERSION = "2023-03-30"
INVOCATIONS = re.compile(r"^/2023-03-30/functions/(?P<name>[^/]+)/invocations$")


def function_name(path: str) -> str | None:
    match = INVOCATIONS.match(path)
    return unquote(match["name"]) if match else None


def invoke(fc: FakeFc, name: str, body: bytes, headers: Mapping[str, str]) -> int:
    """The HTTP status of the answer (202: queued)."""
    answer = fc.api_invoke_function(
        name,
        body,
        headers.get("x-fc-invocation-type", "Sync"),
        headers.get(HEADER),  # None: not sent
    )
    return int(answer["status"])
