"""FC function ``scale``: CloudMonitor scaling alarms, turned into ESS scale-out or a chosen
scale-in victim."""

from __future__ import annotations

from gwlb_fleet.events import AlarmEvent
from gwlb_fleet.handler import fc_handler
from gwlb_fleet.workflows import scaling

handler = fc_handler("scale", accepts=(AlarmEvent,))(scaling.handle)
