"""A partition replica: the state derived from its Raft log, and its produce/fetch paths.

Each ``DATA`` entry of a partition group is one record batch whose header
carries the offsets the leader stamped. The state machine keeps, for every
committed batch, its base offset, Raft index and max timestamp (three packed
arrays: 24 bytes per batch) so a fetch can find its starting entry by binary
search and then serve stored bytes as they are. The high watermark is the
offset after the last committed batch: consumers never see beyond it.

Only the leader produces: it stamps each batch with the next offset of its
log (committed or not) and proposes it. That next offset is recomputed from
the log whenever this replica starts a new leadership (a new term), before
the first batch of that term is stamped.
"""

from __future__ import annotations

import asyncio
import struct
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

from millpond import errors, limits
from millpond.node.replica import Replica
from millpond.raft import Entry, EntryKind, Role, Snapshot, SoftState
from millpond.record_batch import (
    CorruptBatch,
    InvalidBatch,
    decode_batch,
    stamp,
    validate_batch,
)

_SNAPSHOT = struct.Struct(">qq")  # log start offset, end offset at the snapshot index
_BASE_OFFSET = struct.Struct(">q")  # at byte 8 of a stamped batch
_COUNTS = struct.Struct(">i")  # last offset delta at byte 28
_MAX_TIMESTAMP = struct.Struct(">q")  # at byte 40


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """One committed batch as stored (stamped bytes) with the offsets it covers."""

    data: bytes
    base_offset: int
    end_offset: int

    @property
    def record_count(self) -> int:
        return self.end_offset - self.base_offset


@dataclass(frozen=True, slots=True)
class PartitionStatistics:
    """An immutable view of one partition replica."""

    topic: str
    partition: int
    group: int
    role: str
    term: int
    log_start_offset: int
    high_watermark: int
    batches: int


def batch_end_offset(data: bytes) -> int:
    """Offset after the last record of a stamped batch."""
    return _BASE_OFFSET.unpack_from(data, 8)[0] + _COUNTS.unpack_from(data, 28)[0] + 1


class PartitionMachine:
    """State machine and request paths of one partition replica."""

    def __init__(self, replica: Replica, topic: str, partition: int) -> None:
        self.replica = replica
        self.topic = topic
        self.partition = partition
        self._bases = array("q")
        self._indexes = array("q")
        self._max_timestamps = array("q")
        self.log_start_offset = 0
        self.high_watermark = 0
        self._snapshot_end_offset = 0
        self._next_offset = 0
        self._next_offset_term = -1
        self._hw_waiters: list[asyncio.Future[None]] = []
        self._role_waiters: list[asyncio.Future[None]] = []

    # -- StateMachine --------------------------------------------------------------------
    def apply(self, entry: Entry) -> object:
        if entry.kind != EntryKind.DATA:
            return None
        data = entry.data
        base = _BASE_OFFSET.unpack_from(data, 8)[0]
        self._bases.append(base)
        self._indexes.append(entry.index)
        self._max_timestamps.append(_MAX_TIMESTAMP.unpack_from(data, 40)[0])
        self.high_watermark = base + _COUNTS.unpack_from(data, 28)[0] + 1
        if self._hw_waiters:
            for waiter in self._hw_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._hw_waiters.clear()
        return base

    def restore(self, snapshot: Snapshot) -> None:
        start, end = _SNAPSHOT.unpack(snapshot.data) if snapshot.data else (0, 0)
        self._bases = array("q")
        self._indexes = array("q")
        self._max_timestamps = array("q")
        self.log_start_offset = start
        self.high_watermark = end
        self._snapshot_end_offset = end
        self._next_offset_term = -1

    def on_soft_state(self, soft: SoftState, term: int) -> None:
        if soft.role != Role.LEADER:
            self._next_offset_term = -1
        for waiter in self._role_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._role_waiters.clear()

    async def wait_leadership_change(self, timeout_s: float) -> None:
        """Return once this replica's role or known leader changes, or ``timeout_s`` passes."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._role_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            pass

    # -- produce (leader) ------------------------------------------------------------------
    def append(self, batch: bytes) -> tuple[int, int, int]:
        """Validate, stamp and propose ``batch``; return (base offset, Raft index, term).

        Raises :class:`errors.NotLeader`, :class:`errors.Unavailable`,
        :class:`errors.BatchTooLarge`, :class:`errors.CorruptRecordBatch` (CRC
        mismatch) and :class:`errors.InvalidRecordBatch`. Nothing is appended
        when it raises.
        """
        raft = self.replica.raft
        if raft.role != Role.LEADER:
            raise errors.NotLeader(f"not the leader of {self.topic}/{self.partition}", raft.lead)
        if len(batch) > limits.batch_bytes_max:
            raise errors.BatchTooLarge(
                f"batch of {len(batch)} bytes exceeds batch_bytes_max {limits.batch_bytes_max}")
        try:
            header = validate_batch(batch, max_bytes=limits.batch_bytes_max,
                                    max_records=limits.batch_records_max)
        except CorruptBatch as exc:
            raise errors.CorruptRecordBatch(f"corrupt batch: {exc}") from exc
        except InvalidBatch as exc:
            raise errors.InvalidRecordBatch(f"invalid batch: {exc}") from exc
        if self._next_offset_term != raft.term:
            self._next_offset = self._log_end_offset()
            self._next_offset_term = raft.term
        base = self._next_offset
        stamped = stamp(batch, base, raft.term & 0x7FFFFFFF)
        index, term = self.replica.propose([stamped], EntryKind.DATA)
        self._next_offset = base + header.record_count
        return base, index, term

    def _log_end_offset(self) -> int:
        """Offset after the last batch anywhere in this replica's log (committed or not)."""
        raft_log = self.replica.raft.log
        index = raft_log.last_index()
        first = raft_log.first_index()
        while index >= first:
            entry = raft_log.slice(index, index + 1, 1 << 62)[0]
            if entry.kind == EntryKind.DATA:
                return batch_end_offset(entry.data)
            index -= 1
        return self._snapshot_end_offset

    # -- fetch -----------------------------------------------------------------------------
    def check_offset(self, offset: int) -> None:
        """Raise :class:`errors.OffsetOutOfRange` unless log start <= offset <= high watermark."""
        if offset < self.log_start_offset or offset > self.high_watermark:
            raise errors.OffsetOutOfRange(
                f"offset {offset} is outside [{self.log_start_offset}, {self.high_watermark}] "
                f"of {self.topic}/{self.partition}",
                self.log_start_offset, self.high_watermark,
            )

    def read(self, offset: int, max_bytes: int) -> bytes:
        """Committed batches from the one holding ``offset`` on, within ``max_bytes`` (at least
        one batch if any is available). Raises :class:`errors.OffsetOutOfRange`."""
        self.check_offset(offset)
        if offset == self.high_watermark or not self._bases:
            return b""
        position = max(0, bisect_right(self._bases, offset) - 1)
        lo = self._indexes[position]
        hi = self._indexes[-1] + 1
        entries = self.replica.log.entries(lo, hi, max_bytes)
        return b"".join(entry.data for entry in entries if entry.kind == EntryKind.DATA)

    def committed_batches(self, upto_offset: int) -> Iterator[StoredBatch]:
        """Every committed batch from the log start that ends at or below ``upto_offset``, in offset
        order, read from the store in bounded chunks (for replica checksums; not a hot path)."""
        position = 0
        while position < len(self._bases):
            lo = self._indexes[position]
            hi = self._indexes[-1] + 1
            entries = self.replica.log.entries(lo, hi, limits.fetch_bytes_max)
            for entry in entries:
                if entry.kind != EntryKind.DATA:
                    continue
                base, end = _BASE_OFFSET.unpack_from(entry.data, 8)[0], batch_end_offset(entry.data)
                if end > upto_offset:
                    return
                yield StoredBatch(entry.data, base, end)
                position += 1
            if not entries:
                return

    async def wait_beyond(self, offset: int, timeout_s: float) -> None:
        """Return once the high watermark exceeds ``offset`` or ``timeout_s`` passes."""
        if self.high_watermark > offset or timeout_s <= 0:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._hw_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            pass

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int]:
        """(offset, timestamp) of the first committed record with timestamp >= ``timestamp_ms``;
        (high watermark, -1) if there is none."""
        for position, max_ts in enumerate(self._max_timestamps):
            if max_ts < timestamp_ms:
                continue
            index = self._indexes[position]
            entry = self.replica.log.entries(index, index + 1, 1 << 62)[0]
            _, records = decode_batch(entry.data)
            for record in records:
                if record.timestamp_ms is not None and record.timestamp_ms >= timestamp_ms:
                    return record.offset, record.timestamp_ms
        return self.high_watermark, -1

    def statistics(self) -> PartitionStatistics:
        raft = self.replica.raft
        return PartitionStatistics(
            topic=self.topic, partition=self.partition, group=self.replica.group,
            role=raft.role.value, term=raft.term, log_start_offset=self.log_start_offset,
            high_watermark=self.high_watermark, batches=len(self._bases),
        )
