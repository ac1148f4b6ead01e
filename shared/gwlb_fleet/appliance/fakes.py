"""In-memory appliances (AppliancePort): what each data IP's probe answers, scripted per call.

``set`` fixes an appliance's answer; ``script`` queues answers that the next probes return in
order (the last one stays), e.g. flows draining 40 -> 12 -> 0. An appliance never set answers
None, like one that is not up yet. ``fail_next`` injects errors in the order given: "unreachable"
(Panorama unreachable while asking a VM-Series: TransientError) or "deadline" (no time left).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import DeadlineExceeded, FleetError, TransientError
from gwlb_fleet.ports import ApplianceStatus

FAULTS: dict[str, Callable[[], FleetError]] = {
    "unreachable": lambda: TransientError("panorama does not answer", code="Unreachable", service="panorama"),
    "deadline": lambda: DeadlineExceeded(
        "no time left to probe", code="DeadlineExceeded", service="appliance"
    ),
}


@dataclass
class FakeAppliances:
    fail_next: list[str] = field(default_factory=list)
    probes: list[tuple[str, str]] = field(default_factory=list)  # (data_ip, serial) asked, in order

    def __post_init__(self) -> None:
        self._answers: dict[str, list[ApplianceStatus | None]] = {}
        self._lock = threading.Lock()

    def set(self, data_ip: str, healthy: bool = True, draining: bool = False, active_flows: int = 0) -> None:
        with self._lock:
            self._answers[data_ip] = [ApplianceStatus(healthy, draining, active_flows)]

    def set_down(self, data_ip: str) -> None:
        with self._lock:
            self._answers[data_ip] = [None]

    def script(self, data_ip: str, answers: Iterable[ApplianceStatus | None]) -> None:
        with self._lock:
            self._answers[data_ip] = list(answers) or [None]

    def status(self, data_ip: str, serial: str, deadline: Deadline) -> ApplianceStatus | None:
        with self._lock:
            self.probes.append((data_ip, serial))
            if self.fail_next:
                error: FleetError = FAULTS[self.fail_next.pop(0)]()
                raise error
            if deadline.expired:
                raise FAULTS["deadline"]()
            answers = self._answers.get(data_ip)
            if not answers:
                return None
            return answers.pop(0) if len(answers) > 1 else answers[0]
