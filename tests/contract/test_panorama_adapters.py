"""The Panorama adapters, through real pan-os-python / pan-python over HTTPS, against the local
Panorama (gwlb_lab.panorama): certificate verification on (the lab's private CA), the exact XML API
requests each operation sends, the reading of each answer, and the mapping of PAN-OS failures to
domain errors — the same ones the fake raises (test_fake_and_adapter_agree).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pan.xapi
import pytest

from gwlb_fleet.alibaba.fakes.kms import FakeKms
from gwlb_fleet.alibaba.secretcache import CachedSecrets
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import FleetError, NotFound, PermanentError, TransientError
from gwlb_fleet.panos.fakes import FakePanorama, PanoramaConfig
from gwlb_fleet.panos.licensing import PanoramaLicensing, licensing_from_settings
from gwlb_fleet.panos.panorama import PanoramaAdapter, split_host, verifying_context
from gwlb_fleet.ports import CommitJob, PanDevice
from gwlb_fleet.settings import Settings
from gwlb_lab.panorama import LocalPanorama
from gwlb_lab.panorama.xmlapi import ApiRequest

FW1, FW2 = "007951000123451", "007951000123452"
DG_XPATH = "/config/devices/entry[@name='localhost.localdomain']/device-group"
TS_XPATH = "/config/devices/entry[@name='localhost.localdomain']/template-stack"
SHOW_DEVICES = "<show><devices><all /></devices></show>"


KEY_SECRET = "gwlb/panorama-api-key"


def no_sleep(seconds: float) -> None:
    pass


def secrets_for(local: LocalPanorama, key: str | None = None) -> CachedSecrets:
    """The SecretsPort the adapter reads Panorama's key from (F-KMS-1): KMS's fake, holding it."""
    kms = FakeKms()
    kms.put_secret(KEY_SECRET, key if key is not None else local.api_key)
    return kms.port()


def settings_for(local: LocalPanorama, **env: str) -> Settings:
    values = {
        "FLEET_REGION": "cn-hangzhou",
        "SCALING_GROUP_ID": "asg-1",
        "GWLB_SERVER_GROUP_ID": "sgp-1",
        "GWLB_LISTENER_ID": "lsn-1",
        "PANORAMA_HOST": local.host,
        "PANORAMA_API_KEY_SECRET": KEY_SECRET,
        "PANORAMA_CA_FILE": str(local.ca_file),
        "PANORAMA_LICENSE_MANAGER": "gwlb-lm",
        "PANORAMA_COMMIT_ADMINS": "gwlb-fleet",  # the admin of the local Panorama's API key
        "API_TIMEOUT_S": "5",
        **env,
    }
    return Settings.model_validate(values)  # the aliases: the environment's names


@pytest.fixture
def fake() -> FakePanorama:
    panorama = FakePanorama()
    panorama.add_firewall(FW1, "10.0.1.11", hostname="fw-a", active_sessions=7)
    panorama.add_firewall(FW2, "10.0.1.12", hostname="fw-b", connected=False)
    return panorama


@pytest.fixture
def local(tmp_path: Path, fake: FakePanorama) -> Iterator[LocalPanorama]:
    with LocalPanorama(tmp_path / "certs", panorama=fake) as server:
        yield server


@pytest.fixture
def adapter(local: LocalPanorama) -> PanoramaAdapter:
    return PanoramaAdapter.from_settings(settings_for(local), secrets_for(local), sleep=no_sleep)


@pytest.fixture
def deadline() -> Deadline:
    return Deadline.after(30, margin=0)


def requests(local: LocalPanorama) -> list[ApiRequest]:
    sent = list(local.xml_api.requests)
    local.xml_api.requests.clear()
    return sent


def op(cmd: str, target: str = "") -> ApiRequest:
    return ApiRequest("op", cmd=cmd, target=target)


def config(action: str, xpath: str) -> ApiRequest:
    return ApiRequest("config", action=action, xpath=xpath)


def member(kind: str, name: str, serial: str) -> str:
    root = DG_XPATH if kind == "device-group" else TS_XPATH
    return f"{root}/entry[@name='{name}']/devices/entry[@name='{serial}']"


# --- TLS ----------------------------------------------------------------------------------------------


def test_certificate_is_verified_against_the_configured_ca(
    local: LocalPanorama, tmp_path: Path, deadline: Deadline
) -> None:
    other = LocalPanorama(tmp_path / "other-ca").start()  # another CA's certificate file
    other.stop()
    strangers = PanoramaAdapter.from_settings(
        settings_for(local, PANORAMA_CA_FILE=str(other.ca_file)), secrets_for(local), sleep=no_sleep
    )
    with pytest.raises(PermanentError) as refused:
        strangers.devices(deadline)
    assert refused.value.code == "TlsVerification"
    system_cas = PanoramaAdapter.from_settings(
        settings_for(local, PANORAMA_CA_FILE=""), secrets_for(local), sleep=no_sleep
    )
    with pytest.raises(PermanentError, match="TLS verification failed"):
        system_cas.devices(deadline)
    assert requests(local) == []  # nothing got past the handshake


def test_host_names_the_port() -> None:
    assert split_host("panorama.example.com") == ("panorama.example.com", 443)
    assert split_host("10.0.0.5:8443") == ("10.0.0.5", 8443)
    assert split_host("[::1]:8443") == ("::1", 8443)


# --- devices -------------------------------------------------------------------------------------------


def test_devices_reads_managed_devices_and_committed_memberships(
    adapter: PanoramaAdapter, local: LocalPanorama, deadline: Deadline
) -> None:
    assert adapter.devices(deadline) == [
        PanDevice(FW1, "10.0.1.11", "fw-a", True, "gwlb-fw", "gwlb-stack"),
        PanDevice(FW2, "10.0.1.12", "fw-b", False, "gwlb-fw", "gwlb-stack"),
    ]
    assert requests(local) == [op(SHOW_DEVICES), config("show", DG_XPATH), config("show", TS_XPATH)]


def test_devices_shows_a_stale_reference_left_without_a_managed_device(
    adapter: PanoramaAdapter, fake: FakePanorama, deadline: Deadline
) -> None:
    fake.running.managed.discard(FW2)  # drift the reconcile flow must see
    stale = next(d for d in adapter.devices(deadline) if d.serial == FW2)
    assert (stale.ip, stale.connected, stale.device_group) == ("", False, "gwlb-fw")


# --- removals and commit ---------------------------------------------------------------------------------


def test_removal_then_commit_then_read_back(
    adapter: PanoramaAdapter, local: LocalPanorama, fake: FakePanorama, deadline: Deadline
) -> None:
    adapter.remove_from_device_group(FW1, "gwlb-fw", deadline)
    adapter.remove_from_template_stack(FW1, "gwlb-stack", deadline)
    adapter.remove_managed_device(FW1, deadline)
    assert requests(local) == [
        config("delete", member("device-group", "gwlb-fw", FW1)),
        config("delete", member("template-stack", "gwlb-stack", FW1)),
        config("delete", f"/config/mgt-config/devices/entry[@name='{FW1}']"),
    ]
    assert FW1 in {d.serial for d in adapter.devices(deadline)}  # not committed yet
    requests(local)

    job_id = adapter.commit("gwlb-fleet: remove i-123 (007951000123451)", deadline)
    assert job_id == "1"
    assert adapter.job(job_id, deadline) == CommitJob("1", "ACT", "PEND", "")
    assert adapter.job(job_id, deadline) == CommitJob(
        "1", "FIN", "OK", "Configuration committed successfully"
    )
    sent = requests(local)
    assert sent[0] == ApiRequest(  # F-PAN-1: the documented partial commit, with action=partial
        "commit",
        action="partial",
        cmd="<commit><description>gwlb-fleet: remove i-123 (007951000123451)</description><partial><admin>"
        "<member>gwlb-fleet</member><member>__sw_fw_license</member></admin></partial></commit>",
    )
    assert sent[1:] == [op("<show><jobs><id>1</id></jobs></show>")] * 2
    assert [d.serial for d in adapter.devices(deadline)] == [FW2]


def test_removals_of_what_is_gone_succeed(
    adapter: PanoramaAdapter, local: LocalPanorama, deadline: Deadline
) -> None:
    adapter.remove_from_device_group(FW1, "gwlb-fw", deadline)
    adapter.remove_from_device_group(FW1, "gwlb-fw", deadline)  # PAN-OS: error code 7
    adapter.remove_from_template_stack("007951000999999", "gwlb-stack", deadline)
    adapter.remove_managed_device("007951000999999", deadline)
    assert len(requests(local)) == 4  # one each: "not present" is an answer, not retried


def test_a_managed_device_still_referenced_is_not_removed(
    adapter: PanoramaAdapter, deadline: Deadline
) -> None:
    with pytest.raises(PermanentError) as refused:
        adapter.remove_managed_device(FW1, deadline)
    assert refused.value.code == "ReferenceCountNotZero"
    assert "device-group gwlb-fw" in str(refused.value)


def test_nothing_to_commit(adapter: PanoramaAdapter, local: LocalPanorama, deadline: Deadline) -> None:
    assert adapter.commit("nothing changed", deadline) == ""
    assert adapter.job("", deadline) == CommitJob("", "FIN", "OK", "nothing to commit")
    assert [r.type for r in requests(local)] == ["commit"]


def test_another_admins_pending_change_stays_pending(
    adapter: PanoramaAdapter, fake: FakePanorama, deadline: Deadline
) -> None:
    """F-PAN-1: our commit takes our admin's and the licence plugin's changes, not alice's."""
    def alices_edit(config: PanoramaConfig) -> bool:
        config.device_groups["gwlb-fw"].discard(FW2)
        return True

    fake.stage_change("alice", "delete fw-b from gwlb-fw", alices_edit)
    adapter.remove_from_device_group(FW1, "gwlb-fw", deadline)
    job = adapter.job(adapter.commit("ours only", deadline), deadline)
    fake.finish_jobs()
    job = adapter.job(job.job_id, deadline)
    assert job.succeeded
    groups = {d.serial: d.device_group for d in adapter.devices(deadline)}
    assert groups == {FW1: "", FW2: "gwlb-fw"}  # alice's deletion of FW2 is not committed
    assert [c.admin for c in fake.pending] == ["alice"]


def test_only_alices_changes_pending_is_nothing_to_commit(adapter: PanoramaAdapter, fake: FakePanorama,
                                                          deadline: Deadline) -> None:
    fake.stage_change("alice", "an edit of hers")
    assert adapter.commit("nothing of ours", deadline) == ""
    assert [c.admin for c in fake.pending] == ["alice"]


def test_a_partial_commit_without_action_partial_is_refused(local: LocalPanorama, deadline: Deadline) -> None:
    """What pan-os-python's PanoramaCommit sends (F-PAN-1): the lab refuses it, so the adapter
    cannot fall back to it unnoticed."""
    xapi = pan.xapi.PanXapi(api_key=local.api_key, hostname="127.0.0.1", port=local.port,
                            ssl_context=verifying_context(str(local.ca_file)))
    with pytest.raises(pan.xapi.PanXapiError, match="action=partial"):
        xapi.commit(cmd="<commit><partial><admin><member>gwlb-fleet</member></admin></partial></commit>")


def test_without_commit_admins_there_is_no_commit(local: LocalPanorama, deadline: Deadline) -> None:
    adapter = PanoramaAdapter.from_settings(
        settings_for(local, PANORAMA_COMMIT_ADMINS=""), secrets_for(local), sleep=no_sleep
    )
    with pytest.raises(PermanentError) as refused:
        adapter.commit("a full commit would take everyone's changes", deadline)
    assert refused.value.code == "NotConfigured"
    assert [r.type for r in requests(local)] == []


def test_a_failed_commit_job_is_reported_and_changes_stay_uncommitted(
    adapter: PanoramaAdapter, fake: FakePanorama, deadline: Deadline
) -> None:
    fake.fail_commits = True
    fake.job_polls = 0
    adapter.remove_from_device_group(FW1, "gwlb-fw", deadline)
    job = adapter.job(adapter.commit("doomed", deadline), deadline)
    assert (job.finished, job.succeeded) == (True, False)
    assert job.details == "Validation Error: commit failed (injected)"
    assert next(d for d in adapter.devices(deadline) if d.serial == FW1).device_group == "gwlb-fw"


def test_an_unknown_job_is_not_found(adapter: PanoramaAdapter, deadline: Deadline) -> None:
    with pytest.raises(NotFound):
        adapter.job("999", deadline)


def test_vm_auth_key(adapter: PanoramaAdapter, local: LocalPanorama, deadline: Deadline) -> None:
    assert adapter.generate_vm_auth_key(24, deadline) == "755036225328715"
    assert requests(local) == [
        op(
            "<request><bootstrap><vm-auth-key><generate><lifetime>24</lifetime></generate></vm-auth-key></bootstrap></request>"
        )
    ]


# --- errors ----------------------------------------------------------------------------------------------


def test_a_bad_api_key_is_permanent_and_not_retried(local: LocalPanorama, deadline: Deadline) -> None:
    adapter = PanoramaAdapter.from_settings(
        settings_for(local), secrets_for(local, "stolen-or-stale"), sleep=no_sleep
    )
    with pytest.raises(PermanentError) as refused:
        adapter.devices(deadline)
    assert (refused.value.code, refused.value.service) == ("Forbidden", "panorama")
    assert "Invalid Credential" in str(refused.value)
    assert "stolen-or-stale" not in str(refused.value)
    assert [r.authorized for r in requests(local)] == [False]


def test_a_rotated_key_is_read_anew_once_when_refused(local: LocalPanorama, deadline: Deadline) -> None:
    """F-KMS-4: the cached key is refused after a rotation; one fresh GetSecretValue, one retry."""
    kms = FakeKms()
    kms.put_secret(KEY_SECRET, local.api_key)
    adapter = PanoramaAdapter.from_settings(settings_for(local), kms.port(ttl_s=3600), sleep=no_sleep)
    adapter.devices(deadline)
    assert kms.calls == ["GetSecretValue"]
    local.xml_api.api_key = "rotated-in-panorama"
    kms.put_secret(KEY_SECRET, "rotated-in-panorama")
    requests(local)
    adapter.devices(deadline)  # cached key refused -> read anew -> accepted
    sent = requests(local)
    assert [r.authorized for r in sent] == [False] + [True] * (len(sent) - 1)
    assert kms.calls == ["GetSecretValue", "GetSecretValue"]
    adapter.devices(deadline)  # the new key is the cached one now
    assert kms.calls == ["GetSecretValue", "GetSecretValue"]
    assert all(r.authorized for r in requests(local))


def test_a_key_refused_again_after_a_fresh_read_is_permanent(
    local: LocalPanorama, deadline: Deadline
) -> None:
    kms = FakeKms()
    kms.put_secret(KEY_SECRET, local.api_key)
    adapter = PanoramaAdapter.from_settings(settings_for(local), kms.port(), sleep=no_sleep)
    adapter.devices(deadline)
    local.xml_api.api_key = "revoked-everywhere"
    requests(local)
    with pytest.raises(PermanentError) as refused:
        adapter.devices(deadline)
    assert refused.value.code == "Forbidden"
    assert [r.authorized for r in requests(local)] == [False]  # no retry with the same key
    assert kms.calls == ["GetSecretValue", "GetSecretValue"]


def test_no_key_is_read_before_the_first_call(local: LocalPanorama) -> None:
    kms = FakeKms()
    PanoramaAdapter.from_settings(settings_for(local), kms.port(), sleep=no_sleep)
    assert kms.calls == []  # lazily: a function that never talks to Panorama never reads it


@pytest.mark.parametrize("fault", ["500", "503", "commit-in-progress", "locked", "unreachable"])
def test_transient_failures_are_retried(
    adapter: PanoramaAdapter, local: LocalPanorama, fake: FakePanorama, deadline: Deadline, fault: str
) -> None:
    adapter.remove_from_device_group(FW1, "gwlb-fw", deadline)
    requests(local)
    fake.fail_next = [fault, fault]
    assert adapter.commit("after a hiccup", deadline) == "1"
    assert [r.type for r in requests(local)] == ["commit"] * 3


def test_transient_failures_that_outlast_the_attempts_surface_as_transient(
    adapter: PanoramaAdapter, local: LocalPanorama, fake: FakePanorama, deadline: Deadline
) -> None:
    fake.unreachable = True
    with pytest.raises(TransientError) as gave_up:
        adapter.devices(deadline)
    assert gave_up.value.code == "Unreachable"
    assert len(requests(local)) == 5  # gwlb_fleet.retry's attempts


def test_no_call_without_time_left(adapter: PanoramaAdapter, local: LocalPanorama) -> None:
    with pytest.raises(TransientError):
        adapter.devices(Deadline.after(0.5, margin=1.0))
    assert requests(local) == []


def test_an_unknown_command_is_permanent(
    adapter: PanoramaAdapter, fake: FakePanorama, deadline: Deadline
) -> None:
    fake.fail_next = ["17"]
    with pytest.raises(PermanentError) as refused:
        adapter.devices(deadline)
    assert refused.value.code == "InvalidCommand"


def test_keygen_with_pan_python(local: LocalPanorama) -> None:
    xapi = pan.xapi.PanXapi(
        hostname="127.0.0.1",
        port=local.port,
        api_username="admin",
        api_password="admin",
        ssl_context=verifying_context(str(local.ca_file)),
    )
    assert xapi.keygen() == local.api_key
    wrong = pan.xapi.PanXapi(
        hostname="127.0.0.1",
        port=local.port,
        api_username="admin",
        api_password="guess",
        ssl_context=verifying_context(str(local.ca_file)),
    )
    with pytest.raises(pan.xapi.PanXapiError, match="403"):
        wrong.keygen()


# --- the licence plugin ------------------------------------------------------------------------------


def test_plugin_deactivation_and_read_back(
    adapter: PanoramaAdapter, local: LocalPanorama, fake: FakePanorama, deadline: Deadline
) -> None:
    licensing = licensing_from_settings(settings_for(local), adapter, secrets_for(local))
    assert isinstance(licensing, PanoramaLicensing)
    assert licensing.is_licensed(FW1, deadline)
    licensing.deactivate(FW1, deadline)
    assert licensing.is_licensed(FW1, deadline)  # F-PAN-3: the plugin's change waits for a commit
    assert requests(local) == [
        op(
            "<show><plugins><sw_fw_license><devices><license-manager>gwlb-lm</license-manager>"
            "</devices></sw_fw_license></plugins></show>"
        ),
        op(
            "<request><plugins><sw_fw_license><deactivate><license-manager>gwlb-lm</license-manager>"
            f"<devices><member>{FW1}</member></devices></deactivate></sw_fw_license></plugins></request>"
        ),
        op(
            "<show><plugins><sw_fw_license><devices><license-manager>gwlb-lm</license-manager>"
            "</devices></sw_fw_license></plugins></show>"
        ),
    ]
    assert FW2 in fake.licences
    fake.job_polls = 0
    assert adapter.job(adapter.commit("release FW1", deadline), deadline).succeeded
    assert not licensing.is_licensed(FW1, deadline)


def test_plugin_deactivation_of_a_released_licence_succeeds(
    adapter: PanoramaAdapter, fake: FakePanorama, deadline: Deadline
) -> None:
    licensing = PanoramaLicensing(adapter, "gwlb-lm")
    licensing.deactivate(FW1, deadline)
    licensing.deactivate(FW1, deadline)  # requested already: success
    fake.job_polls = 0
    assert adapter.job(adapter.commit("release FW1", deadline), deadline).succeeded
    licensing.deactivate(FW1, deadline)  # the plugin no longer knows it: read back, not licensed
    assert not fake.licensed(FW1)


def test_a_deactivation_that_did_not_take_shows_in_the_read_back(
    adapter: PanoramaAdapter, fake: FakePanorama, deadline: Deadline
) -> None:
    fake.sticky_licences.add(FW1)
    licensing = PanoramaLicensing(adapter, "gwlb-lm")
    licensing.deactivate(FW1, deadline)  # answers success, as users reported
    assert licensing.is_licensed(FW1, deadline)


def test_an_unknown_license_manager_is_permanent(adapter: PanoramaAdapter, deadline: Deadline) -> None:
    licensing = PanoramaLicensing(adapter, "no-such-lm")
    with pytest.raises(PermanentError):
        licensing.deactivate(FW1, deadline)


# --- the fake fails as the adapter does ------------------------------------------------------------------


Scenario = Callable[[Any, Deadline], object]
ATTEMPTS = 5  # gwlb_fleet.retry's: a fault on every attempt is what the fake's single fault stands for
SCENARIOS: dict[str, tuple[list[str], Scenario]] = {
    "bad key": (["403"], lambda port, d: port.devices(d)),
    "internal error": (["500"], lambda port, d: port.devices(d)),
    "busy": (["commit-in-progress"], lambda port, d: port.commit("x", d)),
    "locked": (["locked"], lambda port, d: port.remove_from_device_group(FW1, "gwlb-fw", d)),
    "unreachable": (["unreachable"], lambda port, d: port.devices(d)),
    "unknown command": (["17"], lambda port, d: port.generate_vm_auth_key(1, d)),
    "referenced device": ([], lambda port, d: port.remove_managed_device(FW1, d)),
    "unknown job": ([], lambda port, d: port.job("42", d)),
    "deletion of nothing": (
        [],
        lambda port, d: port.remove_from_device_group("007951000999999", "gwlb-fw", d),
    ),
    "devices": ([], lambda port, d: port.devices(d)),
}
TRANSIENT_FAULTS = {"500", "503", "commit-in-progress", "locked", "unreachable"}


def outcome(call: Callable[[], object]) -> tuple[str, str] | object:
    try:
        return call()
    except FleetError as exc:
        return type(exc).__name__, exc.code


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fake_and_adapter_agree(
    name: str, adapter: PanoramaAdapter, fake: FakePanorama, deadline: Deadline
) -> None:
    """The fake answers a port call as the adapter does once its retries are spent."""
    faults, scenario = SCENARIOS[name]
    direct = FakePanorama()
    direct.add_firewall(FW1, "10.0.1.11", hostname="fw-a", active_sessions=7)
    direct.add_firewall(FW2, "10.0.1.12", hostname="fw-b", connected=False)
    direct.fail_next = list(faults)
    fake.fail_next = [f for f in faults for _ in range(ATTEMPTS if f in TRANSIENT_FAULTS else 1)]
    assert outcome(lambda: scenario(direct, deadline)) == outcome(lambda: scenario(adapter, deadline))


def test_probe_target_through_panorama(
    adapter: PanoramaAdapter, local: LocalPanorama, deadline: Deadline
) -> None:
    result = adapter.op("show session info", deadline, target=FW1)
    assert result is not None and result.findtext("num-active") == "7"
    assert requests(local) == [op("<show><session><info /></session></show>", target=FW1)]
