"""The active controller: a thin asynchronous shell around the pure decisions.

Exactly one node runs an :class:`ActiveController` at a time: the leader of
the metadata log (group 0). It answers node registrations and heartbeats,
serves topic administration, and, on :meth:`ActiveController.tick`, fences
silent nodes, records leader and ISR changes, and drives re-placement. It
changes nothing itself: it proposes records and learns their outcome when the
metadata log applies them (``propose`` resolves with the
:class:`~millpond.controller.state.ApplyResult`).

It also coordinates consumer groups through its :attr:`ActiveController.groups`
(:class:`~millpond.controller.group_coordinator.GroupCoordinator`): member
heartbeats, offset commits, group deletion and offset resets, and, on each
tick, the removal of members whose session expired.

What it keeps only in memory (lost, and rebuilt, on failover): when each node
last heartbeated, each node's latest leader reports, since when each fenced
node has been fenced, the leader-transfer rate window, and each group
member's session. A new active controller therefore starts with fresh timers:
every node (and group member) gets a full session timeout of grace, a fenced
node's replacement delay starts over, and the partitions' offsets are unknown
until their leaders report (one heartbeat).

How the node wires it (see also the module docs of ``state`` and ``reports``):

1. Start an :class:`ActiveController` when this node becomes leader of group 0
   *and* its image has applied that term's first entry (so the image holds
   every committed record); drop it when leadership is lost. ``propose`` must
   raise :class:`~millpond.errors.NotController` once leadership is lost; every
   method lets it propagate.
2. Call :meth:`~ActiveController.tick` every ``heartbeat_interval_ms`` from one
   task (not concurrently with itself).
3. Route ``RegisterNode`` / ``NodeHeartbeat`` RPCs (this node's own included) and
   the Admin writes to it; map :class:`~millpond.errors.MillpondError` at the
   gRPC boundary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from millpond.controller import decisions, records
from millpond.controller.group_coordinator import GroupCoordinator
from millpond.controller.groups.coordinator import DEFAULT_SETTINGS, GroupSettings
from millpond.controller.placement import place_partitions
from millpond.controller.records import (
    AddPartitions,
    CreateTopic,
    DeleteTopic,
    MetadataRecord,
    ReassignReplicas,
    RegisterNode,
    UnfenceNode,
)
from millpond.controller.reports import HeartbeatResult, LeaderAction, LeaderReport
from millpond.controller.state import ApplyResult, MetadataImage, PartitionState, TopicState
from millpond.controller.topic_config import (
    TopicConfig,
    cluster_partitions_max,
    resolve_config,
    topic_partitions_max,
    topic_replication_factor_max,
    topics_max,
    validate_config,
    validate_topic_name,
)
from millpond.errors import (
    InvalidRequest,
    NotController,
    PartitionCountDecrease,
    ReplicationFactorTooLarge,
    ResourceExhausted,
    TopicExists,
    UnknownPartition,
    UnknownTopic,
)

__all__ = [
    "ActiveController",
    "ControllerSettings",
    "ControllerStatistics",
    "PartitionDescription",
    "Propose",
    "TopicDescription",
    "controller_reassignments_inflight_max",
    "controller_records_per_tick_max",
    "heartbeat_actions_max",
    "heartbeat_reports_max",
    "node_id_max",
]

# --- Limits (to move to millpond/limits.py) ----------------------------------------------
#: Records one tick proposes (fencings, leader/ISR changes, reassignments); the rest wait a tick.
controller_records_per_tick_max = 1024
#: Partitions being reassigned at once (bounds the re-placement traffic after a node loss).
controller_reassignments_inflight_max = 256
#: Leader reports one heartbeat may carry (a node leads at most every partition).
heartbeat_reports_max = cluster_partitions_max
#: Actions one heartbeat answer carries; the rest follow in later answers.
heartbeat_actions_max = 1024
#: Largest node id (``uint32`` on the wire; 0 means "no node").
node_id_max = 2**32 - 1
_INCARNATION_LIMIT = 2**64


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


Propose = Callable[[bytes], Awaitable[ApplyResult]]
"""Append one encoded record to the metadata log; resolve when it is applied (its
:class:`ApplyResult`), raise :class:`NotController` if leadership is lost first."""


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """Timing of liveness, re-placement and balancing (all in milliseconds of a monotonic clock)."""

    heartbeat_interval_ms: int = 250
    """How often nodes heartbeat (and the controller ticks)."""
    session_timeout_ms: int = 3_000
    """A node not heard from for longer is fenced."""
    replica_lag_ms_max: int = 5_000
    """A follower is in sync if it matched its leader's log within this. Leaders compute ``in_sync``
    with it; the controller passes it on and only records the result."""
    replacement_delay_ms: int = 30_000
    """A node fenced this long has its replicas re-placed on other nodes."""
    leader_balance_interval_ms: int = 5_000
    """Window of the preferred-leader transfer rate limit, and the least time between two
    transfer requests for one partition."""
    leader_transfers_per_interval_max: int = 32
    """Preferred-leader transfers requested per window, over the whole cluster."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming every setting that is out of range or contradicts another."""
        problems: list[str] = []
        for name in ("heartbeat_interval_ms", "session_timeout_ms", "replica_lag_ms_max",
                     "leader_balance_interval_ms"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.replacement_delay_ms < 0 or self.leader_transfers_per_interval_max < 0:
            problems.append("replacement_delay_ms and leader_transfers_per_interval_max must be >= 0")
        if self.session_timeout_ms < 2 * self.heartbeat_interval_ms:
            problems.append("session_timeout_ms must be >= 2 * heartbeat_interval_ms")
        if self.replica_lag_ms_max < self.heartbeat_interval_ms:
            problems.append("replica_lag_ms_max must be >= heartbeat_interval_ms")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class PartitionDescription:
    """A partition as recorded, with the offsets its leader last reported (-1: not reported yet)."""

    state: PartitionState
    log_start_offset: int
    high_watermark: int


@dataclass(frozen=True, slots=True)
class TopicDescription:
    """A topic, its full configuration and its partitions."""

    topic: TopicState
    config: TopicConfig
    partitions: tuple[PartitionDescription, ...]


@dataclass(frozen=True, slots=True)
class ControllerStatistics:
    """An immutable snapshot of the active controller's counters."""

    started_ms: int
    nodes_heard: int
    """Nodes that heartbeated since this controller started."""
    leader_reports: int
    """Reports held (latest per node and group)."""
    nodes_awaiting_replacement: int
    """Fenced nodes whose replacement delay has not run out yet."""
    records_proposed_total: int
    records_rejected_total: int
    transfers_requested_total: int
    reassignments_started_total: int


class ActiveController:
    """Decides for the cluster while this node leads the metadata log.

    ``image`` is this node's :class:`MetadataImage` (read-only here: the node
    applies the log to it). ``now_ms`` is a monotonic clock in milliseconds.
    Methods that propose are coroutines; they raise the :class:`MillpondError`
    named in their docstrings, and :class:`NotController` whenever ``propose`` does.
    """

    def __init__(self, image: MetadataImage, propose: Propose, now_ms: Callable[[], int],
                 settings: ControllerSettings | None = None, *,
                 group_settings: GroupSettings = DEFAULT_SETTINGS,
                 wall_ms: Callable[[], int] | None = None,
                 new_member_id: Callable[[], str] | None = None) -> None:
        self._settings = settings or ControllerSettings()
        self._settings.validate()
        self._image = image
        self._propose_bytes = propose
        self._now_ms = now_ms
        self._started_ms = now_ms()
        self._last_heartbeat_ms: dict[int, int] = {}
        self._reports: dict[int, dict[int, LeaderReport]] = {}
        self._fenced_since_ms: dict[int, int] = {}
        self._transfer_window = decisions.RateWindow()
        self._transfer_sent_ms: dict[int, int] = {}
        self._unfencing: set[int] = set()
        self._admin = asyncio.Lock()
        self._proposed = self._rejected = self._transfers = self._reassignments = 0
        self.groups = GroupCoordinator(image, self._propose_all, now_ms, wall_ms or _wall_ms, group_settings,
                                       new_member_id)
        """Consumer groups: heartbeats, offsets, deletion, resets (``group_settings``; ``wall_ms`` stamps
        offset commits, default the system clock; ``new_member_id`` names joining members, default
        random UUIDs)."""

    @property
    def settings(self) -> ControllerSettings:
        """The settings in force."""
        return self._settings

    # --- nodes ---------------------------------------------------------------------------

    async def register_node(self, node_id: int, address: str, incarnation: int) -> int:
        """Register a starting node process and return its epoch.

        A new ``incarnation`` (a restarted process) gets the previous epoch + 1;
        the node starts fenced and is unfenced by a heartbeat once it has caught
        up with the metadata log. Repeating a registration with the same
        incarnation and address is idempotent (same epoch, nothing proposed).
        Raises :class:`InvalidRequest` for a node id outside ``1..2**32-1``, an
        empty address or an incarnation outside ``0..2**64-1``.
        """
        if not 1 <= node_id <= node_id_max:
            raise InvalidRequest(f"node id must be between 1 and {node_id_max}, got {node_id}")
        if not address:
            raise InvalidRequest(f"node {node_id}: address must not be empty")
        if not 0 <= incarnation < _INCARNATION_LIMIT:
            raise InvalidRequest(f"node {node_id}: incarnation must fit in 64 bits, got {incarnation}")
        node = self._image.node(node_id)
        if node is not None and node.incarnation == incarnation and node.address == address:
            epoch = node.epoch
        else:
            epoch = (await self._propose_checked(RegisterNode(node_id, address, incarnation))).node_epoch
            self._reports.pop(node_id, None)
        self._last_heartbeat_ms[node_id] = self._now_ms()
        return epoch

    async def heartbeat(self, node_id: int, epoch: int, metadata_applied: int,
                        reports: Sequence[LeaderReport]) -> HeartbeatResult:
        """Record that ``node_id`` lives, keep its leader reports, and answer with actions for it.

        A stale ``epoch`` (the node re-registered since, so this is a zombie
        process) answers ``alive=False`` and changes nothing. A fenced node that
        has applied the metadata log up to its fencing is unfenced (proposed and
        awaited here). A fenced node gets ``alive=False`` and no actions. Raises
        :class:`InvalidRequest` for an unregistered node or more than
        :data:`heartbeat_reports_max` reports.
        """
        node = self._image.node(node_id)
        if node is None:
            raise InvalidRequest(f"node {node_id} is not registered; register it first")
        if len(reports) > heartbeat_reports_max:
            raise InvalidRequest(f"node {node_id}: {len(reports)} leader reports in one heartbeat, at most "
                                 f"{heartbeat_reports_max}")
        if epoch != node.epoch:
            return HeartbeatResult(alive=False)
        now = self._now_ms()
        self._last_heartbeat_ms[node_id] = now
        by_group: dict[int, LeaderReport] = {}
        for report in reports:
            if report.group not in by_group or report.term > by_group[report.group].term:
                by_group[report.group] = report
        self._reports[node_id] = by_group
        if decisions.may_unfence(node, epoch, metadata_applied) and node_id not in self._unfencing:
            self._unfencing.add(node_id)
            try:
                await self._propose_all([UnfenceNode(node_id, epoch)])
            finally:
                self._unfencing.discard(node_id)
        node = self._image.node(node_id)
        if node is None or node.fenced or node.epoch != epoch:
            return HeartbeatResult(alive=False)
        return HeartbeatResult(alive=True, actions=tuple(self._actions_for(node_id, self._now_ms())))

    def _actions_for(self, node_id: int, now: int) -> list[LeaderAction]:
        settings = self._settings
        live = frozenset(self._image.live_nodes())
        actions: list[LeaderAction] = []
        transfers: list[LeaderAction] = []
        for group, leading in sorted(decisions.leader_reports(self._image, self._reports, node_id).items()):
            partition = self._image.partition_by_group(group)
            if leading.node != node_id or partition is None:
                continue
            actions.extend(decisions.reconcile_actions(partition, node_id, leading.report, live))
            transfer = decisions.preferred_leader_transfer(partition, node_id, leading.report, live)
            sent = self._transfer_sent_ms.get(group)
            if transfer is not None and (sent is None or now - sent >= settings.leader_balance_interval_ms):
                transfers.append(transfer)
        # Never-requested transfers first, then the longest ago: a transfer that keeps
        # failing cannot starve the others of the rate limit.
        transfers.sort(key=lambda t: (self._transfer_sent_ms.get(t.group, -1), t.group))
        for transfer in transfers[:max(0, heartbeat_actions_max - len(actions))]:
            allowed, self._transfer_window = self._transfer_window.take(
                now, settings.leader_balance_interval_ms, settings.leader_transfers_per_interval_max)
            if not allowed:
                break
            self._transfer_sent_ms[transfer.group] = now
            self._transfers += 1
            actions.append(transfer)
        return actions[:heartbeat_actions_max]

    # --- periodic work -------------------------------------------------------------------------

    async def tick(self) -> tuple[ApplyResult, ...]:
        """Fence silent nodes, record leader/ISR changes, complete and start reassignments, and
        remove consumer-group members whose session expired (:meth:`GroupCoordinator.tick`).

        Proposes at most :data:`controller_records_per_tick_max` records (and
        the group expirations) and awaits them all; returns their results
        (rejections included: a record that raced with another change is simply
        re-decided next tick). Call from one task, every ``heartbeat_interval_ms``.
        """
        settings, image = self._settings, self._image
        now = self._now_ms()
        self._observe_fencing(now)
        pending: list[MetadataRecord] = list(decisions.nodes_to_fence(
            image, self._last_heartbeat_ms, now, settings.session_timeout_ms, self._started_ms))
        leaders = decisions.leader_reports(image, self._reports)
        pending += decisions.leader_changes(image, leaders, self._reports)
        for group in image.reassigning_groups():
            partition, leading = image.partition_by_group(group), leaders.get(group)
            if partition is not None and leading is not None:
                done = decisions.completed_reassignment(partition, leading.report)
                if done is not None:
                    pending.append(done)
        gone = [node_id for node_id, since in sorted(self._fenced_since_ms.items())
                if now - since >= settings.replacement_delay_ms]
        if gone:
            room = controller_reassignments_inflight_max - len(image.reassigning_groups())
            pending += decisions.plan_reassignments(image, gone, max(0, room))
        batch = pending[:controller_records_per_tick_max]
        self._reassignments += sum(1 for record in batch if isinstance(record, ReassignReplicas))
        results = await self._propose_all(batch)
        self._observe_fencing(now)  # a node fenced by this tick is fenced since now
        return results + await self.groups.tick()

    def _observe_fencing(self, now: int) -> None:
        for node in self._image.nodes():
            if node.fenced:
                self._fenced_since_ms.setdefault(node.node_id, now)
                self._reports.pop(node.node_id, None)
            else:
                self._fenced_since_ms.pop(node.node_id, None)
        # Forget transfer requests of partitions now led by their preferred leader (or gone).
        for group in list(self._transfer_sent_ms):
            partition = self._image.partition_by_group(group)
            if partition is None or partition.leader == partition.replicas[0]:
                del self._transfer_sent_ms[group]

    # --- topics ---------------------------------------------------------------------------------

    async def create_topic(self, name: str, partitions: int, replication_factor: int,
                           config: Mapping[str, str] | None = None, *, internal: bool = False) -> TopicState:
        """Create a topic with replicas balanced over the live nodes; return it as applied.

        Raises :class:`~millpond.errors.InvalidTopicName` (naming rules;
        ``internal`` allows the reserved ``__`` prefix), :class:`InvalidRequest`
        (partitions outside ``1..topic_partitions_max``, replication factor outside
        ``1..topic_replication_factor_max``), :class:`~millpond.errors.InvalidConfig`,
        :class:`TopicExists` (also when a concurrent create of the name wins),
        :class:`~millpond.errors.ReplicationFactorTooLarge` (more replicas than live
        nodes), :class:`ResourceExhausted` (``topics_max`` or ``cluster_partitions_max``
        reached). A call that raises :class:`NotController` may or may not have
        created the topic.
        """
        validate_topic_name(name, internal=internal)
        if not 1 <= partitions <= topic_partitions_max:
            raise InvalidRequest(f"partitions must be between 1 and {topic_partitions_max}, got {partitions}")
        if not 1 <= replication_factor <= topic_replication_factor_max:
            raise InvalidRequest(f"replication factor must be between 1 and {topic_replication_factor_max}, "
                                 f"got {replication_factor}")
        explicit = validate_config(config or {}, replication_factor)
        async with self._admin:
            image = self._image
            if image.topic(name) is not None:
                raise TopicExists(f"topic {name!r} already exists")
            if len(image.topics()) >= topics_max:
                raise ResourceExhausted(f"the cluster has {topics_max} topics, the most it may have",
                                        retry_after_ms=self._settings.session_timeout_ms)
            self._check_cluster_partitions(partitions)
            replicas = place_partitions(partitions, replication_factor, image.live_nodes(),
                                        image.replica_counts(), image.preferred_leader_counts())
            record = CreateTopic(name, tuple(replicas), tuple(sorted(explicit.items())))
            result = await self._propose_checked(record)
        return self._topic_after(result)

    async def delete_topic(self, name: str) -> None:
        """Delete topic ``name`` and its partitions; :class:`UnknownTopic` if it does not exist.

        Nodes delete the replicas' data when they apply the record (the groups
        leave :meth:`MetadataImage.groups_hosted_by`).
        """
        async with self._admin:
            topic = self._image.topic(name)
            if topic is None:
                raise UnknownTopic(f"topic {name!r} does not exist")
            await self._propose_checked(DeleteTopic(topic.topic_id))

    async def alter_partitions(self, name: str, count: int) -> TopicState:
        """Grow topic ``name`` to ``count`` partitions; return it as applied.

        Raises :class:`UnknownTopic`; :class:`PartitionCountDecrease` if
        ``count`` is not larger than the current count (partitions can only
        grow); :class:`InvalidRequest` above ``topic_partitions_max``;
        :class:`~millpond.errors.ReplicationFactorTooLarge` if fewer nodes are
        live than the topic's replication factor; :class:`ResourceExhausted` at
        ``cluster_partitions_max``. Existing partitions keep their data and
        keys hashed before the change may map to another partition after it.
        """
        async with self._admin:
            image = self._image
            topic = image.topic(name)
            if topic is None:
                raise UnknownTopic(f"topic {name!r} does not exist")
            if count <= topic.partition_count:
                raise PartitionCountDecrease(f"partition count can only grow: topic {name!r} has "
                                             f"{topic.partition_count}, requested {count}")
            if count > topic_partitions_max:
                raise InvalidRequest(f"partitions must be at most {topic_partitions_max}, got {count}")
            self._check_cluster_partitions(count - topic.partition_count)
            replicas = place_partitions(count - topic.partition_count, topic.replication_factor,
                                        image.live_nodes(), image.replica_counts(),
                                        image.preferred_leader_counts())
            result = await self._propose_checked(
                AddPartitions(topic.topic_id, topic.partition_count, tuple(replicas)))
        return self._topic_after(result)

    async def reassign_partition(self, name: str, partition: int, replicas: Sequence[int]) -> TopicState:
        """Start moving ``name``/``partition`` to ``replicas`` (first = preferred leader); return the
        topic as applied, the move pending.

        The partition's leader carries the move out (learners added, promoted
        once caught up, old replicas removed) and the controller records its
        completion. Raises :class:`UnknownTopic`, :class:`UnknownPartition`;
        :class:`InvalidRequest` if ``replicas`` is empty, repeats a node, names
        an unregistered node or differs in size from the replication factor;
        :class:`~millpond.errors.ReplicationFactorTooLarge` if a target node is
        not alive. The current replicas as target cancel a pending move.
        """
        async with self._admin:
            image = self._image
            topic = image.topic(name)
            if topic is None:
                raise UnknownTopic(f"topic {name!r} does not exist")
            if not 0 <= partition < topic.partition_count:
                raise UnknownPartition(f"topic {name!r} has no partition {partition} "
                                       f"(it has {topic.partition_count})")
            target = tuple(replicas)
            if len(target) != topic.replication_factor:
                raise InvalidRequest(f"replicas must name {topic.replication_factor} nodes (the replication "
                                     f"factor of {name!r}), got {list(target)}")
            if len(set(target)) != len(target):
                raise InvalidRequest(f"replicas must not repeat a node, got {list(target)}")
            unknown = [n for n in target if image.node(n) is None]
            if unknown:
                raise InvalidRequest(f"replicas name unknown nodes {unknown}")
            dead = [n for n in target if n not in image.live_nodes()]
            if dead:
                raise ReplicationFactorTooLarge(f"replicas name nodes that are not alive: {dead}")
            await self._propose_checked(ReassignReplicas(topic.group(partition), target))
        applied = self._image.topic_by_id(topic.topic_id)
        if applied is None:  # deleted again between apply and now
            raise UnknownTopic(f"topic {name!r} was deleted concurrently")
        return applied

    def describe_topic(self, name: str) -> TopicDescription:
        """Topic ``name`` with its full configuration and every partition's offsets; :class:`UnknownTopic`."""
        topic = self._image.topic(name)
        if topic is None:
            raise UnknownTopic(f"topic {name!r} does not exist")
        return TopicDescription(
            topic=topic,
            config=resolve_config(topic.config_dict()),
            partitions=tuple(PartitionDescription(p, *self.partition_offsets(p.group))
                             for p in self._image.partitions(topic.topic_id)),
        )

    def partition_offsets(self, group: int) -> tuple[int, int]:
        """``(log_start_offset, high_watermark)`` the group's leader last reported, ``(-1, -1)`` if none."""
        best: LeaderReport | None = None
        for node_id in sorted(self._reports):
            node = self._image.node(node_id)
            report = self._reports[node_id].get(group)
            if report is None or node is None or node.fenced:
                continue
            if best is None or report.term > best.term:
                best = report
        return (best.log_start_offset, best.high_watermark) if best is not None else (-1, -1)

    def metadata_learners_to_add(self, members: Iterable[int]) -> list[int]:
        """Registered nodes missing from the metadata group (``members``: its voters and learners)."""
        return decisions.metadata_learners_to_add(self._image, members)

    def statistics(self) -> ControllerStatistics:
        """Counters and sizes of the in-memory state."""
        return ControllerStatistics(
            started_ms=self._started_ms,
            nodes_heard=len(self._last_heartbeat_ms),
            leader_reports=sum(len(by_group) for by_group in self._reports.values()),
            nodes_awaiting_replacement=len(self._fenced_since_ms),
            records_proposed_total=self._proposed,
            records_rejected_total=self._rejected,
            transfers_requested_total=self._transfers,
            reassignments_started_total=self._reassignments,
        )

    # --- proposing ---------------------------------------------------------------------------------

    def _check_cluster_partitions(self, adding: int) -> None:
        total = self._image.partition_count_total()
        if total + adding > cluster_partitions_max:
            raise ResourceExhausted(f"the cluster has {total} partitions; {adding} more would exceed "
                                    f"cluster_partitions_max={cluster_partitions_max}",
                                    retry_after_ms=self._settings.session_timeout_ms)

    def _topic_after(self, result: ApplyResult) -> TopicState:
        topic = self._image.topic_by_id(result.topic_id)
        if topic is None:  # deleted again between apply and now
            raise UnknownTopic(f"topic id {result.topic_id} was deleted concurrently")
        return topic

    async def _propose_checked(self, record: MetadataRecord) -> ApplyResult:
        """Propose one record and raise the error it was rejected with."""
        (result,) = await self._propose_all([record])
        if result.error is not None:
            raise result.error
        return result

    async def _propose_all(self, pending: Sequence[MetadataRecord]) -> tuple[ApplyResult, ...]:
        """Propose ``pending`` together (Raft batches them), in order, and await every result.

        ``propose`` appends synchronously before its first suspension (the node's
        does; the test log appends after one ``sleep(0)``, in call order), so the
        tasks ``gather`` starts in list order append in list order: the consumer-group
        records of one decision reach the log in decision order.

        If any proposal fails, all are awaited first, then the first
        :class:`NotController` (else the first error) is raised.
        """
        if not pending:
            return ()
        outcomes = await asyncio.gather(*(self._propose_bytes(records.encode(r)) for r in pending),
                                        return_exceptions=True)
        self._proposed += len(pending)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            raise next((f for f in failures if isinstance(f, NotController)), failures[0])
        results = tuple(o for o in outcomes if isinstance(o, ApplyResult))
        self._rejected += sum(1 for r in results if not r.ok)
        return results
