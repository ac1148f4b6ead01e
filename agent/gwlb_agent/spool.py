"""A bounded on-disk FIFO of encoded log batches, for when SLS cannot take them.

One file per batch, named by a sequence number (so that order survives a restart) and the
number of records in it (so that a loss can be counted without reading it). A batch is written
to a temporary name, flushed and renamed, so that a crash leaves either the whole batch or
none of it. Batches are stored lz4-compressed: an outage of hours fits in a few hundred MB.
"""

from __future__ import annotations

import logging
import os
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
        return len(self._batches)

    @property
    def records(self) -> int:
        return sum(b.records for b in self._batches)

    def append(self, log_group: bytes, records: int) -> SpooledBatch:
        """Persist a batch at the tail. Raises SpoolFull (nothing written) if it would not fit."""
        data = lz4.block.compress(log_group)
        if self.bytes + len(data) > self.max_bytes:
            raise SpoolFull(f"spool at {self.bytes} of {self.max_bytes} bytes")
        seq = self._next_seq
        path = self.directory / f"{seq:020d}-{records}{SUFFIX}"
        temporary = path.with_suffix(".tmp")
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        temporary.rename(path)
        batch = SpooledBatch(seq, records, path, len(data))
        self._batches.append(batch)
        self.bytes += batch.size
        self._next_seq = seq + 1
        return batch

    def oldest(self) -> SpooledBatch | None:
        return self._batches[0] if self._batches else None

    def remove(self, batch: SpooledBatch) -> None:
        """Forget a batch once SLS has acknowledged it."""
        self._batches.remove(batch)
        self.bytes -= batch.size
        batch.path.unlink(missing_ok=True)
