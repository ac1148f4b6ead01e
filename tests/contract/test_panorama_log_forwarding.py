"""Set-up's PAN-OS log forwarding through real pan-python (the PanoramaAdapter) against the lab's
Panorama over HTTPS: the XML API requests sent (``edit`` of our profiles, ``set`` of a rule's
logging, a partial commit, ``show`` to read back), a second run that changes nothing, the lab
refusing what PAN-OS refuses (unknown elements, misplaced xpaths) with the errors the adapter maps,
and the whole of ``gwlb-fleet setup`` / ``teardown`` with the token read from KMS."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from panos.panorama import PanoramaCommitAll

from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.deploy import cloud as deploy_cloud
from gwlb_fleet.deploy import panlogs, run
from gwlb_fleet.deploy.panlogs import LogForwardingFailed
from gwlb_fleet.errors import PermanentError
from gwlb_fleet.panos import xmlapi
from gwlb_fleet.panos.fakes import FakePanorama
from gwlb_fleet.panos.panorama import PanoramaAdapter
from gwlb_fleet.settings import Settings
from gwlb_lab.api import LocalOpenApi
from gwlb_lab.panorama import LocalPanorama
from tests.contract import fleet
from tests.contract.test_panorama_adapters import no_sleep, secrets_for, settings_for

pytestmark = pytest.mark.contract
TOKEN = "intake-token-0123456789"
LOG_SETTINGS = {
    "PANORAMA_TEMPLATE": "gwlb-template",
    "PANORAMA_TEMPLATE_STACK": "gwlb-stack",
    "PANORAMA_DEVICE_GROUP": "gwlb-fw",
    "PANLOGS_TOKEN_SECRET": "gwlb/intake-token",
    "PANLOGS_INTAKE_URL": "https://gwlb-intake-1.cn-hangzhou.fcapp.run",
}


@pytest.fixture
def fake() -> FakePanorama:
    return FakePanorama()


@pytest.fixture
def local(tmp_path: Path, fake: FakePanorama) -> Iterator[LocalPanorama]:
    with LocalPanorama(tmp_path / "certs", panorama=fake) as server:
        yield server


@pytest.fixture
def adapter(local: LocalPanorama) -> PanoramaAdapter:
    return PanoramaAdapter.from_settings(settings_for(local), secrets_for(local), sleep=no_sleep)


@pytest.fixture
def want(local: LocalPanorama) -> panlogs.LogForwarding:
    return panlogs.wanted(settings_for(local, **LOG_SETTINGS), TOKEN)


STACK = xmlapi.PushTarget("template-stack", "gwlb-stack")
GROUP = xmlapi.PushTarget("device-group", "gwlb-fw")


def deadline() -> Deadline:
    return Deadline.after(30, margin=0)


def sent(local: LocalPanorama) -> list[tuple[str, str, str]]:
    requests = [(r.type, r.action, r.xpath) for r in local.xml_api.requests]
    local.xml_api.requests.clear()
    return requests


def test_the_requests_setup_sends_and_a_second_run_changes_nothing(
    adapter: PanoramaAdapter, local: LocalPanorama, fake: FakePanorama, want: panlogs.LogForwarding
) -> None:
    panlogs.apply(adapter, want, deadline(), sleep=no_sleep)
    profile = xmlapi.http_profile_xpath("gwlb-template", want.profile.name)
    forwarding = xmlapi.forwarding_profile_xpath("gwlb-fw", want.forwarding.name)
    rules = xmlapi.security_rules_xpath("gwlb-fw")
    requests = sent(local)
    writes = [r for r in requests if r[0] == "config" and r[1] in ("edit", "set", "delete")]
    assert writes == [
        ("config", "edit", profile),
        ("config", "edit", forwarding),
        ("config", "set", f"{rules}/entry[@name='gwlb-allow-inspected']"),
        ("config", "set", f"{rules}/entry[@name='gwlb-deny-rest']"),
    ]
    assert ("commit", "partial", "") in requests  # F-PAN-1
    assert [r[2] for r in requests if r[1] == "show"] == [profile, forwarding, rules]
    stored = fake.running.http_profiles[("gwlb-template", want.profile.name)]
    assert xmlapi.HttpServerProfile.parse(ET.fromstring(stored)) == want.profile

    lines = panlogs.apply(adapter, want, deadline(), sleep=no_sleep)
    assert not [r for r in sent(local) if r[1] in ("edit", "set", "delete")]
    assert "panorama commit: nothing to commit" in lines


def test_the_adapter_reads_what_the_fake_holds(
    adapter: PanoramaAdapter, fake: FakePanorama, want: panlogs.LogForwarding
) -> None:
    panlogs.apply(fake, want, deadline(), sleep=no_sleep)
    for xpath in (
        xmlapi.http_profile_xpath("gwlb-template", want.profile.name),
        xmlapi.forwarding_profile_xpath("gwlb-fw", want.forwarding.name),
        xmlapi.security_rules_xpath("gwlb-fw"),
    ):
        for running in (False, True):
            ours = (adapter.config_show if running else adapter.config_get)(xpath, deadline())
            theirs = fake.log_node(xpath, running)
            assert ours is not None and theirs is not None
            assert ET.tostring(ours) == ET.tostring(theirs), xpath
    missing = xmlapi.http_profile_xpath("gwlb-template", "nobody")
    assert adapter.config_get(missing, deadline()) is None  # get: an empty result
    assert adapter.config_show(missing, deadline()) is None  # show: "No such node", code 7


def test_an_unknown_element_is_refused_naming_it(
    adapter: PanoramaAdapter, want: panlogs.LogForwarding
) -> None:
    bogus = want.profile.element().replace("<http-method>", "<colour>red</colour><http-method>", 1)
    with pytest.raises(PermanentError, match="unexpected element <colour>") as raised:
        adapter.config_edit(xmlapi.http_profile_xpath("gwlb-template", want.profile.name), bogus, deadline())
    assert raised.value.code == "InvalidObject"


def test_a_misplaced_xpath_is_refused(adapter: PanoramaAdapter, want: panlogs.LogForwarding) -> None:
    vsys1 = xmlapi.http_profiles_xpath("gwlb-template").replace(
        "/config/shared/", "/config/devices/entry[@name='localhost.localdomain']/vsys/entry[@name='vsys1']/"
    )
    with pytest.raises(PermanentError, match="Bad Xpath") as raised:
        adapter.config_set(vsys1, want.profile.element(), deadline())
    assert raised.value.code == "BadXpath"


def test_setting_anything_but_logging_on_a_rule_is_refused(adapter: PanoramaAdapter) -> None:
    rule = xmlapi.security_rule_xpath("gwlb-fw", "gwlb-allow-inspected")
    with pytest.raises(PermanentError, match="setting <action> of a rule is not supported"):
        adapter.config_set(rule, "<action>deny</action>", deadline())
    with pytest.raises(PermanentError, match="security rule gwlb-nope does not exist"):
        adapter.config_set(
            xmlapi.security_rule_xpath("gwlb-fw", "gwlb-nope"), "<log-end>yes</log-end>", deadline()
        )


def test_a_failed_commit_fails_setup_through_the_adapter(
    adapter: PanoramaAdapter, fake: FakePanorama, want: panlogs.LogForwarding
) -> None:
    fake.fail_commits = True
    with pytest.raises(LogForwardingFailed, match="ended FAIL") as raised:
        panlogs.apply(adapter, want, deadline(), sleep=no_sleep)
    assert raised.value.code == "CommitFailed"


def test_the_push_is_pan_os_pythons_commit_all_and_reads_each_firewall(
    adapter: PanoramaAdapter, local: LocalPanorama, fake: FakePanorama, want: panlogs.LogForwarding
) -> None:
    for n in (1, 2):
        fake.add_firewall(f"00795100000{n}", f"10.0.1.{n}")
    panlogs.apply(adapter, want, deadline(), sleep=no_sleep)
    commit_alls = [r for r in local.xml_api.requests if r.type == "commit" and r.action == "all"]
    sdk = [
        PanoramaCommitAll(style, name, description=panlogs.PUSH_DESCRIPTION).element_str().decode()
        for style, name in (("template stack", "gwlb-stack"), ("device group", "gwlb-fw"))
    ]
    # F-PAN-4: the XML pan-os-python sends, compared in canonical form
    assert [ET.canonicalize(r.cmd) for r in commit_alls] == [ET.canonicalize(x) for x in sdk]
    assert fake.pushed == {"007951000001": [STACK, GROUP], "007951000002": [STACK, GROUP]}

    job = adapter.push_job("2", deadline())  # the template stack's, as the real answer reads
    assert job.succeeded
    assert [(d.serial, d.name, d.result) for d in job.devices] == [
        ("007951000001", "fw-0001", "OK"),
        ("007951000002", "fw-0002", "OK"),
    ]


def test_a_firewall_that_fails_the_push_is_named_through_the_adapter(
    adapter: PanoramaAdapter, fake: FakePanorama, want: panlogs.LogForwarding
) -> None:
    for n in (1, 2):
        fake.add_firewall(f"00795100000{n}", f"10.0.1.{n}")
    fake.fail_pushes = {"007951000002"}
    with pytest.raises(LogForwardingFailed) as raised:
        panlogs.apply(adapter, want, deadline(), sleep=no_sleep)
    assert raised.value.code == "PushFailed"
    assert "007951000002 (fw-0002): FAIL, commit failed on the device (injected)" in str(raised.value)
    assert "007951000001" not in str(raised.value)


def test_a_commit_all_of_an_unknown_scope_is_refused(adapter: PanoramaAdapter) -> None:
    with pytest.raises(PermanentError, match="device group nobody does not exist"):
        adapter.push(xmlapi.PushTarget("device-group", "nobody"), "", deadline())


def test_a_deleted_log_setting_of_a_rule_without_one_is_success(adapter: PanoramaAdapter) -> None:
    rule = xmlapi.security_rule_xpath("gwlb-fw", "admin-ssh")
    adapter.config_delete(rule + "/log-setting", deadline())  # "Object doesn't exist" is success
    assert adapter.commit("nothing", deadline()) == "", "nothing was staged"


# --- gwlb-fleet setup / teardown, end to end ----------------------------------------------------------


def test_setup_and_teardown_with_the_token_from_kms(
    cloud: FakeCloud, api: LocalOpenApi, local: LocalPanorama, fake: FakePanorama
) -> None:
    settings = Settings.from_environ(
        fleet.environment(
            api,
            fleet.FleetIds("asg-deploy", "sgp-deploy", "lsn-deploy"),
            ALARM_CONTACT_GROUP=fleet.CONTACT_GROUP,
            PANORAMA_HOST=local.host,
            PANORAMA_CA_FILE=str(local.ca_file),
            PANORAMA_API_KEY_SECRET="gwlb/panorama-api-key",
            PANORAMA_COMMIT_ADMINS="gwlb-fleet",
            **LOG_SETTINGS,
        )
    )
    environ = {"GWLB_SETUP_SECRET_PANORAMA_API_KEY": local.api_key, "GWLB_SETUP_SECRET_PANLOGS_TOKEN": TOKEN}
    x = deploy_cloud.executor(settings, planning=False, environ=environ)
    run.setup(settings, x)
    stored = fake.running.http_profiles[("gwlb-template", "gwlb-fleet-intake")]
    assert f"<value>{TOKEN}</value>" in stored, "the header carries the token KMS holds"
    assert any(line.startswith("panorama read back:") for line in x.report)
    shown = "\n".join([*x.report, *(str(call) for call in x.calls)])
    assert TOKEN not in shown and local.api_key not in shown

    y = deploy_cloud.executor(settings, planning=False)
    run.teardown(settings, y)
    assert not fake.running.http_profiles and not fake.running.forwarding_profiles
