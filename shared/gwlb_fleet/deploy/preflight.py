"""``gwlb-fleet preflight``: read-only checks of an account against what a GWLB fleet needs (the
GWLB and VM-Series integration guides: endpoints in the GWLB's zones, routes to the endpoints,
security groups open to Geneve and the health check, instance types with ENIs and jumbo frames),
and against what ``gwlb-fleet setup`` made (hooks, alarm rules, roles, secrets).

Each check reads with the deployer's credentials through the same describe calls set-up uses
(``gwlb_fleet.deploy.run.Api``), never changes anything, and gives one ``Result``: PASS or FAIL,
what it saw and, on FAIL, the fix. A thing that is not there (``NotFound``) is a FAIL of the check
that looked for it; any other failure of a call (refused, unreachable, throttled past the
retries) is an error of that check, naming the service and the call: the exit status is then 1,
else 2 if a check failed, else 0.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gwlb_fleet.alibaba.ess import eventbus_arn
from gwlb_fleet.alibaba.mns import is_queue_target
from gwlb_fleet.alibaba.privatelink import GWLB_ENDPOINT_TYPE, GWLB_RESOURCE_TYPE
from gwlb_fleet.alibaba.ram import SERVICE_ROLES
from gwlb_fleet.alibaba.vpc import GWLB_ENDPOINT_HOP_TYPES
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.deploy import plan
from gwlb_fleet.deploy.run import Api, related_load_balancers
from gwlb_fleet.errors import FleetError, NotFound
from gwlb_fleet.geneve import GENEVE_PORT
from gwlb_fleet.settings import Settings

CALL_BUDGET_S = 60.0
MAX_PAGES = 50
EXIT_OK, EXIT_ERROR, EXIT_FAILED = 0, 1, 2

# F-GWLB-2, F-ECS-2: a VM-Series appliance has its management interface (the primary ENI) and a
# data interface (a secondary ENI, the GWLB member); one-arm, so two in all (seed 004: four-vCPU
# types give three interfaces, enough for one-arm mode).
ENIS_NEEDED = 2
# F-RAM-2: the roles preflight reads besides set-up's (F-CMS-13, F-ESS-9).
FC_ROLE = "AliyunServiceRoleForFC"  # F-FC-8
EVENTBRIDGE_ROLES = ("AliyunServiceRoleForEventBridgeSendToFC", "AliyunServiceRoleForEventBridgeSourceMNS")
FC_PRINCIPAL = "fc.aliyuncs.com"  # F-FC-8: the functions' role is trusted by FC


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    saw: str
    fix: str = ""
    error: bool = False  # a call failed: the check could not look

    def line(self) -> str:
        verdict = "ERROR" if self.error else ("PASS" if self.ok else "FAIL")
        text = f"{verdict} {self.name}: {self.saw}"
        return f"{text} -- fix: {self.fix}" if self.fix and not self.ok else text


class Failed(Exception):
    """A check's verdict reached before its end: FAIL with what it saw and the fix."""

    def __init__(self, saw: str, fix: str) -> None:
        super().__init__(saw)
        self.saw, self.fix = saw, fix


class Unreachable(Exception):
    """A describe call failed for another reason than "not there"."""

    def __init__(self, service: str, action: str, cause: FleetError) -> None:
        super().__init__(f"{service} {action}: {cause.code or type(cause).__name__}: {cause}")


@dataclass
class Reader:
    """The describe calls, by service; answers as the wire's JSON. Memoised: checks share reads."""

    apis: Mapping[str, Api]
    settings: Settings

    def __post_init__(self) -> None:
        self._memo: dict[str, dict[str, Any] | None] = {}

    def get(self, service: str, action: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The answer, or None when the thing asked for does not exist."""
        key = json.dumps([service, action, params], sort_keys=True, default=str)
        if key not in self._memo:
            try:
                self._memo[key] = self.apis[service].invoke(action, params, Deadline.after(CALL_BUDGET_S))
            except NotFound:
                self._memo[key] = None
            except FleetError as exc:
                raise Unreachable(service, action, exc) from exc
        return self._memo[key]

    def pages(
        self,
        service: str,
        action: str,
        params: Mapping[str, Any],
        items: Callable[[dict[str, Any]], list[Any]],
    ) -> Iterator[Any]:
        """Every item of a NextToken-paged list."""
        token = ""
        for _ in range(MAX_PAGES):
            body = self.get(service, action, {**params, **({"NextToken": token} if token else {})})
            if body is None:
                return
            yield from items(body)
            token = str(body.get("NextToken") or "")
            if not token:
                return
        raise Unreachable(service, action, FleetError(f"more than {MAX_PAGES} pages", code="Paging"))

    def numbered(
        self,
        service: str,
        action: str,
        params: Mapping[str, Any],
        items: Callable[[dict[str, Any]], list[Any]],
    ) -> Iterator[Any]:
        """Every item of a PageNumber/PageSize list (PageSize at most 50 for VPC and ESS)."""
        size = 50
        for page in range(1, MAX_PAGES + 1):
            body = self.get(service, action, {**params, "PageNumber": page, "PageSize": size})
            found = items(body) if body is not None else []
            yield from found
            if len(found) < size:
                return
        raise Unreachable(service, action, FleetError(f"more than {MAX_PAGES} pages", code="Paging"))


def _list(body: Mapping[str, Any] | None, *path: str) -> list[Any]:
    """``body[a][b]...`` as a list ([] where absent): the wire nests lists in one-key objects."""
    value: Any = body or {}
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
        if value is None:
            return []
    return list(value) if isinstance(value, list) else [value]


# --- what the checks share: the GWLB, its endpoints, the scaling configuration --------------------------


@dataclass(frozen=True)
class Gwlb:
    load_balancer_id: str
    zones: dict[str, str]  # zone id -> vSwitch id (F-GWLB-7)
    health_check: Mapping[str, Any]  # the server group's HealthCheckConfig (F-GWLB-9)


def gwlb(r: Reader) -> Gwlb:
    """The server group's GWLB (ListServerGroups' RelatedLoadBalancerIds, F-GWLB-9) and its zones
    (ListLoadBalancers' ZoneMappings, F-GWLB-7)."""
    group_id = r.settings.server_group_id
    body = r.get("gwlb", "ListServerGroups", {"ServerGroupIds": [group_id]})
    groups = [g for g in _list(body, "ServerGroups") if g.get("ServerGroupId") == group_id]
    related = related_load_balancers(body or {}, group_id)  # shared with set-up's unhealthy rule
    if related is None:
        raise Failed(
            f"no server group {group_id}", "set GWLB_SERVER_GROUP_ID to the fleet's GWLB server group"
        )
    if len(related) != 1:
        raise Failed(
            f"server group {group_id} is used by GWLB {related or 'none'}",
            "attach the server group to one GWLB through its IP listener (GWLB guide, step 1)",
        )
    body = r.get("gwlb", "ListLoadBalancers", {"LoadBalancerIds": related})
    lbs = [lb for lb in _list(body, "LoadBalancers") if lb.get("LoadBalancerId") == related[0]]
    if not lbs:
        raise Failed(f"GWLB {related[0]} not found", "check the region (FLEET_REGION)")
    zones = {str(z.get("ZoneId")): str(z.get("VSwitchId")) for z in _list(lbs[0], "ZoneMappings")}
    return Gwlb(related[0], zones, groups[0].get("HealthCheckConfig") or {})


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    vpc_id: str
    status: str
    zones: tuple[str, ...]


def endpoints(r: Reader, lb: Gwlb) -> list[Endpoint]:
    """The GWLB endpoints of the endpoint services whose resource is this GWLB (F-VPC-4, F-VPC-2)."""
    region = r.settings.region
    services = r.pages(
        "privatelink",
        "ListVpcEndpointServices",
        {"RegionId": region, "ServiceResourceType": GWLB_RESOURCE_TYPE, "ResourceId": lb.load_balancer_id},
        lambda body: _list(body, "Services"),
    )
    names = sorted({str(s.get("ServiceName")) for s in services if s.get("ServiceName")})
    if not names:
        raise Failed(
            f"no endpoint service has GWLB {lb.load_balancer_id} as its resource",
            f"create an endpoint service for GWLB {lb.load_balancer_id} (GWLB guide, step 3)",
        )
    found: list[Endpoint] = []
    for name in names:
        for ep in r.pages(
            "privatelink",
            "ListVpcEndpoints",
            {"RegionId": region, "ServiceName": name, "EndpointType": GWLB_ENDPOINT_TYPE},
            lambda body: _list(body, "Endpoints"),
        ):
            endpoint_id = str(ep.get("EndpointId"))
            zones = r.pages(
                "privatelink",
                "ListVpcEndpointZones",
                {"RegionId": region, "EndpointId": endpoint_id},
                lambda body: _list(body, "Zones"),
            )
            found.append(
                Endpoint(
                    endpoint_id,
                    str(ep.get("VpcId")),
                    str(ep.get("ConnectionStatus") or ""),
                    tuple(sorted(str(z.get("ZoneId")) for z in zones)),
                )
            )
    if not found:
        raise Failed(
            f"endpoint service {', '.join(names)} has no GWLB endpoint",
            "create a GWLB endpoint in each zone of the business VPC (GWLB guide, step 3)",
        )
    return found


def scaling_configuration(r: Reader) -> Mapping[str, Any]:
    """The scaling group's active configuration (F-ESS-11), or SCALING_CONFIGURATION_ID's."""
    wanted = r.settings.scaling_configuration_id
    configs = list(
        r.numbered(
            "ess",
            "DescribeScalingConfigurations",
            {"RegionId": r.settings.region, "ScalingGroupId": r.settings.scaling_group_id},
            lambda body: _list(body, "ScalingConfigurations"),
        )
    )
    chosen = [
        c
        for c in configs
        if (c.get("ScalingConfigurationId") == wanted if wanted else c.get("LifecycleState") == "Active")
    ]
    if not chosen:
        raise Failed(
            f"scaling group {r.settings.scaling_group_id} has no "
            + (f"scaling configuration {wanted}" if wanted else "active scaling configuration"),
            "create (or activate) the VM-Series scaling configuration of the scaling group",
        )
    return dict(chosen[0])


# --- the checks -----------------------------------------------------------------------------------------


def check_endpoint_zones(r: Reader) -> str:
    """The GWLB endpoints' zones are a subset of the GWLB's zones (seed 002 "Limits"; F-VPC-2,
    F-GWLB-7), and every endpoint is connected (seed 002: "Connected")."""
    lb = gwlb(r)
    eps = endpoints(r, lb)
    outside = {ep.endpoint_id: sorted(set(ep.zones) - set(lb.zones)) for ep in eps}
    outside = {k: v for k, v in outside.items() if v}
    seen = f"GWLB {lb.load_balancer_id} in {sorted(lb.zones)}; " + ", ".join(
        f"{ep.endpoint_id} in {list(ep.zones)} ({ep.status or 'no status'})" for ep in eps
    )
    if outside:
        raise Failed(
            seen,
            "; ".join(f"move {k} out of {v}" for k, v in outside.items())
            + f": a GWLB endpoint's zones must be among the GWLB's ({sorted(lb.zones)}), or add those"
            " zones to the GWLB",
        )
    unconnected = [ep.endpoint_id for ep in eps if ep.status != "Connected"]
    if unconnected:
        raise Failed(seen, f"accept the connection of {', '.join(unconnected)} on the endpoint service")
    empty = [ep.endpoint_id for ep in eps if not ep.zones]
    if empty:
        raise Failed(seen, f"add a zone (and vSwitch) to {', '.join(empty)}")
    return seen


def check_routes(r: Reader) -> str:
    """Every GWLB endpoint is the next hop of a route in its VPC (F-VPC-1: no server-side
    NextHopType filter, the next hops are filtered here)."""
    eps = endpoints(r, gwlb(r))
    routed: dict[str, list[str]] = {ep.endpoint_id: [] for ep in eps}
    region = r.settings.region
    for vpc_id in sorted({ep.vpc_id for ep in eps}):
        tables = r.numbered(
            "vpc",
            "DescribeRouteTableList",
            {"RegionId": region, "VpcId": vpc_id},
            lambda body: _list(body, "RouterTableList", "RouterTableListType"),
        )
        for table in tables:
            table_id = str(table.get("RouteTableId"))
            entries = r.pages(
                "vpc",
                "DescribeRouteEntryList",
                {"RegionId": region, "RouteTableId": table_id, "MaxResult": 100},  # F-VPC-1
                lambda body: _list(body, "RouteEntrys", "RouteEntry"),
            )
            for entry in entries:
                for hop_type, hop_id in _hops(entry):
                    if hop_type in GWLB_ENDPOINT_HOP_TYPES and hop_id in routed:
                        routed[hop_id].append(f"{table_id}:{entry.get('DestinationCidrBlock')}")
    seen = "; ".join(f"{ep} <- {routes or 'no route'}" for ep, routes in routed.items())
    missing = [ep for ep, routes in routed.items() if not routes]
    if missing:
        raise Failed(
            seen,
            "in the business subnets' route tables add 0.0.0.0/0, and in the IPv4 gateway's route table"
            " the application subnets, with next hop type GatewayLoadBalancerEndpoint = "
            + ", ".join(missing)
            + " (GWLB guide, step 4)",
        )
    return seen


def _hops(entry: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A route's next hops: the ECMP list ``NextHops.NextHop[]`` and the entry's own fields."""
    hops = [(str(h.get("NextHopType")), str(h.get("NextHopId"))) for h in _list(entry, "NextHops", "NextHop")]
    if entry.get("NextHopType"):
        hops.append((str(entry.get("NextHopType")), str(entry.get("NextHopId"))))
    return hops


def check_security_groups(r: Reader) -> str:
    """The appliances' security groups let in UDP 6081 and the health-check port from the whole of
    each GWLB vSwitch (seed 002 "Limits" and prerequisites; F-ECS-4, F-ECS-6, F-GWLB-6)."""
    lb = gwlb(r)
    config = scaling_configuration(r)
    groups = security_groups_of(config)
    if not groups:
        raise Failed(
            f"scaling configuration {config.get('ScalingConfigurationId')} names no security group",
            "give the scaling configuration the appliances' security group",
        )
    health = lb.health_check
    if str(health.get("HealthCheckEnabled")).lower() == "false":
        raise Failed(
            f"server group {r.settings.server_group_id}: health check off",
            "enable the server group's health check (GWLB guide, References)",
        )
    health_port = int(health.get("HealthCheckConnectPort") or 0)
    if not health_port:
        raise Failed(
            f"server group {r.settings.server_group_id}: no HealthCheckConnectPort",
            "set the server group's health check port (the port the appliance answers on)",
        )
    cidrs = vswitch_cidrs(r, lb)
    rules = [
        rule
        for group in groups
        for rule in security_group_rules(r, group)
        if str(rule.get("Direction", "ingress")).lower() == "ingress"
    ]
    needs = [("UDP", GENEVE_PORT), ("TCP", health_port)]  # TCP and HTTP checks both connect over TCP
    missing = [
        f"{protocol} {port}/{port} from {cidr}"
        for protocol, port in needs
        for cidr in cidrs
        if not allowed(rules, protocol, port, cidr)
    ]
    seen = (
        f"groups {groups}; GWLB vSwitches {cidrs}; Geneve UDP {GENEVE_PORT}, health check"
        f" {health.get('HealthCheckProtocol') or 'TCP'} {health_port}: "
        + ("not allowed: " + "; ".join(missing) if missing else "allowed")
    )
    if missing:
        raise Failed(seen, f"add inbound Accept rules to {groups[0]}: " + "; ".join(missing))
    return seen


def security_groups_of(config: Mapping[str, Any]) -> list[str]:
    """The instance's groups and its secondary (data) ENIs' (F-ESS-11)."""
    groups = [str(config.get("SecurityGroupId") or "")]
    groups += [str(g) for g in _list(config, "SecurityGroupIds")]
    for eni in _list(config, "NetworkInterfaces"):
        groups += [str(g) for g in _list(eni, "SecurityGroupIds")]
    return sorted({g for g in groups if g})


def vswitch_cidrs(r: Reader, lb: Gwlb) -> list[str]:
    """The CIDR blocks of the GWLB's vSwitches (F-VPC-3): GWLB reaches its backends from them (F-GWLB-6)."""
    found: dict[str, str] = {}
    for switch_id in sorted(set(lb.zones.values())):
        body = r.get("vpc", "DescribeVSwitches", {"RegionId": r.settings.region, "VSwitchId": switch_id})
        for switch in _list(body, "VSwitches", "VSwitch"):
            if switch.get("VSwitchId") == switch_id:
                found[switch_id] = str(switch.get("CidrBlock"))
    unknown = sorted(set(lb.zones.values()) - set(found))
    if unknown:
        raise Failed(f"GWLB vSwitches {unknown} not found", "check the GWLB's zone mappings and the region")
    return sorted(found.values())


def security_group_rules(r: Reader, group: str) -> list[Mapping[str, Any]]:
    body = r.get(
        "ecs",
        "DescribeSecurityGroupAttribute",
        {"RegionId": r.settings.region, "SecurityGroupId": group, "Direction": "ingress"},
    )
    if body is None:
        raise Failed(f"security group {group} not found", f"create {group} or fix the scaling configuration")
    return list(_list(body, "Permissions", "Permission"))


def allowed(rules: list[Mapping[str, Any]], protocol: str, port: int, cidr: str) -> bool:
    """F-ECS-6: the rules of all the groups together; the highest-priority (smallest number) rule
    that matches decides, Drop before Accept at equal priority; nothing matching: refused. An
    Accept must cover the whole vSwitch; a Drop overlapping any part of it counts. Rules by
    security group or prefix list, and IPv6 ones, are not about the GWLB's IPv4 addresses."""
    network = _ipv4(cidr)
    if network is None:
        return False

    def source(rule: Mapping[str, Any]) -> ipaddress.IPv4Network | None:
        if str(rule.get("IpProtocol", "")).upper() not in (protocol, "ALL"):
            return None
        low, _, high = str(rule.get("PortRange") or "-1/-1").partition("/")
        if (low, high) != ("-1", "-1") and not int(low) <= port <= int(high or low):
            return None
        return _ipv4(str(rule.get("SourceCidrIp") or ""))

    def priority(rule: Mapping[str, Any]) -> int:
        return int(rule.get("Priority") or 1)

    def policy(rule: Mapping[str, Any]) -> str:
        return str(rule.get("Policy") or "Accept").lower()

    accepts = [
        priority(rule)
        for rule in rules
        if policy(rule) == "accept" and (net := source(rule)) is not None and network.subnet_of(net)
    ]
    if not accepts:
        return False
    return not any(
        policy(rule) == "drop"
        and priority(rule) <= min(accepts)
        and (net := source(rule)) is not None
        and network.overlaps(net)
        for rule in rules
    )


def _ipv4(text: str) -> ipaddress.IPv4Network | None:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    return network if isinstance(network, ipaddress.IPv4Network) else None


def check_instance_types(r: Reader) -> str:
    """The scaling configuration's instance types have enough ENIs (F-ECS-2) and jumbo frames
    (F-ECS-3: Geneve adds 68 bytes, seed 002 prerequisites)."""
    config = scaling_configuration(r)
    types = [str(t) for t in [config.get("InstanceType"), *_list(config, "InstanceTypes")] if t]
    types = sorted(set(types))
    if not types:
        raise Failed(
            f"scaling configuration {config.get('ScalingConfigurationId')} names no instance type",
            "set the scaling configuration's instance type",
        )
    body = r.get("ecs", "DescribeInstanceTypes", {"InstanceTypes": types[:10]})
    known = {str(t.get("InstanceTypeId")): t for t in _list(body, "InstanceTypes", "InstanceType")}
    problems = []
    saw = []
    for name in types:
        info = known.get(name)
        if info is None:
            problems.append(f"{name}: unknown to DescribeInstanceTypes")
            continue
        enis, jumbo = int(info.get("EniQuantity") or 0), info.get("JumboFrameSupport") is True
        saw.append(f"{name}: {enis} ENIs, jumbo frames {'yes' if jumbo else 'no'}")
        if enis < ENIS_NEEDED:
            problems.append(f"{name} has {enis} ENIs, {ENIS_NEEDED} needed")
        if not jumbo:
            problems.append(f"{name} does not support jumbo frames")
    if problems:
        raise Failed(
            "; ".join(saw + problems),
            f"use an instance type with EniQuantity >= {ENIS_NEEDED} and JumboFrameSupport (ECS"
            " 'Instance families that support jumbo frames'), and enable jumbo frames on the instances",
        )
    return "; ".join(saw)


def check_hooks(r: Reader) -> str:
    """The scaling group's hooks exist for both transitions and notify the default event bus
    (F-ESS-2, F-ESS-3), as ``gwlb-fleet setup`` makes them."""
    s = r.settings
    if not s.account_id:
        raise Failed("ACCOUNT_ID is not set", "set ACCOUNT_ID to the main account's id (F-ESS-3)")
    want = eventbus_arn(s.region, s.account_id)
    hooks = list(
        r.numbered(
            "ess",
            "DescribeLifecycleHooks",
            {"ScalingGroupId": s.scaling_group_id},
            lambda body: _list(body, "LifecycleHooks"),
        )
    )
    by_name = {str(h.get("LifecycleHookName")): h for h in hooks}
    problems, saw = [], []
    for hook in plan.hooks(s):
        found = by_name.get(hook.name)
        if found is None:
            problems.append(f"{hook.name} missing")
            continue
        arn = str(found.get("NotificationArn") or "")
        saw.append(f"{hook.name} {found.get('LifecycleTransition')} -> {arn or 'no NotificationArn'}")
        if found.get("LifecycleTransition") != hook.transition:
            problems.append(f"{hook.name} is for {found.get('LifecycleTransition')}, not {hook.transition}")
        if arn != want:
            problems.append(f"{hook.name} notifies {arn or 'nothing'}, not {want}")
    if problems:
        raise Failed(
            "; ".join(saw + problems),
            f"run `gwlb-fleet setup`: it creates or modifies the hooks with NotificationArn {want}",
        )
    return "; ".join(saw)


def check_alarm_rules(r: Reader) -> str:
    """Each alarm rule exists (F-CMS-16) and pushes to its MNS queue (F-CMS-8; either spelling of
    the target ARN, F-CMS-7); an operator's rule, which has no queue, notifies the contact group
    (its ContactGroups, F-CMS-16)."""
    s = r.settings
    if not s.account_id:
        raise Failed("ACCOUNT_ID is not set", "set ACCOUNT_ID to the main account's id (F-CMS-7)")
    problems, saw = [], []
    for alarm in plan.alarms(s):
        body = r.get("cms", "DescribeMetricRuleList", {"RuleIds": alarm.rule_id})
        found = [a for a in _list(body, "Alarms", "Alarm") if a.get("RuleId") == alarm.rule_id]
        if not found:
            problems.append(f"rule {alarm.rule_id} missing")
            continue
        if not alarm.queue:
            contacts = [c.strip() for c in str(found[0].get("ContactGroups") or "").split(",") if c.strip()]
            saw.append(f"{alarm.rule_id} -> contact groups {contacts}")
            if s.alarm_contact_group not in contacts:
                problems.append(f"{alarm.rule_id} does not notify contact group {s.alarm_contact_group}")
            continue
        targets = _list(
            r.get("cms", "DescribeMetricRuleTargets", {"RuleId": alarm.rule_id}), "Targets", "Target"
        )
        arns = [str(t.get("Arn")) for t in targets]
        saw.append(f"{alarm.rule_id} -> {arns or 'no target'}")
        if not any(is_queue_target(arn, s.region, s.account_id, alarm.queue) for arn in arns):
            problems.append(f"{alarm.rule_id} does not push to queue {alarm.queue}")
    if problems:
        raise Failed(
            "; ".join(saw + problems),
            "run `gwlb-fleet setup`: it puts the rules, naming ALARM_CONTACT_GROUP, and their MNS queue"
            " targets (F-CMS-6)",
        )
    return "; ".join(saw)


def check_monitor_group(r: Reader) -> str:
    """The application group the scaling rules address and the agents publish into exists, by its
    exact name, once (DescribeMonitorGroups, F-CMS-11)."""
    s = r.settings
    found = [
        str(g.get("GroupId"))
        for g in r.numbered(
            "cms",
            "DescribeMonitorGroups",
            {"GroupName": s.monitor_group_name},
            lambda b: _list(b, "Resources", "Resource"),
        )
        if g.get("GroupName") == s.monitor_group_name
    ]
    if len(found) != 1:
        raise Failed(
            f"{len(found)} application groups named {s.monitor_group_name} ({', '.join(found) or 'none'})",
            "run `gwlb-fleet setup` (it creates the group); delete extra groups of that name (F-CMS-11)",
        )
    return f"application group {s.monitor_group_name}: {found[0]}"


def check_dead_letter_queue(r: Reader) -> str:
    """The queue the functions' async config sends failed events to exists (GetQueueAttributes,
    F-MNS-1; F-FC-6)."""
    queue = r.settings.dead_letter_queue
    if r.get("mns", "GetQueueAttributes", {"QueueName": queue}) is None:
        raise Failed(f"queue {queue} missing", "run `gwlb-fleet setup`: it creates the dead-letter queue")
    return f"queue {queue}: present"


def check_roles(r: Reader) -> str:
    """The service roles (F-RAM-2: F-CMS-13, F-ESS-9, F-FC-8, F-FCT-6) and the functions' own role,
    trusted by Function Compute (F-FC-8), exist (GetRole, F-RAM-1)."""
    names = [*SERVICE_ROLES, FC_ROLE, *EVENTBRIDGE_ROLES]
    missing = [name for name in names if r.get("ram", "GetRole", {"RoleName": name}) is None]
    own = r.settings.function_role_name
    role = r.get("ram", "GetRole", {"RoleName": own})
    problems = [f"{name} missing" for name in missing]
    if role is None:
        problems.append(f"{own} (the functions' role) missing")
    elif FC_PRINCIPAL not in _trusted_services(role):
        problems.append(f"{own} is not trusted by {FC_PRINCIPAL}")
    saw = f"{len(names) + 1 - len(problems)} of {len(names) + 1} roles as needed"
    if problems:
        raise Failed(
            f"{saw}: " + "; ".join(problems),
            "authorise the services in their consoles (CloudMonitor to MNS, Auto Scaling, Function"
            f" Compute, EventBridge) and create {own} trusted by {FC_PRINCIPAL} (docs/deploy.md)",
        )
    return f"{saw}: {', '.join([*names, own])}"


def _trusted_services(body: Mapping[str, Any]) -> set[str]:
    document = (body.get("Role") or {}).get("AssumeRolePolicyDocument") or "{}"
    try:
        policy = json.loads(document) if isinstance(document, str) else document
    except ValueError:
        return set()
    services: set[str] = set()
    for statement in policy.get("Statement") or []:
        service = ((statement.get("Principal") or {}).get("Service")) or []
        services.update([service] if isinstance(service, str) else service)
    return services


def check_secrets(r: Reader) -> str:
    """The secrets the settings name exist (DescribeSecret: never the value, F-KMS-6)."""
    s = r.settings
    named = {
        "PANORAMA_API_KEY_SECRET": s.panorama_api_key_secret,
        "BOOTSTRAP_AUTHCODES_SECRET": s.bootstrap_authcodes_secret,
        "LICENSING_CLIENT_SECRET_SECRET": s.licensing_client_secret_secret,
        "LICENSING_AUTH_CODE_SECRET": s.licensing_auth_code_secret,
        "PANLOGS_TOKEN_SECRET": s.panlogs_token_secret,
    }
    problems = []
    if s.appliance_kind == "vmseries" and not s.panorama_api_key_secret:
        problems.append("PANORAMA_API_KEY_SECRET is not set")
    present = []
    for variable, name in named.items():
        if not name:
            continue
        if r.get("kms", "DescribeSecret", {"SecretName": name}) is None:
            problems.append(f"{name} ({variable}) missing")
        else:
            present.append(name)
    if problems:
        variables = [plan.secret_variable(v) for v, name in named.items() if name and name not in present]
        raise Failed(
            f"present: {present or 'none'}; " + "; ".join(problems),
            "run `gwlb-fleet setup` with each missing secret's value in "
            + (", ".join(f"${v}" for v in variables) or "its GWLB_SETUP_SECRET_* variable")
            + ", or create it in KMS Secrets Manager by that name (CreateSecret, F-KMS-2; docs/deploy.md)",
        )
    return f"present: {present}"


CHECKS: tuple[tuple[str, Callable[[Reader], str]], ...] = (
    ("gwlb-endpoint-zones", check_endpoint_zones),
    ("route-tables", check_routes),
    ("security-groups", check_security_groups),
    ("instance-types", check_instance_types),
    ("lifecycle-hooks", check_hooks),
    ("alarm-rules", check_alarm_rules),
    ("monitor-group", check_monitor_group),
    ("dead-letter-queue", check_dead_letter_queue),
    ("ram-roles", check_roles),
    ("secrets", check_secrets),
)


def run(settings: Settings, apis: Mapping[str, Api]) -> list[Result]:
    reader = Reader(apis, settings)
    results = []
    for name, check in CHECKS:
        try:
            results.append(Result(name, True, check(reader)))
        except Failed as failed:
            results.append(Result(name, False, failed.saw, failed.fix))
        except Unreachable as exc:
            results.append(Result(name, False, f"could not look: {exc}", error=True))
    return results


def exit_status(results: list[Result]) -> int:
    if any(r.error for r in results):
        return EXIT_ERROR
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def apis(settings: Settings) -> dict[str, Api]:
    """The real describe calls, with the deployer's credentials from the settings."""
    from gwlb_fleet.alibaba import cms, ecs, ess, gwlb, kms, mns, privatelink, ram, vpc

    return {
        "gwlb": gwlb.preflight_api(settings),
        "privatelink": privatelink.preflight_api(settings),
        "vpc": vpc.preflight_api(settings),
        "ecs": ecs.preflight_api(settings),
        "ess": ess.preflight_api(settings),
        "cms": cms.setup_api(settings),  # set-up's own read-backs: F-CMS-8, F-CMS-16
        "ram": ram.setup_api(settings),  # GetRole, F-RAM-1
        "kms": kms.preflight_api(settings),
        "mns": mns.setup_api(settings),  # GetQueueAttributes only: F-MNS-1
    }
