"""FC function ``lifecycle``: ESS lifecycle hooks (launch: ready, register, CONTINUE; terminate:
drain, release, CONTINUE), and the continuations the flow schedules to itself while it waits."""

from __future__ import annotations

from gwlb_fleet.events import ContinueEvent, LifecycleEvent
from gwlb_fleet.handler import fc_handler
from gwlb_fleet.workflows import lifecycle

handler = fc_handler("lifecycle", accepts=(LifecycleEvent, ContinueEvent))(lifecycle.handle)
