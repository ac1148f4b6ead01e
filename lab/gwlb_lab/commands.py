"""``scripts/lab``'s commands for the whole system.

- ``run``: bring the lab up, run the scenario (gwlb_lab.scenario) with the live view, print the report,
  tear everything down — also when a step fails or on Ctrl-C.
- ``up``: bring it up with two appliances and normal load, and leave it running; then ``status``,
  ``load N``, ``kill|pause|resume nva-N``, ``audit`` and ``down`` act on it. They act on a ``run``
  in progress too (its own terminal shows what happens).
- ``down``: stop what ``up`` or a crashed run left: the cloud first (the agents flush their flow
  records), then every recorded process and every ``gf...`` namespace of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from gwlb_lab import control, netns, report
from gwlb_lab.cloud.config import FleetPlan, LabKind
from gwlb_lab.fleetlab import FleetLab, FleetLabSpec
from gwlb_lab.liveview import LiveView
from gwlb_lab.scenario import Measurements, Scenario, ScenarioSettings
from gwlb_lab.topology import REPO, LabError

STATE_ROOT = REPO / ".lab"
UP_RUN_ID = "up"


def run(out: TextIO = sys.stdout, live: bool | None = None,
        settings: ScenarioSettings | None = None, kind: LabKind = "vmseries") -> int:
    run_id = str(os.getpid())
    _prune_state_dirs()
    run_dir = STATE_ROOT / f"run-{run_id}"
    view = LiveView(out, live)
    lab = FleetLab(FleetLabSpec(run_dir=run_dir, run_id=run_id, owned=True,
                                plan=FleetPlan.of_kind(kind)))
    scenario = Scenario(lab, view, settings)
    view.phase("gwlb-fleet lab: the whole system on this machine, no cloud account")
    with _signals_interrupt():
        try:
            scenario.run()
        except LabError as exc:
            view.fail(str(exc))
        except KeyboardInterrupt:
            view.fail("interrupted")
        except Exception as exc:  # noqa: BLE001 - reported as a failed step, then torn down
            (run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
            view.fail(f"{type(exc).__name__}: {exc} (traceback in {_relative(run_dir)}/error.log)")
        finally:
            view.phase("Teardown")
            left = lab.close()
            if left:
                view.fail(f"namespaces left behind: {', '.join(left)} (run scripts/lab down)")
            else:
                view.ok("every namespace and process of the lab removed")
            view.close()
    measurements: Measurements = scenario.m
    report.write(measurements, lab.spec.timings, out, run_dir)
    summary = json.dumps(report.summary(measurements), indent=1, default=str)
    (run_dir / "report.json").write_text(summary + "\n", encoding="utf-8")
    print(f"\nLogs, flow records and the full audit answers: {_relative(run_dir)}", file=out)
    if view.failures:
        print(f"\n✗ {view.failures} step(s) failed", file=out)
        return 1
    print("\n✓ every step passed", file=out)
    return 0


def up(out: TextIO = sys.stdout, kind: LabKind = "vmseries") -> int:
    prefix = f"{netns.PREFIX}{UP_RUN_ID}-"
    if netns.list_namespaces(prefix):
        print(f"scripts/lab: a lab is already up ({prefix}*): scripts/lab down first", file=out)
        return 1
    run_dir = STATE_ROOT / UP_RUN_ID
    shutil.rmtree(run_dir, ignore_errors=True)
    view = LiveView(out, live=False)
    lab = FleetLab(FleetLabSpec(run_dir=run_dir, run_id=UP_RUN_ID, owned=False,
                                plan=FleetPlan.of_kind(kind)))
    scenario = Scenario(lab, view)
    view.phase("gwlb-fleet lab: up")
    with _signals_interrupt():
        try:
            scenario.bring_up()
            scenario.traffic()
        except (LabError, KeyboardInterrupt) as exc:
            view.fail(str(exc) or "interrupted")
            lab.close()
            return 1
    lab.record_processes()
    lines = [
        "",
        "The lab is running. Try:",
        "  scripts/lab status              the fleet now (--watch: refreshed every second)",
        "  scripts/lab load 48             48 client connections: the scale-out alarm fires",
        "  scripts/lab kill nva-1          kill an appliance's agent (pause / resume: SIGSTOP / SIGCONT)",
        "  scripts/lab load 4              little load: the scale-in alarm fires",
        "  scripts/lab audit               every audit query against the lab's SLS",
        f"  ip netns exec {lab.base.client.name} curl http://198.18.2.2/",
        f"  logs: {_relative(run_dir)}/*.log (cloud.log: the control plane's JSON lines)",
        "Tear down: scripts/lab down",
    ]
    print("\n".join(lines), file=out)
    return 0


def _running(state_root: Path = STATE_ROOT) -> Path:
    """The run directory of the lab to act on: ``up``'s, else the newest run still answering."""
    candidates = [state_root / UP_RUN_ID, *sorted(state_root.glob("run-*"), key=lambda p: p.stat().st_mtime,
                                                  reverse=True)]
    for run_dir in candidates:
        sock = run_dir / "cloud.sock"
        if sock.exists():
            with contextlib.suppress(OSError, control.ControlError):
                control.call(sock, "GET", "/status", timeout=10)
                return run_dir
    raise LabError("no lab is running: scripts/lab up (or scripts/lab run in another terminal)")


def status(out: TextIO = sys.stdout, watch: bool = False) -> int:
    run_dir = _running()
    view = LiveView(out, live=out.isatty())
    while True:
        state = control.call(run_dir / "cloud.sock", "GET", "/status", timeout=10)
        load: dict[str, Any] = {}
        with contextlib.suppress(OSError, control.ControlError):
            load = control.call(run_dir / "load.sock", "GET", "/stats")
        view.update(state, load, "")
        if not (watch and view.live):
            view.live = False
            print("\n".join(view.screen()), file=out)
            return 0
        time.sleep(1)


def set_load(connections: int, out: TextIO = sys.stdout) -> int:
    run_dir = _running()
    control.call(run_dir / "load.sock", "POST", "/load", {"connections": connections})
    print(f"clients: {connections} connections", file=out)
    return 0


def appliance(action: str, name: str, out: TextIO = sys.stdout) -> int:
    run_dir = _running()
    answer = control.call(run_dir / "cloud.sock", "POST", f"/{action}", {"appliance": name})
    print(f"{action}: {answer['appliance']} ({answer['instance_id']}) at "
          f"{time.strftime('%H:%M:%S', time.localtime(answer['at']))}", file=out)
    return 0


def audit(out: TextIO = sys.stdout, since_s: float = 3600.0) -> int:
    run_dir = _running()
    answers = control.call(run_dir / "cloud.sock", "POST", "/audit", {"since": time.time() - since_s},
                           timeout=120)
    for name, answer in answers.items():
        print(f"\n{name}: {answer['title']} ({answer['logstore']})", file=out)
        print(answer.get("error") or answer["table"], file=out)
    return 0


def down(everything: bool = False, out: TextIO = sys.stdout) -> int:
    """Stop the running cloud (agents flush), then recorded processes (SIGTERM: agents write
    their flow records), the ``up`` namespaces and those of crashed runs (with ``everything``,
    every lab's, live runs of other processes included)."""
    for run_dir in [STATE_ROOT / UP_RUN_ID, *STATE_ROOT.glob("run-*")]:
        if run_dir.name != UP_RUN_ID and not everything:
            owner = run_dir.name.removeprefix("run-")
            if owner.isdigit() and netns.start_time(int(owner)) is not None:
                continue  # a run in progress: its owner tears it down
        for name in ("load.sock", "cloud.sock"):
            sock = run_dir / name
            if sock.exists():
                with contextlib.suppress(OSError, control.ControlError):
                    control.call(sock, "POST", "/stop", timeout=5)
                    print(f"asked {_relative(sock)} to stop", file=out)
        _wait_recorded_exit(run_dir / "pids.json", 45)
    view = LiveView(out, live=False)
    view.phase("gwlb-fleet lab: down")
    stopped = 0
    for pids_file in sorted(STATE_ROOT.glob("*/pids.json")):
        try:
            recorded = json.loads(pids_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        owner = str(recorded.get("owner", ""))
        if not everything and owner != UP_RUN_ID and owner.isdigit() and netns.alive(int(owner)):
            continue
        for process in recorded.get("processes", []):
            if netns.terminate_recorded(int(process["pid"]), int(process["start_time"])):
                stopped += 1
                view.ok(f"stopped {process['role']} (pid {process['pid']})")
        pids_file.unlink(missing_ok=True)
    removed = netns.sweep(f"{netns.PREFIX}{UP_RUN_ID}-") + netns.sweep_stale()
    if everything:
        removed += netns.sweep()
    for name in removed:
        view.ok(f"removed namespace {name}")
    if not (stopped or removed):
        view.ok("nothing to tear down")
    left = netns.list_namespaces()
    if left and not everything:
        view.info(f"still running (their owner is alive): {', '.join(left)}; "
                  "scripts/lab down --all removes them too")
    elif left:
        view.fail(f"could not remove: {', '.join(left)}")
        return 1
    return 0


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP end the scenario like Ctrl-C: through the teardown."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _prune_state_dirs(keep: int = 3) -> None:
    """Keep the state of the last few finished runs (their logs and flow records), no more."""
    runs = sorted((p for p in STATE_ROOT.glob("run-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    finished = [p for p in runs if not (p.name[4:].isdigit() and netns.alive(int(p.name[4:])))]
    for path in finished[:-keep] if keep else finished:
        shutil.rmtree(path, ignore_errors=True)


def _wait_recorded_exit(pids_file: Path, timeout: float) -> None:
    """Give the cloud time to stop its appliances cleanly before anything is killed."""
    try:
        recorded = json.loads(pids_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    processes = [(int(p["pid"]), int(p["start_time"])) for p in recorded.get("processes", [])
                 if p.get("role") == "lab-cloud"]
    deadline = time.monotonic() + timeout
    while processes and time.monotonic() < deadline:
        processes = [(pid, started) for pid, started in processes if netns.start_time(pid) == started]
        time.sleep(0.2)


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
