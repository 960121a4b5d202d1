"""The metadata record codec: round trips, canonical bytes, and clear errors for what it cannot read."""

from __future__ import annotations

import json

import pytest

from millpond.controller import records
from millpond.controller.groups.records import (
    GroupDelete,
    GroupEpochBump,
    GroupMemberRemove,
    GroupMemberUpsert,
    MemberCurrentAssignment,
    OffsetCommit,
    TargetAssignment,
)
from millpond.controller.groups.records import to_json as group_to_json
from millpond.controller.records import (
    AddPartitions,
    ChangeReplicas,
    CreateTopic,
    DeleteTopic,
    FenceNode,
    MetadataRecord,
    ReassignReplicas,
    RecordDecodeError,
    RegisterNode,
    SetPartitionLeader,
    UnfenceNode,
    decode,
    encode,
)
from millpond.controller.state import MetadataImage
from millpond.invariant import InvariantViolation

SAMPLES: list[MetadataRecord] = [
    RegisterNode(node_id=3, address="10.0.0.3:9091", incarnation=2**64 - 1),
    FenceNode(node_id=3, epoch=7),
    UnfenceNode(node_id=3, epoch=7),
    CreateTopic(name="orders", replicas=((1, 2, 3), (2, 3, 1)),
                config=(("cleanup_policy", "compact"), ("retention_ms", "-1"))),
    DeleteTopic(topic_id=12),
    AddPartitions(topic_id=12, first_partition=2, replicas=((3, 1, 2),)),
    SetPartitionLeader(group=(12 << 20) | 1, leader=2, leader_epoch=9, isr=(1, 2)),
    ReassignReplicas(group=(12 << 20) | 1, target=(1, 2, 4)),
    ChangeReplicas(group=(12 << 20) | 1, replicas=(1, 2, 4)),
    GroupMemberUpsert(group_id="billing", member_id="m-1", instance_id="host-a",
                      subscribed_topic_names=("orders", "refunds"), subscribed_topic_regex="pay-.*",
                      server_assignor="uniform", rebalance_timeout_ms=300_000, session_timeout_ms=45_000,
                      replaces_member_id="m-0"),
    GroupMemberRemove(group_id="billing", member_id="m-1"),
    GroupEpochBump(group_id="billing", epoch=4),
    TargetAssignment(group_id="billing", epoch=4, assignor="uniform",
                     partition_counts=(("orders", 3), ("pay-eu", 1)), regex_topics=(("pay-.*", ("pay-eu",)),),
                     members=(("m-1", (("orders", (0, 2)),)), ("m-2", (("orders", (1,)), ("pay-eu", (0,)))))),
    MemberCurrentAssignment(group_id="billing", member_id="m-2", member_epoch=4, previous_member_epoch=3,
                            assigned=(("orders", (1,)),), pending_revocation=(("pay-eu", (0,)),)),
    OffsetCommit(group_id="billing", topic="orders", partition=1, offset=1_234, leader_epoch=7,
                 metadata="host-a", commit_timestamp_ms=1_700_000_000_000, member_id="m-2", member_epoch=4),
    GroupDelete(group_id="billing"),
]


def _raw(body: dict[str, object]) -> bytes:
    return bytes((records.FORMAT_JSON,)) + json.dumps(body).encode()


def test_samples_cover_every_registered_type() -> None:
    assert {type(r).TYPE for r in SAMPLES} == set(records.record_types())


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: type(r).TYPE)
def test_round_trip(record: MetadataRecord) -> None:
    data = encode(record)
    assert decode(data) == record
    assert encode(decode(data)) == data


@pytest.mark.parametrize("record", [r for r in SAMPLES if r.TYPE.startswith("group_")], ids=lambda r: r.TYPE)
def test_group_records_encode_as_their_own_json(record: MetadataRecord) -> None:
    body = json.loads(encode(record)[1:])
    assert body == group_to_json(record)  # type: ignore[arg-type]


def test_encoding_is_canonical_json_behind_a_format_byte() -> None:
    data = encode(DeleteTopic(topic_id=5))
    assert data == b'\x01{"topic_id":5,"type":"delete_topic","v":1}'


def test_containers_are_normalized_so_equal_records_encode_equally() -> None:
    from_lists = CreateTopic(name="t", replicas=[[1, 2]],  # type: ignore[arg-type]
                             config={"retention_ms": "5", "cleanup_policy": "delete"})
    from_tuples = CreateTopic(name="t", replicas=((1, 2),),
                              config=(("cleanup_policy", "delete"), ("retention_ms", "5")))
    assert from_lists == from_tuples
    assert hash(from_lists) == hash(from_tuples)
    assert encode(from_lists) == encode(from_tuples)


def test_constructing_with_a_wrong_kind_names_the_field() -> None:
    with pytest.raises(TypeError, match=r"FenceNode.epoch: expected an integer, got str"):
        FenceNode(node_id=1, epoch="7")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"FenceNode.node_id: expected an integer, got bool"):
        FenceNode(node_id=True, epoch=1)


def test_unknown_type_is_a_clear_error() -> None:
    with pytest.raises(RecordDecodeError,
                       match=r"type 'commit_offsets' \(version 1\) is unknown to this node: "
                             r"it was written by a newer millpond; upgrade this node"):
        decode(_raw({"type": "commit_offsets", "v": 1, "group": "g"}))


def test_newer_version_is_refused() -> None:
    with pytest.raises(RecordDecodeError, match=r"'fence_node' version 2 is not readable by this node "
                                                r"\(it reads versions 1..1\)"):
        decode(_raw({"type": "fence_node", "v": 2, "node_id": 1, "epoch": 1}))


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty metadata record"),
    (b"\x07{}", "format 7 is unknown"),
    (b"\x01{not json", "not valid JSON"),
    (b"\x01[1]", "not a JSON object"),
    (_raw({"v": 1}), "lacks its 'type'"),
    (_raw({"type": "fence_node", "v": 1, "node_id": 1}), "'fence_node' lacks field(s) epoch"),
    (_raw({"type": "fence_node", "v": 1, "node_id": 1, "epoch": 1, "why": "x"}),
     "'fence_node' has unknown field(s) why"),
    (_raw({"type": "fence_node", "v": 1, "node_id": "1", "epoch": 1}),
     "'fence_node' field 'node_id' must be an integer"),
    (_raw({"type": "create_topic", "v": 1, "name": "t", "replicas": [1], "config": {}}),
     "field 'replicas' must be a list of lists of integers"),
    (_raw({"type": "create_topic", "v": 1, "name": "t", "replicas": [[1]], "config": {"a": 1}}),
     "field 'config' must be an object of strings"),
])
def test_malformed_records_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(RecordDecodeError) as info:
        decode(data)
    assert message in str(info.value)


def test_applying_an_unreadable_record_stops_the_node() -> None:
    image = MetadataImage()
    with pytest.raises(InvariantViolation, match="cannot apply"):
        image.apply(1, _raw({"type": "commit_offsets", "v": 1}))


def test_registering_a_type_twice_fails() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        records.register("fence_node", 1)(FenceNode)
