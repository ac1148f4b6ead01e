"""``python -m gwlb_lab.sls``: the local SLS endpoint in the foreground.

    python -m gwlb_lab.sls --listen 127.0.0.1:PORT --db FILE [--access-key-id X --access-key-secret Y]
                      [--project P ...] [--setup PROJECT] [--fault MODE [--delay S] [--status 503]]

Prints ``listening on http://ADDR:PORT`` on stdout once it answers (port 0 picks a free port),
logs JSON lines on stderr, stops on SIGTERM or SIGINT. Faults can be changed while it runs:
``curl -d '{"mode": "5xx"}' http://ADDR:PORT/_lab/fault``; counters: ``GET /_lab/stats``.
Without keys any well-formed signature is accepted; with them, signatures are verified. The
secret may come from $LAB_SLS_ACCESS_KEY_SECRET rather than the command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from gwlb_fleet import logs
from gwlb_lab.sls.server import FAULT_MODES, Fault, LocalSls

log = logging.getLogger("gwlb_lab.sls")
EX_OK, EX_FAILURE, EX_USAGE = 0, 1, 64


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not ADDRESS:PORT")
    return host or "127.0.0.1", int(port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gwlb_lab.sls",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--listen",
        type=_address,
        default=("127.0.0.1", 0),
        metavar="ADDR:PORT",
        help="where to listen (default 127.0.0.1:0, a free port)",
    )
    p.add_argument("--db", default=":memory:", help="SQLite file for logstores and logs (default :memory:)")
    p.add_argument("--access-key-id", help="the key the endpoint accepts (verifies signatures)")
    p.add_argument("--access-key-secret", help="its secret (or $LAB_SLS_ACCESS_KEY_SECRET)")
    p.add_argument(
        "--project",
        dest="projects",
        action="append",
        metavar="NAME",
        help="the projects that exist (repeatable; default: any)",
    )
    p.add_argument(
        "--setup",
        metavar="PROJECT",
        help="create gwlb-fleet's logstores, indexes and saved searches in PROJECT at start",
    )
    f = p.add_argument_group("faults (also at run time: POST /_lab/fault)")
    f.add_argument("--fault", choices=FAULT_MODES, default="none")
    f.add_argument("--delay", type=float, default=2.0, help="slow: seconds before each answer")
    f.add_argument("--status", type=int, choices=(500, 503), default=500, help="5xx: the status")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level)
    secret = args.access_key_secret or os.environ.get("LAB_SLS_ACCESS_KEY_SECRET")
    if bool(args.access_key_id) != bool(secret):
        print("gwlb_lab.sls: give both --access-key-id and its secret, or neither", file=sys.stderr)
        return EX_USAGE
    keys = {args.access_key_id: secret} if args.access_key_id and secret else None
    fault = Fault(args.fault, delay=args.delay if args.fault == "slow" else 0.0, status=args.status)
    host, port = args.listen
    try:
        local = LocalSls(host, port, db=args.db, keys=keys, projects=args.projects, fault=fault).start()
    except OSError as exc:
        print(f"gwlb_lab.sls: cannot start: {exc}", file=sys.stderr)
        return EX_FAILURE
    if args.setup:
        from gwlb_lab.sls.client import set_up

        saved = local.fault
        local.fault = Fault()
        try:
            for step in set_up(local, args.setup):
                log.info("sls setup", extra={"step": str(step)})
        finally:
            local.fault = saved
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"listening on {local.endpoint}", flush=True)
    log.info(
        "local SLS started",
        extra={
            "endpoint": local.endpoint,
            "db": args.db,
            "verifies_signatures": keys is not None,
            "fault": fault.mode,
        },
    )
    stop.wait()
    stats = local.snapshot()
    local.stop()
    log.info("local SLS stopped", extra={"stats": json.loads(json.dumps(stats))})
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
