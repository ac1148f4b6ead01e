"""GwlbPort over alibabacloud_gwlb20240415: the server group's members and the listener's health.

Adding and removing members is asynchronous: the call is accepted, the member shows Adding (then
Available) or Removing (then Draining for the group's connection-drain time, then gone): the
workflows read the members again in a later invocation. No GWLB request carries a RegionId: the
endpoint does.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, cast

from alibabacloud_gwlb20240415 import models as gwlb_models
from alibabacloud_gwlb20240415.client import Client as GwlbClient

from gwlb_fleet.alibaba.tea import RetryPolicy, SetupApi, TeaApi, body_of, setup_calls
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import FleetError, PermanentError
from gwlb_fleet.geneve import GENEVE_PORT  # the only port a GWLB backend has
from gwlb_fleet.ports import Member, MemberHealth, MemberStatus, ServerType
from gwlb_fleet.settings import Settings

RAM_ACTIONS: frozenset[str] = frozenset(
    {
        "gwlb:AddServersToServerGroup",
        "gwlb:RemoveServersFromServerGroup",
        "gwlb:ListServerGroupServers",
        "gwlb:GetListenerHealthStatus",
    }
)

# F-GWLB-2: an appliance is registered by its data ENI (an ``Ecs`` member would be the instance's
# primary ENI, the VM-Series management interface).
SERVER_TYPE: ServerType = "Eni"
PAGE_SIZE = 100  # 1..1000
MAX_PAGES = 100  # a bound on paging, far above any fleet
MEMBER_PRESENT: frozenset[str] = frozenset({"Adding", "Available", "Replacing"})
MEMBER_LEAVING: frozenset[str] = frozenset({"Removing", "Draining"})


def client_token(action: str, *parts: str) -> str:
    """An idempotency token for one adapter call: the same for every retry of that call (so a
    request the service got but whose answer was lost is not applied twice), and a new one for
    the next call, so that adding a member again days after its removal is never mistaken for a
    replay. Across invocations, "already a member" / "not a member" answers keep calls idempotent."""
    seed = "\n".join((action, *parts, uuid.uuid4().hex))
    return hashlib.sha256(seed.encode()).hexdigest()[:32]  # ASCII, at most 64 characters


class GwlbAdapter:
    def __init__(self, api: TeaApi) -> None:
        self.api = api

    @classmethod
    def from_settings(cls, settings: Settings, retry_policy: RetryPolicy | None = None) -> GwlbAdapter:
        return cls(TeaApi.from_settings("gwlb", settings, GwlbClient, retry_policy))

    @property
    def client(self) -> Any:
        return self.api.client

    # --- members ----------------------------------------------------------------------------------

    def add_server(self, server_group_id: str, eni_id: str, eni_ip: str, deadline: Deadline) -> None:
        action = "AddServersToServerGroup"
        server_id, server_ip = eni_id, eni_ip
        request = gwlb_models.AddServersToServerGroupRequest(  # F-GWLB-1
            server_group_id=server_group_id,
            servers=[
                gwlb_models.AddServersToServerGroupRequestServers(
                    server_id=server_id, server_ip=server_ip, server_type=SERVER_TYPE, port=GENEVE_PORT
                )
            ],
            client_token=client_token(action, server_group_id, server_id, server_ip),
        )
        try:
            self.api.call(
                action, self.client.add_servers_to_server_group_with_options, request, deadline=deadline
            )
        except PermanentError:
            # GWLB's answer for "already a member" is not documented: read the member back
            # rather than trust a guessed code.
            if self._status_is(server_group_id, server_id, MEMBER_PRESENT, deadline):
                return
            raise

    def remove_server(
        self,
        server_group_id: str,
        server_id: str,
        server_ip: str,
        deadline: Deadline,
        server_type: ServerType = SERVER_TYPE,
    ) -> None:
        action = "RemoveServersFromServerGroup"
        request = gwlb_models.RemoveServersFromServerGroupRequest(  # F-GWLB-1
            server_group_id=server_group_id,
            servers=[
                gwlb_models.RemoveServersFromServerGroupRequestServers(
                    server_id=server_id, server_ip=server_ip, server_type=server_type, port=GENEVE_PORT
                )
            ],
            client_token=client_token(action, server_group_id, server_id, server_ip),
        )
        try:
            self.api.act(
                action, self.client.remove_servers_from_server_group_with_options, request, deadline=deadline
            )
        except PermanentError:
            # A member already on its way out may answer with a status error: success too.
            if self._status_is(server_group_id, server_id, MEMBER_LEAVING | {"gone"}, deadline):
                return
            raise

    def list_members(self, server_group_id: str, deadline: Deadline) -> list[Member]:
        return self._list(server_group_id, (), deadline)

    def _status_is(
        self, server_group_id: str, server_id: str, statuses: frozenset[str], deadline: Deadline
    ) -> bool:
        """Whether the member is in one of ``statuses`` ("gone": not in the group). False when
        it cannot be read: the caller then raises its own error, not this one's."""
        try:
            found = self._list(server_group_id, (server_id,), deadline)
        except FleetError:
            return False
        member = next((m for m in found if m.server_id == server_id), None)
        return (member.status if member else "gone") in statuses

    def _list(self, server_group_id: str, server_ids: tuple[str, ...], deadline: Deadline) -> list[Member]:
        members: list[Member] = []
        next_token: str | None = None
        for _ in range(MAX_PAGES):
            request = gwlb_models.ListServerGroupServersRequest(
                server_group_id=server_group_id,
                server_ids=list(server_ids) or None,
                max_results=PAGE_SIZE,
                next_token=next_token,
            )
            body = body_of(
                self.api.call(
                    "ListServerGroupServers",
                    self.client.list_server_group_servers_with_options,
                    request,
                    deadline=deadline,
                )
            )
            members.extend(_member(server) for server in body.servers or [])
            next_token = body.next_token
            if not next_token:
                return members
        raise PermanentError(
            f"ListServerGroupServers did not end after {MAX_PAGES} pages", code="Paging", service="gwlb"
        )

    # --- health -----------------------------------------------------------------------------------------

    def listener_health(self, listener_id: str, deadline: Deadline) -> list[MemberHealth]:
        health: list[MemberHealth] = []
        next_token: str | None = None
        for _ in range(MAX_PAGES):
            request = gwlb_models.GetListenerHealthStatusRequest(
                listener_id=listener_id, max_results=PAGE_SIZE, next_token=next_token
            )
            body = body_of(
                self.api.call(
                    "GetListenerHealthStatus",
                    self.client.get_listener_health_status_with_options,
                    request,
                    deadline=deadline,
                )
            )
            for listener in body.listener_health_status or []:
                for group in listener.server_group_infos or []:
                    health.extend(_health(server) for server in group.servers or [])
            next_token = body.next_token
            if not next_token:
                return health
        raise PermanentError(
            f"GetListenerHealthStatus did not end after {MAX_PAGES} pages", code="Paging", service="gwlb"
        )


def _member(server: Any) -> Member:
    return Member(
        server_id=str(server.server_id),
        server_ip=str(server.server_ip or ""),
        status=cast(MemberStatus, server.status),
        port=int(server.port or GENEVE_PORT),
        server_type=cast(ServerType, server.server_type or SERVER_TYPE),
    )


def _health(server: Any) -> MemberHealth:
    reason = server.reason.reason_code if server.reason is not None else ""
    return MemberHealth(
        server_id=str(server.server_id),
        server_ip=str(server.server_ip or ""),
        status=server.status,
        reason=str(reason or ""),
    )


# --- preflight (gwlb-fleet preflight, the deployer's credentials; read only, not in the functions'
# policy) ---------------------------------------------------------------------------------------------

PREFLIGHT_CALLS = setup_calls(gwlb_models, "ListServerGroups", "ListLoadBalancers")  # F-GWLB-9, F-GWLB-7
PREFLIGHT_RAM_ACTIONS: frozenset[str] = frozenset(f"gwlb:{action}" for action in PREFLIGHT_CALLS)


def preflight_api(settings: Settings, retry_policy: RetryPolicy | None = None) -> SetupApi:
    return SetupApi(TeaApi.from_settings("gwlb", settings, GwlbClient, retry_policy), PREFLIGHT_CALLS)
