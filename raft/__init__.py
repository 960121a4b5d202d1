"""millpond.raft: a sans-IO Raft core, its storage seam and stores, and a simulator.

The core (:class:`Raft`) performs no I/O, reads no clock and draws no random
numbers of its own: messages and ticks go in, a :class:`Ready` comes out (see
:mod:`millpond.raft.ready` for the contract). Drivers: the simulator
(:mod:`millpond.raft.sim`) and the broker node (``millpond.node``).
"""

from millpond.raft.config import KNOWN_BUGS, Config
from millpond.raft.core import Raft, Status
from millpond.raft.errors import (
    CompactedError,
    InvalidProposal,
    NotLeader,
    ProposalDropped,
    RaftError,
    StorageError,
    UnavailableError,
)
from millpond.raft.membership import ChangeKind, ConfChange, Membership
from millpond.raft.messages import (
    NONE,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from millpond.raft.ready import ReadState, Ready, Role, SoftState
from millpond.raft.storage import LogStorage, LogWriter, MemoryStorage

__all__ = [
    "KNOWN_BUGS",
    "NONE",
    "ChangeKind",
    "CompactedError",
    "ConfChange",
    "Config",
    "Entry",
    "EntryKind",
    "HardState",
    "InvalidProposal",
    "LogStorage",
    "LogWriter",
    "Membership",
    "MemoryStorage",
    "Message",
    "MessageType",
    "NotLeader",
    "ProposalDropped",
    "Raft",
    "RaftError",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "Status",
    "StorageError",
    "UnavailableError",
]
