"""Collecting a producer's records into per-partition batches. Pure: no I/O, no clock, no event loop.

Each partition has at most one *open* batch, which takes records until the
next record would take it past ``batch_bytes`` (sizes are exact: a batch is
64 header bytes plus :func:`~millpond.record_batch.record_size_bytes` of each
record) or it holds ``batch_records_max`` records; then it is *closed* and
queued, in order, behind the partition's other closed batches. A record
larger than ``batch_bytes`` by itself gets a batch of its own. An open batch
is also closed when the producer asks for it (its linger passed and an
in-flight slot is free, or a flush). A batch that failed with a retriable
error goes back to the queue at its place in the partition's order.

Handles (``H``) are whatever the producer attaches to each record (its
future); the accumulator only keeps them in record order.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, NamedTuple, TypeVar

from millpond import record_batch
from millpond.client._types import TopicPartition
from millpond.errors import MillpondError

H = TypeVar("H")


class ProducerBatch(Generic[H]):
    """Records bound for one partition, sent as one record batch."""

    __slots__ = (
        "attempts", "created_s", "deadline_s", "encoded", "handles", "last_error", "records",
        "sendable", "sequence", "size_bytes", "tp",
    )

    def __init__(self, tp: TopicPartition, sequence: int, created_s: float, deadline_s: float) -> None:
        self.tp = tp
        self.sequence = sequence
        """Position among the partition's batches, from 0 (the send order)."""
        self.records: list[record_batch.Record] = []
        self.handles: list[H] = []
        self.size_bytes = record_batch.BATCH_HEADER_BYTES
        """Exactly ``len(encode_batch(records))``."""
        self.created_s = created_s
        self.deadline_s = deadline_s
        """When the batch's first record passes its delivery timeout."""
        self.sendable = False
        """True once the batch may be sent although not full (linger passed, or a flush)."""
        self.attempts = 0
        """Failed sends so far."""
        self.last_error: MillpondError | None = None
        self.encoded: bytes | None = None
        """The encoded batch, kept for retries (encoded once)."""

    def __repr__(self) -> str:
        return (f"ProducerBatch({self.tp.topic}/{self.tp.partition} #{self.sequence}, "
                f"{len(self.records)} records, {self.size_bytes} bytes)")


class PartitionQueue(Generic[H]):
    """The batches of one partition not yet handed to the sender, and the sender's state for it."""

    __slots__ = ("in_flight", "muted_until_s", "next_sequence", "open", "ready", "tp", "waiting_metadata")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.open: ProducerBatch[H] | None = None
        self.ready: deque[ProducerBatch[H]] = deque()
        """Closed batches in sequence order."""
        self.next_sequence = 0
        self.in_flight = 0
        """Batches of this partition being sent (owned by the producer's sender)."""
        self.muted_until_s = 0.0
        """No send before this time (backoff after a retriable error)."""
        self.waiting_metadata = False
        """A metadata refresh is running because the leader is unknown."""

    def __len__(self) -> int:
        return len(self.ready) + (self.open is not None)


class AppendResult(NamedTuple, Generic[H]):
    batch: ProducerBatch[H]
    """The batch that took the record."""
    opened: bool
    """The record opened this batch (start its linger timer)."""
    closed: bool
    """A batch of this partition was closed by this append (the sender has work)."""


class Accumulator(Generic[H]):
    """Per-partition batches under a size and count cap.

    ``on_close(batch)`` is called whenever a batch is closed (full, lingered or
    flushed), e.g. to move a sticky partitioner on.
    """

    def __init__(
        self,
        batch_bytes: int,
        batch_records_max: int = record_batch.batch_records_max,
        on_close: Callable[[ProducerBatch[H]], None] | None = None,
    ) -> None:
        if not record_batch.BATCH_HEADER_BYTES < batch_bytes <= record_batch.batch_bytes_max:
            raise ValueError(
                f"batch_bytes must be in (64, {record_batch.batch_bytes_max}], got {batch_bytes}"
            )
        if not 0 < batch_records_max <= record_batch.batch_records_max:
            raise ValueError(f"batch_records_max must be in [1, {record_batch.batch_records_max}]")
        self.batch_bytes = batch_bytes
        self.batch_records_max = batch_records_max
        self._on_close = on_close
        self._queues: dict[TopicPartition, PartitionQueue[H]] = {}

    def queue(self, tp: TopicPartition) -> PartitionQueue[H]:
        queue = self._queues.get(tp)
        if queue is None:
            queue = self._queues[tp] = PartitionQueue(tp)
        return queue

    def queues(self) -> Iterator[PartitionQueue[H]]:
        return iter(list(self._queues.values()))

    def append(
        self,
        tp: TopicPartition,
        record: record_batch.Record,
        size_bytes: int,
        handle: H,
        now_s: float,
        deadline_s: float,
    ) -> AppendResult[H]:
        """Add ``record`` (``size_bytes`` = its ``record_size_bytes``) to the open batch of ``tp``.

        Closes the open batch first if the record does not fit, and closes the
        batch the record went into if no further record could fit. Raises
        ``ValueError`` if the record could not fit even an empty batch of
        ``record_batch.batch_bytes_max`` bytes.
        """
        if size_bytes + record_batch.BATCH_HEADER_BYTES > record_batch.batch_bytes_max:
            raise ValueError(f"a record of {size_bytes} bytes cannot fit a batch of batch_bytes_max")
        queue = self.queue(tp)
        closed = False
        batch = queue.open
        if batch is not None and not self._fits(batch, size_bytes):
            self._close(queue)
            batch, closed = None, True
        opened = batch is None
        if batch is None:
            batch = queue.open = ProducerBatch(tp, queue.next_sequence, now_s, deadline_s)
            queue.next_sequence += 1
        batch.records.append(record)
        batch.handles.append(handle)
        batch.size_bytes += size_bytes
        if self._full(batch):
            self._close(queue)
            closed = True
        return AppendResult(batch, opened, closed)

    def _fits(self, batch: ProducerBatch[H], size_bytes: int) -> bool:
        return (batch.size_bytes + size_bytes <= self.batch_bytes
                and len(batch.records) < self.batch_records_max)

    def _full(self, batch: ProducerBatch[H]) -> bool:
        return not self._fits(batch, record_batch.RECORD_OVERHEAD_BYTES)

    def _close(self, queue: PartitionQueue[H]) -> None:
        batch = queue.open
        if batch is None:
            return
        queue.open = None
        queue.ready.append(batch)
        if self._on_close is not None:
            self._on_close(batch)

    def mark_sendable(self, tp: TopicPartition) -> None:
        """Let the open batch of ``tp`` go although not full (its linger passed, or a flush)."""
        queue = self._queues.get(tp)
        if queue is not None and queue.open is not None:
            queue.open.sendable = True

    def next_batch(self, tp: TopicPartition) -> ProducerBatch[H] | None:
        """Take the next batch of ``tp`` to send: the first closed one, else the open one if sendable."""
        queue = self._queues.get(tp)
        if queue is None:
            return None
        if not queue.ready and queue.open is not None and queue.open.sendable:
            self._close(queue)
        return queue.ready.popleft() if queue.ready else None

    def requeue(self, batch: ProducerBatch[H]) -> None:
        """Put back a batch taken by :meth:`next_batch` (to retry it), at its place in sequence order."""
        queue = self.queue(batch.tp)
        sequences = [b.sequence for b in queue.ready]
        queue.ready.insert(bisect.bisect_left(sequences, batch.sequence), batch)

    def take_all(self, tp: TopicPartition) -> list[ProducerBatch[H]]:
        """Remove and return every queued batch of ``tp``, open one included (to fail them)."""
        queue = self._queues.get(tp)
        if queue is None:
            return []
        self._close(queue)
        batches = list(queue.ready)
        queue.ready.clear()
        return batches

    def pending(self) -> list[ProducerBatch[H]]:
        """Every batch not handed to the sender (closed and open), in no particular order."""
        found: list[ProducerBatch[H]] = []
        for queue in self._queues.values():
            found.extend(queue.ready)
            if queue.open is not None:
                found.append(queue.open)
        return found
