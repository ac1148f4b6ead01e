"""A bounded on-disk FIFO of encoded log batches, for when SLS cannot take them.

One file per batch, named by a sequence number (so that order survives a restart) and the
number of records in it (so that a loss can be counted without reading it). A batch is written
to a temporary name, flushed and renamed, so that a crash leaves either the whole batch or
none of it. Batches are stored lz4-compressed: an outage of hours fits in a few hundred MB.

The shipper writes every sealed batch here before it is sent (write-ahead): the export thread
appends at the tail while the sender thread reads and removes at the head, so every method
takes the spool's lock.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import lz4.block

log = logging.getLogger("gwlb_agent.spool")
SUFFIX = ".batch"


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    seq: int
    records: int
    path: Path
    size: int

    def read(self) -> bytes:
        return bytes(lz4.block.decompress(self.path.read_bytes()))


class SpoolFull(Exception):
    pass


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.tmp"):
            leftover.unlink()  # a batch whose write a crash interrupted: never acknowledged
        self._lock = threading.Lock()
        self._batches = sorted(self._scan(), key=lambda b: b.seq)
        self.bytes = sum(b.size for b in self._batches)
        self._next_seq = (self._batches[-1].seq + 1) if self._batches else 1
        if self._batches:
            log.info(
                "resuming spooled flow records",
                extra={"batches": len(self._batches), "records": self.records, "bytes": self.bytes},
            )

    def _scan(self) -> list[SpooledBatch]:
        batches = []
        for path in self.directory.glob(f"*{SUFFIX}"):
            seq_text, _, count_text = path.stem.partition("-")
            if not (seq_text.isdigit() and count_text.isdigit()):
                log.warning("ignoring a file that is not a spooled batch", extra={"path": str(path)})
                continue
            batches.append(SpooledBatch(int(seq_text), int(count_text), path, path.stat().st_size))
        return batches

    def __len__(self) -> int:
        with self._lock:
            return len(self._batches)

    @property
    def records(self) -> int:
        with self._lock:
            return sum(b.records for b in self._batches)

    def append(self, log_group: bytes, records: int) -> SpooledBatch:
        """Persist a batch at the tail. Raises SpoolFull (nothing written) if it would not fit."""
        data = lz4.block.compress(log_group)
        with self._lock:
            if self.bytes + len(data) > self.max_bytes:
                raise SpoolFull(f"spool at {self.bytes} of {self.max_bytes} bytes")
            seq = self._next_seq
            self._next_seq = seq + 1  # taken even if the write fails: names stay unique
            # Counted before the write so that a concurrent append sees the space as taken.
            self.bytes += len(data)
        path = self.directory / f"{seq:020d}-{records}{SUFFIX}"
        temporary = path.with_suffix(".tmp")
        try:
            with open(temporary, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            temporary.rename(path)
        except OSError:
            with self._lock:
                self.bytes -= len(data)
            temporary.unlink(missing_ok=True)
            raise
        batch = SpooledBatch(seq, records, path, len(data))
        with self._lock:
            bisect.insort(self._batches, batch, key=lambda b: b.seq)  # two writers stay in order
        return batch

    def oldest(self) -> SpooledBatch | None:
        with self._lock:
            return self._batches[0] if self._batches else None

    def remove(self, batch: SpooledBatch) -> None:
        """Forget a batch once SLS has acknowledged it."""
        with self._lock:
            self._batches.remove(batch)
            self.bytes -= batch.size
        batch.path.unlink(missing_ok=True)
