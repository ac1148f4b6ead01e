"""The control plane's settings from the environment (and, for the CLI, an env file)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gwlb_fleet.cli import SetupError, read_env_file
from gwlb_fleet.settings import Settings

FLEET = {
    "FLEET_REGION": "cn-hangzhou",
    "SCALING_GROUP_ID": "asg-1",
    "GWLB_SERVER_GROUP_ID": "sgp-1",
    "GWLB_LISTENER_ID": "lsn-1",
}


def test_the_first_source_that_names_a_variable_wins_whatever_its_case() -> None:
    settings = Settings.from_environ(
        {"scaling_group_id": "asg-env", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s3cret"}, FLEET
    )
    assert settings.scaling_group_id == "asg-env" and settings.region == "cn-hangzhou"
    assert "s3cret" not in repr(settings)  # a secret prints as stars


def test_credentials_are_taken_anew_and_nothing_else() -> None:
    """F-FC-2: the STS credentials FC replaces while an instance lives; the rest is read once."""
    first = Settings.from_environ({**FLEET, "ALIBABA_CLOUD_ACCESS_KEY_ID": "STS.one",
                                   "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s1",
                                   "ALIBABA_CLOUD_SECURITY_TOKEN": "t1"})
    same = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "STS.one", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s1",
            "ALIBABA_CLOUD_SECURITY_TOKEN": "t1", "SCALING_GROUP_ID": "asg-other"}
    assert first.with_credentials_from(same) is first
    rotated = first.with_credentials_from({"alibaba_cloud_access_key_id": "STS.two",
                                           "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s2",
                                           "ALIBABA_CLOUD_SECURITY_TOKEN": "t2",
                                           "SCALING_GROUP_ID": "asg-other"})
    assert rotated.credentials() == ("STS.two", "s2", "t2")
    assert rotated.scaling_group_id == first.scaling_group_id == "asg-1"
    assert first.with_credentials_from({}).credentials() == ("", "", "")


def test_a_missing_or_bad_variable_is_named() -> None:
    with pytest.raises(ValidationError, match="SCALING_GROUP_ID"):
        Settings.from_environ({k: v for k, v in FLEET.items() if k != "SCALING_GROUP_ID"})
    with pytest.raises(ValidationError, match="APPLIANCE_KIND"):
        Settings.from_environ({**FLEET, "APPLIANCE_KIND": "router"})


def test_an_env_file_reads_as_a_shell_would(tmp_path: Path) -> None:
    env = tmp_path / "fleet.env"
    env.write_text("# the example fleet\nexport FLEET_REGION=cn-beijing\nSCALING_GROUP_ID='asg 2'\n\n"
                   'PANORAMA_HOST="10.0.0.5"\n')
    assert read_env_file(env) == {"FLEET_REGION": "cn-beijing", "SCALING_GROUP_ID": "asg 2",
                                  "PANORAMA_HOST": "10.0.0.5"}
    env.write_text("FLEET_REGION=cn-beijing\nthis is not a setting\n")
    with pytest.raises(SetupError, match="line 2"):
        read_env_file(env)
