"""Retention on real nodes: the log start moves on every replica, readers see the new bounds.

Records are produced with timestamps an hour old, so retention by time acts at
the cleaner's next round (``cleaner_interval_ms``) without the test waiting for
a clock; every wait polls a condition.
"""

from __future__ import annotations

import time

import grpc
import pytest
from cluster_helpers import admin, broker_stub, wait_for

from millpond import errors
from millpond.client import (
    Consumer,
    ConsumerConfig,
    InvalidConfig,
    OffsetOutOfRange,
    Producer,
    ProducerConfig,
    ReplicaDescription,
)
from millpond.testing.cluster import LocalCluster
from millpond.v1 import broker_pb2 as pb

HOUR_MS = 3_600_000


def _produce_one_batch_each(bootstrap: str, topic: str, values: list[bytes],
                            timestamps: list[int | None]) -> None:
    """One record per batch (each send waits for its acknowledgement)."""
    with Producer(bootstrap, ProducerConfig(acks="all", linger_ms=0)) as producer:
        for value, timestamp in zip(values, timestamps, strict=True):
            producer.send(topic, value, key=b"k", timestamp_ms=timestamp, partition=0).result(timeout=30)


def _replicas(cluster: LocalCluster, topic: str) -> list[ReplicaDescription]:
    with admin(cluster) as client:
        return [client.describe_replica(cluster.address(n), topic, 0) for n in sorted(cluster.nodes)]


def _identical(cluster: LocalCluster, topic: str, log_start: int, high_watermark: int) -> bool:
    replicas = _replicas(cluster, topic)
    return all(r.log_start_offset == log_start and r.high_watermark == high_watermark
               and r.checksum == replicas[0].checksum for r in replicas)


def test_retention_by_time_advances_the_log_start_everywhere_and_readers_follow(make_cluster) -> None:
    cluster = make_cluster(3)
    with admin(cluster) as client:
        client.create_topic("aged", 1, 3, {"retention_ms": "60000"})
    now = int(time.time() * 1000)
    fresh = [now + 1000 * i for i in range(5)]
    _produce_one_batch_each(cluster.bootstrap, "aged", [b"old-%d" % i for i in range(20)],
                            [now - HOUR_MS + i for i in range(20)])
    _produce_one_batch_each(cluster.bootstrap, "aged", [b"new-%d" % i for i in range(5)], list(fresh))

    wait_for(lambda: _identical(cluster, "aged", 20, 25), 60,
             "log start 20 and equal checksums on every replica of aged/0")
    assert all(r.batches == 5 and r.records == 5 for r in _replicas(cluster, "aged"))

    # A fetch below the log start answers OFFSET_OUT_OF_RANGE with the bounds.
    channel, stub = broker_stub(cluster.address(cluster.leader("aged", 0)))
    with channel:
        with pytest.raises(grpc.RpcError) as failure:
            stub.Fetch(pb.FetchRequest(topic="aged", partition=0, offset=3, max_bytes=1 << 20), timeout=10)
        error = errors.from_rpc_error(failure.value)
        assert isinstance(error, OffsetOutOfRange)
        assert (error.log_start_offset, error.high_watermark) == (20, 25)
        # ListOffsets by timestamp still finds the first record at or after it.
        found = stub.ListOffsets(pb.ListOffsetsRequest(topic="aged", partition=0, timestamp_ms=fresh[2]),
                                 timeout=10)
        assert (found.offset, found.timestamp_ms) == (22, fresh[2])
        oldest = stub.ListOffsets(pb.ListOffsetsRequest(topic="aged", partition=0, timestamp_ms=0),
                                  timeout=10)
        assert oldest.offset == 20

    # A consumer positioned below the log start is reset to it (auto_offset_reset=earliest) ...
    with Consumer(cluster.bootstrap, ConsumerConfig(auto_offset_reset="earliest")) as consumer:
        consumer.assign([("aged", 0)])
        consumer.seek(("aged", 0), 0)
        read: list[tuple[int, bytes | None]] = []
        wait_for(lambda: read.extend((r.offset, r.value) for r in consumer.poll(timeout_ms=500))
                 or len(read) >= 5, 30, "five records after the reset")
        assert read == [(20 + i, b"new-%d" % i) for i in range(5)]
    # ... and one that may not reset is told so.
    with Consumer(cluster.bootstrap, ConsumerConfig(auto_offset_reset="none")) as strict:
        strict.assign([("aged", 0)])
        strict.seek(("aged", 0), 0)

        def refused() -> bool:
            try:
                strict.poll(timeout_ms=500)
            except OffsetOutOfRange as exc:
                return exc.log_start_offset == 20
            return False

        wait_for(refused, 30, "OffsetOutOfRange for a consumer with auto_offset_reset=none")


def test_retention_by_size_and_a_replica_that_was_down_catches_up_from_a_snapshot(make_cluster) -> None:
    cluster = make_cluster(3)
    with admin(cluster) as client:
        client.create_topic("sized", 1, 3, {"retention_bytes": "2000"})
        leader = cluster.leader("sized", 0)
        wait_for(lambda: len(client.describe_topic("sized").partitions[0].isr) == 3, 30, "full ISR")
    follower = next(n for n in sorted(cluster.nodes) if n != leader)
    cluster.kill(follower)
    values = [b"value-%03d-" % i + b"x" * 100 for i in range(60)]
    _produce_one_batch_each(cluster.bootstrap, "sized", values, [None] * len(values))
    batch_bytes = 64 + 24 + 1 + len(values[0])

    def trimmed_on_the_live_replicas() -> bool:
        live = [r for r in _replicas_alive(cluster, "sized", follower)]
        return all(r.log_start_offset > 40 and r.high_watermark == 60 for r in live)

    wait_for(trimmed_on_the_live_replicas, 60, "retention by size on the live replicas")
    # The leader's Raft log now starts after the follower's last entry: it must get a snapshot.
    cluster.start_node(follower)
    kept = 2000 // batch_bytes
    wait_for(lambda: _identical(cluster, "sized", 60 - kept, 60), 90,
             "every replica (the restarted one too) at log start 60 - kept, with equal checksums")
    with Consumer(cluster.bootstrap, ConsumerConfig(auto_offset_reset="earliest")) as consumer:
        consumer.assign([("sized", 0)])
        consumer.seek_to_beginning()
        read: list[bytes | None] = []
        wait_for(lambda: read.extend(r.value for r in consumer.poll(timeout_ms=500)) or len(read) >= kept,
                 30, f"{kept} records from the beginning")
        assert read == values[60 - kept:]


def _replicas_alive(cluster: LocalCluster, topic: str, down: int) -> list[ReplicaDescription]:
    with admin(cluster) as client:
        return [client.describe_replica(cluster.address(n), topic, 0) for n in sorted(cluster.nodes)
                if n != down]


def test_bad_retention_and_compaction_configs_are_refused(make_cluster) -> None:
    refused = [
        ({"cleanup_policy": "bogus"}, "cleanup_policy: 'bogus' is not one of delete, compact"),
        ({"retention_ms": "-5"}, "retention_ms: -5 is out of range"),
        ({"retention_bytes": "0"}, "retention_bytes: 0 is out of range"),
        ({"delete_retention_ms": "-1"}, "delete_retention_ms: -1 is out of range"),
        ({"min_compaction_lag_ms": "soon"}, "min_compaction_lag_ms: 'soon' is not an integer"),
    ]
    cluster = make_cluster(1)
    with admin(cluster) as client:
        for config, message in refused:
            with pytest.raises(InvalidConfig, match=message):
                client.create_topic("refused", 1, 1, config)
        assert "refused" not in client.list_topics()
