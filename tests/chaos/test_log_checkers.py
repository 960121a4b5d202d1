"""The log workload's safety checkers on hand-written histories.

For every error type: a small bad history that must be flagged with the right evidence, and a
closely related good one that must pass. ``Log`` writes histories in the workload's vocabulary.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from millpond.chaos.checkers.base import CannotCheck, Example
from millpond.chaos.checkers.log import (
    aborted_reads,
    duplicates,
    inconsistent_offsets,
    lost_writes,
    nonmonotonic_polls,
    nonmonotonic_sends,
    poll_skips,
    stale_offsets,
    unexpected_reads,
    unseen,
)
from millpond.chaos.checkers.model import LogModel
from millpond.chaos.checkers.replicas import replica_divergence
from millpond.chaos.history import HistoryError, HistoryRecorder, Op

Rec = tuple[int, int, str]  # (partition, offset, value); the key is always "k"


class Log:
    """A ``log`` history, one op pair per call; each helper returns the completion's index."""

    def __init__(self) -> None:
        self.time = 0.0
        self.recorder = HistoryRecorder(now=self._tick)

    def _tick(self) -> float:
        self.time += 0.01
        return self.time

    @property
    def ops(self) -> list[Op]:
        return self.recorder.ops

    def start_send(self, process: int, partition: int, value: str, key: str = "k") -> Op:
        return self.recorder.invoke(process, "send", {"key": key, "value": value, "partition": partition})

    def finish_send(
        self, invoke: Op, offset: int | None = None, outcome: str = "ok", error: str | None = None
    ) -> int:
        value = dict(invoke.value, offset=offset) if outcome == "ok" else None
        return self.recorder.complete(invoke, outcome, value, error=error).index  # type: ignore[arg-type]

    def send(
        self, process: int, partition: int, value: str, offset: int | None = None, outcome: str = "ok"
    ) -> int:
        return self.finish_send(self.start_send(process, partition, value), offset, outcome)

    def assign(self, process: int, partitions: list[int], positions: dict[int, int] | None = None) -> int:
        value = {"partitions": partitions, "positions": {str(p): o for p, o in (positions or {}).items()}}
        return self.recorder.complete(self.recorder.invoke(process, "assign", value), "ok", None).index

    def poll(self, process: int, *records: Rec) -> int:
        value = {"records": [[p, o, "k", v] for p, o, v in records]}
        return self.recorder.complete(self.recorder.invoke(process, "poll", {}), "ok", value).index

    def final_read(
        self, process: int, partition: int, *records: Rec, hw: int = 0, caught_up: bool = True
    ) -> int:
        invoke = self.recorder.invoke(process, "final-read", {"partition": partition})
        value = {
            "partition": partition,
            "high_watermark": hw,
            "records": [[p, o, "k", v] for p, o, v in records],
            "caught_up": caught_up,
        }
        return self.recorder.complete(invoke, "ok", value).index

    def check(self, checker: Callable[[LogModel], list[Example]]) -> list[Example]:
        return checker(LogModel.build(self.ops))


def abcd(log: Log) -> list[int]:
    """Process 0 sends a, b, c, d to partition 0 at offsets 0..3; returns the ack op indices."""
    return [log.send(0, 0, value, offset) for offset, value in enumerate("abcd")]


# ------------------------------------------------------------------------------- lost-write
def test_lost_write_flags_an_acked_offset_that_readers_went_past() -> None:
    log = Log()
    acks = abcd(log)
    reader = log.poll(9, (0, 1, "b"), (0, 2, "c"), (0, 3, "d"))
    assert log.check(lost_writes) == [
        {
            "partition": 0,
            "offset": 0,
            "key": "k",
            "value": "a",
            "process": 0,
            "writer": [acks[0] - 1, acks[0]],
            "max_read_offset": 3,
            "max_read_op": reader,
        }
    ]


def test_lost_write_accepts_a_tail_nobody_has_read_yet() -> None:
    log = Log()
    abcd(log)
    log.poll(9, (0, 0, "a"), (0, 1, "b"))  # c and d not read yet: late, not lost
    assert log.check(lost_writes) == []


def test_lost_write_accepts_a_write_read_by_another_consumer() -> None:
    log = Log()
    abcd(log)
    log.poll(8, (0, 0, "a"), (0, 1, "b"))
    log.poll(9, (0, 2, "c"), (0, 3, "d"))
    assert log.check(lost_writes) == []


def test_lost_write_needs_a_read_strictly_past_the_offset() -> None:
    log = Log()
    log.send(0, 0, "a", 1)
    log.send(1, 0, "b", outcome="info")
    log.poll(9, (0, 1, "b"))  # offset 1 read, but with another value: inconsistent, not lost
    assert log.check(lost_writes) == []
    assert [example["value"] for example in log.check(unseen)] == ["a"]


def test_an_info_send_is_never_lost_even_when_readers_went_past() -> None:
    log = Log()
    log.send(0, 0, "a", outcome="info")
    log.send(1, 0, "b", 1)
    log.poll(9, (0, 1, "b"))
    assert log.check(lost_writes) == []
    assert log.check(unseen) == []


# ------------------------------------------------------------------------------- unseen
def test_unseen_flags_an_acked_send_no_read_returned_with_the_final_read() -> None:
    log = Log()
    ack = log.send(0, 0, "a", 0)
    log.send(0, 0, "b", 1)
    final = log.final_read(7, 0, (0, 1, "b"), hw=2)
    assert log.check(unseen) == [
        {
            "partition": 0,
            "offset": 0,
            "key": "k",
            "value": "a",
            "process": 0,
            "writer": [ack - 1, ack],
            "final_read": {
                "op": final,
                "outcome": "ok",
                "high_watermark": 2,
                "caught_up": True,
                "records": 1,
            },
        }
    ]


def test_unseen_accepts_a_send_only_the_final_read_saw() -> None:
    log = Log()
    log.send(0, 0, "a", 0)
    log.final_read(7, 0, (0, 0, "a"), hw=1)
    assert log.check(unseen) == []


def test_unseen_ignores_failed_and_indeterminate_sends() -> None:
    log = Log()
    log.send(0, 0, "a", outcome="fail")
    log.send(1, 0, "b", outcome="info")
    log.start_send(2, 0, "c")  # never completed: info
    log.final_read(7, 0, hw=0)
    assert log.check(unseen) == []


# ------------------------------------------------------------------------------- duplicate
def test_duplicate_flags_a_value_at_two_offsets() -> None:
    log = Log()
    ack = log.send(0, 0, "a", 0)
    reader = log.poll(9, (0, 0, "a"), (0, 1, "a"))
    assert log.check(duplicates) == [
        {
            "value": "a",
            "count": 2,
            "positions": [
                {"partition": 0, "offset": 0, "op": ack},
                {"partition": 0, "offset": 1, "op": reader},
            ],
        }
    ]


def test_duplicate_flags_a_value_in_two_partitions() -> None:
    log = Log()
    log.send(0, 0, "a", outcome="info")
    log.poll(8, (0, 4, "a"))
    log.poll(9, (1, 4, "a"))
    assert [example["positions"] for example in log.check(duplicates)] == [
        [{"partition": 0, "offset": 4, "op": 3}, {"partition": 1, "offset": 4, "op": 5}]
    ]


def test_duplicate_accepts_one_record_read_many_times() -> None:
    log = Log()
    log.send(0, 0, "a", 0)
    log.poll(8, (0, 0, "a"))
    log.poll(9, (0, 0, "a"))
    log.final_read(7, 0, (0, 0, "a"), hw=1)
    assert log.check(duplicates) == []


# ------------------------------------------------------------------------------- inconsistent-offsets
def test_inconsistent_offsets_flags_two_values_at_one_offset() -> None:
    log = Log()
    ack = log.send(0, 0, "a", 0)
    log.send(1, 0, "b", outcome="info")
    reader = log.poll(9, (0, 0, "b"))
    assert log.check(inconsistent_offsets) == [
        {"partition": 0, "offset": 0, "values": [{"value": "a", "op": ack}, {"value": "b", "op": reader}]}
    ]


def test_inconsistent_offsets_flags_two_acks_at_one_offset() -> None:
    log = Log()
    first = log.send(0, 0, "a", 5)
    second = log.send(1, 0, "b", 5)
    assert log.check(inconsistent_offsets) == [
        {"partition": 0, "offset": 5, "values": [{"value": "a", "op": first}, {"value": "b", "op": second}]}
    ]


def test_inconsistent_offsets_accepts_one_offset_in_two_partitions() -> None:
    log = Log()
    log.send(0, 0, "a", 5)
    log.send(1, 1, "b", 5)
    log.poll(9, (0, 5, "a"), (1, 5, "b"))
    assert log.check(inconsistent_offsets) == []


# ------------------------------------------------------------------------------- nonmonotonic-send
def test_nonmonotonic_send_flags_one_producer_going_backwards_in_a_partition() -> None:
    log = Log()
    first = log.send(0, 0, "a", 5)
    log.send(0, 1, "x", 1)  # another partition in between does not matter
    second = log.send(0, 0, "b", 3)
    assert log.check(nonmonotonic_sends) == [
        {
            "process": 0,
            "partition": 0,
            "offsets": [5, 3],
            "values": ["a", "b"],
            "delta": -2,
            "ops": [first, second],
        }
    ]


def test_nonmonotonic_send_flags_a_repeated_offset() -> None:
    log = Log()
    log.send(0, 0, "a", 5)
    log.send(0, 0, "b", 5)
    assert [example["delta"] for example in log.check(nonmonotonic_sends)] == [0]


def test_nonmonotonic_send_accepts_decreasing_offsets_across_partitions_or_processes() -> None:
    log = Log()
    log.send(0, 0, "a", 5)
    log.send(0, 1, "b", 3)  # other partition
    log.send(1, 0, "c", 6)
    log.send(2, 0, "d", 7)
    log.send(0, 0, "e", 8)
    assert log.check(nonmonotonic_sends) == []


# ------------------------------------------------------------------------------- stale-offset
def test_stale_offset_flags_a_send_acked_below_an_earlier_ack() -> None:
    log = Log()
    earlier = log.send(0, 0, "a", 5)
    later = log.send(1, 0, "b", 4)  # invoked after a was acked at 5
    assert log.check(stale_offsets) == [
        {
            "partition": 0,
            "offset": 4,
            "key": "k",
            "value": "b",
            "process": 1,
            "writer": [later - 1, later],
            "acked_before": {"offset": 5, "value": "a", "op": earlier},
        }
    ]
    assert log.check(nonmonotonic_sends) == []  # two processes: only the real-time order is broken


def test_stale_offset_flags_a_send_acked_at_the_same_offset_as_an_earlier_ack() -> None:
    log = Log()
    log.send(0, 0, "a", 5)
    log.send(1, 0, "b", 5)
    assert [(e["offset"], e["acked_before"]["offset"]) for e in log.check(stale_offsets)] == [(5, 5)]


def test_stale_offset_accepts_concurrent_sends_acked_in_either_order() -> None:
    log = Log()
    a = log.start_send(0, 0, "a")
    b = log.start_send(1, 0, "b")  # invoked before a was acked: concurrent
    log.finish_send(a, 5)
    log.finish_send(b, 4)
    assert log.check(stale_offsets) == []


def test_stale_offset_ignores_other_partitions_and_failed_sends() -> None:
    log = Log()
    log.send(0, 0, "a", 5)
    log.send(1, 1, "b", 0)
    log.send(2, 0, "c", outcome="fail")
    log.send(3, 0, "d", 6)
    assert log.check(stale_offsets) == []


# ------------------------------------------------------------------------------- poll-skip
def test_poll_skip_flags_a_consumer_jumping_over_a_known_record() -> None:
    log = Log()
    abcd(log)
    first = log.poll(9, (0, 0, "a"), (0, 1, "b"))
    second = log.poll(9, (0, 3, "d"))
    assert log.check(poll_skips) == [
        {
            "process": 9,
            "partition": 0,
            "previous_offset": 1,
            "seek_position": None,
            "offset": 3,
            "skipped": [{"offset": 2, "value": "c"}],
            "skipped_count": 1,
            "ops": [first, second],
        }
    ]


def test_poll_skip_flags_a_jump_inside_one_poll() -> None:
    log = Log()
    abcd(log)
    poll = log.poll(9, (0, 0, "a"), (0, 2, "c"))
    assert [(e["previous_offset"], e["offset"], e["ops"]) for e in log.check(poll_skips)] == [
        (0, 2, [poll, poll])
    ]


def test_poll_skip_knows_records_from_later_acks_too() -> None:
    log = Log()
    log.poll(9, (0, 0, "a"))
    log.poll(9, (0, 2, "c"))
    log.send(0, 0, "b", 1)  # acked late: offset 1 held a record all along
    assert [e["skipped"] for e in log.check(poll_skips)] == [[{"offset": 1, "value": "b"}]]


def test_poll_skip_accepts_a_gap_with_no_known_record() -> None:
    log = Log()
    log.send(0, 0, "a", 0)
    log.send(0, 0, "c", 2)  # nothing known at offset 1 (a transaction marker, say)
    log.poll(9, (0, 0, "a"))
    log.poll(9, (0, 2, "c"))
    assert log.check(poll_skips) == []


def test_poll_skip_accepts_a_jump_after_an_assign() -> None:
    log = Log()
    abcd(log)
    log.poll(9, (0, 0, "a"), (0, 1, "b"))
    log.assign(9, [0])
    log.poll(9, (0, 3, "d"))
    assert log.check(poll_skips) == []


def test_poll_skip_measures_the_first_poll_after_an_assign_from_its_position() -> None:
    log = Log()
    abcd(log)
    assign = log.assign(9, [0], {0: 1})
    poll = log.poll(9, (0, 3, "d"))
    examples = log.check(poll_skips)
    seek = assign - 1  # the assign's invoke: from there on the consumer reads from position 1
    assert [(e["seek_position"], e["previous_offset"], e["ops"]) for e in examples] == [
        (1, None, [seek, poll])
    ]
    assert examples[0]["skipped"] == [{"offset": 1, "value": "b"}, {"offset": 2, "value": "c"}]

    good = Log()
    abcd(good)
    good.assign(9, [0], {0: 3})
    good.poll(9, (0, 3, "d"))
    assert good.check(poll_skips) == []


def test_poll_skip_treats_each_final_read_as_a_fresh_start() -> None:
    log = Log()
    abcd(log)
    log.poll(9, (0, 0, "a"))
    log.final_read(9, 0, (0, 2, "c"), (0, 3, "d"), hw=4)  # starts anywhere, but must not skip inside
    assert log.check(poll_skips) == []
    log.final_read(8, 0, (0, 0, "a"), (0, 3, "d"), hw=4)
    assert [(e["process"], e["skipped_count"]) for e in log.check(poll_skips)] == [(8, 2)]


# ------------------------------------------------------------------------------- nonmonotonic-poll
def test_nonmonotonic_poll_flags_a_consumer_going_back() -> None:
    log = Log()
    abcd(log)
    first = log.poll(9, (0, 0, "a"), (0, 1, "b"), (0, 2, "c"))
    second = log.poll(9, (0, 1, "b"), (0, 2, "c"), (0, 3, "d"))
    assert log.check(nonmonotonic_polls) == [
        {
            "process": 9,
            "partition": 0,
            "previous_offset": 2,
            "seek_position": None,
            "offset": 1,
            "delta": -1,
            "values": ["c", "b"],
            "ops": [first, second],
        }
    ]  # one example: after going back, the consumer is followed from where it went


def test_nonmonotonic_poll_flags_a_record_delivered_twice_in_a_row() -> None:
    log = Log()
    abcd(log)
    log.poll(9, (0, 0, "a"), (0, 0, "a"))
    assert [e["delta"] for e in log.check(nonmonotonic_polls)] == [0]


def test_nonmonotonic_poll_flags_a_read_below_the_assigned_position() -> None:
    log = Log()
    abcd(log)
    assign = log.assign(9, [0], {0: 2})
    poll = log.poll(9, (0, 1, "b"))
    assert [(e["seek_position"], e["offset"], e["ops"]) for e in log.check(nonmonotonic_polls)] == [
        (2, 1, [assign - 1, poll])  # the assign's invoke set the position
    ]


def test_nonmonotonic_poll_accepts_rereading_after_an_assign_and_other_consumers() -> None:
    log = Log()
    abcd(log)
    log.poll(9, (0, 0, "a"), (0, 1, "b"))
    log.assign(9, [0], {0: 0})
    log.poll(9, (0, 0, "a"))
    log.poll(8, (0, 0, "a"))  # another process has its own position
    log.poll(9, (1, 0, "x"), (0, 1, "b"))  # partitions are tracked separately
    assert log.check(nonmonotonic_polls) == []


# ------------------------------------------------------------------------------- unexpected and G1a
def test_unexpected_flags_a_value_nobody_sent() -> None:
    log = Log()
    log.send(0, 0, "a", 0)
    reader = log.poll(9, (0, 0, "a"), (0, 1, "zzz"))
    assert log.check(unexpected_reads) == [
        {
            "partition": 0,
            "offset": 1,
            "key": "k",
            "value": "zzz",
            "reader": reader,
            "reason": "no send of this value",
            "writer": None,
        }
    ]


def test_unexpected_flags_a_value_read_from_another_partition_than_it_was_sent_to() -> None:
    log = Log()
    ack = log.send(0, 1, "a", outcome="info")
    log.poll(9, (0, 0, "a"))
    assert [(e["reason"], e["writer"]) for e in log.check(unexpected_reads)] == [
        ("sent to partition 1", [ack - 1, ack])
    ]


def test_unexpected_flags_a_value_read_with_another_key() -> None:
    log = Log()
    invoke = log.recorder.invoke(0, "send", {"key": "k1", "value": "a", "partition": 0})
    log.finish_send(invoke, 0)
    log.poll(9, (0, 0, "a"))  # read with key "k"
    assert [e["reason"] for e in log.check(unexpected_reads)] == ["sent with key 'k1'"]


def test_reading_an_info_send_or_an_unfinished_send_is_not_unexpected() -> None:
    log = Log()
    log.send(0, 0, "a", outcome="info")
    log.start_send(1, 0, "b")
    log.poll(9, (0, 0, "a"), (0, 1, "b"))
    assert log.check(unexpected_reads) == []
    assert log.check(aborted_reads) == []


def test_g1a_flags_a_failed_send_that_was_read() -> None:
    log = Log()
    invoke = log.start_send(0, 0, "a")
    failed = log.finish_send(invoke, outcome="fail", error="NOT_LEADER")
    reader = log.poll(9, (0, 0, "a"))
    assert log.check(aborted_reads) == [
        {
            "partition": 0,
            "offset": 0,
            "key": "k",
            "value": "a",
            "reader": reader,
            "writer": [invoke.index, failed],
            "error": "NOT_LEADER",
        }
    ]
    assert log.check(unexpected_reads) == []


def test_g1a_accepts_a_failed_send_nobody_read() -> None:
    log = Log()
    log.send(0, 0, "a", outcome="fail")
    log.send(1, 0, "b", 0)
    log.poll(9, (0, 0, "b"))
    assert log.check(aborted_reads) == []


# ------------------------------------------------------------------------------- replica-divergence
def replica(commit_index: int, upto: int, checksum: str) -> dict[str, object]:
    return {"commit_index": commit_index, "upto": upto, "checksum": checksum}


def test_replica_divergence_flags_different_checksums_up_to_the_same_offset() -> None:
    report = {
        "t/0": {"1": replica(10, 9, "aa"), "2": replica(10, 9, "aa"), "3": replica(11, 9, "bb")},
        "t/1": {"1": replica(4, 4, "cc"), "2": replica(4, 4, "cc")},
    }
    assert replica_divergence(report) == [
        {
            "partition": "t/0",
            "upto": 9,
            "checksums": {"1": "aa", "2": "aa", "3": "bb"},
            "commit_index": {"1": 10, "2": 10, "3": 11},
        }
    ]


def test_replica_divergence_accepts_equal_checksums_and_lagging_commit_indexes() -> None:
    report = {"t/0": {"1": replica(10, 8, "aa"), "2": replica(12, 8, "aa")}}
    assert replica_divergence(report) == []
    assert replica_divergence({}) == []


@pytest.mark.parametrize(
    ("report", "message"),
    [
        (None, "no replica report"),
        ({"t/0": {"1": replica(3, 3, "a"), "2": replica(3, 2, "a")}}, "different offsets"),
        ({"t/0": {"1": {"commit_index": 3, "upto": 3}}}, "malformed entry"),
        ({"t/0": {"1": replica(3, 3, 7)}}, "malformed entry"),  # type: ignore[arg-type]
    ],
)
def test_replica_divergence_cannot_check_a_missing_or_malformed_report(report: object, message: str) -> None:
    with pytest.raises(CannotCheck, match=message):
        replica_divergence(report)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- the model
def test_the_model_rejects_a_malformed_op_by_index() -> None:
    log = Log()
    invoke = log.start_send(0, 0, "a")
    log.recorder.complete(invoke, "ok", {"key": "k", "value": "a", "partition": 0})  # no offset
    with pytest.raises(HistoryError, match=r"op 1: ok send value needs 'offset'"):
        LogModel.build(log.ops)


def test_the_model_rejects_a_malformed_record() -> None:
    log = Log()
    invoke = log.recorder.invoke(9, "poll", {})
    log.recorder.complete(invoke, "ok", {"records": [[0, 0, "a"]]})
    with pytest.raises(HistoryError, match=r"op 1: poll record must be \[partition, offset, key, value\]"):
        LogModel.build(log.ops)


def test_the_model_rejects_an_ack_in_another_partition() -> None:
    log = Log()
    invoke = log.start_send(0, 0, "a")
    log.recorder.complete(invoke, "ok", {"key": "k", "value": "a", "partition": 2, "offset": 0})
    with pytest.raises(HistoryError, match="acknowledged in partition 2, invoked for partition 0"):
        LogModel.build(log.ops)


def test_the_model_ignores_ops_of_other_workloads() -> None:
    log = Log()
    log.send(0, 0, "a", 0)
    log.recorder.complete(log.recorder.invoke(5, "commit-offsets", {"group": "g"}), "ok", None)
    model = LogModel.build(log.ops)
    assert [send.value for send in model.sends] == ["a"]
    assert model.partitions == {0}


# ------------------------------------------------------------------------------- performance
def big_history(sends: int, partitions: int = 4, batch: int = 16) -> list[Op]:
    """A clean history: ``sends`` acked sends, consumers polling them in batches, final reads."""
    ops: list[Op] = []

    def add(process: int, type: str, f: str, value: object) -> None:
        ops.append(Op(len(ops), len(ops) * 0.001, process, type, f, value))  # type: ignore[arg-type]

    offsets = [0] * partitions
    logs: list[list[list[object]]] = [[] for _ in range(partitions)]
    for n in range(sends):
        partition = n % partitions
        value = f"v{n}"
        add(n % 20, "invoke", "send", {"key": "k", "value": value, "partition": partition})
        add(
            n % 20,
            "ok",
            "send",
            {"key": "k", "value": value, "partition": partition, "offset": offsets[partition]},
        )
        logs[partition].append([partition, offsets[partition], "k", value])
        offsets[partition] += 1
    for partition in range(partitions):
        consumer = 100 + partition
        add(consumer, "invoke", "assign", {"partitions": [partition], "positions": {str(partition): 0}})
        add(consumer, "ok", "assign", None)
        for start in range(0, len(logs[partition]), batch):
            add(consumer, "invoke", "poll", {})
            add(consumer, "ok", "poll", {"records": logs[partition][start : start + batch]})
        add(200 + partition, "invoke", "final-read", {"partition": partition})
        final = {"partition": partition, "high_watermark": offsets[partition], "caught_up": True}
        add(200 + partition, "ok", "final-read", {**final, "records": logs[partition]})
    return ops


def test_all_log_checkers_handle_200k_ops_in_a_few_seconds() -> None:
    history = big_history(95_000)
    assert len(history) > 200_000
    started = time.perf_counter()
    model = LogModel.build(history)
    for checker in (
        lost_writes,
        unseen,
        duplicates,
        inconsistent_offsets,
        nonmonotonic_sends,
        stale_offsets,
        poll_skips,
        nonmonotonic_polls,
        unexpected_reads,
        aborted_reads,
    ):
        assert checker(model) == [], checker.__name__
    elapsed = time.perf_counter() - started
    # A few seconds on a quiet core; the bound is loose for a shared one, and still far below
    # what any quadratic scan over 200k ops would take.
    assert elapsed < 20, f"checking took {elapsed:.1f}s"
