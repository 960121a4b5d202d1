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

``CONTROL`` entries carry partition control records
(:mod:`millpond.node.partition_control`), which every replica applies at the
same log position:

* ``ADVANCE_LOG_START`` (retention) raises the log start offset, drops the
  batches that end at or before it from the index, and compacts the Raft log
  up to the last of them: a snapshot whose data is (log start, end offset) at
  that index, recorded at once, the entries deleted from LMDB in bounded steps
  by the store. A follower that needs the deleted entries is sent that
  snapshot instead, and :meth:`PartitionMachine.restore` makes it an empty log
  starting at that offset.
* ``COMPACT`` (one compaction step) rewrites the stored batches it covers in
  place, without the records it lists (:func:`~millpond.node.compaction.drop_records`,
  run by the store's writer on the bytes stored at that moment, so rewrites
  compose in log order).

The cleaner that decides both runs only on the leader
(:mod:`millpond.node.log_cleaner`); the state here is what it reads.
"""

from __future__ import annotations

import asyncio
import struct
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

from millpond import errors, limits
from millpond.controller import TopicConfig, resolve_config
from millpond.invariant import invariant, unreachable
from millpond.node.compaction import drop_records
from millpond.node.partition_control import (
    AdvanceLogStart,
    Compact,
    InvalidControlRecord,
    PartitionControl,
    decode_control,
    encode_control,
)
from millpond.node.replica import Replica
from millpond.raft import Entry, EntryKind, Role, Snapshot, SoftState
from millpond.raft.errors import CompactedError
from millpond.raft.messages import SnapshotMeta
from millpond.record_batch import (
    CorruptBatch,
    InvalidBatch,
    decode_batch,
    null_key_index,
    scan_keys,
    stamp,
    validate_batch,
)

_SNAPSHOT = struct.Struct(">qq")  # log start offset, end offset at the snapshot index
_BASE_OFFSET = struct.Struct(">q")  # at byte 8 of a stamped batch
_COUNTS = struct.Struct(">i")  # last offset delta at byte 28
_MAX_TIMESTAMP = struct.Struct(">q")  # at byte 40
_RECORD_COUNT = struct.Struct(">i")  # at byte 60
_DEFAULT_CONFIG = resolve_config({})


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """One committed batch as stored (stamped bytes) with the offsets it covers."""

    data: bytes
    base_offset: int
    end_offset: int

    @property
    def record_count(self) -> int:
        """Records the batch holds (fewer than its offsets once compaction removed some)."""
        return int(_RECORD_COUNT.unpack_from(self.data, 60)[0])


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
    total_bytes: int
    compaction_upto: int
    """The highest compaction point (C) of an applied ``COMPACT`` record, 0 if none."""
    records_dropped: int
    """Offsets named by the ``COMPACT`` records applied since this replica started."""


def batch_end_offset(data: bytes) -> int:
    """Offset after the last record of a stamped batch."""
    return _BASE_OFFSET.unpack_from(data, 8)[0] + _COUNTS.unpack_from(data, 28)[0] + 1


class PartitionMachine:
    """State machine and request paths of one partition replica."""

    def __init__(self, replica: Replica, topic: str, partition: int,
                 config: Callable[[], TopicConfig] | None = None) -> None:
        self.replica = replica
        self.topic = topic
        self.partition = partition
        self.config: Callable[[], TopicConfig] = config or (lambda: _DEFAULT_CONFIG)
        """The topic's current configuration (read on each produce and by the log cleaner)."""
        # One entry per committed batch from the log start: base offset, Raft index, max
        # timestamp, stored size (sizes shrink when compaction rewrites a batch).
        self._bases = array("q")
        self._indexes = array("q")
        self._max_timestamps = array("q")
        self._sizes = array("q")
        self._total_bytes = 0
        # (Raft index, new size) of batches the store's writer rewrote; appended by the writer
        # thread (deque.append is atomic), folded into _sizes on the event loop.
        self._resized: deque[tuple[int, int]] = deque()
        self.log_start_offset = 0
        self.high_watermark = 0
        self.compaction_upto = 0
        self.records_dropped = 0
        self._snapshot_end_offset = 0
        self._next_offset = 0
        self._next_offset_term = -1
        self._hw_waiters: list[asyncio.Future[None]] = []
        self._role_waiters: list[asyncio.Future[None]] = []
        stored = replica.log.snapshot()
        if stored.data:  # the log was compacted by retention: start from its snapshot
            self.restore(stored)

    # -- StateMachine --------------------------------------------------------------------
    def apply(self, entry: Entry) -> object:
        if entry.kind == EntryKind.CONTROL:
            self._apply_control(entry)
            return None
        if entry.kind != EntryKind.DATA:
            return None
        data = entry.data
        base = _BASE_OFFSET.unpack_from(data, 8)[0]
        self._bases.append(base)
        self._indexes.append(entry.index)
        self._max_timestamps.append(_MAX_TIMESTAMP.unpack_from(data, 40)[0])
        self._sizes.append(len(data))
        self._total_bytes += len(data)
        self.high_watermark = base + _COUNTS.unpack_from(data, 28)[0] + 1
        if self._hw_waiters:
            for waiter in self._hw_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._hw_waiters.clear()
        return base

    def restore(self, snapshot: Snapshot) -> None:
        start, end = _SNAPSHOT.unpack(snapshot.data) if snapshot.data else (0, 0)
        invariant(0 <= start <= end, "partition snapshot with a log start above its end",
                  group=self.replica.group, start=start, end=end)
        self._bases = array("q")
        self._indexes = array("q")
        self._max_timestamps = array("q")
        self._sizes = array("q")
        self._total_bytes = 0
        self._resized.clear()
        self.log_start_offset = start
        self.high_watermark = end
        self._snapshot_end_offset = end
        self._next_offset_term = -1

    # -- control records (retention, compaction) ----------------------------------------------
    def _apply_control(self, entry: Entry) -> None:
        try:
            record = decode_control(entry.data)
        except InvalidControlRecord as exc:
            # Only a leader writes these, after encode_control checked them: a bad one in the
            # committed log is a bug or damage, and every replica would stop on it alike.
            unreachable("committed partition control record does not decode", group=self.replica.group,
                        index=entry.index, error=str(exc))
        if isinstance(record, AdvanceLogStart):
            self._advance_log_start(record.offset)
        else:
            self._compact(record)

    def _advance_log_start(self, offset: int) -> None:
        """Raise the log start to ``offset`` (at most the high watermark; it never moves back), drop
        the batches that end at or before it, and compact the Raft log up to the last of them."""
        offset = min(offset, self.high_watermark)
        if offset <= self.log_start_offset:
            return
        self.log_start_offset = offset
        self._fold_resized()
        gone = len(self._bases) if offset >= self.high_watermark else bisect_right(self._bases, offset) - 1
        if gone <= 0:
            return
        last_index = self._indexes[gone - 1]
        end = self._bases[gone] if gone < len(self._bases) else self.high_watermark
        self._total_bytes -= sum(self._sizes[:gone])
        for column in (self._bases, self._indexes, self._max_timestamps, self._sizes):
            del column[:gone]
        self._snapshot_end_offset = max(self._snapshot_end_offset, end)
        self._compact_raft_log(last_index, end)

    def _compact_raft_log(self, index: int, end_offset: int) -> None:
        """Snapshot at ``index`` (the last deleted batch) with data (end, end): the state of an empty
        log there. The store records it at once and deletes the entries in bounded steps."""
        raft_log = self.replica.raft.log
        if index <= self.replica.log.snapshot().meta.index:
            return  # already compacted (a restart re-applies retention records)
        term = raft_log.term(index)
        if term is None:
            return  # not in this replica's log any more (a snapshot install raced ahead)
        membership = raft_log.memberships[0][1]
        for since, members in raft_log.memberships:
            if since > index:
                break
            membership = members
        snapshot = Snapshot(SnapshotMeta(index, term, membership), _SNAPSHOT.pack(end_offset, end_offset))
        self.replica.log.compact(snapshot)

    def _compact(self, record: Compact) -> None:
        """Queue the rewrite of every batch wholly inside the step's range, without its listed records."""
        self.compaction_upto = max(self.compaction_upto, record.upto_offset)
        self.records_dropped += record.dropped_records
        first = bisect_left(self._bases, record.start_offset)
        rewrites = []
        for position in range(first, len(self._bases)):
            end = self._bases[position + 1] if position + 1 < len(self._bases) else self.high_watermark
            if end > record.end_offset:
                break
            index = self._indexes[position]
            rewrites.append((index, partial(_rewrite_batch, record.drops, index, self._resized)))
        self.replica.log.rewrite(rewrites)

    def _fold_resized(self) -> None:
        """Take the sizes of batches the writer rewrote into the index."""
        while self._resized:
            index, size = self._resized.popleft()
            position = bisect_left(self._indexes, index)
            if position < len(self._indexes) and self._indexes[position] == index:
                self._total_bytes += size - self._sizes[position]
                self._sizes[position] = size

    def propose_control(self, record: PartitionControl) -> tuple[int, int]:
        """Propose a control record (the log cleaner, on the leader); return (Raft index, term).

        Raises :class:`errors.NotLeader`, :class:`errors.Unavailable` and
        :class:`errors.InvalidRequest` as :meth:`Replica.propose` does; a record with a
        field out of range is a bug of the caller (``InvalidControlRecord``).
        """
        return self.replica.propose([encode_control(record)], EntryKind.CONTROL)

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
        mismatch), :class:`errors.RecordKeyRequired` (a keyless record on a
        compacted topic) and :class:`errors.InvalidRecordBatch`. Nothing is
        appended when it raises.
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
        config = self.config()
        if config.compact:
            missing = null_key_index(batch, header.record_count)
            if missing >= 0:
                raise errors.RecordKeyRequired(
                    f"record {missing} of the batch has no key, but topic {self.topic!r} is compacted "
                    f"(cleanup_policy={config.cleanup_policy}): every record needs a key; nothing was "
                    f"appended")
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
            try:
                entry = raft_log.slice(index, index + 1, 1 << 62)[0]
            except CompactedError:
                break  # retention compacted the log while we walked it: nothing newer below
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
            for record in records:  # a compacted batch may hold none of them any more: go on
                if (record.timestamp_ms is not None and record.timestamp_ms >= timestamp_ms
                        and record.offset >= self.log_start_offset):
                    return record.offset, record.timestamp_ms
        return self.high_watermark, -1

    # -- what the log cleaner reads (leader) --------------------------------------------------
    def batch_index(self) -> tuple[array[int], array[int], array[int], int]:
        """(base offsets, max timestamps, sizes, total bytes) of the committed batches from the
        log start, in offset order. The arrays are live: read them before the next apply."""
        self._fold_resized()
        return self._bases, self._max_timestamps, self._sizes, self._total_bytes

    def position_of(self, offset: int) -> int:
        """Position in :meth:`batch_index` of the first batch that starts at or after ``offset``."""
        return bisect_left(self._bases, offset)

    def read_batches(self, from_offset: int, upto_offset: int, batches_max: int,
                     bytes_max: int) -> list[bytes]:
        """Stored bytes of the committed batches that start at or after ``from_offset`` and end at or
        before ``upto_offset``, in order: at most ``batches_max`` of them and, after the first,
        ``bytes_max`` bytes."""
        position = self.position_of(from_offset)
        count = len(self._bases)
        if position >= count or batches_max <= 0:
            return []
        lo = self._indexes[position]
        hi = self._indexes[min(count, position + batches_max) - 1] + 1
        result: list[bytes] = []
        for entry in self.replica.log.entries(lo, hi, bytes_max):
            if entry.kind != EntryKind.DATA:
                continue
            if batch_end_offset(entry.data) > upto_offset:
                break
            result.append(entry.data)
        return result

    def statistics(self) -> PartitionStatistics:
        raft = self.replica.raft
        self._fold_resized()
        return PartitionStatistics(
            topic=self.topic, partition=self.partition, group=self.replica.group,
            role=raft.role.value, term=raft.term, log_start_offset=self.log_start_offset,
            high_watermark=self.high_watermark, batches=len(self._bases), total_bytes=self._total_bytes,
            compaction_upto=self.compaction_upto, records_dropped=self.records_dropped,
        )


def _rewrite_batch(drops: tuple[tuple[int, int], ...], index: int, resized: deque[tuple[int, int]],
                   data: bytes) -> bytes | None:
    """The store writer's transform for one batch of a ``COMPACT`` step (runs in the writer thread).

    Checks the new bytes before they are written: they must decode (CRC included) and cover the
    same offsets as the batch they replace.
    """
    new = drop_records(data, drops)
    if new is None:
        return None
    try:
        header = scan_keys(new).header  # framing, CRC and every column, without building records
    except InvalidBatch as exc:
        unreachable("compaction produced a batch that does not decode", index=index, error=str(exc))
    invariant(header.base_offset == _BASE_OFFSET.unpack_from(data, 8)[0]
              and header.next_offset == batch_end_offset(data),
              "compaction changed the offsets a batch covers", index=index)
    resized.append((index, len(new)))
    return new
