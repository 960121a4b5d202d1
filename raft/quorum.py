"""Majority arithmetic over a voter set: commit index and election outcome."""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping


class VoteResult(enum.Enum):
    """Outcome of an election tally."""

    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def committed_index(voters: Collection[int], match: Mapping[int, int]) -> int:
    """The largest index stored by a majority of ``voters`` (missing voters count as 0)."""
    if not voters:
        return 0
    indexes = sorted((match.get(voter, 0) for voter in voters), reverse=True)
    return indexes[len(indexes) // 2]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """Won once a majority granted, lost once a majority can no longer grant."""
    quorum = len(voters) // 2 + 1
    granted = sum(1 for voter in voters if votes.get(voter) is True)
    rejected = sum(1 for voter in voters if votes.get(voter) is False)
    if granted >= quorum:
        return VoteResult.WON
    if len(voters) - rejected < quorum:
        return VoteResult.LOST
    return VoteResult.PENDING


def has_quorum(voters: Collection[int], responders: Collection[int]) -> bool:
    """True if ``responders`` include a majority of ``voters``."""
    return sum(1 for voter in voters if voter in responders) >= len(voters) // 2 + 1
