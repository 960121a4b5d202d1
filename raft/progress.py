"""What the leader knows about each follower's log, and how fast it may send to it.

A follower's progress is in one of three states (etcd's names):

* ``PROBE``: the leader does not know where the logs match; it sends one
  append at a time and waits for the answer (or a heartbeat reply) before
  sending again.
* ``REPLICATE``: the logs match up to ``match``; the leader streams appends
  optimistically, advancing ``next`` as it sends, bounded by the in-flight
  window (messages and bytes).
* ``SNAPSHOT``: the follower needs entries the leader has compacted away; a
  snapshot is on its way and nothing else is sent until it is acknowledged,
  reported failed, or ``snapshot_timeout`` ticks pass.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class ProgressState(enum.Enum):
    """Replication state of one follower as seen by the leader."""

    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@dataclass
class Inflights:
    """Append messages sent and not yet acknowledged: (last index, bytes) in send order."""

    msgs_max: int
    bytes_max: int
    _window: deque[tuple[int, int]] = field(default_factory=deque)
    _bytes: int = 0

    def add(self, last_index: int, size: int) -> None:
        self._window.append((last_index, size))
        self._bytes += size

    def free_to(self, index: int) -> None:
        """Forget every message whose last entry is at or below ``index``."""
        while self._window and self._window[0][0] <= index:
            self._bytes -= self._window.popleft()[1]

    def free_first(self) -> None:
        """Forget the oldest message (used when a heartbeat reply shows the follower alive)."""
        if self._window:
            self._bytes -= self._window.popleft()[1]

    def reset(self) -> None:
        self._window.clear()
        self._bytes = 0

    def full(self) -> bool:
        return len(self._window) >= self.msgs_max or self._bytes >= self.bytes_max

    def count(self) -> int:
        return len(self._window)


@dataclass
class Progress:
    """The leader's view of one member (including itself)."""

    match: int
    next: int
    inflights: Inflights
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    pending_snapshot: int = 0
    snapshot_sent_tick: int = 0
    recent_active: bool = False
    is_learner: bool = False

    def become_probe(self) -> None:
        """Fall back to one-at-a-time probing from just after what is known to match."""
        if self.state == ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self._reset(ProgressState.PROBE)

    def become_replicate(self) -> None:
        """Stream optimistically from just after ``match``."""
        self.next = self.match + 1
        self._reset(ProgressState.REPLICATE)

    def become_snapshot(self, snapshot_index: int, tick: int) -> None:
        """Stop sending entries until the snapshot at ``snapshot_index`` is acknowledged."""
        self._reset(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index
        self.snapshot_sent_tick = tick

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def maybe_update(self, index: int) -> bool:
        """Record that the follower's log matches through ``index``; False if that is stale."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """Handle a rejected append at ``rejected``; False if the rejection is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def sent_entries(self, last_index: int, count: int, size: int) -> None:
        """Account for an append carrying ``count`` entries ending at ``last_index``."""
        if self.state == ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflights.add(last_index, size)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def is_paused(self) -> bool:
        """True if the leader must not send this follower another append now."""
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True
