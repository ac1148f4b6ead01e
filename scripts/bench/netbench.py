"""What the network benchmarks share: the C and XDP programs, one generator trial, the rate search.

A trial is one run of ``c/geneve_gen.c``: it sends Geneve at a paced rate for some seconds and
counts what came back (see its header comment). A rate search steps the rate up until a trial
loses more than 1%, then bisects; searches of several targets are interleaved trial by trial,
so that a neighbour's burst of load on this shared machine falls on all targets alike.

Used by ``dataplane.py`` and ``flowlog.py``; not a benchmark itself.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gwlb_lab.netns import Namespace

HERE = Path(__file__).resolve().parent
BUILD = HERE / ".build"
REPO = HERE.parents[1]
C_PROGRAMS = ("geneve_gen", "reflector")

LOSS_LIMIT = 0.01
GENERATOR_SHORTFALL = 0.95  # offered below this share of the asked rate: the generator is the limit


def say(text: str = "") -> None:
    print(text, flush=True)


class BenchError(RuntimeError):
    """The benchmark could not measure (as opposed to measuring something slow)."""


# --- building the C programs ----------------------------------------------------------------


def build_programs() -> dict[str, Path]:
    """Compile the generator and the reflector into .build/ (always: it takes a moment)."""
    return {name: compile_c(name) for name in C_PROGRAMS}


def compile_c(name: str, libraries: tuple[str, ...] = ()) -> Path:
    """c/NAME.c into .build/NAME with gcc."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BenchError(f"needs gcc to build {name}.c (scripts/bootstrap installs it)")
    BUILD.mkdir(exist_ok=True)
    output = BUILD / name
    result = subprocess.run(
        [gcc, "-O2", "-Wall", "-Wextra", "-o", str(output), str(HERE / "c" / f"{name}.c"),
         *(f"-l{library}" for library in libraries)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"gcc {name}.c failed:\n{result.stderr}")
    return output


def build_xdp_objects() -> dict[str, Path]:
    """c/xdp_reflector.c twice into .build/ (as is, and with -DPASS_ONLY: xdp_pass.o), and the
    agent's own fast path (make -C agent/bpf), which the agent loads from its package."""
    objects = {name: compile_bpf("xdp_reflector.c", name, defines)
               for name, defines in (("xdp_reflector", []), ("xdp_pass", ["-DPASS_ONLY"]))}
    make = subprocess.run(["make", "-s", "-C", str(REPO / "agent" / "bpf")], capture_output=True,
                          text=True, timeout=300, check=False)
    if make.returncode != 0:
        raise BenchError(f"make -C agent/bpf failed:\n{make.stderr}")
    return objects


def build_frame_generator() -> dict[str, Path]:
    """c/xdp_gen.c (linked with libbpf: libbpf-dev, from scripts/bootstrap) and its programs
    c/xdp_gen.bpf.c into .build/."""
    return {"xdp_gen": compile_c("xdp_gen", ("bpf",)),
            "xdp_gen_bpf": compile_bpf("xdp_gen.bpf.c", "xdp_gen.bpf", [])}


def compile_bpf(source: str, name: str, defines: list[str]) -> Path:
    clang = shutil.which("clang")
    if clang is None:
        raise BenchError("needs clang to build the XDP programs (scripts/bootstrap installs it)")
    arch = subprocess.run([clang, "-print-multiarch"], capture_output=True, text=True, check=False)
    include = f"/usr/include/{arch.stdout.strip() or 'x86_64-linux-gnu'}"
    BUILD.mkdir(exist_ok=True)
    output = BUILD / f"{name}.o"
    result = subprocess.run(
        [clang, "-O2", "-g", "-target", "bpf", "-Wall", f"-I{include}", *defines,
         "-c", str(HERE / "c" / source), "-o", str(output)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"clang {source} ({name}) failed:\n{result.stderr}")
    return output


# --- one trial: send at a rate, count what came back ----------------------------------------


@dataclass(frozen=True)
class Trial:
    rate: float  # asked of the generator
    sent: int
    received: int
    elapsed: float
    send_errors: int

    @property
    def offered(self) -> float:
        """What the generator actually sent per second."""
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def loss(self) -> float:
        return max(0.0, 1.0 - self.received / self.sent) if self.sent else 1.0

    @property
    def passed(self) -> bool:
        return self.sent > 0 and self.loss <= LOSS_LIMIT

    @property
    def generator_limited(self) -> bool:
        return self.offered < GENERATOR_SHORTFALL * self.rate


def parse_generator_output(text: str, rate: float) -> Trial:
    fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
    try:
        return Trial(rate=rate, sent=int(fields["sent"]), received=int(fields["received"]),
                     elapsed=float(fields["elapsed"]), send_errors=int(fields["send_errors"]))
    except (KeyError, ValueError):
        raise BenchError(f"unexpected generator output: {text!r}") from None


@dataclass
class Search:
    """The trials of one rate search for one target and what they found."""

    label: str
    trials: list[Trial] = field(default_factory=list)
    best: Trial | None = None  # the highest-rate trial that passed
    first_fail: Trial | None = None  # the lowest-rate failure (after its retries)

    @property
    def pps(self) -> float:
        return self.best.offered if self.best else 0.0

    @property
    def generator_limited(self) -> bool:
        return bool(self.best and self.best.generator_limited)


RateSearch = Generator[float, Trial, None]  # yields the next rate; is sent that rate's trial


def rate_search(search: Search, rates: Sequence[float], bisect_steps: int,
                retries: int) -> RateSearch:
    """Step up through ``rates`` until a rate fails, then bisect between the last pass and it.

    A rate fails only when it fails ``1 + retries`` times: noise on a shared machine only ever
    makes a target slower, so one pass shows what the target can do, while one failure may be a
    neighbour's doing. Bounded: at most len(rates) steps up, 4 halvings (if even the first rate
    fails) and ``bisect_steps`` bisections, each of at most ``1 + retries`` trials.

    A generator, so that the searches of two targets can be interleaved trial by trial.
    """

    def attempt(rate: float) -> Generator[float, Trial, Trial]:
        for _ in range(1 + retries):
            trial = yield rate
            search.trials.append(trial)
            if trial.passed:
                break
        return trial

    for rate in rates:
        trial = yield from attempt(rate)
        if not trial.passed:
            search.first_fail = trial
            break
        search.best = trial
        if trial.generator_limited:
            return  # the generator, not the target, is the ceiling: asking more proves nothing
    if search.best is None and search.first_fail is not None:
        rate = search.first_fail.rate
        for _ in range(4):
            rate /= 2
            trial = yield from attempt(rate)
            if trial.passed:
                search.best = trial
                break
            search.first_fail = trial
    for _ in range(bisect_steps):
        low, high = search.best, search.first_fail
        if low is None or high is None or high.rate / low.rate < 1.03:
            break
        trial = yield from attempt(math.sqrt(low.rate * high.rate))
        if trial.passed:
            search.best = trial
        else:
            search.first_fail = trial


def geometric_rates(start: float, factor: float, limit: float) -> list[float]:
    rates = [start]
    while rates[-1] * factor <= limit:
        rates.append(rates[-1] * factor)
    return rates


def interleave(searches: Mapping[str, Search], run_trial: Callable[[str, float], Trial],
               rates: Sequence[float], bisect_steps: int, retries: int,
               after_trial: Callable[[str, Trial], None] | None = None) -> None:
    """One rate search per target (keyed by name), their trials alternating until all end.

    ``run_trial(name, rate)`` runs one trial against that target; each is reported as it
    returns, then ``after_trial(name, trial)`` may add to the report.
    """
    pending: list[tuple[str, RateSearch, float]] = []
    for name, search in searches.items():
        steps = rate_search(search, rates, bisect_steps, retries)
        pending.append((name, steps, next(steps)))
    while pending:  # ends: every search is bounded (see rate_search)
        still = []
        for name, steps, rate in pending:
            search = searches[name]
            again = bool(search.trials) and search.trials[-1].rate == rate
            trial = run_trial(name, rate)
            report_trial(search.label, trial, again)
            if after_trial is not None:
                after_trial(name, trial)
            with contextlib.suppress(StopIteration):
                still.append((name, steps, steps.send(trial)))
        pending = still


def report_trial(label: str, trial: Trial, again: bool) -> None:
    verdict = "pass" if trial.passed else "FAIL"
    notes = (" (again)" if again else "") + (
        "  (generator below the asked rate)" if trial.generator_limited else "")
    say(f"    {label:<14} asked {trial.rate:>11,.0f}  offered {trial.offered:>11,.0f} pps  "
        f"returned {trial.received:>10,}/{trial.sent:<10,} loss {trial.loss:7.2%}  "
        f"{verdict}{notes}")


# --- processes ---------------------------------------------------------------------------------


def stop(process: subprocess.Popen[bytes], grace: float = 5.0) -> int | None:
    """SIGTERM the process group, then SIGKILL after ``grace``; the exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    return process.returncode


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def http_get(namespace: Namespace, url: str, timeout: float = 2.0) -> tuple[str, str]:
    """(status code, body) of a GET asked with curl from inside ``namespace``."""
    result = namespace.run(
        "curl", "-s", "--max-time", f"{timeout:g}", "-w", "\n%{http_code}", url,
        check=False, timeout=timeout + 8,
    )
    body, _, code = result.stdout.rpartition("\n")
    return code.strip(), body

