"""The active controller's pure decision rules, one by one, with time and reports as plain inputs."""

from __future__ import annotations

from millpond.controller import decisions
from millpond.controller.decisions import LeadingReport, RateWindow
from millpond.controller.ids import group_id
from millpond.controller.records import (
    CreateTopic,
    FenceNode,
    ReassignReplicas,
    RegisterNode,
    SetPartitionLeader,
    UnfenceNode,
)
from millpond.controller.reports import ActionKind, LeaderAction, LeaderReport
from millpond.controller.state import MetadataImage, PartitionState

G = group_id(1, 0)
ADD_4 = LeaderAction(G, ActionKind.ADD_REPLICA, 4)
REMOVE_1, REMOVE_3, REMOVE_5 = (LeaderAction(G, ActionKind.REMOVE_REPLICA, n) for n in (1, 3, 5))
LIVE = frozenset({1, 2, 3, 4})


def image_with(*records: object) -> MetadataImage:
    image = MetadataImage()
    for node_id in (1, 2, 3, 4):
        image.apply_record(image.applied_index + 1, RegisterNode(node_id, f"h{node_id}", 1))
        image.apply_record(image.applied_index + 1, UnfenceNode(node_id, 1))
    for record in records:
        image.apply_record(image.applied_index + 1, record)  # type: ignore[arg-type]
    return image


def partition(replicas: tuple[int, ...], target: tuple[int, ...] = ()) -> PartitionState:
    return PartitionState(G, 1, 0, replicas, target)


def test_nodes_to_fence_counts_unheard_nodes_from_the_controller_start() -> None:
    image = image_with(FenceNode(4, 1))
    last = {1: 5_000, 2: 4_000}
    # Node 3 never heartbeated: heard "at" 4_000 (the start); node 4 is already fenced.
    assert decisions.nodes_to_fence(image, last, 5_000, 1_000, 4_000) == []
    assert decisions.nodes_to_fence(image, last, 5_001, 1_000, 4_000) == [FenceNode(2, 1), FenceNode(3, 1)]


def test_may_unfence_needs_current_epoch_and_catch_up() -> None:
    image = image_with(FenceNode(4, 1))
    node = image.node(4)
    assert node is not None
    assert not decisions.may_unfence(node, 1, node.fence_index - 1)
    assert not decisions.may_unfence(node, 2, node.fence_index)
    assert decisions.may_unfence(node, 1, node.fence_index)
    live = image.node(1)
    assert live is not None and not decisions.may_unfence(live, 1, 10**9)


def test_isr_is_the_leader_and_its_in_sync_voters() -> None:
    assert decisions.isr_of(2, LeaderReport(G, 1, (1, 2, 3), learners=(4,), in_sync=(3, 4))) == (2, 3)


def test_the_highest_term_from_a_live_node_counts() -> None:
    image = image_with(CreateTopic("t", ((1, 2, 3),), ()), SetPartitionLeader(G, 1, 5, (1, 2, 3)),
                       FenceNode(3, 1))
    old = LeaderReport(G, 4, (1, 2, 3))
    current = LeaderReport(G, 5, (1, 2, 3))
    newer_but_fenced = LeaderReport(G, 6, (1, 2, 3))
    reports = {1: {G: current}, 2: {G: old}, 3: {G: newer_but_fenced}}
    assert decisions.leader_reports(image, reports) == {G: LeadingReport(1, current)}
    assert decisions.leader_reports(image, reports, only_node=2) == {G: LeadingReport(1, current)}
    assert decisions.leader_reports(image, {2: {G: old}}) == {}
    assert decisions.leader_reports(image, {1: {group_id(9, 0): current}}) == {}


def test_reconcile_adds_then_removes_one_member_at_a_time() -> None:
    moving = partition((1, 2, 3), target=(1, 2, 4))
    before = LeaderReport(G, 1, (1, 2, 3), in_sync=(2,))
    assert decisions.reconcile_actions(moving, 1, before, LIVE) == [ADD_4]
    # The new node is dead: wait (the controller re-plans it).
    assert decisions.reconcile_actions(moving, 1, LeaderReport(G, 1, (1, 2, 3)), frozenset({1, 2})) == []
    learner = LeaderReport(G, 1, (1, 2, 3), learners=(4,), in_sync=(2, 4))
    # Still a learner: the leader is asked again (it promotes it once caught up).
    assert decisions.reconcile_actions(moving, 1, learner, LIVE) == [ADD_4]
    lagging_voter = LeaderReport(G, 1, (1, 2, 3, 4), in_sync=(2,))
    assert decisions.reconcile_actions(moving, 1, lagging_voter, LIVE) == []
    ready = LeaderReport(G, 1, (1, 2, 3, 4), in_sync=(2, 4))
    assert decisions.reconcile_actions(moving, 1, ready, LIVE) == [REMOVE_3]
    done = LeaderReport(G, 1, (1, 2, 4), in_sync=(2, 4))
    assert decisions.reconcile_actions(moving, 1, done, LIVE) == []
    assert decisions.completed_reassignment(moving, done) is not None
    assert decisions.completed_reassignment(moving, ready) is None


def test_reconcile_removes_the_leader_itself_last() -> None:
    moving = partition((1, 2, 3), target=(2, 3, 4))
    report = LeaderReport(G, 1, (1, 2, 3, 4), learners=(5,), in_sync=(2, 3, 4))
    assert decisions.reconcile_actions(moving, 1, report, LIVE) == [REMOVE_5]
    report = LeaderReport(G, 1, (1, 2, 3, 4), in_sync=(2, 3, 4))
    assert decisions.reconcile_actions(moving, 1, report, LIVE) == [REMOVE_1]


def test_steady_state_with_a_dead_replica_asks_nothing() -> None:
    steady = partition((1, 2, 3))
    assert decisions.reconcile_actions(steady, 1, LeaderReport(G, 1, (1, 2, 3), in_sync=(2,)), LIVE) == []


def test_plan_reassignments_respects_the_limit_and_replans_a_dead_target() -> None:
    image = image_with(
        CreateTopic("t", ((1, 2), (2, 1), (1, 3)), ()),
        ReassignReplicas(group_id(1, 2), (1, 2)),  # node 3 -> 2, and now 2 dies too
        FenceNode(2, 1),
    )
    planned = decisions.plan_reassignments(image, [2], limit=10)
    assert [r.group for r in planned] == [group_id(1, 0), group_id(1, 1), group_id(1, 2)]
    assert all(2 not in r.target for r in planned)
    assert planned[2].target in ((1, 3), (1, 4))
    assert len(decisions.plan_reassignments(image, [2], limit=1)) == 1


def test_rate_window() -> None:
    window = RateWindow()
    taken = []
    for now in (0, 1, 2, 999, 1000, 1001, 1002):
        ok, window = window.take(now, 1000, 2)
        taken.append(ok)
    assert taken == [True, True, False, False, True, True, False]


def test_metadata_learners_to_add() -> None:
    assert decisions.metadata_learners_to_add(image_with(), [1, 2, 3]) == [4]
