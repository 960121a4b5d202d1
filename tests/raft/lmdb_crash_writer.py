"""A seeded log workload, and the child process of the LMDB crash test.

:class:`Workload` generates, for one group, a deterministic sequence of
``save``/``compact`` operations from ``(seed, group)`` while applying them to a
:class:`MemoryStorage` model: the LMDB store must end up in the model's state.
Both test modules load this file by path (it is not a package module).

Run as a script, it is the writer the crash test SIGKILLs::

    python lmdb_crash_writer.py PATH SEED GROUPS RESUME OPS_MAX

It opens the store at ``PATH``, creates the groups ``0..GROUPS-1`` if needed,
skips each group's workload to its ``RESUME`` count (comma-separated, one per
group: the operations already durable there), then runs one asyncio task per
group that awaits each write until durable and then prints
``ack GROUP OPS LAST TERM`` (flushed): after ``OPS`` operations the group's
log ends at ``LAST`` with hard-state term ``TERM``, durably. One write per
group is in flight at a time, so after a crash group ``g`` is in the model's
state after ``OPS`` or ``OPS + 1`` operations, never in between.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sys
from dataclasses import dataclass

from millpond.raft.lmdb_store import GroupLog, LogStore, UnknownGroupError
from millpond.raft.membership import Membership
from millpond.raft.messages import Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from millpond.raft.storage import MemoryStorage

MEMBERSHIP = Membership.of([1, 2, 3])
#: Most entries in one generated save.
BATCH_ENTRIES_MAX = 40
#: Largest generated entry payload.
ENTRY_BYTES_MAX = 2048


@dataclass(frozen=True)
class Op:
    """One write: a ``save`` (``compact`` is None) or a ``compact``."""

    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    compact: Snapshot | None = None

    def apply(self, log: MemoryStorage | GroupLog) -> None:
        """Queue (``GroupLog``) or apply (``MemoryStorage``) this write."""
        if self.compact is not None:
            log.compact(self.compact)
        else:
            log.save(self.hard_state, self.entries, self.snapshot)

    async def write(self, log: GroupLog) -> None:
        """Apply this write through the asyncio bridge, returning once durable."""
        if self.compact is not None:
            await log.write_compaction(self.compact)
        else:
            await log.write(self.hard_state, self.entries, self.snapshot)


def payload(group: int, index: int, term: int, size: int) -> bytes:
    """The deterministic data of an entry, so a misplaced entry shows."""
    seed = hashlib.sha256(f"{group}:{index}:{term}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Workload:
    """Deterministic writes for one group, mirrored into a ``MemoryStorage`` model.

    The writes are valid for the storage seam, not necessarily for Raft (a
    rewrite may go below the commit index): the stores must agree regardless.
    """

    def __init__(self, seed: int, group: int) -> None:
        self.group = group
        self.model = MemoryStorage(MEMBERSHIP)
        self.ops_done = 0
        self._rng = random.Random(f"{seed}/{group}")
        self._term = 1

    def skip(self, count: int) -> None:
        """Generate and apply ``count`` writes to the model only."""
        for _ in range(count):
            self.next_op()

    def next_op(self) -> Op:
        """The next write, already applied to :attr:`model`."""
        op = self._generate()
        op.apply(self.model)
        self.model.sync()
        self.ops_done += 1
        return op

    def _generate(self) -> Op:
        rng, model = self._rng, self.model
        first, last = model.first_index(), model.last_index()
        choice = rng.random()
        if choice < 0.5:
            return self._append(last + 1)
        if choice < 0.65 and last >= first:
            self._term += 1
            return self._append(rng.randint(first, last))
        if choice < 0.8 and last >= first:
            index = rng.randint(first, last)
            return Op(compact=self._snapshot(index, model.term(index)))
        if choice < 0.85:
            self._term += 1
            index = last + rng.randint(0, 30)
            snapshot = self._snapshot(index, self._term)
            entries = self._entries(index + 1, rng.randint(0, 3))
            return Op(self._hard_state(index), entries, snapshot)
        if choice < 0.97:
            self._term += rng.randint(0, 1)
            return Op(self._hard_state(last))
        return Op()  # nothing to write

    def _append(self, first: int) -> Op:
        entries = self._entries(first, self._rng.randint(1, BATCH_ENTRIES_MAX))
        hard_state = self._hard_state(entries[-1].index) if self._rng.random() < 0.8 else None
        return Op(hard_state, entries)

    def _entries(self, first: int, count: int) -> tuple[Entry, ...]:
        rng, term = self._rng, self._term
        entries = []
        for index in range(first, first + count):
            if rng.random() < 0.05:
                voters = rng.sample(range(1, 10), rng.randint(1, 5))
                entries.append(Entry(term, index, EntryKind.CONFIG,
                                     Membership.of(voters).encode()))
            else:
                kind = rng.choice((EntryKind.DATA, EntryKind.DATA, EntryKind.NOOP,
                                   EntryKind.CONTROL))
                size = rng.randint(0, ENTRY_BYTES_MAX)
                entries.append(Entry(term, index, kind, payload(self.group, index, term, size)))
        return tuple(entries)

    def _hard_state(self, last: int) -> HardState:
        commit = self._rng.randint(0, max(0, last))
        return HardState(self._term, self._rng.randint(0, 3), commit)

    def _snapshot(self, index: int, term: int) -> Snapshot:
        membership = Membership.of(self._rng.sample(range(1, 10), self._rng.randint(1, 5)))
        data = payload(self.group, index, term, self._rng.randint(0, 300))
        return Snapshot(SnapshotMeta(index, term, membership), data)


def dump(log: MemoryStorage | GroupLog) -> tuple[object, ...]:
    """Everything a reader can observe of a log, for equality checks."""
    first, last = log.first_index(), log.last_index()
    entries = log.entries(first, last + 1, 2**62) if last >= first else []
    return (log.initial_state(), log.snapshot(), first, last, entries, log.memberships())


def _open_group(store: LogStore, group: int) -> GroupLog:
    try:
        return store.group(group)
    except UnknownGroupError:
        return store.bootstrap(group, MEMBERSHIP)


async def _run_group(log: GroupLog, workload: Workload, ops_max: int) -> None:
    while workload.ops_done < ops_max:
        op = workload.next_op()
        await op.write(log)
        state = workload.model
        sys.stdout.write(f"ack {log.group} {workload.ops_done} {state.last_index()} "
                         f"{state.initial_state().term}\n")
        sys.stdout.flush()


async def _main(path: str, seed: int, resume: list[int], ops_max: int) -> None:
    with LogStore(path) as store:
        tasks = []
        for group, done in enumerate(resume):
            workload = Workload(seed, group)
            workload.skip(done)
            tasks.append(_run_group(_open_group(store, group), workload, ops_max))
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await asyncio.gather(*tasks)


if __name__ == "__main__":
    path, seed, groups, resume, ops_max = sys.argv[1:6]
    counts = [int(count) for count in resume.split(",")]
    if len(counts) != int(groups):
        raise SystemExit("RESUME needs one count per group")
    asyncio.run(_main(path, int(seed), counts, int(ops_max)))
