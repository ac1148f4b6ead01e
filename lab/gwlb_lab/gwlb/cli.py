"""``python -m gwlb_lab.gwlb``: run the GWLB emulator in the foreground (inside the gwlb namespace).

The server group is either a static list (``--member``, repeatable) or a JSON file re-read when
it changes (``--members-file``: how a member is drained or removed while the emulator runs; see
lab/gwlb_lab/gwlb/members.py). ``--health-protocol off`` turns health checks off: every member counts as
healthy and is reported Unavailable. Logs JSON lines on stderr. SIGTERM or SIGINT: stop, write
the final status (``--status-file``), log the counters, exit 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from gwlb_fleet import logs
from gwlb_fleet.geneve import GENEVE_PORT
from gwlb_lab.gwlb.config import FAILOVER_MODES, EmulatorConfig
from gwlb_lab.gwlb.encap import LAYOUTS, Encapsulator
from gwlb_lab.gwlb.health import HealthCheckSettings
from gwlb_lab.gwlb.members import DEFAULT_SEED, FileMembers, MemberSource, StaticMembers
from gwlb_lab.gwlb.scheduler import SCHEDULERS
from gwlb_lab.gwlb.service import GwlbEmulator

log = logging.getLogger("gwlb_lab.gwlb")
EX_OK, EX_FAILURE, EX_USAGE = 0, 1, 64


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not ADDRESS:PORT")
    return host or "127.0.0.1", int(port)


def _int(value: str) -> int:
    return int(value, 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gwlb_lab.gwlb", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--member", dest="members", action="append",
                       metavar="ID=ADDRESS[:PORT]", help="an appliance of the server group (repeatable)")
    group.add_argument("--members-file", type=Path, metavar="FILE",
                       help="the server group as a JSON list, re-read when it changes")
    p.add_argument("--tun", default="gwlb0", help="tun device the intercepted traffic comes from")
    p.add_argument("--local", default="198.19.0.1", help="the GWLB's address on the data network")
    p.add_argument("--geneve-port", type=int, default=GENEVE_PORT)
    p.add_argument("--poll-interval", type=float, default=0.5,
                   help="seconds between reads of the members")
    s = p.add_argument_group("server group")
    s.add_argument("--scheduler", choices=SCHEDULERS, default="5TCH",
                   help="hash of 5-tuple, 3-tuple (addresses, protocol) or 2-tuple (addresses)")
    s.add_argument("--failover-mode", choices=FAILOVER_MODES, default="NoRebalance",
                   help="what happens to the existing flows of an unhealthy or removed member")
    s.add_argument("--drain-timeout", type=float, default=300.0,
                   help="connection draining: seconds a leaving member keeps its flows")
    s.add_argument("--no-connection-drain", dest="connection_drain", action="store_false",
                   help="no connection draining")
    g = p.add_argument_group("Geneve")
    g.add_argument("--layout", choices=LAYOUTS, default="aws",
                   help="32 bytes of options: AWS's published layout or an opaque unknown class")
    g.add_argument("--vni", type=int, default=0)
    g.add_argument("--endpoint-id", type=_int, default=Encapsulator.endpoint_id)
    g.add_argument("--attachment-id", type=_int, default=Encapsulator.attachment_id)
    g.add_argument("--hash-seed", default=DEFAULT_SEED.decode(),
                   help="seed of the flow hash (the lab uses it to predict members)")
    h = p.add_argument_group("health check")
    h.add_argument("--health-protocol", choices=("http", "tcp", "off"), default="http")
    h.add_argument("--health-port", type=int, default=8080)
    h.add_argument("--health-path", default="/health")
    h.add_argument("--health-interval", type=float, default=2.0, help="seconds")
    h.add_argument("--health-timeout", type=float, default=1.0, help="seconds")
    h.add_argument("--healthy-threshold", type=int, default=2, help="2-10")
    h.add_argument("--unhealthy-threshold", type=int, default=2, help="2-10")
    f = p.add_argument_group("flows")
    f.add_argument("--tcp-idle-timeout", type=float, default=350.0)
    f.add_argument("--idle-timeout", type=float, default=120.0)
    f.add_argument("--max-flows", type=int, default=100_000)
    o = p.add_argument_group("reporting")
    o.add_argument("--status", type=_address, default=("127.0.0.1", 8081), metavar="ADDR:PORT",
                   help="local status endpoint (GET /status, /flows)")
    o.add_argument("--status-file", type=Path, help="write the final status here on exit")
    o.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    return p


def config_from(args: argparse.Namespace) -> EmulatorConfig:
    """Raises ValueError naming the bad setting."""
    health = HealthCheckSettings(
        enabled=args.health_protocol != "off",
        protocol="tcp" if args.health_protocol == "tcp" else "http",
        port=args.health_port, path=args.health_path, interval=args.health_interval,
        timeout=args.health_timeout, healthy_threshold=args.healthy_threshold,
        unhealthy_threshold=args.unhealthy_threshold)
    return EmulatorConfig(
        tun=args.tun, local_address=args.local, geneve_port=args.geneve_port,
        encapsulator=Encapsulator(layout=args.layout, vni=args.vni, endpoint_id=args.endpoint_id,
                                  attachment_id=args.attachment_id),
        scheduler=args.scheduler, failover_mode=args.failover_mode, health=health,
        connection_drain=args.connection_drain, drain_timeout=args.drain_timeout,
        hash_seed=args.hash_seed.encode(), tcp_idle_timeout=args.tcp_idle_timeout,
        idle_timeout=args.idle_timeout,
        max_flows=args.max_flows, poll_interval=args.poll_interval, status_address=args.status)


def source_from(args: argparse.Namespace) -> MemberSource:
    """Raises ValueError (or OSError for a members file that cannot be read)."""
    if args.members_file is not None:
        return FileMembers(args.members_file)
    return StaticMembers.parse(args.members)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level)
    try:
        config = config_from(args)
        source = source_from(args)
    except (OSError, ValueError) as exc:
        print(f"gwlb_lab.gwlb: {exc}", file=sys.stderr)
        return EX_USAGE
    emulator = GwlbEmulator(config, source)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        emulator.start()
    except OSError as exc:
        print(f"gwlb_lab.gwlb: cannot start: {exc}", file=sys.stderr)
        return EX_FAILURE
    log.info("gwlb emulator started", extra={
        "tun": args.tun, "local": args.local, **config.describe(),
        "members": [f"{m.member_id}={m.address}:{m.port} {m.status}" for m in emulator.members],
        "status": f"{args.status[0]}:{args.status[1]}"})
    while not stop.wait(0.2) and not emulator.failed:
        pass
    emulator.stop()
    final = emulator.status()
    if args.status_file:
        args.status_file.write_text(json.dumps(final, indent=1) + "\n", encoding="utf-8")
    log.info("gwlb emulator stopped", extra={"counters": final["counters"], "drops": final["drops"],
                                             "mismatches": final["mismatches"]})
    return EX_FAILURE if emulator.failed else EX_OK


if __name__ == "__main__":
    sys.exit(main())
