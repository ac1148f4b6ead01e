"""The lab's account as ``gwlb-fleet preflight`` reads it: the GWLB, its zones and vSwitches, the
endpoint service and GWLB endpoints of a business VPC with the routes to them, the appliances'
security group and instance type, and the roles an account has before set-up. The values come from
the lab's own topology (gwlb_lab.cloud.config: the data network, the GWLB's address, the zones, the
health-check port the emulator probes), so that preflight passes on the lab's world and fails when
one piece is broken.

The lab's data network is one /24; a GWLB has one vSwitch per zone, so the describe world splits it
into a /25 per zone (the GWLB's address, 198.19.0.1, is in the first).
"""

from __future__ import annotations

import ipaddress

from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.alibaba.fakes.vpc import FakeRouteTable
from gwlb_fleet.alibaba.ram import SERVICE_ROLES
from gwlb_fleet.deploy.preflight import EVENTBRIDGE_ROLES, FC_PRINCIPAL, FC_ROLE
from gwlb_fleet.geneve import GENEVE_PORT
from gwlb_lab.cloud.config import AGENT_HEALTH_PORT, DATA_NETWORK, GWLB_ADDRESS, FleetPlan

GWLB_ID = "gwlb-lab"
SECURITY_VPC = "vpc-lab-security"
BUSINESS_VPC = "vpc-lab-business"
APPLIANCE_GROUP = "sg-lab-appliances"
INSTANCE_TYPE = "ecs.g7.xlarge"  # 3 ENIs, jumbo frames (F-ECS-2, F-ECS-3)
ENDPOINT_SERVICE = "epsrv-lab-gwlb"
FUNCTION_ROLE = "gwlb-fleet-functions"  # Settings.function_role_name's default (template.yml vars.roleName)


def seed_account(cloud: FakeCloud, plan: FleetPlan) -> None:
    """What the lab's account has before ``gwlb-fleet setup``, besides the fleet (FakeCloud.seed_fleet)."""
    zones = list(plan.zones)
    halves = list(ipaddress.IPv4Network(DATA_NETWORK).subnets(prefixlen_diff=1))
    gwlb_switches = {zone: f"vsw-lab-gwlb-{zone[-1]}" for zone in zones}
    address: dict[str, str] = {}
    for number, zone in enumerate(zones):
        cidr = halves[number % len(halves)]
        cloud.vpc.vswitches[gwlb_switches[zone]] = {
            "VSwitchId": gwlb_switches[zone],
            "VpcId": SECURITY_VPC,
            "ZoneId": zone,
            "CidrBlock": str(cidr),
        }
        address[zone] = GWLB_ADDRESS if number == 0 else str(cidr.network_address + 1)
    cloud.gwlb.load_balancers[GWLB_ID] = {  # F-GWLB-7
        "LoadBalancerId": GWLB_ID,
        "LoadBalancerName": GWLB_ID,
        "LoadBalancerStatus": "Active",
        "VpcId": SECURITY_VPC,
        "ZoneMappings": [
            {
                "ZoneId": zone,
                "VSwitchId": gwlb_switches[zone],
                "LoadBalancerAddresses": [
                    {"EniId": f"eni-lab-gwlb-{zone[-1]}", "PrivateIpv4Address": address[zone]}
                ],
            }
            for zone in zones
        ],
    }
    cloud.gwlb.server_group_attributes[plan.server_group_id] = {  # F-GWLB-9: what the emulator probes
        "VpcId": SECURITY_VPC,
        "RelatedLoadBalancerIds": [GWLB_ID],
        "HealthCheckConfig": {
            "HealthCheckEnabled": True,
            "HealthCheckProtocol": "HTTP",
            "HealthCheckConnectPort": AGENT_HEALTH_PORT,
            "HealthCheckPath": "/health",
        },
    }
    cloud.ecs.security_groups[APPLIANCE_GROUP] = [  # F-ECS-4: Geneve and the health check
        _ingress("UDP", GENEVE_PORT, DATA_NETWORK),
        _ingress("TCP", AGENT_HEALTH_PORT, DATA_NETWORK),
    ]
    cloud.ecs.instance_types[INSTANCE_TYPE] = {
        "InstanceTypeId": INSTANCE_TYPE,
        "EniQuantity": 3,
        "EniTotalQuantity": 3,
        "JumboFrameSupport": True,
    }
    group = cloud.ess.groups[plan.scaling_group_id]
    cloud.ess.configuration_attributes[group.scaling_configuration_id] = {  # F-ESS-11
        "InstanceType": INSTANCE_TYPE,
        "SecurityGroupIds": [APPLIANCE_GROUP],
    }
    _business_vpc(cloud, plan, zones)
    cloud.ram.roles.update([*SERVICE_ROLES, FC_ROLE, *EVENTBRIDGE_ROLES, FUNCTION_ROLE])  # F-RAM-2
    cloud.ram.trusted_by[FUNCTION_ROLE] = FC_PRINCIPAL


def _business_vpc(cloud: FakeCloud, plan: FleetPlan, zones: list[str]) -> None:
    """The endpoint service over the GWLB, a GWLB endpoint per zone, and the business subnets'
    route tables sending everything to their zone's endpoint (F-VPC-1, F-VPC-2, F-VPC-4)."""
    name = f"com.aliyuncs.privatelink.{plan.region}.{ENDPOINT_SERVICE}"
    cloud.privatelink.services[ENDPOINT_SERVICE] = {
        "ServiceId": ENDPOINT_SERVICE,
        "ServiceName": name,
        "ServiceType": "GatewayLoadBalancer",
        "ServiceResourceType": "gwlb",
        "ResourceId": GWLB_ID,
        "ServiceStatus": "Active",
    }
    for number, zone in enumerate(zones):
        endpoint = f"ep-lab-{zone[-1]}"
        cloud.privatelink.endpoints[endpoint] = {
            "EndpointId": endpoint,
            "EndpointType": "GatewayLoadBalancer",
            "VpcId": BUSINESS_VPC,
            "ServiceName": name,
            "ServiceId": ENDPOINT_SERVICE,
            "EndpointStatus": "Active",
            "ConnectionStatus": "Connected",
        }
        cloud.privatelink.zones[endpoint] = [
            {
                "ZoneId": zone,
                "VSwitchId": f"vsw-lab-gwlbe-{zone[-1]}",
                "EniId": f"eni-lab-gwlbe-{zone[-1]}",
                "EniIp": f"192.168.{100 + number}.10",
                "ZoneStatus": "Connected",
            }
        ]
        table = f"vtb-lab-business-{zone[-1]}"
        cloud.vpc.route_tables[table] = FakeRouteTable(
            table,
            BUSINESS_VPC,
            vswitch_ids=[f"vsw-lab-business-{zone[-1]}"],
            entries=[
                {
                    "RouteEntryId": f"rte-lab-{zone[-1]}",
                    "RouteTableId": table,
                    "DestinationCidrBlock": "0.0.0.0/0",
                    "Type": "Custom",
                    "Status": "Available",
                    "NextHops": {
                        "NextHop": [{"NextHopType": "GatewayLoadBalancerEndpoint", "NextHopId": endpoint}]
                    },
                }
            ],
        )


def _ingress(protocol: str, port: int, source: str) -> dict[str, object]:
    return {
        "Direction": "ingress",
        "IpProtocol": protocol,
        "PortRange": f"{port}/{port}",
        "SourceCidrIp": source,
        "Policy": "Accept",
        "Priority": "1",
    }
