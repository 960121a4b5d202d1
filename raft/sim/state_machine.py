"""The replicated state machine of the simulator: a hash chain over applied entries.

Each applied entry extends the chain: ``chain(i) = H(chain(i-1), term, index,
kind, data)``. Two replicas that agree on ``chain(i)`` applied the same
entries up to ``i``, so comparing one 16-byte digest per index compares whole
histories. A snapshot's data is the chain digest at its index; installing it
(or restarting from it) resumes the chain from there.

The machine also tracks the membership as of its applied index, from applied
``CONFIG`` entries and from snapshots, which is what a node compacts with.
"""

from __future__ import annotations

import struct
from hashlib import blake2b

from millpond.invariant import invariant
from millpond.raft.membership import Membership
from millpond.raft.messages import Entry, EntryKind, Snapshot, SnapshotMeta

CHAIN_BYTES = 16
"""Size of a chain digest; a snapshot's data is exactly one digest."""

GENESIS = bytes(CHAIN_BYTES)
"""The chain value before any entry (index 0)."""

_POSITION = struct.Struct(">QQB")


def extend(chain: bytes, entry: Entry) -> bytes:
    """The chain value after applying ``entry`` on top of ``chain``."""
    digest = blake2b(chain, digest_size=CHAIN_BYTES)
    digest.update(_POSITION.pack(entry.term, entry.index, entry.kind))
    digest.update(entry.data)
    return digest.digest()


class ChainStateMachine:
    """Applied index, chain digest and membership of one node's application state."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.applied_index = 0
        self.chain = GENESIS
        self.membership = Membership()
        self.membership_index = 0
        self.restore(snapshot)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the state by ``snapshot`` (installed from a leader, or read at restart)."""
        meta = snapshot.meta
        invariant(meta.index == 0 or len(snapshot.data) == CHAIN_BYTES,
                  "snapshot data is not a chain digest", index=meta.index)
        self.applied_index = meta.index
        self.chain = snapshot.data if meta.index else GENESIS
        self.membership = meta.membership
        self.membership_index = meta.index

    def apply(self, entry: Entry) -> bytes:
        """Apply the next committed entry; return the new chain digest."""
        invariant(entry.index == self.applied_index + 1, "entries applied out of order",
                  index=entry.index, applied=self.applied_index)
        self.chain = extend(self.chain, entry)
        self.applied_index = entry.index
        if entry.kind == EntryKind.CONFIG:
            self.membership = Membership.decode(entry.data)
            self.membership_index = entry.index
        return self.chain

    def snapshot(self, term: int) -> Snapshot:
        """A snapshot of the current state; ``term`` is the term of the entry at the applied index."""
        return Snapshot(SnapshotMeta(self.applied_index, term, self.membership), self.chain)
