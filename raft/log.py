"""The core's view of its log: the durable part (a ``LogStorage``) plus an unstable tail.

Entries the core has appended but the driver has not yet persisted live in
``unstable`` (and a snapshot received but not yet persisted in
``unstable_snapshot``). ``advance`` moves them to storage's side of the line.
The log also tracks the commit and applied indexes, and the history of
membership configurations found in it, because a configuration takes effect
when appended and must be reverted when its entry is truncated.
"""

from __future__ import annotations

from collections.abc import Sequence

from millpond.invariant import invariant
from millpond.raft.errors import CompactedError, UnavailableError
from millpond.raft.membership import Membership
from millpond.raft.messages import Entry, EntryKind, Snapshot
from millpond.raft.storage import LogStorage, limit_bytes


class RaftLog:
    """Stable storage + unstable tail + commit/applied indexes + membership history."""

    def __init__(self, storage: LogStorage, applied: int) -> None:
        self.storage = storage
        snapshot = storage.snapshot()
        self.unstable: list[Entry] = []
        self.unstable_offset = storage.last_index() + 1
        self.unstable_snapshot: Snapshot | None = None
        hard_state = storage.initial_state()
        first = storage.first_index()
        self.committed = max(hard_state.commit, first - 1)
        invariant(self.committed <= storage.last_index(), "commit index beyond the log",
                  commit=self.committed, last=storage.last_index())
        self.applied = max(first - 1, min(applied, self.committed))
        #: (index, membership) in effect from that index on; the first is the snapshot's.
        self.memberships: list[tuple[int, Membership]] = [
            (snapshot.meta.index, snapshot.meta.membership),
            *storage.memberships(),
        ]

    # -- positions ---------------------------------------------------------------
    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.unstable[-1].index
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index
        return self.storage.last_index()

    def term(self, index: int) -> int | None:
        """Term of ``index``, or None if it is compacted away or beyond the log."""
        if index > self.last_index():
            return None
        if index >= self.unstable_offset and self.unstable:
            return self.unstable[index - self.unstable_offset].term
        if self.unstable_snapshot is not None:
            meta = self.unstable_snapshot.meta
            return meta.term if index == meta.index else None
        try:
            return self.storage.term(index)
        except (CompactedError, UnavailableError):
            return None

    def last_term(self) -> int:
        term = self.term(self.last_index())
        invariant(term is not None, "last entry has no term", last=self.last_index())
        return term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: a candidate's log is at least as up to date as ours."""
        ours = self.last_term()
        return last_term > ours or (last_term == ours and last_index >= self.last_index())

    def membership(self) -> Membership:
        return self.memberships[-1][1]

    def membership_index(self) -> int:
        return self.memberships[-1][0]

    # -- reading -----------------------------------------------------------------
    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries [lo, hi) within ``max_bytes`` (at least one); raise CompactedError below the log."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(f"index {lo} is compacted")
        invariant(hi <= self.last_index() + 1, "slice beyond the log", hi=hi,
                  last=self.last_index())
        out: list[Entry] = []
        if lo < self.unstable_offset:
            out = self.storage.entries(lo, min(hi, self.unstable_offset), max_bytes)
            if len(out) < min(hi, self.unstable_offset) - lo:
                return out
        if hi > self.unstable_offset:
            start = max(lo, self.unstable_offset) - self.unstable_offset
            tail = self.unstable[start : hi - self.unstable_offset]
            out = limit_bytes([*out, *tail], max_bytes) if out else limit_bytes(tail, max_bytes)
        return out

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest ``(i, t)`` with ``i <= index`` and ``t <= term`` in this log.

        Used for fast backtracking: entries above it cannot match a log whose
        entry at ``index`` has ``term``.
        """
        index = min(index, self.last_index())
        while index >= self.first_index() - 1:
            found = self.term(index)
            if found is None:
                break
            if found <= term:
                return index, found
            index -= 1
        return max(index, 0), 0

    # -- writing -----------------------------------------------------------------
    def append(self, entries: Sequence[Entry]) -> int:
        """Append after a possible suffix truncation at ``entries[0].index``; return last index."""
        if not entries:
            return self.last_index()
        first = entries[0].index
        invariant(first > self.committed, "truncating committed entries",
                  first=first, committed=self.committed)
        invariant(first <= self.last_index() + 1, "append leaves a gap",
                  first=first, last=self.last_index())
        if first <= self.last_index():
            self._drop_memberships_from(first)
        if first == self.unstable_offset + len(self.unstable):
            self.unstable.extend(entries)
        elif first <= self.unstable_offset:
            self.unstable_offset = first
            self.unstable = list(entries)
        else:
            del self.unstable[first - self.unstable_offset :]
            self.unstable.extend(entries)
        for entry in entries:
            if entry.kind == EntryKind.CONFIG:
                self.memberships.append((entry.index, Membership.decode(entry.data)))
        return self.last_index()

    def _drop_memberships_from(self, index: int) -> None:
        while len(self.memberships) > 1 and self.memberships[-1][0] >= index:
            self.memberships.pop()

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> int | None:
        """Follower side of AppendEntries: None if the log does not contain (prev_index,
        prev_term); else append what is new and return the last index the leader's message
        proves matching."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self._find_conflict(entries)
        if conflict:
            self.append(entries[conflict - entries[0].index :])
        self.commit_to(min(commit, last_new))
        return last_new

    def _find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry that is new or differs in term from ours; 0 if none."""
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def commit_to(self, index: int) -> None:
        """Raise the commit index (never lowers it)."""
        if index > self.committed:
            invariant(index <= self.last_index(), "commit beyond the log",
                      commit=index, last=self.last_index())
            self.committed = index

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by ``snapshot`` (a follower installing it)."""
        self.unstable_snapshot = snapshot
        self.unstable = []
        self.unstable_offset = snapshot.meta.index + 1
        self.committed = snapshot.meta.index
        self.memberships = [(snapshot.meta.index, snapshot.meta.membership)]

    # -- handing to the driver -----------------------------------------------------
    def committed_to_apply(self, max_entries: int) -> list[Entry]:
        """Committed entries not yet handed to the application, oldest first."""
        lo = max(self.applied + 1, self.first_index())
        hi = min(self.committed, lo + max_entries - 1)
        if hi < lo:
            return []
        return self.slice(lo, hi + 1, 1 << 62)

    def stable_to(self, index: int, term: int) -> None:
        """The driver persisted entries through (index, term): drop them from the tail."""
        if index < self.unstable_offset or not self.unstable:
            return
        position = index - self.unstable_offset
        if position < len(self.unstable) and self.unstable[position].term == term:
            del self.unstable[: position + 1]
            self.unstable_offset = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        if self.unstable_snapshot is not None and self.unstable_snapshot.meta.index == index:
            self.unstable_snapshot = None

    def applied_to(self, index: int) -> None:
        invariant(index <= self.committed, "applied beyond commit", applied=index,
                  committed=self.committed)
        self.applied = max(self.applied, index)

    def snapshot(self) -> Snapshot:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot
        return self.storage.snapshot()
