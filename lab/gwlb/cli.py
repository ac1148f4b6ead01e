"""``python -m lab.gwlb``: run the GWLB emulator in the foreground (inside the gwlb namespace).

Logs JSON lines on stderr. SIGTERM or SIGINT: stop, write the final status (``--status-file``),
log the counters, exit 0.
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

from fleet import logs
from lab.gwlb.emulator import Emulator, EmulatorConfig
from lab.gwlb.encap import LAYOUTS, Encapsulator
from lab.gwlb.health import HealthChecker, make_probe
from lab.gwlb.members import DEFAULT_SEED, MemberSet, parse_member
from lab.gwlb.status import StatusServer

log = logging.getLogger("lab.gwlb")
EX_OK, EX_FAILURE, EX_USAGE = 0, 1, 64


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not ADDRESS:PORT")
    return host or "127.0.0.1", int(port)


def _int(value: str) -> int:
    return int(value, 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab.gwlb", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--member", dest="members", action="append", required=True,
                   metavar="ID=ADDRESS[:PORT]", help="an appliance of the server group (repeatable)")
    p.add_argument("--tun", default="gwlb0", help="tun device the intercepted traffic comes from")
    p.add_argument("--local", default="198.19.0.1", help="the GWLB's address on the data network")
    p.add_argument("--geneve-port", type=int, default=6081)
    g = p.add_argument_group("Geneve")
    g.add_argument("--layout", choices=LAYOUTS, default="aws",
                   help="32 bytes of options: AWS's published layout or an opaque unknown class")
    g.add_argument("--vni", type=int, default=0)
    g.add_argument("--endpoint-id", type=_int, default=Encapsulator.endpoint_id)
    g.add_argument("--attachment-id", type=_int, default=Encapsulator.attachment_id)
    g.add_argument("--hash-seed", default=DEFAULT_SEED.decode(),
                   help="seed of the flow hash (the lab uses it to predict members)")
    h = p.add_argument_group("health check")
    h.add_argument("--health-protocol", choices=("http", "tcp"), default="http")
    h.add_argument("--health-port", type=int, default=8080)
    h.add_argument("--health-path", default="/health")
    h.add_argument("--health-interval", type=float, default=2.0, help="seconds")
    h.add_argument("--health-timeout", type=float, default=1.0, help="seconds")
    h.add_argument("--healthy-threshold", type=int, default=2)
    h.add_argument("--unhealthy-threshold", type=int, default=2)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level)
    try:
        members = MemberSet([parse_member(spec) for spec in args.members],
                            seed=args.hash_seed.encode())
    except ValueError as exc:
        print(f"lab.gwlb: {exc}", file=sys.stderr)
        return EX_USAGE
    config = EmulatorConfig(
        tun=args.tun, local_address=args.local, geneve_port=args.geneve_port,
        encapsulator=Encapsulator(layout=args.layout, vni=args.vni, endpoint_id=args.endpoint_id,
                                  attachment_id=args.attachment_id),
        tcp_idle_timeout=args.tcp_idle_timeout, idle_timeout=args.idle_timeout,
        max_flows=args.max_flows,
    )
    emulator = Emulator(config, members)
    checker = HealthChecker(
        members,
        make_probe(args.health_protocol, args.health_port, args.health_path, args.health_timeout,
                   source=args.local),
        interval=args.health_interval, healthy_threshold=args.healthy_threshold,
        unhealthy_threshold=args.unhealthy_threshold,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        emulator.open()
        status = StatusServer(args.status, {"/status": emulator.snapshot,
                                            "/flows": emulator.flows.snapshot})
    except OSError as exc:
        print(f"lab.gwlb: cannot start: {exc}", file=sys.stderr)
        emulator.close()
        return EX_FAILURE
    status.start()
    checker.start()
    log.info("gwlb emulator started", extra={
        "tun": args.tun, "local": args.local, "layout": args.layout,
        "members": [f"{m.member_id}={m.address}:{m.port}" for m in members],
        "status": f"{args.status[0]}:{args.status[1]}"})
    exit_code = EX_OK
    try:
        emulator.run(stop)
    except Exception:
        log.exception("data path failed")
        exit_code = EX_FAILURE
    finally:
        checker.stop()
        status.stop()
        emulator.close()
        final = emulator.snapshot()
        if args.status_file:
            args.status_file.write_text(json.dumps(final, indent=1) + "\n", encoding="utf-8")
        log.info("gwlb emulator stopped", extra={"counters": final["counters"],
                                                 "drops": final["drops"],
                                                 "mismatches": final["mismatches"]})
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
