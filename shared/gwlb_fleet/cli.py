"""``gwlb-fleet``: the control plane's functions, run on this machine.

    gwlb-fleet invoke FUNCTION --event FILE [--fakes] [--env-file FILE] [--timeout S]
    gwlb-fleet setup [--plan] [--env-file FILE]      (gwlb_fleet.deploy)
    gwlb-fleet teardown [--plan] [--env-file FILE]
    gwlb-fleet preflight [--env-file FILE]             (read-only account checks)

runs ``gwlb_functions.<FUNCTION>.handler`` on the bytes of FILE as FC would: the same frame, with a
context that has a request id and the time left. The JSON log lines go to stderr as they happen;
the result goes to stdout as JSON. Exit status: 0 done, 1 the handler failed, 65 the event does not
parse (FC would send it to the dead letter), 78 the settings are wrong.

Where its ports lead:

- by default, wherever the settings say: the environment, over ``--env-file``, over the defaults —
  the real services, or the lab's local servers (``GWLB_ENDPOINT=127.0.0.1:PORT``,
  ``API_PROTOCOL=http``, ...);
- with ``--fakes``, to the in-memory fakes of ``gwlb_fleet.fakes`` and a state store in a temporary
  SQLite file: nothing leaves this process. The fleet's ids default to those of the examples under
  tests/events, so that they run as they are.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from gwlb_fleet import logs
from gwlb_fleet.errors import BadEvent, FleetError
from gwlb_fleet.settings import Settings

if TYPE_CHECKING:
    from gwlb_fleet.app import App

log = logging.getLogger("gwlb_fleet.cli")

FUNCTIONS = ("lifecycle", "scale", "health", "reconcile")
EXIT_FAILED = 1
EXIT_BAD_EVENT = 65  # EX_DATAERR
EXIT_CONFIG = 78  # EX_CONFIG

# --fakes: the fleet the examples under tests/events describe, unless the environment says otherwise.
FAKE_FLEET = {
    "FLEET_REGION": "cn-hangzhou",
    "SCALING_GROUP_ID": "asg-bp1gwlbfleet0001",
    "GWLB_SERVER_GROUP_ID": "sgp-bp1example0001",
    "GWLB_LISTENER_ID": "lsn-bp1example0001",
}

FAKE_GROUP_SIZE = 2  # appliances in the fake scaling group at the start


class SetupError(Exception):
    """What is wrong before the handler runs: settings, the event file, a missing fake."""


@dataclass
class LocalContext:
    """The parts of FC's invocation context that the handlers read."""

    request_id: str
    function_name: str
    timeout_s: float
    region: str
    started: float = field(default_factory=time.monotonic)

    @property
    def function(self) -> dict[str, Any]:
        return {"name": self.function_name, "timeout": self.timeout_s}

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


# --- settings --------------------------------------------------------------------------------------


def load_settings(env_file: Path | None, fakes: bool) -> Settings:
    if env_file is not None and not env_file.is_file():
        raise SetupError(f"--env-file {env_file}: no such file")
    # The environment, then the env file, then (with --fakes) the example fleet's ids.
    sources = [os.environ, read_env_file(env_file) if env_file else {}, FAKE_FLEET if fakes else {}]
    try:
        return Settings.from_environ(*sources)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise SetupError(f"settings: {problems}") from None


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines (``export`` and quotes allowed, ``#`` comments), as a shell reads them."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not name.strip().isidentifier():
            raise SetupError(f"--env-file {path}, line {number}: not NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


# --- the app ----------------------------------------------------------------------------------------


def fake_app(settings: Settings, state_dir: Path) -> App:
    """An App whose every port is an in-memory fake, and whose state is a temporary SQLite file.

    The fake fleet is the one the settings describe: the scaling group (two appliances, launch and
    terminate hooks), the GWLB server group behind the listener (gwlb_fleet.alibaba.fakes.cloud), Panorama
    with the device group, template stack and licence manager, and appliances that answer healthy.
    """
    from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
    from gwlb_fleet.app import App
    from gwlb_fleet.appliance.fakes import FakeAppliances
    from gwlb_fleet.panos.fakes import FakeLicensing, FakePanorama
    from gwlb_fleet.sls.fakes.auditlog import FakeAuditLog
    from gwlb_fleet.state.sqlite import SqliteStateStore

    cloud = FakeCloud()
    cloud.seed_fleet(
        settings.scaling_group_id,
        settings.server_group_id,
        settings.listener_id,
        min_size=1,
        max_size=2 * FAKE_GROUP_SIZE,
        desired=FAKE_GROUP_SIZE,
    )
    appliances = FakeAppliances()
    for instance in cloud.ecs.instances.values():
        appliances.set(instance.data_ip or instance.private_ip, healthy=True)
    license_manager = settings.license_manager or "gwlb-lm"
    panorama = FakePanorama(
        device_groups=(settings.device_group or "gwlb-fw",),
        template_stacks=(settings.template_stack or "gwlb-stack",),
        license_managers=(license_manager,),
    )
    return App(
        settings,
        state=SqliteStateStore(state_dir / "state.db"),
        gwlb=cloud.gwlb,
        ess=cloud.ess,
        ecs=cloud.ecs,
        monitor=cloud.cms,
        scheduler=cloud.fc,
        appliance=appliances,
        panorama=panorama,
        licensing=FakeLicensing(panorama, license_manager),
        audit=FakeAuditLog(),
    )


def report_fakes(app: App) -> None:
    """After the invocation: what the fleet's fakes were asked and what the audit log holds."""
    calls = {}
    for port in ("ess", "ecs", "gwlb", "monitor", "scheduler", "panorama"):
        recorded = getattr(getattr(app, port), "calls", None)
        if isinstance(recorded, list):
            calls[port] = list(recorded)
    log.info("fakes: API calls made", extra={"calls": calls})
    scheduled = getattr(app.scheduler, "scheduled", [])
    if scheduled:
        later = [
            f"{call.function} in {call.delay_s} s: {call.payload.decode(errors='replace')}"
            for call in scheduled
        ]
        log.info("fakes: invocations scheduled for later", extra={"scheduled": later})
    events = getattr(app.audit, "events", [])
    audit = [f"{e.action} {e.outcome} {e.instance_id}: {e.reason}".replace("  ", " ") for e in events]
    log.info("fakes: audit log", extra={"audit": audit})


# --- invoke -------------------------------------------------------------------------------------------


def invoke(args: argparse.Namespace) -> int:
    event_file: Path = args.event
    try:
        raw = event_file.read_bytes()
    except OSError as exc:
        raise SetupError(f"--event {event_file}: {exc.strerror}") from None
    settings = load_settings(args.env_file, args.fakes)
    handler = importlib.import_module(f"gwlb_functions.{args.function}").handler
    context = LocalContext(
        request_id=args.request_id or f"local-{uuid.uuid4()}",
        function_name=args.function,
        timeout_s=args.timeout or settings.function_timeout_s,
        region=settings.region,
    )
    from gwlb_fleet.app import App, serving

    with contextlib.ExitStack() as stack:
        if args.fakes:
            state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gwlb-fleet-fakes-")))
            app = fake_app(settings, state_dir)
        else:
            app = App(settings)
        # The handler frame takes the process's App (gwlb_fleet.app.get_app): for this invocation, ours.
        stack.enter_context(serving(app))
        if args.fakes:
            stack.callback(report_fakes, app)
        try:
            result = handler(raw, context)
        except BadEvent as exc:  # the frame has logged it, with the event id and the field
            where = f" (field {exc.field})" if exc.field else ""
            print(f"gwlb-fleet: {args.function}: the event does not parse{where}: {exc}", file=sys.stderr)
            return EXIT_BAD_EVENT
        except FleetError as exc:
            log.error("the handler failed", extra={"error": str(exc), "error_type": type(exc).__name__})
            print(f"gwlb-fleet: {args.function}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except Exception as exc:
            log.exception("the handler failed", extra={"error_type": type(exc).__name__})
            print(f"gwlb-fleet: {args.function}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_FAILED
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return 0


# --- setup / teardown -------------------------------------------------------------------------------


def deploy(args: argparse.Namespace) -> int:
    """``setup`` / ``teardown`` (gwlb_fleet.deploy): every call printed; with --plan, none made."""
    from gwlb_fleet.deploy import cloud, run

    settings = load_settings(args.env_file, fakes=False)
    x = cloud.executor(settings, planning=args.plan)
    action = run.setup if args.command == "setup" else run.teardown
    try:
        action(settings, x)
    except FleetError as exc:
        for line in x.report:
            print(line)
        print(f"gwlb-fleet: {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.plan:
        for call in x.calls:
            print(call)
        for line in x.report:  # what teardown keeps (secrets, dead-letter queue, logstores, tables)
            if line.startswith("kept:"):
                print(line)
    else:
        for line in x.report:
            print(line)
    return 0


def preflight(args: argparse.Namespace) -> int:
    """``preflight`` (gwlb_fleet.deploy.preflight): one PASS/FAIL line per check, with the fix; exit
    0 all pass, 2 a check failed, 1 a service could not be read (the ERROR line names it)."""
    from gwlb_fleet.deploy import preflight as checks

    settings = load_settings(args.env_file, fakes=False)
    try:
        apis = checks.apis(settings)
    except FleetError as exc:
        print(f"gwlb-fleet: preflight: {exc}", file=sys.stderr)
        return checks.EXIT_ERROR
    results = checks.run(settings, apis)
    for result in results:
        print(result.line())
    return checks.exit_status(results)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="gwlb-fleet", description="gwlb-fleet's control plane, locally")
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "invoke",
        help="run a function's FC handler on an event file",
        description="Run functions.FUNCTION.handler on the event's bytes, as FC would.",
    )
    run.add_argument("function", choices=FUNCTIONS)
    run.add_argument("--event", type=Path, required=True, help="the event, as FC would deliver it (JSON)")
    run.add_argument("--fakes", action="store_true", help="in-memory fakes for every port; nothing leaves")
    run.add_argument("--env-file", type=Path, help="settings as KEY=VALUE lines (the environment wins)")
    run.add_argument("--timeout", type=float, help="seconds the invocation has (default FUNCTION_TIMEOUT_S)")
    run.add_argument("--request-id", help="FC's request id (default: a new one)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    for name, text in (
        ("setup", "create what the fc3 component cannot (queues, alarm rules, hooks, SLS, tables)"),
        ("teardown", "remove what setup made (SLS and Tablestore data are kept)"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument(
            "--plan", action="store_true", help="print every call with its parameters; make none"
        )
        command.add_argument(
            "--env-file", type=Path, help="settings as KEY=VALUE lines (the environment wins)"
        )
        command.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    text = "read-only checks of the account against what the fleet needs, each PASS/FAIL with the fix"
    command = commands.add_parser("preflight", help=text, description=text)
    command.add_argument("--env-file", type=Path, help="settings as KEY=VALUE lines (the environment wins)")
    command.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.configure(args.log_level, sys.stderr)
    try:
        if args.command == "preflight":
            return preflight(args)
        return deploy(args) if args.command in ("setup", "teardown") else invoke(args)
    except SetupError as exc:
        print(f"gwlb-fleet: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
