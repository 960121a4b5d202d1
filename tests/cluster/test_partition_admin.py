"""Partition-level admin on real nodes: leadership transfer, replica reassignment, replica checksums.

These are the levers of the chaos suite's leader-transfer and membership
nemeses and of its replica-divergence check, so they are tested here first.
"""

from __future__ import annotations

import pytest
from cluster_helpers import admin, wait_for

from millpond.client import (
    Consumer,
    ConsumerConfig,
    InvalidRequest,
    OffsetOutOfRange,
    Producer,
    ProducerConfig,
    ReplicaNotHosted,
    UnknownPartition,
)


def _produce(bootstrap: str, topic: str, values: list[str]) -> None:
    """One record at a time: with several batches in flight, a retried batch (at-least-once, no
    idempotence yet) could land after a later one, and these tests compare exact order."""
    with Producer(bootstrap, ProducerConfig(acks="all", linger_ms=0)) as producer:
        for value in values:
            producer.send(topic, value.encode(), partition=0).result(timeout=30)


def _read_all(bootstrap: str, topic: str, expected: int) -> list[str]:
    values: list[str] = []
    with Consumer(bootstrap, ConsumerConfig()) as consumer:
        consumer.assign([(topic, 0)])
        consumer.seek_to_beginning()

        def caught_up() -> bool:
            values.extend(r.value.decode() for r in consumer.poll(timeout_ms=500))
            return len(values) >= expected

        wait_for(caught_up, 60, f"{expected} records of {topic}")
    return values


def test_transfer_leadership_moves_the_leader_and_rejects_non_voters(make_cluster) -> None:
    cluster = make_cluster(3)
    with admin(cluster) as client:
        client.create_topic("moves", 1, 3)
        leader = cluster.leader("moves", 0)
        target = next(n for n in (1, 2, 3) if n != leader)
        wait_for(lambda: len(client.describe_topic("moves").partitions[0].isr) == 3, 30, "full ISR")

        def transferred() -> bool:
            new_leader, _ = client.transfer_leadership("moves", 0, target)
            return new_leader == target

        wait_for(transferred, 30, f"leadership of moves/0 on node {target}")
        _produce(cluster.bootstrap, "moves", ["after-transfer"])
        assert _read_all(cluster.bootstrap, "moves", 1) == ["after-transfer"]

        with pytest.raises(InvalidRequest, match="not a voter"):
            client.transfer_leadership("moves", 0, 9)
        with pytest.raises(UnknownPartition):
            client.transfer_leadership("moves", 4, target)


def test_reassignment_moves_a_replica_and_keeps_every_record(make_cluster) -> None:
    cluster = make_cluster(3)
    with admin(cluster) as client:
        client.create_topic("moving", 1, 2)
        before = client.describe_topic("moving").partitions[0].replicas
        spare = next(n for n in (1, 2, 3) if n not in before)
        values = [f"v{i}" for i in range(50)]
        _produce(cluster.bootstrap, "moving", values)

        target = (before[0], spare)
        client.reassign_partition("moving", 0, target)
        wait_for(lambda: client.describe_topic("moving").partitions[0].replicas == target, 90,
                 f"replicas of moving/0 = {target}")
        gone = before[1]

        def not_hosted() -> bool:
            try:
                client.describe_replica(cluster.address(gone), "moving", 0)
            except ReplicaNotHosted:
                return True
            return False

        wait_for(not_hosted, 60, f"node {gone} dropped its replica of moving/0")
        assert _read_all(cluster.bootstrap, "moving", len(values)) == values

        def same_checksums() -> bool:
            replicas = [client.describe_replica(cluster.address(n), "moving", 0, len(values)) for n in target]
            return all(r.checksum == replicas[0].checksum and r.records == len(values) for r in replicas)

        wait_for(same_checksums, 30, "equal checksums on the new replicas")

        with pytest.raises(InvalidRequest, match="replication factor"):
            client.reassign_partition("moving", 0, [1, 2, 3])
        with pytest.raises(InvalidRequest, match="repeat"):
            client.reassign_partition("moving", 0, [spare, spare])
        with pytest.raises(InvalidRequest, match="unknown nodes"):
            client.reassign_partition("moving", 0, [spare, 7])


def test_describe_replica_checksums_agree_and_bad_input_is_refused(make_cluster) -> None:
    cluster = make_cluster(3)
    with admin(cluster) as client:
        client.create_topic("sums", 1, 3)
        _produce(cluster.bootstrap, "sums", [f"r{i}" for i in range(30)])

        def replicas_at_30() -> list:
            described = [client.describe_replica(cluster.address(n), "sums", 0) for n in (1, 2, 3)]
            return described if all(r.high_watermark == 30 for r in described) else []

        replicas = wait_for(replicas_at_30, 30, "every replica at high watermark 30")
        assert {r.checksum for r in replicas} == {replicas[0].checksum}
        assert all(r.checksum_end_offset == 30 and r.records == 30 for r in replicas)
        assert sorted(r.role for r in replicas) == ["follower", "follower", "leader"]

        partial = client.describe_replica(cluster.address(1), "sums", 0, upto_offset=0)
        assert partial.records == 0 and partial.checksum != replicas[0].checksum
        with pytest.raises(OffsetOutOfRange):
            client.describe_replica(cluster.address(1), "sums", 0, upto_offset=31)
        with pytest.raises(UnknownPartition):
            client.describe_replica(cluster.address(1), "sums", 1)
