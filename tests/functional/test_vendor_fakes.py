"""The fakes the flows' tests stand on: FakePanorama (and its licence plugin), FakeAppliances,
FakeAuditLog keep state like the services and fail with their errors, mapped as the adapters map
them (tests/contract/test_panorama_adapters.py checks the fake against the real adapter)."""

from __future__ import annotations

import inspect

import pytest

from gwlb_fleet.appliance.fakes import FakeAppliances
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import DeadlineExceeded, NotFound, PermanentError, TransientError
from gwlb_fleet.panos.fakes import FakePanorama
from gwlb_fleet.ports import AppliancePort, ApplianceStatus, LicensingPort, PanoramaPort
from gwlb_fleet.sls.auditlog import AuditEvent, AuditLogPort
from gwlb_fleet.sls.fakes.auditlog import FakeAuditLog

FW1, FW2 = "007951000123451", "007951000123452"


@pytest.fixture
def panorama() -> FakePanorama:
    fake = FakePanorama(job_polls=0)
    fake.add_firewall(FW1, "10.0.1.11")
    fake.add_firewall(FW2, "10.0.1.12", connected=False)
    return fake


@pytest.fixture
def deadline() -> Deadline:
    return Deadline.after(30, margin=0)


def serials(panorama: PanoramaPort, deadline: Deadline) -> list[str]:
    return [d.serial for d in panorama.devices(deadline)]


def differences(fake: object, port: type) -> list[str]:
    """How ``fake`` differs from the Protocol ``port``: a member missing, or a method whose
    parameters or annotations are not the port's. (mypy does not read the tests.)"""
    found = []
    for name, declared in vars(port).items():
        if name.startswith("_"):
            continue
        if not hasattr(fake, name):
            found.append(f"{name}: missing")
            continue
        if not callable(declared):
            continue
        want = inspect.signature(declared)
        have = inspect.signature(getattr(fake, name))  # bound: no self
        want = want.replace(parameters=list(want.parameters.values())[1:])
        if want != have:
            found.append(f"{name}{have} is not the port's {name}{want}")
    return found


def test_the_fakes_are_the_ports(panorama: FakePanorama) -> None:
    pairs: list[tuple[object, type]] = [
        (panorama, PanoramaPort),
        (panorama.licensing(), LicensingPort),
        (FakeAppliances(), AppliancePort),
        (FakeAuditLog(), AuditLogPort),
    ]
    for fake, port in pairs:
        assert any(not name.startswith("_") for name in vars(port)), f"{port.__name__} declares nothing"
        assert differences(fake, port) == [], f"{type(fake).__name__} against {port.__name__}"


def test_a_fake_that_strays_from_its_port_is_noticed() -> None:
    class Stray:
        def deactivate(self, serial: str, timeout: float) -> None: ...

    assert differences(Stray(), LicensingPort) == [
        "deactivate(serial: 'str', timeout: 'float') -> 'None' is not the port's "
        "deactivate(serial: 'str', deadline: 'Deadline') -> 'None'",
        "is_licensed: missing",
    ]


def test_terminate_sequence_takes_effect_at_the_commit(panorama: FakePanorama, deadline: Deadline) -> None:
    licensing = panorama.licensing()
    licensing.deactivate(FW1, deadline)
    panorama.remove_from_device_group(FW1, "gwlb-fw", deadline)
    panorama.remove_from_template_stack(FW1, "gwlb-stack", deadline)
    panorama.remove_managed_device(FW1, deadline)
    assert serials(panorama, deadline) == [FW1, FW2]  # running config: nothing committed yet
    job_id = panorama.commit("remove i-1", deadline)
    assert panorama.job(job_id, deadline).succeeded
    assert serials(panorama, deadline) == [FW2]
    assert not licensing.is_licensed(FW1, deadline)
    assert panorama.commit("again", deadline) == ""  # nothing left to commit
    assert panorama.job("", deadline).succeeded


def test_jobs_run_act_then_fin_in_order() -> None:
    fake = FakePanorama(job_polls=2)
    fake.add_firewall(FW1, "10.0.1.11")
    deadline = Deadline.after(30)
    fake.remove_from_device_group(FW1, "gwlb-fw", deadline)
    first = fake.commit("one", deadline)
    fake.remove_from_template_stack(FW1, "gwlb-stack", deadline)
    second = fake.commit("two", deadline)
    assert [fake.job(second, deadline).status for _ in range(3)] == ["ACT", "ACT", "FIN"]
    assert fake.job(first, deadline).succeeded  # it ran before the second
    assert fake.devices(deadline)[0].template_stack == ""


def test_finish_jobs_lets_time_pass() -> None:
    fake = FakePanorama(job_polls=100)
    fake.add_firewall(FW1, "10.0.1.11")
    deadline = Deadline.after(30)
    fake.remove_from_device_group(FW1, "gwlb-fw", deadline)
    job_id = fake.commit("x", deadline)
    fake.finish_jobs()
    assert fake.job(job_id, deadline).succeeded


def test_a_failed_commit_leaves_the_running_config(panorama: FakePanorama, deadline: Deadline) -> None:
    panorama.fail_commits = True
    panorama.remove_from_device_group(FW1, "gwlb-fw", deadline)
    job = panorama.job(panorama.commit("x", deadline), deadline)
    assert (job.status, job.result) == ("FIN", "FAIL")
    assert panorama.devices(deadline)[0].device_group == "gwlb-fw"


def test_removals_are_idempotent_and_ordered(panorama: FakePanorama, deadline: Deadline) -> None:
    with pytest.raises(PermanentError) as refused:
        panorama.remove_managed_device(FW1, deadline)
    assert refused.value.code == "ReferenceCountNotZero"
    for _ in range(2):
        panorama.remove_from_device_group(FW1, "gwlb-fw", deadline)
        panorama.remove_from_template_stack(FW1, "gwlb-stack", deadline)
        panorama.remove_managed_device(FW1, deadline)


def test_faults_map_to_domain_errors(panorama: FakePanorama, deadline: Deadline) -> None:
    panorama.fail_next = ["403", "500", "commit-in-progress", "locked", "unreachable", "17"]
    expected = [
        (PermanentError, "Forbidden"),
        (TransientError, "HTTP500"),
        (TransientError, "Busy"),
        (TransientError, "Busy"),
        (TransientError, "Unreachable"),
        (PermanentError, "InvalidCommand"),
    ]
    for kind, code in expected:
        with pytest.raises(kind) as failed:
            panorama.devices(deadline)
        assert failed.value.code == code
    assert serials(panorama, deadline) == [FW1, FW2]


def test_unreachable_until_it_is_back(panorama: FakePanorama, deadline: Deadline) -> None:
    panorama.unreachable = True
    with pytest.raises(TransientError):
        panorama.commit("x", deadline)
    panorama.unreachable = False
    assert panorama.commit("x", deadline) == ""


def test_unknown_job(panorama: FakePanorama, deadline: Deadline) -> None:
    with pytest.raises(NotFound):
        panorama.job("77", deadline)


def test_licences(panorama: FakePanorama, deadline: Deadline) -> None:
    licensing = panorama.licensing()
    assert licensing.is_licensed(FW2, deadline)
    licensing.deactivate(FW2, deadline)
    licensing.deactivate(FW2, deadline)  # already requested: success
    # F-PAN-3: the plugin's change is released by a commit of its admin's changes, not before
    assert licensing.is_licensed(FW2, deadline)
    assert [c.admin for c in panorama.pending] == ["__sw_fw_license"]
    panorama.job(panorama.commit("release", deadline), deadline)
    panorama.finish_jobs()
    assert not licensing.is_licensed(FW2, deadline)
    licensing.deactivate(FW2, deadline)  # released: the plugin no longer knows it, success
    panorama.sticky_licences.add(FW1)
    licensing.deactivate(FW1, deadline)
    assert licensing.is_licensed(FW1, deadline)  # what verification must catch
    with pytest.raises(NotFound):
        panorama.licensing("other-lm").is_licensed(FW1, deadline)


def test_vm_auth_keys(panorama: FakePanorama, deadline: Deadline) -> None:
    first, second = (panorama.generate_vm_auth_key(24, deadline) for _ in range(2))
    assert first != second and panorama.vm_auth_keys == [first, second]


def test_appliances_answer_as_scripted(deadline: Deadline) -> None:
    appliances = FakeAppliances()
    assert appliances.status("10.0.1.11", "", deadline) is None  # not up yet
    appliances.set("10.0.1.11", active_flows=4)
    assert appliances.status("10.0.1.11", "", deadline) == ApplianceStatus(True, False, 4)
    appliances.script("10.0.1.11", [ApplianceStatus(True, True, 9), ApplianceStatus(True, True, 0)])
    flows = [appliances.status("10.0.1.11", "", deadline).active_flows for _ in range(3)]  # type: ignore[union-attr]
    assert flows == [9, 0, 0]
    appliances.set_down("10.0.1.11")
    assert appliances.status("10.0.1.11", "", deadline) is None
    appliances.fail_next = ["unreachable"]
    with pytest.raises(TransientError):
        appliances.status("10.0.1.11", FW1, deadline)
    with pytest.raises(DeadlineExceeded):
        appliances.status("10.0.1.11", FW1, Deadline.after(0.1, margin=1))
    assert appliances.probes[-1] == ("10.0.1.11", FW1)


def audit_event(n: int) -> AuditEvent:
    return AuditEvent(f"evt-{n}", 1.0 * n, "lifecycle", "drain", "ok", "scale-in", instance_id=f"i-{n}")


def test_audit_log_keeps_and_fails_like_sls() -> None:
    audit = FakeAuditLog(fail_next=["ServerBusy", "Unauthorized"])
    with pytest.raises(TransientError):
        audit.write([audit_event(1)])
    with pytest.raises(PermanentError) as refused:
        audit.write([audit_event(1)])
    assert refused.value.code == "Unauthorized"
    audit.write([audit_event(1), audit_event(2)])
    audit.write([audit_event(2)])  # a retried invocation writes again: readers deduplicate
    assert audit.actions("i-2") == ["drain", "drain"]
    assert [e.event_id for e in audit.unique()] == ["evt-1", "evt-2"]
    audit.fault = "LogStoreNotExist"
    with pytest.raises(PermanentError):
        audit.write([audit_event(3)])
