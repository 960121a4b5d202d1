"""What nodes tell the active controller in heartbeats, and what it asks of them.

These mirror ``LeaderReport``, ``LeaderAction`` and ``NodeHeartbeatResponse``
of ``proto/millpond/v1/internal.proto``; the node's gRPC service converts at
the boundary (``ActionKind.value`` is the name of the proto ``oneof`` field).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ActionKind", "HeartbeatResult", "LeaderAction", "LeaderReport"]


def _ids(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(sorted(set(values)))


@dataclass(frozen=True, slots=True)
class LeaderReport:
    """What a partition leader knows of its group (one per group it leads).

    ``in_sync``: followers (voters and learners) whose log matched the
    leader's within ``replica_lag_ms_max``; the leader itself may be left out.
    Id collections are normalized to sorted tuples without repeats.
    """

    group: int
    term: int
    voters: tuple[int, ...]
    learners: tuple[int, ...] = ()
    in_sync: tuple[int, ...] = ()
    log_start_offset: int = 0
    high_watermark: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "voters", _ids(self.voters))
        object.__setattr__(self, "learners", _ids(self.learners))
        object.__setattr__(self, "in_sync", _ids(self.in_sync))


class ActionKind(enum.Enum):
    """What the controller asks a partition leader to do; the value names the proto field."""

    TRANSFER_LEADER = "transfer_leader_to"
    """Hand leadership to ``node`` (preferred-leader balancing)."""
    ADD_REPLICA = "add_replica"
    """Add ``node`` as a learner; promote it to voter once it has caught up."""
    REMOVE_REPLICA = "remove_replica"
    """Remove ``node`` (voter or learner) from the group."""


@dataclass(frozen=True, slots=True)
class LeaderAction:
    """One request to the leader of ``group``.

    Requests are idempotent and repeated in every heartbeat answer until the
    leader's reports show the effect (``TRANSFER_LEADER`` at most once per
    balance interval): a leader does each at its own pace, ignores one already
    under way, and may drop one it cannot do now (another membership change is
    uncommitted, the target is not caught up).
    """

    group: int
    kind: ActionKind
    node: int


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    """The answer to a heartbeat."""

    alive: bool
    """False while the node is fenced (or its epoch is stale): it must lead no partition."""
    actions: tuple[LeaderAction, ...] = ()
