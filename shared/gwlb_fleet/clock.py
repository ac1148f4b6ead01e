"""Clocks for the fakes. Tests use FakeClock: time moves only when someone sleeps or advances it.
The lab's local endpoints use SystemClock: real time, so lifecycle hooks really time out.

Pass a FakeClock as ``Deadline.after(60, clock=clock)`` and as the fakes' ``clock``: a wait that
polls every five seconds for a minute then runs in no time, and every expiry (lifecycle actions,
scheduled calls) happens exactly when the test says.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def __call__(self) -> float:
        """Epoch seconds."""
        ...

    def sleep(self, seconds: float) -> None: ...


@dataclass
class FakeClock:
    now: float = 1_700_000_000.0  # epoch seconds; also serves as the monotonic clock

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self.now += seconds


class SystemClock:
    def __call__(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
