"""Decoding fetched bytes: whole batches, skipping records below the offset asked for, control batches."""

from __future__ import annotations

import pytest

from millpond import record_batch
from millpond.client._fetch import decode_fetch
from millpond.client._types import ConsumerRecord
from millpond.errors import InvalidRecordBatch
from millpond.record_batch import Record


def _batch(base: int, count: int, *, control: bool = False, epoch: int = 1) -> bytes:
    records = [Record(f"k{base + i}".encode(), f"v{base + i}".encode(), (("h", b"x"),), 1000 + base + i)
               for i in range(count)]
    encoded = record_batch.encode_batch(records, control=control, producer_id=9 if control else -1,
                                        transactional=control)
    return record_batch.stamp(encoded, base, epoch)


def test_records_below_the_fetch_offset_are_skipped_and_the_next_offset_follows_the_last_batch() -> None:
    data = _batch(0, 5) + _batch(5, 5)
    records, next_offset = decode_fetch("t", 2, data, 3)
    assert [r.offset for r in records] == [3, 4, 5, 6, 7, 8, 9]
    assert next_offset == 10
    assert records[0] == ConsumerRecord("t", 2, 3, 1003, b"k3", b"v3", (("h", b"x"),))


def test_a_whole_batch_below_the_offset_is_skipped() -> None:
    records, next_offset = decode_fetch("t", 0, _batch(0, 5) + _batch(5, 2), 5)
    assert [r.offset for r in records] == [5, 6]
    assert next_offset == 7


def test_control_batches_are_not_returned_but_advance_the_position() -> None:
    records, next_offset = decode_fetch("t", 0, _batch(0, 2) + _batch(2, 1, control=True), 0)
    assert [r.offset for r in records] == [0, 1]
    assert next_offset == 3
    records, next_offset = decode_fetch("t", 0, _batch(2, 1, control=True), 2)
    assert records == [] and next_offset == 3


def test_no_data_keeps_the_offset() -> None:
    assert decode_fetch("t", 0, b"", 42) == ([], 42)


def test_log_append_time_batches_report_the_broker_time() -> None:
    encoded = record_batch.encode_batch([Record(None, b"a", (), 5), Record(None, b"b", (), 6)])
    data = record_batch.stamp(encoded, 10, 1, log_append_time_ms=99_000)
    records, _ = decode_fetch("t", 0, data, 10)
    assert [r.timestamp_ms for r in records] == [99_000, 99_000]


def test_a_corrupt_batch_is_an_error_not_a_skip() -> None:
    data = bytearray(_batch(0, 3))
    data[-1] ^= 0xFF
    with pytest.raises(InvalidRecordBatch, match="does not decode") as caught:
        decode_fetch("t", 0, bytes(data), 0)
    assert isinstance(caught.value.__cause__, record_batch.CorruptBatch)


def test_a_truncated_response_is_an_error() -> None:
    data = _batch(0, 3)
    with pytest.raises(InvalidRecordBatch):
        decode_fetch("t", 0, data + data[:70], 0)
