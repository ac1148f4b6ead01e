"""Set-up's PAN-OS log forwarding (gwlb_fleet.deploy.panlogs) over the in-memory Panorama: made,
committed and read back; a second run changes nothing; a failed commit job, a profile missing
from the running configuration, drift, and no rule to attach each end as the docstring says."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.deploy import panlogs, run
from gwlb_fleet.deploy.panlogs import LogForwardingFailed
from gwlb_fleet.errors import PermanentError
from gwlb_fleet.panos import xmlapi
from gwlb_fleet.panos.fakes import FakePanorama
from tests.unit.test_panorama_log_config import TOKEN, settings

pytestmark = pytest.mark.functional


def no_sleep(seconds: float) -> None:
    pass


@pytest.fixture
def want() -> panlogs.LogForwarding:
    return panlogs.wanted(settings(), TOKEN)


def deadline() -> Deadline:
    return Deadline.after(30, margin=0)


def running(fake: FakePanorama) -> tuple[object, ...]:
    config = fake.running
    return (dict(config.http_profiles), dict(config.forwarding_profiles), dict(config.rules))


def apply(fake: Any, want: panlogs.LogForwarding) -> list[str]:
    return panlogs.apply(fake, want, deadline(), sleep=no_sleep)


def test_setup_writes_commits_and_reads_back(want: panlogs.LogForwarding) -> None:
    fake = FakePanorama()
    lines = apply(fake, want)
    profile = fake.running.http_profiles[("gwlb-template", "gwlb-fleet-intake")]
    assert xmlapi.HttpServerProfile.parse(ET.fromstring(profile)) == want.profile
    forwarding = fake.running.forwarding_profiles[("gwlb-fw", "gwlb-fleet-logs")]
    assert xmlapi.ForwardingProfile.parse(ET.fromstring(forwarding)) == want.forwarding
    rules = {
        r.rule: r for r in xmlapi.parse_rules(fake.log_node(xmlapi.security_rules_xpath("gwlb-fw"), True))
    }
    assert rules["gwlb-allow-inspected"] == xmlapi.RuleLogging(
        "gwlb-allow-inspected", "gwlb-fleet-logs", True
    )
    assert rules["gwlb-deny-rest"].log_setting == "gwlb-fleet-logs"
    assert rules["admin-ssh"].log_setting == "", "a rule without the prefix is not ours"
    assert not fake.pending, "everything committed"
    assert "panorama commit job 1: OK" in lines
    assert not any(TOKEN in line for line in lines), "the token is never in a report line"


def test_setup_twice_is_the_same_state_and_the_second_commits_nothing(want: panlogs.LogForwarding) -> None:
    fake = FakePanorama()
    apply(fake, want)
    before, calls = running(fake), len(fake.calls)
    lines = apply(fake, want)
    assert running(fake) == before
    assert "panorama commit: nothing to commit" in lines
    assert not [c for c in fake.calls[calls:] if c.startswith(("set ", "edit ", "delete "))]


def test_a_failed_commit_job_fails_setup_with_its_details(want: panlogs.LogForwarding) -> None:
    fake = FakePanorama(fail_commits=True)
    with pytest.raises(LogForwardingFailed, match="commit job 1 ended FAIL: Validation Error") as raised:
        apply(fake, want)
    assert raised.value.code == "CommitFailed"
    assert not fake.running.http_profiles, "nothing became running"


class LosesTheProfile:
    """A Panorama whose commit answers OK but whose running configuration lacks the profile."""

    def __init__(self, fake: FakePanorama, xpath: str) -> None:
        self.fake, self.xpath = fake, xpath

    def config_show(self, xpath: str, deadline: Deadline) -> ET.Element | None:
        return None if xpath == self.xpath else self.fake.config_show(xpath, deadline)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fake, name)


def test_a_profile_missing_after_the_commit_fails_setup_naming_it(want: panlogs.LogForwarding) -> None:
    xpath = xmlapi.http_profile_xpath("gwlb-template", "gwlb-fleet-intake")
    with pytest.raises(LogForwardingFailed) as raised:
        apply(LosesTheProfile(FakePanorama(), xpath), want)
    assert "HTTP server profile gwlb-fleet-intake in template gwlb-template" in str(raised.value)
    assert raised.value.code == "NotCommitted"


def test_a_profile_that_drifted_is_rewritten_whole(want: panlogs.LogForwarding) -> None:
    fake = FakePanorama()
    apply(fake, want)
    stale = want.profile.element().replace(
        "<headers>", '<headers><entry name="X-Old"><value>v</value></entry>', 1
    )
    fake.api_edit(xmlapi.http_profile_xpath("gwlb-template", want.profile.name), stale, user="alice")
    fake.finish_jobs()
    fake.api_commit("alice's", [])
    fake.finish_jobs()
    lines = apply(fake, want)
    assert "panorama HTTP server profile gwlb-fleet-intake in template gwlb-template: rewritten" in lines
    text = fake.running.http_profiles[("gwlb-template", want.profile.name)]
    assert "X-Old" not in text, "an edit replaces; a set would have kept the stale header"


def test_no_rule_with_the_prefix_fails_setup_naming_the_prefix() -> None:
    fake = FakePanorama(security_rules={"gwlb-fw": ("admin-ssh",)})
    with pytest.raises(LogForwardingFailed, match=r"no pre-rulebase security rule named fw-\*"):
        apply(fake, panlogs.wanted(settings(PANLOGS_RULE_PREFIX="fw-"), TOKEN))


def test_teardown_detaches_deletes_and_commits(want: panlogs.LogForwarding) -> None:
    fake = FakePanorama()
    apply(fake, want)
    panlogs.remove(fake, want, deadline(), sleep=no_sleep)
    assert not fake.running.http_profiles and not fake.running.forwarding_profiles
    assert all("log-setting" not in text for text in fake.running.rules["gwlb-fw"].values())
    assert all("<action>" in text for text in fake.running.rules["gwlb-fw"].values()), "the rules stay"
    panlogs.remove(fake, want, deadline(), sleep=no_sleep)  # again: nothing there is success


def test_a_referenced_forwarding_profile_cannot_be_deleted(want: panlogs.LogForwarding) -> None:
    fake = FakePanorama()
    apply(fake, want)
    with pytest.raises(PermanentError, match="references from: gwlb-allow-inspected, gwlb-deny-rest"):
        fake.config_delete(xmlapi.forwarding_profile_xpath("gwlb-fw", want.forwarding.name), deadline())


# --- through set-up's executor ---------------------------------------------------------------------------


def test_setup_runs_it_last_and_only_with_an_intake_url() -> None:
    made: list[str] = []
    x = run.Executor(None, extra={"panorama": lambda: made.append("panorama") or []})
    run.ensure_log_forwarding(settings(PANLOGS_INTAKE_URL=""), x)
    assert x.report == [
        "panorama log forwarding: not configured (PANLOGS_INTAKE_URL is not set; docs/deploy.md)"
    ]
    assert not x.calls
    run.ensure_log_forwarding(settings(), x)
    assert {c.service for c in x.calls} == {"panorama"}


def test_setup_names_the_settings_log_forwarding_lacks() -> None:
    with pytest.raises(run.SetupFailed, match="needs PANORAMA_TEMPLATE"):
        run.ensure_log_forwarding(settings(PANORAMA_TEMPLATE=""), run.Executor(None))


def test_setup_names_a_missing_template_stack() -> None:
    with pytest.raises(run.SetupFailed, match="needs PANORAMA_TEMPLATE_STACK"):
        run.ensure_log_forwarding(settings(PANORAMA_TEMPLATE_STACK=""), run.Executor(None))


# --- the push to the firewalls (commit-all, F-PAN-4) ---------------------------------------------------

STACK = xmlapi.PushTarget("template-stack", "gwlb-stack")
GROUP = xmlapi.PushTarget("device-group", "gwlb-fw")


def fleet(**options: Any) -> FakePanorama:
    """A Panorama managing three running firewalls, in the device group and the template stack."""
    fake = FakePanorama(**options)
    for n in (1, 2, 3):
        fake.add_firewall(f"00795100000{n}", f"10.0.1.{n}")
    return fake


def pushes(fake: FakePanorama) -> list[str]:
    return [c for c in fake.calls if c.startswith("commit-all ")]


def test_setup_pushes_the_template_stack_then_the_device_group_to_every_firewall(
    want: panlogs.LogForwarding,
) -> None:
    fake = fleet()
    lines = apply(fake, want)
    assert fake.pushed == {serial: [STACK, GROUP] for serial in fake.firewalls}
    assert pushes(fake) == ["commit-all template stack gwlb-stack", "commit-all device group gwlb-fw"]
    assert "panorama push of template stack gwlb-stack: job 2 OK on 3 firewall(s)" in lines
    assert "panorama push of device group gwlb-fw: job 3 OK on 3 firewall(s)" in lines
    assert lines.index("panorama commit job 1: OK") < lines.index(
        "panorama push of template stack gwlb-stack: job 2 OK on 3 firewall(s)"
    ), "Panorama's commit first: a push sends the running configuration"


def test_a_second_run_pushes_nothing(want: panlogs.LogForwarding) -> None:
    fake = fleet()
    apply(fake, want)
    before = len(pushes(fake))
    assert before == 2, "the first run pushed"
    lines = apply(fake, want)
    assert len(pushes(fake)) == before
    assert lines[-1] == "panorama push: nothing changed, nothing pushed"


def test_a_drifted_profile_is_pushed_again(want: panlogs.LogForwarding) -> None:
    fake = fleet()
    apply(fake, want)
    fake.running.http_profiles.clear()  # lost from Panorama: the next run writes, commits, pushes
    fake.candidate.http_profiles.clear()
    apply(fake, want)
    assert fake.pushed == {serial: [STACK, GROUP, STACK, GROUP] for serial in fake.firewalls}


def test_firewalls_that_fail_the_push_fail_setup_named(want: panlogs.LogForwarding) -> None:
    fake = fleet(fail_pushes={"007951000002"})
    fake.set_connected("007951000003", False)
    with pytest.raises(LogForwardingFailed) as raised:
        apply(fake, want)
    message = str(raised.value)
    assert raised.value.code == "PushFailed"
    assert "template stack gwlb-stack (job 2): 2 of 3 firewall(s) did not take it" in message
    assert "007951000002 (fw-0002): FAIL, commit failed on the device (injected)" in message
    assert "007951000003 (fw-0003): FAIL, device is not connected" in message
    assert "007951000001" not in message
    assert "Push to Devices" in message, "the failure says what to do"
    assert pushes(fake) == ["commit-all template stack gwlb-stack"], "no device group push after it"


def test_a_push_job_that_does_not_finish_in_time_fails_setup(want: panlogs.LogForwarding) -> None:
    fake = fleet(job_polls=10**6)  # the push job stays ACT
    with pytest.raises(LogForwardingFailed, match="has not finished") as raised:
        panlogs.push(fake, STACK, "test", Deadline.after(1, margin=0), sleep=no_sleep)
    assert raised.value.code == "CommitNotFinished"


def test_teardown_pushes_the_removal_device_group_first(want: panlogs.LogForwarding) -> None:
    fake = fleet()
    apply(fake, want)
    lines = panlogs.remove(fake, want, deadline(), sleep=no_sleep)
    assert fake.pushed == {serial: [STACK, GROUP, GROUP, STACK] for serial in fake.firewalls}
    assert lines[-1].startswith("panorama push of template stack gwlb-stack: job")
    lines = panlogs.remove(fake, want, deadline(), sleep=no_sleep)
    assert lines[-1] == "panorama push: nothing removed, nothing pushed"
