"""Topic growth and broker-side validation on a real 3-node cluster."""

from __future__ import annotations

import time

import grpc
import pytest
from cluster_helpers import admin, broker_stub, produce_raw, wait_for

from millpond import errors, limits
from millpond.client import Consumer, ConsumerConfig, Producer, ProducerConfig
from millpond.partitioner import partition_for_key
from millpond.record_batch import Record, encode_batch
from millpond.v1 import broker_pb2 as pb


def test_growing_partitions_keeps_data_and_shrinking_is_refused(make_cluster) -> None:
    cluster = make_cluster(3)
    keys = [b"key-%d" % i for i in range(40)]
    with admin(cluster) as client:
        client.create_topic("grow", partitions=2, replication_factor=3)
        wait_for(lambda: all(p.leader for p in client.describe_topic("grow").partitions), 30, "leaders")
        with Producer(cluster.bootstrap, ProducerConfig(acks="all")) as producer:
            acked = {key: producer.send("grow", b"old", key=key).result(60) for key in keys}
        for key, meta in acked.items():
            assert meta.partition == partition_for_key(key, 2)

        grown = client.alter_partitions("grow", 4)
        assert len(grown.partitions) == 4
        with pytest.raises(errors.PartitionCountDecrease, match="can only grow"):
            client.alter_partitions("grow", 3)
        with pytest.raises(errors.PartitionCountDecrease, match="can only grow"):
            client.alter_partitions("grow", 4)
        wait_for(lambda: all(p.leader for p in client.describe_topic("grow").partitions), 30, "leaders")

    # Old records stay where they were; keys now hash over 4 partitions (documented:
    # growing a topic remaps keys, as in Kafka).
    with Consumer(cluster.bootstrap, ConsumerConfig(auto_offset_reset="earliest")) as consumer:
        consumer.assign([("grow", 0), ("grow", 1)])
        seen: dict[bytes, int] = {}
        deadline = time.monotonic() + 60
        while len(seen) < len(keys) and time.monotonic() < deadline:
            for record in consumer.poll(timeout_ms=500):
                seen[record.key] = record.partition
    assert seen == {key: meta.partition for key, meta in acked.items()}
    with Producer(cluster.bootstrap, ProducerConfig(acks="all")) as producer:
        for key in keys[:10]:
            assert producer.send("grow", b"new", key=key).result(60).partition == partition_for_key(key, 4)


def test_the_broker_refuses_bad_batches_and_offsets_and_stores_nothing(make_cluster) -> None:
    cluster = make_cluster(3)
    with admin(cluster) as client:
        client.create_topic("strict", partitions=1, replication_factor=3)
    leader = cluster.leader("strict", 0)
    channel, stub = broker_stub(cluster.address(leader))
    with channel:
        good = encode_batch([Record(b"k", b"v")], timestamp_ms=int(time.time() * 1000))  # retention keeps it
        produce_raw(stub, "strict", 0, good)

        def refused(batch: bytes) -> grpc.RpcError:
            with pytest.raises(grpc.RpcError) as caught:
                produce_raw(stub, "strict", 0, batch)
            return caught.value

        corrupt = bytearray(good)
        corrupt[-1] ^= 0x01
        error = errors.from_rpc_error(refused(bytes(corrupt)))
        assert isinstance(error, errors.CorruptRecordBatch) and error.retriable
        assert "crc" in str(error).lower()

        oversized = b"\0" * (limits.batch_bytes_max + 1)
        error = errors.from_rpc_error(refused(oversized))
        assert isinstance(error, errors.BatchTooLarge), error
        assert str(limits.batch_bytes_max) in str(error)

        error = errors.from_rpc_error(refused(b"not a batch"))
        assert isinstance(error, errors.InvalidRecordBatch), error

        for offset, expected in ((-1, errors.InvalidRequest), (2, errors.OffsetOutOfRange)):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Fetch(pb.FetchRequest(topic="strict", partition=0, offset=offset), timeout=10)
            assert isinstance(errors.from_rpc_error(caught.value), expected)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Fetch(pb.FetchRequest(topic="strict", partition=0, offset=2), timeout=10)
        out_of_range = errors.from_rpc_error(caught.value)
        assert isinstance(out_of_range, errors.OffsetOutOfRange)
        assert (out_of_range.log_start_offset, out_of_range.high_watermark) == (0, 1)

        latest = stub.ListOffsets(pb.ListOffsetsRequest(topic="strict", partition=0, latest=True),
                                  timeout=10)
        assert latest.offset == 1  # only the good batch was stored
