"""FC function ``reconcile``: on the timer, compare ESS, GWLB, Panorama and the licences and
repair the drift."""

from __future__ import annotations

from fleet.events import TimerEvent
from fleet.flows import reconcile
from fleet.handler import fc_handler

handler = fc_handler("reconcile", accepts=(TimerEvent,))(reconcile.handle)
