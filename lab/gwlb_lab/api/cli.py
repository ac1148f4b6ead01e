"""``python -m gwlb_lab.api``: the local Alibaba Cloud OpenAPI endpoint in the foreground.

    python -m gwlb_lab.api --listen 127.0.0.1:PORT [--seed] [--scaling-group ID --server-group ID
                      --listener ID --min N --max N --desired N --hook-timeout S] [--retry-after SECONDS]

Prints ``listening on http://ADDR:PORT`` once it answers (port 0 picks a free one), then the
settings that point the control plane at it (``API_PROTOCOL=http``, ``GWLB_ENDPOINT=...``), one a
line. ``--seed`` creates a fleet's cloud side: a scaling group with scale-out and scale-in
lifecycle hooks, and a GWLB server group behind a listener. Time is real: lifecycle actions time
out as ESS's do. Logs JSON lines on stderr; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from gwlb_fleet import logs
from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.clock import SystemClock
from gwlb_lab.api.server import LocalOpenApi

log = logging.getLogger("gwlb_lab.api")
EX_OK, EX_FAILURE = 0, 1


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not ADDRESS:PORT")
    return host or "127.0.0.1", int(port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gwlb_lab.api",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--listen", type=_address, default=("127.0.0.1", 0), metavar="ADDR:PORT")
    p.add_argument("--seed", action="store_true", help="create the fleet's scaling group and server group")
    p.add_argument("--scaling-group", default="asg-lab")
    p.add_argument("--server-group", default="sgp-lab")
    p.add_argument("--listener", default="lsn-lab")
    p.add_argument("--min", type=int, default=0, dest="min_size")
    p.add_argument("--max", type=int, default=4, dest="max_size")
    p.add_argument("--desired", type=int, default=0)
    p.add_argument("--hook-timeout", type=int, default=900, help="lifecycle hooks' timeout, seconds")
    p.add_argument(
        "--retry-after",
        type=float,
        default=None,
        help="seconds: throttling answers ask for this wait (x-acs-retry-after, sent in ms, F-API-1)",
    )
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level)
    cloud = FakeCloud(clock=SystemClock())
    if args.seed:
        cloud.seed_fleet(
            args.scaling_group,
            args.server_group,
            args.listener,
            args.min_size,
            args.max_size,
            args.desired,
            args.hook_timeout,
        )
    host, port = args.listen
    try:
        api = LocalOpenApi(cloud, host, port, retry_after_s=args.retry_after).start()
    except OSError as exc:
        print(f"gwlb_lab.api: cannot start: {exc}", file=sys.stderr)
        return EX_FAILURE
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"listening on http://{api.endpoint}", flush=True)
    for name, value in api.env().items():
        print(f"{name}={value}", flush=True)
    log.info("local OpenAPI endpoint started", extra={"endpoint": api.endpoint, "seeded": args.seed})
    stop.wait()
    api.stop()
    log.info("local OpenAPI endpoint stopped", extra={"requests": len(api.requests)})
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
