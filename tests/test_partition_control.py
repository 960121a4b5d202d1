"""Partition control records (ADVANCE_LOG_START, COMPACT): round trips and every rejection."""

from __future__ import annotations

import struct

import pytest

from millpond import limits
from millpond.node.partition_control import (
    CONTROL_MAGIC,
    CONTROL_VERSION,
    AdvanceLogStart,
    Compact,
    ControlType,
    InvalidControlRecord,
    decode_control,
    encode_control,
)


@pytest.mark.parametrize("record", [
    AdvanceLogStart(0),
    AdvanceLogStart(2**63 - 1),
    Compact(100, 1_700_000_000_000, 0, 50, ()),
    Compact(100, 5, 10, 100, ((10, 1), (12, 30), (99, 1))),
])
def test_round_trip(record: AdvanceLogStart | Compact) -> None:
    assert decode_control(encode_control(record)) == record


def test_pinned_bytes() -> None:
    assert encode_control(AdvanceLogStart(258)) == b"MPC\x01\x01" + struct.pack(">q", 258)
    compact = encode_control(Compact(9, 8, 1, 7, ((2, 3),)))
    assert compact == b"MPC\x01\x02" + struct.pack(">qqqqI", 9, 8, 1, 7, 1) + struct.pack(">qi", 2, 3)


@pytest.mark.parametrize(("record", "message"), [
    (AdvanceLogStart(-1), "offset must be an offset"),
    (Compact(10, -1, 0, 5, ()), "time_ms must be"),
    (Compact(10, 0, 6, 5, ()), "need start <= end <= upto"),
    (Compact(4, 0, 0, 5, ()), "need start <= end <= upto"),
    (Compact(10, 0, 0, 5, ((1, 0),)), "count 0"),
    (Compact(10, 0, 2, 5, ((1, 1),)), "outside"),
    (Compact(10, 0, 0, 5, ((4, 2),)), "outside"),
    (Compact(10, 0, 0, 5, ((2, 2), (3, 1))), "overlapping"),
    (Compact(10, 0, 0, 5, ((3, 1), (1, 1))), "unsorted"),
])
def test_encode_refuses_bad_fields(record: AdvanceLogStart | Compact, message: str) -> None:
    with pytest.raises(InvalidControlRecord, match=message):
        encode_control(record)


def test_too_many_ranges_are_refused() -> None:
    count = limits.compaction_step_records_max + 1
    drops = tuple((2 * i, 1) for i in range(count))
    with pytest.raises(InvalidControlRecord, match="drop ranges"):
        encode_control(Compact(2 * count, 0, 0, 2 * count, drops))


@pytest.mark.parametrize(("data", "message"), [
    (b"MP", "shorter than its header"),
    (b"XYZ\x01\x01" + bytes(8), "wrong magic"),
    (CONTROL_MAGIC + bytes([CONTROL_VERSION + 1, 1]) + bytes(8), "unsupported control record version"),
    (CONTROL_MAGIC + bytes([CONTROL_VERSION, 9]), "unknown control record type 9"),
    (CONTROL_MAGIC + bytes([CONTROL_VERSION, ControlType.ADVANCE_LOG_START]) + bytes(7), "7 body bytes"),
    (CONTROL_MAGIC + bytes([CONTROL_VERSION, ControlType.ADVANCE_LOG_START]) + struct.pack(">q", -5),
     "offset must be"),
    (CONTROL_MAGIC + bytes([CONTROL_VERSION, ControlType.COMPACT]) + bytes(10), "fewer than"),
    (CONTROL_MAGIC + bytes([CONTROL_VERSION, ControlType.COMPACT]) + struct.pack(">qqqqI", 9, 0, 0, 9, 2)
     + struct.pack(">qi", 1, 1), "with 2 drop ranges"),
    (CONTROL_MAGIC + bytes([CONTROL_VERSION, ControlType.COMPACT]) + struct.pack(">qqqqI", 9, 0, 0, 9, 1)
     + struct.pack(">qi", 8, 5), "outside"),
])
def test_decode_refuses_malformed_bytes(data: bytes, message: str) -> None:
    with pytest.raises(InvalidControlRecord, match=message):
        decode_control(data)


def test_dropped_records_counts_offsets() -> None:
    assert Compact(100, 0, 0, 100, ((1, 2), (10, 5))).dropped_records == 7
