"""The values the client hands to users: plain immutable data, no protobuf objects.

Records are ``NamedTuple`` s (a consumer builds one per record; a named tuple
builds several times faster than a frozen dataclass); descriptions of the
cluster are frozen dataclasses built from the API's messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from millpond.v1 import admin_pb2, common_pb2, groups_pb2

Header = tuple[str, bytes | None]
"""A record header: a text key and a nullable bytes value. Keys may repeat; order is kept."""


class TopicPartition(NamedTuple):
    """One partition of one topic."""

    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    """Where an acknowledged record landed.

    ``offset`` is -1 for ``acks=0`` (the broker answered before appending).
    ``timestamp_ms`` is the record's create time as sent.
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


class ConsumerRecord(NamedTuple):
    """A record read from a partition."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]


@dataclass(frozen=True, slots=True)
class NodeDescription:
    """A node as the cluster metadata describes it."""

    id: int
    address: str
    epoch: int
    alive: bool

    @classmethod
    def from_proto(cls, node: common_pb2.NodeInfo) -> NodeDescription:
        return cls(id=node.id, address=node.address, epoch=node.epoch, alive=node.alive)


@dataclass(frozen=True, slots=True)
class PartitionDescription:
    """One partition: its leader (0 if none), replicas, in-sync replicas and offsets."""

    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    log_start_offset: int
    high_watermark: int

    @classmethod
    def from_proto(cls, info: common_pb2.PartitionInfo) -> PartitionDescription:
        return cls(
            partition=info.partition,
            leader=info.leader,
            leader_epoch=info.leader_epoch,
            replicas=tuple(info.replicas),
            isr=tuple(info.isr),
            log_start_offset=info.log_start_offset,
            high_watermark=info.high_watermark,
        )


@dataclass(frozen=True, slots=True)
class TopicDescription:
    """A topic with all its partitions (sorted by partition number) and its configuration."""

    name: str
    topic_id: int
    replication_factor: int
    partitions: tuple[PartitionDescription, ...]
    config: Mapping[str, str]

    @classmethod
    def from_proto(cls, info: common_pb2.TopicInfo) -> TopicDescription:
        partitions = sorted((PartitionDescription.from_proto(p) for p in info.partitions),
                            key=lambda p: p.partition)
        return cls(
            name=info.name,
            topic_id=info.topic_id,
            replication_factor=info.replication_factor,
            partitions=tuple(partitions),
            config=MappingProxyType(dict(info.config)),
        )


@dataclass(frozen=True, slots=True)
class ReplicaDescription:
    """One node's own replica of a partition: offsets, Raft position and a checksum of its committed
    batches up to ``checksum_end_offset`` (replicas with equal end offsets must have equal checksums)."""

    node_id: int
    high_watermark: int
    log_start_offset: int
    checksum_end_offset: int
    batches: int
    records: int
    checksum: str
    role: str
    term: int
    commit_index: int

    @classmethod
    def from_proto(cls, response: admin_pb2.DescribeReplicaResponse) -> ReplicaDescription:
        return cls(
            node_id=response.node_id, high_watermark=response.high_watermark,
            log_start_offset=response.log_start_offset, checksum_end_offset=response.checksum_end_offset,
            batches=response.batches, records=response.records, checksum=response.checksum,
            role=response.role, term=response.term, commit_index=response.commit_index,
        )


@dataclass(frozen=True, slots=True)
class ClusterDescription:
    """Nodes, the active controller (0 if none), and optionally every topic."""

    cluster_id: str
    nodes: tuple[NodeDescription, ...]
    controller: int
    controller_voters: tuple[int, ...]
    topics: tuple[TopicDescription, ...]
    under_replicated_partitions: int
    offline_partitions: int

    @classmethod
    def from_proto(cls, response: admin_pb2.DescribeClusterResponse) -> ClusterDescription:
        return cls(
            cluster_id=response.cluster_id,
            nodes=tuple(sorted((NodeDescription.from_proto(n) for n in response.nodes), key=lambda n: n.id)),
            controller=response.controller,
            controller_voters=tuple(response.controller_voters),
            topics=tuple(sorted((TopicDescription.from_proto(t) for t in response.topics),
                                key=lambda t: t.name)),
            under_replicated_partitions=response.under_replicated_partitions,
            offline_partitions=response.offline_partitions,
        )

    @property
    def ready(self) -> bool:
        """True if a controller is active, every known node is alive, and every partition has a leader."""
        return (
            self.controller != 0
            and bool(self.nodes)
            and all(node.alive for node in self.nodes)
            and self.offline_partitions == 0
            and all(p.leader != 0 for topic in self.topics for p in topic.partitions)
        )


# --- consumer groups ------------------------------------------------------------------------


class OffsetAndMetadata(NamedTuple):
    """A committed offset: the next offset the group consumes in a partition, with free-text metadata.

    ``leader_epoch`` is the leader epoch of the last consumed record (-1: unknown);
    ``commit_timestamp_ms`` is when the controller recorded it (0 in a commit request).
    """

    offset: int
    metadata: str = ""
    leader_epoch: int = -1
    commit_timestamp_ms: int = 0


def _partitions_of(items: Iterable[groups_pb2.TopicPartitions]) -> tuple[TopicPartition, ...]:
    return tuple(sorted(TopicPartition(item.topic, p) for item in items for p in item.partitions))


@dataclass(frozen=True, slots=True)
class GroupListing:
    """One consumer group in :meth:`~millpond.client.AsyncAdmin.list_groups`.

    ``state``: ``"empty"``, ``"assigning"``, ``"reconciling"`` or ``"stable"``.
    """

    group_id: str
    state: str
    group_epoch: int
    members: int

    @classmethod
    def from_proto(cls, listing: groups_pb2.GroupListing) -> GroupListing:
        return cls(listing.group_id, listing.state, listing.group_epoch, listing.members)


@dataclass(frozen=True, slots=True)
class GroupMemberDescription:
    """One member of a group: its subscription, epoch, and assignment (current and target)."""

    member_id: str
    instance_id: str
    """Static instance id; ``""`` for a dynamic member."""
    member_epoch: int
    """-2 while a static member is away."""
    subscribed_topic_names: tuple[str, ...]
    subscribed_topic_regex: str
    server_assignor: str
    assigned: tuple[TopicPartition, ...]
    """Partitions it may consume now."""
    pending_revocation: tuple[TopicPartition, ...]
    """Partitions it was asked to release and has not reported released yet."""
    target: tuple[TopicPartition, ...]
    session_timeout_ms: int
    rebalance_timeout_ms: int

    @classmethod
    def from_proto(cls, member: groups_pb2.GroupMember) -> GroupMemberDescription:
        return cls(
            member_id=member.member_id, instance_id=member.instance_id, member_epoch=member.member_epoch,
            subscribed_topic_names=tuple(member.subscribed_topic_names),
            subscribed_topic_regex=member.subscribed_topic_regex, server_assignor=member.server_assignor,
            assigned=_partitions_of(member.assigned),
            pending_revocation=_partitions_of(member.pending_revocation),
            target=_partitions_of(member.target), session_timeout_ms=member.session_timeout_ms,
            rebalance_timeout_ms=member.rebalance_timeout_ms,
        )


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """A group's progress in one partition (-1: unknown or none)."""

    topic: str
    partition: int
    committed_offset: int
    high_watermark: int
    lag: int
    """``high_watermark - committed_offset``; -1 if either is unknown."""
    member_id: str
    """The member owning the partition now; ``""`` if none."""
    metadata: str
    commit_timestamp_ms: int

    @classmethod
    def from_proto(cls, lag: groups_pb2.PartitionLag) -> PartitionLag:
        return cls(lag.topic, lag.partition, lag.committed_offset, lag.high_watermark, lag.lag, lag.member_id,
                   lag.metadata, lag.commit_timestamp_ms)


@dataclass(frozen=True, slots=True)
class GroupDescription:
    """A consumer group: state, epochs, members (by id) and per-partition offsets and lag."""

    group_id: str
    state: str
    group_epoch: int
    assignment_epoch: int
    assignor: str
    members: tuple[GroupMemberDescription, ...]
    partitions: tuple[PartitionLag, ...]

    @classmethod
    def from_proto(cls, response: groups_pb2.DescribeGroupResponse) -> GroupDescription:
        return cls(
            group_id=response.group_id, state=response.state, group_epoch=response.group_epoch,
            assignment_epoch=response.assignment_epoch, assignor=response.assignor,
            members=tuple(GroupMemberDescription.from_proto(m) for m in response.members),
            partitions=tuple(PartitionLag.from_proto(p) for p in response.partitions),
        )


@dataclass(frozen=True, slots=True)
class OffsetChange:
    """One partition's move in :meth:`~millpond.client.AsyncAdmin.reset_offsets` (``previous`` -1: none)."""

    topic: str
    partition: int
    previous: int
    offset: int

    @classmethod
    def from_proto(cls, change: groups_pb2.OffsetChange) -> OffsetChange:
        return cls(change.topic, change.partition, change.previous_offset, change.offset)
