"""What a client knows of the cluster: nodes, topics, and who leads each partition.

The cache is filled from ``Admin.DescribeCluster(include_topics=True)``,
asked of any node: the node that answered last, then the other known nodes,
then the bootstrap addresses, until one answers with a view that names an
active controller (a node cut off from the majority still answers, with a
stale view; it is used only if no node knows better). It is refreshed when a
caller finds it wrong (``NOT_LEADER`` without a leader hint, an unknown
topic, a node gone); a ``NOT_LEADER`` error that names the leader updates the
one partition at once. Refreshes are single-flight: concurrent callers share
one RPC.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from millpond.client._backoff import Backoff
from millpond.client._connection import Connections, call
from millpond.client._types import TopicPartition
from millpond.errors import MillpondError, NotLeader, RequestTimeout, Unavailable, UnknownTopic
from millpond.v1 import admin_pb2

Result = TypeVar("Result")


@dataclass(frozen=True, slots=True)
class _TopicRoutes:
    topic_id: int
    leaders: tuple[int, ...]
    """Leader node id per partition number, 0 where none is known."""


class MetadataCache:
    """Cluster metadata of one client. Use on one event loop."""

    def __init__(
        self, bootstrap: tuple[str, ...], connections: Connections, *, request_timeout_ms: int
    ) -> None:
        if not bootstrap:
            raise ValueError("bootstrap needs at least one address")
        self._bootstrap = bootstrap
        self._connections = connections
        self._timeout_s = request_timeout_ms / 1000
        self._nodes: dict[int, str] = {}
        self._alive: set[int] = set()
        self._topics: dict[str, _TopicRoutes] = {}
        self._hints: dict[TopicPartition, str] = {}
        self._stale: set[TopicPartition] = set()
        self._preferred: str | None = None
        self._controller = 0
        self._refreshing: asyncio.Future[admin_pb2.DescribeClusterResponse] | None = None
        self.refreshes = 0
        """How many refreshes completed (for statistics and tests)."""
        self.refreshed_at_s: float | None = None
        """Event-loop time of the last completed refresh."""

    # --- asking any node ---------------------------------------------------------
    def candidates(self) -> list[str]:
        """Addresses to try, in order: the last node that answered, live nodes, other nodes, bootstrap."""
        ordered = [self._preferred] if self._preferred else []
        ordered += [address for node, address in sorted(self._nodes.items()) if node in self._alive]
        ordered += [address for _, address in sorted(self._nodes.items())]
        ordered += self._bootstrap
        return list(dict.fromkeys(ordered))

    async def call_any(
        self,
        rpc: Callable[[str], Awaitable[Result]],
        skip: tuple[type[MillpondError], ...] = (Unavailable, RequestTimeout),
    ) -> Result:
        """Run ``rpc(address)`` on the first node that answers.

        A node whose call fails with one of ``skip`` (by default: cannot be
        reached, :class:`Unavailable`, or did not answer in time,
        :class:`RequestTimeout`) is skipped; any other error is raised as is.
        Raises :class:`Unavailable` (from the last error) if no node answered.
        A call that timed out on a node may have taken effect there: callers
        whose requests are not idempotent pass ``skip=(Unavailable,)``.
        """
        tried: list[str] = []
        last: MillpondError | None = None
        for address in self.candidates():
            try:
                result = await rpc(address)
            except skip as exc:
                tried.append(address)
                last = exc
                if self._preferred == address:
                    self._preferred = None
                continue
            self._preferred = address
            return result
        raise Unavailable(f"no node answered (tried {', '.join(tried)}): {last}") from last

    # --- refreshing ----------------------------------------------------------------
    async def refresh(self) -> admin_pb2.DescribeClusterResponse:
        """Fetch the cluster's metadata now (joining a refresh already running) and return it.

        Raises :class:`Unavailable` if no node answered, or the error a node
        answered with.
        """
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._describe())
        return await asyncio.shield(self._refreshing)

    async def _describe(self) -> admin_pb2.DescribeClusterResponse:
        request = admin_pb2.DescribeClusterRequest(include_topics=True)

        stale: list[tuple[str, admin_pb2.DescribeClusterResponse]] = []

        async def describe(address: str) -> admin_pb2.DescribeClusterResponse:
            response: admin_pb2.DescribeClusterResponse = await call(
                self._connections.admin(address).DescribeCluster, request, self._timeout_s)
            if not response.controller:
                # A node that knows no active controller is cut off from the metadata majority (or
                # the cluster is starting): its view is stale. Ask the others; use it only if no
                # node knows better.
                stale.append((address, response))
                raise Unavailable(f"node {address} knows no active controller")
            return response

        try:
            response = await self.call_any(describe)
        except Unavailable:
            if not stale:
                raise
            address, response = stale[0]
            self._preferred = address
        self.apply(response)
        self.refreshed_at_s = asyncio.get_running_loop().time()
        return response

    async def close(self) -> None:
        """Cancel a refresh still running (call before closing the connections)."""
        refreshing, self._refreshing = self._refreshing, None
        if refreshing is not None and not refreshing.done():
            refreshing.cancel()
            await asyncio.gather(refreshing, return_exceptions=True)

    def refresh_in_background(self) -> None:
        """Start a refresh unless one is running; its errors are dropped (the next use retries)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._describe())
            self._refreshing.add_done_callback(lambda done: done.cancelled() or done.exception())

    def apply(self, response: admin_pb2.DescribeClusterResponse) -> None:
        """Replace the cached metadata with ``response`` (hints and stale marks are dropped)."""
        self._nodes = {node.id: node.address for node in response.nodes if node.address}
        self._alive = {node.id for node in response.nodes if node.alive}
        self._controller = response.controller
        topics: dict[str, _TopicRoutes] = {}
        for topic in response.topics:
            leaders = [0] * (max((p.partition for p in topic.partitions), default=-1) + 1)
            for info in topic.partitions:
                leaders[info.partition] = info.leader
            topics[topic.name] = _TopicRoutes(topic.topic_id, tuple(leaders))
        self._topics = topics
        self._hints.clear()
        self._stale.clear()
        self.refreshes += 1

    async def wait_for_topic(self, topic: str, timeout_s: float, backoff: Backoff, rng: random.Random) -> int:
        """The partition count of ``topic``, refreshing (with backoff) until known or ``timeout_s`` passed.

        A topic just created may take a moment to reach the node that answers.
        Raises :class:`UnknownTopic` if it never appeared, :class:`Unavailable`
        if no node answered the last refresh.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        attempt = 0
        while True:
            count = self.partition_count(topic)
            if count:
                return count
            try:
                await self.refresh()
            except Unavailable:
                if loop.time() >= deadline:
                    raise
            count = self.partition_count(topic)
            if count:
                return count
            if loop.time() >= deadline:
                raise UnknownTopic(f"unknown topic {topic!r}")
            await asyncio.sleep(min(backoff.delay_ms(attempt, rng) / 1000, max(0.0, deadline - loop.time())))
            attempt += 1

    # --- reading -----------------------------------------------------------------
    def has_topic(self, topic: str) -> bool:
        return topic in self._topics

    def partition_count(self, topic: str) -> int | None:
        """How many partitions ``topic`` has, or ``None`` if the cache does not know the topic."""
        routes = self._topics.get(topic)
        return len(routes.leaders) if routes is not None else None

    def leader_address(self, tp: TopicPartition) -> str | None:
        """Address of the leader of ``tp``, or ``None`` if unknown (then :meth:`refresh`)."""
        hint = self._hints.get(tp)
        if hint is not None:
            return hint
        if tp in self._stale:
            return None
        routes = self._topics.get(tp.topic)
        if routes is None or not 0 <= tp.partition < len(routes.leaders):
            return None
        return self._nodes.get(routes.leaders[tp.partition])

    def node_address(self, node_id: int) -> str | None:
        return self._nodes.get(node_id)

    def controller_address(self) -> str | None:
        """Address of the active controller as of the last refresh (or redirect), ``None`` if unknown."""
        return self._nodes.get(self._controller) if self._controller else None

    def note_controller(self, node_id: int, address: str) -> None:
        """Adopt the active controller named by a ``NOT_CONTROLLER`` answer (``node_id`` 0: unknown)."""
        self._controller = node_id
        if node_id and address:
            self._nodes[node_id] = address

    # --- correcting ----------------------------------------------------------------
    def note_not_leader(self, tp: TopicPartition, error: NotLeader) -> None:
        """Adopt the leader named by a ``NOT_LEADER`` answer, or forget the leader if none was named."""
        self._hints.pop(tp, None)
        if error.leader_address:
            self._hints[tp] = error.leader_address
            if error.leader_id:
                self._nodes.setdefault(error.leader_id, error.leader_address)
        else:
            self._stale.add(tp)

    def invalidate(self, tp: TopicPartition) -> None:
        """Forget the leader of ``tp`` until the next refresh (its node failed or timed out)."""
        self._hints.pop(tp, None)
        self._stale.add(tp)
