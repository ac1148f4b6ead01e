"""Domain errors. Adapters turn vendor errors into these; handlers decide retry or dead letter.

- ``TransientError``: worth retrying later (throttling, unavailable, a lock held). Raised after
  the adapter's own bounded retries; FC's async retry takes over.
- ``ScalingConflict``: ESS refuses because another scaling activity runs. Transient.
- ``NotFound``: the thing is gone. Callers that want it gone treat it as success.
- ``PermanentError``: will fail the same way again (bad parameters, no permission).
- ``LimitExceeded``: a documented per-resource quota is used up (ESS: the heartbeats of one
  lifecycle action); asking again fails the same way.
- ``BadEvent``: the event itself cannot be understood: never retried, goes to the dead letter.
- ``VerificationFailed``: a side effect was asked for but reading it back says it did not happen.
"""

from __future__ import annotations


class FleetError(Exception):
    """Base of the domain errors. ``code`` is the service's own error code where there is one."""

    def __init__(self, message: str, code: str = "", service: str = "") -> None:
        super().__init__(f"{service}: {code}: {message}" if service and code else message)
        self.code = code
        self.service = service


class TransientError(FleetError):
    pass


class ScalingConflict(TransientError):
    pass


class DeadlineExceeded(TransientError):
    """No time left in this invocation; the work continues in the next one."""


class PermanentError(FleetError):
    pass


class NotFound(PermanentError):
    pass


class LimitExceeded(PermanentError):
    pass


class BadEvent(PermanentError):
    """An event that does not parse. ``field`` names what is wrong; ``event_id`` which event."""

    def __init__(self, message: str, field: str = "", event_id: str = "") -> None:
        super().__init__(message, code="BadEvent")
        self.field = field
        self.event_id = event_id


class VerificationFailed(FleetError):
    """A side effect that reading back shows did not take: never recorded as done."""
