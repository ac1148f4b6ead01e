"""One Alibaba Cloud account in memory: the GWLB, ESS, ECS, CloudMonitor and FC fakes wired
together (one clock; ESS launches and releases instances in the ECS fake). The flows' functional
tests use it directly; the lab's local OpenAPI endpoint (lab/api) serves it to the real SDKs."""

from __future__ import annotations

from dataclasses import dataclass, field

from gwlb_fleet.alibaba.fakes.cms import FakeCms
from gwlb_fleet.alibaba.fakes.ecs import FakeEcs
from gwlb_fleet.alibaba.fakes.ess import FakeEss
from gwlb_fleet.alibaba.fakes.fc import FakeFc
from gwlb_fleet.alibaba.fakes.gwlb import FakeGwlb
from gwlb_fleet.alibaba.fakes.kms import FakeKms
from gwlb_fleet.alibaba.fakes.mns import FakeMns
from gwlb_fleet.alibaba.fakes.privatelink import FakePrivateLink
from gwlb_fleet.alibaba.fakes.ram import FakeRam
from gwlb_fleet.alibaba.fakes.vpc import FakeVpc
from gwlb_fleet.clock import Clock, FakeClock


@dataclass
class FakeCloud:
    clock: Clock = field(default_factory=FakeClock)
    gwlb: FakeGwlb = field(init=False)
    ess: FakeEss = field(init=False)
    ecs: FakeEcs = field(init=False)
    cms: FakeCms = field(init=False)
    fc: FakeFc = field(init=False)
    mns: FakeMns = field(init=False)
    ram: FakeRam = field(init=False)
    kms: FakeKms = field(init=False)
    vpc: FakeVpc = field(init=False)  # preflight's reads only
    privatelink: FakePrivateLink = field(init=False)  # preflight's reads only

    def __post_init__(self) -> None:
        self.ecs = FakeEcs(clock=self.clock)
        self.gwlb = FakeGwlb(clock=self.clock, ecs=self.ecs)  # Eni members are ECS's ENIs
        self.ess = FakeEss(clock=self.clock, ecs=self.ecs)
        self.cms = FakeCms(clock=self.clock)
        self.fc = FakeFc(clock=self.clock)
        self.mns = FakeMns(clock=self.clock)
        self.ram = FakeRam(clock=self.clock)
        self.kms = FakeKms(clock=self.clock)
        self.vpc = FakeVpc(clock=self.clock)
        self.privatelink = FakePrivateLink(clock=self.clock)

    def seed_fleet(
        self,
        scaling_group_id: str = "asg-fleet",
        server_group_id: str = "sgp-fleet",
        listener_id: str = "lsn-fleet",
        min_size: int = 0,
        max_size: int = 4,
        desired: int = 0,
        hook_timeout_s: int = 900,
        hooks: bool = True,
    ) -> None:
        """A fleet's cloud side: a scaling group with a scale-out and a scale-in hook, and a GWLB
        server group behind a listener."""
        self.gwlb.create_server_group(server_group_id, listener_id)
        self.gwlb.server_group_attributes.setdefault(  # F-GWLB-9: behind one GWLB
            server_group_id, {"RelatedLoadBalancerIds": [f"gwlb-{server_group_id}"]}
        )
        self.ess.create_group(scaling_group_id, min_size, max_size, desired)
        if hooks:  # without: gwlb-fleet setup makes them (gwlb_fleet.deploy)
            self.ess.add_hook(scaling_group_id, "SCALE_OUT", hook_timeout_s, "ABANDON")
            self.ess.add_hook(scaling_group_id, "SCALE_IN", hook_timeout_s, "CONTINUE")
