"""Partition control records: the ``CONTROL`` entries a partition leader proposes to its own Raft group.

A partition's ``DATA`` entries are record batches; its ``CONTROL`` entries are
decisions every replica must apply at the same log position. Two exist:

* :class:`AdvanceLogStart` — retention: the log now starts at ``offset``;
  batches that end at or before it are gone (and with them, in bounded steps,
  their Raft entries, see :mod:`millpond.node.partition`).
* :class:`Compact` — one bounded step of log compaction: in the batches that
  lie wholly inside ``[start_offset, end_offset)``, remove the records whose
  offsets the step lists. ``upto_offset`` (the pass's compaction point C) and
  ``time_ms`` (the leader's clock T when it planned the pass) record what the
  decision was based on. The removals are explicit so that applying them is a
  set operation: idempotent and order-independent, hence identical on every
  replica whatever compacted bytes it already received (docs/architecture.md,
  "Retention and compaction").

Wire format (big-endian), versioned so a reader refuses what it does not know::

    magic "MPC" (3) | version u8 = 1 | type u8
    type 1 ADVANCE_LOG_START: offset i64
    type 2 COMPACT: upto i64 | time_ms i64 | start i64 | end i64 | ranges u32 |
                    ranges x (first offset i64, count i32)

Every field is checked on encode and on decode (:class:`InvalidControlRecord`):
offsets are >= 0, ``start <= end <= upto``, drop ranges are non-empty, sorted,
disjoint, inside ``[start, end)`` and at most :data:`~millpond.limits.compaction_step_records_max`,
and the length is exact.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from millpond import limits

__all__ = [
    "CONTROL_MAGIC",
    "CONTROL_VERSION",
    "AdvanceLogStart",
    "Compact",
    "ControlType",
    "DropRanges",
    "InvalidControlRecord",
    "PartitionControl",
    "decode_control",
    "encode_control",
]

CONTROL_MAGIC: Final = b"MPC"
CONTROL_VERSION: Final = 1

_HEAD: Final = struct.Struct(">3sBB")  # magic, version, type
_ADVANCE: Final = struct.Struct(">q")
_COMPACT: Final = struct.Struct(">qqqqI")  # upto, time_ms, start, end, range count
_RANGE: Final = struct.Struct(">qi")  # first offset, count
_INT64_MAX: Final = 2**63 - 1
_INT32_MAX: Final = 2**31 - 1

DropRanges = tuple[tuple[int, int], ...]
"""Offsets to remove as ``(first offset, count)`` ranges, sorted and disjoint."""


class ControlType(IntEnum):
    """The type byte of a partition control record."""

    ADVANCE_LOG_START = 1
    COMPACT = 2


class InvalidControlRecord(ValueError):
    """Bytes that are not a valid partition control record, or a record with fields out of range."""


@dataclass(frozen=True, slots=True)
class AdvanceLogStart:
    """Retention: the partition's log start offset becomes ``offset`` (it never moves back)."""

    offset: int


@dataclass(frozen=True, slots=True)
class Compact:
    """One compaction step: drop ``drops`` from the batches wholly inside ``[start_offset, end_offset)``."""

    upto_offset: int
    """The pass's compaction point C: only records below it were considered."""
    time_ms: int
    """The leader's wall clock T when it planned the pass (tombstones older than T - delete retention go)."""
    start_offset: int
    end_offset: int
    drops: DropRanges

    @property
    def dropped_records(self) -> int:
        """How many offsets the step names (some may already be gone on a given replica)."""
        return sum(count for _, count in self.drops)


PartitionControl = AdvanceLogStart | Compact


def _check_offset(name: str, value: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= _INT64_MAX:
        raise InvalidControlRecord(f"{name} must be an offset in [0, 2**63-1], got {value!r}")


def _check(record: PartitionControl) -> None:
    """Raise :class:`InvalidControlRecord` unless every field of ``record`` is in range."""
    if isinstance(record, AdvanceLogStart):
        _check_offset("offset", record.offset)
        return
    _check_offset("upto_offset", record.upto_offset)
    _check_offset("time_ms", record.time_ms)
    _check_offset("start_offset", record.start_offset)
    _check_offset("end_offset", record.end_offset)
    if not record.start_offset <= record.end_offset <= record.upto_offset:
        raise InvalidControlRecord(
            f"need start <= end <= upto, got start {record.start_offset} end {record.end_offset} "
            f"upto {record.upto_offset}")
    if len(record.drops) > limits.compaction_step_records_max:
        raise InvalidControlRecord(f"{len(record.drops)} drop ranges, more than "
                                   f"compaction_step_records_max={limits.compaction_step_records_max}")
    previous_end = record.start_offset
    for first, count in record.drops:
        if not isinstance(count, int) or not 1 <= count <= _INT32_MAX:
            raise InvalidControlRecord(f"drop range at {first} has count {count!r}, need 1..2**31-1")
        if not isinstance(first, int) or first < previous_end or first + count > record.end_offset:
            raise InvalidControlRecord(
                f"drop range ({first}, {count}) is unsorted, overlapping or outside "
                f"[{record.start_offset}, {record.end_offset})")
        previous_end = first + count


def encode_control(record: PartitionControl) -> bytes:
    """The bytes of ``record``; raises :class:`InvalidControlRecord` if a field is out of range."""
    _check(record)
    if isinstance(record, AdvanceLogStart):
        return _HEAD.pack(CONTROL_MAGIC, CONTROL_VERSION, ControlType.ADVANCE_LOG_START) + \
            _ADVANCE.pack(record.offset)
    ranges = b"".join(_RANGE.pack(first, count) for first, count in record.drops)
    return b"".join((
        _HEAD.pack(CONTROL_MAGIC, CONTROL_VERSION, ControlType.COMPACT),
        _COMPACT.pack(record.upto_offset, record.time_ms, record.start_offset, record.end_offset,
                      len(record.drops)),
        ranges,
    ))


def decode_control(data: bytes) -> PartitionControl:
    """The record in ``data``; raises :class:`InvalidControlRecord` for anything but an exact, valid
    record of a known version and type."""
    if len(data) < _HEAD.size:
        raise InvalidControlRecord(f"control record of {len(data)} bytes is shorter than its header")
    magic, version, kind = _HEAD.unpack_from(data)
    if magic != CONTROL_MAGIC:
        raise InvalidControlRecord(f"wrong magic {magic!r}: not a partition control record")
    if version != CONTROL_VERSION:
        raise InvalidControlRecord(f"unsupported control record version {version} "
                                   f"(this node knows {CONTROL_VERSION})")
    body = len(data) - _HEAD.size
    record: PartitionControl
    if kind == ControlType.ADVANCE_LOG_START:
        if body != _ADVANCE.size:
            raise InvalidControlRecord(f"ADVANCE_LOG_START record has {body} body bytes, not {_ADVANCE.size}")
        (offset,) = _ADVANCE.unpack_from(data, _HEAD.size)
        record = AdvanceLogStart(offset)
    elif kind == ControlType.COMPACT:
        if body < _COMPACT.size:
            raise InvalidControlRecord(f"COMPACT record has {body} body bytes, fewer than {_COMPACT.size}")
        upto, time_ms, start, end, count = _COMPACT.unpack_from(data, _HEAD.size)
        if body != _COMPACT.size + count * _RANGE.size:
            raise InvalidControlRecord(
                f"COMPACT record with {count} drop ranges has {body} body bytes, "
                f"not {_COMPACT.size + count * _RANGE.size}")
        at = _HEAD.size + _COMPACT.size
        drops = tuple(_RANGE.unpack_from(data, at + i * _RANGE.size) for i in range(count))
        record = Compact(upto, time_ms, start, end, drops)
    else:
        raise InvalidControlRecord(f"unknown control record type {kind}")
    _check(record)
    return record
