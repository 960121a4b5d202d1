"""Real 3-node chaos runs on fixed seeds: the bounded CI set of docs/chaos.md.

Each run starts real node processes behind fault proxies, drives the ``log``
workload while its nemesis is live, heals, reads everything back and judges
the history. Every run must be valid and live, and its faults must have taken
effect (faults started, sends failed or went indeterminate meanwhile). The
negative control (nodes that answer ``acks=all`` before commit) must be caught
as ``lost-write``/``unseen`` on a seed where the same options without the
unsafe flag are valid; ``acks1-demo`` must show its (allowed) loss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from millpond.chaos.runner import RunConfig, RunOutcome, run

#: Seconds of workload under faults per run: long enough for at least one fault period
#: (quiet 4-8 s, then a fault of 6-12 s) and its recovery.
DURATION_S = 25.0
#: Producer load of the negative control and its positive twin (see the log-unsafe workload).
BUSY = {"rate": "2000", "producers": "6"}


def _run(tmp_path: Path, **settings: Any) -> tuple[RunOutcome, dict[str, Any]]:
    config = RunConfig(duration_s=DURATION_S, out=tmp_path, recovery_s=90.0, **settings)
    outcome = run(config)
    results = json.loads((outcome.directory / "results.json").read_text())
    return outcome, results


def _explain(outcome: RunOutcome, results: dict[str, Any]) -> str:
    verdict = outcome.result.summary() if outcome.result else results.get("harness_error")
    return f"exit {outcome.exit_code}: {verdict}; see {outcome.directory}/summary.md"


def _faults_took_effect(results: dict[str, Any]) -> None:
    runs = results["fault_runs"]
    assert runs, "the nemesis started no fault"
    assert all(r["skipped"] is None for r in runs), runs
    sends = results["verdict"]["stats"]["by_f"]["send"]
    assert sends["fail"] + sends["info"] > 0, f"no send was disturbed by the faults: {sends}"
    assert sends["ok"] > 100, sends


#: The negative control's faults, both at once: a leader kill (catches the unsafe flag when it
#: lands within the few milliseconds between an in-memory append and its replication, so in most
#: runs but not all) and a silent isolation of a leader (an isolated leader acknowledges
#: everything it receives until check-quorum makes it step down: caught every time).
CONTROL_NEMESIS = ("kill-leader", "partition-isolate-leader-silent")


@pytest.mark.parametrize(("nemesis", "seed", "options", "at_once"), [
    (("kill-leader",), 1, {}, 1),
    (("pause-leader",), 2, {}, 1),
    (("partition-isolate-leader-silent",), 3, {}, 1),
    (("partition-halves-refuse",), 4, {}, 1),
    (CONTROL_NEMESIS, 1, BUSY, 2),
], ids=["kill-leader", "pause-leader", "isolate-leader-silent", "halves-refuse", "kill+partition"])
def test_log_workload_stays_valid_under_faults(tmp_path: Path, nemesis: tuple[str, ...], seed: int,
                                               options: dict[str, str], at_once: int) -> None:
    outcome, results = _run(tmp_path, workload="log", nemesis=nemesis, seed=seed, options=options,
                            faults_at_once=at_once)
    assert outcome.exit_code == 0, _explain(outcome, results)
    _faults_took_effect(results)
    assert (outcome.directory / "timeline.png").stat().st_size > 10_000
    assert (outcome.directory / "history.jsonl").exists() and (outcome.directory / "nemesis.jsonl").exists()


def test_negative_control_loses_acknowledged_writes(tmp_path: Path) -> None:
    """Same seed, faults and load as the kill+partition run above, on nodes that ack before commit."""
    outcome, results = _run(tmp_path, workload="log-unsafe", nemesis=CONTROL_NEMESIS, seed=1,
                            faults_at_once=2)
    assert outcome.exit_code == 1, _explain(outcome, results)
    errors = results["verdict"]["errors"]
    assert errors.get("lost-write", {}).get("count", 0) > 0 or errors.get("unseen", {}).get("count", 0) > 0, \
        _explain(outcome, results)
    assert results["workload"]["options"]["rate"] == float(BUSY["rate"])


def test_acks1_demo_shows_its_allowed_loss(tmp_path: Path) -> None:
    outcome, results = _run(tmp_path, workload="acks1-demo", nemesis=("partition-isolate-leader-silent",),
                            seed=3)
    assert outcome.exit_code == 0, _explain(outcome, results)
    allowed = results["verdict"]["allowed_errors"]
    assert allowed.get("lost-write", {}).get("count", 0) > 0, _explain(outcome, results)
