"""millpond.raft.sim: a deterministic simulator that checks Raft's properties over many seeds.

One seed derives every fault (message loss, delay, duplication, reordering,
symmetric and asymmetric partitions, crash-restarts losing unsynced writes,
leadership transfers, membership changes, log compaction) and every client
action, on virtual time. Checkers then judge the recorded history: election
safety, log matching, leader completeness, state-machine safety, durability,
liveness after healing and read linearizability.

Run it from the shell (``python -m millpond.raft.sim --help``) or from code::

    from millpond.raft.sim import SimulationOptions, simulate

    result = simulate(seed=42, options=SimulationOptions(nodes=5))
    assert not result.violations, result.violations
"""

from millpond.raft.sim.checkers import (
    Violation,
    check_durability,
    check_election_safety,
    check_leader_completeness,
    check_liveness,
    check_log_matching,
    check_read_linearizability,
    check_state_machine_safety,
)
from millpond.raft.sim.faults import TICK_MS, FaultModel
from millpond.raft.sim.history import (
    Applied,
    CommitReported,
    History,
    LeaderElected,
    LogImage,
    ReadAnswered,
    ReadRequested,
)
from millpond.raft.sim.runner import Summary, replay_command, run_seeds
from millpond.raft.sim.simulation import (
    STEPS_DEFAULT,
    RunStatistics,
    SeedResult,
    SimulationOptions,
    simulate,
)

__all__ = [
    "STEPS_DEFAULT",
    "TICK_MS",
    "Applied",
    "CommitReported",
    "FaultModel",
    "History",
    "LeaderElected",
    "LogImage",
    "ReadAnswered",
    "ReadRequested",
    "RunStatistics",
    "SeedResult",
    "SimulationOptions",
    "Summary",
    "Violation",
    "check_durability",
    "check_election_safety",
    "check_leader_completeness",
    "check_liveness",
    "check_log_matching",
    "check_read_linearizability",
    "check_state_machine_safety",
    "replay_command",
    "run_seeds",
    "simulate",
]
