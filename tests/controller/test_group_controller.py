"""Consumer groups through the active controller over a real (single-node) metadata log: heartbeats
propose records in order and answer once applied, sessions expire on tick, a new controller gives
fresh sessions, offsets commit, reset and fetch, groups are deleted, and the image's snapshot and
replay carry every group."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from controller_harness import Cluster, async_test

from millpond.controller import MetadataImage
from millpond.controller.groups import (
    GroupMemberRemove,
    GroupSettings,
    HeartbeatRequest,
    HeartbeatResponse,
    OffsetCommitEntry,
    OffsetCommitRequest,
    PartitionBounds,
    ResetMode,
    ResetSpec,
)
from millpond.controller.groups.records import GroupMemberUpsert, MemberCurrentAssignment, TargetAssignment
from millpond.controller.records import decode
from millpond.errors import (
    FencedMemberEpoch,
    GroupIdNotFound,
    GroupNotEmpty,
    InvalidRequest,
    NotController,
    PartitionNotAssigned,
    StaleMemberEpoch,
    UnknownMemberId,
    UnknownPartition,
    UnsupportedAssignor,
)

SETTINGS = GroupSettings(heartbeat_interval_ms=100, session_timeout_ms=1_000, rebalance_timeout_ms=2_000)


async def _cluster(partitions: int = 4) -> Cluster:
    cluster = Cluster()
    ids = itertools.count(1)
    cluster.controller = type(cluster.controller)(
        cluster.log.image, cluster.log.propose, cluster.clock, cluster.settings, group_settings=SETTINGS,
        wall_ms=lambda: 1_700_000_000_000, new_member_id=lambda: f"m{next(ids)}")
    await cluster.start_nodes([1])
    await cluster.controller.create_topic("t", partitions, 1)
    return cluster


def idle(response: HeartbeatResponse) -> HeartbeatRequest:
    """The next heartbeat of a member that owns nothing."""
    return HeartbeatRequest("g", response.member_id, response.member_epoch, owned_partitions=frozenset())


def _join(member_id: str = "", topics: tuple[str, ...] = ("t",)) -> HeartbeatRequest:
    return HeartbeatRequest("g", member_id, 0, subscribed_topic_names=topics)


@async_test
async def test_a_join_proposes_its_records_in_order_and_answers_with_the_assignment() -> None:
    cluster = await _cluster()
    before = len(cluster.log.entries)
    response = await cluster.controller.groups.heartbeat(_join())
    assert (response.member_id, response.member_epoch) == ("m1", 1)
    assert response.assignment == {("t", p) for p in range(4)}
    assert response.heartbeat_interval_ms == 100
    kinds = [type(decode(data)) for data in cluster.log.entries[before:]]
    assert kinds == [GroupMemberUpsert, TargetAssignment, MemberCurrentAssignment]
    group = cluster.image.groups.group("g")
    assert group is not None and group.members["m1"].assigned == response.assignment
    # A follower replaying the log reaches the same groups, byte for byte.
    assert cluster.log.replay().snapshot() == cluster.image.snapshot()


@async_test
async def test_refusals_raise_the_mapped_errors_and_propose_nothing() -> None:
    cluster = await _cluster()
    groups = cluster.controller.groups
    entries = len(cluster.log.entries)
    with pytest.raises(UnknownMemberId, match="'nobody' is not in group 'g'"):
        await groups.heartbeat(HeartbeatRequest("g", "nobody", 3))
    with pytest.raises(InvalidRequest, match="group id must not be empty"):
        await groups.heartbeat(HeartbeatRequest("", "", 0, subscribed_topic_names=("t",)))
    with pytest.raises(UnsupportedAssignor, match="no server-side assignor is called 'fair'"):
        await groups.heartbeat(HeartbeatRequest("g", "", 0, subscribed_topic_names=("t",),
                                                server_assignor="fair"))
    assert len(cluster.log.entries) == entries
    joined = await groups.heartbeat(_join())
    with pytest.raises(FencedMemberEpoch):
        await groups.heartbeat(HeartbeatRequest("g", joined.member_id, joined.member_epoch + 5))
    assert groups.statistics().heartbeats_refused_total == 4


@async_test
async def test_concurrent_heartbeats_of_one_group_never_share_a_partition() -> None:
    cluster = await _cluster(partitions=6)
    groups = cluster.controller.groups
    first, second, third = await asyncio.gather(*(groups.heartbeat(_join(f"c{i}")) for i in range(3)))
    owned: dict[tuple[str, int], str] = {}
    for response in (first, second, third):
        for tp in response.assignment or ():
            assert tp not in owned, f"{tp} given to {owned[tp]} and {response.member_id}"
            owned[tp] = response.member_id
    group = cluster.image.groups.group("g")
    assert group is not None and len(group.owners()) == sum(len(m.owned) for m in group.members.values())


@async_test
async def test_a_silent_member_expires_on_tick_and_its_partitions_move() -> None:
    cluster = await _cluster()
    groups, clock = cluster.controller.groups, cluster.clock
    a = await groups.heartbeat(_join())
    b = await groups.heartbeat(_join())
    assert not b.assignment  # a still owns everything: it releases at its next heartbeat
    clock.advance(900)
    a = await groups.heartbeat(HeartbeatRequest("g", a.member_id, a.member_epoch,
                                                owned_partitions=a.assignment))
    b = await groups.heartbeat(idle(b))
    clock.advance(999)
    assert not [r for r in await cluster.controller.tick() if isinstance(r.record, GroupMemberRemove)]
    clock.advance(500)  # a: 1,499 ms silent; b heartbeats in time
    b = await groups.heartbeat(idle(b))
    removed = [r.record for r in await cluster.controller.tick()]
    assert removed == [GroupMemberRemove("g", a.member_id)]
    b = await groups.heartbeat(idle(b))
    assert b.assignment == {("t", p) for p in range(4)}
    assert groups.statistics().members_expired_total == 1


@async_test
async def test_a_new_controller_gives_every_member_a_full_session() -> None:
    cluster = await _cluster()
    joined = await cluster.controller.groups.heartbeat(_join())
    cluster.clock.advance(5_000)  # silent for longer than its session, but the controller failed over
    ctl = cluster.failover()
    assert not [r for r in await ctl.tick() if isinstance(r.record, GroupMemberRemove)]
    cluster.clock.advance(1_001)
    await cluster.heartbeat(1)
    assert [r.record for r in await ctl.tick()] == [GroupMemberRemove("g", joined.member_id)]


@async_test
async def test_lost_leadership_propagates_as_not_controller() -> None:
    cluster = await _cluster()
    cluster.log.leader = False
    with pytest.raises(NotController):
        await cluster.controller.groups.heartbeat(_join())


@async_test
async def test_commits_are_checked_against_the_member_epoch_and_ownership() -> None:
    cluster = await _cluster(partitions=2)
    groups = cluster.controller.groups
    member = await groups.heartbeat(_join())
    epoch = member.member_epoch

    def commit(*entries: OffsetCommitEntry, member_epoch: int = epoch) -> OffsetCommitRequest:
        return OffsetCommitRequest("g", member.member_id, member_epoch, entries)

    outcomes = await groups.commit_offsets(commit(OffsetCommitEntry("t", 0, 10, metadata="x"),
                                                  OffsetCommitEntry("t", 7, 1)))
    assert outcomes[0].error is None
    assert isinstance(outcomes[1].error, UnknownPartition)
    committed = groups.fetch_offsets("g", [("t", 0), ("t", 1)])
    assert committed[("t", 0)] is not None and committed[("t", 0)].offset == 10  # type: ignore[union-attr]
    assert committed[("t", 0)].commit_timestamp_ms == 1_700_000_000_000  # type: ignore[union-attr]
    assert committed[("t", 1)] is None
    # A second member joins and the group epoch moves on; a commit with the old epoch is stale.
    other = await groups.heartbeat(_join())
    member = await groups.heartbeat(HeartbeatRequest("g", member.member_id, epoch,
                                                     owned_partitions=member.assignment))
    stale = await groups.commit_offsets(commit(OffsetCommitEntry("t", 0, 11), member_epoch=epoch - 1))
    assert isinstance(stale[0].error, StaleMemberEpoch)
    assert "is at epoch" in stale[0].error.message
    # It releases what the new target gives the other member; then that partition is not its to commit.
    released = {("t", p) for p in range(2)} - set(member.assignment or ())
    assert len(released) == 1 and not other.assignment
    member = await groups.heartbeat(HeartbeatRequest("g", member.member_id, member.member_epoch,
                                                     owned_partitions=member.assignment))
    not_owned = await groups.commit_offsets(commit(OffsetCommitEntry(*released.pop(), 3),
                                                   member_epoch=member.member_epoch))
    assert isinstance(not_owned[0].error, PartitionNotAssigned)
    with pytest.raises(StaleMemberEpoch):
        groups.fetch_offsets("g", member_id=member.member_id, member_epoch=member.member_epoch - 1)


@async_test
async def test_reset_and_delete_need_an_empty_group() -> None:
    cluster = await _cluster(partitions=2)
    groups = cluster.controller.groups
    bounds = {("t", 0): PartitionBounds(0, 100), ("t", 1): PartitionBounds(5, 50)}
    member = await groups.heartbeat(_join())
    with pytest.raises(GroupNotEmpty):
        await groups.reset_offsets("g", ResetSpec(ResetMode.TO_EARLIEST), bounds, None, dry_run=True)
    with pytest.raises(GroupNotEmpty):
        await groups.delete_group("g")
    await groups.heartbeat(HeartbeatRequest("g", member.member_id, -1))
    entries = len(cluster.log.entries)
    dry = await groups.reset_offsets("g", ResetSpec(ResetMode.TO_OFFSET, 70), bounds, None, dry_run=True)
    assert [(c.topic, c.partition, c.previous, c.offset) for c in dry.changes] == [("t", 0, None, 70),
                                                                                   ("t", 1, None, 50)]
    assert len(cluster.log.entries) == entries  # a dry run proposes nothing
    await groups.reset_offsets("g", ResetSpec(ResetMode.SHIFT_BY, -3), bounds, None, dry_run=False)
    assert {tp: c.offset for tp, c in groups.fetch_offsets("g").items() if c} == {("t", 0): 0, ("t", 1): 5}
    await groups.delete_group("g")
    assert cluster.image.groups.group("g") is None
    with pytest.raises(GroupIdNotFound):
        await groups.delete_group("g")


@async_test
async def test_the_snapshot_carries_groups_and_offsets() -> None:
    cluster = await _cluster()
    member = await cluster.controller.groups.heartbeat(_join())
    await cluster.controller.groups.commit_offsets(OffsetCommitRequest(
        "g", member.member_id, member.member_epoch, (OffsetCommitEntry("t", 2, 42, 3, "meta"),)))
    restored = MetadataImage.restore(cluster.image.snapshot())
    assert restored.snapshot() == cluster.image.snapshot()
    assert restored.groups.describe("g") == cluster.image.groups.describe("g")
    assert restored.groups.committed_offset("g", ("t", 2)).offset == 42  # type: ignore[union-attr]
