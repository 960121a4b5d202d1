"""The Python client against a real 3-node cluster: node processes, Raft, LMDB, gRPC.

Each module-scoped cluster runs in a pytest temporary directory (node logs
are kept there for a failing test: ``node-<id>.log``). Timeouts are generous:
these machines are slow and shared.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from millpond import errors, record_batch
from millpond.client import (
    Admin,
    AsyncConsumer,
    AsyncProducer,
    ClientConfig,
    Consumer,
    ConsumerConfig,
    ConsumerRecord,
    Producer,
    ProducerConfig,
    RecordMetadata,
)
from millpond.client._connection import Connections, call
from millpond.partitioner import partition_for_key
from millpond.testing.cluster import LocalCluster
from millpond.testing.waiting import wait_until
from millpond.v1 import broker_pb2


def _run(test: Callable[[], Awaitable[Any]], timeout_s: float = 180) -> Any:
    return asyncio.run(asyncio.wait_for(test(), timeout_s))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(3, data_dir=tmp_path_factory.mktemp("cluster")) as running:
        yield running


def _create(cluster: LocalCluster, name: str, partitions: int, replication: int = 3) -> None:
    """Create a topic and wait until every partition is led by its preferred replica.

    The controller moves leadership to the preferred replica soon after
    creation; waiting for it keeps that move out of the test that follows
    (the client copes with moves; some tests compare exact offsets).
    """
    with Admin(cluster.bootstrap) as admin:
        # retention_ms=-1: some tests produce records stamped decades ago, which retention would delete.
        admin.create_topic(name, partitions, replication, {"retention_ms": "-1"})
    def led_by_preferred() -> bool:
        with Admin(cluster.bootstrap) as admin:
            # UnknownTopic until the node that answers has applied the creation: keep polling.
            topic = admin.describe_topic(name)
        return all(p.leader and p.leader == p.replicas[0] for p in topic.partitions)

    wait_until(led_by_preferred, 60, f"every partition of {name} led by its preferred replica")


async def _consume_all(bootstrap: str, topic: str, partitions: int, count: int) -> list[ConsumerRecord]:
    config = ConsumerConfig(auto_offset_reset="earliest")
    records: list[ConsumerRecord] = []
    async with AsyncConsumer(bootstrap, config) as consumer:
        consumer.assign([(topic, p) for p in range(partitions)])
        deadline = time.monotonic() + 60
        while len(records) < count and time.monotonic() < deadline:
            records.extend(await consumer.poll(timeout_ms=1000))
        records.extend(await consumer.poll(timeout_ms=300))  # nothing more than expected
    return records


def test_keyed_records_with_acks_all_come_back_in_per_key_order(cluster: LocalCluster) -> None:
    _create(cluster, "keyed", 3)
    keys = [f"customer-{i}".encode() for i in range(17)]

    async def test() -> tuple[list[RecordMetadata], list[ConsumerRecord]]:
        async with AsyncProducer(cluster.bootstrap, ProducerConfig(acks="all")) as producer:
            futures = [
                await producer.send("keyed", f"{keys[i % 17].decode()}#{i}".encode(), key=keys[i % 17],
                                    headers=[("seq", str(i).encode())])
                for i in range(3000)
            ]
            acks = list(await asyncio.gather(*futures))
        return acks, await _consume_all(cluster.bootstrap, "keyed", 3, 3000)

    acks, records = _run(test)
    assert len(records) == 3000
    by_position = {(r.partition, r.offset): r for r in records}
    for i, ack in enumerate(acks):
        assert ack.partition == partition_for_key(keys[i % 17], 3)
        record = by_position[(ack.partition, ack.offset)]
        assert record.key == keys[i % 17] and record.headers == (("seq", str(i).encode()),)
    per_key: dict[bytes, list[int]] = collections.defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        per_key[record.key].append(int(record.value.split(b"#")[1]))  # type: ignore[union-attr,index]
    assert all(sequence == sorted(sequence) for sequence in per_key.values())


def test_blocking_clients_and_offsets_by_timestamp(cluster: LocalCluster) -> None:
    _create(cluster, "blocking", 1)
    # acks=all: committed records are what ListOffsets and Fetch see (acks=1 may not be yet).
    with Producer(cluster.bootstrap, ProducerConfig(acks="all")) as producer:
        acks = [producer.send("blocking", f"v{i}".encode(), timestamp_ms=1_000_000 + 1000 * i)
                for i in range(10)]
        producer.flush()
        offsets = [future.result(timeout=60).offset for future in acks]
    assert offsets == list(range(10))
    with Consumer(cluster.bootstrap, ConsumerConfig(auto_offset_reset="none")) as consumer:
        consumer.assign([("blocking", 0)])
        assert consumer.seek_to_timestamp(("blocking", 0), 1_004_500) == 5
        records: list[ConsumerRecord] = []
        while len(records) < 5:
            records.extend(consumer.poll(timeout_ms=5000))
        assert [r.value for r in records] == [f"v{i}".encode() for i in range(5, 10)]
        assert [r.timestamp_ms for r in records] == [1_000_000 + 1000 * i for i in range(5, 10)]
        consumer.seek_to_end()
        assert consumer.position(("blocking", 0)) == 10
        consumer.seek(("blocking", 0), 11)
        with pytest.raises(errors.OffsetOutOfRange) as caught:
            consumer.poll(timeout_ms=5000)
        assert caught.value.high_watermark == 10


def test_admin_calls_and_their_precise_errors(cluster: LocalCluster) -> None:
    with Admin(cluster.bootstrap, ClientConfig(request_timeout_ms=30_000)) as admin:
        created = admin.create_topic("administered", 2, 3, {})
        assert [p.partition for p in created.partitions] == [0, 1] and created.replication_factor == 3
        assert "administered" in admin.list_topics()
        with pytest.raises(errors.TopicExists):
            admin.create_topic("administered", 2, 3)
        with pytest.raises(errors.InvalidTopicName):
            admin.create_topic("no spaces allowed", 1, 1)
        with pytest.raises(errors.InvalidRequest):
            admin.create_topic("zero-partitions", 0, 1)
        with pytest.raises(errors.ReplicationFactorTooLarge):
            admin.create_topic("too-replicated", 1, 4)
        grown = admin.alter_partitions("administered", 4)
        assert len(grown.partitions) == 4
        with pytest.raises(errors.PartitionCountDecrease, match="grow"):
            admin.alter_partitions("administered", 3)
        with pytest.raises(errors.UnknownTopic):
            admin.describe_topic("never-created")
        admin.delete_topic("administered")
        with pytest.raises(errors.UnknownTopic):
            admin.delete_topic("administered")
        cluster_view = admin.describe_cluster()
        assert [n.id for n in cluster_view.nodes] == [1, 2, 3] and cluster_view.controller in (1, 2, 3)


def test_bad_data_plane_requests_are_refused_precisely(cluster: LocalCluster) -> None:
    _create(cluster, "strict", 1)

    async def on_leader(connections: Connections, method: str, request: Any) -> Any:
        """Call the partition's leader, following NOT_LEADER hints (leaders move to balance load)."""
        address = cluster.address(cluster.leader("strict", 0))
        for _ in range(20):
            try:
                return await call(getattr(connections.broker(address), method), request, 30)
            except errors.NotLeader as exc:
                # Follow the hint (cluster.leader() itself waits until a leader is known).
                address = exc.leader_address or cluster.address(cluster.leader("strict", 0))
        raise AssertionError("the leader kept moving")

    async def test() -> None:
        connections = Connections()
        try:
            batch = bytearray(record_batch.encode_batch([record_batch.Record(b"k", b"v", (), 1)]))
            batch[-1] ^= 0xFF  # the CRC no longer matches
            with pytest.raises(errors.InvalidRecordBatch):
                await on_leader(connections, "Produce",
                                broker_pb2.ProduceRequest(topic="strict", partition=0, batch=bytes(batch)))
            with pytest.raises(errors.UnknownTopic):
                await on_leader(connections, "Fetch", broker_pb2.FetchRequest(topic="nope", max_bytes=1))
            with pytest.raises(errors.UnknownPartition):
                await on_leader(connections, "Fetch",
                                broker_pb2.FetchRequest(topic="strict", partition=7, max_bytes=1))
        finally:
            await connections.close()
        async with AsyncProducer(cluster.bootstrap) as producer:
            with pytest.raises(errors.BatchTooLarge):
                await producer.send("strict", b"x" * record_batch.batch_bytes_max)
        async with AsyncConsumer(cluster.bootstrap, ConsumerConfig(auto_offset_reset="none")) as consumer:
            consumer.assign([("strict", 0)])
            consumer.seek(("strict", 0), 5)
            with pytest.raises(errors.OffsetOutOfRange):
                await consumer.poll(timeout_ms=10_000)
            consumer.assign([("strict", 3)])
            with pytest.raises(errors.UnknownPartition):
                await consumer.poll(timeout_ms=10_000)

    _run(test)
    with Admin(cluster.bootstrap) as admin:
        assert admin.describe_topic("strict").partitions[0].high_watermark == 0  # nothing was stored


def test_killing_the_leader_while_producing_loses_no_acknowledged_record(tmp_path: Any) -> None:
    with LocalCluster(3, data_dir=tmp_path) as cluster:
        _create(cluster, "failover", 1)
        victim = cluster.leader("failover", 0)

        async def test() -> tuple[list[tuple[bytes, RecordMetadata]], int, float]:
            config = ProducerConfig(acks="all", linger_ms=2, delivery_timeout_ms=120_000)
            acked: list[tuple[bytes, RecordMetadata]] = []
            failed = 0
            async with AsyncProducer(cluster.bootstrap, config) as producer:
                pending: list[tuple[bytes, asyncio.Future[RecordMetadata]]] = []
                killed_at = 0.0
                for i in range(4000):
                    value = f"record-{i}".encode()
                    pending.append((value, await producer.send("failover", value, key=b"same-key")))
                    if i == 1500:
                        await asyncio.to_thread(cluster.kill, victim)
                        killed_at = time.monotonic()
                    if i % 100 == 0:  # pace the load: let the last send settle (ok or failed)
                        await asyncio.wait({pending[-1][1]})
                await producer.flush()
                for value, future in pending:
                    try:
                        acked.append((value, future.result()))
                    except errors.MillpondError:
                        failed += 1
                recovered_after = time.monotonic() - killed_at
            return acked, failed, recovered_after

        acked, failed, recovered_after = _run(test)
        new_leader = cluster.leader("failover", 0, timeout_s=30)
        assert new_leader != victim
        assert failed == 0, f"{failed} records failed"
        records = asyncio.run(_consume_all(cluster.bootstrap, "failover", 1, len(acked)))
        stored = {r.offset: r.value for r in records}
        for value, ack in acked:  # every acknowledged record is where its acknowledgement said
            assert stored.get(ack.offset) == value
        counts = collections.Counter(stored.values())
        assert set(counts) == {value for value, _ in acked}
        duplicates = sum(n - 1 for n in counts.values())
        print(f"failover: {len(acked)} acked, {duplicates} duplicates, {recovered_after:.1f} s after kill")
        assert duplicates < 1000, f"{duplicates} duplicates (retried batches)"  # at least once, bounded
        assert recovered_after < 60

        cluster.start_node(victim)  # recovers from its LMDB and catches up: back in the ISR
        def full_isr() -> bool:
            with Admin(cluster.bootstrap) as admin:
                return sorted(admin.describe_topic("failover").partitions[0].isr) == [1, 2, 3]

        wait_until(full_isr, 60, "the restarted node back in the ISR")
