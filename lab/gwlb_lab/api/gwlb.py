"""GWLB 2024-04-15 on the local endpoint: the SDK sends these as a form body (POST /)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gwlb_fleet.alibaba.errors import ApiError
from gwlb_fleet.alibaba.fakes.gwlb import FakeGwlb
from gwlb_lab.api.params import Params

PRODUCT = "gwlb"
VERSION = "2024-04-15"


def _dry_run(gwlb: FakeGwlb, p: Params) -> None:
    # DryRun checks the request and answers DryRunOperation instead of acting.
    if p.boolean("DryRun", False):
        raise ApiError(PRODUCT, "DryRunOperation", "Request validation has been passed with DryRun flag set.")


MAX_SERVERS = 200  # F-GWLB-1: servers per call


def _servers(p: Params) -> list[dict[str, str]]:
    """F-GWLB-1: ``Servers.N.{ServerId, ServerType, ServerIp, Port}``, 1..200 of them (each
    member's fields are checked by the fake: ServerType Ecs|Eni|Eci|Ip, Port 6081, an Eni that
    ECS has with that address)."""
    servers = p.objects("Servers")
    if not servers:
        raise ApiError(PRODUCT, "MissingParameter", "Servers is mandatory for this action.")
    if len(servers) > MAX_SERVERS:
        raise ApiError(PRODUCT, "InvalidParameter", f"at most {MAX_SERVERS} Servers per call")
    return servers


def add_servers(gwlb: FakeGwlb, p: Params) -> dict[str, Any]:
    group, servers = p.required("ServerGroupId"), _servers(p)
    _dry_run(gwlb, p)
    return gwlb.api_add_servers_to_server_group(group, servers, p.text("ClientToken"))


def remove_servers(gwlb: FakeGwlb, p: Params) -> dict[str, Any]:
    group, servers = p.required("ServerGroupId"), _servers(p)
    _dry_run(gwlb, p)
    return gwlb.api_remove_servers_from_server_group(group, servers, p.text("ClientToken"))


def list_servers(gwlb: FakeGwlb, p: Params) -> dict[str, Any]:
    return gwlb.api_list_server_group_servers(
        p.required("ServerGroupId"), p.strings("ServerIds"), p.integer("MaxResults", 20), p.text("NextToken")
    )


def listener_health(gwlb: FakeGwlb, p: Params) -> dict[str, Any]:
    return gwlb.api_get_listener_health_status(
        p.required("ListenerId"), p.integer("MaxResults", 20), p.text("NextToken")
    )


HANDLERS: dict[str, Callable[[FakeGwlb, Params], dict[str, Any]]] = {
    "AddServersToServerGroup": add_servers,
    "RemoveServersFromServerGroup": remove_servers,
    "ListServerGroupServers": list_servers,
    "GetListenerHealthStatus": listener_health,
    # preflight's reads (F-GWLB-7, F-GWLB-9)
    "ListServerGroups": lambda gwlb, p: gwlb.api_list_server_groups(
        p.strings("ServerGroupIds"), p.integer("MaxResults", 20), p.text("NextToken")
    ),
    "ListLoadBalancers": lambda gwlb, p: gwlb.api_list_load_balancers(
        p.strings("LoadBalancerIds"), p.integer("MaxResults", 20), p.text("NextToken")
    ),
}
