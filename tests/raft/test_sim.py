"""The deterministic simulator: no violation over many seeds, every known bug caught, a seed
replays byte for byte, and the command line reports and exits as documented.

The seed runs are split into chunks so ``pytest -n auto`` spreads them over
the CPUs.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from millpond.raft.config import KNOWN_BUGS
from millpond.raft.sim import SimulationOptions, replay_command, run_seeds, simulate
from millpond.raft.sim.__main__ import SEEDS_DEFAULT
from millpond.raft.sim.runner import Summary

SEEDS_PER_CONFIGURATION = 500
SEEDS_PER_CHUNK = 50
CHUNKS = [
    (nodes, start)
    for nodes in (3, 5)
    for start in range(0, SEEDS_PER_CONFIGURATION, SEEDS_PER_CHUNK)
]


def explain(summary: Summary) -> str:
    """The summary line plus every failing seed with its replay command."""
    lines = [summary.line()]
    for failure in summary.failures:
        lines += [f"seed={failure.seed} {violation}" for violation in failure.violations]
        lines.append(f"replay: {replay_command(failure.seed, summary.options)}")
    return "\n".join(lines)


@pytest.mark.parametrize(("nodes", "seed_start"), CHUNKS)
def test_seeds_keep_every_property_under_every_fault(nodes: int, seed_start: int) -> None:
    summary = run_seeds(SimulationOptions(nodes=nodes), seed_start, SEEDS_PER_CHUNK)
    assert summary.seeds == SEEDS_PER_CHUNK
    assert summary.violations == 0, explain(summary)
    # The chunk really exercised the fault model and the workload.
    stats = summary.statistics
    for name, count in stats.as_dict().items():
        assert count > 0, f"no {name} in seeds {seed_start}..{seed_start + SEEDS_PER_CHUNK - 1}"
    assert stats.commits > 20 * SEEDS_PER_CHUNK


@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize("bug", sorted(KNOWN_BUGS))
def test_every_known_bug_is_caught_within_the_default_seeds(bug: str, nodes: int) -> None:
    options = SimulationOptions(nodes=nodes, bug=bug)
    summary = run_seeds(options, 0, SEEDS_DEFAULT, stop_at_first_failure=True)
    assert summary.failing_seeds == 1, f"{bug} not caught in {SEEDS_DEFAULT} seeds"
    failure = summary.failures[0]
    # The failing seed replays to the same verdict.
    assert simulate(failure.seed, options).violations == failure.violations


def trace_of(seed: int, options: SimulationOptions) -> list[str]:
    lines: list[str] = []
    simulate(seed, options, lines.append)
    return lines


def test_a_seed_replays_to_a_byte_identical_trace() -> None:
    options = SimulationOptions(nodes=5)
    first = trace_of(7, options)
    assert first == trace_of(7, options)
    assert first != trace_of(8, options)


def test_the_trace_shows_every_kind_of_event() -> None:
    options = SimulationOptions(nodes=3)
    text = "\n".join(line for seed in range(12) for line in trace_of(seed, options))
    for kind in (" deliver ", " send ", " drop ", " cut ", "crash n", "start n", "partition ",
                 " elected leader ", "commit reported", " applied ", " installed snapshot ",
                 "membership ", "transfer n", " read ", " compacted ", "heal: "):
        assert kind in text, f"no {kind.strip()!r} event in the traces of seeds 0..11"


def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "millpond.raft.sim", *arguments],
        capture_output=True, text=True, timeout=300, check=False,
    )


def test_cli_exits_zero_and_prints_one_summary_line_when_no_property_breaks() -> None:
    result = run_cli("--nodes", "3", "--seeds", "3", "--seed-start", "100")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("seeds=3 violations=0 ")


def test_cli_exits_one_and_prints_a_replay_command_that_reproduces_the_failure() -> None:
    result = run_cli("--nodes", "3", "--seeds", "30", "--bug", "vote-any-log")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("seeds=30 violations=")
    assert not lines[0].startswith("seeds=30 violations=0 ")
    replay = next(line for line in lines if line.startswith("replay: "))
    command = replay.removeprefix("replay: ").split()
    assert command[:3] == ["python", "-m", "millpond.raft.sim"]
    assert "--trace" in command and "--seeds" in command
    seed = command[command.index("--seed-start") + 1]
    reported = [line for line in lines if line.startswith(f"seed={seed} ")]
    replayed = run_cli(*command[3:])
    assert replayed.returncode == 1
    replayed_lines = replayed.stdout.splitlines()
    assert replayed_lines[-1].startswith("replay: ")
    assert any(" deliver " in line for line in replayed_lines)
    for line in reported:
        violation = line.split(" ", 1)[1]
        assert any(line.endswith(f"VIOLATION {violation}") for line in replayed_lines)


def test_cli_rejects_an_unknown_bug() -> None:
    result = run_cli("--bug", "no-such-bug", "--seeds", "1")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
