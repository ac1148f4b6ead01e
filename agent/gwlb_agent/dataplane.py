"""The packet loop: receive a batch, decide each datagram, send the replies, expire flows."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gwlb_agent.batchio import FLAGS_WORD, IP_UDP_HEADER, LEN_WORD, MMSG_WORDS, MSG_TRUNC, BatchSocket
from gwlb_agent.drops import Drop
from gwlb_agent.flowtable import FlowTable
from gwlb_agent.health import Liveness
from gwlb_agent.metrics import DataPlaneCounters
from gwlb_agent.processor import PacketProcessor

if TYPE_CHECKING:
    from gwlb_agent.xdp.fastpath import FastPath

log = logging.getLogger("gwlb_agent.dataplane")

EXPIRY_BUDGET_BUSY = 256  # flows examined per batch while traffic flows
EXPIRY_BUDGET_IDLE = 20_000  # per wake-up without traffic


class DataPlane:
    def __init__(
        self,
        io: BatchSocket,
        processor: PacketProcessor,
        table: FlowTable,
        liveness: Liveness,
        clock: Callable[[], float] = time.monotonic,
        fast_path: FastPath | None = None,
    ) -> None:
        self.io = io
        self.fast_path = fast_path
        self.processor = processor
        self.table = table
        self.liveness = liveness
        self.counters = DataPlaneCounters()
        self._clock = clock
        self.failure: BaseException | None = None

    def run(self, stop: threading.Event) -> None:
        """Forward until ``stop`` is set. An exception ends the loop, is logged and kept in
        ``failure`` for the supervisor, which stops the agent (health is already failing)."""
        self.liveness.running = True
        try:
            while not stop.is_set():
                now = self._clock()
                self.liveness.beat(now)
                count = self.io.receive()
                now = self._clock()
                if count:
                    self._forward(count, now)
                    self.table.expire(now, EXPIRY_BUDGET_BUSY)
                else:
                    self.table.expire(now, EXPIRY_BUDGET_IDLE)
                    self.processor.expire_fragments(now)
                if self.fast_path is not None:
                    self.fast_path.sync(self.processor)
        except Exception as exc:
            self.failure = exc
            log.exception("packet loop failed")
        finally:
            self.liveness.running = False

    def _forward(self, count: int, now: float) -> None:
        io, process = self.io, self.processor.process
        view, rx, names_u32, names_u16, slot = io.view, io.rx_u32, io.name_u32, io.name_u16, io.slot
        replies = io.replies
        bytes_in = bytes_out = 0
        for i in range(count):
            word = i * MMSG_WORDS
            length = rx[word + LEN_WORD]
            bytes_in += length
            if rx[word + FLAGS_WORD] & MSG_TRUNC:
                self.processor.drops[Drop.OVERSIZE] += 1
                continue
            if process(
                view, i * slot + IP_UDP_HEADER, length, names_u32[i * 4 + 1], names_u16[i * 8 + 1], now
            ):
                replies.append(i)
                bytes_out += length
        queued = io.queue_replies(replies)
        replies.clear()
        errors_before = io.send_errors
        sent = io.flush() if queued else 0
        if self.processor.released:
            sent += self._send_released()
        failed = io.send_errors - errors_before
        if failed:
            self.processor.drops[Drop.SEND_ERROR] += failed
        self.liveness.send_failing = queued > 0 and sent == 0 and failed > 0
        counters = self.counters
        counters.batches += 1
        counters.packets_in += count
        counters.packets_out += sent
        counters.bytes_in += bytes_in
        counters.bytes_out += bytes_out

    def _send_released(self) -> int:
        released, self.processor.released = self.processor.released, []
        return sum(self.io.send_datagram(f.datagram, f.source, f.port) for f in released)
