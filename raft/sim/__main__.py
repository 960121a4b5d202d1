"""Command line: ``python -m millpond.raft.sim --nodes 5 --seeds 1000``.

Prints one summary line (``seeds=<n> violations=<v> ...``) and exits 0 if no
seed broke a property, 1 otherwise, after printing each failing seed, what it
broke and the command that replays it with a full trace. ``--bug NAME``
switches on a deliberate defect to show that the checkers catch it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from millpond.raft.config import KNOWN_BUGS
from millpond.raft.sim.runner import replay_command, run_seeds
from millpond.raft.sim.simulation import STEPS_DEFAULT, SimulationOptions

SEEDS_DEFAULT = 300
"""Seeds per run by default; every known bug is caught within this many."""


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m millpond.raft.sim",
        description="Deterministic Raft simulator: one seed derives every fault; checkers judge.",
    )
    parser.add_argument("--nodes", type=int, default=3, help="initial voters (default 3)")
    parser.add_argument("--seeds", type=int, default=SEEDS_DEFAULT,
                        help=f"how many seeds to run (default {SEEDS_DEFAULT})")
    parser.add_argument("--seed-start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--steps", type=int, default=STEPS_DEFAULT,
                        help=f"ticks in the fault phase (default {STEPS_DEFAULT})")
    parser.add_argument("--bug", choices=sorted(KNOWN_BUGS),
                        help="switch on a deliberate defect (the run should then fail)")
    parser.add_argument("--trace", action="store_true", help="print every event")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes (default 1; 0 = one per CPU; not with --trace)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the seeds; return the exit status."""
    arguments = parse_arguments(argv)
    options = SimulationOptions(nodes=arguments.nodes, steps=arguments.steps, bug=arguments.bug)
    jobs = arguments.jobs or os.cpu_count() or 1
    if arguments.trace:
        jobs = 1
    try:
        summary = run_seeds(options, arguments.seed_start, arguments.seeds, jobs=jobs,
                            trace_sink=print if arguments.trace else None)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary.line())
    for failure in summary.failures:
        for violation in failure.violations:
            print(f"seed={failure.seed} {violation}")
        print(f"replay: {replay_command(failure.seed, options)}")
    if summary.failing_seeds > len(summary.failures):
        print(f"... and {summary.failing_seeds - len(summary.failures)} more failing seeds")
    return 1 if summary.violations else 0


if __name__ == "__main__":
    sys.exit(main())
