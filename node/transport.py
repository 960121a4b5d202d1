"""Raft traffic between nodes: one long-lived stream per peer, coalesced, best effort.

The Ready loop hands every message of a round to :meth:`RaftTransport.send`
at once; the messages for one peer go to that peer's outbox, and a sender
task writes everything waiting in the outbox as one batch on its stream to
that peer — heartbeats of all groups in one batch per tick, appends of many
groups in one batch. While a write is in progress the outbox fills, and the
next write takes all of it: the stream pipelines and coalesces at once.

Why a stream and not a call per batch: a unary gRPC call costs a Python
process several times the CPU of a message on an open stream (call set-up,
headers, trailers, status on both ends), and a single acks=all produce is
four Raft messages (two appends, two answers). Streams also keep a peer's
messages in order.

Delivery is best effort, as Raft expects: a full outbox drops the newest
messages; a broken stream (peer gone, link cut) or a write that stalls past
``raft_rpc_timeout_ms`` (peer paused, link black-holed) drops the batch,
tears the stream down and reopens it after a backoff, dropping messages in
the meantime (the cores retry via heartbeats and probes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc

from millpond import limits
from millpond.node.channels import channel_options
from millpond.v1 import internal_pb2 as pb
from millpond.v1 import internal_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

Deliver = Callable[[int, list[pb.RaftMessage]], None]
"""Called with (sender node id, messages) for every batch received."""


@dataclass(frozen=True, slots=True)
class TransportStatistics:
    """Counters of one node's Raft transport since start."""

    batches_sent: int
    messages_sent: int
    messages_dropped: int
    streams_opened: int
    calls_failed: int
    batches_received: int
    messages_received: int


class _Peer:
    """Outbox and sender of the Raft traffic to one node."""

    def __init__(self, node_id: int, target: int, address: str, epoch: int,
                 stats: dict[str, int]) -> None:
        self.node_id = node_id
        self.target = target
        self.address = address
        self.epoch = epoch
        self.outbox: list[pb.RaftMessage] = []
        self.wake = asyncio.Event()
        self.channel = grpc.aio.insecure_channel(address, options=channel_options())
        self.stub = pb_grpc.RaftTransportStub(self.channel)
        self.stats = stats
        self.connected = False

    def enqueue(self, messages: list[pb.RaftMessage]) -> None:
        room = limits.raft_outbox_messages_max - len(self.outbox)
        if room < len(messages):
            self.stats["messages_dropped"] += len(messages) - max(room, 0)
            messages = messages[: max(room, 0)]
        self.outbox.extend(messages)
        self.wake.set()

    def _drop_outbox(self) -> None:
        self.stats["messages_dropped"] += len(self.outbox)
        self.outbox = []

    async def run(self) -> None:
        """Keep a stream open to the peer and write the outbox on it, forever."""
        backoff_ms = limits.raft_reconnect_backoff_ms
        while True:
            await self.wake.wait()
            call = self.stub.Stream(wait_for_ready=False)
            self.stats["streams_opened"] += 1
            try:
                await self._pump(call)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError,
                    TimeoutError, ConnectionError) as exc:
                self.stats["calls_failed"] += 1
                log.debug("raft stream to node %d broke: %r", self.target, exc)
            finally:
                call.cancel()
            if self.connected:  # the stream worked for a while: try again soon
                backoff_ms = limits.raft_reconnect_backoff_ms
            self.connected = False
            # Messages queued while the stream was down or backing off are stale: drop them.
            self._drop_outbox()
            await asyncio.sleep(backoff_ms / 1000)
            self._drop_outbox()
            backoff_ms = min(backoff_ms * 2, limits.raft_reconnect_backoff_ms_max)

    async def _pump(self, call: grpc.aio.StreamUnaryCall) -> None:
        """Write batches until the stream breaks; a write that stalls past the deadline breaks it."""
        timeout_s = limits.raft_rpc_timeout_ms / 1000
        while True:
            if not self.outbox:
                self.wake.clear()
                await self.wake.wait()
            batch, self.outbox = self.outbox, []
            try:
                await asyncio.wait_for(call.write(pb.RaftBatch(
                    from_node=self.node_id, to_node=self.target, from_epoch=self.epoch,
                    messages=batch)), timeout_s)
            except BaseException:
                self.stats["messages_dropped"] += len(batch)
                raise
            self.connected = True
            self.stats["batches_sent"] += 1
            self.stats["messages_sent"] += len(batch)

    async def close(self) -> None:
        await self.channel.close(grace=None)


class RaftTransport(pb_grpc.RaftTransportServicer):
    """Both ends of the node-to-node Raft traffic of one node."""

    def __init__(self, node_id: int, peers: dict[int, str], epoch: int, deliver: Deliver) -> None:
        self._node_id = node_id
        self._deliver = deliver
        self._stats = dict.fromkeys(
            ("batches_sent", "messages_sent", "messages_dropped", "streams_opened", "calls_failed",
             "batches_received", "messages_received"), 0)
        self._peers = {
            node: _Peer(node_id, node, address, epoch, self._stats)
            for node, address in sorted(peers.items()) if node != node_id
        }
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start one sender task per peer (on the running loop)."""
        self._tasks = [asyncio.create_task(peer.run(), name=f"raft-send-{node}")
                       for node, peer in self._peers.items()]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for peer in self._peers.values():
            await peer.close()

    def send(self, outgoing: dict[int, list[pb.RaftMessage]]) -> None:
        """Queue messages per destination node; unknown nodes' messages are dropped."""
        for node, messages in outgoing.items():
            peer = self._peers.get(node)
            if peer is None:
                self._stats["messages_dropped"] += len(messages)
                continue
            peer.enqueue(messages)

    async def Stream(self, request_iterator: AsyncIterator[pb.RaftBatch],
                     context: grpc.aio.ServicerContext) -> pb.RaftBatchAck:
        """Deliver every batch a peer writes on its stream, until it closes or breaks."""
        async for request in request_iterator:
            if request.to_node != self._node_id:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"batch for node {request.to_node} reached node {self._node_id}")
            self._stats["batches_received"] += 1
            self._stats["messages_received"] += len(request.messages)
            self._deliver(request.from_node, list(request.messages))
        return pb.RaftBatchAck()

    def statistics(self) -> TransportStatistics:
        return TransportStatistics(**self._stats)
