"""Raft traffic between nodes: one channel per peer, coalesced, pipelined, best effort.

The Ready loop hands every message of a round to :meth:`RaftTransport.send`
at once; the messages for one peer go to that peer's outbox, and a sender
task turns everything waiting in the outbox into one ``RaftTransport.Send``
call — heartbeats of all groups in one call per tick, appends of many groups
in one call. Up to ``raft_rpcs_inflight_max`` calls per peer are in flight.

Delivery is best effort, as Raft expects: a full outbox drops the newest
messages, a failed call drops its batch (the cores retry via heartbeats and
probes). Calls carry a short deadline so a dead peer costs nothing but the
dropped messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
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
        self.slots = asyncio.Semaphore(limits.raft_rpcs_inflight_max)
        self.channel = grpc.aio.insecure_channel(address, options=channel_options())
        self.stub = pb_grpc.RaftTransportStub(self.channel)
        self.stats = stats
        self.calls: set[asyncio.Task[None]] = set()

    def enqueue(self, messages: list[pb.RaftMessage]) -> None:
        room = limits.raft_outbox_messages_max - len(self.outbox)
        if room < len(messages):
            self.stats["messages_dropped"] += len(messages) - max(room, 0)
            messages = messages[: max(room, 0)]
        self.outbox.extend(messages)
        self.wake.set()

    async def run(self) -> None:
        """Send whatever is in the outbox, one call per wake-up per free slot, forever."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.outbox:
                await self.slots.acquire()
                batch, self.outbox = self.outbox, []
                call = asyncio.create_task(self._call(batch))
                self.calls.add(call)
                call.add_done_callback(self.calls.discard)

    async def _call(self, messages: list[pb.RaftMessage]) -> None:
        try:
            await self.stub.Send(
                pb.RaftBatch(from_node=self.node_id, to_node=self.target, from_epoch=self.epoch,
                             messages=messages),
                timeout=limits.raft_rpc_timeout_ms / 1000,
            )
            self.stats["batches_sent"] += 1
            self.stats["messages_sent"] += len(messages)
        except grpc.aio.AioRpcError as exc:
            self.stats["calls_failed"] += 1
            self.stats["messages_dropped"] += len(messages)
            log.debug("raft batch to node %d failed: %s", self.target, exc.code())
        finally:
            self.slots.release()

    async def close(self) -> None:
        for call in list(self.calls):
            call.cancel()
        await self.channel.close(grace=None)


class RaftTransport(pb_grpc.RaftTransportServicer):
    """Both ends of the node-to-node Raft traffic of one node."""

    def __init__(self, node_id: int, peers: dict[int, str], epoch: int, deliver: Deliver) -> None:
        self._node_id = node_id
        self._deliver = deliver
        self._stats = dict.fromkeys(
            ("batches_sent", "messages_sent", "messages_dropped", "calls_failed",
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

    async def Send(self, request: pb.RaftBatch, context: grpc.aio.ServicerContext) -> pb.RaftBatchAck:
        if request.to_node != self._node_id:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"batch for node {request.to_node} reached node {self._node_id}")
        self._stats["batches_received"] += 1
        self._stats["messages_received"] += len(request.messages)
        self._deliver(request.from_node, list(request.messages))
        return pb.RaftBatchAck()

    def statistics(self) -> TransportStatistics:
        return TransportStatistics(**self._stats)
