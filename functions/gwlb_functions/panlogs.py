"""FC function ``panlogs``: PAN-OS traffic and threat logs over HTTPS (the HTTP server profile set-up
makes, or a syslog relay), authenticated, mapped to flow and threat records, written to SLS."""

from __future__ import annotations

from gwlb_fleet.intake import fc_handler

handler = fc_handler("panlogs")
