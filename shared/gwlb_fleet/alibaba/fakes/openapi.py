"""What the fakes of the Alibaba Cloud OpenAPI products (GWLB, ESS, ECS, CloudMonitor, FC) share.

Each fake has two layers, like the real thing:

- ``api_*`` methods are the service's API: wire-shaped answers (the JSON the service sends,
  without RequestId), failures as ``ApiError`` with the service's own code. The lab's local
  endpoints (lab/api) serve exactly these to the real SDKs.
- the port methods (gwlb_fleet.ports) sit on top, doing what the real adapter does: paging, and
  mapping an ``ApiError`` to the domain error gwlb_fleet.alibaba.errors gives, with the same
  "already done" answers counted as success.

Fault injection, per API call: ``fail_next`` (codes, consumed one per call, in order) and
``throttled`` (a throttling storm: every call answers ``Throttling`` until switched off). The
port methods do not retry: an injected failure is what the adapter would raise once its
retries are spent. ``calls`` lists the API actions called, in order.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from gwlb_fleet.alibaba.errors import ApiError, is_already_done
from gwlb_fleet.clock import Clock, FakeClock

T = TypeVar("T")


@dataclass
class FakeOpenApiService:
    service: ClassVar[str] = ""

    clock: Clock = field(default_factory=FakeClock)
    fail_next: list[str] = field(default_factory=list)
    throttled: bool = False
    calls: list[str] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @contextlib.contextmanager
    def _api(self, action: str) -> Iterator[None]:
        """One API call: serialised (the lab serves many threads), recorded, maybe failed."""
        with self._lock:
            self.calls.append(action)
            if self.throttled:
                raise ApiError(self.service, "Throttling", "Request was denied due to request throttling.")
            if self.fail_next:
                code = self.fail_next.pop(0)
                raise ApiError(self.service, code, f"{code} (injected)")
            yield

    def _fail(self, code: str, message: str = "") -> ApiError:
        return ApiError(self.service, code, message)

    def _port(self, action: str, call: Callable[[], T]) -> T:
        """Run an API call for a port method: its ApiError becomes the domain error."""
        try:
            return call()
        except ApiError as exc:
            raise exc.domain(action) from exc

    def _port_act(self, action: str, call: Callable[[], object]) -> bool:
        """Like ``_port`` for a side effect: an "already done" answer is success (False)."""
        try:
            call()
        except ApiError as exc:
            if is_already_done(self.service, action, exc.code):
                return False
            raise exc.domain(action) from exc
        return True
