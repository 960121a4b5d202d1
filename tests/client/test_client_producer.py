"""The producer against in-process fake nodes: partitioning, batching, pipelining, retries, timeouts."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from client_fake_cluster import FakeCluster, Fault

from millpond import errors
from millpond.client import AsyncProducer, ProducerConfig, RecordMetadata
from millpond.partitioner import partition_for_key
from millpond.testing.waiting import wait_until_async


def _run(test: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(test(), 60))


def _config(**overrides: Any) -> ProducerConfig:
    settings: dict[str, Any] = {"linger_ms": 1, "retry_backoff_ms": 5, "retry_backoff_ms_max": 50,
                                "request_timeout_ms": 2000, "delivery_timeout_ms": 10_000}
    settings.update(overrides)
    return ProducerConfig(**settings)


def test_keyed_records_land_on_murmur2_partitions_in_order_with_their_fields(fake: FakeCluster) -> None:
    fake.create_topic("orders", 4)

    async def test() -> list[RecordMetadata]:
        async with AsyncProducer(fake.bootstrap, _config()) as producer:
            futures = [
                await producer.send("orders", f"v{i}".encode(), key=f"key-{i % 7}".encode(),
                                    headers=[("n", str(i).encode()), ("empty", None)], timestamp_ms=1000 + i)
                for i in range(100)
            ]
            return list(await asyncio.gather(*futures))

    acks = _run(test)
    for i, ack in enumerate(acks):
        assert ack.topic == "orders"
        assert ack.partition == partition_for_key(f"key-{i % 7}".encode(), 4)
        assert ack.timestamp_ms == 1000 + i
    for partition in range(4):
        stored = fake.records("orders", partition)
        mine = [a for a in acks if a.partition == partition]
        assert [r.offset for r in stored] == [a.offset for a in mine] == list(range(len(mine)))
        values = [int(r.value[1:]) for r in stored]  # type: ignore[index]
        assert values == sorted(values)  # per-partition order = send order
        assert all(r.headers[1] == ("empty", None) for r in stored)


def test_metadata_from_a_node_cut_off_from_the_majority_is_not_trusted(fake: FakeCluster) -> None:
    """The first bootstrap node is isolated: it still answers, with no controller and no leaders.
    The producer must ask the other nodes instead of waiting out its delivery timeout."""
    fake.create_topic("cut", 2, leaders=[2, 3])
    fake.call(lambda state: state.cut_off.add(1))

    async def test() -> list[RecordMetadata]:
        async with AsyncProducer(fake.address(1) + "," + fake.bootstrap, _config()) as producer:
            futures = [await producer.send("cut", b"v", partition=p) for p in (0, 1)]
            return list(await asyncio.gather(*futures))

    acks = _run(test)
    assert sorted(a.partition for a in acks) == [0, 1]


def test_keyless_records_stick_to_one_partition_per_batch_then_move_on(fake: FakeCluster) -> None:
    fake.create_topic("logs", 3)

    async def test() -> list[RecordMetadata]:
        config = _config(batch_bytes=64 + 10 * (24 + 10), linger_ms=1000)
        async with AsyncProducer(fake.bootstrap, config, rng=random.Random(1)) as producer:
            futures = [await producer.send("logs", b"x" * 10) for _ in range(30)]
            return list(await asyncio.gather(*futures))

    acks = _run(test)
    runs = [acks[i : i + 10] for i in range(0, 30, 10)]
    assert all(len({a.partition for a in run}) == 1 for run in runs)  # one partition per full batch
    assert sorted(run[0].partition for run in runs) == [0, 1, 2]  # round robin over the partitions


def test_an_explicit_partition_is_used_and_checked(fake: FakeCluster) -> None:
    fake.create_topic("t", 2)

    async def test() -> None:
        async with AsyncProducer(fake.bootstrap, _config()) as producer:
            ack = await (await producer.send("t", b"v", key=b"k", partition=1))
            assert ack.partition == 1
            with pytest.raises(errors.UnknownPartition):
                await producer.send("t", b"v", partition=2)

    _run(test)


def test_batches_are_pipelined_per_partition(fake: FakeCluster) -> None:
    fake.create_topic("t", 1)
    fake.call(lambda state: setattr(state, "produce_delay_s", 0.05))

    async def test() -> None:
        config = _config(batch_bytes=64 + 5 * 25, inflight_batches_max=4, linger_ms=0)
        async with AsyncProducer(fake.bootstrap, config) as producer:
            futures = [await producer.send("t", b"x") for _ in range(100)]
            acks = await asyncio.gather(*futures)
            assert [a.offset for a in acks] == list(range(100))
            assert producer.statistics().batches_sent == 20

    _run(test)
    assert fake.call(lambda state: state.inflight_produce_max) == 4


def test_not_leader_with_a_hint_redirects_without_a_metadata_refresh(fake: FakeCluster) -> None:
    fake.create_topic("t", 1, leaders=[1])

    async def test() -> None:
        async with AsyncProducer(fake.bootstrap, _config()) as producer:
            await (await producer.send("t", b"first"))
            refreshes = producer.statistics().metadata_refreshes
            fake.set_leader("t", 0, 3)  # node 1 now answers NOT_LEADER naming node 3
            ack = await (await producer.send("t", b"second"))
            assert ack.offset == 1
            assert producer.statistics().metadata_refreshes == refreshes
            assert producer.statistics().retries == 1

    _run(test)
    produce_nodes = [node for node, method, _, _ in fake.state.calls if method == "Produce"]
    assert produce_nodes == [1, 1, 3]


def test_an_unreachable_leader_is_rediscovered_from_metadata(fake: FakeCluster) -> None:
    fake.create_topic("t", 1, leaders=[2])

    async def test() -> None:
        async with AsyncProducer(fake.bootstrap, _config()) as producer:
            await (await producer.send("t", b"a"))

            def fail_over(state: Any) -> None:
                state.down.add(2)
                state.topics["t"][0].leader = 3

            fake.call(fail_over)
            ack = await (await producer.send("t", b"b"))
            assert ack.offset == 1
            assert producer.statistics().metadata_refreshes >= 2

    _run(test)


def test_retriable_errors_are_retried_and_non_retriable_ones_fail_the_batch(fake: FakeCluster) -> None:
    fake.create_topic("t", 1)

    async def test() -> None:
        async with AsyncProducer(fake.bootstrap, _config()) as producer:
            fake.add_fault(Fault("Produce", errors.Unavailable("no leader yet")))
            fake.add_fault(Fault("Produce", errors.ResourceExhausted("slow down", retry_after_ms=20)))
            ack = await (await producer.send("t", b"a"))
            assert ack.offset == 0 and producer.statistics().retries == 2
            fake.add_fault(Fault("Produce", errors.InvalidRecordBatch("bad batch")))
            future = await producer.send("t", b"b")
            with pytest.raises(errors.InvalidRecordBatch, match="bad batch"):
                await future
            assert producer.statistics().records_failed == 1

    _run(test)


def test_a_lost_reply_is_retried_and_duplicates_the_batch_at_least_once(fake: FakeCluster) -> None:
    fake.create_topic("t", 1)

    async def test() -> None:
        async with AsyncProducer(fake.bootstrap, _config()) as producer:
            fake.add_fault(Fault("Produce", status=grpc.StatusCode.UNAVAILABLE, apply=True))
            ack = await (await producer.send("t", b"once"))
            assert ack.offset == 1  # the first append happened; its reply was lost

    _run(test)
    assert [r.value for r in fake.records("t", 0)] == [b"once", b"once"]


def test_the_delivery_timeout_fails_records_with_request_timeout(fake: FakeCluster) -> None:
    fake.create_topic("t", 1)
    fake.call(lambda state: state.down.add(1))

    async def test() -> None:
        config = _config(request_timeout_ms=100, delivery_timeout_ms=400)
        async with AsyncProducer(fake.bootstrap, config) as producer:
            future = await producer.send("t", b"never")
            with pytest.raises(errors.RequestTimeout, match="delivery_timeout_ms=400") as caught:
                await future
            assert isinstance(caught.value.__cause__, errors.Unavailable)

    _run(test)


def test_acks_zero_reports_offset_minus_one(fake: FakeCluster) -> None:
    fake.create_topic("t", 1)

    async def test() -> None:
        async with AsyncProducer(fake.bootstrap, _config(acks=0)) as producer:
            ack = await (await producer.send("t", b"fire and forget"))
            assert ack.offset == -1

    _run(test)
    assert len(fake.records("t", 0)) == 1


def test_an_unknown_topic_is_reported_by_send_after_topic_wait_ms_max(fake: FakeCluster) -> None:
    async def test() -> None:
        async with AsyncProducer(fake.bootstrap, _config(topic_wait_ms_max=200)) as producer:
            with pytest.raises(errors.UnknownTopic, match="nope"):
                await producer.send("nope", b"v")

    _run(test)


def test_a_topic_deleted_while_sending_fails_its_records(fake: FakeCluster) -> None:
    fake.create_topic("t", 1)

    async def test() -> None:
        async with AsyncProducer(fake.bootstrap, _config()) as producer:
            await (await producer.send("t", b"a"))
            fake.call(lambda state: state.topics.pop("t"))
            with pytest.raises(errors.UnknownTopic):
                await (await producer.send("t", b"b"))

    _run(test)


def test_bad_records_are_refused_before_anything_is_queued(fake: FakeCluster) -> None:
    fake.create_topic("t", 1)

    async def test() -> None:
        async with AsyncProducer(fake.bootstrap, _config()) as producer:
            with pytest.raises(TypeError):
                await producer.send("t", "text")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await producer.send("t", b"v", headers=[(b"k", b"v")])  # type: ignore[list-item]
            with pytest.raises(errors.InvalidRequest):
                await producer.send("t", b"v", headers=[("h", b"")] * 65)
            with pytest.raises(errors.InvalidRequest):
                await producer.send("t", b"v", headers=[("k" * 257, b"")])
            with pytest.raises(errors.BatchTooLarge):
                await producer.send("t", b"v" * (2 * 1024 * 1024))
            with pytest.raises(errors.InvalidRequest):
                await producer.send("t", b"v", timestamp_ms=-1)
            assert producer.statistics().buffered_bytes == 0

    _run(test)


def test_a_full_buffer_blocks_send_then_raises_resource_exhausted(fake: FakeCluster) -> None:
    fake.create_topic("t", 1)
    fake.call(lambda state: setattr(state, "produce_delay_s", 1.0))

    async def test() -> None:
        config = _config(buffer_bytes=2 * 1024 * 1024, block_ms_max=100, batch_bytes=600 * 1024)
        async with AsyncProducer(fake.bootstrap, config) as producer:
            await producer.send("t", b"x" * (1024 * 1024))
            await producer.send("t", b"x" * (900 * 1024))
            with pytest.raises(errors.ResourceExhausted, match="buffer full"):
                await producer.send("t", b"x" * (300 * 1024))

    _run(test)


def test_flush_sends_lingering_batches_at_once_and_close_fails_what_is_left(fake: FakeCluster) -> None:
    fake.create_topic("t", 1)

    async def test() -> None:
        producer = AsyncProducer(fake.bootstrap, _config(linger_ms=60_000, delivery_timeout_ms=120_000))
        future = await producer.send("t", b"a")
        done, _ = await asyncio.wait({future}, timeout=0.05)
        assert not done  # lingering
        await producer.flush()
        assert future.result().offset == 0
        fake.call(lambda state: state.down.add(1))
        stuck = await producer.send("t", b"b")
        await producer.close(timeout_s=0.2)
        with pytest.raises(errors.RequestTimeout):
            await stuck
        with pytest.raises(RuntimeError, match="closed"):
            await producer.send("t", b"c")

    _run(test)


def test_bootstrap_skips_addresses_that_do_not_answer(fake: FakeCluster) -> None:
    fake.create_topic("t", 1)

    async def test() -> None:
        bootstrap = ["127.0.0.1:1", fake.address(2)]
        async with AsyncProducer(bootstrap, _config()) as producer:
            assert (await (await producer.send("t", b"v"))).offset == 0

    _run(test)


def test_no_answering_bootstrap_address_is_unavailable() -> None:
    async def test() -> None:
        async with AsyncProducer("127.0.0.1:1", _config(topic_wait_ms_max=100)) as producer:
            with pytest.raises(errors.Unavailable, match="no node answered"):
                await producer.send("t", b"v")

    _run(test)


def test_old_metadata_is_refreshed_in_the_background_and_new_partitions_are_used(fake: FakeCluster) -> None:
    fake.create_topic("growing", 1)

    async def test() -> None:
        async with AsyncProducer(fake.bootstrap, _config(metadata_max_age_ms=100)) as producer:
            assert (await (await producer.send("growing", b"v", key=b"key-3"))).partition == 0

            def grow(state: Any) -> None:
                state.topics["growing"].append(type(state.topics["growing"][0])(leader=2))

            fake.call(grow)

            async def refreshed() -> bool:
                # Each send after the metadata aged past metadata_max_age_ms starts a refresh.
                await producer.send("growing", b"v", key=b"key-3")
                return producer.statistics().metadata_refreshes >= 2

            await wait_until_async(refreshed, 10, "a background metadata refresh")
            ack = await (await producer.send("growing", b"v", key=b"key-3"))
            assert ack.partition == partition_for_key(b"key-3", 2) == 1

    _run(test)
