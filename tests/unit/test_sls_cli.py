"""The SLS tools' shared options (time arguments, settings from the environment) and the audit table."""

from __future__ import annotations

import argparse

import pytest

from gwlb_fleet.sls import cli as sls_cli
from gwlb_fleet.sls.queries import QUERIES, display_value, render_table

NOW = 1_700_000_000.7


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("now", 1_700_000_000),
        ("1699990000", 1_699_990_000),
        ("1699990000.9", 1_699_990_000),
        ("-15m", 1_700_000_000 - 900),
        ("-1h", 1_700_000_000 - 3600),
        ("-1.5h", 1_700_000_000 - 5400),
        ("-7d", 1_700_000_000 - 7 * 86400),
        ("2023-11-14T22:13:20Z", 1_700_000_000),
        ("2023-11-14T22:13:20", 1_700_000_000),  # UTC unless said otherwise
        ("2023-11-15T06:13:20+08:00", 1_700_000_000),
        ("2023-11-14", 1_699_920_000),
    ],
)
def test_parse_time(text: str, epoch: int) -> None:
    assert sls_cli.parse_time(text, NOW) == epoch


@pytest.mark.parametrize("text", ["yesterday", "-1y", "1h", ""])
def test_bad_times(text: str) -> None:
    with pytest.raises(sls_cli.UsageError):
        sls_cli.parse_time(text, NOW)


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"endpoint": None, "project": None, "timeout": 30.0, **kw})


def test_settings_come_from_the_environment_and_flags() -> None:
    env = {
        "SLS_ENDPOINT": "cn-hangzhou.log.aliyuncs.com",
        "SLS_PROJECT": "p",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "id",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s3cret",
    }
    config = sls_cli.sls_config(_args(project="other"), env)
    assert (config.endpoint, config.project, config.access_key_id) == (
        "cn-hangzhou.log.aliyuncs.com",
        "other",
        "id",
    )
    assert config.access_key_secret is not None and config.access_key_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)
    role = sls_cli.sls_config(
        _args(), {**env, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "", "ALIBABA_CLOUD_ECS_METADATA": "fleet-role"}
    )
    assert role.ram_role == "fleet-role"
    for missing in ("SLS_ENDPOINT", "SLS_PROJECT", "ALIBABA_CLOUD_ACCESS_KEY_ID"):
        with pytest.raises(sls_cli.UsageError, match=missing):
            sls_cli.sls_config(_args(), {k: v for k, v in env.items() if k != missing})


def test_table_values_are_made_readable() -> None:
    q = QUERIES["conversations"]
    assert display_value(q, "protocol", "6") == "tcp"
    assert display_value(q, "protocol", "99") == "99"
    assert display_value(q, "first_seen", "1700000000.0") == "2023-11-14T22:13:20Z"
    assert display_value(q, "first_seen", "1.7000000005E9") == "2023-11-14T22:13:20.500Z"
    assert display_value(q, "bytes", "1.25E9") == "1250000000"  # how SLS writes large doubles
    assert display_value(q, "instance_id", "null") == "-"


def test_render_table_aligns_columns() -> None:
    q = QUERIES["denied"]
    rows = [
        {
            "rule": "no-ssh",
            "stage": "l3l4",
            "src_ip": "10.0.1.10",
            "dst_ip": "10.0.2.30",
            "dst_port": "22",
            "protocol": "6",
            "appliance_id": "a1",
            "flows": "12",
            "packets": "2",
            "first_seen": "1700000000",
            "last_seen": "1700000001",
        },
        {
            "rule": "default",
            "stage": "l3l4",
            "src_ip": "10.0.1.9",
            "dst_ip": "8.8.8.8",
            "dst_port": "53",
            "protocol": "17",
            "appliance_id": "a2",
            "flows": "3",
            "packets": "150",
            "first_seen": "1700000000",
            "last_seen": "1700000001",
            "extra": "x",
        },
    ]
    lines = render_table(q, rows).splitlines()
    assert lines[0].split() == [*q.columns, "extra"]
    assert len({line.index("l3l4") for line in lines[2:4]}) == 1  # text left-aligned
    flows_end = lines[0].index("flows") + len("flows")
    assert [line[:flows_end].split()[-1] for line in lines[2:4]] == ["12", "3"]  # numbers right-aligned
    assert lines[-1] == "(2 rows)"
    assert render_table(q, []).splitlines()[-1] == "(0 rows)"
