"""The kernel-mode flow log: one thread reads conntrack, NFLOG and Suricata's EVE log and hands
the joined FlowRecords to a sink (the agent's export, as the inline flow table does).

Run it in the network namespace where the appliance forwards (the sockets belong to the
namespace they are opened in). conntrack reports a flow's counters only when the flow ends, so the
table is also dumped: at start (the counts of flows an earlier agent recorded), every
``export_interval`` (records of long flows) and at stop (the last record of every open flow).
Lost netlink events (ENOBUFS: the receive buffer overflowed) are
counted and logged, never ignored: records of those flows are missing and the log says so.
"""

from __future__ import annotations

import errno
import logging
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gwlb_agent.kernel import nfnetlink as nl
from gwlb_agent.kernel.conntrack import ConntrackEvent, ConntrackEvents, dump_flows, enable_accounting
from gwlb_agent.kernel.nflog import NflogGroup
from gwlb_agent.kernel.records import KernelFlowRecords, SnapshotReason
from gwlb_agent.kernel.suricata import EveTail
from gwlb_fleet.sls.flowrecord import FlowRecord

log = logging.getLogger(__name__)
RecordSink = Callable[[FlowRecord], None]
POLL_SECONDS = 0.2  # how often the EVE file and the denied-flow expiry are looked at
DRAIN_READS = 1000  # at stop: datagrams of events read at most before the last dump


class KernelFlowLog:
    def __init__(
        self,
        records: KernelFlowRecords,
        sink: RecordSink,
        nflog_group: int,
        eve_path: Path | None = None,
        turn_on_accounting: bool = True,
    ) -> None:
        if turn_on_accounting:
            enable_accounting()
        self.records = records
        self.sink = sink
        self.conntrack = ConntrackEvents()
        try:
            self.nflog = NflogGroup(nflog_group)
        except BaseException:
            self.conntrack.close()
            raise
        self.eve = EveTail(eve_path) if eve_path is not None else None
        self.lost_event_bursts = 0
        self.unusable_verdicts = 0
        self.dump_seconds = 0.0  # the last dump of the conntrack table, and how many flows it held
        self.dump_flows = 0
        self.dump_failures = 0
        self._stop = threading.Event()
        # After the event socket is open: a flow that begins between the two is in both, and its
        # NEW event finds it in the baseline with the counts it had. Without a baseline (the dump
        # failed) the agent still starts: flows older than it may then be counted twice.
        records.set_baseline(self._dump("start") or [])

    def run(self) -> None:
        """Read until ``stop()``; then the events still queued, and the last record of every
        flow still open (conntrack's and denied ones)."""
        try:
            while not self._stop.is_set():
                self.poll(POLL_SECONDS)
            self._drain()
            if self.eve is not None:
                self.records.add_alerts(self.eve.read())
            try:
                self._snapshot("shutdown")
            finally:
                for record in self.records.flush():
                    self.sink(record)
        finally:
            self.close()

    def poll(self, timeout: float) -> None:
        conntrack, nflog = self.conntrack.fileno(), self.nflog.fileno()
        ready, _, _ = select.select([conntrack, nflog], [], [], timeout)
        # Verdicts first: a flow's verdict must be known before its DESTROY is joined.
        if nflog in ready:
            self._read(self._read_nflog)
        if self.eve is not None:
            self.records.add_alerts(self.eve.read())
        if conntrack in ready:
            self._read(self._read_conntrack)
        for record in self.records.expire():
            self.sink(record)
        if self.records.snapshot_due():
            self._snapshot("interval")

    def _snapshot(self, reason: SnapshotReason) -> None:
        flows = self._dump(reason)
        if flows is None:
            return
        # Verdicts logged before the dump are read first: a flow it shows has its rule.
        self._drain([self.nflog.fileno()])
        for record in self.records.add_snapshot(flows, reason):
            self.sink(record)

    def _dump(self, why: str) -> list[ConntrackEvent] | None:
        """The table, or None when the dump failed (counted and logged: the records it would
        have given wait for the next dump, or the flows' DESTROY)."""
        started = time.monotonic()
        try:
            flows = dump_flows()
        except (OSError, nl.NetlinkError) as exc:  # TimeoutError is an OSError
            self.dump_failures += 1
            log.error("conntrack dump failed (%s): %s (%d failures so far)", why, exc, self.dump_failures)
            return None
        self.dump_seconds, self.dump_flows = time.monotonic() - started, len(flows)
        return flows

    def _drain(self, sockets: list[int] | None = None) -> None:
        """What the kernel already queued (by default verdicts and events: flows that ended
        before the stop end with their DESTROY)."""
        sockets = sockets or [self.conntrack.fileno(), self.nflog.fileno()]
        for _ in range(DRAIN_READS):
            ready, _, _ = select.select(sockets, [], [], 0)
            if not ready:
                return
            if self.nflog.fileno() in ready:
                self._read(self._read_nflog)
            if self.conntrack.fileno() in ready:
                self._read(self._read_conntrack)

    def _read_nflog(self) -> None:
        verdicts, problems = self.nflog.read(timeout=0)
        for problem in problems:
            self.unusable_verdicts += 1
            log.warning("NFLOG group %d: %s", self.nflog.group, problem)
        self.records.add_verdicts(verdicts)

    def _read_conntrack(self) -> None:
        for record in self.records.add_events(self.conntrack.read(timeout=0)):
            self.sink(record)

    def _read(self, reader: Callable[[], None]) -> None:
        try:
            reader()
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            self.lost_event_bursts += 1
            log.error(
                "netlink receive buffer overflowed: kernel events lost, records of some "
                "flows are missing (%d times so far)",
                self.lost_event_bursts,
            )

    def metrics(self) -> dict[str, float]:
        """Losses, each counted where it happens (none is silent)."""
        return {
            "kernel_event_bursts_lost_total": self.lost_event_bursts,
            "kernel_unusable_verdicts_total": self.unusable_verdicts,
            "kernel_pending_flows_evicted_total": self.records.evicted,
            "kernel_flow_identities_evicted_total": self.records.identities.evicted,
            "kernel_flows_not_from_gwlb_total": self.records.not_from_gwlb,
            "kernel_conntrack_dump_seconds_last": round(self.dump_seconds, 6),
            "kernel_conntrack_dump_flows_last": self.dump_flows,
            "kernel_conntrack_dump_failures_total": self.dump_failures,
            "kernel_flows_lost_total": self.records.lost,
        }

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.conntrack.close()
        self.nflog.close()
        if self.eve is not None:
            self.eve.close()
