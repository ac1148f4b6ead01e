"""``python -m gwlb_lab.panorama``: the local Panorama in the foreground.

    python -m gwlb_lab.panorama --listen 127.0.0.1:PORT --cert-dir DIR [--api-key-file FILE]
                           [--firewall SERIAL:IP ...] [--device-group NAME] [--template-stack NAME]
                           [--license-manager NAME]

Makes a private CA and a server certificate in DIR (``DIR/ca.pem`` is what PANORAMA_CA_FILE
takes), then prints one JSON line on stdout once it answers::

    {"url": "https://127.0.0.1:PORT", "host": "127.0.0.1:PORT", "ca_file": "DIR/ca.pem",
     "api_key_file": "DIR/api-key"}

The API key is written to a file readable by its owner only (never printed); ``--api-key-file``
reads one instead. Each ``--firewall`` starts managed, connected, in the device group and the
template stack, licensed by the license manager. Logs are JSON lines on stderr; SIGTERM or
SIGINT stops it.
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
from pathlib import Path
from types import FrameType

from gwlb_fleet import logs
from gwlb_fleet.panos.fakes import FakePanorama
from gwlb_lab.panorama.server import LocalPanorama

log = logging.getLogger("gwlb_lab.panorama")
EX_OK, EX_FAILURE = 0, 1


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not ADDRESS:PORT")
    return host or "127.0.0.1", int(port)


def _firewall(value: str) -> tuple[str, str]:
    serial, sep, ip = value.partition(":")
    if not sep or not serial or not ip:
        raise argparse.ArgumentTypeError(f"{value!r} is not SERIAL:IP")
    return serial, ip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gwlb_lab.panorama",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--listen", type=_address, default=("127.0.0.1", 0), metavar="ADDR:PORT")
    p.add_argument("--cert-dir", type=Path, required=True, help="where the CA and certificate are made")
    p.add_argument("--api-key-file", type=Path, help="read the API key from here (default: make one)")
    p.add_argument("--firewall", type=_firewall, action="append", default=[], metavar="SERIAL:IP")
    p.add_argument("--device-group", default="gwlb-fw")
    p.add_argument("--template-stack", default="gwlb-stack")
    p.add_argument("--license-manager", default="gwlb-lm")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level)
    fake = FakePanorama(
        device_groups=(args.device_group,),
        template_stacks=(args.template_stack,),
        license_managers=(args.license_manager,),
    )
    for serial, ip in args.firewall:
        fake.add_firewall(serial, ip)
    api_key = args.api_key_file.read_text().strip() if args.api_key_file else None
    host, port = args.listen
    server = LocalPanorama(args.cert_dir, host, port, panorama=fake, api_key=api_key)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return EX_FAILURE
    key_file = args.api_key_file or _write_key(args.cert_dir / "api-key", server.api_key)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        json.dumps(
            {
                "url": server.url,
                "host": server.host,
                "ca_file": str(server.ca_file),
                "api_key_file": str(key_file),
            }
        ),
        flush=True,
    )
    log.info("listening", extra={"url": server.url, "firewalls": len(args.firewall)})
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return EX_OK


def _write_key(path: Path, key: str) -> Path:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(key + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
