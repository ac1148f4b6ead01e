"""Secrets from KMS Secrets Manager in the flows (F-KMS-1, F-KMS-4): read by name through the
SecretsPort, kept no longer than the TTL, and never in a log line or an audit event."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from gwlb_fleet import logs
from gwlb_fleet.panos import bootstrap
from tests.functional.world import GROUP, World

AUTHCODES_SECRET = "gwlb-fleet/bootstrap-authcodes"
TTL_S = 600


def renewing_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """A VM-Series fleet whose reconcile rewrites the bootstrap at every run (a one-hour
    vm-auth-key renewed an hour before it expires), with its auth codes in KMS."""
    world = World(
        tmp_path,
        monkeypatch,
        kind="vmseries",
        scaling_configuration_id=f"asc-{GROUP}",
        bootstrap_panorama_server="10.0.0.5",
        bootstrap_authcodes_secret=AUTHCODES_SECRET,
        vm_auth_key_lifetime_hours=1,
        vm_auth_key_renew_before_s=3600,
        secret_cache_ttl_s=TTL_S,
    )
    world.cloud.kms.put_secret(AUTHCODES_SECRET, "I1234567-first")
    return world


def authcodes_in_user_data(world: World) -> str:
    init_cfg = bootstrap.parse(base64.b64decode(world.cloud.ess.user_data[f"asc-{GROUP}"]).decode())
    return init_cfg["authcodes"]


def test_a_rotated_secret_is_picked_up_after_the_ttl_and_not_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = renewing_world(tmp_path, monkeypatch)
    world.invoke("reconcile", world.timer())
    assert authcodes_in_user_data(world) == "I1234567-first"
    assert world.cloud.kms.calls == ["GetSecretValue"]

    world.cloud.kms.put_secret(AUTHCODES_SECRET, "I7654321-second")  # rotated in KMS
    world.clock.advance(TTL_S - 60)
    world.invoke("reconcile", world.timer())
    assert authcodes_in_user_data(world) == "I1234567-first"  # still within the TTL: the cache
    assert world.cloud.kms.calls == ["GetSecretValue"]

    world.clock.advance(60)
    world.invoke("reconcile", world.timer())
    assert authcodes_in_user_data(world) == "I7654321-second"  # TTL over: read anew
    assert world.cloud.kms.calls == ["GetSecretValue", "GetSecretValue"]


def test_a_missing_secret_fails_the_renewal_loudly_and_keeps_the_old_bootstrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = renewing_world(tmp_path, monkeypatch)
    world.cloud.kms.secrets.clear()
    before = dict(world.cloud.ess.user_data)
    world.invoke("reconcile", world.timer())
    assert world.cloud.ess.user_data == before
    failed = [e for e in world.audit.events if e.action == "renew_vm_auth_key"]
    assert failed and failed[-1].outcome == "failed" and "ResourceNotFound" in failed[-1].reason


def test_no_log_line_and_no_audit_event_holds_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything any library says, SDK debug included
    world = renewing_world(tmp_path, monkeypatch)
    world.invoke("reconcile", world.timer())
    world.cloud.kms.put_secret(AUTHCODES_SECRET, "I7654321-second")
    world.clock.advance(TTL_S)
    world.invoke("reconcile", world.timer())
    assert authcodes_in_user_data(world) == "I7654321-second"  # the secrets were really used

    formatter = logs.JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert any("secret read" in line and AUTHCODES_SECRET in line for line in lines)  # names are fine
    for value in ("I1234567-first", "I7654321-second"):
        assert not [line for line in lines if value in line], f"a log line holds the secret {value}"
        assert not [e for e in world.audit.events if value in repr(e)], f"an audit event holds {value}"
