"""The L3/L4 rule stage and its policy file.

Policy file (TOML)::

    default_action = "deny"                 # allow | deny
    internal_cidrs = ["198.18.2.0/24"]      # the business VPC: gives flows a direction

    [[rules]]
    id = "web-in"
    action = "allow"
    direction = "inbound"                   # inbound | outbound | internal | any (default)
    protocol = "tcp"                        # tcp | udp | icmp | sctp | any | a number
    src = ["0.0.0.0/0"]                     # default: anywhere
    dst = ["198.18.2.0/24"]
    dst_ports = [80, "8000-8099"]           # default: any port; ports never match ICMP

Rules are tried in file order; the first that matches decides. Rules see the flow as its
initiator sent it, so a reply is allowed or denied with the request that opened the flow.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gwlb_agent.inspection import FlowFacts, Verdict
from gwlb_fleet.sls.flowrecord import Direction

PROTOCOLS = {"any": None, "icmp": 1, "tcp": 6, "udp": 17, "sctp": 132}


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the field."""


PortSpec = int | str


class RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    action: Literal["allow", "deny"]
    direction: Literal["inbound", "outbound", "internal", "any"] = "any"
    protocol: str | int = "any"
    src: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"])
    dst: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"])
    src_ports: list[PortSpec] = Field(default_factory=list)
    dst_ports: list[PortSpec] = Field(default_factory=list)

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, value: str | int) -> str | int:
        if isinstance(value, int):
            if not 0 <= value <= 255:
                raise ValueError(f"protocol number {value} is not 0-255")
        elif value.lower() not in PROTOCOLS:
            raise ValueError(f"protocol {value!r} is not one of {sorted(PROTOCOLS)} or a number")
        return value

    @field_validator("src", "dst", "src_ports", "dst_ports")
    @classmethod
    def _parseable(cls, values: list[str | int], info: object) -> list[str | int]:
        field_name = getattr(info, "field_name", "")
        for value in values:
            if field_name.endswith("ports"):
                _port_range(value)
            else:
                _network(str(value))
        return values


class PolicyModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_action: Literal["allow", "deny"] = "deny"
    internal_cidrs: list[str] = Field(default_factory=list)
    rules: list[RuleModel] = Field(default_factory=list)

    @field_validator("internal_cidrs")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            _network(value)
        return values


def _network(text: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text, strict=False)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IPv4 address or CIDR: {exc}") from None


def _port_range(spec: int | str) -> tuple[int, int]:
    text = str(spec)
    low_text, _, high_text = text.partition("-")
    try:
        low = int(low_text)
        high = int(high_text) if high_text else low
    except ValueError:
        raise ValueError(f"{spec!r} is not a port or a range like 8000-8099") from None
    if not 0 <= low <= high <= 65535:
        raise ValueError(f"{spec!r} is not a port range within 0-65535")
    return low, high


# --- compiled form: plain ints, so that a decision is a few comparisons ----------------------

Networks = tuple[tuple[int, int], ...]  # (network, mask)
Ports = tuple[tuple[int, int], ...]  # inclusive ranges; empty = any


def _compile_networks(texts: list[str]) -> Networks:
    nets = [_network(text) for text in texts]
    return tuple((int(n.network_address), int(n.netmask)) for n in nets)


def _in(networks: Networks, address: int) -> bool:
    return any(address & mask == net for net, mask in networks)


def _port_in(ports: Ports, port: int) -> bool:
    return any(low <= port <= high for low, high in ports)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    allow: bool
    direction: str
    protocol: int | None
    src: Networks
    dst: Networks
    src_ports: Ports
    dst_ports: Ports

    def matches(self, facts: FlowFacts) -> bool:
        if self.protocol is not None and facts.protocol != self.protocol:
            return False
        if self.direction != "any" and facts.direction != self.direction:
            return False
        if not (_in(self.src, facts.src_ip) and _in(self.dst, facts.dst_ip)):
            return False
        if self.src_ports or self.dst_ports:
            if not facts.has_ports:
                return False
            if self.src_ports and not _port_in(self.src_ports, facts.src_port):
                return False
            if self.dst_ports and not _port_in(self.dst_ports, facts.dst_port):
                return False
        return True


class Policy:
    """A loaded policy: the rules, the default, and the networks that give flows a direction."""

    def __init__(self, model: PolicyModel, source: str = "<memory>") -> None:
        self.source = source
        self.default_allow = model.default_action == "allow"
        self.internal = _compile_networks(model.internal_cidrs)
        self.rules = tuple(_compile_rule(rule) for rule in model.rules)
        if not self.internal and any(rule.direction != "any" for rule in self.rules):
            raise PolicyError(f"{source}: rules with a direction need internal_cidrs")

    def direction(self, src_ip: int, dst_ip: int) -> Direction:
        if not self.internal:
            return "unknown"
        src_in, dst_in = _in(self.internal, src_ip), _in(self.internal, dst_ip)
        if src_in and dst_in:
            return "internal"
        if src_in:
            return "outbound"
        if dst_in:
            return "inbound"
        return "unknown"


def _compile_rule(rule: RuleModel) -> Rule:
    protocol = rule.protocol if isinstance(rule.protocol, int) else PROTOCOLS[rule.protocol.lower()]
    return Rule(
        id=rule.id,
        allow=rule.action == "allow",
        direction=rule.direction,
        protocol=protocol,
        src=_compile_networks(rule.src),
        dst=_compile_networks(rule.dst),
        src_ports=tuple(_port_range(p) for p in rule.src_ports),
        dst_ports=tuple(_port_range(p) for p in rule.dst_ports),
    )


class RuleStage:
    """The L3/L4 firewall stage: first matching rule, else the policy's default action."""

    name = "l3l4"

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._default = Verdict(allow=policy.default_allow, rule="default", stage=self.name)

    def decide(self, facts: FlowFacts) -> Verdict:
        for rule in self.policy.rules:
            if rule.matches(facts):
                return Verdict(allow=rule.allow, rule=rule.id, stage=self.name)
        return self._default


def load_policy(path: str | Path) -> Policy:
    """Read and compile a policy file; PolicyError names the file and what is wrong."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from None
    return policy_from_dict(data, source=str(path))


def policy_from_dict(data: dict[str, object], source: str = "<memory>") -> Policy:
    try:
        model = PolicyModel.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"{source}: {_describe(exc)}") from None
    return Policy(model, source=source)


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)
