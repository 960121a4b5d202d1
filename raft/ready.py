"""The Ready contract: what the core asks its driver to do, and in which order.

``Raft.ready()`` returns a :class:`Ready` batching everything that happened
since the last one. The driver must then, **in this order**:

1. **Persist before anything leaves.** Write ``snapshot``, ``entries`` and
   ``hard_state`` in one atomic write and, if ``must_sync``, make it durable
   (fsync). *Why:* a vote, or an append acknowledgement in ``messages``, is a
   promise that the vote or the entries survive a crash; a leader's own
   entries must be durable before followers are told of them, because the
   leader counts itself towards the commit quorum.
2. **Then send** ``messages``, in any order, over an unreliable network
   (they may be lost, duplicated or reordered; the core copes).
3. **Then apply** ``committed_entries`` to the state machine, in index order,
   after installing ``snapshot`` into the state machine if there is one.
   *Why:* committed entries can be among this Ready's ``entries``; applying
   before persisting could expose state a crash would forget.
4. **Hand** ``read_states`` to waiting readers: each may read once the state
   machine has applied ``index``.
5. **Call** ``advance(ready)`` with this same Ready. Until then ``ready()``
   must not be called again; ``step``/``tick``/``propose`` may be, so a driver
   can keep receiving while it persists (their effects come in the next Ready).

``soft_state`` (leader and role) is informational and needs no persistence.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from millpond.raft.messages import Entry, HardState, Message, Snapshot


class Role(enum.Enum):
    """The role a member plays in its group."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting when it changes: who leads, what this node is."""

    lead: int
    role: Role


@dataclass(frozen=True, slots=True)
class ReadState:
    """A confirmed read barrier: reads for ``context`` may be served once ``index`` is applied."""

    index: int
    context: int


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the driver; see the module docstring for the order."""

    soft_state: SoftState | None
    hard_state: HardState | None
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]
    committed_entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    read_states: tuple[ReadState, ...]
    must_sync: bool

    def is_empty(self) -> bool:
        """True if there is nothing to persist, send, apply or report."""
        return not (
            self.soft_state or self.hard_state or self.snapshot or self.entries
            or self.committed_entries or self.messages or self.read_states
        )
