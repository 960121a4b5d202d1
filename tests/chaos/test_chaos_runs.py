"""Real 3-node chaos runs on fixed seeds: the bounded CI set of docs/chaos.md.

Each run starts real node processes behind fault proxies, drives the ``log``
workload while its nemesis is live, heals, reads everything back and judges
the history. Every run must be valid and live, and its faults must have taken
effect (faults started, sends failed or went indeterminate meanwhile). The
negative control (nodes that answer ``acks=all`` before commit) must be caught
as ``lost-write``/``unseen`` on a seed where the same options without the
unsafe flag are valid; ``acks1-demo`` must show its (allowed) loss. The ``group`` workload
(a consumer group processing at least once while the workload crashes and replaces members) must
be valid under leader kills too. The ``compaction`` workload must leave, after healing, exactly the latest
record of every key (its read-back far shorter than what was acknowledged).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from millpond.chaos.history import load_history
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


#: The negative control's faults, one after the other (seed 1 plans a leader kill at ~4.5 s, then a
#: silent isolation of a leader at ~21.6 s): the kill catches the unsafe flag when it lands within
#: the few milliseconds between an in-memory append and its replication (most runs, not all); the
#: isolated leader acknowledges everything it receives until check-quorum makes it step down while
#: the majority elects another (caught every time). Both at once would leave no majority, and the
#: isolated leader's records would survive.
CONTROL_NEMESIS = ("kill-leader", "partition-isolate-leader-silent")


@pytest.mark.parametrize(("nemesis", "seed", "options", "at_once"), [
    (("kill-leader",), 1, {}, 1),
    (("pause-leader",), 2, {}, 1),
    (("partition-isolate-leader-silent",), 3, {}, 1),
    (("partition-halves-refuse",), 4, {}, 1),
    (("kill-one", "partition-one-way-silent"), 5, {}, 2),
    (CONTROL_NEMESIS, 1, BUSY, 1),
], ids=["kill-leader", "pause-leader", "isolate-leader-silent", "halves-refuse", "kill+partition",
        "control-twin"])
def test_log_workload_stays_valid_under_faults(tmp_path: Path, nemesis: tuple[str, ...], seed: int,
                                               options: dict[str, str], at_once: int) -> None:
    outcome, results = _run(tmp_path, workload="log", nemesis=nemesis, seed=seed, options=options,
                            faults_at_once=at_once)
    assert outcome.exit_code == 0, _explain(outcome, results)
    _faults_took_effect(results)
    assert (outcome.directory / "timeline.png").stat().st_size > 10_000
    assert (outcome.directory / "history.jsonl").exists() and (outcome.directory / "nemesis.jsonl").exists()


def test_negative_control_loses_acknowledged_writes(tmp_path: Path) -> None:
    """Same seed, faults and load as the control-twin run above, on nodes that ack before commit."""
    outcome, results = _run(tmp_path, workload="log-unsafe", nemesis=CONTROL_NEMESIS, seed=1)
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


def test_group_workload_stays_valid_under_leader_kills_and_member_crashes(tmp_path: Path) -> None:
    """Seed 1's member schedule crashes a member, closes one cleanly, crashes another (each replaced)."""
    outcome, results = _run(tmp_path, workload="group", nemesis=("kill-leader",), seed=1)
    assert outcome.exit_code == 0, _explain(outcome, results)
    _faults_took_effect(results)
    ops = results["verdict"]["stats"]["by_f"]
    assert ops["crash"]["ok"] >= 1, f"no member was crashed: {ops}"
    assert ops["join"]["ok"] > results["workload"]["options"]["members"], f"no member was replaced: {ops}"
    assert ops["commit"]["ok"] > 0 and ops["own"]["ok"] > 0 and ops["release"]["ok"] > 0, ops
    assert ops["final-committed"]["ok"] == 1, ops


def test_compaction_workload_keeps_the_latest_record_per_key_under_leader_kills(tmp_path: Path) -> None:
    """Updates and tombstones on a compacted topic while leaders die: after healing a compaction
    pass over the whole log completes and the read-back holds exactly the latest record per key."""
    outcome, results = _run(tmp_path, workload="compaction", nemesis=("kill-leader",), seed=1)
    assert outcome.exit_code == 0, _explain(outcome, results)
    _faults_took_effect(results)
    history = load_history(outcome.directory / "history.jsonl")
    tombstones = sum(1 for op in history if op.f == "send" and op.type == "ok" and op.value["tombstone"])
    read_back = [op.value for op in history if op.f == "final-read" and op.type == "ok"
                 and op.value["compaction"]["point"] is not None]
    assert len(read_back) == results["workload"]["options"]["partitions"], read_back
    acked = results["verdict"]["stats"]["by_f"]["send"]["ok"]
    records = sum(len(read["records"]) for read in read_back)
    assert tombstones > 0 and 0 < records < acked, f"{records} records read back of {acked} acknowledged"
