"""Test tools that ship with millpond, so applications can test against it as we do.

* The deterministic Raft simulator (:mod:`millpond.raft.sim`), re-exported
  here: run seeds of a fault-injecting simulation of a Raft group and check
  election safety, log matching, leader completeness, state-machine safety,
  durability, liveness and read linearizability::

      from millpond.testing import SimulationOptions, run_seeds

      summary = run_seeds(SimulationOptions(nodes=5), seed_start=0, seeds=100)
      assert summary.violations == 0, summary.line()

  The checkers are pure functions over recorded histories, usable on
  histories a test writes by hand.
* :class:`LocalCluster` (:mod:`millpond.testing.cluster`): real node
  processes on this machine. It is imported on first use, because it brings
  in the gRPC client.
"""

from __future__ import annotations

from typing import Any

from millpond.raft.sim import (
    STEPS_DEFAULT,
    Applied,
    CommitReported,
    FaultModel,
    History,
    LeaderElected,
    LogImage,
    ReadAnswered,
    ReadRequested,
    RunStatistics,
    SeedResult,
    SimulationOptions,
    Summary,
    Violation,
    check_durability,
    check_election_safety,
    check_leader_completeness,
    check_liveness,
    check_log_matching,
    check_read_linearizability,
    check_state_machine_safety,
    replay_command,
    run_seeds,
    simulate,
)

__all__ = [
    "STEPS_DEFAULT",
    "Applied",
    "CommitReported",
    "FaultModel",
    "History",
    "LeaderElected",
    "LocalCluster",
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


def __getattr__(name: str) -> Any:
    """Import :class:`LocalCluster` lazily: it needs the gRPC client, the simulator does not."""
    if name == "LocalCluster":
        from millpond.testing.cluster import LocalCluster

        return LocalCluster
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
