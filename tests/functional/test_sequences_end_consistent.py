"""Whole sequences under the faults the cloud really has, each ending with the four records
(ESS, the GWLB server group, Panorama, the licences) consistent with the state store.

A fleet scales out by two, one appliance is scaled in, one more scales out; reconcile runs on
its timer throughout. Into that, seeded at random (so that every case replays exactly):

- ``duplicate``: an event is delivered again later (EventBridge, MNS and FC deliver at least once);
- ``reorder``: an event is held back and delivered after later ones;
- ``crash``: the process dies after a step's side effect, before its record (FC retries the event);
- ``lost_answer``: a call to the cloud or Panorama takes effect but its answer is lost (a
  timeout): the caller sees a transient error;
- ``lost_record``: the state store lost the record of the appliance about to be scaled in (or it
  was launched before the control plane was deployed).

Each kind alone and all together, for both appliance kinds. Faults stop after a bounded number
(as outages end); then reconcile runs until the fleet is quiet, and the records must agree.
"""

from __future__ import annotations

import functools
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import TransientError
from gwlb_fleet.workflows import steps as steps_module
from tests.functional.world import GROUP, World

KINDS = ("duplicate", "reorder", "crash", "lost_answer", "lost_record")
CASES = [(kind,) for kind in KINDS] + [KINDS]
SEEDS = range(4)
MAX_FAULTS_PER_KIND = 8
CHANCE = 0.25


@dataclass
class Chaos:
    rng: random.Random
    kinds: tuple[str, ...]
    injected: Counter[str] = field(default_factory=Counter)
    held: list[tuple[str, bytes]] = field(default_factory=list)
    over: bool = False

    def strikes(self, kind: str) -> bool:
        if self.over or kind not in self.kinds or self.injected[kind] >= MAX_FAULTS_PER_KIND:
            return False
        if self.rng.random() >= CHANCE:
            return False
        self.injected[kind] += 1
        return True


def unleash(world: World, chaos: Chaos, monkeypatch: pytest.MonkeyPatch) -> None:
    deliver = world.invoke

    def invoke(function: str, event: bytes | dict[str, Any]) -> dict[str, Any]:
        raw = event if isinstance(event, bytes) else json.dumps(event).encode()
        if chaos.strikes("duplicate"):
            chaos.held.append((function, raw))  # and delivered now as well
        if chaos.strikes("reorder"):
            chaos.held.append((function, raw))
            return {"held": True}  # delivered later, after whatever comes next
        return deliver(function, raw)

    monkeypatch.setattr(world, "invoke", invoke)

    record_done = steps_module._record_done

    def crash_maybe(*args: Any) -> Any:
        if chaos.strikes("crash"):
            raise RuntimeError("the process died between the side effect and its record")
        return record_done(*args)

    monkeypatch.setattr(steps_module, "_record_done", crash_maybe)

    side_effects: list[tuple[object, str]] = [
        (world.cloud.gwlb, "add_server"),
        (world.cloud.gwlb, "remove_server"),
        (world.cloud.ess, "complete"),
        (world.cloud.ess, "heartbeat"),
        (world.app.panorama, "commit"),
        (world.app.panorama, "remove_managed_device"),
        (world.app.licensing, "deactivate"),
    ]
    for port, name in side_effects:
        monkeypatch.setattr(port, name, answer_lost_maybe(getattr(port, name), chaos, name))


def answer_lost_maybe(call: Callable[..., Any], chaos: Chaos, name: str) -> Callable[..., Any]:
    @functools.wraps(call)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = call(*args, **kwargs)
        if chaos.strikes("lost_answer"):
            raise TransientError(f"{name}: the call took effect, its answer was lost", code="Timeout")
        return result

    return wrapped


def release_held(world: World, chaos: Chaos) -> None:
    """Some of the held events now, in a shuffled order; FC retries one that fails."""
    chaos.rng.shuffle(chaos.held)
    keep: list[tuple[str, bytes]] = []
    for function, raw in chaos.held:
        if chaos.over or chaos.rng.random() < 0.5:
            world.retries.append((function, raw, 0))
        else:
            keep.append((function, raw))
    chaos.held = keep


def boot_new(world: World) -> None:
    for instance_id in world.ess_instances():
        if instance_id not in world.boot_serials and world.cloud.ecs.instances.get(instance_id):
            world.boot(instance_id)
            world.boot_serials.setdefault(instance_id, "")


def run(world: World, chaos: Chaos) -> None:
    def each() -> None:
        boot_new(world)
        release_held(world, chaos)

    for _ in range(10):
        world.settle(each=each, limit=400)
        if not chaos.held:
            return
        release_held(world, chaos)
    raise AssertionError(f"events still held back: {chaos.held}")


def reconcile(world: World, chaos: Chaos) -> None:
    world.clock.advance(120)
    try:
        world.invoke("reconcile", world.timer())
    except Exception as exc:  # noqa: BLE001 - FC retries the timer's invocation like any other
        world.retries.append(("reconcile", json.dumps(world.timer()).encode(), 1))
        assert chaos.injected, f"reconcile failed with no fault injected: {exc!r}"
    run(world, chaos)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("faults", CASES, ids=lambda kinds: "+".join(kinds))
@pytest.mark.parametrize("kind", ["vmseries", "linux"])
def test_a_fleet_under_faults_ends_with_the_four_records_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, faults: tuple[str, ...], seed: int
) -> None:
    world = World(tmp_path, monkeypatch, kind=kind)
    chaos = Chaos(random.Random(f"{kind}/{'+'.join(faults)}/{seed}"), faults)
    unleash(world, chaos, monkeypatch)

    world.cloud.ess.scale_by(GROUP, 2, Deadline.after(60))
    run(world, chaos)
    reconcile(world, chaos)
    first = min(i for i, state in world.ess_instances().items() if state == "InService")
    if "lost_record" in faults:
        world.lose_record(first)
        chaos.injected["lost_record"] += 1
    world.cloud.ess.remove_instances(GROUP, [first], Deadline.after(60))
    run(world, chaos)
    world.cloud.ess.scale_by(GROUP, 1, Deadline.after(60))
    run(world, chaos)
    reconcile(world, chaos)

    chaos.over = True  # the outage ends; the timer runs on
    for _ in range(3):
        reconcile(world, chaos)

    assert sum(chaos.injected.values()) > 0, "no fault was injected: the case tests nothing"
    ess = world.ess_instances()
    assert sorted(ess.values()) == ["InService", "InService"], ess
    assert not world.cloud.ess.pending_actions(GROUP)
    for record in world.records():
        assert record.state in ("in_service", "gone"), (record.instance_id, record.state, record.last_error)
    assert world.record(first).state == "gone"
    world.consistent()
