"""The blocking facades and the admin client, against in-process fake nodes."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest
from client_fake_cluster import FakeCluster, Fault

from millpond import errors
from millpond.client import (
    Admin,
    AsyncAdmin,
    ClientConfig,
    Consumer,
    ConsumerConfig,
    Producer,
    ProducerConfig,
)

FAST = {"retry_backoff_ms": 5, "retry_backoff_ms_max": 50, "request_timeout_ms": 2000}


def test_admin_creates_describes_lists_and_deletes_topics(fake: FakeCluster) -> None:
    with Admin(fake.bootstrap, ClientConfig(**FAST)) as admin:
        created = admin.create_topic("orders", 3, 1, {"retention_ms": "1000"})
        assert created.name == "orders" and [p.partition for p in created.partitions] == [0, 1, 2]
        assert admin.list_topics() == ["orders"]
        described = admin.describe_topic("orders")
        assert described.partitions[0].high_watermark == 0
        cluster = admin.describe_cluster(include_topics=True)
        assert [n.id for n in cluster.nodes] == [1, 2, 3] and cluster.controller == 1
        assert cluster.ready and [t.name for t in cluster.topics] == ["orders"]
        with pytest.raises(errors.TopicExists):
            admin.create_topic("orders", 1, 1)
        admin.delete_topic("orders")
        with pytest.raises(errors.UnknownTopic):
            admin.describe_topic("orders")


def test_admin_reads_fail_over_but_timed_out_writes_are_not_retried(fake: FakeCluster) -> None:
    async def test() -> None:
        async with AsyncAdmin([fake.address(1), fake.address(2)], ClientConfig(**FAST)) as admin:
            fake.call(lambda state: state.down.add(1))
            assert await admin.list_topics() == []
            fake.add_fault(Fault("CreateTopic", errors.RequestTimeout("slow"), apply=False))
            with pytest.raises(errors.RequestTimeout):
                await admin.create_topic("t", 1, 1)
            fake.add_fault(Fault("CreateTopic", errors.Unavailable("no controller yet")))
            created = await admin.create_topic("t", 1, 1)  # retried: Unavailable means not carried out
            assert created.name == "t"

    asyncio.run(asyncio.wait_for(test(), 30))


def test_blocking_producer_and_consumer_round_trip(fake: FakeCluster) -> None:
    fake.create_topic("t", 2)
    with Producer(fake.bootstrap, ProducerConfig(linger_ms=1, **FAST)) as producer:
        futures = [producer.send("t", f"v{i}".encode(), key=f"k{i}".encode()) for i in range(20)]
        producer.flush()
        acks = [f.result(timeout=10) for f in futures]
        assert all(isinstance(f, concurrent.futures.Future) for f in futures)
        assert producer.statistics().records_acknowledged == 20
    with Consumer(fake.bootstrap, ConsumerConfig(auto_offset_reset="earliest", fetch_wait_ms_max=100,
                                                 **FAST)) as consumer:
        consumer.assign([("t", 0), ("t", 1)])
        assert sorted(consumer.assignment()) == [("t", 0), ("t", 1)]
        records = []
        while len(records) < 20:
            records.extend(consumer.poll(timeout_ms=2000))
        consumed = sorted((r.partition, r.offset) for r in records)
        assert consumed == sorted((a.partition, a.offset) for a in acks)
        consumer.seek(("t", 0), 0)
        assert consumer.position(("t", 0)) == 0
        assert consumer.offset_for(("t", 1), "latest") == sum(1 for a in acks if a.partition == 1)


def test_blocking_calls_raise_the_async_errors(fake: FakeCluster) -> None:
    with Producer(fake.bootstrap, ProducerConfig(topic_wait_ms_max=100, **FAST)) as producer:
        with pytest.raises(errors.UnknownTopic):
            producer.send("missing", b"v")


def test_a_blocking_call_from_the_client_loop_thread_is_refused(fake: FakeCluster) -> None:
    fake.create_topic("t", 1)
    seen: list[BaseException] = []
    with Producer(fake.bootstrap, ProducerConfig(linger_ms=1, **FAST)) as producer:
        future = producer.send("t", b"v")

        def callback(_: object) -> None:
            try:
                producer.flush()
            except RuntimeError as exc:
                seen.append(exc)

        future.result(timeout=10)
        future.add_done_callback(callback)  # already done: runs here, in this thread: allowed
        assert not seen
        producer._runner.loop.call_soon_threadsafe(callback, None)
        producer.flush()
        producer._runner.call(lambda: None)  # a round trip through the loop: the callback ran
    assert len(seen) == 1 and "loop thread" in str(seen[0])
