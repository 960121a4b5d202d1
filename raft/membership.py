"""Group membership: voters and learners, and single-server changes to it.

millpond changes membership **one server at a time** (Raft dissertation §4.1):
any majority of the old voter set overlaps any majority of the new one, so no
joint configuration is needed. Two rules keep it safe:

1. A configuration takes effect on every node as soon as its entry is
   *appended* to that node's log (and is reverted if the entry is truncated).
2. A leader proposes a change only after it has committed an entry of its own
   term, and only while no earlier change is uncommitted. (The first rule of
   the fix to the single-server-change bug Ongaro described in 2015.)

Learners receive the log but neither vote nor count towards a quorum. They are
added first, catch up, and are then promoted with ``ADD_VOTER``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from millpond import limits
from millpond.raft.errors import InvalidProposal


class ChangeKind(enum.IntEnum):
    """One single-server membership change."""

    ADD_VOTER = 1
    """Add a voter, or promote a learner to voter."""
    ADD_LEARNER = 2
    """Add a non-voting learner, or demote a voter to learner."""
    REMOVE = 3
    """Remove a voter or a learner."""


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A request to change one node's role in the group."""

    kind: ChangeKind
    node: int


_HEADER = struct.Struct(">HH")
_ID = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class Membership:
    """The voters and learners of a group; the two sets never overlap."""

    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()

    @classmethod
    def of(cls, voters: list[int] | tuple[int, ...], learners: tuple[int, ...] = ()) -> Membership:
        """Build a membership from id lists."""
        return cls(frozenset(voters), frozenset(learners))

    def members(self) -> frozenset[int]:
        """Voters and learners."""
        return self.voters | self.learners

    def quorum(self) -> int:
        """Votes needed for a majority of the voters."""
        return len(self.voters) // 2 + 1

    def apply(self, change: ConfChange) -> Membership:
        """Return the membership after ``change``; raise :class:`InvalidProposal` if it is a no-op
        or would leave the group without voters or over ``raft_group_members_max``."""
        node = change.node
        if node <= 0:
            raise InvalidProposal(f"node id must be positive, got {node}")
        voters, learners = set(self.voters), set(self.learners)
        if change.kind == ChangeKind.ADD_VOTER:
            if node in voters:
                raise InvalidProposal(f"node {node} is already a voter")
            learners.discard(node)
            voters.add(node)
        elif change.kind == ChangeKind.ADD_LEARNER:
            if node in learners:
                raise InvalidProposal(f"node {node} is already a learner")
            voters.discard(node)
            learners.add(node)
        else:
            if node not in voters and node not in learners:
                raise InvalidProposal(f"node {node} is not a member")
            voters.discard(node)
            learners.discard(node)
        if not voters:
            raise InvalidProposal("a group must keep at least one voter")
        if len(voters) + len(learners) > limits.raft_group_members_max:
            raise InvalidProposal(
                f"a group has at most {limits.raft_group_members_max} members"
            )
        return Membership(frozenset(voters), frozenset(learners))

    def encode(self) -> bytes:
        """Serialize for a ``CONFIG`` entry or a snapshot record (sorted, big-endian)."""
        parts = [_HEADER.pack(len(self.voters), len(self.learners))]
        parts.extend(_ID.pack(node) for node in sorted(self.voters))
        parts.extend(_ID.pack(node) for node in sorted(self.learners))
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Membership:
        """Inverse of :meth:`encode`; raise ``ValueError`` on malformed input."""
        if len(data) < _HEADER.size:
            raise ValueError("membership record too short")
        n_voters, n_learners = _HEADER.unpack_from(data, 0)
        if len(data) != _HEADER.size + _ID.size * (n_voters + n_learners):
            raise ValueError("membership record has the wrong length")
        ids = [_ID.unpack_from(data, _HEADER.size + _ID.size * i)[0]
               for i in range(n_voters + n_learners)]
        voters, learners = frozenset(ids[:n_voters]), frozenset(ids[n_voters:])
        if voters & learners or len(voters) != n_voters or len(learners) != n_learners:
            raise ValueError("membership record repeats a node")
        return cls(voters, learners)

    def __str__(self) -> str:
        voters = ",".join(str(v) for v in sorted(self.voters))
        learners = ",".join(str(v) for v in sorted(self.learners))
        return f"voters=({voters})" + (f" learners=({learners})" if learners else "")
