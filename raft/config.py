"""Per-group configuration of the Raft core, validated before use."""

from __future__ import annotations

from dataclasses import dataclass, field

from millpond import limits

#: Deliberate defects the simulator can switch on to prove its checkers catch them.
#: Never set outside tests. ``ack-before-sync`` is a driver defect (see the simulator).
KNOWN_BUGS = frozenset(
    {
        "commit-old-term",  # count replicas of an entry from an older term towards commit
        "forget-vote",  # leave the vote out of the persisted hard state
        "vote-any-log",  # grant votes without checking the candidate's log is up to date
        "read-without-quorum",  # answer read-index at once, without a heartbeat round
        "ack-before-sync",  # (driver) send a Ready's messages before its entries are durable
    }
)


@dataclass(frozen=True)
class Config:
    """How one member of a group behaves. Defaults come from :mod:`millpond.limits`.

    ``applied`` is the last index the application had applied before a restart
    (committed entries up to it are not handed out again). ``bugs`` is for the
    simulator only: see :data:`KNOWN_BUGS`.
    """

    id: int
    election_ticks: int = limits.raft_election_ticks
    heartbeat_ticks: int = limits.raft_heartbeat_ticks
    pre_vote: bool = True
    check_quorum: bool = True
    msg_entries_max: int = limits.raft_msg_entries_max
    msg_bytes_max: int = limits.raft_msg_bytes_max
    inflight_msgs_max: int = limits.raft_inflight_msgs_max
    inflight_bytes_max: int = limits.raft_inflight_bytes_max
    uncommitted_bytes_max: int = limits.raft_uncommitted_bytes_max
    entry_bytes_max: int = limits.raft_entry_bytes_max
    propose_entries_max: int = limits.raft_propose_entries_max
    read_requests_max: int = limits.raft_read_requests_max
    ready_committed_entries_max: int = limits.raft_ready_committed_entries_max
    applied: int = 0
    bugs: frozenset[str] = field(default_factory=frozenset)

    def validate(self) -> None:
        """Raise ``ValueError`` naming every setting that is out of range or inconsistent."""
        problems: list[str] = []
        if self.id <= 0:
            problems.append("id must be positive")
        if self.heartbeat_ticks < 1:
            problems.append("heartbeat_ticks must be >= 1")
        if self.election_ticks <= self.heartbeat_ticks:
            problems.append("election_ticks must be > heartbeat_ticks")
        for name in ("msg_entries_max", "msg_bytes_max", "inflight_msgs_max",
                     "inflight_bytes_max", "uncommitted_bytes_max", "entry_bytes_max",
                     "propose_entries_max", "read_requests_max", "ready_committed_entries_max"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.msg_bytes_max > self.inflight_bytes_max:
            problems.append("msg_bytes_max must be <= inflight_bytes_max")
        if self.entry_bytes_max > self.uncommitted_bytes_max:
            problems.append("entry_bytes_max must be <= uncommitted_bytes_max")
        if self.applied < 0:
            problems.append("applied must be >= 0")
        unknown = self.bugs - KNOWN_BUGS
        if unknown:
            problems.append(f"unknown bugs {sorted(unknown)}")
        if problems:
            raise ValueError("invalid raft config: " + "; ".join(problems))
