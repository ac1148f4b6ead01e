"""FC function ``health``: the GWLB unhealthy-server alarm and the periodic check; unhealthy
members are handed to ESS."""

from __future__ import annotations

from fleet.events import AlarmEvent, TimerEvent
from fleet.flows import health
from fleet.handler import fc_handler

handler = fc_handler("health", accepts=(AlarmEvent, TimerEvent))(health.handle)
