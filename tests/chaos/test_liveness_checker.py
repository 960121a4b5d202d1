"""Liveness checkers of the log workload on hand-written runs: each failure and its passing twin."""

from __future__ import annotations

import pytest

from millpond.chaos.checkers.base import CannotCheck
from millpond.chaos.checkers.liveness import (
    final_read_incomplete,
    no_progress,
    no_progress_during_fault,
    replicas_not_converged,
)
from millpond.chaos.checkers.model import LogModel
from millpond.chaos.history import FaultWindow, HistoryRecorder, Op

GRACE_S = 6.0


class Run:
    """A ``log`` history on a clock the test sets: ``at(t)`` then ops happen at time t."""

    def __init__(self) -> None:
        self.time = 0.0
        self.recorder = HistoryRecorder(now=lambda: self.time)
        self.next_value = 0

    @property
    def ops(self) -> list[Op]:
        return self.recorder.ops

    def at(self, moment: float) -> Run:
        self.time = moment
        return self

    def send(self, process: int, outcome: str = "ok", partition: int = 0) -> int:
        """A send completing at the current time; returns the completion's index."""
        self.next_value += 1
        value = {"key": "k", "value": f"v{self.next_value}", "partition": partition}
        invoke = self.recorder.invoke(process, "send", value)
        done = dict(value, offset=self.next_value) if outcome == "ok" else None
        return self.recorder.complete(invoke, outcome, done).index  # type: ignore[arg-type]

    def final_read(self, process: int, partition: int, outcome: str = "ok", caught_up: bool = True) -> int:
        invoke = self.recorder.invoke(process, "final-read", {"partition": partition})
        value = {"partition": partition, "high_watermark": 3, "records": [], "caught_up": caught_up}
        return self.recorder.complete(invoke, outcome, value if outcome == "ok" else None).index  # type: ignore[arg-type]

    def model(self) -> LogModel:
        return LogModel.build(self.ops)


def window(start: float, stop: float | None, keeps_majority: bool = True, id: int = 1) -> FaultWindow:
    return FaultWindow(id, "partition", ([1], [2, 3]), start, stop, keeps_majority)


def during_fault(run: Run, *windows: FaultWindow) -> list[dict[str, object]]:
    return no_progress_during_fault(run.model(), windows, GRACE_S, run.ops[-1].time)


# ------------------------------------------------------------------------------- no-progress-during-fault
def test_no_progress_during_fault_flags_a_majority_fault_without_an_ok_send_after_the_grace() -> None:
    run = Run()
    run.at(5.0).send(0)
    run.at(12.0).send(0)  # inside the fault but within the grace: does not count
    run.at(20.0).send(0, outcome="info")
    run.at(40.0).send(1)
    assert during_fault(run, window(10.0, 30.0)) == [
        {
            "fault_id": 1,
            "fault": "partition",
            "targets": [[1], [2, 3]],
            "start": 10.0,
            "stop": 30.0,
            "checked_from": 16.0,
            "checked_to": 30.0,
            "last_ok_send_before": 12.0,
            "first_ok_send_after": 40.0,
        }
    ]


def test_no_progress_during_fault_accepts_one_ok_send_after_the_grace() -> None:
    run = Run()
    run.at(5.0).send(0)
    run.at(29.5).send(0)
    assert during_fault(run, window(10.0, 30.0)) == []


def test_no_progress_during_fault_ignores_short_faults_and_faults_that_lose_the_majority() -> None:
    run = Run()
    run.at(5.0).send(0)
    run.at(40.0).send(0)
    assert during_fault(run, window(10.0, 15.9)) == []  # shorter than the grace
    assert during_fault(run, window(10.0, 30.0, keeps_majority=False)) == []


def test_no_progress_during_fault_skips_a_window_overlapping_a_fault_that_loses_the_majority() -> None:
    run = Run()
    run.at(5.0).send(0)
    run.at(40.0).send(0)
    majority = window(10.0, 30.0, id=1)
    assert during_fault(run, majority, window(25.0, 35.0, keeps_majority=False, id=2)) == []
    assert [e["fault_id"] for e in during_fault(run, majority, window(31.0, 35.0, False, id=2))] == [1]


def test_no_progress_during_fault_checks_a_fault_never_healed_up_to_the_end_of_the_run() -> None:
    run = Run()
    run.at(5.0).send(0)
    run.at(50.0).send(0, outcome="fail")
    examples = during_fault(run, window(10.0, None))
    assert [(e["stop"], e["checked_to"], e["first_ok_send_after"]) for e in examples] == [(None, 50.0, None)]
    run.at(51.0).send(0)
    assert during_fault(run, window(10.0, None)) == []


# ------------------------------------------------------------------------------- final-read-incomplete
def test_final_read_incomplete_flags_partitions_not_read_to_the_end() -> None:
    run = Run()
    run.send(0, partition=0)
    run.send(0, partition=1)
    run.send(0, partition=2)
    run.final_read(10, 0)
    lagging = run.final_read(11, 1, caught_up=False)
    failed = run.final_read(12, 2, outcome="fail")
    examples = final_read_incomplete(run.model())
    assert [(e["partition"], e["reason"]) for e in examples] == [
        (1, "final-read did not catch up to the high watermark"),
        (2, "final-read never completed ok"),
    ]
    assert examples[0]["final_reads"] == [
        {
            "ops": [lagging - 1, lagging],
            "outcome": "ok",
            "high_watermark": 3,
            "caught_up": False,
            "records": 0,
        }
    ]
    assert examples[1]["final_reads"] == [
        {
            "ops": [failed - 1, failed],
            "outcome": "fail",
            "high_watermark": None,
            "caught_up": False,
            "records": 0,
        }
    ]


def test_final_read_incomplete_flags_a_partition_never_final_read() -> None:
    run = Run()
    run.send(0, partition=3)
    assert final_read_incomplete(run.model()) == [
        {"partition": 3, "reason": "no final-read", "final_reads": []}
    ]


def test_final_read_incomplete_flags_a_final_read_the_run_left_unfinished() -> None:
    run = Run()
    run.send(0, partition=0)
    run.recorder.invoke(10, "final-read", {"partition": 0})
    examples = final_read_incomplete(run.model())
    assert [(e["reason"], e["final_reads"][0]["outcome"]) for e in examples] == [
        ("final-read never completed ok", "info")
    ]


def test_final_read_incomplete_accepts_a_retried_final_read_that_caught_up() -> None:
    run = Run()
    run.send(0, partition=0)
    run.final_read(10, 0, outcome="info")
    run.final_read(11, 0, caught_up=False)
    run.final_read(12, 0)
    assert final_read_incomplete(run.model()) == []


# ------------------------------------------------------------------------------- replicas-not-converged
def test_replicas_not_converged_flags_different_commit_indexes() -> None:
    report = {
        "t/0": {
            "1": {"commit_index": 9, "upto": 8, "checksum": "a"},
            "2": {"commit_index": 8, "upto": 8, "checksum": "a"},
        },
        "t/1": {"1": {"commit_index": 3, "upto": 3, "checksum": "b"}},
    }
    assert replicas_not_converged(report) == [{"partition": "t/0", "commit_index": {"1": 9, "2": 8}}]


def test_replicas_not_converged_accepts_equal_commit_indexes_and_needs_a_report() -> None:
    report = {
        "t/0": {
            "1": {"commit_index": 9, "upto": 9, "checksum": "a"},
            "2": {"commit_index": 9, "upto": 9, "checksum": "a"},
        }
    }
    assert replicas_not_converged(report) == []
    with pytest.raises(CannotCheck, match="no replica report"):
        replicas_not_converged(None)


# ------------------------------------------------------------------------------- no-progress
def test_no_progress_flags_a_run_without_one_ok_send() -> None:
    run = Run()
    run.send(0, outcome="fail")
    run.send(1, outcome="info")
    run.recorder.invoke(2, "send", {"key": "k", "value": "last", "partition": 0})
    assert no_progress(run.model()) == [{"sends": 3, "outcomes": {"fail": 1, "info": 2}}]


def test_no_progress_accepts_one_ok_send() -> None:
    run = Run()
    run.send(0, outcome="fail")
    run.send(0)
    assert no_progress(run.model()) == []
