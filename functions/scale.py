"""FC function ``scale``: CloudMonitor scaling alarms, turned into ESS scale-out or a chosen
scale-in victim."""

from __future__ import annotations

from fleet.events import AlarmEvent
from fleet.flows import scaling
from fleet.handler import fc_handler

handler = fc_handler("scale", accepts=(AlarmEvent,))(scaling.handle)
