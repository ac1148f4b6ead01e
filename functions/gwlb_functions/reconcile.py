"""FC function ``reconcile``: on the timer, compare ESS, GWLB, Panorama and the licences and
repair the drift."""

from __future__ import annotations

from gwlb_fleet.events import TimerEvent
from gwlb_fleet.handler import fc_handler
from gwlb_fleet.workflows import reconcile

handler = fc_handler("reconcile", accepts=(TimerEvent,))(reconcile.handle)
