from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from gwlb_agent.inspection import Chain, FlowFacts, Verdict
from gwlb_agent.policy import PolicyError, RuleStage, load_policy, policy_from_dict


def facts(
    src: str = "203.0.113.5",
    dst: str = "198.18.2.2",
    protocol: int = 6,
    sport: int = 40000,
    dport: int = 80,
    policy: object = None,
) -> FlowFacts:
    s, d = int(ipaddress.IPv4Address(src)), int(ipaddress.IPv4Address(dst))
    direction = policy.direction(s, d) if policy is not None else "unknown"  # type: ignore[attr-defined]
    return FlowFacts(protocol, s, d, sport, dport, protocol in (6, 17, 132), direction)


POLICY = {
    "default_action": "deny",
    "internal_cidrs": ["198.18.2.0/24"],
    "rules": [
        {
            "id": "ssh-from-admin",
            "action": "allow",
            "protocol": "tcp",
            "src": ["192.0.2.0/24"],
            "dst_ports": [22],
        },
        {"id": "no-ssh", "action": "deny", "protocol": "tcp", "dst_ports": [22]},
        {
            "id": "web-in",
            "action": "allow",
            "direction": "inbound",
            "protocol": "tcp",
            "dst_ports": [80, "8000-8099"],
        },
        {"id": "dns-out", "action": "allow", "direction": "outbound", "protocol": 17, "dst_ports": [53]},
        {"id": "ping", "action": "allow", "protocol": "icmp"},
        {"id": "ports-never-match-icmp", "action": "deny", "dst_ports": ["0-65535"]},
    ],
}


@pytest.fixture
def stage() -> RuleStage:
    return RuleStage(policy_from_dict(POLICY))


@pytest.mark.parametrize(
    ("kwargs", "rule", "allow"),
    [
        ({"src": "192.0.2.9", "dport": 22}, "ssh-from-admin", True),
        ({"src": "203.0.113.9", "dport": 22}, "no-ssh", False),
        ({"dport": 80}, "web-in", True),
        ({"dport": 8050}, "web-in", True),
        ({"dport": 8100}, "ports-never-match-icmp", False),
        ({"src": "198.18.2.2", "dst": "203.0.113.5", "protocol": 17, "dport": 53}, "dns-out", True),
        ({"protocol": 17, "dport": 53}, "ports-never-match-icmp", False),  # inbound DNS: not allowed
        ({"protocol": 1, "sport": 7, "dport": 7}, "ping", True),
        ({"protocol": 47, "sport": 0, "dport": 0}, "default", False),
    ],
)
def test_first_matching_rule_decides(stage: RuleStage, kwargs: dict, rule: str, allow: bool) -> None:
    verdict = stage.decide(facts(policy=stage.policy, **kwargs))
    assert (verdict.rule, verdict.allow) == (rule, allow)


def test_direction_comes_from_the_internal_networks() -> None:
    policy = policy_from_dict(POLICY)
    ip = lambda a: int(ipaddress.IPv4Address(a))  # noqa: E731
    assert policy.direction(ip("203.0.113.1"), ip("198.18.2.2")) == "inbound"
    assert policy.direction(ip("198.18.2.2"), ip("203.0.113.1")) == "outbound"
    assert policy.direction(ip("198.18.2.2"), ip("198.18.2.3")) == "internal"
    assert policy.direction(ip("203.0.113.1"), ip("203.0.113.2")) == "unknown"


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"default_action": "maybe"}, "default_action"),
        ({"rules": [{"id": "x", "action": "allow", "src": ["10.0.0.0/33"]}]}, "rules.0.src"),
        ({"rules": [{"id": "x", "action": "allow", "dst_ports": ["90-80"]}]}, "rules.0.dst_ports"),
        ({"rules": [{"id": "x", "action": "allow", "protocol": "tpc"}]}, "rules.0.protocol"),
        ({"rules": [{"id": "x", "action": "allow", "colour": "red"}]}, "rules.0.colour"),
        ({"rules": [{"action": "allow"}]}, "rules.0.id"),
        ({"internal_cidrs": ["not-a-net"]}, "internal_cidrs"),
    ],
)
def test_bad_policies_name_the_field(data: dict, names: str) -> None:
    with pytest.raises(PolicyError) as err:
        policy_from_dict(data, source="p.toml")
    assert names in str(err.value) and "p.toml" in str(err.value)


def test_direction_rules_need_internal_networks() -> None:
    with pytest.raises(PolicyError, match="internal_cidrs"):
        policy_from_dict({"rules": [{"id": "x", "action": "allow", "direction": "inbound"}]})


def test_policy_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rules = [")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(bad)
    good = tmp_path / "good.toml"
    good.write_text('default_action = "allow"\n[[rules]]\nid = "a"\naction = "deny"\ndst_ports = [22]\n')
    assert len(load_policy(good).rules) == 1


class _Deny:
    name = "dlp"

    def decide(self, facts: FlowFacts) -> Verdict | None:
        return Verdict(False, "secret-data", self.name) if facts.dst_port == 8080 else None


def test_chain_first_deny_wins_and_allow_needs_every_stage() -> None:
    chain = Chain([RuleStage(policy_from_dict({"default_action": "allow"})), _Deny()])
    assert chain.decide(facts(dport=80)).allow
    denied = chain.decide(facts(dport=8080))
    assert (denied.allow, denied.stage, denied.rule) == (False, "dlp", "secret-data")
    assert Chain([]).decide(facts()).allow
