"""The reconcile flow (being written: see the issue "Fleet lifecycle")."""

from __future__ import annotations

from typing import Any


def handle(event: Any, invocation: Any) -> dict[str, Any]:
    raise NotImplementedError("the reconcile flow is not written yet")
