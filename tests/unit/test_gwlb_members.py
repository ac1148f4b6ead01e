"""Where the emulator's members come from (MemberSource) and where its health results go:
a static list, a members file, and the lab cloud's in-memory GWLB (FakeGwlb)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gwlb_fleet.alibaba.fakes.gwlb import FakeGwlb
from gwlb_lab.gwlb.cli import build_parser, config_from, source_from
from gwlb_lab.gwlb.config import EmulatorConfig
from gwlb_lab.gwlb.health import CONNECT_FAIL, CheckResult, HealthCheckSettings
from gwlb_lab.gwlb.members import (
    FakeGwlbMembers,
    FileMembers,
    Member,
    MemberSet,
    SourceMember,
    StaticMembers,
    parse_member,
)
from gwlb_lab.gwlb.service import GwlbEmulator

GROUP, LISTENER = "sgp-fleet", "lsn-fleet"


class Probe:
    """Passes for the member ids in ``passing``."""

    def __init__(self) -> None:
        self.passing: set[str] = set()

    def __call__(self, member: Member) -> CheckResult:
        if member.member_id in self.passing:
            return CheckResult(True, "http 200 ok")
        return CheckResult(False, "tcp 8080: Connection refused", CONNECT_FAIL)


def emulator_over(source: object, **config: object) -> tuple[GwlbEmulator, Probe]:
    probe = Probe()
    settings = {"health": HealthCheckSettings(interval=1.0, healthy_threshold=2, unhealthy_threshold=2),
                **config}
    # A clock that stands still at 0: the tests run the checks due at the times they name.
    return GwlbEmulator(EmulatorConfig(**settings), source, probe=probe,  # type: ignore[arg-type]
                        clock=lambda: 0.0), probe


def listener_health(gwlb: FakeGwlb) -> dict[str, tuple[str, str]]:
    """GetListenerHealthStatus as the API answers it: server id -> (status, reason code)."""
    answer = gwlb.api_get_listener_health_status(LISTENER, 100)
    return {s["ServerId"]: (s["Status"], s.get("Reason", {}).get("ReasonCode", ""))
            for info in answer["ListenerHealthStatus"][0]["ServerGroupInfos"] for s in info["Servers"]}


def add(gwlb: FakeGwlb, *servers: tuple[str, str]) -> None:
    gwlb.api_add_servers_to_server_group(
        GROUP, [{"ServerId": i, "ServerIp": ip, "ServerType": "Ecs", "Port": 6081} for i, ip in servers])


def test_the_fake_gwlb_drives_membership_and_receives_the_health_found() -> None:
    gwlb = FakeGwlb(add_polls=2, remove_polls=1, drain_polls=2)
    gwlb.create_server_group(GROUP, LISTENER)
    emulator, probe = emulator_over(FakeGwlbMembers(gwlb, GROUP, LISTENER))
    add(gwlb, ("i-a", "198.19.0.11"), ("i-b", "198.19.0.12"))

    emulator.sync()
    assert {m.member_id: (m.status, m.health) for m in emulator.members} == {
        "i-a": ("Adding", "initial"), "i-b": ("Adding", "initial")}
    assert listener_health(gwlb) == {"i-a": ("Initial", ""), "i-b": ("Initial", "")}
    calls = list(gwlb.calls)
    for _ in range(5):
        emulator.sync()
    assert gwlb.calls == calls  # the emulator's reads are not API reads: they move nothing
    assert {m.status for m in emulator.members} == {"Adding"}

    # Checked while Adding: healthy before it is in service, but no flows until Available.
    probe.passing = {"i-a", "i-b"}
    emulator.checker.run_due(0.0)
    emulator.checker.run_due(1.0)
    assert listener_health(gwlb) == {"i-a": ("Healthy", ""), "i-b": ("Healthy", "")}
    assert emulator.members.candidates() == []
    gwlb.tick()
    gwlb.tick()
    emulator.sync()
    assert {m.member_id for m in emulator.members.candidates()} == {"i-a", "i-b"}

    # i-b's appliance dies: Unhealthy with a reason, counted for the UnHealthyServerCount metric.
    probe.passing = {"i-a"}
    emulator.checker.run_due(2.0)
    assert emulator.unhealthy_count() == 0
    emulator.checker.run_due(3.0)
    assert listener_health(gwlb)["i-b"] == ("Unhealthy", CONNECT_FAIL)
    assert emulator.unhealthy_count() == 1
    assert emulator.health() == [{"server_id": "i-a", "status": "Healthy", "reason": ""},
                                 {"server_id": "i-b", "status": "Unhealthy", "reason": CONNECT_FAIL}]
    assert [m.member_id for m in emulator.members.candidates()] == ["i-a"]

    # The control plane removes it: Removing, then Draining (one drain), then gone.
    gwlb.api_remove_servers_from_server_group(GROUP, [{"ServerId": "i-b", "ServerType": "Ecs"}])
    emulator.sync()
    leaving = emulator.members.get("i-b")
    assert leaving is not None and leaving.status == "Removing" and leaving.leaving_since is not None
    since = leaving.leaving_since
    gwlb.tick()
    emulator.sync()
    assert (leaving.status, leaving.leaving_since) == ("Draining", since)
    gwlb.tick()
    gwlb.tick()
    changes = emulator.sync()
    assert changes.removed == [leaving] and emulator.members.get("i-b") is None
    assert [m.member_id for m in emulator.checker.watched()] == ["i-a"]
    assert emulator.unhealthy_count() == 0

    # Added back: a new member, checked from scratch.
    add(gwlb, ("i-b", "198.19.0.12"))
    emulator.sync()
    assert listener_health(gwlb)["i-b"] == ("Initial", "")


def test_a_missing_server_group_has_no_members() -> None:
    assert FakeGwlbMembers(FakeGwlb(), "sgp-none", LISTENER).members() == []


def test_with_health_checks_off_members_are_in_service_and_reported_unavailable() -> None:
    gwlb = FakeGwlb(add_polls=0)
    gwlb.create_server_group(GROUP, LISTENER)
    add(gwlb, ("i-a", "198.19.0.11"))
    gwlb.tick()
    emulator, _ = emulator_over(FakeGwlbMembers(gwlb, GROUP, LISTENER),
                                health=HealthCheckSettings(enabled=False))
    emulator.sync()
    assert [m.member_id for m in emulator.members.candidates()] == ["i-a"]
    assert listener_health(gwlb) == {"i-a": ("Unavailable", "")}
    assert emulator.checker.watched() == []


def test_static_members_change_in_process_and_keep_the_reports() -> None:
    source = StaticMembers.parse(["nva-1=198.19.0.11", "nva-2=198.19.0.12:6081"])
    emulator, _ = emulator_over(source)
    emulator.sync()
    assert source.reported == {"nva-1": ("Initial", ""), "nva-2": ("Initial", "")}
    source.set_status("nva-1", "Draining")
    source.put(SourceMember("nva-2", "198.19.0.22"))  # a new address: a new member
    changes = emulator.sync()
    assert [(m.member_id, was) for m, was in changes.status_changed] == [("nva-1", "Available")]
    assert [m.address for m in changes.removed] == ["198.19.0.12"]
    assert [m.address for m in changes.added] == ["198.19.0.22"]
    source.discard("nva-1")
    emulator.sync()
    assert [m.member_id for m in emulator.members] == ["nva-2"]


def write_atomically(path: Path, members: list[dict[str, object]]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(members))
    os.replace(partial, path)


def test_a_members_file_is_reread_when_it_changes_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "members.json"
    write_atomically(path, [{"server_id": "nva-1", "ip": "198.19.0.11"},
                            {"server_id": "nva-2", "ip": "198.19.0.12", "status": "Available"}])
    source = FileMembers(path)
    assert [m.status for m in source.members()] == ["Available", "Available"]
    write_atomically(path, [{"server_id": "nva-1", "ip": "198.19.0.11", "status": "Draining"}])
    assert source.members() == [SourceMember("nva-1", "198.19.0.11", 6081, "Draining")]
    path.write_text("[{")  # broken: the last good list stays
    assert source.members() == [SourceMember("nva-1", "198.19.0.11", 6081, "Draining")]
    path.unlink()
    assert len(source.members()) == 1

    for bad, why in (
        ("{}", "must hold a JSON list"),
        ('[{"server_id": "x", "ip": "nowhere"}]', "member 0: 'nowhere' is not an IPv4 address"),
        ('[{"ip": "198.19.0.11"}]', "member 0: server_id must be"),
        ('[{"server_id": "x", "ip": "198.19.0.11", "status": "Sleeping"}]', "member 0: status must be"),
    ):
        path.write_text(bad)
        with pytest.raises(ValueError, match=why):
            FileMembers(path)


def test_member_set_sync_starts_leaving_members_with_their_drain_clock() -> None:
    members = MemberSet()
    changes = members.sync([SourceMember("a", "198.19.0.11", status="Draining")], now=5.0)
    (added,) = changes.added
    assert added.leaving and added.leaving_since == 5.0 and added.health_since == 5.0
    members.sync([SourceMember("a", "198.19.0.11", status="Available")], now=6.0)
    assert added.leaving_since is None


def test_parse_member_specs() -> None:
    assert parse_member("nva-1=198.19.0.11:7000").port == 7000
    for bad, why in (
        ("198.19.0.11", "is not ID=ADDRESS"),
        ("nva=", "is not ID=ADDRESS"),
        ("nva=not-an-ip", "'not-an-ip' is not an IPv4 address"),
        ("nva=198.19.0.11:x", "'x' is not a port"),
    ):
        with pytest.raises(ValueError, match=why):
            StaticMembers.parse([bad])


def test_command_line_settings(tmp_path: Path) -> None:
    args = build_parser().parse_args([
        "--member", "nva-1=198.19.0.11", "--scheduler", "2TCH", "--failover-mode", "Rebalance",
        "--drain-timeout", "1.5", "--health-protocol", "tcp", "--health-interval", "0.3",
        "--unhealthy-threshold", "3", "--layout", "opaque", "--poll-interval", "0.2"])
    config = config_from(args)
    assert (config.scheduler, config.failover_mode, config.drain_timeout) == ("2TCH", "Rebalance", 1.5)
    assert (config.health.protocol, config.health.interval, config.health.unhealthy_threshold) == (
        "tcp", 0.3, 3)
    assert config.encapsulator.layout == "opaque" and config.poll_interval == 0.2
    assert isinstance(source_from(args), StaticMembers)

    path = tmp_path / "members.json"
    write_atomically(path, [{"server_id": "nva-1", "ip": "198.19.0.11"}])
    args = build_parser().parse_args(["--members-file", str(path), "--health-protocol", "off",
                                      "--no-connection-drain"])
    config = config_from(args)
    assert not config.health.enabled and not config.connection_drain
    assert isinstance(source_from(args), FileMembers)
    with pytest.raises(ValueError, match="healthy_threshold 1 is not 2-10"):
        config_from(build_parser().parse_args(["--member", "a=198.19.0.11", "--healthy-threshold", "1"]))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--member", "a=198.19.0.11", "--members-file", str(path)])
