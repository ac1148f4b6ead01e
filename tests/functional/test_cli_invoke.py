"""``gwlb-fleet invoke FUNCTION --event FILE --fakes``: the real handlers, over the in-memory fakes,
on the example events under tests/events. The JSON log lines go to stderr, the result to stdout."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gwlb_fleet import cli
from gwlb_fleet.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"
EXAMPLES = {
    "mns-cms-alarm-scale-out-active-flows.json": "scale",
    "mns-cms-alarm-scale-in-ok.json": "scale",
    "mns-cms-alarm-base64-body.json": "scale",
    "mns-cms-alarm-batch.json": "scale",
    "mns-cms-alarm-doc-example.json": "scale",  # not a scaling rule: an audited no-op
    "mns-cms-alarm-gwlb-unhealthy.json": "health",
    "ess-lifecycle-scale-out.json": "lifecycle",
    "ess-lifecycle-scale-in-content.json": "lifecycle",
    "ess-lifecycle-pascal-case.json": "lifecycle",
    "ess-lifecycle-no-token.json": "lifecycle",
    "ess-lifecycle-test.json": "lifecycle",
    "timer-reconcile.json": "reconcile",
}
BAD = {  # example -> (function, the field named, the event id logged)
    "bad/alarm-body-not-json.json": ("scale", "data.messageBody", "bad-alarm-1"),
    "bad/alarm-no-cur-level.json": ("scale", "data.messageBody.curLevel", "bad-alarm-2"),
    "bad/alarm-resources-not-json.json": ("health", "data.messageBody.resources", "bad-alarm-3"),
    "bad/alarm-unknown-level.json": ("scale", "data.messageBody.curLevel", "bad-alarm-4"),
    "bad/lifecycle-no-group.json": ("lifecycle", "data.scalingGroupId", "bad-2"),
    "bad/envelope-no-id.json": ("lifecycle", "id", ""),
    "bad/unknown-type.json": ("health", "type", "bad-4"),
    "bad/not-json.json": ("reconcile", "", ""),
}


class Run:
    def __init__(self, status: int, stdout: str, stderr: str) -> None:
        self.status, self.stdout, self.stderr = status, stdout, stderr

    @property
    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stderr.splitlines() if line.startswith("{")]

    @property
    def result(self) -> dict[str, Any]:
        value = json.loads(self.stdout)
        assert isinstance(value, dict)
        return value

    def logged(self, message: str) -> dict[str, Any]:
        found = [entry for entry in self.logs if entry["msg"] == message]
        assert found, f"no log line {message!r} in:\n{self.stderr}"
        return found[-1]


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No fleet settings from the machine's environment; the root logger as pytest left it."""
    for field in Settings.model_fields.values():
        monkeypatch.delenv(str(field.validation_alias), raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def invoke(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    status = cli.main(["invoke", *args])
    captured = capsys.readouterr()
    return Run(status, captured.out, captured.err)


@pytest.mark.parametrize(("example", "function"), sorted(EXAMPLES.items()))
def test_every_example_runs_over_the_fakes(
    example: str, function: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = invoke(capsys, function, "--event", str(EVENTS / example), "--fakes", "--request-id", "req-1")
    assert run.status == 0, run.stderr
    assert isinstance(run.result, dict)
    loaded = json.loads((EVENTS / example).read_text())
    batch = loaded if isinstance(loaded, list) else [loaded]  # a batch: one correlation id each
    correlations = {e.get("id") or f"timer/{e.get('triggerName')}/{e.get('triggerTime')}" for e in batch}
    bound = [entry for entry in run.logs if "correlation_id" in entry]
    for entry in bound:
        assert (entry["function"], entry["request_id"]) == (function, "req-1"), entry
        assert entry["correlation_id"] in correlations, entry
    if len(batch) > 1:
        assert len(run.result["results"]) == len(batch)


def test_a_scale_out_alarm_scales_the_fake_group_out(capsys: pytest.CaptureFixture[str]) -> None:
    example = EVENTS / "mns-cms-alarm-scale-out-active-flows.json"
    run = invoke(capsys, "scale", "--event", str(example), "--fakes")
    assert run.status == 0, run.stderr
    assert run.result["decision"] == "out"
    assert "ScaleWithAdjustment" in run.logged("fakes: API calls made")["calls"]["ess"]
    assert any(line.startswith("scale_out ok") for line in run.logged("fakes: audit log")["audit"])
    decision = next(e for e in run.logs if e["logger"] == "gwlb_fleet.workflows" and "scale_out" in e["msg"])
    assert decision["correlation_id"] == "7b1c9e52-3f0a-4d8e-9a61-2c4b5d6e7f80"


def test_a_batch_of_two_scale_out_alarms_scales_out_once_for_the_cooldown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = invoke(capsys, "scale", "--event", str(EVENTS / "mns-cms-alarm-batch.json"), "--fakes")
    assert run.status == 0, run.stderr
    assert [r["decision"] for r in run.result["results"]] == ["out", "none"]
    assert "cooldown" in run.result["results"][1]["reason"]


@pytest.mark.parametrize(("example", "expected"), sorted(BAD.items()))
def test_a_bad_event_names_its_field_and_touches_nothing(
    example: str, expected: tuple[str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    function, field, event_id = expected
    run = invoke(capsys, function, "--event", str(EVENTS / example), "--fakes")
    assert run.status == cli.EXIT_BAD_EVENT
    rejected = run.logged("rejecting an event that does not parse")
    assert (rejected["event_id"], rejected["field"]) == (event_id, field)
    assert f"(field {field})" in run.stderr if field else "does not parse" in run.stderr
    assert run.stdout == ""
    assert not any(run.logged("fakes: API calls made")["calls"].values())
    assert run.logged("fakes: audit log")["audit"] == []


def test_an_event_meant_for_another_function_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    run = invoke(capsys, "scale", "--event", str(EVENTS / "ess-lifecycle-scale-out.json"), "--fakes")
    assert run.status == cli.EXIT_BAD_EVENT
    assert run.logged("rejecting an event meant for another function")["event_id"]
    assert "(field type)" in run.stderr


def test_the_env_file_gives_the_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env_file = tmp_path / "fleet.env"
    env_file.write_text("SCALING_GROUP_ID=asg-another-fleet\nAPPLIANCE_KIND=linux\n")
    example = EVENTS / "ess-lifecycle-scale-out.json"
    run = invoke(capsys, "lifecycle", "--event", str(example), "--fakes", "--env-file", str(env_file))
    assert run.status == 0, run.stderr
    assert run.result == {"ignored": "asg-bp1gwlbfleet0001"}, "the hook's group is not the env file's"


def test_missing_settings_are_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    env_file = tmp_path / "fleet.env"
    env_file.write_text("FLEET_REGION=cn-hangzhou\n")
    run = invoke(
        capsys,
        "scale",
        "--event",
        str(EVENTS / "mns-cms-alarm-scale-out-active-flows.json"),
        "--env-file",
        str(env_file),
    )
    assert run.status == cli.EXIT_CONFIG
    for variable in ("SCALING_GROUP_ID", "GWLB_SERVER_GROUP_ID", "GWLB_LISTENER_ID"):
        assert variable in run.stderr
    assert "FLEET_REGION" not in run.stderr


def test_a_failing_handler_exits_non_zero_with_the_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def app_with_a_refusing_audit_log(settings: Settings, state_dir: Path) -> Any:
        app = real_fake_app(settings, state_dir)
        app.audit.fault = "Unauthorized"  # SLS refuses every write: a decision cannot be recorded
        return app

    real_fake_app = cli.fake_app
    monkeypatch.setattr(cli, "fake_app", app_with_a_refusing_audit_log)
    run = invoke(
        capsys, "scale", "--event", str(EVENTS / "mns-cms-alarm-scale-out-active-flows.json"), "--fakes"
    )
    assert run.status == cli.EXIT_FAILED
    assert "PermanentError" in run.stderr and "Unauthorized" in run.stderr
    assert run.logged("the handler failed")["error_type"] == "PermanentError"
    assert run.stdout == ""


def test_the_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "gwlb-fleet"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gwlb_fleet.cli"]
    done = subprocess.run(
        [*command, "invoke", "reconcile", "--event", str(EVENTS / "timer-reconcile.json"), "--fakes"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert "drift" in json.loads(done.stdout)
    assert all(json.loads(line)["level"] for line in done.stderr.splitlines())
