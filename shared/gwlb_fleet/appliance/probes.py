"""How an appliance says how it is (AppliancePort), by kind of appliance (``APPLIANCE_KIND``).

- Linux NVA (``AgentStatusProbe``): gwlb-agent's ``GET /status`` on the data interface, the JSON
  of its metrics ``Snapshot`` (``healthy``, ``draining``, ``flows_active``, ``health_reason``).
  The agent answers only its GWLB's networks, ``health_allow_cidrs`` and loopback: the functions'
  vSwitch must be in ``health_allow_cidrs``.
- VM-Series (``VmSeriesStatusProbe``): PAN-OS's live session count (``show session info`` sent on
  through Panorama with ``target=<serial>``) and a TCP connect to the GWLB health-check port on
  its data interface (an interface management profile answers it).

A probe is one attempt, never retried: "does not answer" (None) is an answer, and the flows poll
again in a later invocation. Only Panorama being unreachable is an error (TransientError): then
nothing can be said about the VM-Series either way.

RAM_ACTIONS: none — the probes talk to the appliances (and Panorama), not to Alibaba Cloud.
"""

from __future__ import annotations

import json
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import DeadlineExceeded, PermanentError
from gwlb_fleet.panos import xmlapi
from gwlb_fleet.panos.licensing import PanoramaOperations
from gwlb_fleet.ports import AppliancePort, ApplianceStatus, SecretsPort
from gwlb_fleet.settings import Settings

RAM_ACTIONS: frozenset[str] = frozenset()

log = logging.getLogger("gwlb_fleet.appliance.probes")

MAX_STATUS_BYTES = 64 << 10


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _probe_timeout(timeout_s: float, deadline: Deadline, what: str) -> float:
    if deadline.expired:
        raise DeadlineExceeded(f"no time left to probe {what}", code="DeadlineExceeded", service="appliance")
    return max(0.1, min(timeout_s, deadline.remaining()))


class AgentStatusProbe:
    """AppliancePort for Linux NVAs: gwlb-agent's ``/status``."""

    def __init__(self, port: int = 8080, timeout_s: float = 3.0) -> None:
        self._port = port
        self._timeout_s = timeout_s
        # Straight to the data interface: an HTTP(S)_PROXY in the environment must not carry probes.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @classmethod
    def from_settings(cls, settings: Settings, secrets: SecretsPort) -> AppliancePort:
        """The probe for the fleet's kind of appliance (the factory gwlb_fleet.app uses);
        ``secrets`` holds Panorama's API key (VM-Series)."""
        if settings.appliance_kind == "linux":
            return cls(settings.agent_health_port, settings.appliance_probe_timeout_s)
        return VmSeriesStatusProbe.from_settings(settings, secrets)

    def status(self, data_ip: str, serial: str, deadline: Deadline) -> ApplianceStatus | None:
        url = f"http://{_host(data_ip)}:{self._port}/status"
        timeout = _probe_timeout(self._timeout_s, deadline, url)
        try:
            with self._opener.open(url, timeout=timeout) as response:
                body = response.read(MAX_STATUS_BYTES)
        except urllib.error.HTTPError as exc:
            log.warning("agent status answered an error", extra={"url": url, "status": exc.code})
            return None
        except (urllib.error.URLError, OSError) as exc:
            log.info("agent does not answer", extra={"url": url, "error": str(getattr(exc, "reason", exc))})
            return None
        return parse_agent_status(body, url)


def parse_agent_status(body: bytes, source: str = "") -> ApplianceStatus | None:
    """The agent's Snapshot JSON. Its ``healthy`` is false while draining (so that the GWLB steers
    new flows away); here a draining agent whose data plane forwards counts as healthy."""
    try:
        data: Any = json.loads(body)
        healthy, draining, flows = data["healthy"], data["draining"], data["flows_active"]
        if not (isinstance(healthy, bool) and isinstance(draining, bool) and isinstance(flows, int)):
            raise TypeError("healthy, draining and flows_active have the wrong types")
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("agent status does not parse", extra={"source": source, "error": str(exc)})
        return None
    forwarding = healthy or (draining and data.get("health_reason") == "draining")
    return ApplianceStatus(healthy=forwarding, draining=draining, active_flows=flows)


# Errors of Panorama itself, not of the firewall behind it: never read as "the firewall is gone".
_PANORAMA_SETUP_CODES = frozenset(
    {"Forbidden", "Unauthorized", "TlsVerification", "BadHost", "NotConfigured", "BadName", "BadAnswer"}
)


class VmSeriesStatusProbe:
    """AppliancePort for VM-Series: sessions through Panorama, the health-check port directly."""

    def __init__(
        self,
        panorama: PanoramaOperations,
        health_port: int,
        timeout_s: float = 3.0,
        connect: Callable[..., socket.socket] = socket.create_connection,
    ) -> None:
        self._panorama = panorama
        self._health_port = health_port
        self._timeout_s = timeout_s
        self._connect = connect

    @classmethod
    def from_settings(cls, settings: Settings, secrets: SecretsPort) -> VmSeriesStatusProbe:
        from gwlb_fleet.panos.panorama import PanoramaAdapter

        return cls(
            PanoramaAdapter.from_settings(settings, secrets),
            settings.vmseries_health_port,
            settings.appliance_probe_timeout_s,
        )

    def status(self, data_ip: str, serial: str, deadline: Deadline) -> ApplianceStatus | None:
        """None when the firewall cannot be asked for its sessions (not connected to Panorama),
        whatever its port says: a VM-Series Panorama cannot reach is not ready, and an unknown
        session count must never read as zero. Without a serial (a launch before the firewall
        registered) only the port is probed and ``active_flows`` is 0."""
        port_open = self._port_answers(data_ip, deadline)
        if not serial:
            return ApplianceStatus(healthy=True, draining=False, active_flows=0) if port_open else None
        sessions = self._active_sessions(serial, deadline)
        if sessions is None:
            return None
        return ApplianceStatus(healthy=port_open, draining=False, active_flows=sessions)

    def _port_answers(self, data_ip: str, deadline: Deadline) -> bool:
        address = (data_ip, self._health_port)
        try:
            self._connect(
                address, _probe_timeout(self._timeout_s, deadline, f"{data_ip}:{self._health_port}")
            ).close()
        except OSError as exc:
            log.info("health-check port closed", extra={"data_ip": data_ip, "error": str(exc)})
            return False
        return True

    def _active_sessions(self, serial: str, deadline: Deadline) -> int | None:
        try:
            result = self._panorama.op(xmlapi.SHOW_SESSION_INFO, deadline, target=serial)
        except PermanentError as exc:  # NotFound too: the firewall is unknown or not connected
            if exc.code in _PANORAMA_SETUP_CODES:
                raise
            log.info("firewall does not answer through panorama", extra={"serial": serial, "error": str(exc)})
            return None
        return xmlapi.parse_active_sessions(result)
