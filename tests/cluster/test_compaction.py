"""Log compaction on real nodes: latest value per key, tombstones expire, replicas stay identical."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import grpc
import pytest
from cluster_helpers import admin, broker_stub, produce_raw, wait_for

from millpond import errors
from millpond.client import (
    Consumer,
    ConsumerConfig,
    Producer,
    ProducerConfig,
    RecordKeyRequired,
    ReplicaDescription,
)
from millpond.record_batch import Record, encode_batch
from millpond.testing.cluster import LocalCluster

Row = tuple[int, bytes | None, bytes | None]


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> list[int]:
    """Produce ``(key, value)`` records to partition 0, each as its own batch; return their offsets."""
    with Producer(bootstrap, ProducerConfig(acks="all", linger_ms=0)) as producer:
        return [producer.send(topic, value, key=key, partition=0).result(timeout=30).offset
                for key, value in records]


def _produce_quickly(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> list[int]:
    """Produce ``(key, value)`` records to partition 0 in a few batches at once; return their offsets.

    Quick, so the cleaner's first pass sees them all: one-by-one they would be compacted by several
    passes, and the last tail can wait up to ``compaction_dirty_wait_ms_max``."""
    with Producer(bootstrap, ProducerConfig(acks="all", linger_ms=200)) as producer:
        futures = [producer.send(topic, value, key=key, partition=0) for key, value in records]
        producer.flush()
        return [future.result(timeout=30).offset for future in futures]


def _read_from_beginning(bootstrap: str, topic: str) -> list[Row]:
    """Every record from the log start to the high watermark, as (offset, key, value)."""
    rows: list[Row] = []
    with Consumer(bootstrap, ConsumerConfig(auto_offset_reset="earliest")) as consumer:
        consumer.assign([(topic, 0)])
        consumer.seek_to_beginning()
        end = consumer.offset_for((topic, 0), "latest")

        def at_end() -> bool:
            rows.extend((r.offset, r.key, r.value) for r in consumer.poll(timeout_ms=300))
            return consumer.position((topic, 0)) >= end

        wait_for(at_end, 30, f"{topic} read up to offset {end}")
    return rows


def _replicas(cluster: LocalCluster, topic: str) -> list[ReplicaDescription]:
    with admin(cluster) as client:
        return [client.describe_replica(cluster.address(n), topic, 0) for n in sorted(cluster.nodes)]


def _identical(cluster: LocalCluster, topic: str, records: int) -> list[ReplicaDescription]:
    """Every replica at the same high watermark with ``records`` records and the same checksum."""
    replicas = _replicas(cluster, topic)
    same = len({(r.checksum, r.high_watermark, r.checksum_end_offset, r.records) for r in replicas}) == 1
    return replicas if same and replicas[0].records == records else []


def test_compaction_keeps_the_latest_value_per_key_then_expires_tombstones_on_every_replica(
        make_cluster) -> None:
    cluster = make_cluster(3)
    with admin(cluster) as client:
        client.create_topic("accounts", 1, 3, {"cleanup_policy": "compact", "delete_retention_ms": "15000",
                                               "min_compaction_lag_ms": "0"})
    updates = [(b"k%d" % (i % 8), b"v%d" % i) for i in range(96)]  # 8 keys, 12 updates each
    workload = [*updates, (b"k3", None), (b"k5", b"final")]
    offsets = _produce_quickly(cluster.bootstrap, "accounts", workload)
    assert offsets == list(range(98))
    latest: dict[bytes, Row] = {}
    for offset, (key, value) in zip(offsets, workload, strict=True):
        latest[key] = (offset, key, value)
    expected = sorted(latest.values())  # records keep their offsets: these are the produced ones
    assert (96, b"k3", None) in expected  # the tombstone, kept for now

    wait_for(lambda: _read_from_beginning(cluster.bootstrap, "accounts") == expected, 60,
             "exactly the latest record per key, in offset order, tombstone included")
    replicas = wait_for(lambda: _identical(cluster, "accounts", 8), 30,
                        "identical compacted replicas (DescribeReplica checksums)")
    assert all(r.high_watermark == 98 for r in replicas)

    without_tombstone = [row for row in expected if row[2] is not None]
    wait_for(lambda: _read_from_beginning(cluster.bootstrap, "accounts") == without_tombstone, 60,
             "the tombstone gone once delete_retention_ms passed")
    wait_for(lambda: _identical(cluster, "accounts", 7), 30, "identical replicas without the tombstone")


def test_a_keyless_record_on_a_compacted_topic_is_refused_and_nothing_is_stored(make_cluster) -> None:
    cluster = make_cluster(1)
    with admin(cluster) as client:
        client.create_topic("keyed", 1, 1, {"cleanup_policy": "compact,delete"})
    with Producer(cluster.bootstrap, ProducerConfig(acks="all", linger_ms=0)) as producer:
        with pytest.raises(RecordKeyRequired, match=r"has no key.*compacted"):
            producer.send("keyed", b"no key", partition=0).result(timeout=30)
    channel, stub = broker_stub(cluster.address(1))
    with channel:
        mixed = encode_batch([Record(b"a", b"1", (), 1), Record(None, b"2", (), 1)])
        with pytest.raises(grpc.RpcError) as failure:
            produce_raw(stub, "keyed", 0, mixed)
        error = errors.from_rpc_error(failure.value)
        assert isinstance(error, RecordKeyRequired)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "record 1 of the batch has no key" in str(error)
        assert produce_raw(stub, "keyed", 0, encode_batch([Record(b"a", b"1", (), 1)])).base_offset == 0
    assert [(r.high_watermark, r.records) for r in _replicas(cluster, "keyed")] == [(1, 1)]


def test_a_replica_that_was_down_gets_compacted_batches_and_ends_identical(make_cluster) -> None:
    cluster = make_cluster(3)
    with admin(cluster) as client:
        client.create_topic("ledger", 1, 3, {"cleanup_policy": "compact", "delete_retention_ms": "0"})
        leader = cluster.leader("ledger", 0)
        wait_for(lambda: len(client.describe_topic("ledger").partitions[0].isr) == 3, 30, "full ISR")
    _produce(cluster.bootstrap, "ledger", [(b"a%d" % (i % 5), b"first-%d" % i) for i in range(40)])
    follower = next(n for n in sorted(cluster.nodes) if n != leader)
    cluster.kill(follower)
    _produce(cluster.bootstrap, "ledger", [(b"a%d" % (i % 5), b"second-%d" % i) for i in range(40)])
    _produce(cluster.bootstrap, "ledger", [(b"a0", None)])  # expires at once (delete_retention_ms=0)

    def leader_compacted() -> bool:
        with admin(cluster) as client:
            return client.describe_replica(cluster.address(leader), "ledger", 0).records == 4

    wait_for(leader_compacted, 90, "the leader's replica compacted to one record per live key")
    # The restarted replica receives batches the leader already rewrote next to ones it holds as
    # produced, and applies every COMPACT record itself: the bytes must come out the same.
    cluster.start_node(follower)
    replicas = wait_for(lambda: _identical(cluster, "ledger", 4), 90,
                        "identical replicas after the restarted one caught up")
    assert {r.high_watermark for r in replicas} == {81}
    rows = _read_from_beginning(cluster.bootstrap, "ledger")
    assert [(key, value) for _, key, value in rows] == \
        [(b"a%d" % k, b"second-%d" % (35 + k)) for k in (1, 2, 3, 4)]


def test_the_event_sourcing_example_rebuilds_the_accounts(make_cluster) -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "event_sourcing.py"
    spec = importlib.util.spec_from_file_location("event_sourcing_example", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    cluster = make_cluster(1)
    view = example.main(cluster.bootstrap, "bank")
    assert view == {"alice": {"owner": "Alice", "balance": 120}, "bob": {"owner": "Bob", "balance": 5}}
    assert len(_read_from_beginning(cluster.bootstrap, "bank")) == 2
