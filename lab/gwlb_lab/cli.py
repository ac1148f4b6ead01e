"""scripts/lab (python -m gwlb_lab): gwlb-fleet on this machine, no cloud account needed.

  run             the whole system and a scripted scenario with a live view: two appliances
                  in service, load rises until a third launches, one is killed and replaced
                  (failover measured), load falls until one is drained away, licences released,
                  every audit query answered; then a report, and everything torn down (default)
  up              bring the whole system up (two appliances, normal load) and leave it running
  status          the running lab's fleet (--watch: refreshed every second)
  load N          N concurrent client connections
  kill NAME       kill an appliance's agent (NAME: nva-1, ...; pause / resume: SIGSTOP / SIGCONT)
  audit           every audit query against the lab's SLS
  down            tear down what up or a crashed run left behind

run and up take --kind vmseries (the default: stand-in VM-Series firewalls, registered with
Panorama, forwarding PAN-OS traffic and threat logs to the intake function), --kind linux (Linux
appliances: the agent alone, its own policy deciding, shipping its flow records to SLS) or --kind
kernel (Linux appliances whose kernel decides: an nftables ruleset in each appliance, web and ping
allowed, the admin port and SSH dropped; the agent in tun mode, its flow records from conntrack and
NFLOG shipped to SLS; the control plane sees Linux appliances).

Needs root (network namespaces), iproute2, curl and openssl; --kind kernel also nft and conntrack.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gwlb_lab.cloud.config import LAB_KINDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="the scenario with a live view, a report, then tear down")
    run.add_argument("--plain", action="store_true", help="progress lines instead of the live view")
    up = commands.add_parser("up", help="bring the whole system up and leave it running")
    for sub in (run, up):
        sub.add_argument("--kind", choices=LAB_KINDS, default="vmseries",
                         help="the fleet's appliances (default: vmseries)")
    status = commands.add_parser("status", help="the running lab's fleet")
    status.add_argument("--watch", action="store_true", help="refresh every second (Ctrl-C ends)")
    load = commands.add_parser("load", help="set the number of concurrent client connections")
    load.add_argument("connections", type=int, metavar="N")
    for action, text in (("kill", "kill an appliance's agent (SIGKILL)"),
                         ("pause", "pause an appliance's agent (SIGSTOP)"),
                         ("resume", "resume a paused agent (SIGCONT)")):
        sub = commands.add_parser(action, help=text)
        sub.add_argument("appliance", metavar="NAME", help="nva-N, its instance id or its address")
    audit = commands.add_parser("audit", help="every audit query against the lab's SLS")
    audit.add_argument("--since", type=float, default=3600.0, metavar="S", help="the last S seconds")
    down = commands.add_parser("down", help="tear down what up or a crashed run left")
    down.add_argument("--all", action="store_true",
                      help="also the namespaces of lab runs that are still alive")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gwlb_lab import commands
    from gwlb_lab.control import ControlError
    from gwlb_lab.netns import has_netns_privileges
    from gwlb_lab.topology import LabError

    can, why_not = has_netns_privileges()
    if not can:
        print(f"scripts/lab: {why_not}", file=sys.stderr)
        return 77
    command = args.command or "run"
    try:
        if command == "run":
            return commands.run(live=False if getattr(args, "plain", False) else None,
                                kind=getattr(args, "kind", "vmseries"))
        if command == "up":
            return commands.up(kind=args.kind)
        if command == "status":
            return commands.status(watch=args.watch)
        if command == "load":
            return commands.set_load(args.connections)
        if command in ("kill", "pause", "resume"):
            return commands.appliance(command, args.appliance)
        if command == "audit":
            return commands.audit(since_s=args.since)
        return commands.down(everything=args.all)
    except (LabError, ControlError, OSError) as exc:
        print(f"scripts/lab {command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
