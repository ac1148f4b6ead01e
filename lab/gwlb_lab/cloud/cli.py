"""``python -m gwlb_lab.cloud --config RUN_DIR/cloud.json``: the lab's cloud in the foreground, inside
the gwlb namespace (the runner, gwlb_lab.fleetlab, starts it there).

Prints ``ready`` on stdout once every endpoint answers and the control socket is up; logs JSON
lines on stderr. Stops on SIGTERM or SIGINT, on ``POST /stop``, or when the runner that owns it
is gone: appliances' agents are stopped first (their flow records reach SLS), then the rest.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from gwlb_fleet import logs
from gwlb_lab.cloud.config import CloudConfig

log = logging.getLogger("gwlb_lab.cloud")
EX_OK, EX_FAILURE = 0, 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gwlb_lab.cloud", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    config = CloudConfig.read(args.config)
    from gwlb_lab.cloud.cloud import LabCloud

    cloud = LabCloud(config)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        cloud.stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cloud.start()
    except Exception:
        log.exception("the lab cloud did not start")
        cloud.stop()
        return EX_FAILURE
    print("ready", flush=True)
    try:
        cloud.wait()
    finally:
        cloud.stop()
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
