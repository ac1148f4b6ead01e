"""The tun device and the policy routing that sends what the kernel forwards back into it.

The agent writes each decapsulated packet into the tun device; to the kernel it arrives there
like any packet from a wire, goes through PREROUTING, the routing decision and FORWARD (the
appliance's nftables ruleset, conntrack, NFQUEUE), and leaves by the route chosen for it. One
rule, ``from all iif <tun> lookup <table>``, with a table of one route, ``default dev <tun>``,
makes that route the tun itself, whatever the destination: the agent reads the packet back and
returns it to the GWLB. A packet the ruleset drops never comes back.

Set up through netlink (pyroute2) and removed on exit; at start anything a crashed run left in
the table or pointing at it is removed first (the tun itself goes with the process that held
it: it is not persistent). The sysctls are per device: forwarding is decided by the input
device's ``forwarding`` (so the host's ``ip_forward`` stays as the operator set it), and
reverse-path filtering, whose reverse lookup cannot match an ``iif`` rule, is turned off for the
tun where the host allows it (effective value: the larger of ``all`` and the device's).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger("gwlb_agent.kernel.routing")

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
TUN_MTU = 65535  # never the reason a packet is dropped: the GWLB's own limit is smaller
AF_INET = 2
SYSCTL_ROOT = Path("/proc/sys/net/ipv4/conf")


class RoutingError(OSError):
    """The tun device or its routing could not be set up; says which step and why."""


@dataclass(frozen=True)
class TunRouting:
    """What to create: the device's name, the routing table and the rule's priority."""

    device: str
    table: int
    priority: int
    queue_length: int = 4096  # packets the tun holds for the agent to read (txqueuelen)

    def __post_init__(self) -> None:
        if not 0 < len(self.device.encode()) < 16:
            raise RoutingError(f"tun device name {self.device!r}: 1 to 15 bytes")
        if self.table in (0, 253, 254, 255):
            raise RoutingError(f"routing table {self.table} is reserved (default, main, local)")
        if not 0 < self.priority < 32766:
            raise RoutingError(f"rule priority {self.priority}: must be between 1 and 32765, before main")


def open_tun(name: str) -> int:
    """A non-blocking file descriptor of a new tun device ``name`` (IFF_TUN | IFF_NO_PI: bare IP
    packets, no packet-information prefix). The device lives while the descriptor is open."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise RoutingError(f"cannot open /dev/net/tun: {exc.strerror} (needs CAP_NET_ADMIN)") from exc
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise RoutingError(f"TUNSETIFF {name}: {exc.strerror}") from exc
    return fd


class KernelRoute:
    """Sets up and removes the device's link settings, sysctls, route and rule."""

    def __init__(self, routing: TunRouting, sysctl_root: Path = SYSCTL_ROOT) -> None:
        self.routing = routing
        self._sysctl_root = sysctl_root
        self.installed = False

    def remove_stale(self) -> int:
        """Before installing: remove what a crashed run left (every rule that looks up our table,
        every route in it) and say so; how many rules."""
        stale = self._remove_all()
        if stale:
            log.warning(
                "removed policy-routing rules a previous run left behind",
                extra={"rules": stale, "table": self.routing.table},
            )
        return stale

    def _remove_all(self) -> int:
        table = self.routing.table
        with IPRoute() as ipr:
            stale = [rule for rule in ipr.get_rules(family=AF_INET) if _rule_table(rule) == table]
            for rule in stale:
                _delete_rule(ipr, rule)
            for route in ipr.get_routes(family=AF_INET, table=table):
                _ignore_missing(
                    ipr.route, "del", table=table, dst=_route_dst(route), oif=route.get_attr("RTA_OIF")
                )
        return len(stale)

    def install(self) -> int:
        """Bring the device up and route what enters it back out of it; its ifindex."""
        routing = self.routing
        self.remove_stale()
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=routing.device)
            if not found:
                raise RoutingError(f"tun device {routing.device} not found after TUNSETIFF")
            index = int(found[0])
            self._step(
                "bring the tun up",
                ipr.link,
                "set",
                index=index,
                state="up",
                mtu=TUN_MTU,
                txqlen=routing.queue_length,
            )
            self._configure_sysctls()
            self.installed = True  # from here on, remove() has something to undo
            self._step(
                f"add the default route of table {routing.table}",
                ipr.route,
                "add",
                dst="0.0.0.0/0",
                oif=index,
                table=routing.table,
            )
            self._step(
                f"add the rule iif {routing.device} lookup {routing.table}",
                ipr.rule,
                "add",
                iifname=routing.device,
                table=routing.table,
                priority=routing.priority,
                family=AF_INET,
            )
        log.info(
            "kernel path installed",
            extra={"device": routing.device, "table": routing.table, "priority": routing.priority},
        )
        return index

    def remove(self) -> None:
        """Undo ``install``: the rule and the table's routes (the device goes with its fd)."""
        if not self.installed:
            return
        self._remove_all()
        self.installed = False
        log.info("kernel path removed", extra={"device": self.routing.device, "table": self.routing.table})

    def _configure_sysctls(self) -> None:
        device = self.routing.device
        self._write_sysctl(device, "forwarding", "1")
        # The strictest of all/device applies: strict (1) anywhere would drop every packet from
        # the tun, as its reverse lookup cannot see our iif rule; loose (2) needs a route to the
        # source, which an appliance's default route gives.
        strict = self._read_sysctl("all", "rp_filter") == "1"
        self._write_sysctl(device, "rp_filter", "2" if strict else "0")
        if strict:
            log.warning(
                "net.ipv4.conf.all.rp_filter is strict: the tun uses loose mode, which needs a route"
                " (a default route) to every inner source address",
                extra={"device": device},
            )

    def _read_sysctl(self, device: str, name: str) -> str:
        return (self._sysctl_root / device / name).read_text().strip()

    def _write_sysctl(self, device: str, name: str, value: str) -> None:
        path = self._sysctl_root / device / name
        try:
            path.write_text(value)
        except OSError as exc:
            raise RoutingError(f"cannot set {path} to {value}: {exc.strerror}") from exc

    @staticmethod
    def _step(what: str, call: Any, *args: Any, **kwargs: Any) -> None:
        try:
            call(*args, **kwargs)
        except NetlinkError as exc:
            raise RoutingError(f"{what}: {os.strerror(exc.code)} (netlink error {exc.code})") from exc


def _rule_table(rule: Any) -> int:
    table = rule.get_attr("FRA_TABLE")
    return int(table if table is not None else rule.get("table"))


def _route_dst(route: Any) -> str:
    return f"{route.get_attr('RTA_DST') or '0.0.0.0'}/{route.get('dst_len')}"


def _delete_rule(ipr: IPRoute, rule: Any) -> None:
    selector: dict[str, Any] = {"table": _rule_table(rule), "family": AF_INET}
    priority = rule.get_attr("FRA_PRIORITY")
    if priority is not None:
        selector["priority"] = priority
    iifname = rule.get_attr("FRA_IIFNAME")
    if iifname is not None:
        selector["iifname"] = iifname
    _ignore_missing(ipr.rule, "del", **selector)


def _ignore_missing(call: Any, *args: Any, **kwargs: Any) -> None:
    """Delete something that may already be gone (another cleanup, the device's removal)."""
    try:
        call(*args, **kwargs)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.ESRCH):
            raise RoutingError(f"netlink {args[0]} {kwargs}: {os.strerror(exc.code)}") from exc
