"""FC function ``lifecycle``: ESS lifecycle hooks (launch: ready, register, CONTINUE; terminate:
drain, release, CONTINUE), and the continuations the flow schedules to itself while it waits."""

from __future__ import annotations

from fleet.events import ContinueEvent, LifecycleEvent
from fleet.flows import lifecycle
from fleet.handler import fc_handler

handler = fc_handler("lifecycle", accepts=(LifecycleEvent, ContinueEvent))(lifecycle.handle)
