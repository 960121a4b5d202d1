"""The values the Raft core exchanges: log entries, hard state, snapshots, messages.

All are immutable. ``Message`` is one flat record in the manner of etcd's
``raftpb.Message``: the fields a type does not use stay at their zero value.
Node ids are positive integers; 0 means "none".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from millpond.raft.membership import Membership

NONE = 0
"""The node id meaning "no node" (no vote, no known leader)."""

ENTRY_OVERHEAD_BYTES = 16
"""Bytes charged per entry on top of its payload when sizing messages and limits."""


class EntryKind(enum.IntEnum):
    """What a log entry carries; the state machine above Raft dispatches on it.

    ``NOOP`` is the empty entry a new leader appends to commit its term.
    ``CONFIG`` carries an encoded :class:`Membership` and takes effect when
    appended. ``DATA`` is application payload (a record batch). ``CONTROL``
    is application control state that rides the same log (transaction markers,
    queue acks, compaction points): Raft treats it exactly like ``DATA``.
    """

    NOOP = 0
    DATA = 1
    CONFIG = 2
    CONTROL = 3


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry: its position (term, index), kind and opaque payload."""

    term: int
    index: int
    kind: EntryKind = EntryKind.DATA
    data: bytes = b""

    def size(self) -> int:
        """Bytes charged against message and memory limits."""
        return len(self.data) + ENTRY_OVERHEAD_BYTES


@dataclass(frozen=True, slots=True)
class HardState:
    """What must survive a crash: the current term, the vote cast in it, the commit index."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """The log position a snapshot replaces, and the membership in force there."""

    index: int
    term: int
    membership: Membership


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A replacement for the log prefix up to ``meta.index``; ``data`` is the application's."""

    meta: SnapshotMeta
    data: bytes = b""


class MessageType(enum.IntEnum):
    """Every message the core sends or receives (local requests are methods, not messages)."""

    APPEND = 1
    APPEND_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9
    TIMEOUT_NOW = 10


CAMPAIGN_TRANSFER = 1
"""``Message.context`` of a vote request sent because of a leadership transfer."""


@dataclass(frozen=True, slots=True)
class Message:
    """A Raft message between two members of one group.

    Field use by type:

    * ``APPEND``: ``index``/``log_term`` locate the entry before ``entries``;
      ``commit`` is the leader's commit index.
    * ``APPEND_RESP``: accepted -> ``index`` is the follower's last matching
      index. Rejected -> ``index`` is the rejected ``APPEND.index`` and
      ``hint_index``/``hint_term`` point at the follower's last entry that may
      match (fast backtracking).
    * ``VOTE``/``PRE_VOTE``: ``index``/``log_term`` describe the candidate's
      last entry; ``context`` is ``CAMPAIGN_TRANSFER`` for a transfer.
    * ``*_RESP`` of votes: ``reject`` tells the answer.
    * ``HEARTBEAT``: ``commit`` is min(follower match, leader commit);
      ``context`` is the read-index round being confirmed (0: none).
    * ``HEARTBEAT_RESP``: echoes ``context``.
    * ``SNAPSHOT``: carries ``snapshot``.
    * ``TIMEOUT_NOW``: tells the target to campaign at once.
    """

    type: MessageType
    to: int
    frm: int
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0
    snapshot: Snapshot | None = None
    context: int = 0

    def entries_bytes(self) -> int:
        """Payload bytes of the carried entries, as charged against limits."""
        return sum(entry.size() for entry in self.entries)
