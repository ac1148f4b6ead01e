"""An in-memory GWLB: server groups whose members move through the service's asynchronous states.

- add: the member is Adding for ``add_polls`` reads of the group (ListServerGroupServers), then
  Available. A member that is Draining or Removing can be added back: it goes to Adding.
- remove: Removing for ``remove_polls`` reads, then (connection draining on) Draining for
  ``drain_polls`` reads, then it is gone.
- ``tick()`` moves every member one read forward, as if someone else had looked. With
  ``advance_on_read`` off, only ``tick()`` does: called once a second (the lab), a phase of N
  reads lasts N seconds whoever looks.

Health per member is settable (``set_health``); a member without one is Healthy when Available
and Initial otherwise. Two answers of the real service are not documented anywhere found, and are
assumed here: adding a member that is already Adding/Available answers
``ResourceAlreadyExist.Server`` (openapi_errors.ASSUMED_ALREADY_MEMBER), and removing one that is
already leaving answers ``IncorrectStatus.BackendServer``. The adapter and these port methods
read the member back in both cases instead of trusting the code.

Members are checked as the service checks them (F-GWLB-1): ``ServerType`` one of Ecs|Eni|Eci|Ip,
Port 6081 only; an ``Eni`` member (how gwlb-fleet registers an appliance, F-GWLB-2) must be an
ENI the linked ECS fake has, attached (``ResourceNotFound.Eni`` / ``IncorrectStatus.Eni``, the
codes NLB documents, F-GWLB-5), and its ``ServerIp`` that ENI's address. The code for an address
that is not the ENI's is not documented: ``IllegalParam.ServerIp`` is assumed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, cast

from gwlb_fleet.alibaba.errors import ASSUMED_ALREADY_MEMBER, ApiError
from gwlb_fleet.alibaba.fakes.ecs import FakeEcs
from gwlb_fleet.alibaba.fakes.openapi import FakeOpenApiService
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import PermanentError
from gwlb_fleet.geneve import GENEVE_PORT
from gwlb_fleet.ports import HealthStatus, Member, MemberHealth, MemberStatus, ServerType

SERVER_TYPES = ("Ecs", "Eni", "Eci", "Ip")
PRESENT: frozenset[str] = frozenset({"Adding", "Available", "Replacing"})
LEAVING: frozenset[str] = frozenset({"Removing", "Draining"})
STAYS = -1


@dataclass
class FakeMember:
    server_id: str
    server_ip: str
    server_type: str = "Ecs"
    port: int = GENEVE_PORT
    status: MemberStatus = "Adding"
    reads_left: int = STAYS  # reads of the group before the next phase; STAYS: none follows
    then: list[tuple[MemberStatus | None, int]] = field(default_factory=list)  # None: gone

    def wire(self, server_group_id: str) -> dict[str, Any]:
        return {
            "ServerGroupId": server_group_id,
            "ServerId": self.server_id,
            "ServerIp": self.server_ip,
            "ServerType": self.server_type,
            "Port": self.port,
            "Status": self.status,
        }


@dataclass
class FakeServerGroup:
    server_group_id: str
    connection_drain: bool = True
    members: dict[str, FakeMember] = field(default_factory=dict)


@dataclass
class FakeGwlb(FakeOpenApiService):
    service: ClassVar[str] = "gwlb"

    server_groups: dict[str, FakeServerGroup] = field(default_factory=dict)
    listeners: dict[str, list[str]] = field(default_factory=dict)  # listener id -> its server groups
    health: dict[str, tuple[HealthStatus, str]] = field(default_factory=dict)  # server id -> (status, reason)
    add_polls: int = 2
    remove_polls: int = 1
    drain_polls: int = 2
    advance_on_read: bool = True
    client_tokens: set[str] = field(default_factory=set)
    ecs: FakeEcs | None = None  # where Eni members are checked (FakeCloud links it)
    # What preflight reads (F-GWLB-7, F-GWLB-9), as the service answers it: ListLoadBalancers'
    # entries by id, and each server group's RelatedLoadBalancerIds / HealthCheckConfig / VpcId.
    load_balancers: dict[str, dict[str, Any]] = field(default_factory=dict)
    server_group_attributes: dict[str, dict[str, Any]] = field(default_factory=dict)

    # --- set-up ---------------------------------------------------------------------------------

    def create_server_group(
        self, server_group_id: str, listener_id: str = "", connection_drain: bool = True
    ) -> FakeServerGroup:
        with self._lock:
            group = FakeServerGroup(server_group_id, connection_drain)
            self.server_groups[server_group_id] = group
            if listener_id:
                self.listeners.setdefault(listener_id, []).append(server_group_id)
            return group

    def set_health(self, server_id: str, status: HealthStatus, reason: str = "") -> None:
        with self._lock:
            self.health[server_id] = (status, reason)

    def tick(self) -> None:
        """One read of every group: members in a transition move one step."""
        with self._lock:
            for group in self.server_groups.values():
                _advance(group)

    # --- the API ----------------------------------------------------------------------------------

    def api_add_servers_to_server_group(
        self, server_group_id: str, servers: Sequence[Mapping[str, Any]], client_token: str = ""
    ) -> dict[str, Any]:
        with self._api("AddServersToServerGroup"):
            group = self._group(server_group_id)
            if client_token and client_token in self.client_tokens:
                return {}  # a replay of a request already applied
            specs = [self._checked(_server_spec(server)) for server in servers]
            for spec in specs:
                member = group.members.get(spec.server_id)
                if member is not None and member.status in PRESENT:
                    raise self._fail(
                        ASSUMED_ALREADY_MEMBER,
                        f"The server {spec.server_id} already exists in the server group.",
                    )
            for spec in specs:
                group.members[spec.server_id] = spec
                _start(spec, [("Adding", self.add_polls), ("Available", STAYS)])
            if client_token:
                self.client_tokens.add(client_token)
            return {}

    def api_remove_servers_from_server_group(
        self, server_group_id: str, servers: Sequence[Mapping[str, Any]], client_token: str = ""
    ) -> dict[str, Any]:
        with self._api("RemoveServersFromServerGroup"):
            group = self._group(server_group_id)
            if client_token and client_token in self.client_tokens:
                return {}
            ids = [str(server.get("ServerId", "")) for server in servers]
            for server_id in ids:
                member = group.members.get(server_id)
                if member is None:
                    raise self._fail(
                        "ResourceNotFound.BackendServer",
                        "The specified resource of BackendServer is not found.",
                    )
                if member.status in LEAVING:
                    raise self._fail(
                        "IncorrectStatus.BackendServer",
                        f"The status of backend server {server_id} is incorrect.",
                    )
            for server_id in ids:
                phases: list[tuple[MemberStatus | None, int]] = [("Removing", self.remove_polls)]
                if group.connection_drain:
                    phases.append(("Draining", self.drain_polls))
                _start(group.members[server_id], [*phases, (None, 0)])
            if client_token:
                self.client_tokens.add(client_token)
            return {}

    def api_list_server_group_servers(
        self,
        server_group_id: str,
        server_ids: Sequence[str] = (),
        max_results: int = 20,
        next_token: str = "",
    ) -> dict[str, Any]:
        with self._api("ListServerGroupServers"):
            group = self._group(server_group_id)
            members = [m for m in group.members.values() if not server_ids or m.server_id in server_ids]
            page, token = _page(members, max_results, next_token)
            answer = {
                "Servers": [m.wire(server_group_id) for m in page],
                "NextToken": token,
                "MaxResults": max_results,
                "TotalCount": len(members),
            }
            if self.advance_on_read:
                _advance(group)  # the service moves on whether or not anyone looks; a read is a step here
            return answer

    def api_get_listener_health_status(
        self, listener_id: str, max_results: int = 20, next_token: str = ""
    ) -> dict[str, Any]:
        with self._api("GetListenerHealthStatus"):
            if listener_id not in self.listeners:
                raise self._fail(
                    "ResourceNotFound.Listener", f"The specified listener {listener_id} is not found."
                )
            rows = [
                (group_id, member)
                for group_id in self.listeners[listener_id]
                for member in self.server_groups[group_id].members.values()
            ]
            page, token = _page(rows, max_results, next_token)
            infos: dict[str, list[dict[str, Any]]] = {}
            for group_id, member in page:
                status, reason = self._health_of(member)
                server: dict[str, Any] = {
                    "ServerId": member.server_id,
                    "ServerIp": member.server_ip,
                    "Port": member.port,
                    "Status": status,
                }
                if reason:
                    server["Reason"] = {"ReasonCode": reason}
                infos.setdefault(group_id, []).append(server)
            return {
                "ListenerHealthStatus": [
                    {
                        "ListenerId": listener_id,
                        "ServerGroupInfos": [
                            {"ServerGroupId": group_id, "HealthCheckEnabled": True, "Servers": servers}
                            for group_id, servers in infos.items()
                        ],
                    }
                ],
                "NextToken": token,
                "MaxResults": max_results,
                "TotalCount": len(rows),
            }

    def _checked(self, spec: FakeMember) -> FakeMember:
        """An Eni member names an attached ENI of ECS, with that ENI's address (F-GWLB-1)."""
        if spec.server_type != "Eni" or self.ecs is None:
            return spec
        eni = self.ecs.eni(spec.server_id)
        if eni is None:
            raise self._fail(
                "ResourceNotFound.Eni", f"The specified resource of Eni {spec.server_id} is not found."
            )
        if eni.get("Status") != "InUse":
            raise self._fail("IncorrectStatus.Eni", f"The status of Eni {spec.server_id} is incorrect.")
        if not spec.server_ip:
            spec.server_ip = str(eni["PrivateIpAddress"])
        elif spec.server_ip != eni["PrivateIpAddress"]:
            raise self._fail(
                "IllegalParam.ServerIp",
                f"The param of ServerIp {spec.server_ip} is not an address of Eni {spec.server_id}.",
            )
        return spec

    # --- preflight's reads (gwlb-fleet preflight) ---------------------------------------------------------

    def api_list_server_groups(self, ids: Sequence[str], max_results: int, next_token: str) -> dict[str, Any]:
        """F-GWLB-9: at most 20 ServerGroupIds, MaxResults 1..1000."""
        with self._api("ListServerGroups"):
            _preflight_page(self, ids, max_results)
            rows = [
                {
                    "ServerGroupId": group_id,
                    "ServerGroupType": "Instance",
                    "Protocol": "GENEVE",
                    "ServerGroupStatus": "Available",
                    "ServerCount": len(group.members),
                    **self.server_group_attributes.get(group_id, {}),
                }
                for group_id, group in self.server_groups.items()
                if not ids or group_id in ids
            ]
            page, token = _page(rows, max_results, next_token)
            return {
                "ServerGroups": page,
                "NextToken": token,
                "MaxResults": max_results,
                "TotalCount": len(rows),
            }

    def api_list_load_balancers(
        self, ids: Sequence[str], max_results: int, next_token: str
    ) -> dict[str, Any]:
        """F-GWLB-7: at most 20 LoadBalancerIds, MaxResults 1..1000."""
        with self._api("ListLoadBalancers"):
            _preflight_page(self, ids, max_results)
            rows = [lb for lb_id, lb in self.load_balancers.items() if not ids or lb_id in ids]
            page, token = _page(rows, max_results, next_token)
            return {
                "LoadBalancers": page,
                "NextToken": token,
                "MaxResults": max_results,
                "TotalCount": len(rows),
            }

    def _group(self, server_group_id: str) -> FakeServerGroup:
        group = self.server_groups.get(server_group_id)
        if group is None:
            raise self._fail(
                "ResourceNotFound.ServerGroup", "The specified resource of serverGroup is not found."
            )
        return group

    def _health_of(self, member: FakeMember) -> tuple[HealthStatus, str]:
        if member.server_id in self.health:
            return self.health[member.server_id]
        return ("Healthy", "") if member.status == "Available" else ("Initial", "")

    # --- GwlbPort ----------------------------------------------------------------------------------------

    def add_server(self, server_group_id: str, eni_id: str, eni_ip: str, deadline: Deadline) -> None:
        try:
            self._port(
                "AddServersToServerGroup",
                partial(
                    self.api_add_servers_to_server_group,
                    server_group_id,
                    [_wire_server(eni_id, eni_ip, "Eni")],
                ),
            )
        except PermanentError:
            if self._status_is(server_group_id, eni_id, PRESENT):  # as the adapter: read it back
                return
            raise

    def remove_server(
        self,
        server_group_id: str,
        server_id: str,
        server_ip: str,
        deadline: Deadline,
        server_type: ServerType = "Eni",
    ) -> None:
        try:
            self._port_act(
                "RemoveServersFromServerGroup",
                partial(
                    self.api_remove_servers_from_server_group,
                    server_group_id,
                    [_wire_server(server_id, server_ip, server_type)],
                ),
            )
        except PermanentError:
            if self._status_is(server_group_id, server_id, LEAVING | {"gone"}):
                return
            raise

    def list_members(self, server_group_id: str, deadline: Deadline) -> list[Member]:
        return self._members(server_group_id, ())

    def listener_health(self, listener_id: str, deadline: Deadline) -> list[MemberHealth]:
        health: list[MemberHealth] = []
        token = ""
        while True:
            answer = self._port(
                "GetListenerHealthStatus",
                partial(self.api_get_listener_health_status, listener_id, 100, token),
            )
            for listener in answer["ListenerHealthStatus"]:
                for info in listener["ServerGroupInfos"]:
                    health.extend(
                        MemberHealth(
                            s["ServerId"],
                            s["ServerIp"],
                            s["Status"],
                            s.get("Reason", {}).get("ReasonCode", ""),
                        )
                        for s in info["Servers"]
                    )
            token = answer["NextToken"]
            if not token:
                return health

    def _members(self, server_group_id: str, server_ids: Sequence[str]) -> list[Member]:
        members: list[Member] = []
        token = ""
        while True:
            answer = self._port(
                "ListServerGroupServers",
                partial(self.api_list_server_group_servers, server_group_id, server_ids, 100, token),
            )
            members.extend(
                Member(
                    s["ServerId"],
                    s["ServerIp"],
                    cast(MemberStatus, s["Status"]),
                    s["Port"],
                    cast(ServerType, s["ServerType"]),
                )
                for s in answer["Servers"]
            )
            token = answer["NextToken"]
            if not token:
                return members

    def _status_is(self, server_group_id: str, server_id: str, statuses: frozenset[str]) -> bool:
        with self._lock:
            group = self.server_groups.get(server_group_id)
            if group is None:
                return False
            member = group.members.get(server_id)
            return (member.status if member else "gone") in statuses


def _wire_server(server_id: str, server_ip: str, server_type: ServerType) -> dict[str, Any]:
    return {"ServerId": server_id, "ServerIp": server_ip, "ServerType": server_type, "Port": GENEVE_PORT}


def _server_spec(server: Mapping[str, Any]) -> FakeMember:
    server_id = str(server.get("ServerId", ""))
    server_type = str(server.get("ServerType", ""))
    if not server_id:
        raise ApiError("gwlb", "MissingParam.ServerId", "The param of ServerId is missing.")
    if server_type not in SERVER_TYPES:
        raise ApiError(
            "gwlb", "IllegalParam.ServerType", f"The param of ServerType {server_type!r} is illegal."
        )
    port = int(server.get("Port") or GENEVE_PORT)
    if port != GENEVE_PORT:
        raise ApiError("gwlb", "IllegalParam.Port", f"The param of Port {port} is illegal (6081 only).")
    return FakeMember(server_id, str(server.get("ServerIp", "")), server_type, port)


def _start(member: FakeMember, phases: list[tuple[MemberStatus | None, int]]) -> None:
    status, reads = phases[0]
    assert status is not None
    member.status, member.reads_left, member.then = status, reads, phases[1:]


def _advance(group: FakeServerGroup) -> None:
    for server_id, member in list(group.members.items()):
        if member.reads_left == STAYS:
            continue
        member.reads_left -= 1
        while member.reads_left <= 0:
            if not member.then:
                member.reads_left = STAYS
                break
            status, reads = member.then.pop(0)
            if status is None:
                del group.members[server_id]
                break
            member.status, member.reads_left = status, reads


def _page(rows: list[Any], max_results: int, next_token: str) -> tuple[list[Any], str]:
    start = int(next_token or 0)
    end = start + max(1, int(max_results))
    return rows[start:end], str(end) if end < len(rows) else ""


def _preflight_page(gwlb: FakeGwlb, ids: Sequence[str], max_results: int) -> None:
    if len(ids) > 20:
        raise gwlb._fail("InvalidParameter", "at most 20 ids in one call")
    if not 1 <= max_results <= 1000:
        raise gwlb._fail("InvalidParameter", f"MaxResults {max_results}: 1 to 1000")
