"""What a simulated run records for the checkers: plain, immutable event records.

The simulator appends; the checkers (:mod:`millpond.raft.sim.checkers`) read.
Records hold only values (no references to live nodes), so checkers are pure
functions and their tests build histories by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from millpond.raft.messages import Entry


@dataclass(frozen=True, slots=True)
class LeaderElected:
    """``node`` became leader of ``term``; its log at that moment.

    The log is ``entries`` after a compacted prefix ending at
    ``snapshot_index``/``snapshot_term``.
    """

    time_ms: int
    node: int
    term: int
    snapshot_index: int = 0
    snapshot_term: int = 0
    entries: tuple[Entry, ...] = ()


@dataclass(frozen=True, slots=True)
class Applied:
    """``node`` applied the entry at ``index`` (of ``term``) and reached ``chain``.

    ``node_term`` is the node's current term when it applied: the entry was
    committed in that term or earlier. ``from_snapshot`` marks a state
    installed from a snapshot (at restart or from a leader) rather than one
    entry applied.
    """

    time_ms: int
    node: int
    index: int
    term: int
    chain: bytes
    node_term: int
    from_snapshot: bool = False


@dataclass(frozen=True, slots=True)
class CommitReported:
    """A client was told its proposal committed: ``node``, the leader it proposed to, applied
    the entry at the ``index`` and ``term`` that ``propose`` returned, reaching ``chain``."""

    time_ms: int
    node: int
    index: int
    term: int
    chain: bytes
    proposed_at_ms: int


@dataclass(frozen=True, slots=True)
class ReadRequested:
    """A client asked leader ``node`` for a read barrier tagged ``context``."""

    time_ms: int
    node: int
    context: int


@dataclass(frozen=True, slots=True)
class ReadAnswered:
    """``node`` released the read barrier ``context`` at ``index``."""

    time_ms: int
    node: int
    context: int
    index: int


ClientEvent = CommitReported | ReadRequested | ReadAnswered


@dataclass(frozen=True, slots=True)
class LogImage:
    """One node's stored log at one moment: ``entries`` after a snapshot at ``snapshot_index``."""

    node: int
    snapshot_index: int
    snapshot_term: int
    entries: tuple[Entry, ...]


@dataclass
class History:
    """Every record of one run, each list in the order events happened.

    ``client_events`` interleaves commit reports and reads in real order, which
    the read-linearizability checker depends on. ``checkpoints`` holds one
    list of log images per moment the stored logs were captured.
    """

    elections: list[LeaderElected] = field(default_factory=list)
    applied: list[Applied] = field(default_factory=list)
    client_events: list[ClientEvent] = field(default_factory=list)
    checkpoints: list[list[LogImage]] = field(default_factory=list)
    healed_at_ms: int | None = None
    final_members: frozenset[int] = frozenset()
    final_applied: dict[int, int] = field(default_factory=dict)

    def commits(self) -> list[CommitReported]:
        """The commit reports, in order."""
        return [event for event in self.client_events if isinstance(event, CommitReported)]
