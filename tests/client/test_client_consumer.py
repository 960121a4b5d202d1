"""The consumer against in-process fake nodes: positions, seeks, resets, long polls, leader moves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from client_fake_cluster import FakeCluster, Fault

from millpond import errors
from millpond.client import AsyncConsumer, ConsumerConfig, ConsumerRecord
from millpond.record_batch import Record


def _run(test: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(test(), 60))


def _config(**overrides: Any) -> ConsumerConfig:
    settings: dict[str, Any] = {"fetch_wait_ms_max": 100, "retry_backoff_ms": 5, "retry_backoff_ms_max": 50,
                                "request_timeout_ms": 2000}
    settings.update(overrides)
    return ConsumerConfig(**settings)


def _fill(fake: FakeCluster, topic: str, partition: int, batches: int, per_batch: int) -> None:
    for b in range(batches):
        fake.append(topic, partition, [
            Record(f"k{b * per_batch + i}".encode(), f"v{b * per_batch + i}".encode(), (("h", b"1"),),
                   1000 * (b * per_batch + i))
            for i in range(per_batch)
        ])


async def _drain(consumer: AsyncConsumer, count: int, max_records: int = 500) -> list[ConsumerRecord]:
    records: list[ConsumerRecord] = []
    while len(records) < count:
        got = await consumer.poll(timeout_ms=2000, max_records=max_records)
        assert got, f"stalled after {len(records)} records"
        records.extend(got)
    return records


def test_earliest_reads_every_record_in_order_with_its_fields(fake: FakeCluster) -> None:
    fake.create_topic("t", 1)
    _fill(fake, "t", 0, batches=5, per_batch=10)

    async def test() -> None:
        async with AsyncConsumer(fake.bootstrap, _config(auto_offset_reset="earliest")) as consumer:
            consumer.assign([("t", 0)])
            records = await _drain(consumer, 50, max_records=7)
            assert [r.offset for r in records] == list(range(50))
            assert records[3] == ConsumerRecord("t", 0, 3, 3000, b"k3", b"v3", (("h", b"1"),))
            assert await consumer.position(("t", 0)) == 50
            assert await consumer.poll(timeout_ms=50) == []

    _run(test)


def test_seek_into_the_middle_of_a_batch_skips_the_records_before_it(fake: FakeCluster) -> None:
    fake.create_topic("t", 1)
    _fill(fake, "t", 0, batches=2, per_batch=10)

    async def test() -> None:
        async with AsyncConsumer(fake.bootstrap, _config()) as consumer:
            consumer.assign([("t", 0)])
            consumer.seek(("t", 0), 13)
            records = await _drain(consumer, 7)
            assert [r.offset for r in records] == list(range(13, 20))

    _run(test)


def test_latest_waits_for_new_records_with_a_long_poll(fake: FakeCluster) -> None:
    fake.create_topic("t", 1)
    _fill(fake, "t", 0, batches=1, per_batch=5)

    async def test() -> None:
        async with AsyncConsumer(fake.bootstrap, _config(fetch_wait_ms_max=2000)) as consumer:
            consumer.assign([("t", 0)])
            assert await consumer.position(("t", 0)) == 5
            poll = asyncio.ensure_future(consumer.poll(timeout_ms=5000))
            done, _ = await asyncio.wait({poll}, timeout=0.2)
            assert not done  # the long poll waits for data rather than returning empty
            await asyncio.to_thread(_fill, fake, "t", 0, 1, 2)
            records = await poll
            assert [r.offset for r in records] == [5, 6]

    _run(test)


def test_seek_to_beginning_end_and_timestamp(fake: FakeCluster) -> None:
    fake.create_topic("t", 2)
    _fill(fake, "t", 0, batches=2, per_batch=5)

    async def test() -> None:
        async with AsyncConsumer(fake.bootstrap, _config()) as consumer:
            consumer.assign([("t", 0), ("t", 1)])
            await consumer.seek_to_end()
            assert await consumer.position(("t", 0)) == 10
            assert await consumer.position(("t", 1)) == 0
            await consumer.seek_to_beginning([("t", 0)])
            assert await consumer.position(("t", 0)) == 0
            assert await consumer.seek_to_timestamp(("t", 0), 6500) == 7
            records = await _drain(consumer, 3)
            assert [r.offset for r in records] == [7, 8, 9]
            assert await consumer.seek_to_timestamp(("t", 0), 10**12) == 10

    _run(test)


def test_an_offset_out_of_range_resets_per_policy(fake: FakeCluster) -> None:
    fake.create_topic("t", 1)
    _fill(fake, "t", 0, batches=1, per_batch=4)

    async def test() -> None:
        async with AsyncConsumer(fake.bootstrap, _config(auto_offset_reset="earliest")) as consumer:
            consumer.assign([("t", 0)])
            consumer.seek(("t", 0), 99)
            assert [r.offset for r in await _drain(consumer, 4)] == [0, 1, 2, 3]
        async with AsyncConsumer(fake.bootstrap, _config(auto_offset_reset="latest")) as consumer:
            consumer.assign([("t", 0)])
            consumer.seek(("t", 0), 99)
            assert await consumer.poll(timeout_ms=300) == []
            assert await consumer.position(("t", 0)) == 4
        async with AsyncConsumer(fake.bootstrap, _config(auto_offset_reset="none")) as consumer:
            consumer.assign([("t", 0)])
            with pytest.raises(errors.OffsetOutOfRange, match="seek first"):
                await consumer.poll(timeout_ms=1000)
            consumer.seek(("t", 0), 99)
            with pytest.raises(errors.OffsetOutOfRange) as caught:
                await consumer.poll(timeout_ms=1000)
            assert (caught.value.log_start_offset, caught.value.high_watermark) == (0, 4)

    _run(test)


def test_a_leader_move_is_followed(fake: FakeCluster) -> None:
    fake.create_topic("t", 1, leaders=[1])
    _fill(fake, "t", 0, batches=1, per_batch=3)

    async def test() -> None:
        async with AsyncConsumer(fake.bootstrap, _config(auto_offset_reset="earliest")) as consumer:
            consumer.assign([("t", 0)])
            assert len(await _drain(consumer, 3)) == 3
            fake.set_leader("t", 0, 2)
            await asyncio.to_thread(_fill, fake, "t", 0, 1, 3)
            assert [r.offset for r in await _drain(consumer, 3)] == [3, 4, 5]

    _run(test)
    fetch_nodes = {node for node, method, _, _ in fake.state.calls if method == "Fetch"}
    assert fetch_nodes == {1, 2}


def test_retriable_fetch_errors_are_retried_silently_and_others_raised_once(fake: FakeCluster) -> None:
    fake.create_topic("t", 1)
    _fill(fake, "t", 0, batches=1, per_batch=2)

    async def test() -> None:
        async with AsyncConsumer(fake.bootstrap, _config(auto_offset_reset="earliest")) as consumer:
            consumer.assign([("t", 0)])
            await consumer.position(("t", 0))
            fake.add_fault(Fault("Fetch", errors.Unavailable("leader stepping down")))
            assert len(await _drain(consumer, 2)) == 2
            fake.add_fault(Fault("Fetch", errors.InternalError("boom")))
            with pytest.raises(errors.InternalError, match="boom"):
                await consumer.poll(timeout_ms=2000)
            await asyncio.to_thread(_fill, fake, "t", 0, 1, 1)
            assert [r.offset for r in await _drain(consumer, 1)] == [2]

    _run(test)


def test_unknown_topics_and_partitions_are_raised_by_poll(fake: FakeCluster) -> None:
    fake.create_topic("t", 1)

    async def test() -> None:
        async with AsyncConsumer(fake.bootstrap, _config()) as consumer:
            consumer.assign([("missing", 0)])
            with pytest.raises(errors.UnknownTopic):
                await consumer.poll(timeout_ms=2000)
            consumer.assign([("t", 5)])
            with pytest.raises(errors.UnknownPartition):
                await consumer.poll(timeout_ms=2000)

    _run(test)


def test_several_partitions_are_read_fairly(fake: FakeCluster) -> None:
    fake.create_topic("t", 3)
    for partition in range(3):
        _fill(fake, "t", partition, batches=4, per_batch=25)

    async def test() -> None:
        async with AsyncConsumer(fake.bootstrap, _config(auto_offset_reset="earliest")) as consumer:
            consumer.assign([("t", 0), ("t", 1), ("t", 2)])
            records = await _drain(consumer, 300, max_records=40)
            for partition in range(3):
                assert [r.offset for r in records if r.partition == partition] == list(range(100))
            stats = consumer.statistics()
            assert all(p.lag == 0 for p in stats.partitions)

    _run(test)


def test_misuse_raises_plain_python_errors(fake: FakeCluster) -> None:
    async def test() -> None:
        consumer = AsyncConsumer(fake.bootstrap, _config())
        consumer.assign([("t", 0)])
        with pytest.raises(ValueError, match="not assigned"):
            consumer.seek(("u", 0), 1)
        with pytest.raises(ValueError):
            consumer.seek(("t", 0), -1)
        with pytest.raises(ValueError):
            consumer.assign([("t", -1)])
        with pytest.raises(ValueError):
            await consumer.poll(timeout_ms=-1)
        await consumer.close()
        with pytest.raises(RuntimeError, match="closed"):
            await consumer.poll()

    _run(test)
