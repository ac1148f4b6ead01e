"""Function Compute's delayed asynchronous invocation: the ``x-fc-async-delay`` header (F-FC-4).

One definition for the adapter (gwlb_fleet.alibaba.fc), the fake and the lab's FC endpoint. No
SDK import here, so that the fakes stay light.

The FC 3.0 overview of asynchronous invocation documents the header with the range (0, 3600)
seconds, an open interval; the FC 2.0 copies of the page write [0, 3600]. The safe reading is
the intersection of both: 1 to 3599. A follow-up due at once is sent without the header (a
plain asynchronous invocation), one due later than 3599 s is sent with 3599: the flow then wakes
early and its continuation finds itself early (gwlb_fleet.workflows.lifecycle), which does no
harm. What FC answers to a value outside the range is not documented; the lab refuses it with
FC's code for an invalid argument (400 ``InvalidArgument``, "Function Compute error codes"), so
that a value the cloud may refuse fails in the lab too.
"""

from __future__ import annotations

HEADER = "x-fc-async-delay"
MIN_DELAY_S = 1  # F-FC-4: (0, 3600), seconds
MAX_DELAY_S = 3599


def delay_header(delay_s: float) -> dict[str, str]:
    """The headers that ask FC to run an asynchronous invocation ``delay_s`` seconds from now:
    none for a delay under a second, the delay capped at MAX_DELAY_S otherwise."""
    delay = int(delay_s)
    if delay < MIN_DELAY_S:
        return {}
    return {HEADER: str(min(delay, MAX_DELAY_S))}


def sent_delay(delay_s: float) -> int:
    """The delay FC is asked for (0: none), as ``delay_header`` sends it."""
    header = delay_header(delay_s)
    return int(header[HEADER]) if header else 0


def header_error(value: str) -> str:
    """Why FC would refuse ``value`` of the header ("" when it is in the documented range)."""
    if not value.isdigit() or not MIN_DELAY_S <= int(value) <= MAX_DELAY_S:
        return f"{HEADER} {value!r} is not an integer in (0, 3600)"
    return ""
