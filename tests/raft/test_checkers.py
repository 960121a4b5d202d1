"""The simulator's checkers, on histories written by hand: each accepts a good history and
names the evidence in a bad one."""

from __future__ import annotations

from millpond.raft.messages import Entry
from millpond.raft.sim.checkers import (
    check_durability,
    check_election_safety,
    check_leader_completeness,
    check_liveness,
    check_log_matching,
    check_read_linearizability,
    check_state_machine_safety,
    committed_entries,
)
from millpond.raft.sim.history import (
    Applied,
    CommitReported,
    LeaderElected,
    LogImage,
    ReadAnswered,
    ReadRequested,
)

A = b"a" * 16
B = b"b" * 16
C = b"c" * 16


def entries(*terms: int, first: int = 1, data: bytes = b"") -> tuple[Entry, ...]:
    """Entries with the given terms at consecutive indexes from ``first``."""
    return tuple(Entry(term, first + offset, data=data) for offset, term in enumerate(terms))


# ---------------------------------------------------------------- election safety
def test_election_safety_accepts_one_leader_per_term() -> None:
    elections = [LeaderElected(10, 1, 1), LeaderElected(20, 2, 2), LeaderElected(30, 2, 2)]
    assert check_election_safety(elections) == []


def test_election_safety_rejects_two_leaders_in_one_term() -> None:
    violations = check_election_safety([LeaderElected(10, 1, 3), LeaderElected(15, 2, 3)])
    assert [v.checker for v in violations] == ["election-safety"]
    assert "term 3 has two leaders: node 1" in violations[0].message


# ---------------------------------------------------------------- log matching
def test_log_matching_accepts_a_common_prefix_and_divergent_uncommitted_tails() -> None:
    images = [
        LogImage(1, 0, 0, entries(1, 1, 2, 2)),
        LogImage(2, 0, 0, entries(1, 1, 3)),
        LogImage(3, 2, 1, entries(2, 2, 2, first=3)),  # compacted through index 2
    ]
    assert check_log_matching(images) == []


def test_log_matching_rejects_same_index_and_term_over_different_prefixes() -> None:
    left = LogImage(1, 0, 0, entries(1, 2, 3))
    right = LogImage(2, 0, 0, (Entry(1, 1), Entry(1, 2), Entry(3, 3)))
    violations = check_log_matching([left, right])
    assert [v.checker for v in violations] == ["log-matching"]
    assert "both hold term 3 at index 3 but differ at index 2" in violations[0].message


def test_log_matching_rejects_same_position_with_different_data() -> None:
    left = LogImage(1, 0, 0, entries(1, 1))
    right = LogImage(2, 0, 0, (Entry(1, 1), Entry(1, 2, data=b"other")))
    assert [v.checker for v in check_log_matching([left, right])] == ["log-matching"]


# ---------------------------------------------------------------- leader completeness
def test_leader_completeness_accepts_leaders_holding_every_earlier_commit() -> None:
    applied = [Applied(10, 1, 1, 1, A, node_term=1), Applied(20, 2, 2, 2, B, node_term=2)]
    elections = [
        LeaderElected(5, 1, 1),  # before anything was committed
        LeaderElected(15, 2, 2, entries=entries(1)),
        LeaderElected(30, 3, 3, snapshot_index=1, snapshot_term=1, entries=entries(2, first=2)),
    ]
    assert check_leader_completeness(applied, elections) == []


def test_leader_completeness_rejects_a_later_leader_missing_a_commit() -> None:
    applied = [Applied(10, 1, 1, 1, A, node_term=1), Applied(11, 1, 2, 1, B, node_term=1)]
    elections = [LeaderElected(30, 2, 2, entries=entries(1, 2))]  # index 2 holds term 2
    violations = check_leader_completeness(applied, elections)
    assert [v.checker for v in violations] == ["leader-completeness"]
    assert "without the entry at index 2 of term 1" in violations[0].message


def test_leader_completeness_rejects_a_later_leader_with_a_shorter_log() -> None:
    applied = [Applied(10, 1, 1, 1, A, node_term=1), Applied(11, 1, 2, 1, B, node_term=1)]
    violations = check_leader_completeness(applied, [LeaderElected(30, 2, 2, entries=entries(1))])
    assert "holds nothing there" in violations[0].message


def test_leader_completeness_uses_the_earliest_term_an_entry_was_applied_in() -> None:
    # Node 2 applied index 1 only in term 5, node 1 already in term 1: a leader of term 3
    # must hold it.
    applied = [Applied(50, 2, 1, 1, A, node_term=5), Applied(10, 1, 1, 1, A, node_term=1)]
    assert committed_entries(applied) == {1: (1, 1)}
    violations = check_leader_completeness(applied, [LeaderElected(30, 3, 3, entries=entries(3))])
    assert [v.checker for v in violations] == ["leader-completeness"]


# ---------------------------------------------------------------- state-machine safety
def test_state_machine_safety_accepts_equal_chains_across_nodes_and_restarts() -> None:
    applied = [
        Applied(10, 1, 1, 1, A, 1), Applied(12, 2, 1, 1, A, 1),
        Applied(40, 1, 1, 1, A, 2, from_snapshot=True),  # node 1 restarted from a snapshot
        Applied(41, 1, 2, 2, B, 2),
    ]
    assert check_state_machine_safety(applied) == []


def test_state_machine_safety_rejects_two_entries_applied_at_one_index() -> None:
    violations = check_state_machine_safety([Applied(10, 1, 4, 1, A, 1), Applied(20, 2, 4, 2, B, 2)])
    assert [v.checker for v in violations] == ["state-machine-safety"]
    assert "index 4: node 1 applied term 1" in violations[0].message


def test_state_machine_safety_rejects_an_entry_that_changed_after_a_restart() -> None:
    applied = [Applied(10, 1, 4, 1, A, 1), Applied(90, 1, 4, 1, C, 3, from_snapshot=True)]
    violations = check_state_machine_safety(applied)
    assert "from a snapshot" in violations[0].message


# ---------------------------------------------------------------- durability
def test_durability_accepts_commits_applied_by_every_member() -> None:
    commits = [CommitReported(10, 1, 2, 1, B, proposed_at_ms=5)]
    applied = [Applied(10, 1, 2, 1, B, 1), Applied(12, 2, 2, 1, B, 1)]
    # Node 3 got a snapshot past index 2 instead of applying it: still durable.
    assert check_durability(commits, applied, {1, 2, 3}, {1: 2, 2: 2, 3: 7}) == []


def test_durability_rejects_a_member_that_never_applied_a_reported_commit() -> None:
    commits = [CommitReported(10, 1, 2, 1, B, proposed_at_ms=5)]
    violations = check_durability(commits, [Applied(10, 1, 2, 1, B, 1)], {1, 2}, {1: 2, 2: 1})
    assert [v.checker for v in violations] == ["durability"]
    assert "not applied by member 2 (applied 1)" in violations[0].message


def test_durability_rejects_a_member_that_is_down_at_the_end() -> None:
    commits = [CommitReported(10, 1, 2, 1, B, proposed_at_ms=5)]
    violations = check_durability(commits, [], {1, 2}, {1: 2})
    assert "member 2 (applied -1)" in violations[0].message


def test_durability_rejects_a_reported_commit_replaced_by_another_entry() -> None:
    commits = [CommitReported(10, 1, 2, 1, B, proposed_at_ms=5)]
    applied = [Applied(10, 1, 2, 1, B, 1), Applied(50, 2, 2, 3, C, 3)]
    violations = check_durability(commits, applied, {1, 2}, {1: 2, 2: 2})
    assert "was replaced: member 2 applied another entry there" in violations[0].message


# ---------------------------------------------------------------- liveness
def test_liveness_accepts_a_proposal_after_the_heal_committed_in_time() -> None:
    commits = [CommitReported(900, 1, 5, 2, A, proposed_at_ms=800),
               CommitReported(1400, 1, 6, 3, B, proposed_at_ms=1100)]
    assert check_liveness(1000, commits, bound_ms=500) == []


def test_liveness_rejects_commits_of_proposals_made_before_the_heal_or_too_late() -> None:
    commits = [CommitReported(1200, 1, 5, 2, A, proposed_at_ms=900),   # proposed before the heal
               CommitReported(1600, 1, 6, 3, B, proposed_at_ms=1100)]  # after the bound
    violations = check_liveness(1000, commits, bound_ms=500)
    assert [v.checker for v in violations] == ["liveness"]


# ---------------------------------------------------------------- read linearizability
def test_read_linearizability_accepts_reads_covering_earlier_commits() -> None:
    events = [
        ReadRequested(5, 1, context=1),
        CommitReported(10, 1, 7, 2, A, proposed_at_ms=4),
        ReadAnswered(11, 1, context=1, index=3),  # requested before the commit was reported
        ReadRequested(12, 1, context=2),
        ReadAnswered(20, 1, context=2, index=7),
    ]
    assert check_read_linearizability(events) == []


def test_read_linearizability_rejects_a_stale_read_barrier() -> None:
    events = [
        CommitReported(10, 2, 7, 3, A, proposed_at_ms=4),
        ReadRequested(12, 1, context=9),
        ReadAnswered(12, 1, context=9, index=5),  # a deposed leader answered from its old commit
    ]
    violations = check_read_linearizability(events)
    assert [v.checker for v in violations] == ["read-linearizability"]
    assert "answered at index 5" in violations[0].message
    assert "index 7 had been reported committed" in violations[0].message
