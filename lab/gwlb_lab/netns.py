"""Network namespaces, veth links and the processes in them, always cleaned up.

Everything a ``Topology`` creates carries its run prefix (``gf<run>-``), so that ``sweep()``
can remove what a crashed run left behind. Addresses must come from 198.18.0.0/15 or the
TEST-NET ranges: traffic never leaves the namespaces this module creates.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

PREFIX = "gf"
ALLOWED_RANGES = [ipaddress.IPv4Network(n) for n in
                  ("198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]


class NetnsError(RuntimeError):
    pass


def has_netns_privileges() -> tuple[bool, str]:
    """Whether this process can create namespaces; the reason if not (for pytest skips)."""
    if os.geteuid() != 0:
        return False, "needs root to create network namespaces"
    if not _which("ip"):
        return False, "needs iproute2's ip command"
    return True, ""


def _which(name: str) -> bool:
    return any(os.access(os.path.join(p, name), os.X_OK) for p in os.environ.get("PATH", "").split(":"))


def check_address(cidr: str) -> None:
    network = ipaddress.IPv4Interface(cidr).network
    if not any(network.subnet_of(allowed) for allowed in ALLOWED_RANGES):
        raise NetnsError(f"{cidr} is outside 198.18.0.0/15 and the TEST-NETs")


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


@dataclass
class Namespace:
    name: str

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.name, *args, check=check, timeout=timeout)

    def popen(self, args: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        # Popen's keyword arguments passed through (never text=: bytes), which its overloads cannot see.
        return subprocess.Popen(["ip", "netns", "exec", self.name, *args], **kwargs)  # type: ignore[call-overload, no-any-return]

    def ip(self, *args: str) -> None:
        sh("ip", "-n", self.name, *args)

    def add_address(self, interface: str, cidr: str) -> None:
        check_address(cidr)
        self.ip("addr", "add", cidr, "dev", interface)

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-qw", f"{key}={value}")

    def pids(self) -> list[int]:
        out = sh("ip", "netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split()]


@dataclass
class Topology:
    """Namespaces and processes of one run; ``close()`` removes all of them."""

    # The owning process's pid: sweep_stale() can tell a crashed run from a live one.
    run_id: str = field(default_factory=lambda: str(os.getpid()))
    namespaces: list[Namespace] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.run_id}-"

    def namespace(self, role: str) -> Namespace:
        ns = Namespace(self.prefix + role)
        sh("ip", "netns", "add", ns.name)
        self.namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")
        return ns

    def link(
        self, a: Namespace, a_if: str, b: Namespace, b_if: str, mtu: int = 1500
    ) -> None:
        """A veth pair between two namespaces (created in ``a``, one end moved to ``b``)."""
        a.ip("link", "add", a_if, "mtu", str(mtu), "type", "veth", "peer", "name", b_if,
             "netns", b.name, "mtu", str(mtu))
        a.ip("link", "set", a_if, "up")
        b.ip("link", "set", b_if, "up")

    def start(self, ns: Namespace, args: Sequence[str], log_path: str | None = None,
              **kwargs: object) -> subprocess.Popen[bytes]:
        if log_path:
            log = open(log_path, "ab")  # noqa: SIM115 - owned by the child; closed by the OS
            kwargs.setdefault("stdout", log)
            kwargs.setdefault("stderr", subprocess.STDOUT)
        kwargs.setdefault("start_new_session", True)
        process = ns.popen(args, **kwargs)
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            _terminate(process)
        for ns in reversed(self.namespaces):
            remove_namespace(ns.name)
        self.namespaces.clear()
        self.processes.clear()

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _terminate(process: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(grace)


def remove_namespace(name: str) -> None:
    """Kill whatever still runs in the namespace, then delete it."""
    for pid in Namespace(name).pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 3
    while Namespace(name).pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    sh("ip", "netns", "del", name, check=False)


def list_namespaces(prefix: str = PREFIX) -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def sweep(prefix: str = PREFIX) -> list[str]:
    """Remove every namespace (and its processes) whose name starts with ``prefix``."""
    names = list_namespaces(prefix)
    for name in names:
        remove_namespace(name)
    return names


def sweep_stale() -> list[str]:
    """Remove the namespaces of runs whose owning process is gone (a crash, a kill -9)."""
    removed = []
    for name in list_namespaces():
        run_id = name[len(PREFIX):].split("-", 1)[0]
        if run_id.isdigit() and not alive(int(run_id)):
            remove_namespace(name)
            removed.append(name)
    return removed


def alive(pid: int) -> bool:
    """Whether a process ``pid`` runs (a zombie does not: it only waits to be reaped)."""
    return start_time(pid) is not None


@contextlib.contextmanager
def topology(run_id: str | None = None) -> Iterator[Topology]:
    topo = Topology(run_id=run_id) if run_id else Topology()
    try:
        yield topo
    finally:
        topo.close()


# --- processes that outlive their owner (``scripts/lab up``, a crashed run) -------------------


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot: with the pid, it names one process
    (a pid alone may have been reused since it was recorded). None if there is no such process,
    or only its zombie: dead, waiting for a parent (here often an init that reaps late) to reap it."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):  # field 3 of proc(5): the state
        return None
    return int(fields[19])  # field 22 of proc(5); fields here start at field 3


def terminate_recorded(pid: int, started: int, grace: float = 3.0) -> bool:
    """SIGTERM (then SIGKILL after ``grace``) the process recorded as (pid, start time), if it
    still runs. True if it was running."""
    if start_time(pid) != started:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if start_time(pid) != started or _zombie(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
