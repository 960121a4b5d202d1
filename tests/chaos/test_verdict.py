"""The verdict: validity, allowed error types, liveness, stats, exit codes, and the registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from millpond.chaos.checkers import (
    WORKLOADS,
    CheckConfig,
    Checker,
    CheckInput,
    Finding,
    LivenessResult,
    Result,
    check,
    checkers_for,
    error_types,
    exit_code,
    register_workload,
)
from millpond.chaos.checkers.base import CannotCheck
from millpond.chaos.history import (
    FaultWindow,
    HistoryRecorder,
    HistoryWriter,
    NemesisWriter,
    Op,
    fault_windows,
    load_history,
    load_nemesis,
)

REPLICAS = {"t/0": {str(node): {"commit_index": 2, "upto": 2, "checksum": "c0"} for node in (1, 2, 3)}}


class Log:
    """A ``log`` history: every call appends an invoke and its completion, 10 ms apart."""

    def __init__(self, recorder: HistoryRecorder | None = None) -> None:
        self.time = 0.0
        self.recorder = recorder or HistoryRecorder(now=self._tick)

    def _tick(self) -> float:
        self.time += 0.01
        return self.time

    @property
    def ops(self) -> list[Op]:
        return self.recorder.ops

    def send(self, process: int, value: str, offset: int | None = None, outcome: str = "ok") -> None:
        sent = {"key": "k", "value": value, "partition": 0}
        invoke = self.recorder.invoke(process, "send", sent)
        self.recorder.complete(invoke, outcome, dict(sent, offset=offset) if outcome == "ok" else None)  # type: ignore[arg-type]

    def poll(self, process: int, *records: tuple[int, str]) -> None:
        value = {"records": [[0, offset, "k", v] for offset, v in records]}
        self.recorder.complete(self.recorder.invoke(process, "poll", {}), "ok", value)

    def final_read(self, process: int, *records: tuple[int, str], caught_up: bool = True) -> None:
        invoke = self.recorder.invoke(process, "final-read", {"partition": 0})
        value = {
            "partition": 0,
            "high_watermark": len(records),
            "records": [[0, offset, "k", v] for offset, v in records],
            "caught_up": caught_up,
        }
        self.recorder.complete(invoke, "ok", value)


def clean_log() -> Log:
    log = Log()
    log.send(0, "a", 0)
    log.send(0, "b", 1)
    log.poll(5, (0, "a"), (1, "b"))
    log.final_read(9, (0, "a"), (1, "b"))
    return log


# ------------------------------------------------------------------------------- validity and exit codes
def test_a_clean_run_is_valid_and_live_with_exit_code_0() -> None:
    result = check(clean_log().ops, [], REPLICAS, set())
    assert (result.valid, result.liveness.valid, exit_code(result)) == (True, True, 0)
    assert result.errors == {} and result.liveness.failures == {} and result.unchecked == {}
    assert result.summary() == "valid=true live=true"


def test_a_safety_violation_gives_exit_code_1_with_counted_examples() -> None:
    log = Log()
    log.send(0, "a", 0)
    log.send(0, "b", 1)
    log.poll(5, (1, "b"))
    log.final_read(9, (1, "b"))
    result = check(log.ops, [], REPLICAS, set())
    assert (result.valid, exit_code(result)) == (False, 1)
    assert sorted(result.errors) == ["lost-write", "unseen"]
    assert result.errors["lost-write"].count == 1
    assert result.errors["lost-write"].examples[0]["value"] == "a"
    assert result.summary() == "valid=false live=true lost-write=1 unseen=1"


def test_examples_are_capped_but_the_count_is_not() -> None:
    log = Log()
    for n in range(12):
        log.send(0, f"v{n}", n)
    log.final_read(9, caught_up=True)
    result = check(log.ops, [], REPLICAS, set(), CheckConfig(examples_max=8))
    assert result.errors["unseen"].count == 12
    assert [example["value"] for example in result.errors["unseen"].examples] == [f"v{n}" for n in range(8)]


def test_allowed_error_types_are_reported_but_do_not_invalidate() -> None:
    log = Log()
    log.send(0, "a", 0)
    log.send(0, "b", 1)
    log.poll(5, (1, "b"))
    log.final_read(9, (1, "b"))
    result = check(log.ops, [], REPLICAS, {"lost-write", "unseen"})
    assert (result.valid, exit_code(result)) == (True, 0)
    assert result.errors == {}
    assert {name: finding.count for name, finding in result.allowed_errors.items()} == {
        "lost-write": 1,
        "unseen": 1,
    }
    assert result.summary() == "valid=true live=true lost-write=1(allowed) unseen=1(allowed)"


def test_allowing_one_type_does_not_hide_another() -> None:
    log = clean_log()
    log.poll(6, (0, "zzz"))
    result = check(log.ops, [], REPLICAS, {"lost-write"})
    assert result.valid is False
    assert list(result.errors) == ["inconsistent-offsets", "unexpected"]


def test_an_unknown_allowed_type_or_workload_is_an_error_not_a_silent_pass() -> None:
    with pytest.raises(ValueError, match=r"allowed error types \['lost-writes'\] are not reported"):
        check(clean_log().ops, [], REPLICAS, {"lost-writes"})
    with pytest.raises(ValueError, match="no checkers for workload 'queue'"):
        check(clean_log().ops, [], REPLICAS, set(), CheckConfig(workload="queue"))


def test_info_sends_read_or_unread_keep_a_run_valid() -> None:
    log = Log()
    log.send(0, "a", outcome="info")  # read below
    log.send(1, "b", outcome="info")  # never read
    log.send(2, "c", 1)
    log.poll(5, (0, "a"), (1, "c"))
    log.final_read(9, (0, "a"), (1, "c"))
    result = check(log.ops, [], REPLICAS, set())
    assert (result.valid, result.liveness.valid, exit_code(result)) == (True, True, 0)


def test_a_failed_send_that_was_read_is_g1a() -> None:
    log = clean_log()
    log.send(1, "x", outcome="fail")
    log.poll(6, (2, "x"))
    result = check(log.ops, [], REPLICAS, set())
    assert list(result.errors) == ["G1a"]
    assert exit_code(result) == 1


def test_a_liveness_failure_alone_gives_exit_code_2() -> None:
    log = Log()
    log.send(0, "a", 0)
    log.final_read(9, (0, "a"), caught_up=False)
    result = check(log.ops, [], REPLICAS, set())
    assert (result.valid, result.liveness.valid, exit_code(result)) == (True, False, 2)
    assert list(result.liveness.failures) == ["final-read-incomplete"]
    assert result.summary() == "valid=true live=false final-read-incomplete=1"


def test_allowed_liveness_types_do_not_fail_liveness() -> None:
    log = Log()
    log.send(0, "a", 0)
    log.final_read(9, (0, "a"), caught_up=False)
    result = check(log.ops, [], REPLICAS, {"final-read-incomplete"})
    assert (result.liveness.valid, exit_code(result)) == (True, 0)
    assert list(result.liveness.allowed) == ["final-read-incomplete"]


def test_a_safety_violation_wins_over_a_liveness_failure() -> None:
    log = Log()
    log.send(0, "a", 0)
    log.final_read(9, caught_up=False)
    result = check(log.ops, [], REPLICAS, set())
    assert (result.valid, result.liveness.valid, exit_code(result)) == (False, False, 1)


def test_an_empty_history_is_unknown_with_exit_code_3() -> None:
    result = check([], [], REPLICAS, set())
    assert (result.valid, result.liveness.valid, exit_code(result)) == (None, None, 3)
    assert result.notes == ("empty history: nothing to judge",)


def test_a_missing_replica_report_makes_a_clean_run_unknown_but_not_a_broken_one() -> None:
    result = check(clean_log().ops, [], None, set())
    assert (result.valid, exit_code(result)) == (None, 3)
    assert result.unchecked == {"replica-divergence": "no replica report was collected"}
    assert result.liveness.unchecked == {"replicas-not-converged": "no replica report was collected"}

    broken = clean_log()
    broken.poll(6, (0, "zzz"))
    assert exit_code(check(broken.ops, [], None, set())) == 1


def test_diverged_replicas_are_a_safety_violation() -> None:
    replicas = {"t/0": {**REPLICAS["t/0"], "3": {"commit_index": 2, "upto": 2, "checksum": "other"}}}
    result = check(clean_log().ops, [], replicas, set())
    assert list(result.errors) == ["replica-divergence"]


def test_a_majority_fault_without_progress_fails_liveness() -> None:
    log = clean_log()
    windows = [FaultWindow(1, "kill", (2,), start=0.0, stop=100.0, keeps_majority=True)]
    result = check(log.ops, windows, REPLICAS, set(), CheckConfig(progress_grace_s=6.0))
    assert list(result.liveness.failures) == ["no-progress-during-fault"]
    assert exit_code(result) == 2


@pytest.mark.parametrize(
    ("valid", "live", "code"),
    [
        (True, True, 0),
        (False, True, 1),
        (False, False, 1),
        (False, None, 1),
        (True, False, 2),
        (None, True, 3),
        (None, False, 3),
        (True, None, 3),
    ],
)
def test_exit_codes(valid: bool | None, live: bool | None, code: int) -> None:
    result = Result("log", valid, {}, {}, {}, LivenessResult(live), {})
    assert exit_code(result) == code


# ------------------------------------------------------------------------------- stats, json, notes
def test_stats_count_ops_by_f_and_type_and_time_the_oks() -> None:
    log = clean_log()
    log.send(1, "c", outcome="fail")
    log.send(2, "d", outcome="info")
    log.recorder.invoke(3, "send", {"key": "k", "value": "e", "partition": 0})  # never completed
    stats = check(log.ops, [], REPLICAS, {"unseen"}).stats
    assert stats["ops"] == 7
    assert stats["by_f"]["send"] == {"ok": 2, "fail": 1, "info": 2}
    assert stats["by_f"]["poll"] == {"ok": 1, "fail": 0, "info": 0}
    latency = stats["latency_s"]["send"]
    assert latency["count"] == 2
    assert latency["p50"] == pytest.approx(0.01) and latency["p99"] == pytest.approx(0.01)


def test_result_to_json_is_complete_and_parseable() -> None:
    log = clean_log()
    log.poll(6, (5, "zzz"))
    data = json.loads(check(log.ops, [], REPLICAS, {"unexpected"}).to_json())
    assert data["valid"] is True
    assert data["exit_code"] == 0
    assert data["allowed_errors"]["unexpected"]["count"] == 1
    assert data["allowed_errors"]["unexpected"]["examples"][0]["value"] == "zzz"
    assert data["liveness"] == {"valid": True, "failures": {}, "allowed": {}, "unchecked": {}}
    assert set(data) == {
        "workload",
        "valid",
        "errors",
        "allowed_errors",
        "unchecked",
        "liveness",
        "stats",
        "notes",
        "exit_code",
    }


def test_a_value_sent_twice_is_noted() -> None:
    log = clean_log()
    log.send(1, "a", 7)
    result = check(log.ops, [], REPLICAS, {"unseen", "duplicate"})
    assert result.notes == ("value 'a' sent twice (ops 0 and 8): a workload bug",)


# ------------------------------------------------------------------------------- files end to end
def test_check_a_run_from_its_files(tmp_path: Path) -> None:
    moments = iter(float(n) for n in range(1000))
    now = lambda: next(moments)  # noqa: E731 - one shared fake clock for both files
    with (
        HistoryWriter(tmp_path / "history.jsonl", now) as writer,
        NemesisWriter(tmp_path / "nemesis.jsonl", now) as nemesis,
    ):
        log = Log(writer)
        log.send(0, "a", 0)
        nemesis.record("start", 1, "partition", [[1], [2, 3]], True)
        for n in range(1, 12):
            log.send(0, f"v{n}", n)
        nemesis.record("stop", 1, "partition", [[1], [2, 3]], True)
        log.final_read(9, (0, "a"), *[(n, f"v{n}") for n in range(1, 12)])
    history = load_history(tmp_path / "history.jsonl")
    windows = fault_windows(load_nemesis(tmp_path / "nemesis.jsonl"))
    result = check(history, windows, REPLICAS, set())
    assert (result.valid, result.liveness.valid, exit_code(result)) == (True, True, 0)
    assert result.stats["ops"] == 13


# ------------------------------------------------------------------------------- the registry
@pytest.fixture
def scratch_workload() -> Iterator[str]:
    name = "scratch-groups"
    yield name
    WORKLOADS.pop(name, None)


def test_a_new_workload_plugs_in_its_own_checkers(scratch_workload: str) -> None:
    def overlapping_ownership(inputs: CheckInput) -> list[dict[str, object]]:
        return [
            {"op": op.index} for op in inputs.history if op.f == "own" and op.type == "ok" and op.value == 2
        ]

    def needs_offsets(inputs: CheckInput) -> list[dict[str, object]]:
        raise CannotCheck("no committed offsets recorded")

    register_workload(
        scratch_workload,
        [
            *checkers_for("log"),
            Checker("overlapping-ownership", "safety", overlapping_ownership, "two owners of one partition"),
            Checker("committed-offset-regression", "safety", needs_offsets, "a group's offset went back"),
        ],
    )
    assert error_types(scratch_workload)[-2:] == ["overlapping-ownership", "committed-offset-regression"]
    log = clean_log()
    log.recorder.complete(log.recorder.invoke(7, "own", {}), "ok", 2)
    result = check(log.ops, [], REPLICAS, set(), CheckConfig(workload=scratch_workload))
    assert result.errors == {"overlapping-ownership": Finding(1, ({"op": 9},))}
    assert result.unchecked == {"committed-offset-regression": "no committed offsets recorded"}
    assert error_types("log")[-1] == "no-progress"  # the log workload is untouched


def test_registering_twice_or_with_a_repeated_error_type_is_refused(scratch_workload: str) -> None:
    register_workload(scratch_workload, checkers_for("log"))
    with pytest.raises(ValueError, match="already registered"):
        register_workload(scratch_workload, checkers_for("log"))
    with pytest.raises(ValueError, match=r"more than one checker: \['unseen'\]"):
        twice = checkers_for("log") + tuple(c for c in checkers_for("log") if c.error_type == "unseen")
        register_workload(scratch_workload, twice, replace=True)


def test_the_log_workload_reports_jepsens_error_types() -> None:
    assert error_types("log") == [
        "lost-write",
        "unseen",
        "duplicate",
        "inconsistent-offsets",
        "nonmonotonic-send",
        "stale-offset",
        "poll-skip",
        "nonmonotonic-poll",
        "unexpected",
        "G1a",
        "replica-divergence",
        "no-progress-during-fault",
        "final-read-incomplete",
        "replicas-not-converged",
        "no-progress",
    ]
