"""The project's SLS resources, made to match what gwlb-fleet needs (``scripts/sls-setup``).

- logstores ``flow-logs`` (the agents' flow records and loss reports) and ``fleet-audit`` (the
  control plane's audit events), with their retention;
- on each, an index typing every key the writers use (``LOG_KEY_TYPES``: text / long / double)
  with ``doc_value`` so that SQL can read it, plus the tags the agents attach
  (``__tag__:instance_id``, ``__tag__:zone``) and a full-text index;
- a saved search for each audit query (gwlb_fleet.sls.queries), named ``gwlb-<query>``.

Idempotent: what is missing is created, what differs is updated, what matches is left alone,
and each is reported as such. An index update keeps keys someone added by hand. Shard counts
are set at creation only (SLS changes them by splitting shards): a difference is reported.
``dry_run`` reads the current state and reports what would change, changing nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aliyun.log import IndexConfig, IndexKeyConfig, IndexLineConfig

from gwlb_fleet.sls import auditlog, flowrecord
from gwlb_fleet.sls.client import Sls, SlsError
from gwlb_fleet.sls.queries import AUDIT_LOGSTORE, FLOW_LOGSTORE, QUERIES, AuditQuery

KeyType = Literal["text", "long", "double"]
Status = Literal["created", "updated", "unchanged", "would create", "would update"]

# SLS's default delimiters for text. "." and "-" are not among them: an address, an instance id
# or a rule name stays one token, so ``src_ip: 10.0.0.1`` finds exactly that address.
TOKENS = [
    ",",
    " ",
    "'",
    '"',
    ";",
    "=",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "?",
    "@",
    "&",
    "<",
    ">",
    "/",
    ":",
    "\n",
    "\t",
    "\r",
]
# The LogGroup tags writers set: the agent's instance and zone, the PAN-OS intake's firewall serial
# (gwlb_fleet.sls.flowwriter.SERIAL_TAG). A tag is searched and analysed only when indexed, as
# `__tag__:<key>`, type text (F-SLS-5).
TAG_KEYS: dict[str, KeyType] = {
    "__tag__:instance_id": "text",
    "__tag__:zone": "text",
    "__tag__:serial": "text",
}
DEFAULT_FLOW_RETENTION_DAYS = 30
DEFAULT_AUDIT_RETENTION_DAYS = 180


@dataclass(frozen=True)
class LogstoreSpec:
    name: str
    retention_days: int
    shards: int
    keys: Mapping[str, KeyType]


@dataclass(frozen=True)
class Step:
    kind: Literal["logstore", "index", "savedsearch"]
    name: str
    status: Status
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind:<12} {self.name:<34} {self.status}" + (
            f"  ({self.detail})" if self.detail else ""
        )


def logstore_specs(
    flow_retention_days: int = DEFAULT_FLOW_RETENTION_DAYS,
    audit_retention_days: int = DEFAULT_AUDIT_RETENTION_DAYS,
) -> list[LogstoreSpec]:
    return [
        LogstoreSpec(FLOW_LOGSTORE, flow_retention_days, 2, {**flowrecord.LOG_KEY_TYPES, **TAG_KEYS}),
        LogstoreSpec(AUDIT_LOGSTORE, audit_retention_days, 1, dict(auditlog.LOG_KEY_TYPES)),
    ]


def index_config(spec: LogstoreSpec) -> IndexConfig:
    keys = {
        name: IndexKeyConfig(
            token_list=list(TOKENS) if kind == "text" else None,
            case_sensitive=False,
            index_type=kind,
            doc_value=True,
        )
        for name, kind in spec.keys.items()
    }
    line = IndexLineConfig(token_list=list(TOKENS), case_sensitive=False, chinese=False)
    return IndexConfig(line_config=line, key_config_list=keys)


def savedsearch_detail(query: AuditQuery) -> dict[str, str]:
    return {
        "savedsearchName": query.savedsearch_name,
        "searchQuery": query.query,
        "logstore": query.logstore,
        "topic": "",
        "displayName": query.title,
    }


def _essential(config: Mapping[str, Any]) -> dict[str, Any]:
    """What decides how a key (or the line) is indexed; the service adds fields of its own."""
    out: dict[str, Any] = {
        "type": config.get("type", "text"),
        "doc_value": bool(config.get("doc_value", False)),
    }
    if out["type"] in ("text", "json"):
        out["token"] = sorted(config.get("token") or [])
        out["caseSensitive"] = bool(config.get("caseSensitive", False))
    return out


def _line_essential(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not config:
        return None
    return {
        "token": sorted(config.get("token") or []),
        "caseSensitive": bool(config.get("caseSensitive", False)),
    }


def _not_found(exc: SlsError, *codes: str) -> bool:
    return exc.code in codes


class Setup:
    def __init__(self, sls: Sls, dry_run: bool = False) -> None:
        self.sls = sls
        self.project = sls.project
        self.dry_run = dry_run

    def _change(
        self, kind: Literal["logstore", "index", "savedsearch"], name: str, create: bool, detail: str = ""
    ) -> Step:
        if self.dry_run:
            return Step(kind, name, "would create" if create else "would update", detail)
        return Step(kind, name, "created" if create else "updated", detail)

    def logstore(self, spec: LogstoreSpec) -> Step:
        try:
            current = self.sls.call("get_logstore", self.project, spec.name)
        except SlsError as exc:
            if not _not_found(exc, "LogStoreNotExist"):
                raise
            detail = f"{spec.retention_days} days, {spec.shards} shard{'s' if spec.shards != 1 else ''}"
            if not self.dry_run:
                self.sls.call(
                    "create_logstore",
                    self.project,
                    spec.name,
                    ttl=spec.retention_days,
                    shard_count=spec.shards,
                )
            return self._change("logstore", spec.name, True, detail)
        notes = []
        if int(current.shard_count) != spec.shards:
            notes.append(f"{current.shard_count} shards, not {spec.shards}: shards change by splitting only")
        if int(current.ttl) == spec.retention_days:
            return Step("logstore", spec.name, "unchanged", "; ".join(notes))
        if not self.dry_run:
            self.sls.call("update_logstore", self.project, spec.name, ttl=spec.retention_days)
        return self._change(
            "logstore",
            spec.name,
            False,
            "; ".join([f"retention {current.ttl} -> {spec.retention_days} days", *notes]),
        )

    def index(self, spec: LogstoreSpec, logstore_is_new: bool) -> Step:
        want = index_config(spec)
        current: IndexConfig | None = None
        if not (logstore_is_new and self.dry_run):
            try:
                current = self.sls.call("get_index_config", self.project, spec.name).get_index_config()
            except SlsError as exc:
                if not _not_found(exc, "IndexConfigNotExist", "LogStoreNotExist"):
                    raise
        if current is None:
            if not self.dry_run:
                self.sls.call("create_index", self.project, spec.name, want)
            return self._change("index", spec.name, True, f"{len(spec.keys)} keys")
        want_json: dict[str, Any] = want.to_json()
        have_json: dict[str, Any] = current.to_json()
        changed = (
            [] if _line_essential(want_json["line"]) == _line_essential(have_json.get("line")) else ["line"]
        )
        have_keys: dict[str, Any] = have_json.get("keys") or {}
        want_keys: dict[str, Any] = want_json.get("keys") or {}  # none: a full-text-only index
        changed += [
            f"keys.{name}"
            for name, key in want_keys.items()
            if name not in have_keys or _essential(key) != _essential(have_keys[name])
        ]
        if not changed:
            return Step("index", spec.name, "unchanged")
        merged = IndexConfig()
        merged.from_json({**have_json, "line": want_json["line"], "keys": {**have_keys, **want_keys}})
        if not self.dry_run:
            self.sls.call("update_index", self.project, spec.name, merged)
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        return self._change("index", spec.name, False, shown)

    def savedsearch(self, query: AuditQuery) -> Step:
        want = savedsearch_detail(query)
        try:
            have: Mapping[str, Any] = self.sls.call(
                "get_savedsearch", self.project, query.savedsearch_name
            ).get_entity()
        except SlsError as exc:
            if not _not_found(exc, "SavedSearchNotExist"):
                raise
            if not self.dry_run:
                self.sls.call("create_savedsearch", self.project, want)
            return self._change("savedsearch", query.savedsearch_name, True, query.logstore)
        changed = [k for k, v in want.items() if (have.get(k) or "") != v]
        if not changed:
            return Step("savedsearch", query.savedsearch_name, "unchanged")
        if not self.dry_run:
            self.sls.call("update_savedsearch", self.project, want)
        return self._change("savedsearch", query.savedsearch_name, False, ", ".join(changed))

    def run(self, specs: Sequence[LogstoreSpec], queries: Sequence[AuditQuery]) -> list[Step]:
        steps: list[Step] = []
        for spec in specs:
            step = self.logstore(spec)
            steps.append(step)
            steps.append(self.index(spec, logstore_is_new=step.status in ("created", "would create")))
        steps.extend(self.savedsearch(query) for query in queries)
        return steps


def apply(
    sls: Sls,
    dry_run: bool = False,
    flow_retention_days: int = DEFAULT_FLOW_RETENTION_DAYS,
    audit_retention_days: int = DEFAULT_AUDIT_RETENTION_DAYS,
) -> list[Step]:
    specs = logstore_specs(flow_retention_days, audit_retention_days)
    return Setup(sls, dry_run).run(specs, list(QUERIES.values()))


def build_parser() -> argparse.ArgumentParser:
    from gwlb_fleet.sls import cli as sls_cli

    parser = argparse.ArgumentParser(
        prog="scripts/sls-setup",
        description="Create or update gwlb-fleet's SLS logstores, indexes and saved searches (idempotent).",
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")
    parser.add_argument(
        "--retention-days",
        type=int,
        metavar="N",
        help=f"retention of both logstores (default: flow logs {DEFAULT_FLOW_RETENTION_DAYS}, "
        f"audit log {DEFAULT_AUDIT_RETENTION_DAYS})",
    )
    parser.add_argument("--flow-retention-days", type=int, metavar="N")
    parser.add_argument("--audit-retention-days", type=int, metavar="N")
    sls_cli.add_connection_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    from gwlb_fleet.sls import cli as sls_cli

    args = build_parser().parse_args(argv)
    for value in (args.retention_days, args.flow_retention_days, args.audit_retention_days):
        if value is not None and not 1 <= value <= 3650:
            print("sls-setup: retention must be 1 to 3650 days", file=sys.stderr)
            return sls_cli.EX_USAGE
    flow_days = args.flow_retention_days or args.retention_days or DEFAULT_FLOW_RETENTION_DAYS
    audit_days = args.audit_retention_days or args.retention_days or DEFAULT_AUDIT_RETENTION_DAYS
    try:
        sls = sls_cli.connect(args, environ)
    except sls_cli.UsageError as exc:
        print(f"sls-setup: {exc}", file=sys.stderr)
        return sls_cli.EX_USAGE
    print(
        f"SLS project {sls.project} at {sls.config.endpoint}"
        + (" (dry run: no changes)" if args.dry_run else "")
    )
    try:
        specs = logstore_specs(flow_days, audit_days)
        setup = Setup(sls, args.dry_run)
        for spec in specs:
            step = setup.logstore(spec)
            print(step, flush=True)
            print(setup.index(spec, logstore_is_new=step.status in ("created", "would create")), flush=True)
        for query in QUERIES.values():
            print(setup.savedsearch(query), flush=True)
    except SlsError as exc:
        print(f"sls-setup: {exc}", file=sys.stderr)
        return sls_cli.EX_FAILURE
    return sls_cli.EX_OK


if __name__ == "__main__":
    sys.exit(main())
