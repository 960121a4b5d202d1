"""Data-driven Raft scenarios: every ``scenarios/*.txt`` file, run by :mod:`millpond.raft.scenario`.

Regenerate expectations with ``pytest tests/raft/test_scenarios.py --rewrite`` (or
``MILLPOND_REWRITE=1``), then read the diff: an expectation is only right if it is
what correct Raft does.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from millpond.raft.scenario import SafetyViolation, Scenario, run_file, run_text

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.txt"))


def _rewrite(config: pytest.Config) -> bool:
    return bool(config.getoption("rewrite", default=False)) or os.environ.get("MILLPOND_REWRITE") == "1"


@pytest.mark.parametrize("path", SCENARIOS, ids=[path.stem for path in SCENARIOS])
def test_scenario(path: Path, request: pytest.FixtureRequest) -> None:
    rewrite = _rewrite(request.config)
    result = run_file(path, random.Random, rewrite=rewrite)
    if not rewrite:
        assert result.ok, f"{path.name} differs from its expected output:\n{result.diff}"


def test_every_scenario_states_its_goal() -> None:
    assert SCENARIOS, "no scenario files found"
    for path in SCENARIOS:
        first = path.read_text().lstrip().splitlines()[0]
        assert first.startswith("# Goal:"), f"{path.name} must open with a '# Goal:' comment"


# ---------------------------------------------------------------------------- the interpreter
def test_a_wrong_expectation_is_reported_and_rewritten_in_place() -> None:
    text = "# Goal: a comment survives.\nadd-nodes 1\n----\nsomething else\n\n# trailing\nraft-state\n----\n"
    result = run_text(text, random.Random, "t.txt")
    assert not result.ok
    assert "-something else" in result.diff
    assert result.actual == (
        "# Goal: a comment survives.\nadd-nodes 1\n----\n"
        "1: follower (voter) term=0 vote=0 lead=0 commit=0 applied=0 last=0\n\n"
        "# trailing\nraft-state\n----\n"
        "1: follower (voter) term=0 vote=0 lead=0 commit=0 applied=0 last=0\n"
    )
    assert run_text(result.actual, random.Random, "t.txt").ok


@pytest.mark.parametrize(
    "text",
    [
        "add-nodes 1\nraft-state\n----\n",  # no ---- after the first command
        "frobnicate 1\n----\n",  # unknown command
        "add-nodes 3\n----\n\ncampaign 1 loudly=true\n----\n",  # unknown option
        "add-nodes 1 no-such-setting=3\n----\n",
    ],
)
def test_a_malformed_scenario_fails_instead_of_being_recorded(text: str) -> None:
    with pytest.raises(ValueError):
        run_text(text, random.Random, "bad.txt")


def test_the_safety_checker_catches_two_leaders_in_one_term() -> None:
    # With the forget-vote defect a restarted voter votes twice in term 1.
    commands = [
        "add-nodes 3 pre-vote=false check-quorum=false bugs=(forget-vote)",
        "campaign 1", "process-ready 1", "deliver-msgs 2", "process-ready 2",
        "crash 2", "restart 2",
        "campaign 3", "process-ready 3", "deliver-msgs 2", "stabilize",
    ]
    scenario = Scenario(random.Random)
    with pytest.raises(SafetyViolation, match="both lead term 1"):
        for command in commands:
            scenario.run(command)
