"""An in-process stand-in for a millpond cluster, to test client logic over real gRPC.

Each fake node is a real ``grpc.aio`` server on 127.0.0.1 (a free port) that
serves the public Admin and Broker services from one shared, in-memory
state: topics, partition leaders, and per-partition logs of stamped batches
(checked with ``validate_batch`` and ``stamp`` as the broker does). Tests
script faults: answers with a given status and trailing metadata, leader
moves, delays. It knows nothing of Raft or replication; the real cluster is
tested in ``test_client_cluster.py``.

All servers run on one event loop in a background thread, so both the
asynchronous clients (on the test's loop) and the blocking facades can use
them. Change the state only through :meth:`FakeCluster.call`.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import grpc.aio

from millpond import record_batch
from millpond.errors import (
    MillpondError,
    NotLeader,
    OffsetOutOfRange,
    TopicExists,
    UnknownPartition,
    UnknownTopic,
    to_status,
)
from millpond.v1 import admin_pb2, admin_pb2_grpc, broker_pb2, broker_pb2_grpc, common_pb2

T = TypeVar("T")


@dataclass
class Fault:
    """Answer the next matching call with an error instead of serving it."""

    method: str
    """"Produce", "Fetch", "ListOffsets", "DescribeCluster", ..."""
    error: MillpondError | None = None
    status: grpc.StatusCode | None = None
    """A bare status without millpond metadata (when ``error`` is None)."""
    node: int | None = None
    """Only on this node (any node if None)."""
    delay_s: float = 0.0
    """Sleep this long first (to trigger client deadlines)."""
    apply: bool = False
    """Serve the call (append the batch) but still answer with the error (a lost reply)."""


@dataclass
class Partition:
    leader: int
    batches: list[bytes] = field(default_factory=list)
    next_offset: int = 0
    log_start_offset: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class State:
    nodes: dict[int, str] = field(default_factory=dict)
    down: set[int] = field(default_factory=set)
    """Nodes that answer UNAVAILABLE to everything."""
    cut_off: set[int] = field(default_factory=set)
    """Nodes cut off from the majority: they answer metadata requests with a stale view (no
    active controller, no partition leader), as a real isolated node does."""
    topics: dict[str, list[Partition]] = field(default_factory=dict)
    topic_ids: dict[str, int] = field(default_factory=dict)
    faults: deque[Fault] = field(default_factory=deque)
    calls: list[tuple[int, str, str, int]] = field(default_factory=list)
    """(node, method, topic, partition) of every Broker call served or failed."""
    inflight_produce: int = 0
    inflight_produce_max: int = 0
    produce_delay_s: float = 0.0


class FakeNode(admin_pb2_grpc.AdminServicer, broker_pb2_grpc.BrokerServicer):
    def __init__(self, node_id: int, state: State) -> None:
        self.node_id = node_id
        self.state = state

    # --- helpers ---------------------------------------------------------------------
    async def _fail(self, context: grpc.aio.ServicerContext, error: MillpondError) -> None:
        status, message, metadata = to_status(error)
        await context.abort(status, message, trailing_metadata=tuple(metadata))

    async def _gate(self, method: str, context: grpc.aio.ServicerContext) -> Fault | None:
        if self.node_id in self.state.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"node {self.node_id} is down")
        for fault in list(self.state.faults):
            if fault.method == method and fault.node in (None, self.node_id):
                self.state.faults.remove(fault)
                if fault.delay_s:
                    await asyncio.sleep(fault.delay_s)
                if fault.apply:
                    return fault
                await self._abort_with(fault, context)
        return None

    async def _abort_with(self, fault: Fault, context: grpc.aio.ServicerContext) -> None:
        if fault.error is not None:
            await self._fail(context, fault.error)
        if fault.status is not None:
            await context.abort(fault.status, "scripted fault")

    async def _partition(self, topic: str, partition: int, context: grpc.aio.ServicerContext) -> Partition:
        partitions = self.state.topics.get(topic)
        if partitions is None:
            await self._fail(context, UnknownTopic(f"unknown topic {topic!r}"))
            raise AssertionError("unreachable")
        if partition >= len(partitions):
            await self._fail(context, UnknownPartition(f"no partition {partition}"))
        found = partitions[partition]
        if found.leader != self.node_id:
            address = self.state.nodes.get(found.leader, "")
            await self._fail(context, NotLeader("not the leader", found.leader if address else 0, address))
        return found

    # --- Admin ---------------------------------------------------------------------------
    def _topic_info(self, name: str) -> common_pb2.TopicInfo:
        return common_pb2.TopicInfo(
            name=name, topic_id=self.state.topic_ids[name], replication_factor=1,
            partitions=[
                common_pb2.PartitionInfo(partition=i, leader=p.leader, replicas=[p.leader], isr=[p.leader],
                                         log_start_offset=p.log_start_offset, high_watermark=p.next_offset)
                for i, p in enumerate(self.state.topics[name])
            ],
        )

    async def DescribeCluster(self, request: Any, context: Any) -> admin_pb2.DescribeClusterResponse:
        await self._gate("DescribeCluster", context)
        if self.node_id in self.state.cut_off:
            stale = [common_pb2.TopicInfo(
                name=name, topic_id=self.state.topic_ids[name], replication_factor=1,
                partitions=[common_pb2.PartitionInfo(partition=i, leader=0)
                            for i in range(len(self.state.topics[name]))])
                for name in sorted(self.state.topics)] if request.include_topics else []
            return admin_pb2.DescribeClusterResponse(
                cluster_id="fake", controller=0, topics=stale,
                nodes=[common_pb2.NodeInfo(id=i, address=a, epoch=1, alive=True)
                       for i, a in sorted(self.state.nodes.items())])
        return admin_pb2.DescribeClusterResponse(
            cluster_id="fake",
            nodes=[common_pb2.NodeInfo(id=i, address=a, epoch=1, alive=i not in self.state.down)
                   for i, a in sorted(self.state.nodes.items())],
            controller=min(self.state.nodes),
            controller_voters=sorted(self.state.nodes),
            topics=[self._topic_info(name) for name in sorted(self.state.topics)]
            if request.include_topics else [],
        )

    async def CreateTopic(self, request: Any, context: Any) -> admin_pb2.CreateTopicResponse:
        await self._gate("CreateTopic", context)
        if request.name in self.state.topics:
            await self._fail(context, TopicExists(f"topic {request.name!r} already exists"))
        nodes = sorted(self.state.nodes)
        self.state.topics[request.name] = [
            Partition(leader=nodes[i % len(nodes)]) for i in range(request.partitions)
        ]
        self.state.topic_ids[request.name] = len(self.state.topic_ids) + 1
        return admin_pb2.CreateTopicResponse(topic=self._topic_info(request.name))

    async def DeleteTopic(self, request: Any, context: Any) -> admin_pb2.DeleteTopicResponse:
        await self._gate("DeleteTopic", context)
        if self.state.topics.pop(request.name, None) is None:
            await self._fail(context, UnknownTopic(f"unknown topic {request.name!r}"))
        return admin_pb2.DeleteTopicResponse()

    async def ListTopics(self, request: Any, context: Any) -> admin_pb2.ListTopicsResponse:
        await self._gate("ListTopics", context)
        return admin_pb2.ListTopicsResponse(names=sorted(self.state.topics))

    async def DescribeTopic(self, request: Any, context: Any) -> common_pb2.TopicInfo:
        await self._gate("DescribeTopic", context)
        if request.name not in self.state.topics:
            await self._fail(context, UnknownTopic(f"unknown topic {request.name!r}"))
        return self._topic_info(request.name)

    # --- Broker --------------------------------------------------------------------------
    async def Produce(self, request: Any, context: Any) -> broker_pb2.ProduceResponse:
        self.state.calls.append((self.node_id, "Produce", request.topic, request.partition))
        self.state.inflight_produce += 1
        self.state.inflight_produce_max = max(self.state.inflight_produce_max, self.state.inflight_produce)
        try:
            fault = await self._gate("Produce", context)
            if self.state.produce_delay_s:
                await asyncio.sleep(self.state.produce_delay_s)
            partition = await self._partition(request.topic, request.partition, context)
            batch = bytearray(request.batch)
            header = record_batch.validate_batch(batch)
            base = partition.next_offset
            record_batch.stamp_into(batch, base, 1)
            partition.batches.append(bytes(batch))
            partition.next_offset += header.record_count
            partition.changed.set()
            partition.changed = asyncio.Event()
            if fault is not None:
                await self._abort_with(fault, context)
            return broker_pb2.ProduceResponse(
                base_offset=-1 if request.acks == broker_pb2.ACKS_NONE else base, leader_epoch=1
            )
        finally:
            self.state.inflight_produce -= 1

    async def Fetch(self, request: Any, context: Any) -> broker_pb2.FetchResponse:
        self.state.calls.append((self.node_id, "Fetch", request.topic, request.partition))
        await self._gate("Fetch", context)
        partition = await self._partition(request.topic, request.partition, context)
        if not partition.log_start_offset <= request.offset <= partition.next_offset:
            await self._fail(context, OffsetOutOfRange(
                f"offset {request.offset} outside [{partition.log_start_offset}, {partition.next_offset}]",
                partition.log_start_offset, partition.next_offset))
        if request.offset == partition.next_offset and request.max_wait_ms:
            try:
                await asyncio.wait_for(partition.changed.wait(), request.max_wait_ms / 1000)
            except TimeoutError:
                pass
        chosen: list[bytes] = []
        size = 0
        for batch in partition.batches:
            header = record_batch.parse_header(batch)
            if header.next_offset <= request.offset:
                continue
            if chosen and size + len(batch) > request.max_bytes:
                break
            chosen.append(batch)
            size += len(batch)
        return broker_pb2.FetchResponse(batches=b"".join(chosen), high_watermark=partition.next_offset,
                                        log_start_offset=partition.log_start_offset)

    async def ListOffsets(self, request: Any, context: Any) -> broker_pb2.ListOffsetsResponse:
        self.state.calls.append((self.node_id, "ListOffsets", request.topic, request.partition))
        await self._gate("ListOffsets", context)
        partition = await self._partition(request.topic, request.partition, context)
        spec = request.WhichOneof("spec")
        if spec == "earliest":
            return broker_pb2.ListOffsetsResponse(offset=partition.log_start_offset, timestamp_ms=-1)
        if spec == "latest":
            return broker_pb2.ListOffsetsResponse(offset=partition.next_offset, timestamp_ms=-1)
        for batch in partition.batches:
            _, records = record_batch.decode_batch(batch)
            for record in records:
                if (record.timestamp_ms or 0) >= request.timestamp_ms:
                    return broker_pb2.ListOffsetsResponse(
                        offset=record.offset, timestamp_ms=record.timestamp_ms
                    )
        return broker_pb2.ListOffsetsResponse(offset=partition.next_offset, timestamp_ms=-1)


class FakeCluster:
    """``nodes`` fake nodes sharing one state, served from a background thread. Use as a context manager."""

    def __init__(self, nodes: int = 3,
                 extra_services: Callable[[grpc.aio.Server, int, State], None] | None = None) -> None:
        """``extra_services(server, node_id, state)`` adds more servicers to each node before it starts
        (the consumer-group tests add a ConsumerGroups fake)."""
        self._extra_services = extra_services
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-cluster", daemon=True)
        self._servers: dict[int, grpc.aio.Server] = {}
        self._count = nodes
        self.state: State

    def __enter__(self) -> FakeCluster:
        self._thread.start()
        self.state = self._run(self._start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    async def _start(self) -> State:
        state = State()
        for node_id in range(1, self._count + 1):
            server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
            node = FakeNode(node_id, state)
            admin_pb2_grpc.add_AdminServicer_to_server(node, server)
            broker_pb2_grpc.add_BrokerServicer_to_server(node, server)
            if self._extra_services is not None:
                self._extra_services(server, node_id, state)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            state.nodes[node_id] = f"127.0.0.1:{port}"
            self._servers[node_id] = server
        return state

    async def _stop(self) -> None:
        for server in self._servers.values():
            await server.stop(None)

    def call(self, function: Callable[[State], T]) -> T:
        """Run ``function(state)`` on the servers' loop and return its result."""

        async def run() -> T:
            return function(self.state)

        result: Future[T] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return result.result(30)

    @property
    def bootstrap(self) -> str:
        return ",".join(self.state.nodes.values())

    def address(self, node_id: int) -> str:
        return self.state.nodes[node_id]

    def create_topic(self, name: str, partitions: int, leaders: list[int] | None = None) -> None:
        def create(state: State) -> None:
            nodes = sorted(state.nodes)
            chosen = leaders or [nodes[i % len(nodes)] for i in range(partitions)]
            state.topics[name] = [Partition(leader=leader) for leader in chosen]
            state.topic_ids[name] = len(state.topic_ids) + 1

        self.call(create)

    def add_fault(self, fault: Fault) -> None:
        self.call(lambda state: state.faults.append(fault))

    def set_leader(self, topic: str, partition: int, leader: int) -> None:
        def move(state: State) -> None:
            state.topics[topic][partition].leader = leader

        self.call(move)

    def records(self, topic: str, partition: int) -> list[record_batch.Record]:
        """Every record stored in a partition, decoded, in offset order."""

        def read(state: State) -> list[bytes]:
            return list(state.topics[topic][partition].batches)

        return [record for batch in self.call(read) for record in record_batch.decode_batch(batch)[1]]

    def append(self, topic: str, partition: int, records: list[record_batch.Record], **encode: Any) -> int:
        """Append one batch directly (as a producer would); return its base offset."""
        batch = bytearray(record_batch.encode_batch(records, **encode))

        def append(state: State) -> int:
            target = state.topics[topic][partition]
            base = target.next_offset
            record_batch.stamp_into(batch, base, 1)
            target.batches.append(bytes(batch))
            target.next_offset += len(records)
            target.changed.set()
            target.changed = asyncio.Event()
            return base

        return self.call(append)
