"""Read an SLS logstore through the real SDK, from inside a namespace.

Runs as ``ip netns exec NS python sls_reader.py`` (the test process stays in the root namespace,
where the namespace's endpoint is out of reach). Reads one JSON job from stdin::

    {"endpoint": "http://127.0.0.1:PORT", "project": "gwlb-lab",
     "access_key_id": "...", "access_key_secret": "...",
     "logstore": "flow-logs", "query": "kind: flow",    # a search (and SQL) ...
     "audit": "lost-records",                           # ... or one of gwlb_fleet.sls.queries's queries
     "from": 0, "to": 0, "limit": 1000}                 # epoch seconds; 0: the last/next hour

and prints the rows as one JSON list. Errors (SlsError) exit 1 with the error on stderr.
"""

from __future__ import annotations

import json
import sys
import time

from gwlb_fleet.sls import queries
from gwlb_fleet.sls.client import Sls, SlsConfig, SlsError


def main() -> int:
    job = json.loads(sys.stdin.read())
    sls = Sls(SlsConfig.model_validate({
        "endpoint": job["endpoint"], "project": job["project"],
        "access_key_id": job["access_key_id"], "access_key_secret": job["access_key_secret"],
        "timeout": 10.0,
    }))
    now = int(time.time())
    from_time = int(job.get("from") or now - 3600)
    to_time = int(job.get("to") or now + 3600)
    try:
        if job.get("audit"):
            rows = queries.run(sls, queries.QUERIES[job["audit"]], from_time, to_time)
        else:
            rows = sls.get_logs(job.get("logstore", queries.FLOW_LOGSTORE), job["query"], from_time,
                                to_time, limit=int(job.get("limit", 1000)))
    except SlsError as exc:
        print(f"sls_reader: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
