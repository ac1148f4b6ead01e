"""scripts/lab (python -m lab): try gwlb-fleet on this machine, no cloud account needed.

  run    bring the lab up, curl through the appliances, block it with a deny rule, show the
         flow records, tear everything down (the default)
  up     bring the lab up and leave it running
  down   tear down what up or a crashed run left behind

Needs root (network namespaces), iproute2 and curl.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lab.gwlb.encap import LAYOUTS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")
    for name, help_text in (("run", "the try-it scenario, then tear down"),
                            ("up", "bring the lab up and leave it running")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--appliances", type=int, default=2, choices=range(1, 9),
                         metavar="N", help="how many appliances (1-8, default 2)")
        sub.add_argument("--layout", choices=LAYOUTS, default="aws",
                         help="Geneve options: AWS's published layout or an opaque one")
        if name == "run":
            sub.add_argument("--requests", type=int, default=4, metavar="N",
                             help="curl requests before the deny rule (default 4)")
    down = commands.add_parser("down", help="tear down what up or a crashed run left")
    down.add_argument("--all", action="store_true",
                      help="also the namespaces of lab runs that are still alive")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lab import tryit
    from lab.netns import has_netns_privileges

    can, why_not = has_netns_privileges()
    if not can:
        print(f"scripts/lab: {why_not}", file=sys.stderr)
        return 77
    command = args.command or "run"
    if command == "down":
        return tryit.down(everything=args.all)
    if command == "up":
        return tryit.up(appliances=args.appliances, layout=args.layout)
    if args.command is None:
        return tryit.run()
    return tryit.run(appliances=args.appliances, layout=args.layout, requests=args.requests)


if __name__ == "__main__":
    sys.exit(main())
