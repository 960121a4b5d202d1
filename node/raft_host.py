"""The multi-raft driver: every Raft group of one node, one Ready loop, one group commit.

The host runs two tasks on the node's event loop:

* the **ticker** ticks every group each ``tick_ms``;
* the **Ready loop** repeatedly collects a Ready from every group that has
  one, then follows the Ready contract (``millpond.raft.ready``) for all of
  them together: their writes go to the LMDB writer in one group commit (one
  transaction, one fsync for all groups), then their messages go to the
  transport (coalesced per peer), then committed entries are applied, then
  each core is advanced.

While a round's writes are being made durable, incoming messages and new
proposals keep stepping into the cores; they form the next round. So the cost
of an fsync is shared by everything that arrived during the previous one, and
throughput rises with load instead of collapsing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from millpond import limits
from millpond.invariant import invariant
from millpond.node.raft_wire import from_proto, to_proto
from millpond.node.replica import Replica, StateMachine
from millpond.node.transport import RaftTransport
from millpond.raft import Config, Membership, Raft, Ready
from millpond.raft.lmdb_store import LogStore
from millpond.v1 import internal_pb2 as pb

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HostStatistics:
    """Counters of the Ready loop since start."""

    groups: int
    rounds: int
    readies: int
    entries_persisted: int
    entries_applied: int
    messages_sent: int
    messages_unroutable: int


class RaftHost:
    """Hosts the Raft groups of one node. Only the node's event loop may call it."""

    def __init__(self, node_id: int, store: LogStore, tick_ms: int = limits.raft_tick_ms,
                 election_ticks: int = limits.raft_election_ticks, seed: int | None = None) -> None:
        self.node_id = node_id
        self._store = store
        self._tick_ms = tick_ms
        self._election_ticks = election_ticks
        self._rng = random.Random(seed)
        self._replicas: dict[int, Replica] = {}
        self._dirty: set[int] = set()
        self._wake = asyncio.Event()
        self._transport: RaftTransport | None = None
        self._stats = dict.fromkeys(("rounds", "readies", "entries_persisted", "entries_applied",
                                     "messages_sent", "messages_unroutable"), 0)

    def attach(self, transport: RaftTransport) -> None:
        """Use ``transport`` for outgoing messages (set once, before :meth:`run`)."""
        self._transport = transport

    # -- groups ----------------------------------------------------------------------
    async def add_group(self, group: int, membership: Membership,
                        machine_factory: Callable[[Replica], StateMachine],
                        **config_overrides: object) -> Replica:
        """Host ``group``: open its log (creating it with ``membership`` if it is new) and
        start its core. A group that exists on disk keeps its stored membership."""
        invariant(group not in self._replicas, "group hosted twice", group=group)
        if group in self._store.group_ids():
            group_log = self._store.group(group)
        else:
            group_log = await asyncio.to_thread(self._store.bootstrap, group, membership)
        config = Config(id=self.node_id, election_ticks=self._election_ticks,
                        **config_overrides)  # type: ignore[arg-type]
        raft = Raft(config, group_log, self._rng)
        replica = Replica(group, raft, group_log, lambda: self.mark(group))
        replica.machine = machine_factory(replica)
        self._replicas[group] = replica
        self.mark(group)
        return replica

    def remove_group(self, group: int) -> None:
        """Stop hosting ``group`` (its data stays on disk)."""
        replica = self._replicas.pop(group, None)
        if replica is not None:
            replica.stop()
            self._dirty.discard(group)

    def replica(self, group: int) -> Replica | None:
        return self._replicas.get(group)

    def groups(self) -> list[int]:
        return sorted(self._replicas)

    # -- inputs ------------------------------------------------------------------------
    def mark(self, group: int) -> None:
        """``group``'s core has new work: include it in the next round."""
        self._dirty.add(group)
        self._wake.set()

    def deliver(self, sender: int, messages: list[pb.RaftMessage]) -> None:
        """Step messages received from ``sender`` into their groups' cores."""
        for proto in messages:
            try:
                group, message = from_proto(proto)
            except ValueError as exc:
                log.warning("dropping malformed raft message from node %d: %s", sender, exc)
                continue
            replica = self._replicas.get(group)
            if replica is None or message.to != self.node_id or message.frm != sender:
                continue  # a group we do not (yet) host, or a misrouted message
            replica.raft.step(message)
            self._dirty.add(group)
        self._wake.set()

    # -- the loops ---------------------------------------------------------------------
    async def run(self) -> None:
        """Run the ticker and the Ready loop until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._ticker(), name="raft-ticker")
            tasks.create_task(self._ready_loop(), name="raft-ready")

    async def _ticker(self) -> None:
        interval = self._tick_ms / 1000
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            next_tick += interval
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            for group, replica in self._replicas.items():
                replica.raft.tick()
                self._dirty.add(group)
            self._wake.set()

    async def _ready_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._round()

    async def _round(self) -> None:
        dirty, self._dirty = self._dirty, set()
        batch: list[tuple[Replica, Ready]] = []
        for group in sorted(dirty):
            replica = self._replicas.get(group)
            if replica is not None and replica.raft.has_ready():
                batch.append((replica, replica.raft.ready()))
        if not batch:
            return
        self._stats["rounds"] += 1
        self._stats["readies"] += len(batch)
        # Rule 1: persist everything of this round, durably, in one group commit. A Ready
        # whose only change is the commit index is not written at all: Raft can relearn the
        # commit index after a restart, and every LMDB commit costs an fsync that would sit
        # on the acks=all path. The stored commit index is refreshed with the next write.
        writes = [
            replica.log.write(rd.hard_state, rd.entries, rd.snapshot)
            for replica, rd in batch
            if rd.must_sync or rd.entries or rd.snapshot is not None
        ]
        if writes:
            await asyncio.gather(*writes)
        # Rule 2: then send.
        self._send(batch)
        # Rules 3-5: apply, settle waiters, advance.
        for replica, rd in batch:
            self._stats["entries_persisted"] += len(rd.entries)
            self._stats["entries_applied"] += len(rd.committed_entries)
            if replica.stopped:
                replica.raft.advance(rd)
                continue
            replica.persisted(rd)
            replica.apply(rd)
            replica.raft.advance(rd)
            if replica.raft.has_ready():
                self._dirty.add(replica.group)
        if self._dirty:
            self._wake.set()

    def _send(self, batch: list[tuple[Replica, Ready]]) -> None:
        outgoing: dict[int, list[pb.RaftMessage]] = defaultdict(list)
        for replica, rd in batch:
            for message in rd.messages:
                outgoing[message.to].append(to_proto(replica.group, message))
                self._stats["messages_sent"] += 1
        if self._transport is None:
            self._stats["messages_unroutable"] += sum(len(m) for m in outgoing.values())
            return
        self._transport.send(outgoing)

    async def close(self) -> None:
        """Stop every replica (failing their waiters)."""
        for group in list(self._replicas):
            self.remove_group(group)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._store.flush)

    def statistics(self) -> HostStatistics:
        return HostStatistics(groups=len(self._replicas), **self._stats)
