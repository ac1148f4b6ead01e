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


def add_servers(gwlb: FakeGwlb, p: Params) -> dict[str, Any]:
    group, servers = p.required("ServerGroupId"), p.objects("Servers")
    _dry_run(gwlb, p)
    return gwlb.api_add_servers_to_server_group(group, servers, p.text("ClientToken"))


def remove_servers(gwlb: FakeGwlb, p: Params) -> dict[str, Any]:
    group, servers = p.required("ServerGroupId"), p.objects("Servers")
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
}
