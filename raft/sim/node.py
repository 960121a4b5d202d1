"""One simulated node: a Raft core, its MemoryStorage and state machine, and the driver
that moves Readies between them following the Ready contract.

The driver (``_pump``/``_finish``) does, per Ready (:mod:`millpond.raft.ready`):

1. ``storage.save(hard_state, entries, snapshot)``; if ``must_sync``, the sync
   takes virtual time (``disk_sync_ms_max``) and nothing else of this Ready
   happens until it completes. Meanwhile the node keeps stepping messages and
   ticking (allowed by rule 5), but takes no new Ready.
2. send the messages; 3. install the snapshot, then apply committed entries to
   the :class:`ChainStateMachine`; 4. hand out read states; 5. ``advance``.

Then, now and then, it compacts its log at the applied index, so lagging
followers must be sent snapshots.

A crash throws away the core and the state machine, and makes the storage
lose a random suffix of its unsynced writes; a restart rebuilds both from
what storage kept (``Config(applied=snapshot index)``: the core hands the
committed entries after the snapshot out again).

The ``ack-before-sync`` defect (see :data:`millpond.raft.config.KNOWN_BUGS`)
lives here: the driver sends, applies and advances right after ``save`` and
syncs only later, so a crash can lose entries it already acknowledged.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from millpond.invariant import unreachable
from millpond.raft.config import Config
from millpond.raft.core import Raft
from millpond.raft.membership import Membership
from millpond.raft.messages import Entry, Message, MessageType
from millpond.raft.ready import Ready, Role
from millpond.raft.sim.faults import TICK_MS, FaultModel
from millpond.raft.sim.history import Applied, History, LeaderElected, ReadAnswered
from millpond.raft.sim.network import Network
from millpond.raft.sim.scheduler import Scheduler
from millpond.raft.sim.state_machine import ChainStateMachine
from millpond.raft.sim.trace import Trace, describe
from millpond.raft.storage import MemoryStorage

ApplyListener = Callable[["SimNode", Entry, bytes], None]
"""Called after a node applies an entry, with the new chain digest (clients learn commits)."""

NodeListener = Callable[["SimNode"], None]
"""Called at a moment of interest in a node's life: elected leader, sent a granted vote,
applied its first commit as leader of a term."""


@dataclass
class NodeEnvironment:
    """What every simulated node shares: time, network, records, trace, faults, listeners."""

    scheduler: Scheduler
    network: Network
    history: History
    trace: Trace
    faults: FaultModel
    on_apply: ApplyListener
    on_elected: NodeListener
    on_vote_granted: NodeListener
    on_first_commit: NodeListener
    ack_before_sync: bool = False


class SimNode:
    """A node that can run, crash and restart; ``raft`` is None while it is down."""

    def __init__(
        self, node_id: int, config: Config, membership: Membership, rng: random.Random,
        environment: NodeEnvironment,
    ) -> None:
        self.id = node_id
        self.storage = MemoryStorage(membership)
        self.raft: Raft | None = None
        self.machine = ChainStateMachine(self.storage.snapshot())
        self.incarnation = 0
        self.snapshots_sent = 0
        self.led_term = 0
        """The latest term this node was leader of (0: never)."""
        self._config = config
        self._rng = rng
        self._env = environment
        self._tick_ms = TICK_MS - 1 + rng.randint(0, 2)  # clocks drift a little
        self._pending: Ready | None = None
        self._lazy_sync_scheduled = False
        self._committed_as_leader_term = 0

    @property
    def alive(self) -> bool:
        """True while the node runs."""
        return self.raft is not None

    def is_leader(self) -> bool:
        """True if the node runs and believes it leads."""
        return self.raft is not None and self.raft.role is Role.LEADER

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Boot (or reboot) from whatever the storage holds."""
        env = self._env
        snapshot = self.storage.snapshot()
        config = replace(self._config, applied=snapshot.meta.index)
        self.incarnation += 1
        self.raft = Raft(config, self.storage, random.Random(self._rng.getrandbits(64)))
        self.machine = ChainStateMachine(snapshot)
        self._pending = None
        self._lazy_sync_scheduled = False
        if snapshot.meta.index:
            self._record_applied(snapshot.meta.index, snapshot.meta.term, from_snapshot=True)
        if env.trace.enabled:
            hard = self.storage.initial_state()
            env.trace.emit(env.scheduler.now,
                           f"start n{self.id} term={hard.term} vote={hard.vote} commit={hard.commit} "
                           f"snapshot={snapshot.meta.index} last={self.storage.last_index()}")
        env.scheduler.after(self._rng.randint(1, self._tick_ms), self._on_tick, self.incarnation)
        self._pump()

    def crash(self, keep: int) -> int:
        """Stop now; storage keeps only the first ``keep`` unsynced writes. Returns writes lost."""
        lost = max(0, self.storage.unsynced_writes() - keep)
        self.storage.crash(keep)
        self.raft = None
        self._pending = None
        self.incarnation += 1
        return lost

    def stop(self) -> None:
        """Shut down cleanly: every write is synced first."""
        self.storage.sync()
        self.crash(0)

    # ------------------------------------------------------------ inputs
    def _on_tick(self, incarnation: int) -> None:
        if incarnation != self.incarnation or self.raft is None:
            return
        self.raft.tick()
        self.after_input()
        self._env.scheduler.after(self._tick_ms, self._on_tick, incarnation)

    def receive(self, message: Message) -> None:
        """Step a message that arrived from the network."""
        raft = self.raft
        if raft is None:
            return
        raft.step(message)
        self.after_input()

    def after_input(self) -> None:
        """Record a new leadership and run the driver; call after every input to the core."""
        raft = self.raft
        if raft is None:
            return
        if raft.role is Role.LEADER and raft.term != self.led_term:
            self.led_term = raft.term
            self._record_election(raft)
            self._env.on_elected(self)
        self._pump()

    # ------------------------------------------------------------ the driver
    def _pump(self) -> None:
        raft = self.raft
        env = self._env
        while raft is not None and self._pending is None and raft.has_ready():
            rd = raft.ready()
            if rd.soft_state is not None and env.trace.enabled:
                env.trace.emit(env.scheduler.now, f"n{self.id} is {rd.soft_state.role.value} "
                               f"term={raft.term} lead={rd.soft_state.lead}")
            self.storage.save(rd.hard_state, rd.entries, rd.snapshot)
            if env.ack_before_sync:
                if rd.must_sync and not self._lazy_sync_scheduled:
                    self._lazy_sync_scheduled = True
                    env.scheduler.after(self._rng.randint(1, env.faults.lazy_sync_ms_max),
                                        self._on_lazy_sync, self.incarnation)
                self._finish(rd)
                raft = self.raft
                continue
            if rd.must_sync:
                self._pending = rd
                env.scheduler.after(self._rng.randint(1, env.faults.disk_sync_ms_max),
                                    self._on_synced, self.incarnation)
                return
            self._finish(rd)
            raft = self.raft

    def _on_synced(self, incarnation: int) -> None:
        if incarnation != self.incarnation or self._pending is None:
            return
        self.storage.sync()
        rd, self._pending = self._pending, None
        self._finish(rd)
        self._pump()

    def _on_lazy_sync(self, incarnation: int) -> None:
        if incarnation == self.incarnation:
            self._lazy_sync_scheduled = False
            self.storage.sync()

    def _finish(self, rd: Ready) -> None:
        """Rules 2-5 of the Ready contract, once the Ready's writes are (or, buggy, are not) durable."""
        raft = self.raft
        if raft is None:
            unreachable("a Ready finished on a node that is down", node=self.id)
        env = self._env
        network = env.network
        trace = env.trace
        vote_granted = False
        for message in rd.messages:
            if message.type is MessageType.SNAPSHOT:
                self.snapshots_sent += 1
            elif message.type is MessageType.VOTE_RESP and not message.reject:
                vote_granted = True
            if not network.send(message):
                if message.type is MessageType.SNAPSHOT:
                    raft.report_snapshot(message.to, ok=False)
                else:
                    raft.report_unreachable(message.to)
            elif trace.enabled:
                trace.emit(env.scheduler.now, f"send {describe(message)}")
        machine = self.machine
        if rd.snapshot is not None:
            machine.restore(rd.snapshot)
            self._record_applied(rd.snapshot.meta.index, rd.snapshot.meta.term, from_snapshot=True)
        applied = env.history.applied
        now = env.scheduler.now
        on_apply = env.on_apply
        for entry in rd.committed_entries:
            chain = machine.apply(entry)
            applied.append(Applied(now, self.id, entry.index, entry.term, chain, raft.term))
            on_apply(self, entry, chain)
        if rd.committed_entries and trace.enabled:
            trace.emit(now, f"n{self.id} applied {rd.committed_entries[0].index}.."
                       f"{rd.committed_entries[-1].index} chain={machine.chain.hex()[:8]}")
        for read in rd.read_states:
            env.history.client_events.append(ReadAnswered(now, self.id, read.context, read.index))
            if trace.enabled:
                trace.emit(now, f"n{self.id} read {read.context} at index {read.index}")
        raft.advance(rd)
        if rd.committed_entries:
            self._maybe_compact()
        if vote_granted:
            env.on_vote_granted(self)
        if rd.committed_entries and raft.role is Role.LEADER \
                and self._committed_as_leader_term != raft.term:
            self._committed_as_leader_term = raft.term
            env.on_first_commit(self)

    def _maybe_compact(self) -> None:
        probability = self._env.faults.compact_probability
        if not probability or self._rng.random() >= probability:
            return
        index = self.machine.applied_index
        if index <= self.storage.snapshot().meta.index:
            return
        self.storage.compact(self.machine.snapshot(self.storage.term(index)))
        if self._env.trace.enabled:
            self._env.trace.emit(self._env.scheduler.now, f"n{self.id} compacted to {index}")

    # ------------------------------------------------------------ records
    def _record_applied(self, index: int, term: int, from_snapshot: bool) -> None:
        raft = self.raft
        if raft is None:
            unreachable("a snapshot installed on a node that is down", node=self.id)
        env = self._env
        env.history.applied.append(Applied(env.scheduler.now, self.id, index, term,
                                           self.machine.chain, raft.term, from_snapshot))
        if env.trace.enabled:
            env.trace.emit(env.scheduler.now, f"n{self.id} installed snapshot {index}/{term} "
                           f"chain={self.machine.chain.hex()[:8]}")

    def _record_election(self, raft: Raft) -> None:
        env = self._env
        log = raft.log
        first = log.first_index()
        snapshot_term = log.term(first - 1) or 0
        entries = tuple(log.slice(first, log.last_index() + 1, 1 << 62))
        env.history.elections.append(
            LeaderElected(env.scheduler.now, self.id, raft.term, first - 1, snapshot_term, entries))
        if env.trace.enabled:
            env.trace.emit(env.scheduler.now, f"n{self.id} elected leader term={raft.term} "
                           f"last={log.last_index()} commit={log.committed}")
