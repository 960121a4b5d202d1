"""The node's Raft log store: one LMDB environment shared by every group, group commit.

:class:`LogStore` opens the environment of one node; :meth:`LogStore.group`
(or :meth:`LogStore.bootstrap` for a new group) returns that group's
:class:`GroupLog`, which implements both protocols of
:mod:`millpond.raft.storage` (``LogStorage`` reads, ``LogWriter`` writes) with
:class:`~millpond.raft.storage.MemoryStorage`'s semantics, plus durability.
All writes go through one :class:`~millpond.raft.group_commit.GroupCommit`
thread: the saves and compactions of every group queued while the previous
commit ran are applied in one LMDB write transaction, made durable by one
commit (one fsync round).

Layout (format version 1)
=========================

One environment (a directory with ``data.mdb`` and ``lock.mdb``) per node,
with three named databases. Every key is 16 bytes: the **group id** (u64
big-endian) then a u64 big-endian number, so a group's records are contiguous
and in index order. Every value ends with a CRC-32 (``zlib.crc32``, u32
big-endian) of all the bytes before it, checked whenever a value is read back.

=========  ======================  ==================================================
database   key                     value (before the CRC)
=========  ======================  ==================================================
``log``    (group, index)          one entry: term u64, kind u8 (``EntryKind``), data
``meta``   (group, 1)              hard state: term u64, vote u64, commit u64
``meta``   (group, 2)              snapshot: index u64, term u64, membership length
                                   u32, membership (``Membership.encode``), data
``meta``   (2**64-1, 0)            format record: ``b"millpond-raft-log"``, version u32
``conf``   (group, index)          the membership carried by the ``CONFIG`` entry at
                                   ``index`` (``Membership.encode``), so
                                   ``memberships()`` need not scan the log
=========  ======================  ==================================================

Group ids range over ``0 .. 2**64-2`` (the last id is reserved for the format
record). A group exists once its snapshot record does; :meth:`LogStore.bootstrap`
writes the base snapshot at index 0 (what ``MemoryStorage(membership)`` starts
from) and a zero hard state.

What every committed transaction leaves true, for each group ``g`` whose
snapshot record has index ``s`` and whose log is ``(s, last]``:

* ``log`` holds every index of ``(s, last]`` and nothing above ``last``.
  Indexes ``<= s`` may still be stored: prefix compaction records the new
  snapshot at once and deletes the prefix in bounded steps (at most
  ``writer_batch_deletes_max`` entries per transaction, across later
  transactions too). Nothing ever reads below ``s + 1``, so leftovers are
  invisible; a crash before they are gone leaves them until the group's next
  compaction, which starts deleting from index 0 again. LMDB reuses the freed
  pages.
* ``conf`` holds ``(g, i)`` exactly for the ``CONFIG`` entries of ``(s, last]``.
* An entry's data may be replaced in place (:meth:`GroupLog.rewrite`, used by
  log compaction on committed ``DATA`` entries): same index, term and kind, new
  data and CRC. Raft matches entries by index and term only, so it cannot tell.
* The hard state, the entries and the snapshot of one ``save`` are written in
  one transaction, so after a crash all of a save is there or none of it.

Durability
==========

The environment is opened with ``sync=True, metasync=True, writemap=False``:
``Transaction.commit`` returns only once the data pages and then the meta page
are on disk (py-lmdb releases the GIL meanwhile), so a write is acknowledged
exactly when it is durable, and a power cut can lose nothing acknowledged nor
corrupt the file. ``sync=False`` plus an explicit ``Environment.sync(True)``
would give the same fsync count, but between that commit and that sync the
meta page may reach the disk before the data pages it points to, so a power
cut there could corrupt the whole environment, not just lose the last write.
Without ``writemap`` LMDB writes with ``pwrite``, so a full disk is an error
(the writer fails, see below) rather than a ``SIGBUS``. ``map_size`` is
reserved address space (default ``store_map_size_bytes``); the file grows as
pages are used.

A failed commit (full map, full disk, an invariant) stops the writer for good
(:class:`~millpond.raft.group_commit.WriterFailedError`): the node must stop
and restart, as a Raft node must when it cannot persist. Open an environment
only in the process that uses it, and never use it across ``fork``
(py-lmdb refuses a second open in one process; submissions from a forked child
raise :class:`~millpond.raft.group_commit.WriterClosedError`).

Visibility
==========

A write is queued by :meth:`GroupLog.save` / :meth:`GroupLog.compact` (which
return at once) or by ``await`` :meth:`GroupLog.write` /
:meth:`GroupLog.write_compaction` (which return once durable). It becomes
visible through the view when its transaction commits, which is also when it
is durable; :meth:`GroupLog.sync` waits for that. While the transaction
carrying it is being committed, the view narrows to the entries that are the
same before and after it: a compaction's new first index shows as soon as the
writer starts the transaction, and entries about to be overwritten or deleted
disappear until the commit, then the new ones appear. Each read method answers
from one set of bounds and one LMDB read transaction that agree with each
other (the bounds are immutable and swapped by the writer; a reader that sees
them swapped while it opened its transaction retries). Reads never wait for
the writer or an fsync.

A rewritten entry (:meth:`GroupLog.rewrite`) shows its old data until the
transaction that rewrites it commits, then its new data; the bounds do not move.

This differs from ``MemoryStorage``, whose writes are visible at ``save``.
The Raft core does not notice: it reads back entries it handed out in a Ready
only after ``advance``, which the driver calls after the write is durable;
until then it serves them from its own unstable log. A caller that wants to
read its own writes waits for them first.

Caches
======

Each view keeps in memory the hard state, the snapshot (with its data), the
last index and the terms of its recent entries as runs of equal terms (at
most ``store_term_runs_max`` runs), so ``initial_state``, ``snapshot``,
``first_index``, ``last_index`` and usually ``term`` do not touch LMDB; other
terms, ``entries`` and ``memberships`` read LMDB.
"""

from __future__ import annotations

import bisect
import os
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import lmdb

from millpond.invariant import invariant, unreachable
from millpond.limits import (
    group_id_max,
    store_map_size_bytes,
    store_spare_read_txns_max,
    store_term_runs_max,
    writer_batch_bytes_max,
    writer_batch_deletes_max,
    writer_batch_writes_max,
    writer_queue_bytes_max,
    writer_queue_writes_max,
)
from millpond.raft.errors import CompactedError, StorageError, UnavailableError
from millpond.raft.group_commit import GroupCommit, WriterClosedError, WriterFailedError
from millpond.raft.membership import Membership
from millpond.raft.messages import (
    ENTRY_OVERHEAD_BYTES,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)

__all__ = [
    "EntryRewrite",
    "GroupExistsError",
    "GroupLog",
    "GroupLogStatistics",
    "LogStore",
    "LogStoreStatistics",
    "StoreLayoutError",
    "UnknownGroupError",
    "WriterClosedError",
    "WriterFailedError",
]

_READ_ATTEMPTS_MAX = 64
"""A reader retries when the writer swaps the bounds while it opens its transaction; a swap
takes one commit (an fsync), so a retry succeeds at once in practice."""


class UnknownGroupError(StorageError):
    """The group was never bootstrapped in this store."""


class GroupExistsError(StorageError):
    """:meth:`LogStore.bootstrap` of a group that already exists."""


class StoreLayoutError(StorageError):
    """The environment was not written by this layout (another program, another version)."""


# -- encoding ------------------------------------------------------------------
_KEY = struct.Struct(">QQ")
_ENTRY_HEAD = struct.Struct(">QB")
_HARD_STATE = struct.Struct(">QQQ")
_SNAPSHOT_HEAD = struct.Struct(">QQI")
_U32 = struct.Struct(">I")
_META_HARD_STATE = 1
_META_SNAPSHOT = 2
_FORMAT_KEY = _KEY.pack(2**64 - 1, 0)
_FORMAT_MAGIC = b"millpond-raft-log"
_FORMAT_VERSION = 1
_KINDS = {kind.value: kind for kind in EntryKind}
_DATABASES = (b"log", b"meta", b"conf")


def _sealed(*parts: bytes) -> bytes:
    """``parts`` followed by the CRC-32 of their concatenation."""
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    return b"".join((*parts, _U32.pack(crc)))


def _unsealed(value: bytes | memoryview, what: str, **context: object) -> memoryview:
    """The body of a sealed value; an invariant fails if it is truncated or its CRC is wrong."""
    view = memoryview(value)
    invariant(len(view) >= _U32.size, f"{what} record is truncated", **context)
    body = view[: len(view) - _U32.size]
    (crc,) = _U32.unpack_from(view, len(body))
    invariant(zlib.crc32(body) == crc, f"{what} record fails its checksum", **context)
    return body


def _encode_entry(entry: Entry) -> bytes:
    head = _ENTRY_HEAD.pack(entry.term, entry.kind)  # (the hot path: _sealed, unrolled)
    data = entry.data
    return b"".join((head, data, _U32.pack(zlib.crc32(data, zlib.crc32(head)))))


def _decode_entry(group: int, index: int, value: bytes | memoryview) -> Entry:
    body = _unsealed(value, "log entry", group=group, index=index)
    invariant(len(body) >= _ENTRY_HEAD.size, "log entry record is too short",
              group=group, index=index)
    term, kind = _ENTRY_HEAD.unpack_from(body)
    invariant(kind in _KINDS, "log entry has an unknown kind", group=group, index=index, kind=kind)
    return Entry(term, index, _KINDS[kind], bytes(body[_ENTRY_HEAD.size:]))


def _decode_entry_term(group: int, index: int, value: bytes | memoryview) -> int:
    """The term of a stored entry, reading only its header (no CRC: the data is not read)."""
    invariant(len(value) >= _ENTRY_HEAD.size + _U32.size, "log entry record is too short",
              group=group, index=index)
    term, kind = _ENTRY_HEAD.unpack_from(value)
    invariant(kind in _KINDS, "log entry has an unknown kind", group=group, index=index, kind=kind)
    return int(term)


def _encode_hard_state(hard_state: HardState) -> bytes:
    return _sealed(_HARD_STATE.pack(hard_state.term, hard_state.vote, hard_state.commit))


def _decode_hard_state(group: int, value: bytes) -> HardState:
    body = _unsealed(value, "hard state", group=group)
    invariant(len(body) == _HARD_STATE.size, "hard state record has the wrong length", group=group)
    return HardState(*_HARD_STATE.unpack_from(body))


def _encode_snapshot(snapshot: Snapshot) -> bytes:
    meta = snapshot.meta
    membership = meta.membership.encode()
    head = _SNAPSHOT_HEAD.pack(meta.index, meta.term, len(membership))
    return _sealed(head, membership, snapshot.data)


def _decode_snapshot(group: int, value: bytes) -> Snapshot:
    body = _unsealed(value, "snapshot", group=group)
    invariant(len(body) >= _SNAPSHOT_HEAD.size, "snapshot record is too short", group=group)
    index, term, length = _SNAPSHOT_HEAD.unpack_from(body)
    end = _SNAPSHOT_HEAD.size + length
    invariant(len(body) >= end, "snapshot record is shorter than its membership", group=group)
    membership = _decode_membership(group, body[_SNAPSHOT_HEAD.size:end], index=index)
    return Snapshot(SnapshotMeta(index, term, membership), bytes(body[end:]))


def _decode_membership(group: int, data: bytes | memoryview, index: int) -> Membership:
    try:
        return Membership.decode(bytes(data))
    except ValueError as exc:
        unreachable("stored membership is malformed", group=group, index=index, error=str(exc))


def _encode_format() -> bytes:
    return _sealed(_FORMAT_MAGIC, _U32.pack(_FORMAT_VERSION))


def _group_stop(group: int) -> bytes:
    """The first key after every key of ``group``."""
    return _KEY.pack(group + 1, 0)


# -- bounds and cached terms ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class _LogState:
    """One image of a group's bounds as a view exposes it (immutable; swapped whole).

    ``run_starts``/``run_terms`` cache terms: entry ``i`` in ``[run_starts[0],
    last]`` has term ``run_terms[k]`` for the last ``k`` with ``run_starts[k] <= i``.
    Terms below ``run_starts[0]`` are read from LMDB.
    """

    snapshot: Snapshot
    hard_state: HardState
    last: int
    run_starts: tuple[int, ...] = ()
    run_terms: tuple[int, ...] = ()

    @property
    def base(self) -> int:
        """Index of the snapshot: the log holds ``(base, last]``."""
        return self.snapshot.meta.index

    def cached_term(self, index: int) -> int | None:
        """The cached term of entry ``index`` in ``(base, last]``, or None if not cached."""
        starts = self.run_starts
        if not starts or index < starts[0] or index > self.last:
            return None
        return self.run_terms[bisect.bisect_right(starts, index) - 1]


_Runs = tuple[tuple[int, ...], tuple[int, ...]]


def _runs_below(starts: tuple[int, ...], terms: tuple[int, ...], stop: int) -> _Runs:
    """The runs restricted to indexes ``< stop``."""
    count = bisect.bisect_left(starts, stop)
    if count == len(starts):
        return starts, terms
    return starts[:count], terms[:count]


def _runs_from(starts: tuple[int, ...], terms: tuple[int, ...], lo: int, last: int) -> _Runs:
    """The runs restricted to indexes ``>= lo`` (of a log ending at ``last``)."""
    if lo > last:
        return (), ()
    if not starts or starts[0] >= lo:
        return starts, terms
    k = bisect.bisect_right(starts, lo) - 1
    return (lo, *starts[k + 1:]), terms[k:]


def _runs_extend(starts: tuple[int, ...], terms: tuple[int, ...],
                 entries: Sequence[Entry]) -> _Runs:
    """Append ``entries`` (which follow the runs' coverage directly), keeping the newest runs."""
    new_starts: list[int] = []
    new_terms: list[int] = []
    current = terms[-1] if terms else None
    for entry in entries:
        if entry.term != current:
            new_starts.append(entry.index)
            new_terms.append(entry.term)
            current = entry.term
    if not new_starts:
        return starts, terms
    starts, terms = (*starts, *new_starts), (*terms, *new_terms)
    if len(starts) > store_term_runs_max:
        starts, terms = starts[-store_term_runs_max:], terms[-store_term_runs_max:]
    return starts, terms


def _after_save(state: _LogState, hard_state: HardState | None, entries: Sequence[Entry],
                snapshot: Snapshot | None) -> _LogState:
    """The bounds after ``save``; an invariant fails as ``MemoryStorage.save``'s would."""
    if snapshot is not None:
        state = _LogState(snapshot, state.hard_state, snapshot.meta.index)
    if entries:
        first = entries[0].index
        invariant(first > state.base, "append below the snapshot", first=first, base=state.base)
        invariant(first <= state.last + 1, "append leaves a gap", first=first, last=state.last)
        for offset, entry in enumerate(entries):
            invariant(entry.index == first + offset, "appended entries are not contiguous",
                      first=first, offset=offset, index=entry.index)
        # What remains of the runs ends at first - 1, so the new entries continue it.
        starts, terms = _runs_below(state.run_starts, state.run_terms, first)
        starts, terms = _runs_extend(starts, terms, entries)
        state = _LogState(state.snapshot, state.hard_state, entries[-1].index, starts, terms)
    if hard_state is not None:
        state = _LogState(state.snapshot, hard_state, state.last, state.run_starts,
                          state.run_terms)
    return state


def _after_compact(state: _LogState, snapshot: Snapshot) -> _LogState | None:
    """The bounds after ``compact`` (None: a no-op); an invariant fails as ``MemoryStorage``'s."""
    index = snapshot.meta.index
    if index <= state.base:
        return None
    invariant(index <= state.last, "compact beyond the last entry", index=index, last=state.last)
    cached = state.cached_term(index)
    invariant(cached is None or cached == snapshot.meta.term,
              "compact with a snapshot term that does not match the log", index=index)
    starts, terms = _runs_from(state.run_starts, state.run_terms, index + 1, state.last)
    return _LogState(snapshot, state.hard_state, state.last, starts, terms)


def _narrowed(committed: _LogState, final: _LogState, rewrite_from: int | None) -> _LogState:
    """The bounds to expose while one transaction takes a group from ``committed`` to ``final``.

    ``rewrite_from`` is the lowest index the transaction overwrites or deletes above the
    snapshot (None: it only appends or compacts). The result covers only entries that
    are stored, and identical, in both states, so a read answers the same whichever
    state its LMDB transaction sees. The hard state stays the committed one.
    """
    base = final.base
    last = min(committed.last, final.last)
    if rewrite_from is not None:
        last = min(last, rewrite_from - 1)
    last = max(base, last)
    starts, terms = _runs_below(final.run_starts, final.run_terms, last + 1)
    starts, terms = _runs_from(starts, terms, base + 1, last)
    return _LogState(final.snapshot, committed.hard_state, last, starts, terms)


def _check_range(state: _LogState, lo: int, hi: int) -> None:
    if lo <= state.base:
        raise CompactedError(f"index {lo} is compacted (snapshot at {state.base})")
    if hi > state.last + 1:
        raise UnavailableError(f"index {hi - 1} is beyond the last index {state.last}")


def _term_from_bounds(state: _LogState, index: int) -> int | None:
    """The term of ``index`` if the bounds know it; raise if it is out of range; None: read it."""
    if index < state.base:
        raise CompactedError(f"index {index} is compacted (snapshot at {state.base})")
    if index == state.base:
        return state.snapshot.meta.term
    if index > state.last:
        raise UnavailableError(f"index {index} is beyond the last index {state.last}")
    return state.cached_term(index)


# -- the environment -----------------------------------------------------------
class _Environment:
    """The open LMDB environment and its databases, shared by the store, its views and writer."""

    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self.log = env.open_db(b"log")
        self.meta = env.open_db(b"meta")
        self.conf = env.open_db(b"conf")
        self.closed = False

    def check_open(self) -> None:
        if self.closed:
            raise WriterClosedError("the log store is closed")

    def begin(self) -> lmdb.Transaction[bytes]:
        """A read transaction whose values are copied out as ``bytes``."""
        return self.env.begin()

    def begin_buffers(self) -> lmdb.Transaction[memoryview]:
        """A read transaction whose values are views into the map (valid until it ends)."""
        return self.env.begin(buffers=True)


T = TypeVar("T")
V = TypeVar("V", bytes, memoryview)


# -- the per-group view --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GroupLogStatistics:
    """An immutable snapshot of one group's log bounds and hard state."""

    group: int
    first_index: int
    last_index: int
    snapshot_index: int
    term: int
    vote: int
    commit: int
    term_runs_cached: int


class GroupLog:
    """One group's log in a :class:`LogStore`: Raft's ``LogStorage`` and ``LogWriter``.

    Reads follow ``MemoryStorage`` exactly, over the committed (durable) state,
    see "Visibility" in the module docstring. They may be called from any
    thread. Writes are validated when submitted (an invariant fails in the
    caller, as ``MemoryStorage``'s would, and nothing is queued) and applied in
    submission order. Obtain views from :meth:`LogStore.group` /
    :meth:`LogStore.bootstrap`, never by constructing them.
    """

    def __init__(self, env: _Environment, writer: GroupCommit[_Job], group: int,
                 state: _LogState) -> None:
        self._env = env
        self._writer = writer
        self._group = group
        self._visible = state  # what readers see; swapped by the writer thread
        self._submitted = state  # after every accepted write; guarded by the writer's lock
        self._written = state  # after the writer's current/last transaction; writer thread only
        self._last_seq = 0  # writer sequence number of this view's last write

    @property
    def group(self) -> int:
        """The group id."""
        return self._group

    # -- LogStorage ------------------------------------------------------------
    def initial_state(self) -> HardState:
        """The last durable hard state."""
        return self._visible.hard_state

    def snapshot(self) -> Snapshot:
        """The snapshot the log starts after (cached in memory with its data).

        It is durable, except while the transaction recording it commits (see "Visibility").
        """
        return self._visible.snapshot

    def first_index(self) -> int:
        """Snapshot index + 1."""
        return self._visible.base + 1

    def last_index(self) -> int:
        """Index of the last durable entry, or the snapshot index if none follows it."""
        return self._visible.last

    def term(self, index: int) -> int:
        """Term of entry ``index`` for ``first_index()-1 <= index <= last_index()``.

        Raises :class:`CompactedError` below that range and :class:`UnavailableError`
        above it; an invariant fails if the stored entry is missing or malformed.
        """
        term = _term_from_bounds(self._visible, index)
        if term is not None:
            return term
        return self._read(lambda state, txn: self._read_term(state, txn, index),
                          self._env.begin_buffers)

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries ``[lo, hi)``: at least one if ``lo < hi``, then as many as fit ``max_bytes``.

        Raises :class:`CompactedError` if ``lo < first_index()`` and
        :class:`UnavailableError` if ``hi > last_index() + 1``. Every entry read
        back is checked (CRC, kind, index, cached term): an invariant fails on damage.
        """
        _check_range(self._visible, lo, hi)
        if lo >= hi:
            return []
        return self._read(lambda state, txn: self._read_entries(state, txn, lo, hi, max_bytes),
                          self._env.begin)

    def memberships(self) -> list[tuple[int, Membership]]:
        """``(index, membership)`` of every ``CONFIG`` entry after the snapshot, ascending."""
        state = self._visible
        if state.last == state.base:
            return []
        return self._read(self._read_memberships, self._env.begin)

    # -- LogWriter -------------------------------------------------------------
    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: Snapshot | None) -> None:
        """Queue one Ready's write: ``snapshot`` (dropping the log), ``entries`` (dropping
        any stored entry at or after the first of them), ``hard_state`` — all in one
        transaction. Returns once queued (blocking while the queue is full): call
        :meth:`sync` for durability. Raises :class:`~millpond.invariant.InvariantViolation`
        on a write ``MemoryStorage`` would refuse (nothing queued), and the writer's
        :class:`WriterFailedError` / :class:`WriterClosedError`.
        """
        job = _SaveJob.build(self, hard_state, entries, snapshot)
        self._writer.submit(job.prepare, job.nbytes)

    def compact(self, snapshot: Snapshot) -> None:
        """Queue dropping the entries up to ``snapshot.meta.index`` (which must be stored, with
        that term) and recording ``snapshot`` as the new base. A snapshot at or below the
        current base is a no-op. Returns once queued; raises as :meth:`save` does. The term
        is checked again inside the writer's transaction (a mismatch there stops the writer).
        """
        job = _CompactJob(self, snapshot)
        self._writer.submit(job.prepare, job.nbytes)

    def sync(self, timeout_s: float | None = None) -> None:
        """Block until every write queued through this view so far is durable (and visible).

        Raises :class:`TimeoutError` (the writes may still become durable) and
        :class:`WriterFailedError`.
        """
        self._writer.wait_durable(self._last_seq, timeout_s)

    async def write(self, hard_state: HardState | None, entries: Sequence[Entry],
                    snapshot: Snapshot | None) -> None:
        """:meth:`save`, returning once the write is durable; awaits (without blocking the
        event loop) while the queue is full. If cancelled, the write may or may not be
        durable. Raises as :meth:`save` does.
        """
        job = _SaveJob.build(self, hard_state, entries, snapshot)
        await self._writer.submit_durable(job.prepare, job.nbytes)

    async def write_compaction(self, snapshot: Snapshot) -> None:
        """:meth:`compact`, returning once durable (see :meth:`write`)."""
        job = _CompactJob(self, snapshot)
        await self._writer.submit_durable(job.prepare, job.nbytes)

    def rewrite(self, rewrites: Sequence[EntryRewrite]) -> None:
        """Queue replacing the data of stored ``DATA`` entries in place, keeping index, term and kind.

        Each ``(index, transform)`` is applied in the writer thread, inside the
        transaction, to the entry's data *as stored then* (so rewrites of one
        entry compose in submission order, whatever was durable when they were
        queued): ``transform(data)`` returns the new data, or None to leave the
        entry as it is. An index that is no longer stored (compacted away,
        truncated, or below a snapshot installed since) is skipped. Meant for
        committed entries only, whose content Raft never compares (it matches
        entries by index and term): log compaction shrinks record batches this way.

        ``transform`` must be deterministic, fast and thread-safe; anything it
        raises stops the writer for good (fail-stop), as a failed commit does.
        Returns once queued; raises as :meth:`save` does.
        """
        if not rewrites:
            return
        job = _RewriteJob(self, tuple(rewrites))
        self._writer.submit(job.prepare, job.nbytes)

    def statistics(self) -> GroupLogStatistics:
        """The visible bounds and hard state."""
        state = self._visible
        return GroupLogStatistics(
            group=self._group, first_index=state.base + 1, last_index=state.last,
            snapshot_index=state.base, term=state.hard_state.term, vote=state.hard_state.vote,
            commit=state.hard_state.commit, term_runs_cached=len(state.run_starts))

    # -- reading LMDB ------------------------------------------------------------
    def _read(self, read: Callable[[_LogState, lmdb.Transaction[V]], T],
              begin: Callable[[], lmdb.Transaction[V]]) -> T:
        """Run ``read`` on bounds and a read transaction that agree (see "Visibility")."""
        for _ in range(_READ_ATTEMPTS_MAX):
            state = self._visible
            self._env.check_open()
            with begin() as txn:
                if self._visible is state:
                    return read(state, txn)
        unreachable("the log's bounds kept changing under a reader", group=self._group)

    def _read_term(self, state: _LogState, txn: lmdb.Transaction[memoryview], index: int) -> int:
        term = _term_from_bounds(state, index)
        if term is not None:
            return term
        value = txn.get(_KEY.pack(self._group, index), db=self._env.log)
        if value is None:
            unreachable("entry missing from the log", group=self._group, index=index)
        return _decode_entry_term(self._group, index, value)

    def _read_entries(self, state: _LogState, txn: lmdb.Transaction[bytes], lo: int, hi: int,
                      max_bytes: int) -> list[Entry]:
        _check_range(state, lo, hi)
        group = self._group
        cursor = txn.cursor(db=self._env.log)
        found = cursor.set_key(_KEY.pack(group, lo))
        invariant(found, "entry missing from the log", group=group, index=lo)
        result: list[Entry] = []
        total = 0
        for index in range(lo, hi):
            if index > lo:
                found = cursor.next() and cursor.key() == _KEY.pack(group, index)
                invariant(found, "entry missing from the log", group=group, index=index)
            entry = _decode_entry(group, index, cursor.value())
            cached = state.cached_term(index)
            invariant(cached is None or cached == entry.term, "stored term disagrees with cache",
                      group=group, index=index, stored=entry.term, cached=cached)
            total += entry.size()
            if total > max_bytes and result:
                break
            result.append(entry)
        return result

    def _read_memberships(self, state: _LogState,
                          txn: lmdb.Transaction[bytes]) -> list[tuple[int, Membership]]:
        group = self._group
        cursor = txn.cursor(db=self._env.conf)
        stop = _KEY.pack(group, state.last + 1)
        result: list[tuple[int, Membership]] = []
        if not cursor.set_range(_KEY.pack(group, state.base + 1)):
            return result
        for key, value in cursor.iternext():
            if key >= stop:
                break
            _, index = _KEY.unpack(key)
            body = _unsealed(value, "membership", group=group, index=index)
            result.append((index, _decode_membership(group, body, index)))
        return result


# -- jobs: what the writer applies ---------------------------------------------
class _WriteTxn:
    """One write transaction of the writer thread, with what it changed."""

    def __init__(self, env: _Environment, txn: lmdb.Transaction[bytes]) -> None:
        self.env = env
        self.txn = txn
        self.entries_written = 0
        self.bytes_written = 0
        self.entries_deleted = 0
        self.entries_rewritten = 0

    def put_entries(self, items: list[tuple[bytes, bytes]]) -> None:
        self.txn.cursor(db=self.env.log).putmulti(items)
        self.entries_written += len(items)
        self.bytes_written += sum(len(value) for _, value in items)

    def put(self, db: lmdb._Database, key: bytes, value: bytes) -> None:
        self.txn.put(key, value, db=db)
        self.bytes_written += len(value)

    def delete(self, db: lmdb._Database, start: bytes, stop: bytes,
               budget: int | None = None) -> int:
        """Delete keys in ``[start, stop)``, at most ``budget`` of them; return how many."""
        cursor = self.txn.cursor(db=db)
        deleted = 0
        if not cursor.set_range(start):
            return 0
        while budget is None or deleted < budget:
            key = cursor.key()
            if not key or key >= stop or not cursor.delete():
                break
            deleted += 1
        if db is self.env.log:
            self.entries_deleted += deleted
        return deleted


@dataclass(slots=True)
class _SaveJob:
    """A ``save``: encoded outside the writer thread, validated and bound to a state at submit."""

    log: GroupLog
    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    items: list[tuple[bytes, bytes]]
    conf_items: list[tuple[bytes, bytes]]
    nbytes: int
    before_last: int = 0
    after: _LogState | None = None

    @classmethod
    def build(cls, log: GroupLog, hard_state: HardState | None, entries: Sequence[Entry],
              snapshot: Snapshot | None) -> _SaveJob:
        """Encode the records (in the caller's thread, while the writer may be in an fsync)."""
        entries = tuple(entries)
        group = log.group
        items = [(_KEY.pack(group, entry.index), _encode_entry(entry)) for entry in entries]
        conf_items = []
        for entry in entries:
            if entry.kind == EntryKind.CONFIG:
                _decode_membership(group, entry.data, entry.index)  # check before writing
                conf_items.append((_KEY.pack(group, entry.index), _sealed(entry.data)))
        nbytes = (sum(len(entry.data) + ENTRY_OVERHEAD_BYTES for entry in entries)
                  + (len(snapshot.data) if snapshot is not None else 0) + _HARD_STATE.size)
        return cls(log, hard_state, entries, snapshot, items, conf_items, nbytes)

    @property
    def rewrite_from(self) -> int | None:
        """Lowest index above the snapshot that this write overwrites or deletes."""
        if self.snapshot is not None:
            return self.snapshot.meta.index + 1
        if self.entries and self.entries[0].index <= self.before_last:
            return self.entries[0].index
        return None

    def prepare(self, seq: int) -> _SaveJob | None:
        """Validate against every write accepted before (writer lock held) and bind to it."""
        log = self.log
        log._env.check_open()
        if self.hard_state is None and not self.entries and self.snapshot is None:
            return None
        self.before_last = log._submitted.last
        self.after = _after_save(log._submitted, self.hard_state, self.entries, self.snapshot)
        log._submitted = self.after
        log._last_seq = seq
        return self

    def apply(self, txn: _WriteTxn) -> bool:
        """Write the records (writer thread); True if entries at or below a snapshot remain."""
        env, group = txn.env, self.log.group
        if self.snapshot is not None:
            index = self.snapshot.meta.index
            if self.before_last > index:
                txn.delete(env.log, _KEY.pack(group, index + 1), _group_stop(group))
            txn.delete(env.conf, _KEY.pack(group, 0), _group_stop(group))
            txn.put(env.meta, _KEY.pack(group, _META_SNAPSHOT), _encode_snapshot(self.snapshot))
        if self.items:
            rewrite = self.rewrite_from
            if rewrite is not None and self.snapshot is None:
                start = _KEY.pack(group, rewrite)
                txn.delete(env.log, start, _group_stop(group))
                txn.delete(env.conf, start, _group_stop(group))
            txn.put_entries(self.items)
            for key, value in self.conf_items:
                txn.put(env.conf, key, value)
        if self.hard_state is not None:
            txn.put(env.meta, _KEY.pack(group, _META_HARD_STATE),
                    _encode_hard_state(self.hard_state))
        return self.snapshot is not None


@dataclass(slots=True)
class _CompactJob:
    """A ``compact``: records the snapshot at once; the prefix goes as garbage."""

    log: GroupLog
    snapshot: Snapshot
    after: _LogState | None = None

    @property
    def nbytes(self) -> int:
        return len(self.snapshot.data) + _SNAPSHOT_HEAD.size

    @property
    def rewrite_from(self) -> int | None:
        return None

    def prepare(self, seq: int) -> _CompactJob | None:
        log = self.log
        log._env.check_open()
        after = _after_compact(log._submitted, self.snapshot)
        if after is None:
            return None
        self.after = after
        log._submitted = after
        log._last_seq = seq
        return self

    def apply(self, txn: _WriteTxn) -> bool:
        env, group = txn.env, self.log.group
        meta = self.snapshot.meta
        stored = txn.txn.get(_KEY.pack(group, meta.index), db=env.log)
        if stored is None:
            unreachable("compaction point is not stored", group=group, index=meta.index)
        term = _decode_entry(group, meta.index, stored).term
        invariant(term == meta.term, "compact with a snapshot term that does not match the log",
                  group=group, index=meta.index, stored=term, snapshot=meta.term)
        txn.put(env.meta, _KEY.pack(group, _META_SNAPSHOT), _encode_snapshot(self.snapshot))
        txn.delete(env.conf, _KEY.pack(group, 0), _KEY.pack(group, meta.index + 1))
        return True


EntryRewrite = tuple[int, Callable[[bytes], bytes | None]]
"""``(index, transform)``: see :meth:`GroupLog.rewrite`."""


@dataclass(slots=True)
class _RewriteJob:
    """A ``rewrite``: new data for stored entries, computed in the writer from what is stored."""

    log: GroupLog
    rewrites: tuple[EntryRewrite, ...]
    after: _LogState | None = None

    @property
    def nbytes(self) -> int:
        return ENTRY_OVERHEAD_BYTES * len(self.rewrites)

    @property
    def rewrite_from(self) -> int | None:
        return None  # the bounds do not move: readers see the old or the new data, both whole

    def prepare(self, seq: int) -> _RewriteJob:
        log = self.log
        log._env.check_open()
        self.after = log._submitted  # unchanged bounds, bound to every write accepted before
        log._last_seq = seq
        return self

    def apply(self, txn: _WriteTxn) -> bool:
        env, group = txn.env, self.log.group
        state = self.after
        if state is None:
            unreachable("a rewrite was queued without being prepared", group=group)
        for index, transform in self.rewrites:
            if not state.base < index <= state.last:
                continue  # compacted away or truncated since it was queued
            key = _KEY.pack(group, index)
            stored = txn.txn.get(key, db=env.log)
            if stored is None:
                continue
            entry = _decode_entry(group, index, stored)
            invariant(entry.kind == EntryKind.DATA, "rewrite of an entry that is not DATA",
                      group=group, index=index, kind=entry.kind)
            data = transform(entry.data)
            if data is None or data == entry.data:
                continue
            txn.put(env.log, key, _encode_entry(Entry(entry.term, index, entry.kind, data)))
            txn.entries_rewritten += 1
        return False


_Job = _SaveJob | _CompactJob | _RewriteJob


# -- the writer's batch commit ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Transition:
    """What one transaction does to one group."""

    committed: _LogState
    final: _LogState
    rewrite_from: int | None


def _transitions(jobs: list[_Job]) -> dict[GroupLog, _Transition]:
    result: dict[GroupLog, _Transition] = {}
    for job in jobs:
        if job.after is None:
            unreachable("a job was queued without being prepared", group=job.log.group)
        old = result.get(job.log)
        committed = old.committed if old else job.log._visible
        rewrite = job.rewrite_from
        if old is not None and old.rewrite_from is not None:
            rewrite = old.rewrite_from if rewrite is None else min(rewrite, old.rewrite_from)
        result[job.log] = _Transition(committed, job.after, rewrite)
    return result


class _Committer:
    """The writer thread's side: apply a batch of jobs in one transaction and publish it."""

    def __init__(self, env: _Environment) -> None:
        self._env = env
        self._garbage: dict[GroupLog, None] = {}  # ordered set; writer thread only
        self._lock = threading.Lock()
        self._counters = {"transactions": 0, "entries_written": 0, "bytes_written": 0,
                          "entries_deleted": 0, "entries_rewritten": 0}

    def has_garbage(self) -> bool:
        """True while some group has compacted-away entries left to delete."""
        return bool(self._garbage)

    def commit(self, jobs: list[_Job]) -> None:
        """Apply ``jobs`` (maybe none: garbage only) in one durable transaction, then publish."""
        transitions = _transitions(jobs)
        txn = _WriteTxn(self._env, self._env.env.begin(write=True))
        try:
            for log, step in transitions.items():
                narrowed = _narrowed(step.committed, step.final, step.rewrite_from)
                if narrowed != step.committed:  # plain appends leave the bounds as they are
                    log._visible = narrowed
            for job in jobs:
                if job.apply(txn):
                    self._garbage[job.log] = None
            for log, step in transitions.items():
                log._written = step.final
            self._collect_garbage(txn)
            txn.txn.commit()  # durable on return: sync=True, metasync=True
        except BaseException:
            txn.txn.abort()
            for log, step in transitions.items():
                log._visible = step.committed
            raise
        for log, step in transitions.items():
            log._visible = step.final
        self._count(txn, changed=bool(jobs) or txn.entries_deleted > 0)

    def _collect_garbage(self, txn: _WriteTxn) -> None:
        """Delete up to ``writer_batch_deletes_max`` entries at or below their group's snapshot."""
        budget = writer_batch_deletes_max
        for log in list(self._garbage):
            if budget <= 0:
                return
            group = log.group
            stop = _KEY.pack(group, log._written.base + 1)
            budget -= txn.delete(self._env.log, _KEY.pack(group, 0), stop, budget)
            if budget > 0:
                del self._garbage[log]

    def _count(self, txn: _WriteTxn, changed: bool) -> None:
        with self._lock:
            self._counters["transactions"] += int(changed)
            self._counters["entries_written"] += txn.entries_written
            self._counters["bytes_written"] += txn.bytes_written
            self._counters["entries_deleted"] += txn.entries_deleted
            self._counters["entries_rewritten"] += txn.entries_rewritten

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters, groups_with_garbage=len(self._garbage))


# -- the store -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LogStoreStatistics:
    """An immutable snapshot of a store's counters.

    ``transactions`` counts committed write transactions that changed something;
    with ``sync=True`` each is one durable commit, so ``fsyncs == transactions``
    (LMDB syncs the data pages, then the meta page). ``writes`` counts queued
    saves and compactions, ``writes_committed`` those made durable;
    ``bytes_written`` counts encoded record bytes; ``entries_rewritten`` entries whose data a
    :meth:`GroupLog.rewrite` replaced.
    """

    writes: int
    writes_committed: int
    transactions: int
    fsyncs: int
    batch_writes_max: int
    entries_written: int
    bytes_written: int
    entries_deleted: int
    entries_rewritten: int
    groups_with_garbage: int
    queue_writes: int
    queue_bytes: int
    queue_writes_peak: int
    groups_open: int
    map_size_bytes: int
    map_used_bytes: int
    failed: bool


class LogStore:
    """The LMDB environment of one node and the writer thread that commits to it.

    Opening checks (or, for an empty environment, writes) the format record;
    raises :class:`StoreLayoutError` if the environment holds something else,
    and ``lmdb.Error`` if it cannot be opened (for example when it is already
    open in this process). Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size_bytes: int = store_map_size_bytes,
        queue_writes_max: int = writer_queue_writes_max,
        queue_bytes_max: int = writer_queue_bytes_max,
        batch_writes_max: int = writer_batch_writes_max,
        batch_bytes_max: int = writer_batch_bytes_max,
    ) -> None:
        env = lmdb.open(
            os.fspath(path), map_size=map_size_bytes, max_dbs=len(_DATABASES), subdir=True,
            sync=True, metasync=True, writemap=False, map_async=False,
            max_spare_txns=store_spare_read_txns_max,
        )
        try:
            self._env = _Environment(env)
            _check_format(self._env)
        except BaseException:
            env.close()
            raise
        self._committer = _Committer(self._env)
        self._writer: GroupCommit[_Job] = GroupCommit(
            self._committer.commit, name=f"lmdb-writer:{os.fspath(path)}",
            background=self._committer.has_garbage, queue_writes_max=queue_writes_max,
            queue_bytes_max=queue_bytes_max, batch_writes_max=batch_writes_max,
            batch_bytes_max=batch_bytes_max)
        self._logs: dict[int, GroupLog] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def group(self, group_id: int) -> GroupLog:
        """The view of an existing group (the same object on every call).

        Raises :class:`UnknownGroupError` if the group was never bootstrapped, and
        an invariant fails if its records are malformed.
        """
        _check_group_id(group_id)
        with self._lock:
            self._env.check_open()
            log = self._logs.get(group_id)
            if log is None:
                state = _load_state(self._env, group_id)
                log = GroupLog(self._env, self._writer, group_id, state)
                self._logs[group_id] = log
            return log

    def bootstrap(self, group_id: int, membership: Membership,
                  timeout_s: float | None = None) -> GroupLog:
        """Create a group: durably write its base snapshot (index 0, term 0, ``membership``)
        and a zero hard state, like ``MemoryStorage(membership)``. Returns its view.

        Raises :class:`GroupExistsError` if it exists, :class:`TimeoutError` (the group may
        still be created) and :class:`WriterFailedError`.
        """
        _check_group_id(group_id)
        base = Snapshot(SnapshotMeta(0, 0, membership))
        with self._lock:
            self._env.check_open()
            if group_id in self._logs or _group_exists(self._env, group_id):
                raise GroupExistsError(f"group {group_id} already exists")
            log = GroupLog(self._env, self._writer, group_id, _LogState(base, HardState(), 0))
            self._logs[group_id] = log
        log.save(HardState(), (), base)
        log.sync(timeout_s)
        return log

    def group_ids(self) -> list[int]:
        """Every group stored or being created, ascending."""
        self._env.check_open()
        stored: set[int] = set()
        with self._env.env.begin(db=self._env.meta) as txn:
            for key in txn.cursor().iternext(values=False):
                group, record = _KEY.unpack(key)
                if record == _META_SNAPSHOT:
                    stored.add(group)
        with self._lock:
            stored.update(self._logs)
        return sorted(stored)

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every write queued so far, by any group, is durable.

        Raises :class:`TimeoutError` and :class:`WriterFailedError`.
        """
        self._writer.flush(timeout_s)

    def statistics(self) -> LogStoreStatistics:
        """Counters of the writer and the environment (see :class:`LogStoreStatistics`)."""
        writer = self._writer.statistics()
        counters = self._committer.counters()
        map_size = used = 0
        if not self._env.closed:
            info = self._env.env.info()
            map_size = info["map_size"]
            used = (info["last_pgno"] + 1) * self._env.env.stat()["psize"]
        with self._lock:
            groups = len(self._logs)
        return LogStoreStatistics(
            writes=writer.writes_submitted, writes_committed=writer.writes_committed,
            transactions=counters["transactions"], fsyncs=counters["transactions"],
            batch_writes_max=writer.batch_writes_max,
            entries_written=counters["entries_written"], bytes_written=counters["bytes_written"],
            entries_deleted=counters["entries_deleted"],
            entries_rewritten=counters["entries_rewritten"],
            groups_with_garbage=counters["groups_with_garbage"],
            queue_writes=writer.queue_writes, queue_bytes=writer.queue_bytes,
            queue_writes_peak=writer.queue_writes_peak, groups_open=groups,
            map_size_bytes=map_size, map_used_bytes=used, failed=writer.failed)

    def close(self) -> None:
        """Commit the queued writes, stop the writer, close the environment. Idempotent.

        Views must not be used afterwards (LMDB reads raise :class:`WriterClosedError`).
        Raises :class:`WriterFailedError` if the writer had failed.
        """
        if self._env.closed:
            return
        try:
            self._writer.close()
        finally:
            self._env.closed = True
            self._env.env.close()


def _check_group_id(group_id: int) -> None:
    if not (isinstance(group_id, int) and 0 <= group_id <= group_id_max):
        raise ValueError(f"group id must be an integer in [0, {group_id_max}], got {group_id!r}")


def _check_format(env: _Environment) -> None:
    """Write the format record into an empty environment, or check the one there."""
    with env.env.begin(write=True, db=env.meta) as txn:
        value = txn.get(_FORMAT_KEY)
        if value is None:
            stored = sum(txn.stat(db)["entries"] for db in (env.log, env.meta, env.conf))
            if stored:
                raise StoreLayoutError("the environment holds records but no format record")
            txn.put(_FORMAT_KEY, _encode_format())
        elif bytes(value) != _encode_format():
            raise StoreLayoutError(f"unsupported log store format: {bytes(value)!r}")


def _group_exists(env: _Environment, group_id: int) -> bool:
    with env.env.begin(db=env.meta) as txn:
        return txn.get(_KEY.pack(group_id, _META_SNAPSHOT)) is not None


def _load_state(env: _Environment, group: int) -> _LogState:
    """Read a group's bounds from its records (raise :class:`UnknownGroupError` if absent)."""
    with env.env.begin() as txn:
        value = txn.get(_KEY.pack(group, _META_SNAPSHOT), db=env.meta)
        if value is None:
            raise UnknownGroupError(f"group {group} does not exist")
        snapshot = _decode_snapshot(group, value)
        value = txn.get(_KEY.pack(group, _META_HARD_STATE), db=env.meta)
        if value is None:
            unreachable("group has a snapshot but no hard state", group=group)
        hard_state = _decode_hard_state(group, value)
        base = snapshot.meta.index
        cursor = txn.cursor(db=env.log)
        positioned = cursor.prev() if cursor.set_range(_group_stop(group)) else cursor.last()
        if not positioned:
            return _LogState(snapshot, hard_state, base)
        stored_group, last = _KEY.unpack(cursor.key())
        if stored_group != group or last <= base:
            return _LogState(snapshot, hard_state, base)
        term = _decode_entry_term(group, last, cursor.value())
        invariant(cursor.set_key(_KEY.pack(group, base + 1)), "log does not start after its snapshot",
                  group=group, base=base, last=last)
        return _LogState(snapshot, hard_state, last, (last,), (term,))
