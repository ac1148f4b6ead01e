"""The agent's kernel flow log, run in the forwarding namespace of a netns test.

``ip netns exec FWD python kernel_flowlog_peer.py JOB.json`` with the job::

    {"out": "records.jsonl", "nflog_group": 7, "eve": "eve.json" | null, "denied_idle": 1.0,
     "export_interval": 60.0,
     "identities": [{"protocol": 17, "key_hex": "...", "gwlb_ip": "198.18.50.1", "vni": 77,
                     "options_hex": "..."}]}

Opens conntrack and NFLOG sockets in this namespace (that is why it runs here, not in the test
process), stands in for the tun path by remembering the given GWLB identities, prints ``ready``,
and appends each record as one JSON line to ``out`` until SIGTERM, when it writes the last records
of the flows still open and exits 0.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

from gwlb_agent.kernel.flowlog import KernelFlowLog
from gwlb_agent.kernel.records import FlowIdentities, GwlbIdentity, KernelFlowRecords
from gwlb_fleet.sls.flowrecord import FlowRecord


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text())
    identities = FlowIdentities()
    for entry in job.get("identities", []):
        identities.remember(
            (entry["protocol"], bytes.fromhex(entry["key_hex"])),
            GwlbIdentity(
                socket.inet_aton(entry["gwlb_ip"]), entry["vni"], bytes.fromhex(entry["options_hex"])
            ),
        )
    out = open(job["out"], "a", encoding="utf-8")  # noqa: SIM115 - closed at exit below

    def write(record: FlowRecord) -> None:
        out.write(record.to_json() + "\n")
        out.flush()

    records = KernelFlowRecords(
        "kernel-test",
        identities,
        denied_idle=job["denied_idle"],
        export_interval=job.get("export_interval", 60.0),
    )
    flowlog = KernelFlowLog(
        records, write, job["nflog_group"], eve_path=Path(job["eve"]) if job.get("eve") else None
    )

    def stop(_signum: int, _frame: FrameType | None) -> None:
        flowlog.stop()

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    try:
        flowlog.run()
    finally:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
