"""The log cleaner: retention and compaction for the partitions this node leads (the I/O shell).

Every ``cleaner_interval_ms`` the node calls :meth:`LogCleaner.tick`. For each
partition it leads — once it has applied an entry of its own term, so its
state holds every earlier leader's decisions — the cleaner does a bounded
amount of work and proposes at most one control record, then waits for that
record to be applied before the next (one decision in flight per partition):

* retention (``cleanup_policy`` has ``delete``):
  :func:`~millpond.node.retention.retention_point` on the batch index; a new
  log start becomes an ``ADVANCE_LOG_START`` record;
* compaction (``compact``): passes as :mod:`millpond.node.compaction`
  describes — index the dirty section's keys a chunk per round (all partitions
  share ``cleaner_read_bytes_max`` bytes of store reads per round), then
  propose one ``COMPACT`` step per round, walking from the log start to the
  pass's compaction point. A pass starts when the uncompacted (dirty) part
  holds ``compaction_dirty_percent_min`` of the bytes, when dirty records have
  waited ``compaction_dirty_wait_ms_max``, or when a kept tombstone expires.

What to delete and what to drop is decided here, once, on the leader; the
replicas only apply records, which is why they stay identical. The cleaner's
own state (the clean point, a pass in progress) is not replicated: a new
leader starts with a full pass, which drops nothing that is not due. A pass
whose step fails (leadership lost, proposal refused) is abandoned without
moving the clean point, so the clean part of the log always holds one record
per key — what :func:`~millpond.node.compaction.plan_step` relies on to
expire tombstones there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from millpond import errors, limits
from millpond.controller import TopicConfig, resolve_config
from millpond.node.compaction import KeyIndex, compaction_point, dirty_enough, plan_step
from millpond.node.partition import PartitionMachine
from millpond.node.partition_control import AdvanceLogStart, Compact, PartitionControl
from millpond.node.retention import retention_point
from millpond.raft import Role
from millpond.record_batch import KeyScan, scan_keys

__all__ = ["CleanerStatistics", "LogCleaner", "topic_config"]

log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch: record timestamps are wall-clock times."""
    return time.time_ns() // 1_000_000


@lru_cache(maxsize=4096)
def topic_config(explicit: tuple[tuple[str, str], ...]) -> TopicConfig:
    """The typed configuration of a topic whose stored keys are ``explicit`` (cached: read per produce)."""
    return resolve_config(dict(explicit))


@dataclass(frozen=True, slots=True)
class CleanerStatistics:
    """Counters of one node's log cleaner since start."""

    rounds: int
    log_start_advances: int
    compaction_steps: int
    passes_completed: int
    passes_abandoned: int
    records_dropped: int
    bytes_read: int


@dataclass(slots=True)
class _Pass:
    """A compaction pass in progress (see :mod:`millpond.node.compaction`)."""

    upto: int
    """The compaction point C (may shrink while indexing, if the keys would pass ``compaction_keys_max``)."""
    time_ms: int
    """T: the clock when the pass began; tombstones older than T - delete retention go."""
    dirty_start: int
    keys: KeyIndex
    cursor: int
    """Next offset to index (while ``indexing``), then the next offset to rewrite."""
    indexing: bool = True
    tombstone_due_ms: int | None = None


@dataclass(slots=True)
class _Cleaning:
    """The cleaner's state for one partition during one leadership (term)."""

    term: int
    pending: asyncio.Future[object] | None = None
    active: _Pass | None = None
    clean_upto: int = 0
    """End of this leader's last complete pass: below it the log holds one record per key."""
    tombstone_due_ms: int | None = None
    """When a tombstone the last pass kept becomes droppable (a pass is due then)."""
    dirty_since_ms: int | None = None
    """When uncompacted records were first seen waiting for a pass (too few to start one yet)."""


def _retrieve(future: asyncio.Future[object]) -> None:
    """Mark a failure as seen (an abandoned wait must not log "exception never retrieved")."""
    if not future.cancelled():
        future.exception()


@dataclass(slots=True)
class _Counters:
    rounds: int = 0
    log_start_advances: int = 0
    compaction_steps: int = 0
    passes_completed: int = 0
    passes_abandoned: int = 0
    records_dropped: int = 0
    bytes_read: int = 0


@dataclass(slots=True)
class LogCleaner:
    """Retention and compaction decisions for the partitions of ``partitions`` this node leads.

    ``partitions`` is the node's live map (group -> machine); only the node's event loop
    may call :meth:`tick`.
    """

    partitions: Mapping[int, PartitionMachine]
    clock_ms: Callable[[], int] = wall_clock_ms
    _states: dict[int, _Cleaning] = field(default_factory=dict)
    _counters: _Counters = field(default_factory=_Counters)

    def tick(self) -> None:
        """One round: bounded work for every partition led here (at most one proposal each)."""
        now = self.clock_ms()
        counters = self._counters
        counters.rounds += 1
        groups = sorted(self.partitions)
        if groups:  # rotate, so a busy partition cannot starve the others of the read budget
            start = counters.rounds % len(groups)
            groups = groups[start:] + groups[:start]
        budget = limits.cleaner_read_bytes_max
        for group in groups:
            machine = self.partitions.get(group)
            if machine is not None:
                budget -= self._clean(group, machine, now, max(budget, 0))
        for group in [g for g in self._states if g not in self.partitions]:
            del self._states[group]

    def statistics(self) -> CleanerStatistics:
        c = self._counters
        return CleanerStatistics(c.rounds, c.log_start_advances, c.compaction_steps, c.passes_completed,
                                 c.passes_abandoned, c.records_dropped, c.bytes_read)

    # -- one partition ------------------------------------------------------------------------
    def _clean(self, group: int, machine: PartitionMachine, now: int, budget: int) -> int:
        """Advance ``machine``'s cleaning; return the bytes read from the store."""
        raft = machine.replica.raft
        if raft.role != Role.LEADER or machine.replica.stopped:
            self._states.pop(group, None)
            return 0
        if raft.log.term(raft.log.applied) != raft.term:
            return 0  # not yet applied an entry of its own term: earlier decisions may be unapplied
        state = self._states.get(group)
        if state is None or state.term != raft.term:
            state = self._states[group] = _Cleaning(raft.term)
        if state.pending is not None:
            if not state.pending.done():
                return 0
            failed = state.pending.cancelled() or state.pending.exception() is not None
            state.pending = None
            if failed:
                self._abandon(state)
                return 0
        config = machine.config()
        if config.delete and self._retention(machine, state, config, now):
            return 0
        if config.compact:
            return self._compaction(machine, state, config, now, budget)
        return 0

    def _propose(self, machine: PartitionMachine, state: _Cleaning, record: PartitionControl) -> bool:
        try:
            index, term = machine.propose_control(record)
        except errors.MillpondError as exc:
            log.debug("%s/%d: control record not proposed: %s", machine.topic, machine.partition, exc)
            self._abandon(state)
            return False
        state.pending = machine.replica.wait_applied(index, term)
        state.pending.add_done_callback(_retrieve)
        return True

    def _abandon(self, state: _Cleaning) -> None:
        if state.active is not None:
            state.active = None
            self._counters.passes_abandoned += 1

    def _retention(self, machine: PartitionMachine, state: _Cleaning, config: TopicConfig,
                   now: int) -> bool:
        """Propose a new log start if one is due; True if a record was proposed."""
        bases, max_timestamps, sizes, total = machine.batch_index()
        point = retention_point(bases, max_timestamps, sizes, total, machine.high_watermark, now,
                                config.retention_ms, config.retention_bytes,
                                limits.retention_step_batches_max)
        if point is None or point <= machine.log_start_offset:
            return False
        if self._propose(machine, state, AdvanceLogStart(point)):
            self._counters.log_start_advances += 1
            return True
        return False

    def _compaction(self, machine: PartitionMachine, state: _Cleaning, config: TopicConfig,
                    now: int, budget: int) -> int:
        active = state.active
        if active is None:
            active = state.active = self._start_pass(machine, state, config, now)
            if active is None:
                return 0
        spent = 0
        if active.indexing:
            spent = self._index(machine, active, budget)
            if active.indexing:
                return spent  # more keys to read next round
        return spent + self._step(machine, state, active, config, budget - spent)

    def _start_pass(self, machine: PartitionMachine, state: _Cleaning, config: TopicConfig,
                    now: int) -> _Pass | None:
        """A new pass if the log has enough dirty bytes old enough to compact, or a tombstone is due."""
        bases, max_timestamps, sizes, _ = machine.batch_index()
        clean = max(state.clean_upto, machine.log_start_offset)
        clean_position = machine.position_of(clean)
        upto = compaction_point(bases, max_timestamps, machine.high_watermark, clean_position, now,
                                config.min_compaction_lag_ms)
        upto_position = machine.position_of(upto)
        dirty = sum(sizes[clean_position:upto_position])
        below = sum(sizes[:upto_position])
        if upto <= clean:
            state.dirty_since_ms = None
        elif state.dirty_since_ms is None:
            state.dirty_since_ms = now
        waited = state.dirty_since_ms is not None and \
            now - state.dirty_since_ms >= limits.compaction_dirty_wait_ms_max
        enough = dirty_enough(dirty, below, limits.compaction_dirty_percent_min)
        dirty_due = upto > clean and (waited or enough)
        tombstones_due = state.tombstone_due_ms is not None and now >= state.tombstone_due_ms
        if not dirty_due and not (tombstones_due and upto > machine.log_start_offset):
            return None
        state.dirty_since_ms = None
        upto = max(upto, clean)
        indexing = upto > clean  # else a pass for due tombstones only: straight to the rewrite walk
        return _Pass(upto=upto, time_ms=now, dirty_start=clean, keys=KeyIndex(limits.compaction_keys_max),
                     cursor=clean if indexing else machine.log_start_offset, indexing=indexing)

    def _index(self, machine: PartitionMachine, active: _Pass, budget: int) -> int:
        """Index the dirty section's keys, up to ``budget`` bytes; return the bytes read."""
        spent = 0
        while active.indexing and spent < budget:
            start = max(active.cursor, machine.log_start_offset)
            batches = machine.read_batches(start, active.upto, limits.compaction_step_batches_max,
                                           budget - spent)
            if not batches:
                active.indexing = False
                break
            for data in batches:
                spent += len(data)
                scan = scan_keys(data, verify=False)  # read back through the store's CRC
                if not active.keys.add(scan):
                    active.upto = scan.header.base_offset  # too many keys: this pass stops here
                    active.indexing = False
                    break
                active.cursor = scan.header.next_offset
            if active.cursor >= active.upto:
                active.indexing = False
        self._counters.bytes_read += spent
        if not active.indexing:
            active.cursor = machine.log_start_offset
        return spent

    def _step(self, machine: PartitionMachine, state: _Cleaning, active: _Pass, config: TopicConfig,
              budget: int) -> int:
        """Propose the pass's next step, or finish the pass; return the bytes read."""
        start = max(active.cursor, machine.log_start_offset)
        batches = machine.read_batches(start, active.upto, limits.compaction_step_batches_max,
                                       max(1, min(limits.compaction_step_bytes_max, budget)))
        scans: list[KeyScan] = []
        records = 0
        spent = 0
        for data in batches:
            scan = scan_keys(data, verify=False)
            if scans and records + scan.header.record_count > limits.compaction_step_records_max:
                break
            scans.append(scan)
            records += scan.header.record_count
            spent += len(data)
        self._counters.bytes_read += spent
        if not scans:  # walked up to C: every step of the pass has been applied
            state.clean_upto = active.upto
            state.tombstone_due_ms = active.tombstone_due_ms
            state.active = None
            self._counters.passes_completed += 1
            return spent
        plan = plan_step(scans, active.keys.latest, active.dirty_start, active.time_ms,
                         config.delete_retention_ms)
        end = scans[-1].header.next_offset
        active.cursor = end
        due = plan.tombstone_due_ms
        if due is not None and (active.tombstone_due_ms is None or due < active.tombstone_due_ms):
            active.tombstone_due_ms = due
        if plan.drops:
            step = Compact(active.upto, active.time_ms, scans[0].header.base_offset, end, plan.drops)
            if self._propose(machine, state, step):
                self._counters.compaction_steps += 1
                self._counters.records_dropped += plan.dropped
        return spent
