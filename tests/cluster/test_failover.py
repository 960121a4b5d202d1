"""Leader failure, follower failure and node loss on a real 3-4 node cluster."""

from __future__ import annotations

import time
from collections import Counter

import grpc
from cluster_helpers import admin, broker_stub, produce_raw, wait_for

from millpond.record_batch import Record, decode_batch, encode_batch, iter_batches
from millpond.testing.cluster import LocalCluster
from millpond.v1 import broker_pb2 as pb


def read_all(cluster: LocalCluster, node: int, topic: str, partition: int) -> list[tuple[int, bytes]]:
    """(offset, value) of every committed record, fetched from ``node`` (which must lead)."""
    channel, stub = broker_stub(cluster.address(node))
    out: list[tuple[int, bytes]] = []
    with channel:
        offset = 0
        while True:
            response = stub.Fetch(pb.FetchRequest(topic=topic, partition=partition, offset=offset,
                                                  max_bytes=1 << 20), timeout=10)
            for view in iter_batches(response.batches):
                _, records = decode_batch(bytes(view))
                out.extend((r.offset, r.value) for r in records if r.offset >= offset)
            offset = out[-1][0] + 1 if out else 0
            if offset >= response.high_watermark:
                return out


def test_leader_killed_while_producing_keeps_every_acknowledged_record(make_cluster) -> None:
    cluster = make_cluster(3)
    with admin(cluster) as client:
        client.create_topic("events", partitions=1, replication_factor=3)
    first_leader = cluster.leader("events", 0)
    acked: dict[bytes, int] = {}
    attempted: set[bytes] = set()
    leader, killed_at, recovered_after = first_leader, 0.0, -1.0
    channel, stub = broker_stub(cluster.address(leader))
    deadline = time.monotonic() + 120
    sequence = 0
    while len(acked) < 400 and time.monotonic() < deadline:
        value = b"value-%06d" % sequence
        sequence += 1
        attempted.add(value)
        batch = encode_batch([Record(key=b"k", value=value)], timestamp_ms=int(time.time() * 1000))
        try:
            response = produce_raw(stub, "events", 0, batch, timeout_s=3)
        except grpc.RpcError:
            # Indeterminate (may or may not be appended): never retried, so it may appear
            # at most once. Find the current leader and go on.
            channel.close()
            dead = first_leader if killed_at else 0
            leader = wait_for(lambda dead=dead: _live_leader(cluster, dead), 60, "a live leader")
            channel, stub = broker_stub(cluster.address(leader))
            continue
        acked[value] = response.base_offset
        if killed_at and recovered_after < 0:
            recovered_after = time.monotonic() - killed_at
        if len(acked) == 150 and not killed_at:
            cluster.kill(first_leader)
            killed_at = time.monotonic()
    channel.close()
    assert killed_at, "the leader was never killed"
    assert len(acked) >= 400, f"only {len(acked)} records acknowledged"
    assert 0 <= recovered_after < 30, f"writes resumed {recovered_after:.1f} s after the kill"

    new_leader = cluster.leader("events", 0)
    assert new_leader != first_leader
    stored = read_all(cluster, new_leader, "events", 0)
    counts = Counter(value for _, value in stored)
    offsets = dict((value, offset) for offset, value in stored)
    for value, offset in acked.items():
        assert counts[value] == 1, f"acknowledged {value!r} stored {counts[value]} times"
        assert offsets[value] == offset, f"{value!r} acknowledged at {offset}, stored at {offsets[value]}"
    assert set(counts) <= attempted
    assert max(counts.values()) == 1
    assert [offset for offset, _ in stored] == list(range(len(stored)))

    # The killed node restarts from its LMDB files, catches up, and (as the preferred
    # replica) takes leadership back: then it serves the same log.
    cluster.start_node(first_leader)
    with admin(cluster) as client:
        wait_for(lambda: first_leader in client.describe_topic("events").partitions[0].isr, 60,
                 "the restarted node back in the ISR")
    if _preferred(cluster, "events") == first_leader:
        wait_for(lambda: cluster.leader("events", 0) == first_leader, 60,
                 "leadership back on the preferred replica")
        assert read_all(cluster, first_leader, "events", 0) == stored


def test_follower_down_shrinks_the_isr_and_rejoins(make_cluster) -> None:
    cluster = make_cluster(3)
    with admin(cluster) as client:
        client.create_topic("isr", partitions=1, replication_factor=3)
        leader = cluster.leader("isr", 0)
        follower = next(n for n in (1, 2, 3) if n != leader)
        wait_for(lambda: len(client.describe_topic("isr").partitions[0].isr) == 3, 30, "full ISR")
        cluster.kill(follower)
        wait_for(lambda: follower not in client.describe_topic("isr").partitions[0].isr, 60,
                 "the ISR to drop the dead follower")
        channel, stub = broker_stub(cluster.address(cluster.leader("isr", 0)))
        with channel:
            for i in range(50):  # a majority still commits
                now_ms = int(time.time() * 1000)  # an ancient timestamp would fall to retention
                produce_raw(stub, "isr", 0, encode_batch([Record(None, b"x%d" % i)], timestamp_ms=now_ms))
        cluster.start_node(follower)
        wait_for(lambda: follower in client.describe_topic("isr").partitions[0].isr, 60,
                 "the follower back in the ISR")
        described = client.describe_topic("isr").partitions[0]
        assert described.high_watermark == 50


def test_node_gone_past_the_replacement_delay_is_replaced(make_cluster) -> None:
    cluster = make_cluster(4, ["--replacement-delay-ms", "3000"])
    with admin(cluster) as client:
        client.create_topic("moved", partitions=2, replication_factor=3)
        wait_for(lambda: all(p.leader for p in client.describe_topic("moved").partitions), 30, "leaders")
        victim = client.describe_topic("moved").partitions[0].replicas[-1]
        channel, stub = broker_stub(cluster.address(cluster.leader("moved", 0)))
        with channel:
            for i in range(20):
                now_ms = int(time.time() * 1000)  # an ancient timestamp would fall to retention
                produce_raw(stub, "moved", 0, encode_batch([Record(None, b"y%d" % i)], timestamp_ms=now_ms))
        cluster.kill(victim)

        def restored() -> bool:
            for partition in client.describe_topic("moved").partitions:
                if victim in partition.replicas or len(partition.replicas) != 3:
                    return False
                if sorted(partition.isr) != sorted(partition.replicas):
                    return False
            return True

        wait_for(restored, 120, "replication factor 3 restored without the dead node")
        leader = cluster.leader("moved", 0)
        values = [value for _, value in read_all(cluster, leader, "moved", 0)]
        assert values == [b"y%d" % i for i in range(20)]


def _live_leader(cluster: LocalCluster, dead: int) -> int:
    leader = cluster.leader("events", 0)
    return leader if leader != dead and cluster.nodes[leader].running else 0


def _preferred(cluster: LocalCluster, topic: str) -> int:
    with admin(cluster) as client:
        return client.describe_topic(topic).partitions[0].replicas[0]
