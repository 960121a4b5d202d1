"""The chaos workloads' own thin client: one attempt per operation, nothing hidden.

The library client retries and re-routes on its own, which is what users want
and exactly what a history must not contain: a retried send can store a value
twice, and the history would show one send. Here every operation is a single
RPC to the node believed to lead the partition, and its outcome is classified
for the history as ``ok``, ``fail`` (certainly had no effect) or ``info``
(unknown: it may have taken effect).

Only errors the broker raises *before* it appends make a send ``fail``:
``NOT_LEADER`` (refused, or the entry was replaced by a newer leader's),
unknown topic/partition and invalid requests. A lost connection, a deadline or
``UNAVAILABLE`` after the request left may hide an append: ``info``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc

from millpond import errors
from millpond.node.channels import channel_options
from millpond.record_batch import Record, decode_batch, encode_batch, iter_batches
from millpond.v1 import admin_pb2, admin_pb2_grpc
from millpond.v1 import broker_pb2 as pb
from millpond.v1 import broker_pb2_grpc as pb_grpc

#: Errors after which a send certainly stored nothing.
DEFINITE_FAILURES: tuple[type[errors.MillpondError], ...] = (
    errors.NotLeader, errors.UnknownTopic, errors.UnknownPartition, errors.InvalidRequest,
)


class Indeterminate(Exception):
    """The operation may or may not have taken effect (``info`` in the history)."""

    def __init__(self, error: str, node: int | None) -> None:
        super().__init__(error)
        self.error = error
        self.node = node


class Failed(Exception):
    """The operation certainly had no effect (``fail`` in the history)."""

    def __init__(self, error: str, node: int | None) -> None:
        super().__init__(error)
        self.error = error
        self.node = node


@dataclass(frozen=True, slots=True)
class ReadRecord:
    partition: int
    offset: int
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class FetchResult:
    records: tuple[ReadRecord, ...]
    high_watermark: int
    log_start_offset: int
    node: int


def error_name(exc: BaseException) -> str:
    """A short stable name for an error in the history (the millpond reason, else the class)."""
    if isinstance(exc, errors.MillpondError):
        return exc.reason
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name
    return type(exc).__name__


class WireClient:
    """Direct Produce/Fetch/metadata calls for one topic, with a leader cache (use on one loop)."""

    def __init__(self, addresses: dict[int, str], topic: str, rpc_timeout_s: float) -> None:
        self._addresses = dict(addresses)
        self._topic = topic
        self._timeout_s = rpc_timeout_s
        self._channels: dict[int, grpc.aio.Channel] = {}
        self._leaders: dict[int, int] = {}
        self._next_node = 0

    def _channel(self, node: int) -> grpc.aio.Channel:
        channel = self._channels.get(node)
        if channel is None:
            channel = grpc.aio.insecure_channel(self._addresses[node], options=channel_options())
            self._channels[node] = channel
        return channel

    def _node_ids(self) -> list[int]:
        return sorted(self._addresses)

    def _any_node(self) -> int:
        nodes = self._node_ids()
        self._next_node = (self._next_node + 1) % len(nodes)
        return nodes[self._next_node]

    async def refresh_leaders(self) -> None:
        """Ask some node for the topic's partition leaders (errors leave the cache as it is)."""
        node = self._any_node()
        stub = admin_pb2_grpc.AdminStub(self._channel(node))
        try:
            info = await stub.DescribeTopic(admin_pb2.DescribeTopicRequest(name=self._topic),
                                            timeout=self._timeout_s)
        except grpc.aio.AioRpcError:
            return
        for partition in info.partitions:
            if partition.leader:
                self._leaders[partition.partition] = partition.leader
            else:
                self._leaders.pop(partition.partition, None)

    def leader_of(self, partition: int) -> int | None:
        return self._leaders.get(partition)

    def _forget_or_follow(self, partition: int, exc: errors.MillpondError) -> None:
        hint = getattr(exc, "leader_id", 0)
        if hint and hint in self._addresses:
            self._leaders[partition] = hint
        else:
            self._leaders.pop(partition, None)

    async def _leader(self, partition: int) -> int:
        leader = self._leaders.get(partition)
        if leader is None:
            await self.refresh_leaders()
            leader = self._leaders.get(partition)
        if leader is None:
            raise Failed("NO_LEADER_KNOWN", None)
        return leader

    async def send(self, partition: int, key: str, value: str, acks: int) -> tuple[int, int]:
        """Produce one record; return (offset, node). Raises :class:`Failed` or :class:`Indeterminate`."""
        node = await self._leader(partition)
        batch = encode_batch([Record(key.encode(), value.encode())], timestamp_ms=int(time.time() * 1000))
        stub = pb_grpc.BrokerStub(self._channel(node))
        try:
            response = await stub.Produce(
                pb.ProduceRequest(topic=self._topic, partition=partition, acks=acks, batch=batch),
                timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            error = errors.from_rpc_error(exc)
            if isinstance(error, DEFINITE_FAILURES) and _from_server(exc):
                self._forget_or_follow(partition, error)
                raise Failed(error_name(error), node) from exc
            self._leaders.pop(partition, None)
            raise Indeterminate(error_name(error), node) from exc
        return response.base_offset, node

    async def fetch(self, partition: int, offset: int, max_wait_ms: int, max_bytes: int) -> FetchResult:
        """Committed records of ``partition`` from ``offset`` on, from its leader. Raises
        :class:`Failed` (reads have no effect) carrying the error name; an ``OFFSET_OUT_OF_RANGE``
        failure names the bounds in its text."""
        node = await self._leader(partition)
        stub = pb_grpc.BrokerStub(self._channel(node))
        try:
            response = await stub.Fetch(
                pb.FetchRequest(topic=self._topic, partition=partition, offset=offset,
                                max_bytes=max_bytes, max_wait_ms=max_wait_ms),
                timeout=self._timeout_s + max_wait_ms / 1000)
        except grpc.aio.AioRpcError as exc:
            error = errors.from_rpc_error(exc)
            if isinstance(error, errors.NotLeader | errors.Unavailable | errors.RequestTimeout):
                self._forget_or_follow(partition, error)
            if isinstance(error, errors.OffsetOutOfRange):
                raise Failed(f"OFFSET_OUT_OF_RANGE [{error.log_start_offset}, {error.high_watermark}]",
                             node) from exc
            raise Failed(error_name(error), node) from exc
        records: list[ReadRecord] = []
        for view in iter_batches(response.batches):
            _, decoded = decode_batch(view)
            for record in decoded:
                if record.offset < offset:
                    continue
                records.append(ReadRecord(partition, record.offset, (record.key or b"").decode(),
                                          (record.value or b"").decode()))
        return FetchResult(tuple(records), response.high_watermark, response.log_start_offset, node)

    async def replicas_of(self, partition: int) -> tuple[int, ...]:
        """The partition's replica node ids as some node's metadata says (empty if unknown)."""
        stub = admin_pb2_grpc.AdminStub(self._channel(self._any_node()))
        try:
            info = await stub.DescribeTopic(admin_pb2.DescribeTopicRequest(name=self._topic),
                                            timeout=self._timeout_s)
        except grpc.aio.AioRpcError:
            return ()
        for described in info.partitions:
            if described.partition == partition:
                return tuple(described.replicas)
        return ()

    async def describe_replica(self, node: int, partition: int,
                               upto_offset: int = -1) -> admin_pb2.DescribeReplicaResponse | None:
        """Node ``node``'s own replica of ``partition`` (None if it does not answer or host it)."""
        stub = admin_pb2_grpc.AdminStub(self._channel(node))
        try:
            response: admin_pb2.DescribeReplicaResponse = await stub.DescribeReplica(
                admin_pb2.DescribeReplicaRequest(topic=self._topic, partition=partition,
                                                 upto_offset=upto_offset),
                timeout=self._timeout_s)
        except grpc.aio.AioRpcError:
            return None
        return response

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(grace=None)
        self._channels.clear()


def _from_server(exc: grpc.aio.AioRpcError) -> bool:
    """True when the broker itself answered with a millpond error (its reason in the trailers), not
    when the transport failed: only then does the error say what happened to the request."""
    trailers = exc.trailing_metadata() or ()
    return any(key == errors.REASON_KEY for key, _ in trailers)
