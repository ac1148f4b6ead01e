"""Waiting for a GWLB member to reach a state: AddServersToServerGroup and
RemoveServersFromServerGroup are asynchronous (Adding -> Available; Removing -> Draining -> gone).

One implementation for the adapter and the fake: it polls the member through a lookup and never
sleeps past the invocation's deadline. A wait that cannot finish in this invocation raises
DeadlineExceeded, and the flow continues in a later one (SchedulerPort.call_later).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Literal

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import DeadlineExceeded
from gwlb_fleet.ports import Member, MemberStatus

Want = Collection[MemberStatus] | Literal["gone"]


def reached(member: Member | None, want: Want) -> bool:
    if want == "gone":
        return member is None
    return member is not None and member.status in want


def wait_for_member(
    lookup: Callable[[], Member | None],
    want: Want,
    deadline: Deadline,
    poll_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    what: str = "member",
) -> Member | None:
    """Poll ``lookup`` until the member is in ``want``; the member (None when "gone" was wanted)."""
    if poll_s <= 0:
        raise ValueError("poll_s must be positive")
    # The deadline ends the loop; the count bounds it even if ``sleep`` does not move its clock.
    polls = int(deadline.remaining() / poll_s) + 2
    member: Member | None = None
    for _ in range(polls):
        member = lookup()
        if reached(member, want):
            return member
        if deadline.remaining() <= poll_s:  # after the sleep, no time would be left to look
            break
        sleep(poll_s)
    seen = member.status if member else "not in the group"
    raise DeadlineExceeded(
        f"{what} is {seen}, not {_wanted(want)}, and the invocation has no time for another poll",
        code="DeadlineExceeded",
        service="gwlb",
    )


def _wanted(want: Want) -> str:
    return "gone" if want == "gone" else "|".join(sorted(want))
