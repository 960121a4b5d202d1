"""The ``group`` workload's checkers on hand-written histories.

For every group error type: a small bad history that must be flagged with the right evidence, and
a closely related good one that must pass -- re-delivery after a rebalance, a zombie member acting
at its old epoch, commits that overlap in time. ``Group`` writes histories in the workload's
vocabulary (:mod:`millpond.chaos.history`).
"""

from __future__ import annotations

from typing import Any

import pytest

from millpond.chaos.checkers import CheckConfig, check, error_types
from millpond.chaos.checkers.base import Example
from millpond.chaos.checkers.group import (
    GroupModel,
    committed_offset_regressions,
    final_commit_incomplete,
    group_skips,
    overlapping_ownership,
)
from millpond.chaos.checkers.model import LogModel
from millpond.chaos.history import HistoryError, HistoryRecorder, Op
from millpond.chaos.workloads.group import GroupOptions

A, B = "member-a", "member-b"
#: Membership processes of members A and B; their poll/commit processes are 10 and 20.
MA, MB = 100, 200


class Group:
    """A ``group`` history, one op pair per call; helpers return the completion's index."""

    def __init__(self) -> None:
        self.time = 0.0
        self.recorder = HistoryRecorder(now=self._tick)

    def _tick(self) -> float:
        self.time += 0.01
        return self.time

    @property
    def ops(self) -> list[Op]:
        return self.recorder.ops

    def pair(self, process: int, f: str, value: Any, outcome: str = "ok", result: Any = None) -> int:
        invoke = self.recorder.invoke(process, f, value)
        completion = value if result is None and outcome == "ok" else result
        return self.recorder.complete(invoke, outcome, completion).index  # type: ignore[arg-type]

    def send(self, partition: int, value: str, offset: int | None, outcome: str = "ok") -> int:
        """Ok sends come from process 0; each other one from a process of its own (retired after it)."""
        invoke = {"key": "k", "value": value, "partition": partition}
        result = dict(invoke, offset=offset) if outcome == "ok" else None
        process = 0 if outcome == "ok" else 1000 + len(self.ops)
        return self.pair(process, "send", invoke, outcome, result)

    def sends(self, partition: int, values: str) -> list[int]:
        """Ok sends of one-letter values at offsets 0, 1, ..."""
        return [self.send(partition, value, offset) for offset, value in enumerate(values)]

    def poll(self, process: int, member: str, epoch: int, *records: tuple[int, int, str]) -> int:
        result = {"records": [[p, o, "k", v] for p, o, v in records], "member": member, "epoch": epoch}
        return self.pair(process, "poll", {}, "ok", result)

    def own(self, process: int, member: str, partitions: list[int], epoch: int) -> int:
        return self.pair(process, "own", {"member": member, "partitions": partitions, "epoch": epoch})

    def release(self, process: int, member: str, partitions: list[int], epoch: int,
                lost: bool = False) -> int:
        value = {"member": member, "partitions": partitions, "epoch": epoch, "lost": lost}
        return self.pair(process, "release", value)

    def crash(self, process: int, member: str, partitions: list[int], epoch: int) -> int:
        return self.pair(process, "crash", {"member": member, "partitions": partitions, "epoch": epoch})

    def start_commit(self, process: int, member: str, offsets: dict[int, int], epoch: int) -> Op:
        value = {"member": member, "offsets": {str(p): o for p, o in offsets.items()}, "epoch": epoch}
        return self.recorder.invoke(process, "commit", value)

    def finish(self, invoke: Op, outcome: str = "ok") -> int:
        return self.recorder.complete(invoke, outcome, invoke.value).index  # type: ignore[arg-type]

    def commit(self, process: int, member: str, offsets: dict[int, int], epoch: int,
               outcome: str = "ok") -> int:
        return self.finish(self.start_commit(process, member, offsets, epoch), outcome)

    def final_committed(self, committed: dict[int, int | None], marks: dict[int, int]) -> int:
        result = {"committed": {str(p): o for p, o in committed.items()},
                  "high_watermarks": {str(p): hw for p, hw in marks.items()}}
        return self.pair(900, "final-committed", {"partitions": sorted(marks)}, "ok", result)

    def final_read(self, partition: int, *records: tuple[int, int, str], hw: int) -> int:
        result = {"partition": partition, "high_watermark": hw, "caught_up": True,
                  "records": [[p, o, "k", v] for p, o, v in records]}
        return self.pair(800 + partition, "final-read", {"partition": partition}, "ok", result)

    def models(self) -> tuple[LogModel, GroupModel]:
        return LogModel.build(self.ops), GroupModel.build(self.ops)


def skips(group: Group) -> list[Example]:
    return group_skips(*group.models())


def regressions(group: Group) -> list[Example]:
    return committed_offset_regressions(group.models()[1])


def overlaps(group: Group) -> list[Example]:
    return overlapping_ownership(group.models()[1])


def incomplete(group: Group) -> list[Example]:
    return final_commit_incomplete(*group.models())


# ------------------------------------------------------------------------------- group-skip
def test_group_skip_flags_a_record_committed_past_that_no_member_delivered() -> None:
    group = Group()
    acks = group.sends(0, "abc")
    group.own(MA, A, [0], 1)
    group.poll(10, A, 1, (0, 0, "a"), (0, 2, "c"))  # b skipped
    commit = group.commit(10, A, {0: 3}, 1)
    group.final_committed({0: 3}, {0: 3})
    assert skips(group) == [{
        "partition": 0, "offset": 1, "key": "k", "value": "b", "send": "ok", "writer": [acks[1] - 1, acks[1]],
        "evidence": acks[1], "committed": 3, "committed_op": commit,
    }]


def test_group_skip_accepts_redelivery_after_a_rebalance() -> None:
    """A processed a and b but its commit did not make it; B re-reads them: at least once, valid."""
    group = Group()
    group.sends(0, "abc")
    group.own(MA, A, [0], 1)
    group.poll(10, A, 1, (0, 0, "a"), (0, 1, "b"))
    group.commit(10, A, {0: 2}, 1, outcome="info")
    group.release(MA, A, [0], 1)
    group.own(MB, B, [0], 2)
    group.poll(20, B, 2, (0, 0, "a"), (0, 1, "b"), (0, 2, "c"))
    group.commit(20, B, {0: 3}, 2)
    group.final_committed({0: 3}, {0: 3})
    assert skips(group) == []
    assert regressions(group) == []
    assert overlaps(group) == []


def test_group_skip_leaves_records_above_the_committed_offset_to_liveness() -> None:
    group = Group()
    group.sends(0, "abc")
    group.own(MA, A, [0], 1)
    group.poll(10, A, 1, (0, 0, "a"))
    group.commit(10, A, {0: 1}, 1)
    group.final_committed({0: 1}, {0: 3})
    assert skips(group) == []  # b and c were never claimed processed...
    assert incomplete(group) == [{  # ...and the group did not get to them: a liveness failure
        "partition": 0, "reason": "committed offset below the high watermark", "committed": 1,
        "high_watermark": 3, "ops": [len(group.ops) - 2, len(group.ops) - 1],
    }]


def test_group_skip_counts_an_info_send_only_once_a_read_proved_it_written() -> None:
    group = Group()
    group.sends(0, "ab")
    group.send(0, "x", None, outcome="info")  # written at offset 2 after all: the final read saw it
    group.send(0, "y", None, outcome="info")  # never seen: maybe never written
    group.own(MA, A, [0], 1)
    group.poll(10, A, 1, (0, 0, "a"), (0, 1, "b"))
    group.commit(10, A, {0: 3}, 1)
    read = group.final_read(0, (0, 0, "a"), (0, 1, "b"), (0, 2, "x"), hw=3)
    group.final_committed({0: 3}, {0: 3})
    assert [(e["value"], e["send"], e["offset"], e["evidence"]) for e in skips(group)] == [
        ("x", "info", 2, read)]


# ------------------------------------------------------------------------------- committed-offset-regression
def test_regression_flags_a_commit_below_one_that_completed_before_it() -> None:
    group = Group()
    first = group.commit(10, A, {0: 10, 1: 4}, 1)
    second = group.commit(20, B, {0: 7, 1: 5}, 2)
    assert regressions(group) == [{
        "partition": 0, "offset": 7, "member": B, "epoch": 2, "ops": [second - 1, second],
        "earlier": {"offset": 10, "op": first},
    }]


def test_regression_ignores_commits_that_overlap_in_time_and_unknown_outcomes() -> None:
    group = Group()
    first = group.start_commit(10, A, {0: 10}, 1)
    second = group.start_commit(20, B, {0: 7}, 2)  # invoked before A's completed...
    group.finish(first)
    group.finish(second)  # ...so it may have been applied first, though it completed last
    group.commit(30, A, {0: 20}, 1, outcome="info")  # perhaps committed, perhaps not
    group.commit(40, B, {0: 12}, 2)
    group.commit(40, B, {0: 12}, 2)  # the same offset again is no regression
    assert regressions(group) == []


def test_regression_flags_a_final_committed_offset_below_an_ok_commit_or_missing() -> None:
    group = Group()
    first = group.commit(10, A, {0: 10, 1: 4, 2: 3}, 1)
    final = group.final_committed({0: 9, 1: None, 2: 3}, {0: 10, 1: 4, 2: 3})
    assert regressions(group) == [
        {"partition": 0, "offset": 9, "final": True, "ops": [final - 1, final],
         "earlier": {"offset": 10, "op": first}},
        {"partition": 1, "offset": None, "final": True, "ops": [final - 1, final],
         "earlier": {"offset": 4, "op": first}},
    ]


def test_regression_accepts_a_final_committed_offset_at_or_above_every_commit() -> None:
    group = Group()
    group.commit(10, A, {0: 10}, 1)
    group.final_committed({0: 10, 1: None}, {0: 12, 1: 0})
    assert regressions(group) == []


# ------------------------------------------------------------------------------- overlapping-ownership
def test_overlap_flags_a_partition_given_while_its_owner_never_released_it() -> None:
    group = Group()
    own_a = group.own(MA, A, [0, 1], 3)
    own_b = group.own(MB, B, [1], 5)
    assert overlaps(group) == [{
        "partition": 1, "members": [A, B], "epochs": [[3, None], [5, None]], "ended": ["open", "open"],
        "ops": [own_a, own_b],
    }]


def test_overlap_flags_intervals_that_share_an_epoch() -> None:
    group = Group()
    own_a = group.own(MA, A, [0], 3)
    own_b = group.own(MB, B, [0], 5)
    release_a = group.release(MA, A, [0], 5)
    release_b = group.release(MB, B, [0], 6, lost=True)
    assert overlaps(group) == [{
        "partition": 0, "members": [A, B], "epochs": [[3, 5], [5, 6]], "ended": ["revoked", "lost"],
        "ops": [own_a, release_a, own_b, release_b],
    }]


def test_overlap_accepts_a_zombie_acting_at_its_old_epoch() -> None:
    """A is cut off, the group moves its partition to B at epoch 5 while A, in real time, still
    believes it owns it: fine, as long as A never held it at epoch 5 or later."""
    group = Group()
    group.own(MA, A, [0], 3)
    group.own(MB, B, [0], 5)
    group.poll(10, A, 3, (0, 0, "a"))
    group.commit(10, A, {0: 4}, 3, outcome="info")  # fenced: refused
    group.release(MA, A, [0], 3, lost=True)
    group.own(MA, A, [1], 6)  # rejoined; the same member id owning something else
    assert overlaps(group) == []


def test_overlap_closes_a_crashed_members_intervals_at_its_last_epoch() -> None:
    group = Group()
    group.own(MA, A, [0, 1], 3)
    group.crash(MA, A, [0, 1], 4)
    group.own(MB, B, [0, 1], 6)
    assert overlaps(group) == []
    group.own(MA, A, [0], 2)  # a crashed member never acts again; if it did, it would overlap
    assert [example["members"] for example in overlaps(group)] == [[A, B]]


def test_overlap_ignores_one_member_owning_a_partition_again() -> None:
    group = Group()
    group.own(MA, A, [0], 3)
    group.release(MA, A, [0], 4)
    group.own(MA, A, [0], 4)
    assert overlaps(group) == []


# ------------------------------------------------------------------------------- final-commit-incomplete
def test_final_commit_incomplete_without_a_final_committed_op() -> None:
    group = Group()
    group.sends(0, "a")
    failed = group.pair(900, "final-committed", {"partitions": [0]}, "fail")
    assert incomplete(group) == [{"reason": "no final-committed completed ok", "ops": [failed - 1]}]


def test_final_commit_incomplete_names_partitions_behind_or_missing() -> None:
    group = Group()
    group.sends(2, "a")  # partition 2 is not in the final-committed op
    final = group.final_committed({0: 5, 1: None, 3: 6}, {0: 5, 1: 0, 3: 7})
    assert incomplete(group) == [
        {"partition": 2, "reason": "partition not reported", "committed": None, "high_watermark": None,
         "ops": [final - 1, final]},
        {"partition": 3, "reason": "committed offset below the high watermark", "committed": 6,
         "high_watermark": 7, "ops": [final - 1, final]},
    ]


# ------------------------------------------------------------------------------- the whole verdict
def _rebalanced_history() -> Group:
    """Two partitions; A owns both, processes some, is revoked from one, crashes; B takes over and
    re-reads what A processed without committing."""
    group = Group()
    group.sends(0, "abc")
    group.sends(1, "xy")
    group.own(MA, A, [0, 1], 1)
    group.poll(10, A, 1, (0, 0, "a"), (1, 0, "x"))
    group.commit(10, A, {0: 1, 1: 1}, 1)
    group.poll(10, A, 1, (0, 1, "b"))
    group.release(MA, A, [1], 1)
    group.own(MB, B, [1], 2)
    group.poll(20, B, 2, (1, 1, "y"))
    group.commit(20, B, {1: 2}, 2)
    group.crash(MA, A, [0], 1)  # b processed, not committed
    group.own(MB, B, [0], 3)
    group.poll(20, B, 3, (0, 1, "b"), (0, 2, "c"))
    group.commit(20, B, {0: 3}, 3)
    group.release(MB, B, [0, 1], 3)
    group.final_committed({0: 3, 1: 2}, {0: 3, 1: 2})
    group.final_read(0, (0, 0, "a"), (0, 1, "b"), (0, 2, "c"), hw=3)
    group.final_read(1, (1, 0, "x"), (1, 1, "y"), hw=2)
    return group


def test_the_group_verdict_accepts_redelivery_after_a_rebalance_and_a_crash() -> None:
    result = check(_rebalanced_history().ops, [], {}, config=CheckConfig(workload="group"))
    assert result.valid is True and result.liveness.valid is True, result.summary()
    assert result.notes == ()


def test_the_group_verdict_reports_each_group_error_type() -> None:
    group = _rebalanced_history()
    group.own(MA, A, [0], 3)  # overlapping ownership (A crashed, yet acts)
    group.commit(30, A, {0: 2}, 3)  # regression from 3
    group.final_committed({0: 2, 1: 2}, {0: 4, 1: 2})  # still below the last commit; and behind hw
    result = check(group.ops, [], {}, config=CheckConfig(workload="group"))
    assert result.valid is False
    assert set(result.errors) == {"overlapping-ownership", "committed-offset-regression"}
    assert set(result.liveness.failures) == {"final-commit-incomplete"}


def test_the_group_workload_has_its_checkers_and_none_that_need_one_ordered_reader() -> None:
    types = error_types("group")
    for name in ("group-skip", "committed-offset-regression", "overlapping-ownership",
                 "final-commit-incomplete", "lost-write", "unexpected", "G1a", "inconsistent-offsets"):
        assert name in types
    assert "poll-skip" not in types and "nonmonotonic-poll" not in types


def test_a_malformed_group_op_is_a_history_error() -> None:
    group = Group()
    group.pair(MA, "own", {"partitions": [0], "epoch": 1})  # no member
    with pytest.raises(HistoryError, match="member"):
        GroupModel.build(group.ops)


# ------------------------------------------------------------------------------- options
def test_group_options_pass_producer_options_to_the_log_workload() -> None:
    options = GroupOptions.parse({"members": "5", "rate": "50", "member_kill_interval_s": "0"})
    assert options.members == 5 and options.member_kill_interval_s == 0
    assert options.producer_options() == {"partitions": "6", "producers": "4", "keys": "12", "rate": "50.0",
                                          "send_timeout_ms": "3000", "replication": "0", "pollers": "0"}
    with pytest.raises(ValueError, match="unknown group workload options"):
        GroupOptions.parse({"pollers": "2"})
    with pytest.raises(ValueError, match="session_timeout_ms"):
        GroupOptions.parse({"session_timeout_ms": "500"})
