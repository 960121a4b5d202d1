"""The ConsumerGroups gRPC service: membership heartbeats, offsets, and group administration.

Every node serves it. ``ListGroups`` and ``DescribeGroup`` read this node's
copy of the metadata image (plus live high watermarks from partition
leaders). Everything else is decided by the active controller's group
coordinator (:class:`~millpond.controller.group_coordinator.GroupCoordinator`):
served here if this node is the active controller, otherwise forwarded once to
it, as the Admin service forwards writes (a forwarded request that lands on a
node that is not the controller answers ``NOT_CONTROLLER`` rather than
bouncing again). ``OffsetFetch`` goes to the controller too: its image holds
every commit it acknowledged, so a member taking over a partition starts
exactly where the previous owner's last acknowledged commit left off.

Requests are validated here (sizes, counts, names) before they are converted
into the coordinator's types, which check the rest; every refusal is a
:class:`~millpond.errors.MillpondError` translated once by the interceptor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc

from millpond import errors, limits
from millpond.controller import ActiveController
from millpond.controller.groups import (
    CommittedOffset,
    HeartbeatRequest,
    OffsetCommitEntry,
    OffsetCommitRequest,
    PartitionBounds,
    ResetMode,
    ResetSpec,
)
from millpond.controller.groups.coordinator import validate_group_id
from millpond.controller.groups.errors import GroupError, to_millpond_error
from millpond.controller.groups.records import pack_partitions
from millpond.controller.groups.state import MemberState, TopicPartition
from millpond.controller.topic_config import cluster_partitions_max, topic_name_chars_max
from millpond.node.admin_service import FORWARDED_KEY, NodeView
from millpond.raft import Role
from millpond.v1 import broker_pb2, broker_pb2_grpc
from millpond.v1 import groups_pb2 as pb
from millpond.v1 import groups_pb2_grpc as pb_grpc

#: Longest a forwarded call may take (the client's own deadline is usually shorter).
_FORWARD_TIMEOUT_S = 30.0
#: Deadline of one ListOffsets asked of a partition leader.
_OFFSETS_TIMEOUT_S = 2.0
#: ListOffsets calls in flight at once for one DescribeGroup or ResetOffsets.
_OFFSETS_CONCURRENCY_MAX = 64
#: How long a forwarded DeleteGroup waits for this node's image to show the group gone.
_CATCH_UP_TIMEOUT_S = 5.0


def _check_group_id(group_id: str) -> None:
    try:
        validate_group_id(group_id)
    except GroupError as error:
        raise to_millpond_error(error) from None


def _check_topic(topic: str, what: str) -> None:
    if not 0 < len(topic) <= topic_name_chars_max:
        raise errors.InvalidRequest(f"{what}: topic name must be 1-{topic_name_chars_max} characters, "
                                    f"got {topic!r:.80}")


def _partitions(items: Iterable[pb.TopicPartitions], what: str, limit: int) -> list[TopicPartition]:
    """``TopicPartitions`` messages as (topic, partition) pairs, checked: names, at most ``limit``."""
    found: list[TopicPartition] = []
    for item in items:
        _check_topic(item.topic, what)
        found.extend((item.topic, partition) for partition in item.partitions)
        if len(found) > limit:
            raise errors.InvalidRequest(f"{what}: more than {limit} partitions")
    return found


def _topic_partitions(partitions: Iterable[TopicPartition]) -> list[pb.TopicPartitions]:
    return [pb.TopicPartitions(topic=topic, partitions=numbers)
            for topic, numbers in pack_partitions(partitions)]


def _heartbeat_request(request: pb.ConsumerGroupHeartbeatRequest) -> HeartbeatRequest:
    """The coordinator's request; absent optional fields stay ``None`` ("unchanged")."""
    names = None
    if request.HasField("subscribed_topic_names"):
        names = tuple(request.subscribed_topic_names.names)
        if len(names) > limits.group_subscribed_topics_max:
            raise errors.InvalidRequest(f"{len(names)} subscribed topic names; at most "
                                        f"{limits.group_subscribed_topics_max}")
        for name in names:
            _check_topic(name, "subscribed_topic_names")
    owned = None
    if request.HasField("owned"):
        owned = frozenset(_partitions(request.owned.topics, "owned", cluster_partitions_max))

    def optional(name: str) -> object:
        return getattr(request, name) if request.HasField(name) else None

    return HeartbeatRequest(
        group_id=request.group_id, member_id=request.member_id, member_epoch=request.member_epoch,
        instance_id=optional("instance_id"),  # type: ignore[arg-type]
        rebalance_timeout_ms=optional("rebalance_timeout_ms"),  # type: ignore[arg-type]
        session_timeout_ms=optional("session_timeout_ms"),  # type: ignore[arg-type]
        subscribed_topic_names=names,
        subscribed_topic_regex=optional("subscribed_topic_regex"),  # type: ignore[arg-type]
        server_assignor=optional("server_assignor"),  # type: ignore[arg-type]
        owned_partitions=owned,
    )


def _reset_spec(request: pb.ResetOffsetsRequest) -> ResetSpec:
    which = request.WhichOneof("target")
    if which is None:
        raise errors.InvalidRequest("a reset needs a target: to_earliest, to_latest, to_datetime_ms, "
                                    "shift_by or to_offset")
    if which == "to_earliest":
        return ResetSpec(ResetMode.TO_EARLIEST)
    if which == "to_latest":
        return ResetSpec(ResetMode.TO_LATEST)
    value = getattr(request, which)
    if which == "to_datetime_ms":
        if not 0 <= value <= limits.timestamp_ms_max:
            raise errors.InvalidRequest(f"to_datetime_ms must be a timestamp in ms >= 0, got {value}")
        return ResetSpec(ResetMode.TO_DATETIME, value)
    if which == "to_offset":
        if value < 0:
            raise errors.InvalidRequest(f"to_offset must be >= 0, got {value}")
        return ResetSpec(ResetMode.TO_OFFSET, value)
    return ResetSpec(ResetMode.SHIFT_BY, value)


def _member(member: MemberState, target: Iterable[TopicPartition]) -> pb.GroupMember:
    return pb.GroupMember(
        member_id=member.member_id, instance_id=member.instance_id, member_epoch=member.member_epoch,
        subscribed_topic_names=member.subscribed_topic_names,
        subscribed_topic_regex=member.subscribed_topic_regex, server_assignor=member.server_assignor,
        assigned=_topic_partitions(member.assigned),
        pending_revocation=_topic_partitions(member.pending_revocation), target=_topic_partitions(target),
        session_timeout_ms=member.session_timeout_ms, rebalance_timeout_ms=member.rebalance_timeout_ms)


def _committed(tp: TopicPartition, committed: CommittedOffset | None) -> pb.CommittedOffset:
    if committed is None:
        return pb.CommittedOffset(topic=tp[0], partition=tp[1], offset=-1, leader_epoch=-1)
    return pb.CommittedOffset(topic=tp[0], partition=tp[1], offset=committed.offset,
                              leader_epoch=committed.leader_epoch, metadata=committed.metadata,
                              commit_timestamp_ms=committed.commit_timestamp_ms)


class GroupService(pb_grpc.ConsumerGroupsServicer):
    """ConsumerGroups API of one node (see the module doc for who answers what)."""

    def __init__(self, view: NodeView) -> None:
        self._view = view

    # -- membership ----------------------------------------------------------------------------
    async def ConsumerGroupHeartbeat(self, request: pb.ConsumerGroupHeartbeatRequest,
                                     context: grpc.aio.ServicerContext) -> pb.ConsumerGroupHeartbeatResponse:
        heartbeat = _heartbeat_request(request)
        controller = self._controller_or_none(context)
        if controller is None:
            forwarded: pb.ConsumerGroupHeartbeatResponse = await self._forward("ConsumerGroupHeartbeat",
                                                                                request, context)
            return forwarded
        response = await controller.groups.heartbeat(heartbeat)
        return pb.ConsumerGroupHeartbeatResponse(
            member_id=response.member_id, member_epoch=response.member_epoch,
            heartbeat_interval_ms=response.heartbeat_interval_ms,
            assignment=_topic_partitions(response.assignment or ()))

    # -- offsets ----------------------------------------------------------------------------------
    async def OffsetCommit(self, request: pb.OffsetCommitRequest,
                           context: grpc.aio.ServicerContext) -> pb.OffsetCommitResponse:
        _check_group_id(request.group_id)
        if len(request.partitions) > limits.group_offset_request_partitions_max:
            raise errors.InvalidRequest(f"{len(request.partitions)} partitions in one commit; at most "
                                        f"{limits.group_offset_request_partitions_max}")
        entries = []
        for item in request.partitions:
            _check_topic(item.topic, "partitions")
            entries.append(OffsetCommitEntry(item.topic, item.partition, item.offset, item.leader_epoch,
                                             item.metadata))
        controller = self._controller_or_none(context)
        if controller is None:
            committed: pb.OffsetCommitResponse = await self._forward("OffsetCommit", request, context)
            return committed
        outcomes = await controller.groups.commit_offsets(
            OffsetCommitRequest(request.group_id, request.member_id, request.member_epoch, tuple(entries)))
        return pb.OffsetCommitResponse(results=[
            pb.PartitionResult(topic=o.topic, partition=o.partition,
                               error_reason=o.error.reason if o.error is not None else "",
                               error_message=o.error.message if o.error is not None else "")
            for o in outcomes])

    async def OffsetFetch(self, request: pb.OffsetFetchRequest,
                          context: grpc.aio.ServicerContext) -> pb.OffsetFetchResponse:
        _check_group_id(request.group_id)
        wanted = _partitions(request.partitions, "partitions", limits.group_offset_request_partitions_max)
        controller = self._controller_or_none(context)
        if controller is None:
            fetched: pb.OffsetFetchResponse = await self._forward("OffsetFetch", request, context)
            return fetched
        found = controller.groups.fetch_offsets(request.group_id, wanted or None, member_id=request.member_id,
                                                member_epoch=request.member_epoch)
        return pb.OffsetFetchResponse(offsets=[_committed(tp, found[tp]) for tp in sorted(found)])

    # -- reads from this node's image --------------------------------------------------------------
    async def ListGroups(self, request: pb.ListGroupsRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListGroupsResponse:
        return pb.ListGroupsResponse(groups=[
            pb.GroupListing(group_id=g.group_id, state=g.state.value, group_epoch=g.group_epoch,
                            members=g.members)
            for g in self._view.image.groups.list_groups()])

    async def DescribeGroup(self, request: pb.DescribeGroupRequest,
                            context: grpc.aio.ServicerContext) -> pb.DescribeGroupResponse:
        _check_group_id(request.group_id)
        image = self._view.image
        group = image.groups.group(request.group_id)
        if group is None:
            raise errors.GroupIdNotFound(f"group {request.group_id!r} does not exist")
        committed = image.groups.committed_offsets(group.group_id)
        counts = image.topic_partition_counts()
        partitions = set(committed)
        for topic, count in group.partition_counts.items():
            partitions.update((topic, p) for p in range(max(count, counts.get(topic, 0))))
        owners = group.owners()
        ordered = sorted(partitions)
        watermarks = await self._offsets(ordered, "latest", tolerate_errors=True)
        lags = []
        for tp, hw in zip(ordered, watermarks, strict=True):
            offset = committed.get(tp)
            lags.append(pb.PartitionLag(
                topic=tp[0], partition=tp[1], committed_offset=offset.offset if offset else -1,
                high_watermark=hw, lag=max(0, hw - offset.offset) if offset and hw >= 0 else -1,
                member_id=owners.get(tp, ""), metadata=offset.metadata if offset else "",
                commit_timestamp_ms=offset.commit_timestamp_ms if offset else 0))
        return pb.DescribeGroupResponse(
            group_id=group.group_id, state=group.state.value, group_epoch=group.group_epoch,
            assignment_epoch=group.assignment_epoch, assignor=group.assignor,
            members=[_member(group.members[m], group.target_of(m)) for m in sorted(group.members)],
            partitions=lags)

    # -- administration (controller) ---------------------------------------------------------------
    async def DeleteGroup(self, request: pb.DeleteGroupRequest,
                          context: grpc.aio.ServicerContext) -> pb.DeleteGroupResponse:
        _check_group_id(request.group_id)
        controller = self._controller_or_none(context)
        if controller is None:
            deleted: pb.DeleteGroupResponse = await self._forward("DeleteGroup", request, context)
            await self._view.wait_metadata(lambda image: image.groups.group(request.group_id) is None,
                                           _CATCH_UP_TIMEOUT_S)
            return deleted
        await controller.groups.delete_group(request.group_id)
        return pb.DeleteGroupResponse()

    async def ResetOffsets(self, request: pb.ResetOffsetsRequest,
                           context: grpc.aio.ServicerContext) -> pb.ResetOffsetsResponse:
        _check_group_id(request.group_id)
        spec = _reset_spec(request)
        if not request.partitions:
            raise errors.InvalidRequest("a reset needs at least one topic")
        image = self._view.image
        wanted: list[TopicPartition] = []
        for item in request.partitions:
            _check_topic(item.topic, "partitions")
            topic = image.topic(item.topic)
            if topic is None:
                raise errors.UnknownTopic(f"topic {item.topic!r} does not exist")
            numbers = list(item.partitions) or list(range(topic.partition_count))
            for number in numbers:
                if number >= topic.partition_count:
                    raise errors.UnknownPartition(f"topic {item.topic!r} has {topic.partition_count} "
                                                  f"partitions; {number} does not exist")
            wanted.extend((item.topic, number) for number in numbers)
            if len(wanted) > limits.group_offset_request_partitions_max:
                raise errors.InvalidRequest(f"more than {limits.group_offset_request_partitions_max} "
                                            f"partitions in one reset")
        wanted = sorted(set(wanted))
        controller = self._controller_or_none(context)
        if controller is None:
            reset: pb.ResetOffsetsResponse = await self._forward("ResetOffsets", request, context)
            return reset
        group = image.groups.group(request.group_id)
        if group is not None and group.members:  # checked again under the group's lock; spare the leaders
            raise errors.GroupNotEmpty(f"group {request.group_id!r} has {len(group.members)} member(s); stop "
                                       f"its consumers before resetting offsets")
        starts = await self._offsets(wanted, "earliest")
        ends = await self._offsets(wanted, "latest")
        bounds = {tp: PartitionBounds(start, end)
                  for tp, start, end in zip(wanted, starts, ends, strict=True)}
        by_timestamp = None
        if spec.mode == ResetMode.TO_DATETIME:
            found = await self._offsets(wanted, spec.value)
            by_timestamp = dict(zip(wanted, found, strict=True))
        plan = await controller.groups.reset_offsets(request.group_id, spec, bounds, by_timestamp,
                                                     dry_run=request.dry_run)
        return pb.ResetOffsetsResponse(executed=not request.dry_run, changes=[
            pb.OffsetChange(topic=c.topic, partition=c.partition,
                            previous_offset=-1 if c.previous is None else c.previous, offset=c.offset)
            for c in plan.changes])

    # -- partition offsets from their leaders ----------------------------------------------------------
    async def _offsets(self, partitions: Sequence[TopicPartition], spec: str | int, *,
                       tolerate_errors: bool = False) -> list[int]:
        """Each partition's offset per ``spec`` ("earliest", "latest" or a timestamp), asked of its leader.

        With ``tolerate_errors`` a partition whose leader cannot tell gives -1;
        otherwise that raises :class:`~millpond.errors.Unavailable` (or the leader's error).
        """
        gate = asyncio.Semaphore(_OFFSETS_CONCURRENCY_MAX)

        async def one(tp: TopicPartition) -> int:
            async with gate:
                try:
                    return await self._offset_of(tp, spec)
                except errors.MillpondError:
                    if tolerate_errors:
                        return -1
                    raise

        return list(await asyncio.gather(*(one(tp) for tp in partitions)))

    async def _offset_of(self, tp: TopicPartition, spec: str | int) -> int:
        topic_name, number = tp
        topic = self._view.image.topic(topic_name)
        if topic is None:
            raise errors.UnknownTopic(f"topic {topic_name!r} does not exist")
        group = topic.group(number)
        local = self._view.local_partition(group)
        if local is not None and local.replica.raft.role == Role.LEADER:
            if spec == "earliest":
                return local.log_start_offset
            if spec == "latest":
                return local.high_watermark
            return local.offset_for_timestamp(int(spec))[0]
        state = self._view.image.partition_by_group(group)
        leader = state.leader if state is not None else 0
        channel = self._view.peer_channel(leader) if leader and leader != self._view.node_id else None
        if channel is None:
            raise errors.Unavailable(f"{topic_name}/{number} has no known leader; retry shortly")
        request = broker_pb2.ListOffsetsRequest(topic=topic_name, partition=number)
        if spec == "earliest":
            request.earliest = True
        elif spec == "latest":
            request.latest = True
        else:
            request.timestamp_ms = int(spec)
        try:
            stub = broker_pb2_grpc.BrokerStub(channel)
            response = await stub.ListOffsets(request, timeout=_OFFSETS_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise errors.from_rpc_error(exc) from exc
        return int(response.offset)

    # -- forwarding to the active controller -------------------------------------------------------
    def _controller_or_none(self, context: grpc.aio.ServicerContext) -> ActiveController | None:
        """The active controller if it runs here; ``None`` to forward; NOT_CONTROLLER if this request
        was forwarded here already."""
        controller = self._view.controller
        if controller is not None:
            return controller
        if any(key == FORWARDED_KEY for key, _ in (context.invocation_metadata() or ())):
            leader = self._view.controller_id()
            raise errors.NotController("this node is not the active controller", leader,
                                       self._view.address_of(leader) if leader else "")
        return None

    async def _forward(self, method: str, request: object, context: grpc.aio.ServicerContext) -> Any:
        """Call ``method`` once on the active controller on this request's behalf (marked forwarded)."""
        leader = self._view.controller_id()
        if not leader or leader == self._view.node_id:
            raise errors.Unavailable("no active controller is known yet; retry shortly")
        channel = self._view.peer_channel(leader)
        if channel is None:
            raise errors.Unavailable(f"the active controller (node {leader}) has no known address yet")
        call: Callable[..., Awaitable[Any]] = getattr(pb_grpc.ConsumerGroupsStub(channel), method)
        remaining = context.time_remaining()
        try:
            return await call(request, timeout=min(remaining, _FORWARD_TIMEOUT_S) if remaining
                              else _FORWARD_TIMEOUT_S, metadata=((FORWARDED_KEY, "1"),))
        except grpc.aio.AioRpcError as exc:
            raise errors.from_rpc_error(exc) from exc
