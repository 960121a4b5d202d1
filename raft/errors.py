"""Errors the Raft core raises to its caller.

::

    RaftError                      base; never raised itself
    ├── NotLeader                  proposal/read/transfer sent to a non-leader (carries leader id or 0)
    ├── ProposalDropped            the leader cannot take it now (transfer in flight, limit, pending
    │                              membership change, no entry committed in its term yet); retriable
    ├── InvalidProposal            the request can never succeed (entry too large, bad membership change)
    └── StorageError               raised by a storage implementation
        ├── CompactedError         the requested index lies below the log's first index
        └── UnavailableError       the requested index lies above the log's last index

The node maps these once to gRPC status codes (issue #3); inside the core they
are ordinary exceptions because the core never performs I/O.
"""

from __future__ import annotations


class RaftError(Exception):
    """Base of every error the Raft core raises."""

    retriable: bool = False


class NotLeader(RaftError):
    """This replica is not the leader; ``leader`` is the known leader's id, or 0."""

    retriable = True

    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader (leader={leader or 'unknown'})")
        self.leader = leader


class ProposalDropped(RaftError):
    """The leader refused the request for now; retrying later may succeed."""

    retriable = True


class InvalidProposal(RaftError):
    """The request is malformed and retrying will not help."""


class StorageError(RaftError):
    """A log storage could not serve a read."""


class CompactedError(StorageError):
    """The requested index has been truncated away by prefix compaction."""

    retriable = True


class UnavailableError(StorageError):
    """The requested index is beyond the last stored entry."""
