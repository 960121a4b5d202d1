"""The simulated cluster: nodes, network, virtual time and records, and the operations
the nemesis and the clients perform on them.

Node ids ``1..size`` start as the voters; ``spares`` more ids are nodes that
host no replica until a membership change adds them (then they start with an
empty log), so membership changes can move a group onto other nodes. The
cluster also follows the newest membership any node has applied (a committed
one), which operators act on: membership changes are planned from it, and once
the network heals, members are started and non-members stopped.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from millpond.raft.config import Config
from millpond.raft.membership import Membership
from millpond.raft.messages import Entry, EntryKind, Message
from millpond.raft.ready import Role
from millpond.raft.sim.faults import FaultModel
from millpond.raft.sim.history import History
from millpond.raft.sim.network import Network
from millpond.raft.sim.node import NodeEnvironment, SimNode
from millpond.raft.sim.scheduler import Scheduler
from millpond.raft.sim.trace import Trace, describe


class SafetyLost(Exception):
    """Two nodes applied different entries at one index, or two nodes lead one term.

    Raised the moment it happens, to end the run: nothing after a lost
    property is worth simulating. The checkers then find and report it in the
    history; this exception only stops the clock.
    """


@dataclass
class ClusterStatistics:
    """Counters of what the nemesis and the operators did."""

    partitions: int = 0
    crashes: int = 0
    writes_lost: int = 0
    restarts: int = 0
    transfers: int = 0
    membership_changes: int = 0


class Cluster:
    """Every node of one run plus the shared machinery; owns no policy (see nemesis, workload)."""

    def __init__(
        self, size: int, spares: int, faults: FaultModel, rng: random.Random, trace: Trace,
        bugs: frozenset[str], events_max: int,
    ) -> None:
        self.scheduler = Scheduler(events_max)
        self.history = History()
        self.trace = trace
        self.faults = faults
        self.statistics = ClusterStatistics()
        self.healed = False
        self.apply_listeners: list[Callable[[SimNode, Entry, bytes], None]] = []
        self.election_listeners: list[Callable[[SimNode], None]] = []
        self.vote_listeners: list[Callable[[SimNode], None]] = []
        self.first_commit_listeners: list[Callable[[SimNode], None]] = []
        self.network = Network(self.scheduler, random.Random(rng.getrandbits(64)), faults,
                               self._deliver, trace)
        environment = NodeEnvironment(
            self.scheduler, self.network, self.history, trace, faults, self._on_apply,
            on_elected=self._on_elected, on_vote_granted=self._on_vote_granted,
            on_first_commit=self._on_first_commit,
            ack_before_sync="ack-before-sync" in bugs,
        )
        initial = Membership.of(list(range(1, size + 1)))
        self.membership = initial
        self.membership_index = 0
        self._chain_at: dict[int, bytes] = {}
        self._leader_of_term: dict[int, int] = {}
        core_bugs = bugs - {"ack-before-sync"}
        self.nodes: dict[int, SimNode] = {}
        for node_id in range(1, size + spares + 1):
            config = Config(
                id=node_id, election_ticks=faults.election_ticks,
                heartbeat_ticks=faults.heartbeat_ticks, pre_vote=faults.pre_vote,
                check_quorum=faults.check_quorum, msg_entries_max=faults.msg_entries_max,
                msg_bytes_max=1024, inflight_msgs_max=faults.inflight_msgs_max,
                inflight_bytes_max=4096, uncommitted_bytes_max=16384, entry_bytes_max=256,
                propose_entries_max=8, read_requests_max=8, ready_committed_entries_max=16,
                bugs=core_bugs,
            )
            storage_membership = initial if node_id <= size else Membership()
            self.nodes[node_id] = SimNode(node_id, config, storage_membership,
                                          random.Random(rng.getrandbits(64)), environment)

    # ------------------------------------------------------------ views
    def ids(self) -> list[int]:
        """Every node id, ascending."""
        return list(self.nodes)

    def running(self) -> list[SimNode]:
        """Nodes that are up, by id."""
        return [node for node in self.nodes.values() if node.alive]

    def leaders(self) -> list[SimNode]:
        """Running nodes that believe they lead, by id (several during a partition)."""
        return [node for node in self.nodes.values() if node.is_leader()]

    def newest_leader(self) -> SimNode | None:
        """The running leader of the highest term, or None."""
        best: SimNode | None = None
        best_term = -1
        for node in self.nodes.values():
            raft = node.raft
            if raft is not None and raft.role is Role.LEADER and raft.term > best_term:
                best, best_term = node, raft.term
        return best

    # ------------------------------------------------------------ operations
    def start_members(self) -> None:
        """Boot every node of the initial membership (spares start when they are added)."""
        members = self.membership.members()
        for node in self.nodes.values():
            if node.id in members:
                node.start()

    def crash(self, node: SimNode, keep: int) -> None:
        """Crash ``node``; its storage keeps ``keep`` of its unsynced writes."""
        pending = node.storage.unsynced_writes()
        lost = node.crash(keep)
        self.statistics.crashes += 1
        self.statistics.writes_lost += lost
        if self.trace.enabled:
            self.trace.emit(self.scheduler.now,
                            f"crash n{node.id} kept {min(keep, pending)}/{pending} unsynced writes")

    def restart(self, node: SimNode) -> None:
        """Start a node that is down."""
        if not node.alive:
            self.statistics.restarts += 1
            node.start()

    def _deliver(self, message: Message) -> None:
        node = self.nodes[message.to]
        if not node.alive:
            if self.trace.enabled:
                self.trace.emit(self.scheduler.now, f"lost (n{message.to} down) {describe(message)}")
            return
        if self.trace.enabled:
            self.trace.emit(self.scheduler.now, f"deliver {describe(message)}")
        node.receive(message)

    def _on_apply(self, node: SimNode, entry: Entry, chain: bytes) -> None:
        if self._chain_at.setdefault(entry.index, chain) != chain:
            raise SafetyLost(f"node {node.id} applied a different entry at index {entry.index}")
        if entry.kind == EntryKind.CONFIG and entry.index > self.membership_index:
            self.membership = node.machine.membership
            self.membership_index = entry.index
            if self.trace.enabled:
                self.trace.emit(self.scheduler.now,
                                f"membership committed at {entry.index}: {self.membership}")
            if self.healed:
                self.scheduler.after(0, self.reconcile)
        for listener in self.apply_listeners:
            listener(node, entry, chain)

    def _on_elected(self, node: SimNode) -> None:
        if self._leader_of_term.setdefault(node.led_term, node.id) != node.id:
            raise SafetyLost(f"node {node.id} is a second leader of term {node.led_term}")
        for listener in self.election_listeners:
            listener(node)

    def _on_vote_granted(self, node: SimNode) -> None:
        for listener in self.vote_listeners:
            listener(node)

    def _on_first_commit(self, node: SimNode) -> None:
        for listener in self.first_commit_listeners:
            listener(node)

    def reconcile(self) -> None:
        """Operators, after the heal: run every member of the committed membership, stop the rest."""
        members = self.membership.members()
        for node in self.nodes.values():
            if node.id in members and not node.alive:
                self.restart(node)
            elif node.id not in members and node.alive:
                node.stop()
                if self.trace.enabled:
                    self.trace.emit(self.scheduler.now, f"stop n{node.id} (not a member)")
