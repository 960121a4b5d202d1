"""The metadata image: apply rules, deterministic rejections, indexes, snapshots and determinism."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from millpond.controller.ids import METADATA_GROUP, group_id, split_group
from millpond.controller.records import (
    AddPartitions,
    ChangeReplicas,
    CreateTopic,
    DeleteTopic,
    FenceNode,
    MetadataRecord,
    ReassignReplicas,
    RegisterNode,
    SetPartitionLeader,
    UnfenceNode,
    encode,
)
from millpond.controller.state import MetadataImage
from millpond.errors import (
    InvalidRequest,
    PartitionCountDecrease,
    TopicExists,
    UnknownPartition,
    UnknownTopic,
)
from millpond.invariant import InvariantViolation

G1 = group_id(1, 0)
G2 = group_id(1, 1)

HISTORY: list[MetadataRecord] = [
    RegisterNode(1, "h1:1", 11), RegisterNode(2, "h2:1", 12), RegisterNode(3, "h3:1", 13),
    RegisterNode(4, "h4:1", 14),
    UnfenceNode(1, 1), UnfenceNode(2, 1), UnfenceNode(3, 1), UnfenceNode(4, 1),
    CreateTopic("zeta", ((1, 2, 3), (2, 3, 1)), {"retention_ms": "1000"}),
    CreateTopic("alpha", ((3,),), {}),
    SetPartitionLeader(G1, 1, 4, (1, 2, 3)),
    SetPartitionLeader(G2, 2, 2, (2, 3)),
    CreateTopic("zeta", ((4,),), {}),  # rejected: exists
    AddPartitions(1, 2, ((3, 1, 2), (1, 2, 4))),
    FenceNode(3, 1),
    ReassignReplicas(G1, (1, 2, 4)),
    DeleteTopic(2),
    CreateTopic("beta", ((2, 4),), {"cleanup_policy": "compact"}),
    RegisterNode(2, "h2:2", 22),
    SetPartitionLeader(G1, 1, 5, (1, 4)),
    ChangeReplicas(G1, (1, 2, 4)),
]


def build(history: list[MetadataRecord] = HISTORY) -> MetadataImage:
    image = MetadataImage()
    for index, record in enumerate(history, start=1):
        image.apply(index, encode(record))
    return image


def registered(*node_ids: int, live: bool = True) -> MetadataImage:
    image = MetadataImage()
    for node_id in node_ids:
        image.apply_record(image.applied_index + 1, RegisterNode(node_id, f"h{node_id}:1", 1))
        if live:
            image.apply_record(image.applied_index + 1, UnfenceNode(node_id, 1))
    return image


def step(image: MetadataImage, record: MetadataRecord):  # type: ignore[no-untyped-def]
    return image.apply(image.applied_index + 1, encode(record))


# --- ids ----------------------------------------------------------------------------------


def test_group_ids() -> None:
    assert group_id(1, 0) == 1 << 20
    assert group_id(3, 5) == 3 << 20 | 5
    assert split_group(group_id(7, 1023)) == (7, 1023)
    with pytest.raises(ValueError):
        group_id(0, 0)
    with pytest.raises(ValueError):
        group_id(1, 1 << 20)
    with pytest.raises(ValueError):
        split_group(METADATA_GROUP)


# --- determinism and snapshots --------------------------------------------------------------


def test_same_records_give_identical_snapshots() -> None:
    assert build().snapshot() == build().snapshot()


def test_restore_gives_the_same_image() -> None:
    image = build()
    restored = MetadataImage.restore(image.snapshot())
    assert restored.snapshot() == image.snapshot()
    assert restored.applied_index == image.applied_index == len(HISTORY)
    assert restored.nodes() == image.nodes()
    assert restored.topics() == image.topics()
    for topic in image.topics():
        assert restored.partitions(topic.topic_id) == image.partitions(topic.topic_id)
    for node in image.nodes():
        assert restored.groups_hosted_by(node.node_id) == image.groups_hosted_by(node.node_id)
        assert restored.groups_led_by(node.node_id) == image.groups_led_by(node.node_id)
    assert restored.statistics() == image.statistics()
    # And both go on identically.
    more = [CreateTopic("gamma", ((1, 4),), {}), FenceNode(1, 1), DeleteTopic(1)]
    for record in more:
        assert step(restored, record) == step(image, record)
    assert restored.snapshot() == image.snapshot()


def test_snapshot_bytes_do_not_depend_on_hash_seeds() -> None:
    # Same history in processes with different string hashing: same bytes.
    script = (
        "import hashlib, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import test_metadata_image\n"
        "print(hashlib.sha256(test_metadata_image.build().snapshot()).hexdigest())\n"
    )
    digests = set()
    for seed in ("1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                             check=True)
        digests.add(out.stdout.strip())
    assert digests == {hashlib.sha256(build().snapshot()).hexdigest()}


def test_restore_of_garbage_stops_the_node() -> None:
    with pytest.raises(InvariantViolation, match="unknown metadata snapshot format"):
        MetadataImage.restore(b"\x09{}")
    with pytest.raises(InvariantViolation, match="cannot be read"):
        MetadataImage.restore(b"\x01{\"applied_index\": 1}")


def test_entries_apply_in_order_only() -> None:
    image = registered(1)
    image.mark_applied(5)
    assert image.applied_index == 5
    with pytest.raises(InvariantViolation, match="in order"):
        image.apply(5, encode(RegisterNode(2, "h:1", 1)))
    with pytest.raises(InvariantViolation, match="in order"):
        image.mark_applied(3)


# --- nodes ----------------------------------------------------------------------------------


def test_registration_assigns_epochs_and_fences_until_caught_up() -> None:
    image = MetadataImage()
    first = step(image, RegisterNode(1, "h:1", 100))
    assert first.ok and first.node_epoch == 1
    node = image.node(1)
    assert node is not None and node.fenced and node.fence_index == 1
    # A retried registration of the same process changes nothing.
    again = step(image, RegisterNode(1, "h:1", 100))
    assert again.ok and again.node_epoch == 1 and image.node(1) == node
    # A restart (new incarnation) bumps the epoch.
    assert step(image, UnfenceNode(1, 1)).ok
    restart = step(image, RegisterNode(1, "h:1", 101))
    assert restart.node_epoch == 2
    assert image.node(1) == type(node)(1, "h:1", 101, 2, fenced=True, fence_index=4)


def test_fencing_with_a_stale_epoch_is_rejected() -> None:
    image = registered(1)
    step(image, RegisterNode(1, "h1:1", 2))  # epoch 2
    result = step(image, FenceNode(1, 1))
    assert isinstance(result.error, InvalidRequest)
    assert result.error.message == "node 1 epoch 1 is stale (current epoch 2)"
    assert not step(image, UnfenceNode(1, 1)).ok
    assert step(image, UnfenceNode(1, 2)).ok
    assert image.live_nodes() == (1,)


def test_fencing_ends_leaderships_and_isr_membership() -> None:
    image = registered(1, 2, 3)
    step(image, CreateTopic("t", ((1, 2, 3), (2, 3, 1)), {}))
    step(image, SetPartitionLeader(G1, 1, 3, (1, 2, 3)))
    step(image, SetPartitionLeader(G2, 2, 1, (1, 2, 3)))
    result = step(image, FenceNode(1, 1))
    assert result.changed_groups == (G1, G2)
    p1, p2 = image.partitions(1)
    assert (p1.leader, p1.leader_epoch, p1.isr) == (0, 3, (2, 3))
    assert (p2.leader, p2.isr) == (2, (2, 3))
    assert image.groups_led_by(1) == ()
    # A fenced node cannot be recorded as leader.
    rejected = step(image, SetPartitionLeader(G1, 1, 4, (1, 2)))
    assert rejected.error is not None and "node 1 cannot lead" in rejected.error.message


# --- topics ----------------------------------------------------------------------------------


def test_create_topic_assigns_ids_and_groups() -> None:
    image = registered(1, 2, 3)
    result = step(image, CreateTopic("orders", ((1, 2), (2, 3), (3, 1)), {"retention_ms": "5"}))
    assert result.ok and result.topic_id == 1
    assert result.changed_groups == (group_id(1, 0), group_id(1, 1), group_id(1, 2))
    topic = image.topic("orders")
    assert topic is not None and topic == image.topic_by_id(1)
    assert (topic.partition_count, topic.replication_factor) == (3, 2)
    assert topic.config_dict() == {"retention_ms": "5"}
    partition = image.partition_by_group(group_id(1, 1))
    assert partition is not None
    assert (partition.topic_id, partition.partition) == (1, 1)
    assert (partition.replicas, partition.isr) == ((2, 3), (2, 3))
    assert image.groups_hosted_by(1) == {group_id(1, 0): (1, 2), group_id(1, 2): (3, 1)}


def test_create_of_an_existing_name_is_rejected_at_apply() -> None:
    image = registered(1)
    step(image, CreateTopic("orders", ((1,),), {}))
    before = image.snapshot()
    result = step(image, CreateTopic("orders", ((1,),), {}))
    assert isinstance(result.error, TopicExists)
    assert result.error.message == "topic 'orders' already exists"
    assert image.snapshot() != before  # only the applied index moved
    assert MetadataImage.restore(before).topics() == image.topics()


def test_topic_ids_are_never_reused() -> None:
    image = registered(1)
    step(image, CreateTopic("t", ((1,),), {}))
    assert step(image, DeleteTopic(1)).changed_groups == (group_id(1, 0),)
    assert image.topic("t") is None and image.partition_by_group(group_id(1, 0)) is None
    assert image.groups_hosted_by(1) == {}
    assert step(image, CreateTopic("t", ((1,),), {})).topic_id == 2
    result = step(image, DeleteTopic(1))
    assert isinstance(result.error, UnknownTopic) and result.error.message == "topic id 1 does not exist"


def test_add_partitions_is_a_compare_and_set_on_the_count() -> None:
    image = registered(1, 2)
    step(image, CreateTopic("t", ((1,), (2,)), {}))
    assert step(image, AddPartitions(1, 2, ((1,), (2,)))).changed_groups == (group_id(1, 2), group_id(1, 3))
    topic = image.topic("t")
    assert topic is not None and topic.partition_count == 4
    stale = step(image, AddPartitions(1, 2, ((1,), (2,))))
    assert isinstance(stale.error, PartitionCountDecrease)
    assert stale.error.message == "partition count can only grow: topic 't' has 4, requested 4"
    raced = step(image, AddPartitions(1, 3, ((1,), (2,))))
    assert isinstance(raced.error, InvalidRequest) and "changed concurrently" in raced.error.message


def test_replicas_on_unregistered_nodes_break_the_log() -> None:
    image = registered(1)
    with pytest.raises(InvariantViolation, match="unregistered node"):
        step(image, CreateTopic("t", ((1, 9),), {}))


# --- partitions --------------------------------------------------------------------------------


def test_leader_epochs_never_go_backwards() -> None:
    image = registered(1, 2)
    step(image, CreateTopic("t", ((1, 2),), {}))
    assert step(image, SetPartitionLeader(G1, 1, 5, (1, 2))).changed_groups == (G1,)
    assert step(image, SetPartitionLeader(G1, 1, 5, (1, 2))).changed_groups == ()
    old = step(image, SetPartitionLeader(G1, 2, 4, (2,)))
    assert old.error is not None and "leader epoch 4 is older than the recorded 5" in old.error.message
    gone = step(image, SetPartitionLeader(group_id(9, 0), 1, 1, (1,)))
    assert isinstance(gone.error, UnknownPartition)


def test_reassignment_adds_hosts_then_change_replicas_completes_it() -> None:
    image = registered(1, 2, 3, 4)
    step(image, CreateTopic("t", ((3, 1, 2),), {}))
    step(image, ReassignReplicas(G1, (4, 1, 2)))
    partition = image.partition_by_group(G1)
    assert partition is not None and partition.target == (4, 1, 2) and partition.desired == (4, 1, 2)
    assert image.reassigning_groups() == (G1,)
    assert image.groups_hosted_by(4) == {G1: ()}  # joins as a learner: no bootstrap voters
    assert image.groups_hosted_by(3) == {G1: (3, 1, 2)}
    assert image.replica_counts() == {1: 1, 2: 1, 3: 1, 4: 1}
    assert image.preferred_leader_counts() == {1: 0, 2: 0, 3: 0, 4: 1}
    wrong = step(image, ChangeReplicas(G1, (1, 2, 5)))
    assert wrong.error is not None and "not the pending target" in wrong.error.message
    assert step(image, ChangeReplicas(G1, (4, 1, 2))).ok
    partition = image.partition_by_group(G1)
    assert partition is not None and (partition.replicas, partition.target) == ((4, 1, 2), ())
    assert partition.isr == (1, 2)
    assert image.groups_hosted_by(3) == {} and image.groups_hosted_by(4) == {G1: (4, 1, 2)}
    assert image.reassigning_groups() == ()


def test_statistics() -> None:
    stats = build().statistics()
    assert (stats.nodes, stats.nodes_fenced, stats.topics, stats.partitions) == (4, 2, 2, 5)
    assert stats.applied_index == len(HISTORY)
    assert stats.offline_partitions == 4  # only G1 has a leader (node 2's restart ended G2's)
    assert stats.reassigning_partitions == 0
