"""The shipped example config, policy and systemd unit stay usable."""

from __future__ import annotations

from pathlib import Path

from gwlb_agent.config import load_config
from gwlb_agent.policy import load_policy

AGENT = Path(__file__).resolve().parents[2] / "agent"


def test_example_config_and_policy_load() -> None:
    config = load_config(AGENT / "examples" / "agent.toml", {}, {})
    assert config.listen_address == ("10.0.1.20", 6081)
    assert load_policy(AGENT / "examples" / "policy.toml").rules


def test_systemd_unit_is_a_notify_service_with_capabilities_not_root() -> None:
    unit = (AGENT / "systemd" / "gwlb-agent.service").read_text()
    for line in ("Type=notify", "Restart=on-failure", "RestartPreventExitStatus=78",
                 "AmbientCapabilities=CAP_NET_RAW CAP_NET_BIND_SERVICE", "User=gwlb-agent",
                 "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in unit.splitlines(), line
