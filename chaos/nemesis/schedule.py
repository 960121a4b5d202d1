"""A seeded nemesis schedule: fault-free periods and fault periods, alternating, for a duration.

The plan is a pure function of its inputs (``plan_schedule(seed, duration_s, names, config)``):
the same seed gives the same periods, the same fault names and the same per-fault seeds, so a run
can be replayed. Only the choice of ``leader`` / ``controller`` targets depends on the live cluster
(each fault draws everything else from ``random.Random(planned.seed)``).

::

    plan = plan_schedule(seed=7, duration_s=60, faults=expand_fault_names(["kill-*", "partition-*"]))
    with NemesisLog(run_dir / "nemesis.jsonl", clock=history.now) as log:
        results = await NemesisSchedule(cluster, plan, log, topic="events").run()

:meth:`NemesisSchedule.run` waits (on the shared run clock) for each period, starts its faults,
waits for the period's end, stops them in reverse order, and on the way out -- normal end, error or
cancellation -- stops whatever is still active and calls :meth:`ChaosCluster.heal_all`, so the
cluster is whole again for the final reads.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from millpond.chaos.harness import ChaosCluster
from millpond.chaos.nemesis.faults import Fault, FaultNotApplicable, FaultRecord
from millpond.chaos.nemesis.log import NemesisLog
from millpond.chaos.nemesis.registry import create_fault

__all__ = [
    "FaultRun",
    "NemesisPlan",
    "NemesisSchedule",
    "Period",
    "PlannedFault",
    "ScheduleConfig",
    "plan_schedule",
]

logger = logging.getLogger(__name__)

#: Seconds one fault's ``start`` may take (a rolling restart only launches its task there).
FAULT_START_TIMEOUT_S = 120.0
#: Seconds one fault's ``stop`` may take (it waits for a rolling restart or a replica move).
FAULT_STOP_TIMEOUT_S = 400.0
#: Seconds the final ``heal_all`` may take (restarting killed nodes).
HEAL_TIMEOUT_S = 120.0
#: Most periods in one plan (a bound on the loop; 10 000 periods of 0.1 s is almost 17 minutes).
PERIODS_MAX = 10_000


@dataclass(frozen=True)
class ScheduleConfig:
    """How a plan alternates: each fault-free period lasts ``quiet_s`` = (min, max) seconds, each
    fault period ``fault_s`` = (min, max) seconds (uniformly drawn); a fault period runs
    ``faults_at_once`` distinct faults together (1: one fault at a time)."""

    quiet_s: tuple[float, float] = (5.0, 10.0)
    fault_s: tuple[float, float] = (5.0, 15.0)
    faults_at_once: int = 1

    def __post_init__(self) -> None:
        for name, (low, high) in (("quiet_s", self.quiet_s), ("fault_s", self.fault_s)):
            if not 0 < low <= high:
                raise ValueError(f"{name} must be (min, max) with 0 < min <= max, got {(low, high)}")
        if self.faults_at_once < 1:
            raise ValueError(f"faults_at_once must be >= 1, got {self.faults_at_once}")


@dataclass(frozen=True)
class PlannedFault:
    """A fault to run and the seed of the generator it draws its targets from."""

    fault: str
    seed: int


@dataclass(frozen=True)
class Period:
    """A fault period: its faults start at ``start_s`` and stop at ``stop_s`` (run-clock seconds)."""

    index: int
    start_s: float
    stop_s: float
    faults: tuple[PlannedFault, ...]


@dataclass(frozen=True)
class NemesisPlan:
    """What a schedule will do; fault-free time is everything between periods."""

    seed: int
    duration_s: float
    config: ScheduleConfig
    periods: tuple[Period, ...]

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON-able data (for the run's record)."""
        return {
            "seed": self.seed,
            "duration_s": self.duration_s,
            "quiet_s": list(self.config.quiet_s),
            "fault_s": list(self.config.fault_s),
            "faults_at_once": self.config.faults_at_once,
            "periods": [
                {"index": p.index, "start_s": p.start_s, "stop_s": p.stop_s,
                 "faults": [{"fault": f.fault, "seed": f.seed} for f in p.faults]}
                for p in self.periods
            ],
        }


def plan_schedule(
    seed: int, duration_s: float, faults: Sequence[str], config: ScheduleConfig | None = None
) -> NemesisPlan:
    """Alternate a fault-free period and a fault period from time 0 until ``duration_s``.

    Draws everything from ``random.Random(seed)``: each quiet length, each fault length (a fault
    period that would outlast ``duration_s`` is cut short there; none starts later than that),
    ``faults_at_once`` distinct names per period (uniformly from ``faults``), and a 63-bit seed per
    fault. Times are rounded to milliseconds. Raises ``ValueError`` for no fault names, a
    non-positive duration, or more faults at once than names.
    """
    config = config or ScheduleConfig()
    if not faults:
        raise ValueError("a schedule needs at least one fault name")
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    names = list(dict.fromkeys(faults))
    if config.faults_at_once > len(names):
        raise ValueError(f"faults_at_once={config.faults_at_once} but only {len(names)} distinct faults")
    rng = random.Random(seed)
    periods: list[Period] = []
    now = 0.0
    while len(periods) < PERIODS_MAX:
        now += rng.uniform(*config.quiet_s)
        if now >= duration_s:
            break
        stop = min(now + rng.uniform(*config.fault_s), duration_s)
        chosen = rng.sample(names, config.faults_at_once)
        planned = tuple(PlannedFault(name, rng.getrandbits(63)) for name in chosen)
        periods.append(Period(len(periods), round(now, 3), round(stop, 3), planned))
        now = stop
    return NemesisPlan(seed, duration_s, config, tuple(periods))


@dataclass
class FaultRun:
    """What became of one planned fault: its log id and record once started (None if it was not
    applicable: ``skipped`` says why), and what its stop did."""

    period: int
    planned: PlannedFault
    fault_id: int | None = None
    record: FaultRecord | None = None
    stop_detail: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None


class NemesisSchedule:
    """Runs a :class:`NemesisPlan` against a cluster, logging to a :class:`NemesisLog`.

    ``topic``: the workload topic (leader targets, transfers and moves pick its partitions).
    ``fault_factory`` builds a fault from its name and the topic (default: the registry).
    ``sleep`` waits a number of seconds (inject a fake for tests); the log's clock tells the time.
    """

    def __init__(
        self,
        cluster: ChaosCluster,
        plan: NemesisPlan,
        log: NemesisLog,
        *,
        topic: str | None = None,
        fault_factory: Callable[[str, str | None], Fault] = create_fault,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.cluster = cluster
        self.plan = plan
        self.log = log
        self.topic = topic
        self._factory = fault_factory
        self._sleep = sleep
        self._active: list[tuple[int, Fault, FaultRecord, FaultRun]] = []
        self.runs: list[FaultRun] = []

    async def run(self) -> list[FaultRun]:
        """Run every period of the plan, then heal everything; return what each fault did.

        Raises what a fault's ``start`` or ``stop`` raised other than :class:`FaultNotApplicable`
        (after healing), ``TimeoutError`` if one overran ``FAULT_START_TIMEOUT_S`` /
        ``FAULT_STOP_TIMEOUT_S``. Cancelling it stops the active faults and heals the cluster.
        """
        try:
            for period in self.plan.periods:
                await self._until(period.start_s)
                for planned in period.faults:
                    await self._start(period, planned)
                await self._until(period.stop_s)
                await self._stop_active()
        finally:
            await self._heal()
        return self.runs

    async def _until(self, at_s: float) -> None:
        """Wait until the run clock reads ``at_s`` (the schedule's timing, not a synchronisation)."""
        remaining = at_s - self.log.clock()
        if remaining > 0:
            await self._sleep(remaining)

    async def _start(self, period: Period, planned: PlannedFault) -> None:
        fault = self._factory(planned.fault, self.topic)
        run = FaultRun(period.index, planned)
        self.runs.append(run)
        try:
            async with asyncio.timeout(FAULT_START_TIMEOUT_S):
                record = await fault.start(self.cluster, random.Random(planned.seed))
        except FaultNotApplicable as exc:
            run.skipped = str(exc)
            logger.warning("nemesis: %s skipped: %s", planned.fault, exc)
            return
        run.record = record
        run.fault_id = self.log.start(record)
        self._active.append((run.fault_id, fault, record, run))
        logger.info("nemesis: started %s #%d on %s", record.fault, run.fault_id, record.targets)

    async def _stop_active(self) -> None:
        """Stop the active faults, newest first; each is logged once its ``stop`` returned."""
        while self._active:
            fault_id, fault, record, run = self._active[-1]
            async with asyncio.timeout(FAULT_STOP_TIMEOUT_S):
                run.stop_detail = await fault.stop(self.cluster, record)
            self._active.pop()
            self.log.stop(fault_id, run.stop_detail)
            logger.info("nemesis: stopped %s #%d", fault.name, fault_id)

    async def _heal(self) -> None:
        """Stop what is still active (errors are logged, then everything is reset anyway)."""
        try:
            await self._stop_active()
        except Exception:
            logger.exception("nemesis: stopping the active faults failed; resetting everything")
            for fault_id, _, _, _ in reversed(self._active):
                self.log.stop(fault_id, {"healed_by": "heal_all"})
            self._active.clear()
        async with asyncio.timeout(HEAL_TIMEOUT_S):
            await self.cluster.heal_all()
