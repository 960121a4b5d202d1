"""One simulated run: a seed in, a verdict out.

A run has two phases on one virtual clock:

1. **faults** (``steps`` ticks of :data:`TICK_MS`): clients propose and read
   while the nemesis partitions, crashes, transfers leadership and changes
   membership, and nodes compact their logs;
2. **heal**: the network is made whole (no cuts, losses or duplicates), every
   member is started and every non-member stopped. Clients keep proposing
   until one proposal made after the heal commits (liveness, within
   :data:`LIVENESS_BOUND_MS`), then the run waits until every member has
   applied every reported commit (durability, within
   :data:`CONVERGENCE_BOUND_MS`).

Then the checkers (:mod:`millpond.raft.sim.checkers`) judge the history. An
``InvariantViolation`` (or any other exception) raised by the core ends the run
and counts as a violation.

Every random choice comes from ``random.Random(seed)`` through generators
split off it in a fixed order, and nothing iterates a set or dict in hash
order, so a seed replays exactly.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from millpond.invariant import InvariantViolation, unreachable
from millpond.raft.config import KNOWN_BUGS
from millpond.raft.sim import checkers
from millpond.raft.sim.checkers import Violation
from millpond.raft.sim.cluster import Cluster, SafetyLost
from millpond.raft.sim.faults import TICK_MS, FaultModel
from millpond.raft.sim.history import LogImage
from millpond.raft.sim.nemesis import Nemesis
from millpond.raft.sim.scheduler import EventBudgetExhausted
from millpond.raft.sim.trace import Trace
from millpond.raft.sim.workload import Workload

STEPS_DEFAULT = 300
"""Ticks in the fault phase by default (3 virtual seconds)."""

LIVENESS_BOUND_MS = 3000
"""After the heal, some new proposal must commit within this much virtual time."""

CONVERGENCE_BOUND_MS = 3000
"""After that, every member must have applied every reported commit within this much."""

EVENTS_PER_NODE_TICK_MAX = 40
"""Event budget of a run, per node id per fault-phase tick: about ten times what runs use.
A run past it has a message storm or a livelock (reported as a ``runaway`` violation)."""

CHECKPOINTS = 3
"""Times during the fault phase the stored logs are captured for the log-matching check."""


@dataclass(frozen=True)
class SimulationOptions:
    """What a run simulates; with the seed it determines the whole run."""

    nodes: int = 3
    steps: int = STEPS_DEFAULT
    bug: str | None = None

    def spares(self) -> int:
        """Idle node ids beyond the initial voters, for membership changes to move to."""
        return 1 if self.nodes <= 3 else 2

    def validate(self) -> None:
        """Raise ``ValueError`` for options no run can honour."""
        if self.nodes < 1:
            raise ValueError("nodes must be >= 1")
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if self.bug is not None and self.bug not in KNOWN_BUGS:
            raise ValueError(f"unknown bug {self.bug!r}; known: {', '.join(sorted(KNOWN_BUGS))}")


@dataclass(frozen=True)
class RunStatistics:
    """Counts of what one run (or, summed, many) did."""

    elections: int = 0
    proposals: int = 0
    commits: int = 0
    reads: int = 0
    messages: int = 0
    drops: int = 0
    cuts: int = 0
    duplicates: int = 0
    delays: int = 0
    partitions: int = 0
    crashes: int = 0
    writes_lost: int = 0
    transfers: int = 0
    membership_changes: int = 0
    snapshots: int = 0
    virtual_ms: int = 0

    def __add__(self, other: RunStatistics) -> RunStatistics:
        return RunStatistics(**{
            field.name: getattr(self, field.name) + getattr(other, field.name)
            for field in fields(self)
        })

    def as_dict(self) -> dict[str, int]:
        """Field name -> count, in declaration order."""
        return asdict(self)


@dataclass(frozen=True)
class SeedResult:
    """The verdict on one seed."""

    seed: int
    violations: tuple[Violation, ...]
    statistics: RunStatistics


def simulate(
    seed: int, options: SimulationOptions, trace_sink: Callable[[str], None] | None = None
) -> SeedResult:
    """Run one seed and check it; ``trace_sink`` receives every trace line if given."""
    options.validate()
    rng = random.Random(seed)
    faults = FaultModel.draw(random.Random(rng.getrandbits(64)))
    trace = Trace(trace_sink)
    bugs = frozenset({options.bug}) if options.bug else frozenset()
    if trace.enabled:
        trace.emit(0, f"seed={seed} nodes={options.nodes} steps={options.steps} "
                      f"bug={options.bug or '-'} {faults}")
    node_ids = options.nodes + options.spares()
    cluster = Cluster(options.nodes, options.spares(), faults, random.Random(rng.getrandbits(64)),
                      trace, bugs, events_max=EVENTS_PER_NODE_TICK_MAX * node_ids * options.steps)
    nemesis = Nemesis(cluster, random.Random(rng.getrandbits(64)))
    workload = Workload(cluster, random.Random(rng.getrandbits(64)))
    run = _Run(cluster, nemesis, workload)
    violations: list[Violation] = []
    lost: SafetyLost | None = None
    try:
        run.execute(options.steps * TICK_MS)
    except SafetyLost as error:
        lost = error  # the checkers below find and explain it in the history
        trace.emit(cluster.scheduler.now, f"stopping: {error}")
    except EventBudgetExhausted as error:
        violations.append(Violation("runaway", f"{error}: a message storm or a livelock"))
    except InvariantViolation as error:
        violations.append(Violation("invariant", str(error)))
        _trace_exception(trace, cluster)
    except Exception as error:  # a crash of the core is a finding, not a simulator failure
        violations.append(Violation("exception", f"{type(error).__name__}: {error}"))
        _trace_exception(trace, cluster)
    violations += run.check(aborted=lost is not None or bool(violations))
    if lost is not None and not violations:
        violations.append(Violation("safety", str(lost)))
    for violation in violations:
        trace.emit(cluster.scheduler.now, f"VIOLATION {violation}")
    return SeedResult(seed, tuple(violations), run.statistics())


def _trace_exception(trace: Trace, cluster: Cluster) -> None:
    if trace.enabled:
        for line in traceback.format_exc().rstrip().splitlines():
            trace.emit(cluster.scheduler.now, line)


class _Run:
    """The phases of one run and the collection of its evidence."""

    def __init__(self, cluster: Cluster, nemesis: Nemesis, workload: Workload) -> None:
        self.cluster = cluster
        self.nemesis = nemesis
        self.workload = workload
        self.converged = False

    def execute(self, fault_phase_ms: int) -> None:
        cluster = self.cluster
        scheduler = cluster.scheduler
        for number in range(1, CHECKPOINTS + 1):
            scheduler.at(fault_phase_ms * number // (CHECKPOINTS + 1), self._checkpoint)
        cluster.start_members()
        scheduler.run_until(fault_phase_ms)
        self._heal()
        scheduler.after(TICK_MS, self._check_progress)
        scheduler.run_until(scheduler.now + LIVENESS_BOUND_MS + CONVERGENCE_BOUND_MS,
                            done=lambda: self.converged)

    def _heal(self) -> None:
        cluster = self.cluster
        self.nemesis.stop()
        cluster.network.heal()
        cluster.network.faults = cluster.faults.healed()
        cluster.healed = True
        cluster.history.healed_at_ms = cluster.scheduler.now
        if cluster.trace.enabled:
            cluster.trace.emit(cluster.scheduler.now, "heal: network whole, members started")
        cluster.reconcile()

    def _check_progress(self) -> None:
        cluster = self.cluster
        workload = self.workload
        healed_at = cluster.history.healed_at_ms
        if healed_at is None:
            unreachable("progress checked before the heal")
        if workload.proposing:
            if workload.newest_reported_proposal_ms >= healed_at:
                workload.proposing = False
        else:
            target = workload.highest_reported_index
            members = cluster.membership.members()
            self.converged = all(
                cluster.nodes[member].alive and cluster.nodes[member].machine.applied_index >= target
                for member in sorted(members)
            )
        if not self.converged:
            cluster.scheduler.after(TICK_MS, self._check_progress)

    def _checkpoint(self) -> None:
        images = []
        for node in self.cluster.nodes.values():
            storage = node.storage
            meta = storage.snapshot().meta
            last = storage.last_index()
            entries = storage.entries(meta.index + 1, last + 1, 1 << 62) if last > meta.index else []
            images.append(LogImage(node.id, meta.index, meta.term, tuple(entries)))
        self.cluster.history.checkpoints.append(images)

    def check(self, aborted: bool) -> list[Violation]:
        """Run every checker over the history (liveness and durability only if the run finished)."""
        cluster = self.cluster
        history = cluster.history
        self._checkpoint()
        commits = history.commits()
        violations = checkers.check_election_safety(history.elections)
        for images in history.checkpoints:
            found = checkers.check_log_matching(images)
            if found:
                violations += found
                break
        violations += checkers.check_leader_completeness(history.applied, history.elections)
        violations += checkers.check_state_machine_safety(history.applied)
        violations += checkers.check_read_linearizability(history.client_events)
        if not aborted and history.healed_at_ms is not None:
            violations += checkers.check_liveness(history.healed_at_ms, commits, LIVENESS_BOUND_MS)
            history.final_members = cluster.membership.members()
            history.final_applied = {
                node.id: node.machine.applied_index for node in cluster.running()
            }
            violations += checkers.check_durability(
                commits, history.applied, history.final_members, history.final_applied)
        return violations

    def statistics(self) -> RunStatistics:
        cluster = self.cluster
        network = cluster.network.statistics
        nemesis = cluster.statistics
        return RunStatistics(
            elections=len(cluster.history.elections),
            proposals=self.workload.proposals,
            commits=self.workload.commits_reported,
            reads=self.workload.reads,
            messages=network.delivered,
            drops=network.dropped,
            cuts=network.cut,
            duplicates=network.duplicated,
            delays=network.delayed,
            partitions=nemesis.partitions,
            crashes=nemesis.crashes,
            writes_lost=nemesis.writes_lost,
            transfers=nemesis.transfers,
            membership_changes=nemesis.membership_changes,
            snapshots=sum(node.snapshots_sent for node in cluster.nodes.values()),
            virtual_ms=cluster.scheduler.now,
        )
