"""XDP benchmark: the agent's XDP fast path beside the C reflector and a minimal XDP reflector.

Three targets, measured in the same run, each in a namespace of its own joined to the
generator's by its own veth pair (MTU 9000), their trials alternating (see dataplane.py, whose
generator, reflector and rate search this reuses through netbench):

- ``reflector``: c/reflector.c, recvmmsg/sendmmsg, the user-space reference;
- ``xdp-agent``: ``gwlb-agent run`` with ``dataplane = "xdp"`` in native mode, an allow-all
  policy and its flow log: the first packet of each flow is decided in the agent, every later
  one answered by agent/bpf/geneve_xdp.c;
- ``xdp-reflector``: c/xdp_reflector.c, swap and XDP_TX, nothing else.

A veth delivers XDP_TX frames to its peer only while the peer has an XDP program: the
generator's side of each XDP target's pair gets one that passes everything (xdp_pass.o).

Prints every trial, then the best rate at <= 1 % loss per target and the ratios
xdp-agent/reflector (aim >= 1.5) and xdp-agent/xdp-reflector (aim >= 0.8), the share of the
agent's replies the kernel sent, and the flow records the agent wrote. On a veth, XDP runs in
the softirq of the sending CPU: the generator's CPU also pays for the XDP targets, so their
figures may be the generator's ceiling (said so when they are).

    sudo .venv/bin/python scripts/bench/xdp.py [--duration S] [--rounds N] [--rates PPS ...]

Exits 0 whenever it could measure, 1 when it could not.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netbench import (
    BUILD,
    HERE,
    BenchError,
    Search,
    Trial,
    build_programs,
    geometric_rates,
    http_get,
    interleave,
    parse_generator_output,
    say,
    stop,
    tail,
)

TARGETS = {"reflector": "198.18.0.16/30", "xdp-agent": "198.18.0.20/30", "xdp-reflector": "198.18.0.24/30"}
MTU = 9000
HEALTH = "127.0.0.1:18081"
WARMUP_RATE = 20_000
HEALTH_TIMEOUT = 20.0
REPO = HERE.parents[1]


def build_xdp_objects() -> dict[str, Path]:
    clang = shutil.which("clang")
    if clang is None:
        raise BenchError("needs clang to build the XDP reflector (scripts/bootstrap installs it)")
    arch = subprocess.run([clang, "-print-multiarch"], capture_output=True, text=True, check=False)
    include = f"/usr/include/{arch.stdout.strip() or 'x86_64-linux-gnu'}"
    objects = {}
    for name, defines in (("xdp_reflector", []), ("xdp_pass", ["-DPASS_ONLY"])):
        output = BUILD / f"{name}.o"
        result = subprocess.run(
            [clang, "-O2", "-g", "-target", "bpf", "-Wall", f"-I{include}", *defines,
             "-c", str(HERE / "c" / "xdp_reflector.c"), "-o", str(output)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise BenchError(f"clang xdp_reflector.c ({name}) failed:\n{result.stderr}")
        objects[name] = output
    make = subprocess.run(["make", "-s", "-C", str(REPO / "agent" / "bpf")], capture_output=True, text=True)
    if make.returncode != 0:
        raise BenchError(f"make -C agent/bpf failed:\n{make.stderr}")
    return objects


@dataclass
class Target:
    name: str
    namespace: Any  # gwlb_lab.netns.Namespace
    address: str
    gwlb_address: str
    log: Path
    process: subprocess.Popen[bytes] | None = None


class XdpBench:
    def __init__(self, topo: Any, programs: dict[str, Path], args: argparse.Namespace, workdir: Path) -> None:
        self.topo, self.programs, self.args, self.workdir = topo, programs, args, workdir
        cpus = sorted(os.sched_getaffinity(0))
        pinned = len(cpus) >= 2 and shutil.which("taskset")
        self.gen_prefix = ["taskset", "-c", str(cpus[0])] if pinned else []
        self.target_prefix = ["taskset", "-c", str(cpus[1])] if pinned else []
        self.pinning = (f"generator on CPU {cpus[0]}, targets' processes on CPU {cpus[1]}"
                        if pinned else "none: figures are unreliable")  # fmt: skip
        self.gen = topo.namespace("xgen")
        self.targets: dict[str, Target] = {}
        for name, subnet in TARGETS.items():
            network = ipaddress.IPv4Network(subnet)
            namespace = topo.namespace(name)
            topo.link(self.gen, f"to-{name}"[:15], namespace, "dut0", mtu=MTU)
            self.gen.add_address(f"to-{name}"[:15], f"{network[1]}/{network.prefixlen}")
            namespace.add_address("dut0", f"{network[2]}/{network.prefixlen}")
            self.targets[name] = Target(
                name, namespace, str(network[2]), str(network[1]), workdir / f"{name}.log"
            )
            if name.startswith("xdp"):
                attach(self.gen, f"to-{name}"[:15], programs["xdp_pass"])
        attach(self.targets["xdp-reflector"].namespace, "dut0", programs["xdp_reflector"])

    def trial(self, target: Target, rate: float, duration: float) -> Trial:
        command = [*self.gen_prefix, str(self.programs["geneve_gen"]), "-z"]  # zero checksums
        if not self.gen_prefix:
            command.append("-s")
        command += [target.address, f"{rate:.0f}", f"{duration}", str(self.args.flows), str(self.args.size)]
        result = self.gen.run(*command, check=False, timeout=duration + 20)
        if result.returncode != 0:
            raise BenchError(f"generator failed ({result.returncode}): {result.stderr.strip()}")
        return parse_generator_output(result.stdout, rate)

    def checked_trial(self, name: str, rate: float) -> Trial:
        target = self.targets[name]
        if target.process is not None and target.process.poll() is not None:
            raise BenchError(f"{name} exited ({target.process.returncode}):\n{tail(target.log)}")
        return self.trial(target, rate, self.args.duration)

    def start_agent(self, round_number: int) -> Path:
        agent = self.targets["xdp-agent"]
        run_dir = self.workdir / f"agent-{round_number}"
        run_dir.mkdir()
        (run_dir / "allow-all.toml").write_text('default_action = "allow"\n', encoding="utf-8")
        (run_dir / "agent.toml").write_text("", encoding="utf-8")
        agent.log = run_dir / "agent.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("GWLB_AGENT_")}
        environment.update(GWLB_AGENT_DATAPLANE="xdp", GWLB_AGENT_XDP_ATTACH="native")
        executable = shutil.which("gwlb-agent", path=str(Path(sys.executable).parent))
        if executable is None:
            raise BenchError("gwlb-agent is not installed beside this Python (scripts/bootstrap test)")
        command = [
            *self.target_prefix, executable, "run", "--config", str(run_dir / "agent.toml"),
            "--gwlb-cidr", f"{agent.gwlb_address}/32", "--policy", str(run_dir / "allow-all.toml"),
            "--flow-log", str(run_dir / "flows.jsonl"), "--health", HEALTH, "--appliance-id", "bench",
        ]  # fmt: skip
        agent.process = self.topo.start(agent.namespace, command, log_path=str(agent.log), env=environment)
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while http_get(agent.namespace, f"http://{HEALTH}/health")[0] != "200":
            if agent.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the agent is not healthy:\n{tail(agent.log)}")
            time.sleep(0.2)
        return run_dir / "flows.jsonl"

    def warm_up(self, target: Target) -> None:
        """Until the target answers everything: ARP resolved and (agent) every flow decided."""
        for _ in range(10):
            if self.trial(target, WARMUP_RATE, max(0.5, self.args.flows / WARMUP_RATE)).passed:
                return
        raise BenchError(f"{target.name} does not return {WARMUP_RATE:,} pps:\n{tail(target.log)}")

    def run_round(self, round_number: int) -> tuple[dict[str, Search], dict[str, Any], int]:
        reflector, agent = self.targets["reflector"], self.targets["xdp-agent"]
        try:
            flow_log = self.start_agent(round_number)
            reflector.process = self.topo.start(
                reflector.namespace, [*self.target_prefix, str(self.programs["reflector"])],
                log_path=str(reflector.log))  # fmt: skip
            for target in self.targets.values():
                self.warm_up(target)
            searches = {name: Search(f"{name} r{round_number}") for name in self.targets}
            interleave(searches, self.checked_trial, self.args.rates, self.args.bisect, self.args.retries)
            code, body = http_get(agent.namespace, f"http://{HEALTH}/status")
            status = json.loads(body) if code == "200" else {}
        finally:
            for target in (reflector, agent):
                if target.process is not None:
                    stop(target.process, grace=15.0)
                    target.process = None
        records = sum(1 for line in flow_log.read_text().splitlines() if line.strip())
        return searches, status, records


def attach(namespace: Any, interface: str, program: Path) -> None:
    namespace.run("ip", "link", "set", "dev", interface, "xdpdrv", "obj", str(program), "sec", "xdp.frags")


def report(rounds: list[tuple[dict[str, Search], dict[str, Any], int]], bench: XdpBench) -> None:
    best = {name: max((r[0][name] for r in rounds), key=lambda s: s.pps) for name in TARGETS}
    say()
    say("forwarding: highest offered rate with <= 1% loss")
    say(f"  pinning: {bench.pinning}")
    for name, search in best.items():
        note = "  (generator-limited)" if search.generator_limited else ""
        per_round = "  ".join(f"{r[0][name].pps:,.0f}" for r in rounds)
        say(f"  {name:<14} {search.pps:>12,.0f} pps   per round: {per_round}{note}")
    reflector, agent, minimal = (best[n].pps for n in TARGETS)
    if reflector and agent:
        say(f"  ratio xdp-agent/reflector     = {agent / reflector:.2f}   aim >= 1.5: "
            f"{'PASS' if agent / reflector >= 1.5 else 'FAIL'}")  # fmt: skip
    if minimal and agent:
        say(f"  ratio xdp-agent/xdp-reflector = {agent / minimal:.2f}   aim >= 0.8: "
            f"{'PASS' if agent / minimal >= 0.8 else 'FAIL'}")  # fmt: skip
    for number, (_, status, records) in enumerate(rounds, 1):
        extra = status.get("extra", {})
        kernel, total = extra.get("xdp_packets_out_total", 0), status.get("packets_out", 0)
        share = f"{kernel / total:.1%}" if total else "n/a"
        say(f"  round {number}: replies sent by the kernel {kernel:,.0f} of {total:,.0f} ({share}); "
            f"flow records written {records:,}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per trial (2)")
    parser.add_argument("--flows", type=int, default=1000, help="inner flows the generator cycles (1000)")
    parser.add_argument("--size", type=int, default=200, help="inner packet bytes (200)")
    parser.add_argument("--rates", type=float, nargs="+", metavar="PPS",
                        default=geometric_rates(25_000, 2, 6_400_000))  # fmt: skip
    parser.add_argument("--bisect", type=int, default=4)
    parser.add_argument("--retries", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    from gwlb_lab.netns import Topology, has_netns_privileges

    allowed, why = has_netns_privileges()
    if not allowed:
        say(f"cannot measure: {why}")
        return 1
    try:
        programs = {**build_programs(), **build_xdp_objects()}
        with tempfile.TemporaryDirectory(prefix="gwlb-xdp-bench-") as tmp, Topology() as topo:
            bench = XdpBench(topo, programs, args, Path(tmp))
            rounds = [bench.run_round(n) for n in range(1, args.rounds + 1)]
            report(rounds, bench)
    except BenchError as exc:
        say(f"cannot measure: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
