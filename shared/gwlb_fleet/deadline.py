"""How long the current invocation has left: every wait and retry is bounded by it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Deadline:
    """A point on the monotonic clock. ``margin`` is kept back for recording what was done."""

    at: float
    margin: float = 2.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    @classmethod
    def after(
        cls, seconds: float, margin: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> Deadline:
        return cls(clock() + seconds, margin, clock)

    @classmethod
    def from_fc_context(cls, context: object, fallback_s: float = 60.0) -> Deadline:
        """From FC's context: ``get_remaining_time_in_millis`` when it has it."""
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        seconds = remaining() / 1000.0 if callable(remaining) else fallback_s
        return cls.after(seconds)

    def remaining(self) -> float:
        """Seconds left for work, after the margin. Never negative."""
        return max(0.0, self.at - self.margin - self.clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def allows(self, seconds: float) -> bool:
        return self.remaining() >= seconds
