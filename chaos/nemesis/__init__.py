"""Seeded, scheduled faults against a chaos cluster.

* :mod:`~millpond.chaos.nemesis.faults` -- the faults (process, partition, packet, admin), each
  ``start(cluster, rng) -> FaultRecord`` / ``stop(cluster, record)``;
* :mod:`~millpond.chaos.nemesis.registry` -- every fault by name (``kill-leader``,
  ``partition-halves-silent``, ...);
* :mod:`~millpond.chaos.nemesis.schedule` -- a plan drawn from one seed, and its runner, which
  heals everything on the way out;
* :mod:`~millpond.chaos.nemesis.log` -- ``nemesis.jsonl``, on the history's clock.
"""

from millpond.chaos.nemesis.faults import Fault, FaultNotApplicable, FaultRecord
from millpond.chaos.nemesis.log import NemesisLog, run_clock
from millpond.chaos.nemesis.registry import create_fault, describe_faults, expand_fault_names, fault_names
from millpond.chaos.nemesis.schedule import (
    FaultRun,
    NemesisPlan,
    NemesisSchedule,
    Period,
    PlannedFault,
    ScheduleConfig,
    plan_schedule,
)

__all__ = [
    "Fault",
    "FaultNotApplicable",
    "FaultRecord",
    "FaultRun",
    "NemesisLog",
    "NemesisPlan",
    "NemesisSchedule",
    "Period",
    "PlannedFault",
    "ScheduleConfig",
    "create_fault",
    "describe_faults",
    "expand_fault_names",
    "fault_names",
    "plan_schedule",
    "run_clock",
]
