"""FC function ``health``: the GWLB unhealthy-server alarm and the periodic check; unhealthy
members are handed to ESS."""

from __future__ import annotations

from gwlb_fleet.events import AlarmEvent, TimerEvent
from gwlb_fleet.handler import fc_handler
from gwlb_fleet.workflows import health

handler = fc_handler("health", accepts=(AlarmEvent, TimerEvent))(health.handle)
