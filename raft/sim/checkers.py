"""Raft's safety and liveness properties, as pure functions over a recorded history.

Each checker returns a list of :class:`Violation` (empty: the property held).
They see only records (:mod:`millpond.raft.sim.history`), never live nodes, so
they can be tested on histories written by hand and re-run on a saved one.

* :func:`check_election_safety` — at most one leader per term (§5.2).
* :func:`check_log_matching` — two logs holding an entry with the same index
  and term are identical up to it (§5.3).
* :func:`check_leader_completeness` — an entry committed in term T is in the
  log of every leader of a later term (§5.4).
* :func:`check_state_machine_safety` — no two nodes apply different entries at
  one index, and an applied entry never changes, across restarts too (§5.4.3).
* :func:`check_durability` — every commit reported to a client is eventually
  applied by every member once the network heals.
* :func:`check_liveness` — after healing, a proposal commits within a bound.
* :func:`check_read_linearizability` — a read barrier invoked after a commit
  was reported returns an index at or past that commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from millpond.raft.sim.history import (
    Applied,
    ClientEvent,
    CommitReported,
    LeaderElected,
    LogImage,
    ReadAnswered,
    ReadRequested,
)

REPORTED_PER_CHECKER_MAX = 3
"""Violations of one property kept per run: the first ones explain the rest."""


@dataclass(frozen=True, slots=True)
class Violation:
    """A property that did not hold: which checker, and a message naming the evidence."""

    checker: str
    message: str

    def __str__(self) -> str:
        return f"{self.checker}: {self.message}"


def _limited(violations: list[Violation]) -> list[Violation]:
    return violations[:REPORTED_PER_CHECKER_MAX]


def check_election_safety(elections: Iterable[LeaderElected]) -> list[Violation]:
    """At most one node becomes leader in any one term."""
    leader_of: dict[int, LeaderElected] = {}
    violations = []
    for election in elections:
        first = leader_of.setdefault(election.term, election)
        if first.node != election.node:
            violations.append(Violation(
                "election-safety",
                f"term {election.term} has two leaders: node {first.node} at {first.time_ms}ms "
                f"and node {election.node} at {election.time_ms}ms",
            ))
    return _limited(violations)


def check_log_matching(images: Sequence[LogImage]) -> list[Violation]:
    """For every pair of logs captured at one moment: below the highest index where both
    hold an entry of the same term, both hold identical entries."""
    violations = []
    for position, left in enumerate(images):
        for right in images[position + 1:]:
            problem = _first_log_mismatch(left, right)
            if problem:
                violations.append(Violation(
                    "log-matching", f"nodes {left.node} and {right.node}: {problem}"))
    return _limited(violations)


def _first_log_mismatch(left: LogImage, right: LogImage) -> str | None:
    """Describe where two logs break the log-matching property, or None."""
    lo = max(left.snapshot_index, right.snapshot_index) + 1
    hi = min(left.snapshot_index + len(left.entries), right.snapshot_index + len(right.entries))
    highest_match = 0
    for index in range(hi, lo - 1, -1):
        if left.entries[index - left.snapshot_index - 1].term == \
                right.entries[index - right.snapshot_index - 1].term:
            highest_match = index
            break
    for index in range(lo, highest_match + 1):
        ours = left.entries[index - left.snapshot_index - 1]
        theirs = right.entries[index - right.snapshot_index - 1]
        if ours != theirs:
            return (f"both hold term {left.entries[highest_match - left.snapshot_index - 1].term} "
                    f"at index {highest_match} but differ at index {index}: {ours} != {theirs}")
    return None


def committed_entries(applied: Iterable[Applied]) -> dict[int, tuple[int, int]]:
    """index -> (entry term, earliest node term at which some node applied it)."""
    committed: dict[int, tuple[int, int]] = {}
    for record in applied:
        known = committed.get(record.index)
        if known is None or record.node_term < known[1]:
            committed[record.index] = (record.term if known is None else known[0], record.node_term)
    return committed


def check_leader_completeness(
    applied: Iterable[Applied], elections: Iterable[LeaderElected]
) -> list[Violation]:
    """Every leader holds every entry applied (hence committed) in an earlier term.

    An entry applied by a node whose term was T was committed in term T or
    earlier, so every leader of a term after T must have it in its log when
    elected. Entries inside a leader's compacted prefix are not visible here;
    state-machine safety covers them.
    """
    committed = sorted(committed_entries(applied).items())
    violations = []
    for election in elections:
        last = election.snapshot_index + len(election.entries)
        for index, (term, node_term) in committed:
            if node_term >= election.term or index < election.snapshot_index:
                continue
            if index == election.snapshot_index:
                held: int | None = election.snapshot_term
            elif index <= last:
                held = election.entries[index - election.snapshot_index - 1].term
            else:
                held = None
            if held != term:
                violations.append(Violation(
                    "leader-completeness",
                    f"node {election.node} became leader of term {election.term} at "
                    f"{election.time_ms}ms without the entry at index {index} of term {term} "
                    f"(applied in term {node_term}); it holds "
                    + ("nothing there" if held is None else f"term {held}"),
                ))
                break
    return _limited(violations)


def check_state_machine_safety(applied: Iterable[Applied]) -> list[Violation]:
    """All nodes, in all their lifetimes, reach the same chain digest at each index."""
    first_at: dict[int, Applied] = {}
    violations = []
    for record in applied:
        first = first_at.setdefault(record.index, record)
        if first.chain != record.chain:
            violations.append(Violation(
                "state-machine-safety",
                f"index {record.index}: node {first.node} applied term {first.term} "
                f"(chain {first.chain.hex()[:8]}) at {first.time_ms}ms but node {record.node} "
                f"reached chain {record.chain.hex()[:8]} with term {record.term} at "
                f"{record.time_ms}ms" + (" from a snapshot" if record.from_snapshot else ""),
            ))
    return _limited(violations)


def check_durability(
    commits: Iterable[CommitReported],
    applied: Iterable[Applied],
    members: Iterable[int],
    final_applied: Mapping[int, int],
) -> list[Violation]:
    """Every reported commit is, in the end, applied by every member, as that same entry.

    ``final_applied`` maps each node to its applied index when the run ended;
    a member missing from it was not running.
    """
    chain_of: dict[tuple[int, int], bytes] = {}
    for record in applied:
        chain_of[record.node, record.index] = record.chain
    violations = []
    for commit in commits:
        for member in sorted(members):
            reached = final_applied.get(member, -1)
            if reached < commit.index:
                violations.append(Violation(
                    "durability",
                    f"commit of index {commit.index} term {commit.term} reported by node "
                    f"{commit.node} at {commit.time_ms}ms is not applied by member {member} "
                    f"(applied {reached})",
                ))
                continue
            chain = chain_of.get((member, commit.index))
            if chain is not None and chain != commit.chain:
                violations.append(Violation(
                    "durability",
                    f"commit of index {commit.index} term {commit.term} reported by node "
                    f"{commit.node} at {commit.time_ms}ms was replaced: member {member} "
                    f"applied another entry there",
                ))
        if len(violations) >= REPORTED_PER_CHECKER_MAX:
            break
    return _limited(violations)


def check_liveness(
    healed_at_ms: int, commits: Iterable[CommitReported], bound_ms: int
) -> list[Violation]:
    """Some proposal made after the heal is reported committed within ``bound_ms`` of it."""
    for commit in commits:
        if commit.proposed_at_ms >= healed_at_ms and commit.time_ms <= healed_at_ms + bound_ms:
            return []
    return [Violation(
        "liveness",
        f"no proposal made after the network healed at {healed_at_ms}ms committed within "
        f"{bound_ms}ms",
    )]


def check_read_linearizability(events: Iterable[ClientEvent]) -> list[Violation]:
    """A read barrier covers every commit reported before the read was requested.

    ``events`` must be in the order they happened. A read requested after a
    commit at index ``i`` was reported must be answered with an index >= ``i``,
    or a read served at that barrier could miss an acknowledged write.
    """
    highest_reported = 0
    required: dict[int, tuple[int, ReadRequested]] = {}
    violations = []
    for event in events:
        if isinstance(event, CommitReported):
            highest_reported = max(highest_reported, event.index)
        elif isinstance(event, ReadRequested):
            required[event.context] = (highest_reported, event)
        elif isinstance(event, ReadAnswered):
            need, request = required.pop(event.context, (0, None))
            if event.index < need and request is not None:
                violations.append(Violation(
                    "read-linearizability",
                    f"read {event.context} requested from node {request.node} at "
                    f"{request.time_ms}ms was answered at index {event.index} by node "
                    f"{event.node} at {event.time_ms}ms, but index {need} had been reported "
                    f"committed before the request",
                ))
    return _limited(violations)
