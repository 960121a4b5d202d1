"""The clients: proposals and read barriers sent throughout the run, and commit reports.

Each of a few closed-loop clients proposes a small batch to a node that
believes it leads (now and then to any node: ``NotLeader`` and
``ProposalDropped`` are normal answers), waits until it is told the batch
committed or until :data:`PROPOSAL_TIMEOUT_MS` passes, thinks, and proposes
again. Bounding what clients have outstanding keeps logs short enough that a
healed cluster catches up within the liveness bound, as backpressure would in
a real system.

A client remembers the ``(index, term)`` that ``propose`` returned. When that
node applies an entry at that index *with that term*, the write is reported
committed: a :class:`CommitReported` record, which durability and read
linearizability are checked against. An entry of another term there means the
proposal was lost (overwritten by a newer leader) and nothing is reported. A
node that crashes forgets its clients' pending proposals: their outcome is
unknown.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from millpond.invariant import unreachable
from millpond.raft.errors import RaftError
from millpond.raft.messages import Entry
from millpond.raft.sim.cluster import Cluster
from millpond.raft.sim.history import CommitReported, ReadRequested
from millpond.raft.sim.node import SimNode

CLIENTS_MAX = 2
"""Closed-loop clients per run (each run draws 1..this many)."""

PROPOSAL_ENTRIES_MAX = 3
"""Entries in one client proposal."""

PROPOSAL_TIMEOUT_MS = 300
"""A client that heard nothing about its proposal for this long gives up on it."""

PAYLOAD_PADDING_BYTES_MAX = 48
"""Random padding added to a proposal's unique payload, to vary entry sizes."""


@dataclass
class _Pending:
    """A proposed entry awaiting application by the node it was proposed to."""

    term: int
    proposed_at_ms: int
    client: int
    last_of_batch: bool


class Workload:
    """Proposes and reads at seed-derived times; reports commits into the history."""

    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        self._cluster = cluster
        self._rng = rng
        self.proposing = True
        self.proposals = 0
        self.commits_reported = 0
        self.reads = 0
        self.highest_reported_index = 0
        self.newest_reported_proposal_ms = -1
        self._counter = 0
        self._pending: dict[int, dict[int, _Pending]] = {node: {} for node in cluster.ids()}
        self._incarnations: dict[int, int] = dict.fromkeys(cluster.ids(), 0)
        self._client_turn: list[int] = []
        cluster.apply_listeners.append(self._on_apply)
        faults = cluster.faults
        for client in range(rng.randint(1, CLIENTS_MAX)):
            self._client_turn.append(0)
            self._schedule_client(client, rng.randint(1, faults.propose_every_ms))
        if faults.read_every_ms:
            cluster.scheduler.after(rng.randint(1, faults.read_every_ms), self._read_event)

    # ------------------------------------------------------------ proposals
    def _schedule_client(self, client: int, delay_ms: int) -> None:
        """Give ``client`` its next turn in ``delay_ms``; any earlier scheduled turn is void."""
        self._client_turn[client] += 1
        self._cluster.scheduler.after(delay_ms, self._client_event, client,
                                      self._client_turn[client])

    def _target(self) -> SimNode | None:
        cluster, rng = self._cluster, self._rng
        leaders = cluster.leaders()
        if leaders and rng.random() < 0.95:
            return rng.choice(leaders)
        running = cluster.running()
        return rng.choice(running) if running else None

    def _client_event(self, client: int, turn: int) -> None:
        if turn != self._client_turn[client] or not self.proposing:
            return
        rng = self._rng
        think_ms = rng.randint(1, 2 * self._cluster.faults.propose_every_ms)
        node = self._target()
        if node is None or node.raft is None:
            self._schedule_client(client, think_ms)
            return
        count = rng.randint(1, PROPOSAL_ENTRIES_MAX)
        payloads = []
        for _ in range(count):
            self._counter += 1
            payloads.append(b"p%d." % self._counter + b"x" * rng.randint(0, PAYLOAD_PADDING_BYTES_MAX))
        try:
            last = node.raft.propose(payloads)
        except RaftError:
            self._schedule_client(client, think_ms)
            return
        self.proposals += count
        pending = self._pending_of(node)
        term, now = node.raft.term, self._cluster.scheduler.now
        for index in range(last - count + 1, last + 1):
            pending[index] = _Pending(term, now, client, index == last)
        self._schedule_client(client, PROPOSAL_TIMEOUT_MS)
        node.after_input()

    def _pending_of(self, node: SimNode) -> dict[int, _Pending]:
        """Pending proposals of ``node``'s current incarnation (a crash forgets them)."""
        if self._incarnations[node.id] != node.incarnation:
            self._incarnations[node.id] = node.incarnation
            self._pending[node.id] = {}
        return self._pending[node.id]

    def _on_apply(self, node: SimNode, entry: Entry, chain: bytes) -> None:
        pending = self._pending_of(node)
        if not pending:
            return
        proposal = pending.pop(entry.index, None)
        if proposal is None or proposal.term != entry.term:
            return
        self.commits_reported += 1
        self.highest_reported_index = max(self.highest_reported_index, entry.index)
        self.newest_reported_proposal_ms = max(self.newest_reported_proposal_ms,
                                               proposal.proposed_at_ms)
        cluster = self._cluster
        cluster.history.client_events.append(CommitReported(
            cluster.scheduler.now, node.id, entry.index, entry.term, chain, proposal.proposed_at_ms))
        if cluster.trace.enabled:
            cluster.trace.emit(cluster.scheduler.now,
                               f"commit reported n{node.id} index={entry.index} term={entry.term}")
        if proposal.last_of_batch:
            self._schedule_client(
                proposal.client, self._rng.randint(1, 2 * cluster.faults.propose_every_ms))

    # ------------------------------------------------------------ reads
    def _read_event(self) -> None:
        if not self.proposing:
            return
        cluster, rng = self._cluster, self._rng
        leaders = cluster.leaders()
        if leaders:
            node = rng.choice(leaders)
            raft = node.raft
            if raft is None:
                unreachable("a leader without a running core", node=node.id)
            self._counter += 1
            try:
                raft.read_index(self._counter)
            except RaftError:
                pass
            else:
                self.reads += 1
                cluster.history.client_events.append(
                    ReadRequested(cluster.scheduler.now, node.id, self._counter))
                node.after_input()
        cluster.scheduler.after(rng.randint(1, 2 * cluster.faults.read_every_ms), self._read_event)
