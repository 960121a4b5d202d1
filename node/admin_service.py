"""The Admin gRPC service: cluster and topic metadata, topic administration.

Reads are answered from this node's copy of the metadata image (plus live
offsets from partition leaders for ``DescribeTopic``). Writes go to the active
controller: served here if this node is it, otherwise forwarded once to it
(a forwarded request that lands on a node that is not the controller answers
``NOT_CONTROLLER`` rather than bouncing again).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import grpc

from millpond import errors
from millpond.controller import ActiveController, MetadataImage, PartitionState, TopicState
from millpond.node.partition import PartitionMachine
from millpond.node.raft_host import RaftHost
from millpond.raft import RaftError, Role
from millpond.v1 import admin_pb2 as pb
from millpond.v1 import admin_pb2_grpc as pb_grpc
from millpond.v1 import broker_pb2, broker_pb2_grpc
from millpond.v1 import common_pb2 as common

T = TypeVar("T")

FORWARDED_KEY = "millpond-forwarded"
_OFFSETS_TIMEOUT_S = 2.0
_CATCH_UP_TIMEOUT_S = 5.0
#: How long TransferLeadership waits for the target to take over before answering anyway.
_TRANSFER_WAIT_S = 5.0


def _check_topic_partition(topic: str, partition: int) -> None:
    if not topic:
        raise errors.InvalidRequest("topic must not be empty")
    if partition < 0:
        raise errors.InvalidRequest(f"partition must be >= 0, got {partition}")


def _partition_count(image: MetadataImage, name: str) -> int:
    topic = image.topic(name)
    return topic.partition_count if topic is not None else 0


class NodeView(Protocol):
    """What the admin service needs from its node."""

    node_id: int

    @property
    def image(self) -> MetadataImage: ...

    @property
    def controller(self) -> ActiveController | None: ...

    def controller_id(self) -> int: ...

    def controller_voters(self) -> list[int]: ...

    def address_of(self, node_id: int) -> str: ...

    def peer_channel(self, node_id: int) -> grpc.aio.Channel | None: ...

    @property
    def host(self) -> RaftHost: ...

    def local_partition(self, group: int) -> PartitionMachine | None: ...

    async def wait_metadata(self, condition: Callable[[MetadataImage], bool], timeout_s: float) -> bool:
        """Wait until this node's image satisfies ``condition``; False on timeout."""
        ...


def topic_info(view: NodeView, topic: TopicState,
               offsets: dict[int, tuple[int, int]] | None = None) -> common.TopicInfo:
    """A topic as the API describes it; offsets are -1 where unknown."""
    image = view.image
    partitions = []
    for state in image.partitions(topic.topic_id):
        leader, epoch = state.leader, state.leader_epoch
        local = view.local_partition(state.group)
        if local is not None and local.replica.raft.role == Role.LEADER:
            leader, epoch = view.node_id, local.replica.raft.term
        start, hw = (offsets or {}).get(state.group, (-1, -1))
        partitions.append(common.PartitionInfo(
            partition=state.partition, leader=leader, leader_epoch=epoch,
            replicas=list(state.replicas), isr=list(state.isr),
            log_start_offset=start, high_watermark=hw,
        ))
    return common.TopicInfo(name=topic.name, topic_id=topic.topic_id,
                            replication_factor=topic.replication_factor,
                            partitions=partitions, config=topic.config_dict())


class AdminService(pb_grpc.AdminServicer):
    """Admin API of one node."""

    def __init__(self, view: NodeView) -> None:
        self._view = view

    # -- reads -------------------------------------------------------------------------------
    async def DescribeCluster(self, request: pb.DescribeClusterRequest,
                              context: grpc.aio.ServicerContext) -> pb.DescribeClusterResponse:
        image = self._view.image
        nodes = [common.NodeInfo(id=n.node_id, address=n.address, epoch=n.epoch, alive=n.alive)
                 for n in image.nodes()]
        partitions = [p for t in image.topics() for p in image.partitions(t.topic_id)]
        return pb.DescribeClusterResponse(
            cluster_id="millpond", nodes=nodes, controller=self._view.controller_id(),
            controller_voters=self._view.controller_voters(),
            topics=[topic_info(self._view, t) for t in image.topics()] if request.include_topics else [],
            under_replicated_partitions=sum(1 for p in partitions if len(p.isr) < len(p.replicas)),
            offline_partitions=sum(1 for p in partitions if p.leader == 0),
        )

    async def ListTopics(self, request: pb.ListTopicsRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListTopicsResponse:
        return pb.ListTopicsResponse(names=sorted(t.name for t in self._view.image.topics()))

    async def DescribeTopic(self, request: pb.DescribeTopicRequest,
                            context: grpc.aio.ServicerContext) -> common.TopicInfo:
        topic = self._view.image.topic(request.name)
        if topic is None:
            raise errors.UnknownTopic(f"topic {request.name!r} does not exist")
        offsets = await self._leader_offsets(topic)
        return topic_info(self._view, topic, offsets)

    async def _leader_offsets(self, topic: TopicState) -> dict[int, tuple[int, int]]:
        """(log start, high watermark) of each partition, asked of its leader."""
        states = self._view.image.partitions(topic.topic_id)
        results = await asyncio.gather(*(self._offsets_of(topic.name, s.partition, s.group, s.leader)
                                         for s in states))
        return {s.group: r for s, r in zip(states, results, strict=True)}

    async def _offsets_of(self, name: str, partition: int, group: int, leader: int) -> tuple[int, int]:
        local = self._view.local_partition(group)
        if local is not None and local.replica.raft.role == Role.LEADER:
            return local.log_start_offset, local.high_watermark
        channel = self._view.peer_channel(leader) if leader else None
        if channel is None:
            return -1, -1
        stub = broker_pb2_grpc.BrokerStub(channel)
        try:
            start, end = await asyncio.gather(
                stub.ListOffsets(broker_pb2.ListOffsetsRequest(topic=name, partition=partition,
                                                               earliest=True), timeout=_OFFSETS_TIMEOUT_S),
                stub.ListOffsets(broker_pb2.ListOffsetsRequest(topic=name, partition=partition,
                                                               latest=True), timeout=_OFFSETS_TIMEOUT_S),
            )
        except grpc.aio.AioRpcError:
            return -1, -1
        return start.offset, end.offset

    # -- writes (controller) ------------------------------------------------------------------------
    async def CreateTopic(self, request: pb.CreateTopicRequest,
                          context: grpc.aio.ServicerContext) -> pb.CreateTopicResponse:
        controller = self._controller_or_none(context)
        if controller is None:
            created = await self._forward("CreateTopic", request, pb.CreateTopicResponse, context)
            await self._caught_up(lambda image: image.topic_by_id(created.topic.topic_id) is not None)
            return created
        topic = await controller.create_topic(request.name, request.partitions,
                                              request.replication_factor, dict(request.config))
        return pb.CreateTopicResponse(topic=topic_info(self._view, topic))

    async def DeleteTopic(self, request: pb.DeleteTopicRequest,
                          context: grpc.aio.ServicerContext) -> pb.DeleteTopicResponse:
        controller = self._controller_or_none(context)
        if controller is None:
            deleted = await self._forward("DeleteTopic", request, pb.DeleteTopicResponse, context)
            await self._caught_up(lambda image: image.topic(request.name) is None)
            return deleted
        await controller.delete_topic(request.name)
        return pb.DeleteTopicResponse()

    async def AlterPartitions(self, request: pb.AlterPartitionsRequest,
                              context: grpc.aio.ServicerContext) -> pb.AlterPartitionsResponse:
        controller = self._controller_or_none(context)
        if controller is None:
            altered = await self._forward("AlterPartitions", request, pb.AlterPartitionsResponse, context)
            await self._caught_up(lambda image: _partition_count(image, request.name) >= request.partitions)
            return altered
        topic = await controller.alter_partitions(request.name, request.partitions)
        return pb.AlterPartitionsResponse(topic=topic_info(self._view, topic))

    async def ReassignPartition(self, request: pb.ReassignPartitionRequest,
                                context: grpc.aio.ServicerContext) -> pb.ReassignPartitionResponse:
        _check_topic_partition(request.topic, request.partition)
        controller = self._controller_or_none(context)
        if controller is None:
            return await self._forward("ReassignPartition", request, pb.ReassignPartitionResponse, context)
        topic = await controller.reassign_partition(request.topic, request.partition, list(request.replicas))
        return pb.ReassignPartitionResponse(topic=topic_info(self._view, topic))

    # -- one partition's leader or replica ----------------------------------------------------------
    async def TransferLeadership(self, request: pb.TransferLeadershipRequest,
                                 context: grpc.aio.ServicerContext) -> pb.TransferLeadershipResponse:
        _check_topic_partition(request.topic, request.partition)
        state = self._partition_state(request.topic, request.partition)
        local = self._view.local_partition(state.group)
        if local is None or local.replica.raft.role != Role.LEADER:
            forwarded = any(key == FORWARDED_KEY for key, _ in (context.invocation_metadata() or ()))
            leader = state.leader
            if forwarded or not leader or leader == self._view.node_id:
                raise errors.Unavailable(f"{request.topic}/{request.partition} has no leader here; retry")
            channel = self._view.peer_channel(leader)
            if channel is None:
                raise errors.Unavailable(f"the leader of {request.topic}/{request.partition} (node {leader}) "
                                         "has no known address yet")
            return await self._call(pb_grpc.AdminStub(channel).TransferLeadership, request,
                                    pb.TransferLeadershipResponse, context)
        raft = local.replica.raft
        if request.node_id not in raft.membership.voters:
            raise errors.InvalidRequest(f"node {request.node_id} is not a voter of {request.topic}/"
                                        f"{request.partition} (voters {sorted(raft.membership.voters)})")
        if request.node_id != self._view.node_id:
            try:
                raft.transfer_leader(request.node_id)
            except RaftError as exc:
                raise errors.Unavailable(f"transfer of {request.topic}/{request.partition} to node "
                                         f"{request.node_id} refused now: {exc}") from exc
            self._view.host.mark(state.group)
            # Stepping down comes first (leader unknown), the new leader's first message later.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + _TRANSFER_WAIT_S
            while raft.lead in (0, self._view.node_id) and loop.time() < deadline:
                await local.wait_leadership_change(deadline - loop.time())
        return pb.TransferLeadershipResponse(leader=raft.lead, leader_epoch=raft.term)

    async def DescribeReplica(self, request: pb.DescribeReplicaRequest,
                              context: grpc.aio.ServicerContext) -> pb.DescribeReplicaResponse:
        _check_topic_partition(request.topic, request.partition)
        state = self._partition_state(request.topic, request.partition)
        local = self._view.local_partition(state.group)
        if local is None:
            raise errors.ReplicaNotHosted(f"node {self._view.node_id} hosts no replica of "
                                          f"{request.topic}/{request.partition}")
        upto = local.high_watermark if request.upto_offset < 0 else request.upto_offset
        if upto > local.high_watermark:
            raise errors.OffsetOutOfRange(
                f"upto_offset {upto} is above the high watermark {local.high_watermark} of node "
                f"{self._view.node_id}'s replica of {request.topic}/{request.partition}",
                local.log_start_offset, local.high_watermark)
        digest = hashlib.sha256()
        batches = records = 0
        end = local.log_start_offset
        for batch in local.committed_batches(upto):
            digest.update(batch.data)
            batches += 1
            records += batch.record_count
            end = batch.end_offset
        raft = local.replica.raft
        return pb.DescribeReplicaResponse(
            node_id=self._view.node_id, high_watermark=local.high_watermark,
            log_start_offset=local.log_start_offset, checksum_end_offset=end, batches=batches,
            records=records, checksum=digest.hexdigest(), role=raft.role.value, term=raft.term,
            commit_index=raft.log.committed)

    def _partition_state(self, topic_name: str, partition: int) -> PartitionState:
        image = self._view.image
        topic = image.topic(topic_name)
        if topic is None:
            raise errors.UnknownTopic(f"topic {topic_name!r} does not exist")
        if partition >= topic.partition_count:
            raise errors.UnknownPartition(f"topic {topic_name!r} has no partition {partition} "
                                          f"(it has {topic.partition_count})")
        state = image.partition_by_group(topic.group(partition))
        if state is None:
            raise errors.UnknownPartition(f"{topic_name}/{partition} is not in the metadata yet")
        return state

    def _controller_or_none(self, context: grpc.aio.ServicerContext) -> ActiveController | None:
        controller = self._view.controller
        if controller is not None:
            return controller
        forwarded = any(key == FORWARDED_KEY for key, _ in (context.invocation_metadata() or ()))
        if forwarded:
            leader = self._view.controller_id()
            raise errors.NotController("this node is not the active controller", leader,
                                       self._view.address_of(leader) if leader else "")
        return None

    async def _caught_up(self, condition: Callable[[MetadataImage], bool]) -> None:
        """After a forwarded write: let this node apply it too, so that a client reading from
        the node it wrote through sees its own write (bounded; later reads may still race)."""
        await self._view.wait_metadata(condition, _CATCH_UP_TIMEOUT_S)

    async def _forward(self, method: str, request: object, response_type: type[T],
                          context: grpc.aio.ServicerContext) -> T:
        leader = self._view.controller_id()
        if not leader or leader == self._view.node_id:
            raise errors.Unavailable("no active controller is known yet; retry shortly")
        channel = self._view.peer_channel(leader)
        if channel is None:
            raise errors.Unavailable(f"the active controller (node {leader}) has no known address yet")
        stub = pb_grpc.AdminStub(channel)
        return await self._call(getattr(stub, method), request, response_type, context)

    async def _call(self, method: Callable[..., Awaitable[T]], request: object, response_type: type[T],
                    context: grpc.aio.ServicerContext) -> T:
        """Call another node once on this request's behalf (marked forwarded: it will not forward again)."""
        remaining = context.time_remaining()
        try:
            response: T = await method(request, timeout=min(remaining, 30.0) if remaining else 30.0,
                                       metadata=((FORWARDED_KEY, "1"),))
        except grpc.aio.AioRpcError as exc:
            raise errors.from_rpc_error(exc) from exc
        return response
