"""The nemesis: partitions, crashes and operator actions, at seed-derived times.

Each kind of fault runs as its own chain of scheduled events (mean interval
from the :class:`FaultModel`; an interval of 0 disables it), so one seed fixes
when and what happens:

* **partitions**: a random split (symmetric), one node isolated, one node
  that can send but not receive or receive but not send (asymmetric), or
  random directed links cut; healed after a random duration;
* **crashes**: a node (the leader, with some probability) or, sometimes, a
  majority at once; each keeps a random number of its unsynced writes
  (``MemoryStorage.crash(keep)``) and restarts after a random downtime;
* **faults aimed at fragile moments**: a leader crashed or isolated a few
  milliseconds after its election (before its first entry is replicated:
  the "Figure 8" histories of the Raft paper), a leader crashed right after
  it applied its first commit of a term, and a node crashed just after it
  granted a vote (which must survive the crash);
* **leadership transfers** to a random voter;
* **membership changes** (single-server): add a spare as learner, promote a
  learner, remove a voter or a learner, demote a voter, keeping at least
  :data:`VOTERS_MIN` voters.

:meth:`Nemesis.stop` ends all of it; the heal phase then reconnects and
restarts everything.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from millpond.raft.errors import RaftError
from millpond.raft.membership import ChangeKind, ConfChange
from millpond.raft.sim.cluster import Cluster
from millpond.raft.sim.node import SimNode

VOTERS_MIN = 3
"""The nemesis never shrinks a group below this many voters."""


class Nemesis:
    """Schedules every fault of one run from ``rng``."""

    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        self._cluster = cluster
        self._rng = rng
        self._active = True
        faults = cluster.faults
        self._every(faults.partition_every_ms, self._partition)
        self._every(faults.crash_every_ms, self._crash)
        self._every(faults.transfer_every_ms, self._transfer)
        self._every(faults.membership_every_ms, self._change_membership)
        cluster.election_listeners.append(self._on_elected)
        cluster.vote_listeners.append(self._on_vote_granted)
        cluster.first_commit_listeners.append(self._on_first_commit)

    def stop(self) -> None:
        """No more faults; pending restarts and partition heals are left to the heal phase."""
        self._active = False

    def _every(self, mean_ms: int, action: Callable[[], None]) -> None:
        if mean_ms:
            self._cluster.scheduler.after(self._rng.randint(1, 2 * mean_ms), self._fire,
                                          mean_ms, action)

    def _fire(self, mean_ms: int, action: Callable[[], None]) -> None:
        if not self._active:
            return
        action()
        self._every(mean_ms, action)

    def _trace(self, text: str) -> None:
        cluster = self._cluster
        if cluster.trace.enabled:
            cluster.trace.emit(cluster.scheduler.now, text)

    # ------------------------------------------------------------ partitions
    def _partition(self) -> None:
        cluster, rng = self._cluster, self._rng
        if cluster.network.partitioned():
            return
        ids = cluster.ids()
        kind = rng.choice((0, 0, 1, 1, 1, 2, 3, 4))
        cut: set[tuple[int, int]] = set()
        if kind == 0:  # symmetric split into two sides
            side = set(rng.sample(ids, rng.randint(1, len(ids) - 1)))
            cut = {(a, b) for a in ids for b in ids if (a in side) != (b in side)}
            label = f"split {sorted(side)} | {sorted(set(ids) - side)}"
        elif kind == 1:  # isolate one node, preferably a leader
            leaders = cluster.leaders()
            victim = rng.choice(leaders).id if leaders and rng.random() < 0.7 else rng.choice(ids)
            cut = {(a, b) for a in ids for b in ids if a != b and victim in (a, b)}
            label = f"isolate n{victim}"
        elif kind == 2:  # deaf: hears nothing, is heard
            victim = rng.choice(ids)
            cut = {(a, victim) for a in ids if a != victim}
            label = f"n{victim} cannot receive"
        elif kind == 3:  # mute: is not heard, hears everything
            victim = rng.choice(ids)
            cut = {(victim, b) for b in ids if b != victim}
            label = f"n{victim} cannot send"
        else:  # random directed links
            cut = {(a, b) for a in ids for b in ids if a != b and rng.random() < 0.3}
            label = "cut " + ",".join(f"{a}->{b}" for a, b in sorted(cut))
        cluster.network.partition(cut)
        cluster.statistics.partitions += 1
        self._trace(f"partition {label}")
        longest = cluster.faults.partition_ms_max
        duration = rng.randint(longest // 4, longest)
        cluster.scheduler.after(duration, self._heal_partition)

    def _heal_partition(self) -> None:
        self._cluster.network.heal()
        self._trace("partition healed")

    # ------------------------------------------------------------ crashes
    def _crash(self) -> None:
        cluster, rng = self._cluster, self._rng
        running = cluster.running()
        if not running:
            return
        faults = cluster.faults
        if rng.random() < faults.crash_many_probability:
            victims = rng.sample(running, rng.randint(1, len(running)))
            victims.sort(key=lambda node: node.id)
        else:
            leaders = cluster.leaders()
            if leaders and rng.random() < faults.crash_leader_probability:
                victims = [rng.choice(leaders)]
            else:
                victims = [rng.choice(running)]
        for node in victims:
            self._crash_for_a_while(node)

    def _crash_for_a_while(self, node: SimNode) -> None:
        """Crash ``node`` keeping a random number of its unsynced writes; restart it later."""
        cluster, rng = self._cluster, self._rng
        keep = rng.randint(0, node.storage.unsynced_writes())
        cluster.crash(node, keep)
        downtime = rng.randint(1, cluster.faults.restart_ms_max)
        cluster.scheduler.after(downtime, self._restart, node, node.incarnation)

    def _on_elected(self, node: SimNode) -> None:
        faults, rng = self._cluster.faults, self._rng
        if not self._active:
            return
        if faults.crash_new_leader_probability and rng.random() < faults.crash_new_leader_probability:
            self._cluster.scheduler.after(rng.randint(0, faults.new_leader_fault_ms_max),
                                          self._crash_targeted,
                                          node, node.incarnation, "new leader")
        elif (faults.isolate_new_leader_probability
              and rng.random() < faults.isolate_new_leader_probability):
            self._cluster.scheduler.after(rng.randint(0, faults.new_leader_fault_ms_max),
                                          self._isolate_targeted,
                                          node, node.incarnation)

    def _on_first_commit(self, node: SimNode) -> None:
        probability = self._cluster.faults.crash_after_first_commit_probability
        if self._active and probability and self._rng.random() < probability:
            self._cluster.scheduler.after(0, self._crash_targeted, node, node.incarnation,
                                          "leader's first commit")

    def _isolate_targeted(self, node: SimNode, incarnation: int) -> None:
        cluster = self._cluster
        if not (self._active and node.incarnation == incarnation and node.is_leader()):
            return
        ids = cluster.ids()
        cluster.network.partition((a, b) for a in ids for b in ids if a != b and node.id in (a, b))
        cluster.statistics.partitions += 1
        self._trace(f"partition isolate n{node.id} (new leader)")
        cluster.scheduler.after(self._rng.randint(20, cluster.faults.partition_ms_max),
                                self._heal_partition)

    def _on_vote_granted(self, node: SimNode) -> None:
        probability = self._cluster.faults.crash_voter_probability
        if self._active and probability and self._rng.random() < probability:
            self._cluster.scheduler.after(self._rng.randint(0, 3), self._crash_targeted,
                                          node, node.incarnation, "voter")

    def _crash_targeted(self, node: SimNode, incarnation: int, reason: str) -> None:
        if self._active and node.incarnation == incarnation and node.alive:
            self._trace(f"targeted crash of n{node.id} ({reason})")
            self._crash_for_a_while(node)

    def _restart(self, node: SimNode, incarnation: int) -> None:
        if self._active and node.incarnation == incarnation:
            self._cluster.restart(node)

    # ------------------------------------------------------------ operators
    def _transfer(self) -> None:
        cluster, rng = self._cluster, self._rng
        leader = cluster.newest_leader()
        if leader is None or leader.raft is None:
            return
        voters = sorted(leader.raft.membership.voters - {leader.id})
        if not voters:
            return
        target = rng.choice(voters)
        try:
            leader.raft.transfer_leader(target)
        except RaftError as error:
            self._trace(f"transfer n{leader.id}->n{target} refused: {error}")
            return
        cluster.statistics.transfers += 1
        self._trace(f"transfer n{leader.id}->n{target}")
        leader.after_input()

    def _change_membership(self) -> None:
        cluster, rng = self._cluster, self._rng
        leader = cluster.newest_leader()
        if leader is None or leader.raft is None:
            return
        membership = leader.raft.membership
        voters, learners = sorted(membership.voters), sorted(membership.learners)
        outsiders = [node_id for node_id in cluster.ids() if node_id not in membership.members()]
        options = [ConfChange(ChangeKind.ADD_LEARNER, node) for node in outsiders]
        options += [ConfChange(ChangeKind.ADD_VOTER, node) for node in learners]
        options += [ConfChange(ChangeKind.REMOVE, node) for node in learners]
        if len(voters) > VOTERS_MIN:
            options += [ConfChange(ChangeKind.REMOVE, node) for node in voters]
            options += [ConfChange(ChangeKind.ADD_LEARNER, node) for node in voters]
        if not options:
            return
        change = rng.choice(options)
        try:
            index = leader.raft.propose_membership(change)
        except RaftError as error:
            self._trace(f"membership {change.kind.name} n{change.node} refused: {error}")
            return
        cluster.statistics.membership_changes += 1
        self._trace(f"membership {change.kind.name} n{change.node} proposed to n{leader.id} "
                    f"at index {index}")
        target = cluster.nodes[change.node]
        if not target.alive and change.kind != ChangeKind.REMOVE:
            cluster.restart(target)
        leader.after_input()
