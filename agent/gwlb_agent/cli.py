"""``gwlb-agent``: run the agent, show its effective config, drain it, check a policy."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from gwlb_agent.config import AgentConfig, ConfigError, load_config, load_health_address, render_toml
from gwlb_agent.policy import PolicyError, load_policy
from gwlb_fleet import logs

EX_OK, EX_FAILURE, EX_USAGE, EX_UNAVAILABLE, EX_CONFIG = 0, 1, 64, 69, 78


def _config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config file")
    parser.add_argument("--listen", metavar="ADDR:PORT", help="Geneve listen address")
    parser.add_argument("--health", metavar="ADDR:PORT", help="health endpoint address")
    parser.add_argument(
        "--gwlb-cidr",
        dest="gwlb_cidrs",
        metavar="CIDR",
        action="append",
        help="a network the GWLB sends from (repeatable)",
    )
    parser.add_argument("--policy", metavar="FILE", help="policy file (TOML)")
    parser.add_argument("--flow-log", metavar="PATH", help="flow records as JSON lines")
    parser.add_argument("--appliance-id", metavar="ID", help="this appliance's id in records")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gwlb-agent", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the agent in the foreground")
    _config_flags(run)
    config = commands.add_parser("config", help="configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser("show", help="print the effective configuration")
    _config_flags(show)
    for name, help_text in (
        ("drain", "stop taking new flows (health answers 503)"),
        ("undrain", "take new flows again"),
        ("status", "print the running agent's counters"),
    ):
        sub = commands.add_parser(name, help=help_text)
        _config_flags(sub)
    check = commands.add_parser("check-policy", help="validate a policy file")
    check.add_argument("file")
    return parser


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "listen": args.listen,
        "health": args.health,
        "gwlb_cidrs": args.gwlb_cidrs,
        "policy": args.policy,
        "flow_log": {"path": args.flow_log} if args.flow_log is not None else None,
        "appliance_id": args.appliance_id,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-policy":
        return _check_policy(args.file)
    try:
        if args.command in ("drain", "undrain", "status"):
            # The control commands need only the health address, not a runnable config.
            return _control(load_health_address(args.config, _flags(args)), args.command)
        config = load_config(args.config, _flags(args))
    except ConfigError as exc:
        print(f"gwlb-agent: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.command == "config":
        sys.stdout.write(render_toml(config))
        return EX_OK
    return _run(config)


def _run(config: AgentConfig) -> int:
    from gwlb_agent.service import Agent  # the data path's imports only when it runs

    logs.configure(config.log_level)
    try:
        agent = Agent(config)
    except PolicyError as exc:
        print(f"gwlb-agent: {exc}", file=sys.stderr)
        return EX_CONFIG
    except OSError as exc:
        print(f"gwlb-agent: cannot open the flow log: {exc}", file=sys.stderr)
        return EX_CONFIG
    try:
        return agent.run_until_signalled()
    except PermissionError as exc:
        print(
            f"gwlb-agent: {exc}: the agent needs CAP_NET_RAW for replies and "
            "CAP_NET_BIND_SERVICE for ports below 1024",
            file=sys.stderr,
        )
        return EX_FAILURE
    except OSError as exc:
        print(f"gwlb-agent: cannot start: {exc}", file=sys.stderr)
        return EX_FAILURE


def _check_policy(path: str) -> int:
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        print(f"gwlb-agent: {exc}", file=sys.stderr)
        return EX_CONFIG
    print(f"{path}: {len(policy.rules)} rules, default {'allow' if policy.default_allow else 'deny'}")
    return EX_OK


def _control(health_address: tuple[str, int], command: str) -> int:
    host, port = health_address
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    url = f"http://{host}:{port}"
    try:
        if command == "status":
            with urllib.request.urlopen(f"{url}/status", timeout=5) as response:
                print(json.dumps(json.load(response), indent=2))
        else:
            request = urllib.request.Request(f"{url}/{command}", method="POST", data=b"")
            with urllib.request.urlopen(request, timeout=5) as response:
                print(response.read().decode().strip())
    except (urllib.error.URLError, OSError) as exc:
        print(f"gwlb-agent: no agent answering at {url}: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
