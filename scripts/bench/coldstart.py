"""Cold start of the FC functions: what each one imports before it can make its first call,
against the vendor SDK clients it needs, measured in the same run.

    .venv/bin/python scripts/bench/coldstart.py                    # this venv, bytecode cached
    .venv/bin/python scripts/bench/coldstart.py --no-bytecode      # nothing cached: compiled each time
    .venv/bin/python scripts/bench/coldstart.py --bundle build/fc/code --python python3.12
                                                                   # the FC bundle, as FC imports it

For each function, in fresh interpreters (median of --runs, the two kinds of run alternating so
that a busy neighbour slows both alike):

- module: ``import gwlb_functions.<name>`` alone (the adapters are imported on first use);
- cold: the module plus the adapter modules its flow wires (gwlb_fleet.app), i.e. everything the
  function's first invocation imports before its first API call;
- SDKs: only the vendor clients those adapters use (``from alibabacloud_ess20220222.client import
  Client``, ``tablestore``, ``aliyun.log``, ``panos``);
- ratio cold / SDKs (target <= 1.2: import nothing a function does not use).

Then, for each function, what the cold import loads that the SDK reference does not, by package,
from ``python -X importtime``: where to look when a ratio is over the target. A benchmark, not a
test: it prints, asserts nothing, and exits 0 when it could measure.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = 1.2

# Port (gwlb_fleet.app.App) -> the module gwlb_fleet.app imports for it (the cloud configuration: Tablestore).
ADAPTERS = {
    "gwlb": "gwlb_fleet.alibaba.gwlb",
    "ess": "gwlb_fleet.alibaba.ess",
    "ecs": "gwlb_fleet.alibaba.ecs",
    "monitor": "gwlb_fleet.alibaba.cms",
    "scheduler": "gwlb_fleet.alibaba.fc",
    "panorama": "gwlb_fleet.panos.panorama",
    "licensing": "gwlb_fleet.panos.licensing",
    "appliance": "gwlb_fleet.appliance.probes",
    "state": "gwlb_fleet.state.tablestore",
    "audit": "gwlb_fleet.sls.auditwriter",
}
# Port -> the vendor client its adapter needs (None: the standard library only).
SDKS = {
    "gwlb": "from alibabacloud_gwlb20240415.client import Client",
    "ess": "from alibabacloud_ess20220222.client import Client",
    "ecs": "from alibabacloud_ecs20140526.client import Client",
    "monitor": "from alibabacloud_cms20190101.client import Client",
    "scheduler": "from alibabacloud_fc20230330.client import Client",
    "panorama": "from panos.panorama import Panorama",
    "licensing": None,  # Panorama's XML API over urllib
    "appliance": None,  # the agent's /status over urllib, or Panorama
    "state": "from tablestore import OTSClient",
    "audit": "from aliyun.log import LogClient",
}
# Function -> the ports its flow uses.
PORTS = {
    "lifecycle": ["ess", "gwlb", "ecs", "panorama", "licensing", "appliance", "scheduler", "state", "audit"],
    "scale": ["ess", "ecs", "monitor", "state", "audit"],
    "health": ["gwlb", "ess", "state", "audit"],
    "reconcile": ["ess", "gwlb", "ecs", "panorama", "licensing", "monitor", "scheduler", "state", "audit"],
}


@dataclass
class Interpreter:
    python: str
    path: Path  # put first on sys.path: the repository or the bundle
    isolated: bool  # -S: the bundle and the standard library only, as FC's runtime
    no_bytecode: bool

    def command(self, statements: list[str], importtime: bool = False) -> list[str]:
        script = "\n".join(
            [
                "import sys, time",
                f"sys.path.insert(0, {str(self.path)!r})",
                "start = time.perf_counter()",
                *statements,
                "print(time.perf_counter() - start)",
            ]
        )
        flags = ["-S"] if self.isolated else []
        if importtime:
            flags += ["-X", "importtime"]
        return [self.python, *flags, "-c", script]

    def seconds(self, statements: list[str]) -> float:
        """One fresh interpreter's time for the statements."""
        with tempfile.TemporaryDirectory(prefix="coldstart-") as cache:
            prefix = ["-X", f"pycache_prefix={cache}"] if self.no_bytecode else []
            command = self.command(statements)
            done = subprocess.run(
                [command[0], *prefix, *command[1:]], capture_output=True, text=True, timeout=120
            )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(statements)}:\n{done.stderr.strip()}")
        return float(done.stdout.strip().splitlines()[-1])

    def import_times(self, statements: list[str]) -> dict[str, int]:
        """Module -> its own import time in microseconds (python -X importtime)."""
        done = subprocess.run(
            self.command(statements, importtime=True), capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip())
        times: dict[str, int] = {}
        for line in done.stderr.splitlines():
            if not line.startswith("import time:") or "|" not in line or "self [us]" in line:
                continue
            own, _, name = line.removeprefix("import time:").split("|")
            times[name.strip()] = times.get(name.strip(), 0) + int(own)
        return times


def statements_for(function: str) -> tuple[list[str], list[str], list[str]]:
    """(module only, cold, SDK reference) import statements for a function."""
    module = [f"import gwlb_functions.{function}"]
    cold = module + [f"import {ADAPTERS[port]}" for port in PORTS[function]]
    sdks = list(dict.fromkeys(s for port in PORTS[function] if (s := SDKS[port])))
    return module, cold, sdks


def median_times(interpreter: Interpreter, kinds: dict[str, list[str]], runs: int) -> dict[str, float]:
    samples: dict[str, list[float]] = defaultdict(list)
    for statements in kinds.values():  # a first pass, not counted: the page cache and .pyc files
        interpreter.seconds(statements)
    for _ in range(runs):
        for kind, statements in kinds.items():
            samples[kind].append(interpreter.seconds(statements))
    return {kind: statistics.median(values) for kind, values in samples.items()}


def extra_imports(interpreter: Interpreter, cold: list[str], sdks: list[str]) -> list[tuple[str, int, int]]:
    """What the cold import loads beyond the SDK reference: (package, microseconds, modules)."""
    ours = interpreter.import_times(cold)
    reference = interpreter.import_times(sdks)
    by_package: dict[str, list[int]] = defaultdict(list)
    for name, micros in ours.items():
        if name not in reference:
            package = name.split(".")[0] if not name.startswith("fleet.") else ".".join(name.split(".")[:2])
            by_package[package].append(micros)
    rows = [(package, sum(values), len(values)) for package, values in by_package.items()]
    return sorted(rows, key=lambda row: row[1], reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters per figure (median)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter (default: this one)")
    parser.add_argument(
        "--bundle", type=Path, help="measure in this unpacked bundle (build/fc/code), with -S"
    )
    parser.add_argument("--no-bytecode", action="store_true", help="no .pyc cache: compile every import")
    parser.add_argument("--functions", nargs="*", default=list(PORTS), choices=list(PORTS))
    parser.add_argument("--top", type=int, default=8, help="packages listed per function beyond the SDKs")
    args = parser.parse_args(argv)

    path = args.bundle.resolve() if args.bundle else ROOT
    if args.bundle and not (path / "gwlb_functions").is_dir():
        print(f"coldstart: {path} is not an unpacked bundle (scripts/package-fc builds build/fc/code)")
        return 1
    interpreter = Interpreter(args.python, path, isolated=bool(args.bundle), no_bytecode=args.no_bytecode)
    where = f"bundle {path}" if args.bundle else "the repository"
    bytecode = "no bytecode cache" if args.no_bytecode else "bytecode cached"
    print(f"cold start: {args.python}, {where}, {bytecode}, median of {args.runs} fresh interpreters\n")
    print(f"{'function':<10} {'module':>8} {'cold':>8} {'SDKs':>8} {'ratio':>6}   target <= {TARGET}")
    extras: dict[str, list[tuple[str, int, int]]] = {}
    try:
        for function in args.functions:
            module, cold, sdks = statements_for(function)
            times = median_times(interpreter, {"module": module, "cold": cold, "sdks": sdks}, args.runs)
            ratio = times["cold"] / times["sdks"]
            verdict = "PASS" if ratio <= TARGET else "OVER"
            print(
                f"{function:<10} {times['module']:7.3f}s {times['cold']:7.3f}s {times['sdks']:7.3f}s "
                f"{ratio:6.2f}   {verdict}",
                flush=True,
            )
            extras[function] = extra_imports(interpreter, cold, sdks)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"coldstart: could not measure: {exc}")
        return 1
    print("\nmodule: import gwlb_functions.<name>; cold: that plus the adapters its flow wires (what its")
    print("first invocation imports); SDKs: only the vendor clients those adapters use; ratio: cold / SDKs.")
    print("\nbeyond the SDKs (python -X importtime, one run; own time of what only the cold import loads):")
    for function, rows in extras.items():
        total = sum(micros for _, micros, _ in rows)
        listed = ", ".join(
            f"{package} {micros / 1000:.0f} ms ({count})" for package, micros, count in rows[: args.top]
        )
        print(f"  {function:<10} {total / 1000:5.0f} ms: {listed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
