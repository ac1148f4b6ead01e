from __future__ import annotations

from pathlib import Path

import pytest

from gwlb_agent.cli import EX_CONFIG, main
from gwlb_agent.config import ConfigError, load_config, render_toml


def test_flags_over_environment_over_file_over_defaults(tmp_path: Path) -> None:
    config_file = tmp_path / "agent.toml"
    config_file.write_text(
        'gwlb_cidrs = ["198.18.100.0/24"]\nlisten = "198.18.0.2:6081"\n'
        'health = "198.18.0.2:9000"\n[flows]\nidle_timeout = 90\n'
    )
    env = {
        "GWLB_AGENT_HEALTH": "198.18.0.2:9100",
        "GWLB_AGENT_FLOWS__TCP_IDLE_TIMEOUT": "300",
        "GWLB_AGENT_LISTEN": "198.18.0.3:6081",
    }
    config = load_config(config_file, {"listen": "198.18.0.4:6081"}, env)
    assert config.listen == "198.18.0.4:6081"  # flag
    assert config.health == "198.18.0.2:9100"  # environment
    assert config.flows.tcp_idle_timeout == 300  # environment, nested
    assert config.flows.idle_timeout == 90  # file
    assert config.flows.export_interval == 60  # default
    assert [str(n) for n in config.gwlb_cidrs] == ["198.18.100.0/24"]


def test_environment_lists_are_comma_separated() -> None:
    config = load_config(None, {}, {"GWLB_AGENT_GWLB_CIDRS": "198.18.100.1/32, 198.18.101.0/24"})
    assert len(config.gwlb_cidrs) == 2


def test_missing_gwlb_cidrs_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, {}, {})
    assert "gwlb_cidrs" in str(err.value) and "required" in str(err.value)


@pytest.mark.parametrize(
    ("flags", "env", "field", "origin"),
    [
        ({"listen": "nowhere"}, {}, "listen", "command line"),
        ({}, {"GWLB_AGENT_BATCH_SIZE": "0"}, "batch_size", "environment GWLB_AGENT_BATCH_SIZE"),
        ({}, {"GWLB_AGENT_GWLB_CIDRS": "300.1.1.1/32"}, "gwlb_cidrs", "environment"),
        ({}, {"GWLB_AGENT_FLOWS__COLOUR": "red"}, "flows.colour", "environment"),
    ],
)
def test_bad_values_name_field_and_origin(flags: dict, env: dict, field: str, origin: str) -> None:
    env = {"GWLB_AGENT_GWLB_CIDRS": "198.18.100.1/32", **env}
    with pytest.raises(ConfigError) as err:
        load_config(None, flags, env)
    assert field in str(err.value) and origin in str(err.value)


def test_bad_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text("gwlb_cidrs = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, {}, {})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", {}, {})


def test_config_show_output_is_a_loadable_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GWLB_AGENT_STALL_AFTER", "0.25")
    assert main(["config", "show", "--gwlb-cidr", "198.18.100.1/32", "--policy", "/p.toml"]) == 0
    shown = capsys.readouterr().out
    assert "stall_after = 0.25" in shown and 'policy = "/p.toml"' in shown
    saved = tmp_path / "effective.toml"
    saved.write_text(shown)
    assert render_toml(load_config(saved, {}, {})) == shown


def test_cli_exits_78_on_bad_config(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GWLB_AGENT_GWLB_CIDRS", raising=False)
    assert main(["run", "--config", "/nonexistent/agent.toml"]) == EX_CONFIG
    assert "/nonexistent/agent.toml" in capsys.readouterr().err
    assert main(["config", "show", "--gwlb-cidr", "banana"]) == EX_CONFIG
    assert "gwlb_cidrs" in capsys.readouterr().err


def test_check_policy_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text('default_action = "deny"\n[[rules]]\nid = "a"\naction = "allow"\n')
    assert main(["check-policy", str(policy)]) == 0
    assert "1 rules" in capsys.readouterr().out
    policy.write_text('default_action = "perhaps"\n')
    assert main(["check-policy", str(policy)]) == EX_CONFIG
    assert "default_action" in capsys.readouterr().err


def test_flow_log_section_and_the_flag_that_sets_its_path(tmp_path: Path) -> None:
    env = {"GWLB_AGENT_GWLB_CIDRS": "198.18.100.1/32", "GWLB_AGENT_FLOW_LOG__SLS_ENDPOINT": "127.0.0.1:9",
           "GWLB_AGENT_FLOW_LOG__SLS_PROJECT": "p", "GWLB_AGENT_FLOW_LOG__ACCESS_KEY_ID": "AKID",
           "GWLB_AGENT_FLOW_LOG__ACCESS_KEY_SECRET": "s3cr3t-value"}
    config = load_config(None, {"flow_log": {"path": str(tmp_path / "f.jsonl")}}, env)
    assert config.flow_log.path == tmp_path / "f.jsonl"
    assert config.flow_log.sls_project == "p"
    shown = render_toml(config)
    assert "s3cr3t-value" not in shown and "# access_key_secret is set (not shown)" in shown
    assert "[flow_log]" in shown


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sls_endpoint": "e"}, "sls_project is required"),
        ({"sls_endpoint": "e", "sls_project": "p"}, "ram_role, or access_key_id and access_key_secret"),
        ({"spool_max_bytes": 1024}, "spool_max_bytes"),
        ({"batch_bytes": 6 << 20}, "batch_bytes"),
    ],
)
def test_flow_log_settings_are_checked(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, {"flow_log": settings}, {"GWLB_AGENT_GWLB_CIDRS": "198.18.100.1/32"})
    assert message in str(err.value)


def test_cloudmonitor_needs_credentials_when_on() -> None:
    env = {"GWLB_AGENT_GWLB_CIDRS": "198.18.100.1/32", "GWLB_AGENT_CLOUDMONITOR__REGION": "cn-hangzhou"}
    with pytest.raises(ConfigError, match="ram_role"):
        load_config(None, {}, env)
    config = load_config(None, {}, {**env, "GWLB_AGENT_CLOUDMONITOR__RAM_ROLE": "gwlb-agent"})
    assert config.cloudmonitor.interval == 60


def test_cloudmonitor_group_id_from_file_or_environment() -> None:
    env = {
        "GWLB_AGENT_GWLB_CIDRS": "198.18.100.1/32",
        "GWLB_AGENT_CLOUDMONITOR__REGION": "cn-hangzhou",
        "GWLB_AGENT_CLOUDMONITOR__RAM_ROLE": "gwlb-agent",
    }
    assert load_config(None, {}, env).cloudmonitor.group_id == 0
    assert load_config(None, {"cloudmonitor": {"group_id": 3000001}}, env).cloudmonitor.group_id == 3000001
    from_env = load_config(None, {}, {**env, "GWLB_AGENT_CLOUDMONITOR__GROUP_ID": "42"})
    assert from_env.cloudmonitor.group_id == 42
    with pytest.raises(ConfigError, match="group_id"):
        load_config(None, {}, {**env, "GWLB_AGENT_CLOUDMONITOR__GROUP_ID": "-1"})
