"""The server group: its members, their status and health, and where the membership comes from.

A member has two states, as in the GWLB API:

- its **status** in the server group, set by the control plane (``ListServerGroupServers``):
  Adding, Available, Draining, Removing (and Replacing);
- its **health**, found by the emulator's own checks (``GetListenerHealthStatus``): initial until
  ``healthy_threshold`` passes, then healthy or unhealthy. Kept in lower case here (the status
  endpoint has always said ``"healthy"``); ``API_HEALTH`` gives the API's words.

New flows go only to members that are Available *and* healthy (``MemberSet.candidates``).

The membership comes from a ``MemberSource``: a static list (``python -m gwlb_lab.gwlb --member``),
a JSON file the emulator re-reads when it changes (``--members-file``), or ``FakeGwlbMembers``:
the lab cloud's in-memory GWLB, whose members the control plane adds and removes through the real
SDK, and into which the emulator writes what its health checks find, so that
``GetListenerHealthStatus`` answers with it. The emulator polls the source and reconciles
(``MemberSet.sync``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from gwlb_fleet.alibaba.fakes.gwlb import FakeGwlb
from gwlb_fleet.geneve import GENEVE_PORT
from gwlb_fleet.ports import HealthStatus, MemberStatus
from gwlb_lab.gwlb.packet import FlowKey
from gwlb_lab.gwlb.scheduler import DEFAULT_SEED, Scheduler, flow_hash, rank

__all__ = [
    "API_HEALTH", "DEFAULT_SEED", "FakeGwlbMembers", "FileMembers", "HealthState", "Member",
    "MemberChanges", "MemberSet", "MemberSource", "SourceMember", "StaticMembers", "flow_hash",
    "parse_member", "rank",
]

log = logging.getLogger("gwlb_lab.gwlb")

HealthState = Literal["initial", "healthy", "unhealthy"]
API_HEALTH: dict[HealthState, HealthStatus] = {
    "initial": "Initial", "healthy": "Healthy", "unhealthy": "Unhealthy"}
MEMBER_STATUSES: tuple[str, ...] = get_args(MemberStatus)
LEAVING: frozenset[str] = frozenset({"Draining", "Removing"})


@dataclass
class MemberCounters:
    packets_sent: int = 0  # Geneve datagrams sent to the member
    bytes_sent: int = 0
    packets_returned: int = 0  # accepted back from it
    bytes_returned: int = 0
    flows: int = 0  # live flows on the member now
    flows_created: int = 0  # new flows it was picked for
    flows_moved_in: int = 0  # existing flows rebalanced onto it
    flows_moved_out: int = 0  # its flows rebalanced away


@dataclass(eq=False)
class Member:
    """One appliance behind the GWLB (the API's server: ServerId, ServerIp, Port 6081)."""

    member_id: str
    address: str
    port: int = GENEVE_PORT
    status: MemberStatus = "Available"
    health: HealthState = "initial"
    health_reason: str = "no check yet"  # what the last check saw, for people
    health_code: str = ""  # the API's ReasonCode while not healthy
    health_since: float = 0.0  # monotonic time of the last health transition
    leaving_since: float | None = None  # monotonic time it was first seen Draining/Removing
    passes: int = 0  # consecutive check results
    failures: int = 0
    counters: MemberCounters = field(default_factory=MemberCounters)

    def __post_init__(self) -> None:
        self.address_bytes = socket.inet_aton(self.address)

    @property
    def available(self) -> bool:
        return self.status == "Available"

    @property
    def leaving(self) -> bool:
        return self.status in LEAVING

    def snapshot(self, now: float | None = None) -> dict[str, object]:
        data: dict[str, object] = {
            "id": self.member_id, "address": self.address, "port": self.port,
            "status": self.status, "health": self.health,
            "health_status": API_HEALTH[self.health], "health_reason": self.health_reason,
            "reason_code": self.health_code,
            **self.counters.__dict__,
        }
        if now is not None:
            data["health_for_s"] = round(now - self.health_since, 3)
            if self.leaving_since is not None:
                data["leaving_for_s"] = round(now - self.leaving_since, 3)
        return data


def parse_member(spec: str) -> Member:
    """``ID=ADDRESS[:PORT]``, e.g. ``nva-1=198.19.0.11``."""
    source = parse_source_member(spec)
    return Member(source.server_id, source.ip, source.port, source.status)


def parse_source_member(spec: str) -> SourceMember:
    """``ID=ADDRESS[:PORT]``: an Available member of a static group."""
    member_id, sep, target = spec.partition("=")
    if not sep or not member_id or not target:
        raise ValueError(f"{spec!r} is not ID=ADDRESS[:PORT]")
    address, _, port = target.partition(":")
    try:
        socket.inet_aton(address)
    except OSError:
        raise ValueError(f"{spec!r}: {address!r} is not an IPv4 address") from None
    if port and not port.isdigit():
        raise ValueError(f"{spec!r}: {port!r} is not a port")
    return SourceMember(member_id, address, int(port) if port else GENEVE_PORT)


@dataclass
class MemberChanges:
    added: list[Member] = field(default_factory=list)
    removed: list[Member] = field(default_factory=list)
    status_changed: list[tuple[Member, MemberStatus]] = field(default_factory=list)  # (member, was)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.status_changed)


class MemberSet:
    """Members by id. The sync thread adds, removes and re-statuses members, the health checker
    writes their health, the data path reads them (single attribute reads: safe under the GIL)."""

    def __init__(self, members: Iterable[Member] = (), seed: bytes = DEFAULT_SEED,
                 scheduler: Scheduler = "5TCH") -> None:
        self.seed = seed
        self.scheduler: Scheduler = scheduler
        self._lock = threading.Lock()
        self._members: dict[str, Member] = {}
        for member in members:
            self.add(member)

    def add(self, member: Member) -> None:
        with self._lock:
            if member.member_id in self._members:
                raise ValueError(f"member {member.member_id} is already in the group")
            self._members = {**self._members, member.member_id: member}

    def remove(self, member_id: str) -> Member:
        with self._lock:
            members = dict(self._members)
            member = members.pop(member_id)
            self._members = members  # readers iterate a dict nobody changes
            return member

    def __iter__(self) -> Iterator[Member]:
        return iter(list(self._members.values()))

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, member: object) -> bool:
        return isinstance(member, Member) and self._members.get(member.member_id) is member

    def get(self, member_id: str) -> Member | None:
        return self._members.get(member_id)

    def healthy(self) -> list[Member]:
        return [m for m in self._members.values() if m.health == "healthy"]

    def candidates(self) -> list[Member]:
        """Members that may take new flows: Available in the group and healthy."""
        return [m for m in self._members.values() if m.available and m.health == "healthy"]

    def unhealthy_count(self) -> int:
        return sum(1 for m in self._members.values() if m.health == "unhealthy")

    def select(self, key: FlowKey, exclude: Member | None = None) -> Member | None:
        """The member a flow goes to by the scheduler's hash over the candidates (not
        ``exclude``), or None when there is none."""
        candidates = {m.member_id: m for m in self.candidates() if m is not exclude}
        if not candidates:
            return None
        return candidates[rank(key, candidates, self.seed, self.scheduler)[0]]

    def sync(self, wanted: Sequence[SourceMember], now: float) -> MemberChanges:
        """Make the set what the source says: new members start with health initial, members
        the source no longer lists are removed, status changes are applied. A member whose
        address or port changed is a new member."""
        changes = MemberChanges()
        by_id = {m.server_id: m for m in wanted}
        for member in list(self):
            source = by_id.get(member.member_id)
            if source is None or (source.ip, source.port) != (member.address, member.port):
                changes.removed.append(self.remove(member.member_id))
        for source in by_id.values():
            known = self.get(source.server_id)
            if known is None:
                added = Member(source.server_id, source.ip, source.port, source.status,
                               health_since=now)
                added.leaving_since = now if added.leaving else None
                self.add(added)
                changes.added.append(added)
            elif known.status != source.status:
                was = known.status
                known.status = source.status
                if not known.leaving:
                    known.leaving_since = None
                elif known.leaving_since is None:  # Removing -> Draining: one drain, not two
                    known.leaving_since = now
                changes.status_changed.append((known, was))
        return changes


# --- where the membership comes from -----------------------------------------------------------


@dataclass(frozen=True)
class SourceMember:
    """A member as the control plane sees it (ListServerGroupServers)."""

    server_id: str
    ip: str
    port: int = GENEVE_PORT
    status: MemberStatus = "Available"


class MemberSource(Protocol):
    def members(self) -> list[SourceMember]:
        """The server group's members now."""
        ...

    def report_health(self, server_id: str, status: HealthStatus, reason: str) -> None:
        """What the emulator's checks found (GetListenerHealthStatus answers with it)."""
        ...


class StaticMembers:
    """A fixed group, changeable in-process (tests); health reports are kept in ``reported``."""

    def __init__(self, members: Iterable[SourceMember] = ()) -> None:
        self._lock = threading.Lock()
        self._members = {m.server_id: m for m in members}
        self.reported: dict[str, tuple[HealthStatus, str]] = {}

    @classmethod
    def parse(cls, specs: Iterable[str]) -> StaticMembers:
        """From ``ID=ADDRESS[:PORT]`` specs (``--member``). Raises ValueError."""
        return cls(parse_source_member(spec) for spec in specs)

    def members(self) -> list[SourceMember]:
        with self._lock:
            return list(self._members.values())

    def report_health(self, server_id: str, status: HealthStatus, reason: str) -> None:
        with self._lock:
            self.reported[server_id] = (status, reason)

    def put(self, member: SourceMember) -> None:
        with self._lock:
            self._members[member.server_id] = member

    def set_status(self, server_id: str, status: MemberStatus) -> None:
        with self._lock:
            old = self._members[server_id]
            self._members[server_id] = SourceMember(old.server_id, old.ip, old.port, status)

    def discard(self, server_id: str) -> None:
        with self._lock:
            self._members.pop(server_id, None)


class FileMembers:
    """Members from a JSON file, re-read whenever it changes: how a test or a person drains or
    removes a member of a running ``python -m gwlb_lab.gwlb``. The file::

        [{"server_id": "nva-1", "ip": "198.19.0.11", "status": "Available"},
         {"server_id": "nva-2", "ip": "198.19.0.12", "port": 6081, "status": "Draining"}]

    Replace it atomically (write another file, rename it over). A file that cannot be read or
    parsed is logged and the last good list stays; health reports are kept in ``reported``.
    """

    def __init__(self, path: Path) -> None:
        """Raises OSError or ValueError when the file is not usable at the start."""
        self.path = path
        self.reported: dict[str, tuple[HealthStatus, str]] = {}
        self._seen = self._stat()
        self._members = parse_members_json(path.read_text(encoding="utf-8"))
        self._refused = ""

    def _stat(self) -> tuple[int, int, int]:
        stat = os.stat(self.path)
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def members(self) -> list[SourceMember]:
        try:
            seen = self._stat()
            if seen != self._seen:
                self._seen = seen  # a bad file is refused once, not at every poll
                self._members = parse_members_json(self.path.read_text(encoding="utf-8"))
                self._refused = ""
        except (OSError, ValueError) as exc:
            if str(exc) != self._refused:
                self._refused = str(exc)
                log.warning("members file refused; keeping the last good one",
                            extra={"path": str(self.path), "error": str(exc)})
        return self._members

    def report_health(self, server_id: str, status: HealthStatus, reason: str) -> None:
        self.reported[server_id] = (status, reason)


def parse_members_json(text: str) -> list[SourceMember]:
    """The members file's list. Raises ValueError naming what is wrong."""
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("the members file must hold a JSON list")
    members = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise ValueError(f"member {index}: not an object")
        members.append(_source_member(item, f"member {index}"))
    return members


def _source_member(item: dict[str, Any], where: str) -> SourceMember:
    server_id, ip = item.get("server_id"), item.get("ip")
    port, status = item.get("port", GENEVE_PORT), item.get("status", "Available")
    if not isinstance(server_id, str) or not server_id:
        raise ValueError(f"{where}: server_id must be a non-empty string")
    if not isinstance(ip, str):
        raise ValueError(f"{where}: ip must be a string")
    try:
        socket.inet_aton(ip)
    except OSError:
        raise ValueError(f"{where}: {ip!r} is not an IPv4 address") from None
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"{where}: port must be 1-65535")
    if status not in MEMBER_STATUSES:
        raise ValueError(f"{where}: status must be one of {', '.join(MEMBER_STATUSES)}")
    return SourceMember(server_id, ip, port, status)


class FakeGwlbMembers:
    """The members of one server group of the lab cloud's in-memory GWLB, read in process.

    Reads the group directly, not through ``ListServerGroupServers``: in the fake a read of the
    API moves members through their asynchronous states, and only the control plane's reads
    should do that. Health goes back with ``FakeGwlb.set_health``, so ``GetListenerHealthStatus``
    on ``listener_id`` (through the lab's local OpenAPI endpoint and the real SDK) answers with
    what the emulator's checks found.

    The control plane registers each appliance by its data ENI (``ServerType Eni``, F-GWLB-2):
    the emulator sends a member's Geneve to the member's ``ServerIp``, the data ENI's address,
    which the GWLB fake has checked against ECS (in the lab: the appliance namespace's address).
    An Eni member is named here by the instance that owns the ENI (the ECS fake says which; once
    seen, remembered), so that the emulator's members are the lab's appliances; health goes back
    under the member's own ServerId.
    """

    def __init__(self, gwlb: FakeGwlb, server_group_id: str, listener_id: str) -> None:
        self.gwlb = gwlb
        self.server_group_id = server_group_id
        self.listener_id = listener_id
        self._owner: dict[str, str] = {}  # ENI id -> instance id
        self._server_id: dict[str, str] = {}  # the name used here -> ServerId

    def members(self) -> list[SourceMember]:
        # The fake's own lock: its API threads change the group's dict while we read it.
        with self.gwlb._lock:
            group = self.gwlb.server_groups.get(self.server_group_id)
            if group is None:
                return []
            found = []
            for m in group.members.values():
                name = self._name(m.server_id, m.server_type)
                self._server_id[name] = m.server_id
                found.append(SourceMember(name, m.server_ip, m.port, m.status))
            return found

    def _name(self, server_id: str, server_type: str) -> str:
        if server_type != "Eni" or self.gwlb.ecs is None:
            return server_id
        if server_id not in self._owner:
            eni = self.gwlb.ecs.eni(server_id)
            if eni is None or not eni.get("InstanceId"):
                return server_id
            self._owner[server_id] = str(eni["InstanceId"])
        return self._owner[server_id]

    def report_health(self, server_id: str, status: HealthStatus, reason: str) -> None:
        self.gwlb.set_health(self._server_id.get(server_id, server_id), status, reason)
