"""Log compaction decisions and the per-batch rewrite. Pure: no I/O, no clock, no Raft.

A compacted topic keeps, for every key, at least its latest record. The
partition leader's log cleaner (:mod:`millpond.node.log_cleaner`, the I/O
shell) runs *passes*, in the manner of Kafka's log cleaner:

1. choose a compaction point C (:func:`compaction_point`): the end of the
   longest prefix of committed batches whose max timestamp is at least
   ``min_compaction_lag_ms`` old — the head of the log stays as produced;
2. index the keys of the *dirty* section ``[clean point, C)`` (the part no
   earlier pass of this leader covered; the clean part holds one record per
   key already) into a :class:`KeyIndex`: key -> latest offset below C;
3. walk the log from its start to C in bounded steps; for each step,
   :func:`plan_step` lists the records to drop and the cleaner proposes them
   as one ``COMPACT`` control record. A record goes if a later record with the
   same key exists below C, or if it is the latest of its key, a tombstone
   (null value), and older than ``T - delete_retention_ms``, T being the
   pass's clock reading carried in the record. Keyless records stay.

Every replica then applies each step with :func:`drop_records` to the batches
it covers. Dropping a listed set of offsets is idempotent and commutes with
any other drop, so a replica ends with the same bytes whether it compacts its
own copy, receives batches the leader already compacted, or both in any mix
(docs/architecture.md, "Retention and compaction", gives the argument).

Why a tombstone may go without resurrecting an older value: steps run in
offset order and each is committed before the next is planned, so every
older record of the tombstone's key was dropped by this pass's earlier steps
(it is superseded) or by an earlier pass, before the step that drops the
tombstone — in every replica's log order.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from millpond import limits
from millpond.node.partition_control import DropRanges
from millpond.record_batch import KeyScan, retain_records, scan_keys

__all__ = [
    "KeyIndex",
    "StepPlan",
    "check_limits",
    "compaction_point",
    "dirty_enough",
    "drop_records",
    "plan_step",
    "to_ranges",
]


def check_limits() -> None:
    """Raise ``ValueError`` if the compaction limits contradict each other or the batch limits."""
    problems: list[str] = []
    if limits.compaction_step_records_max < limits.batch_records_max:
        problems.append("compaction_step_records_max must be >= batch_records_max (one batch per step)")
    if limits.compaction_keys_max < limits.batch_records_max:
        problems.append("compaction_keys_max must be >= batch_records_max (one batch per pass)")
    if limits.compaction_step_batches_max < 1 or limits.retention_step_batches_max < 1:
        problems.append("step batch counts must be >= 1")
    # The largest COMPACT record: 5-byte head, 36-byte body, 12 bytes per drop range.
    if 41 + 12 * limits.compaction_step_records_max > limits.raft_entry_bytes_max:
        problems.append("a COMPACT record of compaction_step_records_max ranges must fit "
                        "raft_entry_bytes_max")
    if not 0 <= limits.compaction_dirty_percent_min <= 100:
        problems.append("compaction_dirty_percent_min must be in [0, 100]")
    if problems:
        raise ValueError("; ".join(problems))


check_limits()


def compaction_point(bases: Sequence[int], max_timestamps: Sequence[int], high_watermark: int,
                     from_position: int, now_ms: int, min_compaction_lag_ms: int) -> int:
    """The end of the longest prefix of batches whose max timestamp is at most ``now - lag``.

    ``bases``/``max_timestamps`` describe the committed batches in offset order
    (contiguous, the last ending at ``high_watermark``). Batches before
    ``from_position`` are known to be old enough already (a previous answer), so
    the scan starts there: the cost is the batches added since.
    """
    cutoff = now_ms - min_compaction_lag_ms
    for position in range(from_position, len(bases)):
        if max_timestamps[position] > cutoff:
            return bases[position]
    return high_watermark


def dirty_enough(dirty_bytes: int, total_bytes: int, percent_min: int) -> bool:
    """Whether the uncompacted bytes are a large enough share of the log to start a pass."""
    return dirty_bytes > 0 and dirty_bytes * 100 >= percent_min * total_bytes


class KeyIndex:
    """Latest offset of every key seen so far in a pass's dirty section, at most ``keys_max`` keys."""

    def __init__(self, keys_max: int) -> None:
        self.keys_max = keys_max
        self.latest: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self.latest)

    def add(self, scan: KeyScan) -> bool:
        """Index one batch (the batches must come in offset order). Returns False, indexing
        nothing, if its new keys would pass ``keys_max`` — unless the index is empty, so a
        pass always makes progress."""
        latest = self.latest
        if latest:
            new = {key for key in scan.keys if key is not None and key not in latest}
            if len(latest) + len(new) > self.keys_max:
                return False
        for offset, key in zip(scan.offsets, scan.keys, strict=True):
            if key is not None:
                latest[key] = offset
        return True


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What one compaction step removes."""

    drops: DropRanges
    dropped: int
    """Records named by ``drops``."""
    tombstone_due_ms: int | None
    """The earliest clock reading at which a tombstone this step kept becomes droppable, if any."""


def to_ranges(offsets: Sequence[int]) -> DropRanges:
    """Sorted, distinct ``offsets`` as ``(first, count)`` runs."""
    ranges: list[tuple[int, int]] = []
    for offset in offsets:
        if ranges and ranges[-1][0] + ranges[-1][1] == offset:
            first, count = ranges[-1]
            ranges[-1] = (first, count + 1)
        else:
            ranges.append((offset, 1))
    return tuple(ranges)


def plan_step(scans: Sequence[KeyScan], latest: Mapping[bytes, int], dirty_start: int,
              time_ms: int, delete_retention_ms: int) -> StepPlan:
    """The records of ``scans`` (consecutive batches below the compaction point, in offset order)
    that one step drops.

    ``latest`` maps each key of the dirty section ``[dirty_start, C)`` to its
    latest offset there; a key of the clean section that is not in it has its
    latest record in the clean section (one record per key there). A record
    goes if its key has a later record below C, or if it is its key's latest,
    a tombstone, and its timestamp is before ``time_ms - delete_retention_ms``.
    """
    drops: list[int] = []
    due: int | None = None
    expired_before = time_ms - delete_retention_ms
    for scan in scans:
        for offset, key, tombstone, timestamp in zip(scan.offsets, scan.keys, scan.tombstones,
                                                     scan.timestamps, strict=True):
            if key is None:
                continue
            newest = latest.get(key)
            if newest is not None and newest > offset:
                drops.append(offset)
            elif newest is None and offset >= dirty_start:
                continue  # not indexed (cannot happen below C): keep, the safe choice
            elif tombstone:
                if timestamp < expired_before:
                    drops.append(offset)
                else:
                    ready_ms = timestamp + delete_retention_ms + 1
                    due = ready_ms if due is None else min(due, ready_ms)
    return StepPlan(to_ranges(drops), len(drops), due)


def drop_records(data: bytes, drops: DropRanges) -> bytes | None:
    """The stored batch ``data`` without the records whose offsets ``drops`` names, or None if
    it holds none of them (nothing to rewrite: the call is idempotent).

    The result keeps the batch's base offset and end (:func:`~millpond.record_batch.retain_records`).
    Raises :class:`~millpond.record_batch.InvalidBatch` if ``data`` is not an intact batch.
    """
    if not drops:
        return None
    scan = scan_keys(data, verify=False)  # retain_records checks the CRC before anything is written
    base = scan.header.base_offset
    end = scan.header.next_offset
    starts = [first for first, _ in drops]
    position = bisect_right(starts, base) - 1
    if position >= 0 and drops[position][0] + drops[position][1] <= base:
        position += 1
    position = max(position, 0)
    if position >= len(drops) or drops[position][0] >= end:
        return None  # no range reaches into this batch
    keep: list[bool] = []
    dropped = 0
    for offset in scan.offsets:
        index = bisect_right(starts, offset) - 1
        gone = index >= 0 and offset < drops[index][0] + drops[index][1]
        keep.append(not gone)
        dropped += gone
    if not dropped:
        return None
    return retain_records(data, keep)
