"""The active controller's decisions, as pure functions of the image, the reports and the time.

Nothing here proposes, awaits or reads a clock: :class:`~millpond.controller.controller.ActiveController`
gathers the inputs (latest heartbeat per node, latest reports per node, the
monotonic time) and proposes what these functions return. Each function
iterates in sorted order, so equal inputs give equal outputs.

The rules:

* **Liveness.** A node unheard of for longer than the session timeout is
  fenced (:func:`nodes_to_fence`); a fenced node is unfenced when it
  heartbeats with its current epoch having applied the metadata log up to
  the record that fenced it (:func:`may_unfence`).
* **Leaders and ISR.** For each partition the report that counts is the
  highest-term one from an unfenced node, never older than the recorded
  leader epoch (:func:`leader_reports`). The ISR recorded is the leader plus
  the voters it reports in sync (:func:`isr_of`). A recorded leader that
  heartbeats without reporting the group, with no one else reporting it, is
  recorded as no leader (:func:`leader_changes`).
* **Re-placement.** Each replica on a node fenced for longer than the
  replacement delay is given a replacement (:func:`plan_reassignments`,
  recorded as a target). The leader is asked to add missing target nodes
  (one at a time, only live ones), then, once every target node is a voter in
  sync, to remove the others (:func:`reconcile_actions`); when its voters are
  exactly the target, the change is recorded (:func:`completed_reassignment`).
* **Preferred leaders.** A leader that is not its partition's first replica
  is asked to transfer to it when that replica is live, a voter and in sync,
  and no reassignment runs (:func:`preferred_leader_transfer`); the controller
  rate-limits these with a :class:`RateWindow`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from millpond.controller.placement import choose_replacement
from millpond.controller.records import ChangeReplicas, FenceNode, ReassignReplicas, SetPartitionLeader
from millpond.controller.reports import ActionKind, LeaderAction, LeaderReport
from millpond.controller.state import MetadataImage, NodeState, PartitionState

__all__ = [
    "LeadingReport",
    "RateWindow",
    "ReportsByNode",
    "completed_reassignment",
    "isr_of",
    "leader_changes",
    "leader_reports",
    "may_unfence",
    "metadata_learners_to_add",
    "nodes_to_fence",
    "plan_reassignments",
    "preferred_leader_transfer",
    "reconcile_actions",
]

ReportsByNode = Mapping[int, Mapping[int, LeaderReport]]
"""Node id -> group -> the report in that node's latest heartbeat."""


@dataclass(frozen=True, slots=True)
class LeadingReport:
    """The report that counts for a group, and the node that sent it (its leader)."""

    node: int
    report: LeaderReport


# --- liveness ----------------------------------------------------------------------------


def nodes_to_fence(
    image: MetadataImage,
    last_heartbeat_ms: Mapping[int, int],
    now_ms: int,
    session_timeout_ms: int,
    unheard_since_ms: int,
) -> list[FenceNode]:
    """Fencing records for unfenced nodes not heard from for more than ``session_timeout_ms``.

    A node absent from ``last_heartbeat_ms`` counts as heard at
    ``unheard_since_ms`` (the controller's start: a full session of grace).
    """
    return [
        FenceNode(node.node_id, node.epoch)
        for node in image.nodes()
        if not node.fenced
        and now_ms - last_heartbeat_ms.get(node.node_id, unheard_since_ms) > session_timeout_ms
    ]


def may_unfence(node: NodeState, epoch: int, metadata_applied: int) -> bool:
    """Whether a heartbeat with ``epoch`` and ``metadata_applied`` lets fenced ``node`` live again."""
    return node.fenced and node.epoch == epoch and metadata_applied >= node.fence_index


# --- leaders and ISR ---------------------------------------------------------------------


def leader_reports(image: MetadataImage, reports: ReportsByNode,
                   only_node: int | None = None) -> dict[int, LeadingReport]:
    """Group -> the report that counts: highest term among unfenced nodes, not below the leader epoch.

    Reports about groups that no longer exist are ignored; equal terms (one
    node's stale report) go to the lower node id. With ``only_node``, only the
    groups that node reports are considered (its heartbeat's view). Costs one
    pass over the reports.
    """
    wanted = None if only_node is None else set(reports.get(only_node, {}))
    found: dict[int, LeadingReport] = {}
    for node_id in sorted(reports):
        if not _alive(image.node(node_id)):
            continue
        by_group = reports[node_id]
        groups = by_group if wanted is None else wanted & by_group.keys()
        for group in groups:
            report = by_group[group]
            partition = image.partition_by_group(group)
            if partition is None or report.term < partition.leader_epoch:
                continue
            best = found.get(group)
            if best is None or report.term > best.report.term:
                found[group] = LeadingReport(node_id, report)
    return dict(sorted(found.items()))


def isr_of(leader: int, report: LeaderReport) -> tuple[int, ...]:
    """The ISR to record: the leader and the voters it reports in sync, sorted."""
    voters = set(report.voters) | {leader}
    return tuple(sorted((set(report.in_sync) | {leader}) & voters))


def leader_changes(image: MetadataImage, leaders: Mapping[int, LeadingReport],
                   reports: ReportsByNode) -> list[SetPartitionLeader]:
    """Records for partitions whose leader, leader epoch or ISR differ from the reports.

    ``leaders`` is :func:`leader_reports` of ``reports``. Also clears the
    leader of a group whose recorded leader is unfenced and sent a heartbeat
    (in ``reports``) without this group, when nobody else reports it.
    """
    changes: list[SetPartitionLeader] = []
    for group in sorted(leaders):
        leading = leaders[group]
        partition = image.partition_by_group(group)
        if partition is None:
            continue
        isr = isr_of(leading.node, leading.report)
        recorded = (partition.leader, partition.leader_epoch, partition.isr)
        if recorded != (leading.node, leading.report.term, isr):
            changes.append(SetPartitionLeader(group, leading.node, leading.report.term, isr))
    for node_id in sorted(reports):
        if not _alive(image.node(node_id)):
            continue
        for group in image.groups_led_by(node_id):
            if group not in reports[node_id] and group not in leaders:
                partition = image.partition_by_group(group)
                if partition is not None:
                    changes.append(SetPartitionLeader(group, 0, partition.leader_epoch, partition.isr))
    changes.sort(key=lambda change: change.group)
    return changes


# --- re-placement ------------------------------------------------------------------------


def plan_reassignments(image: MetadataImage, gone: Iterable[int], limit: int) -> list[ReassignReplicas]:
    """Targets that replace every replica on the ``gone`` nodes, at most ``limit`` records.

    A partition whose desired replicas (the pending target, else the
    replicas) include a gone node gets a new target with that node replaced,
    in its position, by :func:`~millpond.controller.placement.choose_replacement`
    among the live nodes; counts are updated as replicas are planned, so one
    dead node's replicas spread over the survivors. A partition with no
    possible replacement (every live node has a replica) is left as it is.
    """
    live = image.live_nodes()
    replica_counts = image.replica_counts()
    leader_counts = image.preferred_leader_counts()
    planned: dict[int, tuple[int, ...]] = {}
    for node_id in sorted(set(gone)):
        for group in image.groups_hosted_by(node_id):
            partition = image.partition_by_group(group)
            if partition is None:
                continue
            desired = planned.get(group, partition.desired)
            if node_id not in desired:
                continue
            if group not in planned and len(planned) >= limit:
                continue
            replacement = choose_replacement(desired, node_id, live, replica_counts, leader_counts)
            if replacement is None:
                continue
            target = tuple(replacement if n == node_id else n for n in desired)
            replica_counts[replacement] = replica_counts.get(replacement, 0) + 1
            if desired[0] == node_id:
                leader_counts[replacement] = leader_counts.get(replacement, 0) + 1
            planned[group] = target
    return [ReassignReplicas(group, planned[group]) for group in sorted(planned)]


def reconcile_actions(partition: PartitionState, leader: int, report: LeaderReport,
                      live: frozenset[int]) -> list[LeaderAction]:
    """What the leader of ``partition`` should do to bring its Raft members to the desired replicas.

    In order: add the first desired node that is not a member, if it is live
    (a dead one is waited for: the controller re-plans it); ask again for a
    desired node that is still a learner (the leader promotes it once it has
    caught up); once every desired
    node is a voter in sync, remove the first member that is not desired
    (others before the leader itself). Nothing when the members are as desired.
    """
    desired = partition.desired
    members = set(report.voters) | set(report.learners)
    missing = [n for n in desired if n not in members]
    for node_id in missing:
        if node_id in live:
            return [LeaderAction(partition.group, ActionKind.ADD_REPLICA, node_id)]
    if missing:
        return []
    learners = [n for n in desired if n in report.learners]
    if learners:
        # Repeated until the leader has promoted it (it does so once the learner caught up).
        return [LeaderAction(partition.group, ActionKind.ADD_REPLICA, learners[0])]
    in_sync = set(report.in_sync) | {leader}
    if any(n not in report.voters or n not in in_sync for n in desired):
        return []
    extras = sorted(members - set(desired), key=lambda n: (n == leader, n))
    if extras:
        return [LeaderAction(partition.group, ActionKind.REMOVE_REPLICA, extras[0])]
    return []


def completed_reassignment(partition: PartitionState, report: LeaderReport) -> ChangeReplicas | None:
    """The record that completes ``partition``'s reassignment once its voters are exactly the target."""
    if partition.target and set(report.voters) == set(partition.target) and not report.learners:
        return ChangeReplicas(partition.group, partition.target)
    return None


# --- preferred leaders -------------------------------------------------------------------------


def preferred_leader_transfer(partition: PartitionState, leader: int, report: LeaderReport,
                              live: frozenset[int]) -> LeaderAction | None:
    """A transfer to the partition's first replica if that is not the leader and is live, a voter, in sync."""
    if partition.target:
        return None
    preferred = partition.replicas[0]
    if preferred == leader or preferred not in live:
        return None
    if preferred not in report.voters or preferred not in report.in_sync:
        return None
    return LeaderAction(partition.group, ActionKind.TRANSFER_LEADER, preferred)


@dataclass(frozen=True, slots=True)
class RateWindow:
    """A fixed-window rate limit: at most ``limit`` events per ``interval_ms``, as an immutable value."""

    window_start_ms: int | None = None
    used: int = 0

    def take(self, now_ms: int, interval_ms: int, limit: int) -> tuple[bool, RateWindow]:
        """Whether one more event fits in the window at ``now_ms``, and the window after it."""
        window = self
        if self.window_start_ms is None or now_ms - self.window_start_ms >= interval_ms:
            window = RateWindow(now_ms, 0)
        if window.used >= limit:
            return False, window
        return True, RateWindow(window.window_start_ms, window.used + 1)


# --- the metadata log's own membership -------------------------------------------------------


def metadata_learners_to_add(image: MetadataImage, members: Iterable[int]) -> list[int]:
    """Registered nodes that are not yet members (voters or learners) of the metadata group, sorted.

    The metadata group's leader adds them as learners, one change at a time, so
    every node follows the metadata log.
    """
    present = set(members)
    return [node.node_id for node in image.nodes() if node.node_id not in present]


def _alive(node: NodeState | None) -> bool:
    return node is not None and not node.fenced
