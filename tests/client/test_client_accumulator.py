"""Batching limits of the producer's accumulator: exact byte caps, record caps, order, retries."""

from __future__ import annotations

import pytest

from millpond import record_batch
from millpond.client._accumulator import Accumulator
from millpond.client._types import TopicPartition
from millpond.record_batch import BATCH_HEADER_BYTES, Record, record_size_bytes

TP = TopicPartition("t", 0)


def _record(
    value_bytes: int, key: bytes | None = None, headers: tuple[tuple[str, bytes | None], ...] = ()
) -> Record:
    return Record(key, b"v" * value_bytes, headers, timestamp_ms=1_700_000_000_000)


def _append(acc: Accumulator[int], record: Record, handle: int = 0, tp: TopicPartition = TP):
    size = record_size_bytes(record.key, record.value, record.headers)
    return acc.append(tp, record, size, handle, 0.0, 60.0)


def test_a_batch_fills_exactly_to_batch_bytes_and_matches_the_encoded_size() -> None:
    one = record_size_bytes(None, b"v" * 76)  # 24 + 76 = 100 bytes per record
    acc: Accumulator[int] = Accumulator(batch_bytes=BATCH_HEADER_BYTES + 10 * one)
    results = [_append(acc, _record(76), i) for i in range(10)]
    assert [r.closed for r in results] == [False] * 9 + [True]  # the tenth fills it exactly
    batch = acc.next_batch(TP)
    assert batch is not None and len(batch.records) == 10
    assert batch.size_bytes == BATCH_HEADER_BYTES + 10 * one == acc.batch_bytes
    assert batch.size_bytes == len(record_batch.encode_batch(batch.records))
    assert batch.handles == list(range(10))


def test_the_record_that_would_pass_the_cap_opens_the_next_batch() -> None:
    acc: Accumulator[int] = Accumulator(batch_bytes=BATCH_HEADER_BYTES + 250)
    first = _append(acc, _record(76))  # 100
    second = _append(acc, _record(76))  # 200
    third = _append(acc, _record(76))  # would be 300 > 250
    assert first.opened and not second.opened and third.opened
    assert third.closed and third.batch is not first.batch
    closed = acc.next_batch(TP)
    assert closed is first.batch and len(closed.records) == 2
    assert closed.size_bytes <= acc.batch_bytes
    assert acc.next_batch(TP) is None  # the open batch is neither full nor sendable


def test_headers_and_keys_count_towards_the_cap_in_utf8() -> None:
    headers = (("schlüssel", b"x"), ("k", None))
    record = _record(10, key=b"key", headers=headers)
    size = record_size_bytes(record.key, record.value, record.headers)
    acc: Accumulator[int] = Accumulator(batch_bytes=BATCH_HEADER_BYTES + 3 * size)
    for _ in range(3):
        _append(acc, record)
    batch = acc.next_batch(TP)
    assert batch is not None and batch.size_bytes == len(record_batch.encode_batch(batch.records))


def test_a_record_larger_than_batch_bytes_travels_alone() -> None:
    acc: Accumulator[int] = Accumulator(batch_bytes=BATCH_HEADER_BYTES + 100)
    _append(acc, _record(10))
    big = _append(acc, _record(1000))
    assert big.opened and big.closed
    first, second = acc.next_batch(TP), acc.next_batch(TP)
    assert first is not None and len(first.records) == 1 and first.records[0].value == b"v" * 10
    assert second is big.batch and len(second.records) == 1


def test_a_record_that_cannot_fit_any_batch_is_refused() -> None:
    acc: Accumulator[int] = Accumulator(batch_bytes=1024)
    with pytest.raises(ValueError, match="batch_bytes_max"):
        acc.append(TP, _record(0), record_batch.batch_bytes_max, 0, 0.0, 1.0)


def test_the_record_count_cap_closes_a_batch() -> None:
    acc: Accumulator[int] = Accumulator(batch_bytes=1024 * 1024, batch_records_max=3)
    results = [_append(acc, _record(1)) for _ in range(4)]
    assert [r.closed for r in results] == [False, False, True, False]
    assert len(acc.next_batch(TP).records) == 3  # type: ignore[union-attr]


def test_an_open_batch_goes_only_once_sendable() -> None:
    acc: Accumulator[int] = Accumulator(batch_bytes=10_000)
    _append(acc, _record(1))
    assert acc.next_batch(TP) is None
    acc.mark_sendable(TP)
    batch = acc.next_batch(TP)
    assert batch is not None and len(batch.records) == 1
    assert acc.next_batch(TP) is None


def test_batches_of_a_partition_leave_in_order_and_a_requeued_one_keeps_its_place() -> None:
    acc: Accumulator[int] = Accumulator(batch_bytes=BATCH_HEADER_BYTES + 100)
    for i in range(4):  # each record fills a batch
        _append(acc, _record(76), i)
    taken = [acc.next_batch(TP) for _ in range(3)]
    assert [b.sequence for b in taken] == [0, 1, 2]  # type: ignore[union-attr]
    acc.requeue(taken[1])  # type: ignore[arg-type]
    acc.requeue(taken[0])  # type: ignore[arg-type]
    assert [acc.next_batch(TP).sequence for _ in range(3)] == [0, 1, 3]  # type: ignore[union-attr]


def test_partitions_batch_independently_and_on_close_reports_each_closed_batch() -> None:
    closed: list[tuple[int, int]] = []
    acc: Accumulator[int] = Accumulator(batch_bytes=BATCH_HEADER_BYTES + 100,
                                        on_close=lambda b: closed.append((b.tp.partition, b.sequence)))
    other = TopicPartition("t", 1)
    _append(acc, _record(50))
    _append(acc, _record(50), tp=other)
    _append(acc, _record(50))  # closes t/0 #0
    assert closed == [(0, 0)]
    acc.mark_sendable(other)
    acc.next_batch(other)
    assert closed == [(0, 0), (1, 0)]
    assert sorted(len(q) for q in acc.queues()) == [0, 2]


def test_take_all_removes_open_and_closed_batches() -> None:
    acc: Accumulator[int] = Accumulator(batch_bytes=BATCH_HEADER_BYTES + 100)
    for _ in range(3):
        _append(acc, _record(60))
    taken = acc.take_all(TP)
    assert [b.sequence for b in taken] == [0, 1, 2]
    assert acc.pending() == []


@pytest.mark.parametrize("batch_bytes", [0, 64, record_batch.batch_bytes_max + 1])
def test_batch_bytes_out_of_range_is_refused(batch_bytes: int) -> None:
    with pytest.raises(ValueError):
        Accumulator(batch_bytes=batch_bytes)
