"""The asynchronous admin client: cluster metadata, topic and consumer-group administration.

Any node answers an admin call; writes are forwarded by that node to the
active controller and return once the metadata log committed them. Reads are
retried on any retriable error; writes (create, delete, alter) are retried
only where the error says the request was not carried out (a node that could
not be reached, no controller yet, a redirect). A write that timed out is not
retried: it may or may not have taken effect.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from millpond.client._backoff import Backoff
from millpond.client._config import ClientConfig, parse_bootstrap
from millpond.client._connection import Connections, call
from millpond.client._group import call_coordinator
from millpond.client._metadata import MetadataCache
from millpond.client._types import (
    ClusterDescription,
    GroupDescription,
    GroupListing,
    OffsetChange,
    ReplicaDescription,
    TopicDescription,
)
from millpond.errors import MillpondError, NotController, RequestTimeout, ResourceExhausted, Unavailable
from millpond.v1 import admin_pb2, admin_pb2_grpc, groups_pb2

__all__ = ["AsyncAdmin"]

Response = TypeVar("Response")
_Method = Callable[[admin_pb2_grpc.AdminStub], Callable[..., Any]]


class AsyncAdmin:
    """Administers topics and describes the cluster. Use on one event loop; ``async with`` closes it.

    ``bootstrap`` is ``"host:port[,host:port...]"`` or a list of addresses;
    calls go to the node that answered last, failing over to the others.
    Every call may also raise :class:`~millpond.errors.Unavailable` (no node
    answered within ``request_timeout_ms``, or the cluster has no controller)
    and ``RuntimeError`` after :meth:`close`.
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        config: ClientConfig | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config or ClientConfig()
        self._connections = Connections()
        self._metadata = MetadataCache(
            parse_bootstrap(bootstrap if isinstance(bootstrap, str) else tuple(bootstrap)),
            self._connections,
            request_timeout_ms=self._config.request_timeout_ms,
        )
        self._backoff = Backoff(self._config.retry_backoff_ms, self._config.retry_backoff_ms_max)
        self._rng = rng or random.Random()
        self._closed = False

    async def __aenter__(self) -> AsyncAdmin:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- reads -----------------------------------------------------------------------
    async def describe_cluster(self, include_topics: bool = False) -> ClusterDescription:
        """Nodes, the active controller (0 if none), under-replicated and offline partition counts,
        and every topic if ``include_topics``. Raises only the errors common to every call."""
        request = admin_pb2.DescribeClusterRequest(include_topics=include_topics)
        response: admin_pb2.DescribeClusterResponse = await self._call(
            lambda stub: stub.DescribeCluster, request, idempotent=True
        )
        if include_topics:
            self._metadata.apply(response)
        return ClusterDescription.from_proto(response)

    async def list_topics(self) -> list[str]:
        """Names of all topics, sorted. Raises only the errors common to every call."""
        response: admin_pb2.ListTopicsResponse = await self._call(
            lambda stub: stub.ListTopics, admin_pb2.ListTopicsRequest(), idempotent=True
        )
        return sorted(response.names)

    async def describe_topic(self, name: str) -> TopicDescription:
        """One topic: per partition its leader, replicas, ISR, log start offset and high watermark.

        Raises :class:`~millpond.errors.UnknownTopic` if there is no such topic.
        """
        info = await self._call(
            lambda stub: stub.DescribeTopic, admin_pb2.DescribeTopicRequest(name=name), idempotent=True
        )
        return TopicDescription.from_proto(info)

    # --- writes ------------------------------------------------------------------------
    async def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        config: Mapping[str, str] | None = None,
    ) -> TopicDescription:
        """Create a topic and return it as created.

        Raises :class:`~millpond.errors.TopicExists` if the name is taken;
        :class:`~millpond.errors.InvalidTopicName` for a bad name (1-200
        characters of ``[A-Za-z0-9._-]``, not ``.``/``..``, not starting with
        ``__``); :class:`~millpond.errors.InvalidConfig` for an unknown or bad
        config key; :class:`~millpond.errors.InvalidRequest` for a bad partition
        count or replication factor; :class:`~millpond.errors.ReplicationFactorTooLarge`
        if it exceeds the live nodes; :class:`~millpond.errors.RequestTimeout`
        if no answer came in time, in which case the topic may or may not have
        been created.
        """
        request = admin_pb2.CreateTopicRequest(
            name=name, partitions=partitions, replication_factor=replication_factor, config=dict(config or {})
        )
        response: admin_pb2.CreateTopicResponse = await self._call(
            lambda stub: stub.CreateTopic, request, idempotent=False
        )
        return TopicDescription.from_proto(response.topic)

    async def delete_topic(self, name: str) -> None:
        """Delete a topic and its data.

        Raises :class:`~millpond.errors.UnknownTopic` if there is no such topic;
        :class:`~millpond.errors.RequestTimeout` if no answer came in time (the
        topic may or may not have been deleted).
        """
        await self._call(lambda stub: stub.DeleteTopic, admin_pb2.DeleteTopicRequest(name=name),
                         idempotent=False)

    async def alter_partitions(self, name: str, partitions: int) -> TopicDescription:
        """Grow ``name`` to ``partitions`` partitions in total; existing data stays where it is.

        Keys map to partitions by ``murmur2(key) % partitions``, so after a
        change new records of a key may go to another partition than its older
        ones. Raises :class:`~millpond.errors.PartitionCountDecrease` if the
        count would not grow; :class:`~millpond.errors.UnknownTopic`;
        :class:`~millpond.errors.InvalidRequest` beyond the partition limit;
        :class:`~millpond.errors.RequestTimeout` if no answer came in time (the
        change may or may not have been made).
        """
        request = admin_pb2.AlterPartitionsRequest(name=name, partitions=partitions)
        response: admin_pb2.AlterPartitionsResponse = await self._call(
            lambda stub: stub.AlterPartitions, request, idempotent=False
        )
        return TopicDescription.from_proto(response.topic)

    async def reassign_partition(self, topic: str, partition: int,
                                 replicas: Sequence[int]) -> TopicDescription:
        """Start moving ``topic``/``partition`` to ``replicas`` (first = preferred leader).

        Returns once the move is recorded; the partition's leader completes it
        in the background (new replicas catch up as learners first), visible
        in :meth:`describe_topic`. The current replicas cancel a pending move.
        Raises :class:`~millpond.errors.UnknownTopic`,
        :class:`~millpond.errors.UnknownPartition`;
        :class:`~millpond.errors.InvalidRequest` if ``replicas`` is empty,
        repeats a node, names an unknown node or differs in size from the
        replication factor; :class:`~millpond.errors.ReplicationFactorTooLarge`
        if a target node is not alive; :class:`~millpond.errors.RequestTimeout`
        (the move may or may not have been recorded).
        """
        request = admin_pb2.ReassignPartitionRequest(topic=topic, partition=partition,
                                                     replicas=list(replicas))
        response: admin_pb2.ReassignPartitionResponse = await self._call(
            lambda stub: stub.ReassignPartition, request, idempotent=False)
        return TopicDescription.from_proto(response.topic)

    async def transfer_leadership(self, topic: str, partition: int, node_id: int) -> tuple[int, int]:
        """Ask ``topic``/``partition``'s leader to hand leadership to replica ``node_id``; return
        ``(leader, leader_epoch)`` when the call returned — ``node_id`` if the transfer took effect
        within a few seconds, else possibly still the old leader (the target was behind).

        Idempotent. Raises :class:`~millpond.errors.UnknownTopic`,
        :class:`~millpond.errors.UnknownPartition`;
        :class:`~millpond.errors.InvalidRequest` if ``node_id`` is not a voter
        of the partition; :class:`~millpond.errors.Unavailable` if the
        partition has no leader or refused the transfer until the deadline.
        """
        request = admin_pb2.TransferLeadershipRequest(topic=topic, partition=partition, node_id=node_id)
        response: admin_pb2.TransferLeadershipResponse = await self._call(
            lambda stub: stub.TransferLeadership, request, idempotent=True)
        return response.leader, response.leader_epoch

    async def describe_replica(self, address: str, topic: str, partition: int,
                               upto_offset: int = -1) -> ReplicaDescription:
        """The replica of ``topic``/``partition`` on the node at ``address`` (that node only; no
        failover): offsets, Raft role/term/commit index, and a SHA-256 of its committed batches that
        end at or below ``upto_offset`` (-1: its high watermark).

        Raises :class:`~millpond.errors.ReplicaNotHosted` if that node has no
        replica of it; :class:`~millpond.errors.OffsetOutOfRange` if
        ``upto_offset`` is above its high watermark; :class:`~millpond.errors.UnknownTopic`,
        :class:`~millpond.errors.UnknownPartition`; :class:`~millpond.errors.Unavailable`
        if the node does not answer.
        """
        if self._closed:
            raise RuntimeError("the admin client is closed")
        request = admin_pb2.DescribeReplicaRequest(topic=topic, partition=partition, upto_offset=upto_offset)
        response: admin_pb2.DescribeReplicaResponse = await call(
            self._connections.admin(address).DescribeReplica, request,
            self._config.request_timeout_ms / 1000)
        return ReplicaDescription.from_proto(response)

    # --- consumer groups -------------------------------------------------------------------
    async def list_groups(self) -> list[GroupListing]:
        """Every consumer group (id, state, epoch, member count), by id. Raises only the errors common
        to every call."""
        response: groups_pb2.ListGroupsResponse = await self._group_call(
            "ListGroups", groups_pb2.ListGroupsRequest(), idempotent=True, any_node=True)
        return [GroupListing.from_proto(g) for g in response.groups]

    async def describe_group(self, group_id: str) -> GroupDescription:
        """A consumer group: state, epochs, members with their assignments, and per partition the
        committed offset, high watermark and lag (-1 where unknown; read from the node that answers,
        which may lag the controller by a moment).

        Raises :class:`~millpond.errors.GroupIdNotFound`; :class:`~millpond.errors.InvalidRequest`
        for a bad group id.
        """
        response: groups_pb2.DescribeGroupResponse = await self._group_call(
            "DescribeGroup", groups_pb2.DescribeGroupRequest(group_id=group_id), idempotent=True,
            any_node=True)
        return GroupDescription.from_proto(response)

    async def delete_group(self, group_id: str) -> None:
        """Delete an empty consumer group and its committed offsets.

        Raises :class:`~millpond.errors.GroupIdNotFound`; :class:`~millpond.errors.GroupNotEmpty`
        while it has members (static members away included, until their session ends);
        :class:`~millpond.errors.InvalidRequest`; :class:`~millpond.errors.RequestTimeout` (it may or
        may not have been deleted).
        """
        await self._group_call("DeleteGroup", groups_pb2.DeleteGroupRequest(group_id=group_id),
                               idempotent=False)

    async def reset_offsets(
        self,
        group_id: str,
        topics: Mapping[str, Sequence[int] | None] | Sequence[str],
        *,
        to_earliest: bool = False,
        to_latest: bool = False,
        to_datetime_ms: int | None = None,
        shift_by: int | None = None,
        to_offset: int | None = None,
        dry_run: bool = True,
    ) -> list[OffsetChange]:
        """Move the group's committed offsets of ``topics`` (names: every partition; or a mapping of
        name to partition numbers, ``None`` for every partition), to exactly one target: the log start
        (``to_earliest``), the high watermark (``to_latest``), the first record at or after a time
        (``to_datetime_ms``, ms since the Unix epoch), the committed offset plus ``shift_by``, or
        ``to_offset``; each clamped into the partition's [log start, high watermark].

        ``dry_run`` (the default) only returns the planned changes; ``dry_run=False``
        commits them. Returns one :class:`OffsetChange` per partition (``previous`` -1:
        nothing was committed). Raises ``ValueError`` unless exactly one target is given
        or without topics; :class:`~millpond.errors.GroupNotEmpty` while the group has
        members (stop its consumers first); :class:`~millpond.errors.UnknownTopic`,
        :class:`~millpond.errors.UnknownPartition`; :class:`~millpond.errors.Unavailable`
        if a partition's leader could not tell its offsets; :class:`~millpond.errors.RequestTimeout`
        (a reset that is not a dry run may or may not have been committed).
        """
        targets = {"to_earliest": to_earliest or None, "to_latest": to_latest or None,
                   "to_datetime_ms": to_datetime_ms, "shift_by": shift_by, "to_offset": to_offset}
        chosen: dict[str, Any] = {name: value for name, value in targets.items() if value is not None}
        if len(chosen) != 1:
            raise ValueError(f"reset_offsets needs exactly one target of {', '.join(targets)}, got "
                             f"{', '.join(chosen) or 'none'}")
        items = topics.items() if isinstance(topics, Mapping) else ((name, None) for name in topics)
        partitions = [groups_pb2.TopicPartitions(topic=name, partitions=list(numbers or ()))
                      for name, numbers in items]
        if not partitions:
            raise ValueError("reset_offsets needs at least one topic")
        request = groups_pb2.ResetOffsetsRequest(group_id=group_id, partitions=partitions, dry_run=dry_run,
                                                 **chosen)
        response: groups_pb2.ResetOffsetsResponse = await self._group_call(
            "ResetOffsets", request, idempotent=dry_run)
        return [OffsetChange.from_proto(change) for change in response.changes]

    async def _group_call(self, method: str, request: Any, *, idempotent: bool,
                          any_node: bool = False) -> Any:
        """A ConsumerGroups RPC: reads (``any_node``) on any node, the rest on the active controller."""
        if self._closed:
            raise RuntimeError("the admin client is closed")
        timeout_s = self._config.request_timeout_ms / 1000
        if any_node:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s

            async def read(address: str) -> Any:
                stub = self._connections.groups(address)
                return await call(getattr(stub, method), request, max(0.001, deadline - loop.time()))

            return await self._metadata.call_any(read)
        return await call_coordinator(self._metadata, self._connections, method, request, timeout_s=timeout_s,
                                      backoff=self._backoff, rng=self._rng, idempotent=idempotent)

    # --- plumbing ------------------------------------------------------------------------
    async def _call(self, method: _Method, request: Any, *, idempotent: bool) -> Any:
        """Run an Admin RPC on any node, retrying what is safe to retry until ``request_timeout_ms``."""
        if self._closed:
            raise RuntimeError("the admin client is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.request_timeout_ms / 1000
        skip: tuple[type[MillpondError], ...] = (
            (Unavailable, RequestTimeout) if idempotent else (Unavailable,)
        )
        redirect: str | None = None
        attempt = 0

        def timeout_s() -> float:
            return max(0.001, deadline - loop.time())

        async def attempt_on(address: str) -> Any:
            return await call(method(self._connections.admin(address)), request, timeout_s())

        while True:
            try:
                if redirect is not None:
                    address, redirect = redirect, None
                    return await attempt_on(address)
                return await self._metadata.call_any(attempt_on, skip)
            except NotController as exc:
                if exc.leader_address and attempt == 0:
                    redirect = exc.leader_address
                    attempt += 1
                    continue
                error: MillpondError = exc
            except (Unavailable, ResourceExhausted) as exc:
                error = exc
            except RequestTimeout as exc:
                if not idempotent:
                    raise
                error = exc
            if loop.time() >= deadline:
                raise error
            await asyncio.sleep(min(self._backoff.delay_ms(attempt, self._rng, error) / 1000, timeout_s()))
            attempt += 1

    async def close(self) -> None:
        """Close every connection. Idempotent."""
        self._closed = True
        await self._metadata.close()
        await self._connections.close()
