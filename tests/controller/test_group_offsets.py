"""Committed offsets: who may commit what, fetching, and planning resets."""

from __future__ import annotations

import pytest

from millpond.controller.groups.coordinator import GroupSettings, HeartbeatRequest, heartbeat
from millpond.controller.groups.errors import GroupError
from millpond.controller.groups.errors import GroupErrorReason as R
from millpond.controller.groups.offsets import (
    OffsetCommitEntry,
    OffsetCommitRequest,
    PartitionBounds,
    ResetMode,
    ResetSpec,
    commit_offsets,
    fetch_offsets,
    plan_reset_offsets,
)
from millpond.controller.groups.records import GroupRecord
from millpond.controller.groups.state import GroupsImage, TopicPartition

TOPICS = {"t": 4}
SETTINGS = GroupSettings(heartbeat_interval_ms=500, session_timeout_ms=3_000)


def apply(image: GroupsImage, records: tuple[GroupRecord, ...] | list[GroupRecord]) -> None:
    for record in records:
        result = image.apply(record)
        assert result.ok, result.error


def join(image: GroupsImage, member_id: str) -> tuple[int, frozenset[TopicPartition]]:
    decision = heartbeat(image, HeartbeatRequest("g", member_id, 0, subscribed_topic_names=("t",)), TOPICS, 0,
                         new_member_id=lambda: "unused", settings=SETTINGS)
    apply(image, decision.records)
    assert decision.response.assignment is not None
    return decision.response.member_epoch, decision.response.assignment


def commit(image: GroupsImage, member_id: str, epoch: int, *entries: OffsetCommitEntry,
           group: str = "g") -> list[R | None]:
    decision = commit_offsets(image, OffsetCommitRequest(group, member_id, epoch, entries), TOPICS, 1_000)
    apply(image, decision.records)
    return [r.error.reason if r.error else None for r in decision.results]


def entry(partition: int, offset: int = 10, **kwargs: object) -> OffsetCommitEntry:
    return OffsetCommitEntry("t", partition, offset, **kwargs)  # type: ignore[arg-type]


def test_a_member_commits_the_partitions_it_owns_at_its_epoch() -> None:
    image = GroupsImage()
    epoch, _ = join(image, "a")
    assert commit(image, "a", epoch, entry(0, 5, leader_epoch=3, metadata="m"), entry(1, 7)) == [None, None]
    committed = image.committed_offset("g", ("t", 0))
    assert committed is not None
    assert (committed.offset, committed.leader_epoch, committed.metadata, committed.commit_timestamp_ms) == (
        5, 3, "m", 1_000)
    assert commit(image, "a", epoch, entry(0, 5, leader_epoch=3, metadata="m")) == [None]  # idempotent


def test_commit_refusals_name_the_precise_reason() -> None:
    image = GroupsImage()
    epoch, _ = join(image, "a")
    join(image, "b")  # a now has two partitions pending revocation, b has none yet
    assert commit(image, "ghost", epoch, entry(0)) == [R.UNKNOWN_MEMBER_ID]
    assert commit(image, "a", epoch - 1, entry(0), entry(1)) == [R.STALE_MEMBER_EPOCH] * 2
    assert commit(image, "a", epoch + 5, entry(0)) == [R.FENCED_MEMBER_EPOCH]
    assert commit(image, "b", 2, entry(0)) == [R.PARTITION_NOT_ASSIGNED]
    missing = commit(image, "a", epoch, OffsetCommitEntry("nope", 0, 1), entry(9))
    assert missing == [R.UNKNOWN_TOPIC_OR_PARTITION] * 2
    assert commit(image, "a", epoch, entry(0, -1), entry(1, leader_epoch=-2)) == [R.INVALID_REQUEST] * 2
    assert commit(image, "a", epoch, entry(0, metadata="x" * 4097)) == [R.OFFSET_METADATA_TOO_LARGE]
    assert commit(image, "a", epoch, entry(0), entry(0)) == [None, R.INVALID_REQUEST]
    assert commit(image, "", -1, entry(0)) == [R.GROUP_NOT_EMPTY]
    assert commit(image, "", 3, entry(0)) == [R.INVALID_REQUEST]
    assert commit(image, "a", epoch, entry(0), group="") == [R.INVALID_REQUEST]
    assert commit(image, "a", epoch, entry(0), group="other") == [R.UNKNOWN_MEMBER_ID]


def test_partitions_pending_revocation_may_still_be_committed() -> None:
    image = GroupsImage()
    epoch, owned = join(image, "a")
    join(image, "b")
    decision = heartbeat(image, HeartbeatRequest("g", "a", epoch, owned_partitions=owned), TOPICS, 0,
                         new_member_id=lambda: "unused", settings=SETTINGS)
    apply(image, decision.records)
    pending = image.group("g").members["a"].pending_revocation  # type: ignore[union-attr]
    assert len(pending) == 2
    assert commit(image, "a", epoch, *(entry(p) for _, p in sorted(pending))) == [None, None]


def test_a_commit_decided_before_an_epoch_change_is_rejected_when_it_applies() -> None:
    image = GroupsImage()
    epoch, owned = join(image, "a")
    decided = commit_offsets(image, OffsetCommitRequest("g", "a", epoch, (entry(0, 50),)), TOPICS, 0)
    assert decided.results[0].error is None
    join(image, "b")
    apply(image, heartbeat(image, HeartbeatRequest("g", "a", epoch, owned_partitions=owned), TOPICS, 0,
                           new_member_id=lambda: "unused", settings=SETTINGS).records)
    apply(image, heartbeat(image, HeartbeatRequest("g", "a", epoch, owned_partitions=frozenset({("t", 0),
                                                                                               ("t", 1)})),
                           TOPICS, 0, new_member_id=lambda: "unused", settings=SETTINGS).records)
    assert image.group("g").members["a"].member_epoch == epoch + 1  # type: ignore[union-attr]
    result = image.apply(decided.records[0])
    assert result.error is not None and result.error.reason is R.STALE_MEMBER_EPOCH
    assert image.committed_offset("g", ("t", 0)) is None


def test_an_admin_commit_creates_an_empty_group() -> None:
    image = GroupsImage()
    assert commit(image, "", -1, entry(2, 9)) == [None]
    group = image.group("g")
    assert group is not None and not group.members
    assert image.committed_offset("g", ("t", 2)).offset == 9  # type: ignore[union-attr]
    full = GroupSettings(heartbeat_interval_ms=500, session_timeout_ms=3_000, groups_max=1)
    decision = commit_offsets(image, OffsetCommitRequest("other", "", -1, (entry(0),)), TOPICS, 0, full)
    assert decision.results[0].error is not None and decision.results[0].error.reason is R.GROUPS_MAX_REACHED


def test_fetch_offsets() -> None:
    image = GroupsImage()
    assert fetch_offsets(image, "g") == {}
    assert fetch_offsets(image, "g", [("t", 0)]) == {("t", 0): None}
    epoch, _ = join(image, "a")
    commit(image, "a", epoch, entry(1, 4))
    assert {tp: c.offset for tp, c in fetch_offsets(image, "g").items() if c} == {("t", 1): 4}
    found = fetch_offsets(image, "g", [("t", 1), ("t", 0)], member_id="a", member_epoch=epoch)
    assert found[("t", 0)] is None and found[("t", 1)] is not None and found[("t", 1)].offset == 4
    for member_id, member_epoch, reason in (("a", epoch - 1, R.STALE_MEMBER_EPOCH),
                                            ("z", epoch, R.UNKNOWN_MEMBER_ID)):
        with pytest.raises(GroupError) as caught:
            fetch_offsets(image, "g", member_id=member_id, member_epoch=member_epoch)
        assert caught.value.reason is reason


BOUNDS: dict[TopicPartition, PartitionBounds] = {
    ("t", 0): PartitionBounds(10, 100),
    ("t", 1): PartitionBounds(0, 50),
    ("t", 2): PartitionBounds(5, 5),
}


@pytest.mark.parametrize(("spec", "lookup", "expected"), [
    (ResetSpec(ResetMode.TO_EARLIEST), None, [10, 0, 5]),
    (ResetSpec(ResetMode.TO_LATEST), None, [100, 50, 5]),
    (ResetSpec(ResetMode.TO_OFFSET, 60), None, [60, 50, 5]),
    (ResetSpec(ResetMode.TO_OFFSET, 0), None, [10, 0, 5]),
    (ResetSpec(ResetMode.SHIFT_BY, -30), None, [10, 10, 5]),  # committed: 40, 40, none
    (ResetSpec(ResetMode.SHIFT_BY, 30), None, [70, 50, 5]),
    (ResetSpec(ResetMode.TO_DATETIME, 1_700_000_000_000), {("t", 0): 42, ("t", 1): None, ("t", 2): 5},
     [42, 50, 5]),
])
def test_reset_plans(spec: ResetSpec, lookup: dict[TopicPartition, int | None] | None,
                     expected: list[int]) -> None:
    image = GroupsImage()
    commit(image, "", -1, entry(0, 40), entry(1, 40))
    plan = plan_reset_offsets(image, "g", spec, BOUNDS, lookup, 2_000)
    assert [c.offset for c in plan.changes] == expected
    assert [c.previous for c in plan.changes] == [40, 40, None]
    apply(image, plan.records)
    assert [image.committed_offset("g", tp).offset for tp in sorted(BOUNDS)] == expected  # type: ignore[union-attr]


def test_reset_is_refused_while_the_group_has_members_or_the_input_is_bad() -> None:
    image = GroupsImage()
    with pytest.raises(GroupError) as caught:
        plan_reset_offsets(image, "g", ResetSpec(ResetMode.TO_DATETIME, 5), BOUNDS, {}, 0)
    assert caught.value.reason is R.INVALID_REQUEST
    with pytest.raises(GroupError) as caught:
        backwards = {("t", 0): PartitionBounds(9, 3)}
        plan_reset_offsets(image, "g", ResetSpec(ResetMode.TO_EARLIEST), backwards, None, 0)
    assert caught.value.reason is R.INVALID_REQUEST
    plan = plan_reset_offsets(image, "g", ResetSpec(ResetMode.TO_EARLIEST), BOUNDS, None, 0)
    join(image, "a")
    with pytest.raises(GroupError) as caught:
        plan_reset_offsets(image, "g", ResetSpec(ResetMode.TO_EARLIEST), BOUNDS, None, 0)
    assert caught.value.reason is R.GROUP_NOT_EMPTY
    # A plan made while the group was empty is rejected if a member joined before it applied.
    result = image.apply(plan.records[0])
    assert result.error is not None and result.error.reason is R.GROUP_NOT_EMPTY
