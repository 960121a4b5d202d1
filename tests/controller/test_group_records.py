"""Group records (JSON round trips, clear decode errors) and the apply rules of the groups image."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from millpond.controller.groups import records
from millpond.controller.groups.errors import GroupErrorReason
from millpond.controller.groups.errors import GroupErrorReason as R
from millpond.controller.groups.records import (
    GroupDelete,
    GroupEpochBump,
    GroupMemberRemove,
    GroupMemberUpsert,
    GroupRecord,
    MemberCurrentAssignment,
    OffsetCommit,
    TargetAssignment,
    TopicPartitions,
    from_json,
    pack_partitions,
    to_json,
    unpack_partitions,
)
from millpond.controller.groups.state import GroupsImage, GroupStateName
from millpond.controller.records import RecordDecodeError
from millpond.invariant import InvariantViolation

SAMPLES: list[GroupRecord] = [
    GroupMemberUpsert("g", "m1", "i1", ("b", "a"), "t.*", "range", 30_000, 10_000, replaces_member_id="m0"),
    GroupMemberRemove("g", "m1"),
    GroupEpochBump("g", 4),
    TargetAssignment("g", 4, "uniform", (("a", 2), ("b", 1)), (("t.*", ("t1", "t2")),),
                     (("m1", (("a", (0, 1)),)), ("m2", ()))),
    MemberCurrentAssignment("g", "m1", 4, 3, (("a", (0,)),), (("b", (0,)),)),
    OffsetCommit("g", "a", 1, 42, 7, "meta", 1_700_000_000_000, "m1", 4),
    GroupDelete("g"),
]


def upsert(member: str, topics: tuple[str, ...] = ("t",), instance: str = "", regex: str = "",
           assignor: str = "", replaces: str = "", session_ms: int = 10_000) -> GroupMemberUpsert:
    return GroupMemberUpsert("g", member, instance, topics, regex, assignor, 60_000, session_ms, replaces)


Parts = dict[str, tuple[int, ...]]


def packed(parts: Parts) -> TopicPartitions:
    return pack_partitions((topic, p) for topic, numbers in parts.items() for p in numbers)


def target(epoch: int, members: dict[str, Parts], counts: dict[str, int] | None = None,
           regex: dict[str, tuple[str, ...]] | None = None, assignor: str = "uniform") -> TargetAssignment:
    return TargetAssignment("g", epoch, assignor, tuple(sorted((counts or {}).items())),
                            tuple(sorted((regex or {}).items())),
                            tuple((member, packed(parts)) for member, parts in sorted(members.items())))


def current(member: str, epoch: int, previous: int, assigned: Parts | None = None,
            pending: Parts | None = None) -> MemberCurrentAssignment:
    return MemberCurrentAssignment("g", member, epoch, previous, packed(assigned or {}),
                                   packed(pending or {}))


def apply_ok(image: GroupsImage, *batch: GroupRecord) -> None:
    for record in batch:
        result = image.apply(record)
        assert result.ok, result.error


def rejected(image: GroupsImage, record: GroupRecord) -> GroupErrorReason:
    before = image.snapshot_body()
    result = image.apply(record)
    assert result.error is not None
    assert image.snapshot_body() == before, "a rejected record changed the image"
    return result.error.reason


# --- codec --------------------------------------------------------------------------------------------


def test_samples_cover_every_group_record_type() -> None:
    assert {type(r).TYPE for r in SAMPLES} == set(records.group_record_types())


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: type(r).TYPE)
def test_round_trip_through_json_text(record: GroupRecord) -> None:
    body = to_json(record)
    assert body["type"] == type(record).TYPE and body["v"] == 1
    text = json.dumps(body, sort_keys=True)
    assert from_json(json.loads(text)) == record


def test_containers_are_normalized_so_equal_records_compare_equal() -> None:
    loose: Any = TargetAssignment  # mappings, lists, any order: normalized at construction
    a = loose("g", 1, "uniform", {"b": 1, "a": 2}, {}, {"m2": {"a": [1]}, "m1": {"a": [0], "b": [0]}})
    b = loose("g", 1, "uniform", (("a", 2), ("b", 1)), (),
              [("m1", [("b", [0]), ("a", [0])]), ("m2", {"a": (1,)})])
    assert a == b and to_json(a) == to_json(b)
    assert GroupMemberUpsert("g", "m", "", ("y", "x", "x"), "", "", 1, 1).subscribed_topic_names == ("x", "y")
    assert pack_partitions({("b", 2), ("a", 1), ("b", 0)}) == (("a", (1,)), ("b", (0, 2)))
    assert unpack_partitions(pack_partitions({("b", 2), ("a", 1)})) == {("b", 2), ("a", 1)}


@pytest.mark.parametrize(("body", "message"), [
    ({"type": "group_nope", "v": 1}, "unknown"),
    ({"type": "group_delete", "v": 2, "group_id": "g"}, "version 2"),
    ({"type": "group_delete", "v": 1}, "lacks field(s) group_id"),
    ({"type": "group_delete", "v": 1, "group_id": "g", "extra": 1}, "unknown field(s) extra"),
    ({"type": "group_epoch_bump", "v": 1, "group_id": "g", "epoch": "4"}, "must be an integer"),
    ({"type": "group_member_assignment", "v": 1, "group_id": "g", "member_id": "m", "member_epoch": 1,
      "previous_member_epoch": 0, "assigned": {"t": [-1]}, "pending_revocation": {}},
     "partitions must be >= 0"),
    ({"v": 1, "group_id": "g"}, "lacks its 'type'"),
])
def test_decode_errors_say_what_is_wrong(body: dict[str, object], message: str) -> None:
    with pytest.raises(RecordDecodeError, match=re.escape(message)):
        from_json(body)


def test_constructing_a_record_with_a_wrong_kind_fails() -> None:
    with pytest.raises(TypeError, match=r"GroupEpochBump\.epoch"):
        GroupEpochBump("g", "1")  # type: ignore[arg-type]


# --- apply rules ----------------------------------------------------------------------------------------


def test_membership_and_subscription_changes_bump_the_group_epoch_timeouts_do_not() -> None:
    image = GroupsImage()
    apply_ok(image, upsert("m1"))
    group = image.group("g")
    assert group is not None and group.group_epoch == 1 and group.members["m1"].member_epoch == 0
    apply_ok(image, upsert("m1", session_ms=20_000))
    assert image.group("g").group_epoch == 1  # type: ignore[union-attr]
    apply_ok(image, upsert("m1", topics=("t", "u")))
    assert image.group("g").group_epoch == 2  # type: ignore[union-attr]
    apply_ok(image, upsert("m1", topics=("t", "u"), assignor="range"))
    assert image.group("g").group_epoch == 3  # type: ignore[union-attr]
    apply_ok(image, GroupMemberRemove("g", "m1"))
    group = image.group("g")
    assert group is not None and group.group_epoch == 4 and not group.members
    assert image.describe("g").state is GroupStateName.EMPTY


def test_describe_reports_each_group_state() -> None:
    image = GroupsImage()
    assert image.describe("g").state is GroupStateName.DEAD
    apply_ok(image, upsert("m1"))
    assert image.describe("g").state is GroupStateName.ASSIGNING
    apply_ok(image, target(1, {"m1": {"t": (0,)}}, {"t": 1}))
    assert image.describe("g").state is GroupStateName.RECONCILING
    apply_ok(image, current("m1", 1, 0, {"t": (0,)}))
    description = image.describe("g")
    assert description.state is GroupStateName.STABLE
    assert description.members[0].assigned == {("t", 0)} and description.target == {"m1": {("t", 0)}}
    listing = [(g.group_id, g.state, g.members) for g in image.list_groups()]
    assert listing == [("g", GroupStateName.STABLE, 1)]


def test_stale_epoch_bump_and_target_are_rejected() -> None:
    image = GroupsImage()
    apply_ok(image, upsert("m1"))
    assert rejected(image, GroupEpochBump("g", 3)) is R.INVALID_REQUEST
    assert rejected(image, target(2, {"m1": {}})) \
        is R.INVALID_REQUEST
    assert rejected(image, target(1, {"m1": {}, "m9": {}})) \
        is R.INVALID_REQUEST
    assert rejected(image, GroupEpochBump("nope", 1)) is R.GROUP_ID_NOT_FOUND


def test_a_target_giving_one_partition_to_two_members_is_a_broken_log() -> None:
    image = GroupsImage()
    apply_ok(image, upsert("m1"), upsert("m2"))
    with pytest.raises(InvariantViolation):
        image.apply(target(2, {"m1": {"t": (0,)}, "m2": {"t": (0,)}}, {"t": 1}))


def test_ownership_stays_exclusive_at_apply_time() -> None:
    image = GroupsImage()
    apply_ok(image, upsert("m1"), upsert("m2"),
             current("m1", 0, 0, {"t": (0,)}, {"t": (1,)}))
    for partition in (0, 1):  # assigned or pending revocation: owned either way
        record = current("m2", 0, 0, {"t": (partition,)})
        assert rejected(image, record) is R.INVALID_REQUEST
    assert rejected(image, current("m9", 0, 0)) is R.UNKNOWN_MEMBER_ID
    with pytest.raises(InvariantViolation):
        image.apply(current("m2", 9, 0))  # above the group epoch


def test_static_replacement_takes_over_the_away_members_state() -> None:
    image = GroupsImage()
    apply_ok(image, upsert("m1", instance="i1"),
             target(1, {"m1": {"t": (0, 1)}}, {"t": 2}),
             current("m1", 1, 0, {"t": (0, 1)}))
    # Not away yet: the instance id is not released.
    assert rejected(image, upsert("m2", instance="i1", replaces="m1")) is R.UNRELEASED_INSTANCE_ID
    assert rejected(image, upsert("m2", instance="i1")) is R.UNRELEASED_INSTANCE_ID
    apply_ok(image, current("m1", -2, 1, {"t": (0, 1)}))
    apply_ok(image, upsert("m2", instance="i1", replaces="m1"))
    group = image.group("g")
    assert group is not None and set(group.members) == {"m2"}
    assert group.group_epoch == 1, "a static rejoin with the same subscription must not rebalance"
    member = group.members["m2"]
    both = frozenset({("t", 0), ("t", 1)})
    assert (member.member_epoch, member.assigned, group.target["m2"]) == (1, both, both)
    assert rejected(image, upsert("m3", instance="i1", replaces="m1")) is R.UNKNOWN_MEMBER_ID


def test_offset_commits_are_rechecked_when_they_apply() -> None:
    image = GroupsImage()
    admin = OffsetCommit("g", "t", 0, 10, -1, "", 5, "", -1)
    apply_ok(image, admin)  # creates the (empty) group
    assert image.committed_offset("g", ("t", 0)) is not None
    apply_ok(image, upsert("m1"), current("m1", 1, 0, {"t": (0,)}))
    assert rejected(image, admin) is R.GROUP_NOT_EMPTY
    assert rejected(image, OffsetCommit("g", "t", 0, 11, -1, "", 5, "m1", 0)) is R.STALE_MEMBER_EPOCH
    assert rejected(image, OffsetCommit("g", "t", 0, 11, -1, "", 5, "m1", 2)) is R.FENCED_MEMBER_EPOCH
    assert rejected(image, OffsetCommit("g", "t", 1, 11, -1, "", 5, "m1", 1)) \
        is R.PARTITION_NOT_ASSIGNED
    assert rejected(image, OffsetCommit("g", "t", 0, 11, -1, "", 5, "m9", 1)) is R.UNKNOWN_MEMBER_ID
    apply_ok(image, OffsetCommit("g", "t", 0, 3, 2, "x", 6, "m1", 1))  # backwards is the member's call
    committed = image.committed_offset("g", ("t", 0))
    assert committed is not None
    assert (committed.offset, committed.leader_epoch, committed.metadata) == (3, 2, "x")


def test_group_delete_needs_an_empty_existing_group() -> None:
    image = GroupsImage()
    assert rejected(image, GroupDelete("g")) is R.GROUP_ID_NOT_FOUND
    apply_ok(image, upsert("m1"))
    assert rejected(image, GroupDelete("g")) is R.GROUP_NOT_EMPTY
    apply_ok(image, GroupMemberRemove("g", "m1"), OffsetCommit("g", "t", 0, 1, -1, "", 0, "", -1),
             GroupDelete("g"))
    assert image.group("g") is None and not image.committed_offsets("g")
    assert image.statistics().groups == 0


def test_snapshot_body_round_trips_and_is_canonical_json() -> None:
    image = GroupsImage()
    apply_ok(image, upsert("m1", instance="i1", regex="t.*"), upsert("m2"),
             target(2, {"m1": {"t": (0,)}, "m2": {"t": (1,)}}, {"t": 2}, {"t.*": ("t",)}, "range"),
             current("m1", 2, 0, {"t": (0,)}),
             current("m2", 0, 0, {}, {"t": (1,)}),
             OffsetCommit("g", "t", 0, 7, 1, "meta", 9, "m1", 2),
             OffsetCommit("other", "t", 1, 3, -1, "", 9, "", -1))
    body = image.snapshot_body()
    restored = GroupsImage.from_snapshot_body(json.loads(json.dumps(body)))
    assert restored.snapshot_body() == body
    assert restored.describe("g") == image.describe("g")
    assert restored.statistics() == image.statistics()
    with pytest.raises(InvariantViolation):
        GroupsImage.from_snapshot_body({"groups": [{"group_id": "g"}]})
