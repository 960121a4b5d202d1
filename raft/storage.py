"""The storage seam between the Raft core and a durable log.

The core only *reads* through :class:`LogStorage`; the driver that owns the
core *writes* through :class:`LogWriter` (following the Ready contract in
:mod:`millpond.raft.ready`). Two implementations exist:

* :class:`MemoryStorage` here: the simulator's store. Writes become visible at
  once but durable only at :meth:`MemoryStorage.sync`; :meth:`MemoryStorage.crash`
  throws away a random suffix of the unsynced writes, as a power cut would.
* :mod:`millpond.raft.lmdb_store`: the node's store, one LMDB environment
  shared by every group on a node, written with group commit.

Index conventions (as in etcd): the snapshot stands for every entry up to
``snapshot.meta.index``; ``first_index() == snapshot.meta.index + 1``;
``term(first_index() - 1)`` is the snapshot's term; ``last_index()`` is the last
entry's index, or the snapshot's index when no entry follows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from millpond.invariant import invariant
from millpond.raft.errors import CompactedError, UnavailableError
from millpond.raft.membership import Membership
from millpond.raft.messages import Entry, EntryKind, HardState, Snapshot, SnapshotMeta


class LogStorage(Protocol):
    """What the core reads. Every method reflects all writes made so far."""

    def initial_state(self) -> HardState:
        """The last saved hard state."""
        ...

    def snapshot(self) -> Snapshot:
        """The latest snapshot (the one the log prefix was truncated to)."""
        ...

    def first_index(self) -> int:
        """Index of the first stored entry (snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        """Index of the last stored entry, or the snapshot index if there is none."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index``, for ``first_index()-1 <= index <= last_index()``.

        Raises :class:`CompactedError` below that range and :class:`UnavailableError` above it.
        """
        ...

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries ``[lo, hi)``: at least one if ``lo < hi``, then as many as fit in ``max_bytes``.

        Raises :class:`CompactedError` if ``lo < first_index()`` and
        :class:`UnavailableError` if ``hi > last_index() + 1``.
        """
        ...

    def memberships(self) -> list[tuple[int, Membership]]:
        """``(index, membership)`` of every ``CONFIG`` entry after the snapshot, ascending."""
        ...


class LogWriter(Protocol):
    """What a driver writes, following the Ready contract."""

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        """Apply one Ready atomically: install ``snapshot`` (dropping the whole log), then write
        ``entries`` (dropping any stored entry at or after the first of them), then ``hard_state``."""
        ...

    def compact(self, snapshot: Snapshot) -> None:
        """Drop entries up to ``snapshot.meta.index`` (which must be stored, with that term)
        and record ``snapshot`` as the new base of the log."""
        ...


@dataclass
class _Image:
    """One complete state of a stored log."""

    hard_state: HardState
    snapshot: Snapshot
    entries: list[Entry] = field(default_factory=list)

    def copy(self) -> _Image:
        return _Image(self.hard_state, self.snapshot, list(self.entries))

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        if snapshot is not None:
            self.snapshot = snapshot
            self.entries = []
        if entries:
            base = self.snapshot.meta.index
            first = entries[0].index
            invariant(first > base, "append below the snapshot", first=first, base=base)
            invariant(first <= base + len(self.entries) + 1, "append leaves a gap",
                      first=first, last=base + len(self.entries))
            del self.entries[first - base - 1:]
            self.entries.extend(entries)
        if hard_state is not None:
            self.hard_state = hard_state

    def compact(self, snapshot: Snapshot) -> None:
        base = self.snapshot.meta.index
        index = snapshot.meta.index
        if index <= base:
            return
        invariant(index <= base + len(self.entries), "compact beyond the last entry",
                  index=index, last=base + len(self.entries))
        invariant(self.entries[index - base - 1].term == snapshot.meta.term,
                  "compact with a snapshot term that does not match the log", index=index)
        del self.entries[: index - base]
        self.snapshot = snapshot


class MemoryStorage:
    """An in-memory :class:`LogStorage` and :class:`LogWriter` that can lose unsynced writes.

    Writes apply immediately to the visible image and are queued for the
    durable image; :meth:`sync` makes them durable. :meth:`crash` rebuilds the
    visible image from the durable one plus the first ``keep`` queued writes,
    modelling a crash in which only some of the unsynced transactions reached
    the disk (each whole, in order, as LMDB guarantees).
    """

    def __init__(self, membership: Membership | None = None) -> None:
        base = Snapshot(SnapshotMeta(0, 0, membership or Membership()))
        self._visible = _Image(HardState(), base)
        self._durable = _Image(HardState(), base)
        self._pending: list[tuple[str, tuple[object, ...]]] = []

    # -- LogWriter -------------------------------------------------------------
    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        args = (hard_state, tuple(entries), snapshot)
        self._visible.save(*args)
        self._pending.append(("save", args))

    def compact(self, snapshot: Snapshot) -> None:
        self._visible.compact(snapshot)
        self._pending.append(("compact", (snapshot,)))

    def sync(self) -> None:
        """Make every write so far durable."""
        for op, args in self._pending:
            getattr(self._durable, op)(*args)
        self._pending.clear()

    def unsynced_writes(self) -> int:
        """Writes that a crash now could lose."""
        return len(self._pending)

    def crash(self, keep: int = 0) -> None:
        """Lose every unsynced write except the first ``keep``."""
        for op, args in self._pending[:keep]:
            getattr(self._durable, op)(*args)
        self._pending.clear()
        self._visible = self._durable.copy()

    # -- LogStorage ------------------------------------------------------------
    def initial_state(self) -> HardState:
        return self._visible.hard_state

    def snapshot(self) -> Snapshot:
        return self._visible.snapshot

    def first_index(self) -> int:
        return self._visible.snapshot.meta.index + 1

    def last_index(self) -> int:
        return self._visible.snapshot.meta.index + len(self._visible.entries)

    def term(self, index: int) -> int:
        meta = self._visible.snapshot.meta
        if index < meta.index:
            raise CompactedError(f"index {index} is compacted (snapshot at {meta.index})")
        if index == meta.index:
            return meta.term
        if index > self.last_index():
            raise UnavailableError(f"index {index} is beyond the last index {self.last_index()}")
        return self._visible.entries[index - meta.index - 1].term

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        base = self._visible.snapshot.meta.index
        if lo <= base:
            raise CompactedError(f"index {lo} is compacted (snapshot at {base})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"index {hi - 1} is beyond the last index {self.last_index()}")
        if hi <= lo:
            return []
        return limit_bytes(self._visible.entries[lo - base - 1 : hi - base - 1], max_bytes)

    def memberships(self) -> list[tuple[int, Membership]]:
        return [
            (entry.index, Membership.decode(entry.data))
            for entry in self._visible.entries
            if entry.kind == EntryKind.CONFIG
        ]


def limit_bytes(entries: Sequence[Entry], max_bytes: int) -> list[Entry]:
    """The longest prefix of ``entries`` within ``max_bytes``, but never fewer than one entry."""
    total = 0
    for count, entry in enumerate(entries):
        total += entry.size()
        if total > max_bytes and count > 0:
            return list(entries[:count])
    return list(entries)
