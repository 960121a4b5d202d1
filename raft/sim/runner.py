"""Running many seeds and summarising them in one line.

Seeds are independent, so :func:`run_seeds` can spread them over worker
processes; the summary does not depend on how they were spread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from millpond.raft.sim.simulation import RunStatistics, SeedResult, SimulationOptions, simulate

FAILURES_KEPT_MAX = 20
"""Failing seeds a summary keeps in detail (the count covers all of them)."""


@dataclass
class Summary:
    """What a batch of seeds found."""

    options: SimulationOptions
    seeds: int = 0
    violations: int = 0
    failing_seeds: int = 0
    failures: list[SeedResult] = field(default_factory=list)
    statistics: RunStatistics = field(default_factory=RunStatistics)
    wall_seconds: float = 0.0

    def add(self, result: SeedResult) -> None:
        """Count one seed's result."""
        self.seeds += 1
        self.statistics = self.statistics + result.statistics
        if result.violations:
            self.violations += len(result.violations)
            self.failing_seeds += 1
            if len(self.failures) < FAILURES_KEPT_MAX:
                self.failures.append(result)

    def line(self) -> str:
        """The one-line summary: ``seeds=<n> violations=<v> ...``."""
        stats = self.statistics
        rate = self.seeds / self.wall_seconds if self.wall_seconds > 0 else 0.0
        return (
            f"seeds={self.seeds} violations={self.violations} failing_seeds={self.failing_seeds} "
            f"nodes={self.options.nodes} steps={self.options.steps} bug={self.options.bug or '-'} "
            f"elections={stats.elections} proposals={stats.proposals} commits={stats.commits} "
            f"reads={stats.reads} messages={stats.messages} drops={stats.drops} cuts={stats.cuts} "
            f"duplicates={stats.duplicates} delays={stats.delays} partitions={stats.partitions} "
            f"crashes={stats.crashes} writes_lost={stats.writes_lost} transfers={stats.transfers} "
            f"membership_changes={stats.membership_changes} snapshots={stats.snapshots} "
            f"virtual_s={stats.virtual_ms / 1000:.1f} wall_s={self.wall_seconds:.1f} "
            f"seeds_per_s={rate:.1f}"
        )


def replay_command(seed: int, options: SimulationOptions) -> str:
    """The command that replays ``seed`` alone, with a full trace."""
    command = (f"python -m millpond.raft.sim --nodes {options.nodes} --steps {options.steps} "
               f"--seed-start {seed} --seeds 1 --trace")
    if options.bug:
        command += f" --bug {options.bug}"
    return command


def run_seeds(
    options: SimulationOptions,
    seed_start: int,
    seeds: int,
    jobs: int = 1,
    trace_sink: Callable[[str], None] | None = None,
    stop_at_first_failure: bool = False,
) -> Summary:
    """Simulate seeds ``seed_start .. seed_start + seeds - 1``; tracing requires ``jobs == 1``."""
    options.validate()
    if jobs > 1 and trace_sink is not None:
        raise ValueError("a trace needs jobs == 1")
    summary = Summary(options)
    started = time.perf_counter()
    for result in _results(options, range(seed_start, seed_start + seeds), jobs, trace_sink):
        summary.add(result)
        if stop_at_first_failure and result.violations:
            break
    summary.wall_seconds = time.perf_counter() - started
    return summary


def _results(
    options: SimulationOptions, seeds: range, jobs: int,
    trace_sink: Callable[[str], None] | None,
) -> Iterator[SeedResult]:
    if jobs <= 1:
        for seed in seeds:
            yield simulate(seed, options, trace_sink)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        chunk = max(1, len(seeds) // (jobs * 8))
        yield from pool.map(partial(_simulate_quietly, options=options), seeds, chunksize=chunk)


def _simulate_quietly(seed: int, options: SimulationOptions) -> SeedResult:
    return simulate(seed, options)
