"""The consumer's group membership against fake nodes whose ConsumerGroups service runs the real
(pure) group coordinator on an in-memory image: joining, revocation inside poll, callbacks, commits,
fencing and rejoining, giving up partitions when heartbeats fail for a session, leaving on close,
fatal errors; plus the membership's own bookkeeping and the configuration checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from client_fake_cluster import FakeCluster, State

from millpond import errors
from millpond.client import (
    AsyncConsumer,
    Consumer,
    ConsumerConfig,
    FencedMemberEpoch,
    OffsetAndMetadata,
    TopicPartition,
    UnknownMemberId,
)
from millpond.client._group import Membership, error_from_reason
from millpond.controller.groups import (
    GroupSettings,
    GroupsImage,
    HeartbeatRequest,
    OffsetCommitEntry,
    OffsetCommitRequest,
    commit_offsets,
    fetch_offsets,
    heartbeat,
)
from millpond.controller.groups.errors import GroupError, to_millpond_error
from millpond.record_batch import Record
from millpond.v1 import groups_pb2 as pb
from millpond.v1 import groups_pb2_grpc as pb_grpc

SETTINGS = GroupSettings(heartbeat_interval_ms=50, session_timeout_ms=1_000)
TOPIC = "orders"


@dataclass
class Coordinator:
    """The group coordinator of the fake cluster: the pure decisions applied to one image at once."""

    image: GroupsImage = field(default_factory=GroupsImage)
    topics: dict[str, int] = field(default_factory=dict)
    down: bool = False
    """Answer every ConsumerGroups call with UNAVAILABLE."""
    fence_next: int = 0
    """Answer the next N heartbeats with FENCED_MEMBER_EPOCH (and forget the member)."""
    refuse_with: errors.MillpondError | None = None
    heartbeats: list[pb.ConsumerGroupHeartbeatRequest] = field(default_factory=list)


class FakeGroups(pb_grpc.ConsumerGroupsServicer):
    def __init__(self, coordinator: Coordinator) -> None:
        self.c = coordinator

    async def _fail(self, context: grpc.aio.ServicerContext, error: errors.MillpondError) -> None:
        status, message, metadata = errors.to_status(error)
        await context.abort(status, message, trailing_metadata=tuple(metadata))

    async def ConsumerGroupHeartbeat(self, request: Any, context: Any) -> pb.ConsumerGroupHeartbeatResponse:
        c = self.c
        if c.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "coordinator down")
        c.heartbeats.append(request)
        if c.refuse_with is not None:
            await self._fail(context, c.refuse_with)
        if c.fence_next and request.member_epoch > 0:
            c.fence_next -= 1
            for record in _remove(c.image, request.group_id, request.member_id):
                assert c.image.apply(record).ok
            await self._fail(context, FencedMemberEpoch("fenced by the test"))
        owned = None
        if request.HasField("owned"):
            owned = frozenset((t.topic, p) for t in request.owned.topics for p in t.partitions)
        decision = heartbeat(c.image, HeartbeatRequest(
            request.group_id, request.member_id, request.member_epoch,
            instance_id=request.instance_id if request.HasField("instance_id") else None,
            session_timeout_ms=request.session_timeout_ms if request.HasField("session_timeout_ms") else None,
            subscribed_topic_names=tuple(request.subscribed_topic_names.names)
            if request.HasField("subscribed_topic_names") else None,
            subscribed_topic_regex=request.subscribed_topic_regex
            if request.HasField("subscribed_topic_regex") else None,
            owned_partitions=owned), c.topics, int(time.monotonic() * 1000),
            new_member_id=lambda: "server-named", settings=SETTINGS)
        if decision.response.error is not None:
            await self._fail(context, to_millpond_error(decision.response.error))
        for record in decision.records:
            assert c.image.apply(record).ok
        response = decision.response
        return pb.ConsumerGroupHeartbeatResponse(
            member_id=response.member_id, member_epoch=response.member_epoch,
            heartbeat_interval_ms=response.heartbeat_interval_ms,
            assignment=[pb.TopicPartitions(topic=t, partitions=ps) for t, ps in response.by_topic().items()])

    async def OffsetCommit(self, request: Any, context: Any) -> pb.OffsetCommitResponse:
        if self.c.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "coordinator down")
        decision = commit_offsets(self.c.image, OffsetCommitRequest(
            request.group_id, request.member_id, request.member_epoch,
            tuple(OffsetCommitEntry(p.topic, p.partition, p.offset, p.leader_epoch, p.metadata)
                  for p in request.partitions)), self.c.topics, 1)
        for record in decision.records:
            assert self.c.image.apply(record).ok
        results = []
        for result in decision.results:
            error = to_millpond_error(result.error) if result.error is not None else None
            results.append(pb.PartitionResult(topic=result.topic, partition=result.partition,
                                              error_reason=error.reason if error else "",
                                              error_message=error.message if error else ""))
        return pb.OffsetCommitResponse(results=results)

    async def OffsetFetch(self, request: Any, context: Any) -> pb.OffsetFetchResponse:
        if self.c.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "coordinator down")
        wanted = [(t.topic, p) for t in request.partitions for p in t.partitions]
        try:
            found = fetch_offsets(self.c.image, request.group_id, wanted or None, member_id=request.member_id,
                                  member_epoch=request.member_epoch)
        except GroupError as error:
            await self._fail(context, to_millpond_error(error))
            raise AssertionError("unreachable") from None
        return pb.OffsetFetchResponse(offsets=[
            pb.CommittedOffset(topic=t, partition=p, offset=o.offset if o else -1,
                               leader_epoch=o.leader_epoch if o else -1, metadata=o.metadata if o else "")
            for (t, p), o in sorted(found.items())])


def _remove(image: GroupsImage, group_id: str, member_id: str) -> list[Any]:
    from millpond.controller.groups import session_expired

    return session_expired(image, group_id, member_id)


@pytest.fixture
def groups() -> Iterator[tuple[FakeCluster, Coordinator]]:
    coordinator = Coordinator()

    def add(server: grpc.aio.Server, node_id: int, state: State) -> None:
        pb_grpc.add_ConsumerGroupsServicer_to_server(FakeGroups(coordinator), server)

    with FakeCluster(nodes=2, extra_services=add) as cluster:
        cluster.create_topic(TOPIC, 4)
        coordinator.topics[TOPIC] = 4
        for partition in range(4):
            records = [Record(key=b"k", value=b"p%d-%d" % (partition, i)) for i in range(5)]
            cluster.append(TOPIC, partition, records, timestamp_ms=1_000)
        yield cluster, coordinator


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


def _config(**overrides: Any) -> ConsumerConfig:
    settings = {"group_id": "g", "auto_offset_reset": "earliest", "session_timeout_ms": 1_000,
                "request_timeout_ms": 2_000, "retry_backoff_ms": 10, "retry_backoff_ms_max": 50,
                "auto_commit_interval_ms": 100, "fetch_wait_ms_max": 50, **overrides}
    return ConsumerConfig(**settings)


async def _poll_until(consumer: AsyncConsumer, condition: Callable[[], bool], what: str,
                      timeout_s: float = 10.0, into: list[Any] | None = None) -> list[Any]:
    """Poll until ``condition()``; return the records polled (appended to ``into`` if given)."""
    got: list[Any] = [] if into is None else into
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        got.extend(await consumer.poll(timeout_ms=20))
    return got


def test_join_consume_commit_and_hand_over_to_a_second_member(
        groups: tuple[FakeCluster, Coordinator]) -> None:
    cluster, coordinator = groups
    events: list[tuple[str, str, list[TopicPartition]]] = []

    def note(member: str, kind: str) -> Callable[[list[TopicPartition]], None]:
        return lambda partitions: events.append((member, kind, partitions))

    async def test() -> None:
        first = AsyncConsumer(cluster.bootstrap, _config())
        first.subscribe([TOPIC], on_assign=note("first", "assign"), on_revoke=note("first", "revoke"))
        records = await _poll_until(first, lambda: len(first.assignment()) == 4, "the first assignment")
        assert events[0] == ("first", "assign", [TopicPartition(TOPIC, p) for p in range(4)])
        await _poll_until(first, lambda: len(records) >= 20, "every record", into=records)
        assert sorted((r.partition, r.offset) for r in records) == [(p, o) for p in range(4)
                                                                    for o in range(5)]
        await first.commit()
        assert await first.committed([(TOPIC, 0), (TOPIC, 1)]) == {
            TopicPartition(TOPIC, 0): OffsetAndMetadata(5), TopicPartition(TOPIC, 1): OffsetAndMetadata(5)}
        assert first.member_epoch == 1 and len(first.member_id) == 32

        second = AsyncConsumer(cluster.bootstrap, _config())
        second.subscribe([TOPIC], on_assign=note("second", "assign"))

        async def both() -> None:
            while not (len(first.assignment()) == 2 and len(second.assignment()) == 2):
                await asyncio.gather(first.poll(timeout_ms=20), second.poll(timeout_ms=20))

        await asyncio.wait_for(both(), 10)
        kinds = [(member, kind) for member, kind, _ in events]
        assert kinds.index(("first", "revoke")) < kinds.index(("second", "assign"))
        revoked = next(p for m, k, p in events if (m, k) == ("first", "revoke"))
        assert sorted(second.assignment()) == revoked
        # The second member starts where the first committed: nothing is read twice.
        assert not await second.poll(timeout_ms=200)
        group = coordinator.image.group("g")
        assert group is not None and group.state.value == "stable"
        await first.close()
        await asyncio.wait_for(_until(lambda: len(second.assignment()) == 4, second), 10)
        await second.close()
        assert coordinator.heartbeats[-1].member_epoch == -1  # it left
        assert coordinator.image.group("g").members == {}  # type: ignore[union-attr]

    _run(test)


async def _until(condition: Callable[[], bool], *consumers: AsyncConsumer) -> None:
    while not condition():
        await asyncio.gather(*(c.poll(timeout_ms=20) for c in consumers))


def test_fenced_member_drops_everything_calls_on_lost_and_rejoins(
        groups: tuple[FakeCluster, Coordinator]) -> None:
    cluster, coordinator = groups
    lost: list[list[TopicPartition]] = []

    async def test() -> None:
        consumer = AsyncConsumer(cluster.bootstrap, _config())
        consumer.subscribe([TOPIC], on_lost=lost.append)
        await _poll_until(consumer, lambda: len(consumer.assignment()) == 4, "the assignment")
        member_id = consumer.member_id
        coordinator.fence_next = 1
        await _poll_until(consumer, lambda: bool(lost), "on_lost")
        assert lost == [[TopicPartition(TOPIC, p) for p in range(4)]]
        await _poll_until(consumer, lambda: len(consumer.assignment()) == 4, "the assignment again")
        assert consumer.member_id == member_id  # rejoined under the same id, with epoch 0
        assert any(h.member_epoch == 0 and h.member_id == member_id for h in coordinator.heartbeats[2:])
        await consumer.close()

    _run(test)


def test_a_member_that_cannot_heartbeat_for_a_session_gives_up_its_partitions(
        groups: tuple[FakeCluster, Coordinator]) -> None:
    cluster, coordinator = groups
    lost_at: list[float] = []

    async def test() -> None:
        consumer = AsyncConsumer(cluster.bootstrap, _config())
        consumer.subscribe([TOPIC], on_lost=lambda partitions: lost_at.append(time.monotonic()))
        await _poll_until(consumer, lambda: len(consumer.assignment()) == 4, "the assignment")
        down_at = time.monotonic()
        coordinator.down = True
        await _poll_until(consumer, lambda: not consumer.assignment(), "the partitions to be dropped", 10)
        # Within its session timeout of the last heartbeat that went through, never later.
        assert lost_at and lost_at[0] - down_at <= 1.0 + 0.3
        coordinator.down = False
        await _poll_until(consumer, lambda: len(consumer.assignment()) == 4, "the assignment again")
        await consumer.close()

    _run(test)


def test_an_error_nothing_cures_is_raised_by_every_poll(groups: tuple[FakeCluster, Coordinator]) -> None:
    cluster, coordinator = groups
    coordinator.refuse_with = errors.FencedInstanceId("instance id 'a' belongs to member 'x' now")

    async def test() -> None:
        consumer = AsyncConsumer(cluster.bootstrap, _config(group_instance_id="a"))
        consumer.subscribe([TOPIC])
        for _ in range(2):
            with pytest.raises(errors.FencedInstanceId, match="belongs to member 'x'"):
                await _poll_until(consumer, lambda: False, "an error", 5)
        await consumer.close()

    _run(test)


def test_commit_outside_the_assignment_and_after_removal_is_refused(
        groups: tuple[FakeCluster, Coordinator]) -> None:
    cluster, coordinator = groups

    async def test() -> None:
        consumer = AsyncConsumer(cluster.bootstrap, _config(enable_auto_commit=False))
        consumer.subscribe([TOPIC])
        await _poll_until(consumer, lambda: len(consumer.assignment()) == 4, "the assignment")
        with pytest.raises(errors.UnknownPartition):
            await consumer.commit({(TOPIC, 9): 1})
        await consumer.commit({(TOPIC, 0): OffsetAndMetadata(3, "note")})
        committed = await consumer.committed([(TOPIC, 0)])
        assert committed[TopicPartition(TOPIC, 0)] == OffsetAndMetadata(3, "note")
        for record in _remove(coordinator.image, "g", consumer.member_id):
            coordinator.image.apply(record)
        with pytest.raises(UnknownMemberId):
            await consumer.commit({(TOPIC, 0): 4})
        await consumer.close()

    _run(test)


# --- without a cluster ----------------------------------------------------------------------------


def test_the_membership_reports_what_it_owns_and_sends_the_subscription_when_it_changes() -> None:
    membership = Membership("g", "m", instance_id="host-a", session_timeout_ms=5_000)
    membership.subscribe(["b", "a", "a"], None)
    join = membership.heartbeat_request()
    assert (join.member_epoch, list(join.subscribed_topic_names.names), join.subscribed_topic_regex) == (
        0, ["a", "b"], "")
    assert join.session_timeout_ms == 5_000 and join.instance_id == "host-a" and join.HasField("owned")
    answer = pb.ConsumerGroupHeartbeatResponse(member_id="m", member_epoch=3, heartbeat_interval_ms=100,
                                               assignment=[pb.TopicPartitions(topic="a", partitions=[0, 1])])
    step = membership.on_answer(answer, join)
    assert step.assign == {("a", 0), ("a", 1)} and not step.revoke
    assert membership.started([TopicPartition("a", 0), TopicPartition("a", 1)]) == {("a", 0), ("a", 1)}
    steady = membership.heartbeat_request()
    assert steady.member_epoch == 3 and not steady.HasField("subscribed_topic_names")
    assert [(t.topic, list(t.partitions)) for t in steady.owned.topics] == [("a", [0, 1])]
    # Partition a/1 is taken back: it stays owned (and reported) until released.
    step = membership.on_answer(pb.ConsumerGroupHeartbeatResponse(
        member_id="m", member_epoch=3, assignment=[pb.TopicPartitions(topic="a", partitions=[0])]), steady)
    assert step.revoke == {("a", 1)}
    assert [list(t.partitions) for t in membership.heartbeat_request().owned.topics] == [[0, 1]]
    membership.released([TopicPartition("a", 1)])
    assert [list(t.partitions) for t in membership.heartbeat_request().owned.topics] == [[0]]
    membership.subscribe(None, "a.*")
    changed = membership.heartbeat_request()
    assert list(changed.subscribed_topic_names.names) == [] and changed.subscribed_topic_regex == "a.*"
    assert membership.heartbeat_request(leave=True).member_epoch == -2  # static: leaves temporarily
    assert membership.lose_all() == {("a", 0)} and membership.epoch == 0


def test_partitions_taken_back_before_they_started_are_not_started() -> None:
    membership = Membership("g", "m")
    membership.subscribe(["a"], None)
    request = membership.heartbeat_request()
    for epoch, partitions in ((1, [0, 1]), (2, [1])):
        assignment = [pb.TopicPartitions(topic="a", partitions=partitions)]
        membership.on_answer(pb.ConsumerGroupHeartbeatResponse(member_id="m", member_epoch=epoch,
                                                               assignment=assignment), request)
    assert membership.started([TopicPartition("a", 0), TopicPartition("a", 1)]) == {("a", 1)}


def test_a_partition_given_and_taken_back_between_two_polls_is_never_announced() -> None:
    """Heartbeat answers can start a partition and revoke it before the next poll: the application
    must not hear ``on_assign`` for it (it would believe it owns a partition another member owns)."""
    from millpond.client._group import Reconciliation

    async def scenario() -> tuple[list[tuple[str, list[TopicPartition]]], list[TopicPartition]]:
        calls: list[tuple[str, list[TopicPartition]]] = []
        consumer = AsyncConsumer("127.0.0.1:1", ConsumerConfig(group_id="g", enable_auto_commit=False))
        group = Membership("g", "m1", epoch=3)
        consumer._group = group
        consumer._on_assign = lambda ps: calls.append(("assign", ps))
        consumer._on_revoke = lambda ps: calls.append(("revoke", ps))

        async def no_commits(partitions: Any, member: bool, **_: Any) -> dict[Any, Any]:
            return dict.fromkeys(partitions)

        consumer._fetch_committed = no_commits  # type: ignore[method-assign]
        tp = TopicPartition("t", 0)
        group.starting.add(tp)  # one answer gives t/0 ...
        await consumer._reconcile(group, Reconciliation(frozenset(), frozenset({tp})))
        group.revoking.add(tp)  # ... the next, before any poll, takes it back
        await consumer._reconcile(group, Reconciliation(frozenset({tp}), frozenset()))
        await consumer._group_duties(asyncio.get_running_loop())  # what the next poll does first
        assignment = consumer.assignment()
        await consumer.close()
        return calls, assignment

    calls, assignment = asyncio.run(scenario())
    assert calls == [] and assignment == []


@pytest.mark.parametrize(("overrides", "message"), [
    ({"group_id": ""}, "group_id must be 1-255 UTF-8 bytes"),
    ({"group_id": "g" * 256}, "group_id must be 1-255 UTF-8 bytes"),
    ({"group_instance_id": "é" * 128}, "group_instance_id must be 1-255 UTF-8 bytes"),
    ({"session_timeout_ms": 999}, r"session_timeout_ms must be in \[1000, 300000\]"),
    ({"rebalance_timeout_ms": 0}, r"rebalance_timeout_ms must be in \[1, 1800000\]"),
    ({"server_assignor": "fair"}, "server_assignor must be 'uniform', 'range' or None"),
    ({"auto_commit_interval_ms": 0}, r"auto_commit_interval_ms must be in \[1, 3600000\]"),
])
def test_group_settings_are_checked(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConsumerConfig(**overrides)


def test_subscribe_and_assign_exclude_each_other_and_need_a_group() -> None:
    async def test() -> None:
        async with AsyncConsumer("127.0.0.1:1", ConsumerConfig()) as plain:
            with pytest.raises(ValueError, match="needs ConsumerConfig"):
                plain.subscribe(["t"])
        async with AsyncConsumer("127.0.0.1:1", ConsumerConfig(group_id="g")) as consumer:
            with pytest.raises(TypeError, match="not one str"):
                consumer.subscribe("t")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="needs topics or a pattern"):
                consumer.subscribe([])
            with pytest.raises(ValueError, match="does not compile"):
                consumer.subscribe(pattern="(")
            consumer.assign([("t", 0)])
            with pytest.raises(RuntimeError, match="exclude each other"):
                consumer.subscribe(["t"])
        config = ConsumerConfig(group_id="g", request_timeout_ms=100)
        async with AsyncConsumer("127.0.0.1:1", config) as member:
            member.subscribe(["t"])
            with pytest.raises(RuntimeError, match="exclude each other"):
                member.assign([("t", 0)])

    _run(test)


def test_partition_errors_map_to_the_error_tree() -> None:
    for reason, cls in [("STALE_MEMBER_EPOCH", errors.StaleMemberEpoch),
                        ("PARTITION_NOT_ASSIGNED", errors.PartitionNotAssigned),
                        ("GROUP_MAX_SIZE_REACHED", errors.GroupMaxSizeReached),
                        ("SOMETHING_NEW", errors.InternalError)]:
        error = error_from_reason(reason, "why")
        assert type(error) is cls and error.message == "why"
    assert errors.StaleMemberEpoch.retriable and not errors.FencedMemberEpoch.retriable



def test_the_blocking_consumer_subscribes_commits_and_leaves(groups: tuple[FakeCluster, Coordinator]) -> None:
    cluster, coordinator = groups
    assigned: list[list[TopicPartition]] = []
    with Consumer(cluster.bootstrap, _config(enable_auto_commit=False)) as consumer:
        consumer.subscribe([TOPIC], on_assign=assigned.append)
        records: list[Any] = []
        deadline = time.monotonic() + 10
        while len(records) < 20:
            assert time.monotonic() < deadline, "timed out waiting for every record"
            records.extend(consumer.poll(timeout_ms=50))
        assert assigned == [[TopicPartition(TOPIC, p) for p in range(4)]]
        consumer.commit()
        assert consumer.committed([(TOPIC, 3)]) == {TopicPartition(TOPIC, 3): OffsetAndMetadata(5)}
        assert consumer.member_epoch == 1 and consumer.member_id
    assert coordinator.heartbeats[-1].member_epoch == -1


def test_a_static_member_restarting_takes_its_partitions_back_without_a_rebalance(
        groups: tuple[FakeCluster, Coordinator]) -> None:
    cluster, coordinator = groups

    async def test() -> None:
        first = AsyncConsumer(cluster.bootstrap, _config(group_instance_id="host-a"))
        first.subscribe([TOPIC])
        await _poll_until(first, lambda: len(first.assignment()) == 4, "the assignment")
        epoch_before = coordinator.image.group("g").group_epoch  # type: ignore[union-attr]
        await first.close()
        assert coordinator.heartbeats[-1].member_epoch == -2  # left temporarily
        restarted = AsyncConsumer(cluster.bootstrap, _config(group_instance_id="host-a"))
        restarted.subscribe([TOPIC])
        await _poll_until(restarted, lambda: len(restarted.assignment()) == 4, "the same partitions")
        group = coordinator.image.group("g")
        assert group is not None and list(group.members) == [restarted.member_id] != [first.member_id]
        assert group.group_epoch == epoch_before  # no rebalance: the successor took the member's place
        await restarted.close()

    _run(test)
