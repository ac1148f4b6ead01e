"""``python -m gwlb_lab.appserver``: the lab's app server, a static page over HTTP.

``python -m http.server`` would do, but its server looks up its own name in DNS when it binds,
and in the server namespace that lookup goes out through the GWLB path and waits for the
resolver's timeout. This one skips the lookup, logs the requests that fail on stderr, and keeps
connections open between requests (HTTP/1.1 keep-alive: the lab's clients hold many, each a flow
through the appliances).
"""

from __future__ import annotations

import argparse
import functools
import signal
import socketserver
import sys
from collections.abc import Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


class KeepAliveHandler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # SimpleHTTPRequestHandler sends Content-Length: keep-alive works
    timeout = 120  # a client that vanished without a FIN does not hold its thread for ever

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if str(int(code) if isinstance(code, int) else code) != "200":  # the lab's load: thousands
            super().log_request(code, size)


class AppServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gwlb_lab.appserver", description=__doc__)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--directory", default=".")
    args = parser.parse_args(argv)
    handler = functools.partial(KeepAliveHandler, directory=args.directory)
    server = AppServer((args.bind, args.port), handler)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    print(f"serving {args.directory} on http://{args.bind}:{args.port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
