"""The metadata image: the deterministic state machine of the metadata log (Raft group 0).

Every node applies the committed entries of group 0, in log order, to its own
:class:`MetadataImage`. The image is a pure function of the records applied:
same records, same image, byte for byte (:meth:`MetadataImage.snapshot`). So
``apply`` reads no clock, draws no randomness, and never lets dict or set
iteration order decide anything: whatever depends on time (who is dead, where
a replica goes) is decided by the active controller and carried in the record.

A record that conflicts with the state at apply time (a topic name taken by a
concurrent create, a fencing of an epoch that re-registered since) is
*rejected* deterministically: the image does not change and the
:class:`ApplyResult` carries the :class:`~millpond.errors.MillpondError` for
the proposer. A record that cannot be decoded, or breaks a structural rule
(replicas on an unregistered node, an index that does not grow), is a broken
log: :class:`~millpond.invariant.InvariantViolation`, and the node stops.

How the node drives it:

* ``CONTROL`` entries of group 0: :meth:`MetadataImage.apply` ``(entry.index, entry.data)``;
* every other entry of group 0 (``NOOP``, ``CONFIG``): :meth:`MetadataImage.mark_applied`
  ``(entry.index)``, so :attr:`~MetadataImage.applied_index` is Raft's applied index;
* a Raft snapshot of group 0 is :meth:`MetadataImage.snapshot` taken at
  ``applied_index``; installing one is :meth:`MetadataImage.restore`.

Consumer groups (members, assignments, committed offsets) live in the same
image: the group records (:mod:`millpond.controller.groups.records`) are
applied to :attr:`MetadataImage.groups`, a
:class:`~millpond.controller.groups.state.GroupsImage`, whose rejections are
mapped into :attr:`ApplyResult.error` (:func:`~millpond.controller.groups.errors.to_millpond_error`),
and whose content is the snapshot's ``"groups"`` section.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from millpond.controller import records
from millpond.controller.groups.errors import to_millpond_error
from millpond.controller.groups.records import GroupRecord, group_record_types
from millpond.controller.groups.state import GroupsImage
from millpond.controller.ids import PARTITIONS_PER_TOPIC_LIMIT, group_id
from millpond.controller.records import (
    AddPartitions,
    ChangeReplicas,
    CreateTopic,
    DeleteTopic,
    FenceNode,
    MetadataRecord,
    ReassignReplicas,
    RecordDecodeError,
    RegisterNode,
    SetPartitionLeader,
    UnfenceNode,
)
from millpond.errors import (
    InvalidRequest,
    MillpondError,
    PartitionCountDecrease,
    TopicExists,
    UnknownPartition,
    UnknownTopic,
)
from millpond.invariant import InvariantViolation, invariant, unreachable

__all__ = [
    "SNAPSHOT_FORMAT",
    "ApplyResult",
    "ImageStatistics",
    "MetadataImage",
    "NodeState",
    "PartitionState",
    "TopicState",
]

#: Format byte of :meth:`MetadataImage.snapshot` (1: canonical JSON, like the records).
SNAPSHOT_FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class NodeState:
    """A registered node."""

    node_id: int
    address: str
    incarnation: int
    epoch: int
    """Grows by one at each registration with a new incarnation (a restart)."""
    fenced: bool
    """Declared dead (or not yet caught up after registering): it must lead no partition."""
    fence_index: int
    """Metadata log index of the record that last fenced the node (its registration or a
    ``FenceNode``): it is unfenced once it has applied the log up to here."""

    @property
    def alive(self) -> bool:
        """Not fenced."""
        return not self.fenced


@dataclass(frozen=True, slots=True)
class TopicState:
    """A topic (its partitions are :class:`PartitionState`, found by group)."""

    topic_id: int
    name: str
    partition_count: int
    replication_factor: int
    config: tuple[tuple[str, str], ...]
    """The keys the user set, normalized, sorted (see ``topic_config.resolve_config``)."""

    def group(self, partition: int) -> int:
        """The Raft group of ``partition``."""
        return group_id(self.topic_id, partition)

    def config_dict(self) -> dict[str, str]:
        """:attr:`config` as a dict."""
        return dict(self.config)


@dataclass(frozen=True, slots=True)
class PartitionState:
    """One partition: where it lives, who leads it, which replicas are in sync."""

    group: int
    topic_id: int
    partition: int
    replicas: tuple[int, ...]
    """The partition's nodes, preferred leader first."""
    target: tuple[int, ...] = ()
    """While a reassignment runs, the replicas it moves to; empty otherwise."""
    leader: int = 0
    """Node id of the leader last reported, 0 if none is known."""
    leader_epoch: int = 0
    """Raft term of that leadership."""
    isr: tuple[int, ...] = ()
    """In-sync replicas (leader included), sorted."""

    @property
    def desired(self) -> tuple[int, ...]:
        """Where the partition should live: the target while reassigning, else the replicas."""
        return self.target or self.replicas

    @property
    def hosts(self) -> frozenset[int]:
        """Every node that holds (or is to hold) a replica: replicas and target."""
        return frozenset(self.replicas) | frozenset(self.target)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """The outcome of applying one metadata log entry, for the proposer and for the node."""

    index: int
    record: MetadataRecord | None
    """The decoded record (``None`` for a :meth:`MetadataImage.mark_applied` entry)."""
    error: MillpondError | None = None
    """Why the record was rejected; the image did not change."""
    topic_id: int = 0
    """``CreateTopic``: the new topic's id; ``DeleteTopic``/``AddPartitions``: the topic's."""
    node_epoch: int = 0
    """Node records: the node's epoch after applying."""
    changed_groups: tuple[int, ...] = ()
    """Partitions created, deleted, or whose replicas, target, leader or ISR changed (sorted)."""

    @property
    def ok(self) -> bool:
        """Applied (not rejected)."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class ImageStatistics:
    """An immutable summary of the image, for metrics and ``cluster status``."""

    applied_index: int
    nodes: int
    nodes_fenced: int
    topics: int
    partitions: int
    offline_partitions: int
    """Partitions with no known leader."""
    under_replicated_partitions: int
    """Partitions whose ISR is smaller than their replica set."""
    reassigning_partitions: int


_Handler = Callable[["MetadataImage", int, Any], ApplyResult]


class MetadataImage:
    """Nodes, topics and partitions as of :attr:`applied_index` of the metadata log.

    Not thread-safe; one owner (the node's RaftHost) applies and reads. Query
    results are immutable values.
    """

    def __init__(self) -> None:
        self._applied_index = 0
        self._next_topic_id = 1
        self._nodes: dict[int, NodeState] = {}
        self._topics: dict[int, TopicState] = {}
        self._topic_ids: dict[str, int] = {}
        self._partitions: dict[int, PartitionState] = {}
        # Indexes, rebuilt on restore: node -> groups it hosts / leads; groups reassigning.
        self._hosted: dict[int, set[int]] = {}
        self._led: dict[int, set[int]] = {}
        self._reassigning: set[int] = set()
        self._groups = GroupsImage()

    # --- applying -----------------------------------------------------------------

    @property
    def applied_index(self) -> int:
        """Index of the last metadata log entry applied."""
        return self._applied_index

    def mark_applied(self, index: int) -> None:
        """Record that the non-``CONTROL`` entry at ``index`` (a ``NOOP`` or ``CONFIG``) was applied."""
        invariant(index > self._applied_index, "metadata entries must be applied in order",
                  index=index, applied_index=self._applied_index)
        self._applied_index = index

    def apply(self, index: int, data: bytes) -> ApplyResult:
        """Apply the ``CONTROL`` entry at ``index`` carrying one encoded record.

        Raises :class:`InvariantViolation` (stop the node) if ``index`` does not
        grow or ``data`` is not a record this code can read; otherwise never
        raises: a rejection is in :attr:`ApplyResult.error`.
        """
        try:
            record = records.decode(data)
        except RecordDecodeError as exc:
            raise InvariantViolation("the metadata log holds a record this node cannot apply",
                                     {"index": index, "error": str(exc)}) from exc
        return self.apply_record(index, record)

    def apply_record(self, index: int, record: MetadataRecord) -> ApplyResult:
        """Apply an already decoded record (what :meth:`apply` does after decoding)."""
        invariant(index > self._applied_index, "metadata entries must be applied in order",
                  index=index, applied_index=self._applied_index)
        handler = _HANDLERS.get(type(record))
        if handler is None:
            unreachable("no apply rule for metadata record type", type=record.TYPE)
        result = handler(self, index, record)
        self._applied_index = index
        return result

    # --- queries ----------------------------------------------------------------------

    @property
    def groups(self) -> GroupsImage:
        """Consumer groups and their committed offsets (read-only for everyone but :meth:`apply`)."""
        return self._groups

    def topic_partition_counts(self) -> dict[str, int]:
        """Every topic's partition count by name (what the group coordinator resolves subscriptions
        against)."""
        return {name: self._topics[topic_id].partition_count for name, topic_id in self._topic_ids.items()}

    def node(self, node_id: int) -> NodeState | None:
        """The registered node ``node_id``, if any."""
        return self._nodes.get(node_id)

    def nodes(self) -> tuple[NodeState, ...]:
        """Every registered node, by id."""
        return tuple(self._nodes[node_id] for node_id in sorted(self._nodes))

    def live_nodes(self) -> tuple[int, ...]:
        """Ids of the unfenced nodes, sorted."""
        return tuple(node_id for node_id in sorted(self._nodes) if not self._nodes[node_id].fenced)

    def topic(self, name: str) -> TopicState | None:
        """The topic called ``name``, if any."""
        topic_id = self._topic_ids.get(name)
        return None if topic_id is None else self._topics[topic_id]

    def topic_by_id(self, topic_id: int) -> TopicState | None:
        """The topic with id ``topic_id``, if it exists."""
        return self._topics.get(topic_id)

    def topics(self) -> tuple[TopicState, ...]:
        """Every topic, by name."""
        return tuple(self._topics[self._topic_ids[name]] for name in sorted(self._topic_ids))

    def partitions(self, topic_id: int) -> tuple[PartitionState, ...]:
        """The partitions of topic ``topic_id`` in partition order (empty if it does not exist)."""
        topic = self._topics.get(topic_id)
        if topic is None:
            return ()
        return tuple(self._partitions[topic.group(p)] for p in range(topic.partition_count))

    def partition_by_group(self, group: int) -> PartitionState | None:
        """The partition whose Raft group is ``group``, if it exists."""
        return self._partitions.get(group)

    def partition_count_total(self) -> int:
        """Partitions over all topics."""
        return len(self._partitions)

    def groups_hosted_by(self, node_id: int) -> dict[int, tuple[int, ...]]:
        """Partition groups that ``node_id`` must host -> the voters to start a fresh replica with.

        For a node among the partition's replicas, the voters are the replicas
        (every replica of a new partition starts with the same configuration).
        For a node only in a reassignment's target, the tuple is empty: the
        replica starts with no configuration and waits for the leader to add it
        as a learner. The metadata group 0 is hosted by every node and is not listed.
        """
        hosted: dict[int, tuple[int, ...]] = {}
        for group in sorted(self._hosted.get(node_id, ())):
            partition = self._partitions[group]
            hosted[group] = partition.replicas if node_id in partition.replicas else ()
        return hosted

    def groups_led_by(self, node_id: int) -> tuple[int, ...]:
        """Groups whose recorded leader is ``node_id``, sorted."""
        return tuple(sorted(self._led.get(node_id, ())))

    def reassigning_groups(self) -> tuple[int, ...]:
        """Groups with a reassignment in progress, sorted."""
        return tuple(sorted(self._reassigning))

    def replica_counts(self) -> dict[int, int]:
        """Node id -> partitions it hosts (replicas and targets), for every registered node."""
        return {node_id: len(self._hosted.get(node_id, ())) for node_id in sorted(self._nodes)}

    def preferred_leader_counts(self) -> dict[int, int]:
        """Node id -> partitions whose preferred leader (first desired replica) it is."""
        counts = dict.fromkeys(sorted(self._nodes), 0)
        for partition in self._partitions.values():
            first = partition.desired[0]
            counts[first] = counts.get(first, 0) + 1
        return counts

    def statistics(self) -> ImageStatistics:
        """An immutable summary (walks every partition)."""
        partitions = self._partitions.values()
        return ImageStatistics(
            applied_index=self._applied_index,
            nodes=len(self._nodes),
            nodes_fenced=sum(1 for node in self._nodes.values() if node.fenced),
            topics=len(self._topics),
            partitions=len(self._partitions),
            offline_partitions=sum(1 for p in partitions if p.leader == 0),
            under_replicated_partitions=sum(1 for p in partitions if len(p.isr) < len(p.replicas)),
            reassigning_partitions=len(self._reassigning),
        )

    # --- snapshots --------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole image as canonical bytes (format byte, then sorted-key JSON).

        Two images that applied the same records have equal snapshots. Sections
        added later become new keys (``"groups"``: consumer groups and their
        committed offsets); :meth:`restore` treats a missing section as empty.
        """
        body = {
            "applied_index": self._applied_index,
            "next_topic_id": self._next_topic_id,
            "nodes": [
                {"node_id": n.node_id, "address": n.address, "incarnation": n.incarnation,
                 "epoch": n.epoch, "fenced": n.fenced, "fence_index": n.fence_index}
                for n in self.nodes()
            ],
            "topics": [
                {"topic_id": t.topic_id, "name": t.name, "replication_factor": t.replication_factor,
                 "config": dict(t.config),
                 "partitions": [
                     {"replicas": list(p.replicas), "target": list(p.target), "leader": p.leader,
                      "leader_epoch": p.leader_epoch, "isr": list(p.isr)}
                     for p in self.partitions(t.topic_id)
                 ]}
                for t in (self._topics[topic_id] for topic_id in sorted(self._topics))
            ],
            "groups": self._groups.snapshot_body()["groups"],
        }
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return bytes((SNAPSHOT_FORMAT,)) + text.encode("ascii")

    @classmethod
    def restore(cls, data: bytes) -> MetadataImage:
        """The image that :meth:`snapshot` wrote; :class:`InvariantViolation` if ``data`` is not one."""
        invariant(len(data) > 0 and data[0] == SNAPSHOT_FORMAT, "unknown metadata snapshot format",
                  format=data[0] if data else None)
        try:
            body = json.loads(data[1:].decode("ascii"))
            return cls._from_body(body)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise InvariantViolation("the metadata snapshot cannot be read",
                                     {"error": f"{type(exc).__name__}: {exc}"}) from exc

    @classmethod
    def _from_body(cls, body: dict[str, Any]) -> MetadataImage:
        image = cls()
        image._applied_index = _nonneg(body["applied_index"])
        image._next_topic_id = _nonneg(body["next_topic_id"])
        for n in body["nodes"]:
            node = NodeState(_nonneg(n["node_id"]), str(n["address"]), _nonneg(n["incarnation"]),
                             _nonneg(n["epoch"]), bool(n["fenced"]), _nonneg(n["fence_index"]))
            image._nodes[node.node_id] = node
        for t in body["topics"]:
            topic_id, parts = _nonneg(t["topic_id"]), t["partitions"]
            invariant(0 < topic_id < image._next_topic_id, "snapshot topic id out of range",
                      topic_id=topic_id)
            topic = TopicState(topic_id, str(t["name"]), len(parts), _nonneg(t["replication_factor"]),
                               tuple(sorted((str(k), str(v)) for k, v in t["config"].items())))
            image._topics[topic_id] = topic
            image._topic_ids[topic.name] = topic_id
            for number, p in enumerate(parts):
                image._put(PartitionState(
                    group=topic.group(number), topic_id=topic_id, partition=number,
                    replicas=tuple(map(_nonneg, p["replicas"])), target=tuple(map(_nonneg, p["target"])),
                    leader=_nonneg(p["leader"]), leader_epoch=_nonneg(p["leader_epoch"]),
                    isr=tuple(map(_nonneg, p["isr"]))))
        invariant(len(image._topic_ids) == len(image._topics), "snapshot repeats a topic name")
        image._groups = GroupsImage.from_snapshot_body({"groups": body.get("groups", [])})
        return image

    # --- index maintenance ------------------------------------------------------------------

    def _put(self, new: PartitionState) -> None:
        old = self._partitions.get(new.group)
        self._partitions[new.group] = new
        old_hosts, old_leader = (old.hosts, old.leader) if old else (frozenset(), 0)
        for node_id in old_hosts - new.hosts:
            self._hosted[node_id].discard(new.group)
        for node_id in new.hosts - old_hosts:
            self._hosted.setdefault(node_id, set()).add(new.group)
        if old_leader != new.leader:
            if old_leader:
                self._led[old_leader].discard(new.group)
            if new.leader:
                self._led.setdefault(new.leader, set()).add(new.group)
        if new.target:
            self._reassigning.add(new.group)
        else:
            self._reassigning.discard(new.group)

    def _remove(self, group: int) -> None:
        old = self._partitions.pop(group)
        for node_id in old.hosts:
            self._hosted[node_id].discard(group)
        if old.leader:
            self._led[old.leader].discard(group)
        self._reassigning.discard(group)

    def _check_replicas(self, replicas: tuple[int, ...], **context: object) -> None:
        invariant(len(replicas) > 0, "a replica set must not be empty", **context)
        invariant(len(set(replicas)) == len(replicas), "a replica set repeats a node",
                  replicas=replicas, **context)
        for node_id in replicas:
            invariant(node_id in self._nodes, "a replica is on an unregistered node",
                      node_id=node_id, **context)

    def _drop_leadership(self, node_id: int) -> tuple[int, ...]:
        """The node's process ended or was declared dead: it leads nothing and is in no ISR."""
        changed: list[int] = []
        for group in sorted(self._hosted.get(node_id, set()) | self._led.get(node_id, set())):
            partition = self._partitions[group]
            if partition.leader == node_id or node_id in partition.isr:
                self._put(replace(partition, leader=0 if partition.leader == node_id else partition.leader,
                                  isr=tuple(n for n in partition.isr if n != node_id)))
                changed.append(group)
        return tuple(changed)

    # --- apply rules, one per record type -----------------------------------------------------

    def _register_node(self, index: int, record: RegisterNode) -> ApplyResult:
        invariant(record.node_id > 0 and record.incarnation >= 0, "malformed node registration",
                  record=record)
        old = self._nodes.get(record.node_id)
        if old is not None and old.incarnation == record.incarnation and old.address == record.address:
            return ApplyResult(index, record, node_epoch=old.epoch)
        epoch = old.epoch + 1 if old is not None else 1
        self._nodes[record.node_id] = NodeState(record.node_id, record.address, record.incarnation,
                                                epoch, fenced=True, fence_index=index)
        changed = self._drop_leadership(record.node_id) if old is not None else ()
        return ApplyResult(index, record, node_epoch=epoch, changed_groups=changed)

    def _fence_node(self, index: int, record: FenceNode) -> ApplyResult:
        node = self._nodes.get(record.node_id)
        if node is None:
            unreachable("fencing of an unregistered node", node_id=record.node_id)
        if record.epoch != node.epoch:
            return ApplyResult(index, record, error=InvalidRequest(
                f"node {node.node_id} epoch {record.epoch} is stale (current epoch {node.epoch})"),
                node_epoch=node.epoch)
        if node.fenced:
            return ApplyResult(index, record, node_epoch=node.epoch)
        self._nodes[node.node_id] = replace(node, fenced=True, fence_index=index)
        return ApplyResult(index, record, node_epoch=node.epoch,
                           changed_groups=self._drop_leadership(node.node_id))

    def _unfence_node(self, index: int, record: UnfenceNode) -> ApplyResult:
        node = self._nodes.get(record.node_id)
        if node is None:
            unreachable("unfencing of an unregistered node", node_id=record.node_id)
        if record.epoch != node.epoch:
            return ApplyResult(index, record, error=InvalidRequest(
                f"node {node.node_id} epoch {record.epoch} is stale (current epoch {node.epoch})"),
                node_epoch=node.epoch)
        if node.fenced:
            self._nodes[node.node_id] = replace(node, fenced=False)
        return ApplyResult(index, record, node_epoch=node.epoch)

    def _create_topic(self, index: int, record: CreateTopic) -> ApplyResult:
        if record.name in self._topic_ids:
            return ApplyResult(index, record, error=TopicExists(f"topic {record.name!r} already exists"))
        count = len(record.replicas)
        invariant(0 < count < PARTITIONS_PER_TOPIC_LIMIT, "partition count out of range", count=count)
        invariant(len(record.name) > 0, "a topic needs a name")
        factor = len(record.replicas[0])
        for number, replicas in enumerate(record.replicas):
            self._check_replicas(replicas, topic=record.name, partition=number)
            invariant(len(replicas) == factor, "partitions of a topic differ in replication factor",
                      topic=record.name, partition=number)
        topic_id = self._next_topic_id
        self._next_topic_id += 1
        topic = TopicState(topic_id, record.name, count, factor, record.config)
        self._topics[topic_id] = topic
        self._topic_ids[record.name] = topic_id
        for number, replicas in enumerate(record.replicas):
            self._put(PartitionState(topic.group(number), topic_id, number, replicas,
                                     isr=tuple(sorted(replicas))))
        return ApplyResult(index, record, topic_id=topic_id,
                           changed_groups=tuple(topic.group(p) for p in range(count)))

    def _delete_topic(self, index: int, record: DeleteTopic) -> ApplyResult:
        topic = self._topics.get(record.topic_id)
        if topic is None:
            return self._unknown_topic(index, record, record.topic_id)
        groups = tuple(topic.group(p) for p in range(topic.partition_count))
        for group in groups:
            self._remove(group)
        del self._topics[topic.topic_id]
        del self._topic_ids[topic.name]
        return ApplyResult(index, record, topic_id=topic.topic_id, changed_groups=groups)

    def _add_partitions(self, index: int, record: AddPartitions) -> ApplyResult:
        topic = self._topics.get(record.topic_id)
        if topic is None:
            return self._unknown_topic(index, record, record.topic_id)
        total = record.first_partition + len(record.replicas)
        if topic.partition_count != record.first_partition:
            error: MillpondError
            if total <= topic.partition_count:
                error = PartitionCountDecrease(f"partition count can only grow: topic {topic.name!r} has "
                                               f"{topic.partition_count}, requested {total}")
            else:
                error = InvalidRequest(f"topic {topic.name!r} has {topic.partition_count} partitions, not "
                                       f"{record.first_partition}: it changed concurrently; retry")
            return ApplyResult(index, record, error=error, topic_id=topic.topic_id)
        invariant(len(record.replicas) > 0 and total < PARTITIONS_PER_TOPIC_LIMIT,
                  "partition count out of range", topic=topic.name, total=total)
        for offset, replicas in enumerate(record.replicas):
            self._check_replicas(replicas, topic=topic.name, partition=record.first_partition + offset)
        groups: list[int] = []
        for offset, replicas in enumerate(record.replicas):
            number = record.first_partition + offset
            groups.append(topic.group(number))
            self._put(PartitionState(groups[-1], topic.topic_id, number, replicas,
                                     isr=tuple(sorted(replicas))))
        self._topics[topic.topic_id] = replace(topic, partition_count=total)
        return ApplyResult(index, record, topic_id=topic.topic_id, changed_groups=tuple(groups))

    def _group_record(self, index: int, record: GroupRecord) -> ApplyResult:
        result = self._groups.apply(record)
        error = to_millpond_error(result.error) if result.error is not None else None
        return ApplyResult(index, record, error=error)

    def _unknown_topic(self, index: int, record: MetadataRecord, topic_id: int) -> ApplyResult:
        return ApplyResult(index, record, error=UnknownTopic(f"topic id {topic_id} does not exist"))

    def _unknown_partition(self, index: int, record: MetadataRecord, group: int) -> ApplyResult:
        return ApplyResult(index, record, error=UnknownPartition(
            f"group {group} is not a partition (its topic may have been deleted)"))

    def _set_partition_leader(self, index: int, record: SetPartitionLeader) -> ApplyResult:
        partition = self._partitions.get(record.group)
        if partition is None:
            return self._unknown_partition(index, record, record.group)
        if record.leader_epoch < partition.leader_epoch:
            return ApplyResult(index, record, error=InvalidRequest(
                f"group {record.group}: leader epoch {record.leader_epoch} is older than the recorded "
                f"{partition.leader_epoch}"))
        if record.leader:
            leader = self._nodes.get(record.leader)
            if leader is None or leader.fenced:
                return ApplyResult(index, record, error=InvalidRequest(
                    f"group {record.group}: node {record.leader} cannot lead: it is fenced or unknown"))
        invariant(all(n > 0 for n in record.isr) and len(set(record.isr)) == len(record.isr),
                  "malformed ISR", record=record)
        updated = replace(partition, leader=record.leader, leader_epoch=record.leader_epoch,
                          isr=tuple(sorted(record.isr)))
        if updated == partition:
            return ApplyResult(index, record)
        self._put(updated)
        return ApplyResult(index, record, changed_groups=(record.group,))

    def _reassign_replicas(self, index: int, record: ReassignReplicas) -> ApplyResult:
        partition = self._partitions.get(record.group)
        if partition is None:
            return self._unknown_partition(index, record, record.group)
        self._check_replicas(record.target, group=record.group)
        target = () if record.target == partition.replicas else record.target
        self._put(replace(partition, target=target))
        return ApplyResult(index, record, changed_groups=(record.group,))

    def _change_replicas(self, index: int, record: ChangeReplicas) -> ApplyResult:
        partition = self._partitions.get(record.group)
        if partition is None:
            return self._unknown_partition(index, record, record.group)
        if partition.target and partition.target != record.replicas:
            return ApplyResult(index, record, error=InvalidRequest(
                f"group {record.group}: replicas {list(record.replicas)} are not the pending target "
                f"{list(partition.target)}"))
        self._check_replicas(record.replicas, group=record.group)
        self._put(replace(partition, replicas=record.replicas, target=(),
                          isr=tuple(n for n in partition.isr if n in record.replicas)))
        return ApplyResult(index, record, changed_groups=(record.group,))


def _nonneg(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value


_HANDLERS: Final[dict[type[MetadataRecord], _Handler]] = {
    RegisterNode: MetadataImage._register_node,
    FenceNode: MetadataImage._fence_node,
    UnfenceNode: MetadataImage._unfence_node,
    CreateTopic: MetadataImage._create_topic,
    DeleteTopic: MetadataImage._delete_topic,
    AddPartitions: MetadataImage._add_partitions,
    SetPartitionLeader: MetadataImage._set_partition_leader,
    ReassignReplicas: MetadataImage._reassign_replicas,
    ChangeReplicas: MetadataImage._change_replicas,
    **{cls: MetadataImage._group_record for cls in group_record_types().values()},
}
"""Apply rule of each record type. A registered type without a rule is a fail-stop invariant."""
