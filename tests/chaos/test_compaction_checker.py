"""The compaction workload's checkers on hand-written histories.

For every error type: a small bad history that must be flagged with the right evidence, and a
closely related good one that must pass. ``Compacted`` writes histories in the compaction
vocabulary (:mod:`millpond.chaos.history`): sends carry ``tombstone`` and ``timestamp_ms``, reads
list their null-payload records under ``tombstones``, a final read carries its ``compaction`` facts.

Clock of every test, in ms of wall time: records are written at ``OLD_MS`` (long expired) or
``RECENT_MS``; the completed pass began after ``PASS_AFTER_MS``; the final read ended at
``READ_END_MS``; tombstones are kept ``RETENTION_MS``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from millpond.chaos.checkers import CheckConfig, check, error_types
from millpond.chaos.checkers.base import Example
from millpond.chaos.checkers.compaction import (
    CompactionModel,
    lost_latest,
    not_caught_up,
    payload_mismatches,
    stale_survivors,
)
from millpond.chaos.checkers.model import LogModel
from millpond.chaos.history import HistoryError, HistoryRecorder, Op

RETENTION_MS = 10_000
OLD_MS = 1_000
PASS_AFTER_MS = 50_000
READ_END_MS = 60_000
RECENT_MS = 55_000  # not expired at the end of the read: 55_000 >= 60_000 + 1_000 - 10_000

Read = tuple[int, str, str]  # (offset, key, value) in the final read's partition


class Compacted:
    """A ``compaction`` history, one op pair per call; each helper returns the completion's index."""

    def __init__(self) -> None:
        self.time = 0.0
        self.recorder = HistoryRecorder(now=self._tick)
        self.tombstones: set[str] = set()

    def _tick(self) -> float:
        self.time += 0.01
        return self.time

    @property
    def ops(self) -> list[Op]:
        return self.recorder.ops

    def send(self, process: int, key: str, value: str, offset: int | None = None, outcome: str = "ok",
             tombstone: bool = False, timestamp_ms: int = OLD_MS, partition: int = 0) -> int:
        if tombstone:
            self.tombstones.add(value)
        invoke = self.recorder.invoke(process, "send", {
            "key": key, "value": value, "partition": partition, "tombstone": tombstone,
            "timestamp_ms": timestamp_ms})
        done = dict(invoke.value, offset=offset) if outcome == "ok" else invoke.value
        return self.recorder.complete(invoke, outcome, done).index  # type: ignore[arg-type]

    def _records(self, partition: int, records: tuple[Read, ...],
                 nulls: set[int] | None) -> dict[str, list[list[object]]]:
        if nulls is None:  # what a correct broker returns: null payloads exactly for tombstones
            nulls = {offset for offset, _, value in records if value in self.tombstones}
        return {"records": [[partition, offset, key, value] for offset, key, value in records],
                "tombstones": [[partition, offset] for offset in sorted(nulls)]}

    def poll(self, process: int, *records: Read, nulls: set[int] | None = None, partition: int = 0) -> int:
        invoke = self.recorder.invoke(process, "poll", {})
        return self.recorder.complete(invoke, "ok", self._records(partition, records, nulls)).index

    def final_read(self, process: int, *records: Read, hw: int, point: int | None,
                   pass_after_ms: int | None = PASS_AFTER_MS, caught_up: bool = True,
                   nulls: set[int] | None = None, partition: int = 0) -> int:
        invoke = self.recorder.invoke(process, "final-read", {"partition": partition})
        value = {"partition": partition, "high_watermark": hw, **self._records(partition, records, nulls),
                 "caught_up": caught_up,
                 "compaction": {"point": point, "pass_after_ms": None if point is None else pass_after_ms,
                                "delete_retention_ms": RETENTION_MS, "read_end_ms": READ_END_MS}}
        return self.recorder.complete(invoke, "ok", value).index

    def model(self) -> CompactionModel:
        return CompactionModel.build(self.ops, LogModel.build(self.ops))

    def check(self, checker: Callable[[CompactionModel], list[Example]]) -> list[Example]:
        return checker(self.model())


def updates(history: Compacted) -> list[int]:
    """Key ``k`` written a, b, c at offsets 0..2 (process 0); key ``j`` written x at 3."""
    acks = [history.send(0, "k", value, offset) for offset, value in enumerate("abc")]
    acks.append(history.send(0, "j", "x", 3))
    return acks


# ------------------------------------------------------------------------- compaction-lost-latest
def test_lost_latest_flags_a_key_whose_latest_record_is_missing_after_compaction() -> None:
    history = Compacted()
    acks = updates(history)
    read = history.final_read(9, (3, "j", "x"), hw=4, point=4)
    assert history.check(lost_latest) == [{
        "partition": 0, "key": "k", "offset": 2, "value": "c", "tombstone": False, "timestamp_ms": OLD_MS,
        "known_by": acks[2], "final_read": read, "high_watermark": 4, "read_of_key": [],
        "reason": "missing from the final read",
    }]


def test_lost_latest_flags_an_older_value_read_in_place_of_the_latest() -> None:
    history = Compacted()
    updates(history)
    history.final_read(9, (1, "k", "b"), (3, "j", "x"), hw=4, point=None)  # no point: only (c) applies
    [example] = history.check(lost_latest)
    assert (example["offset"], example["read_of_key"]) == (2, [[1, "b"]])


def test_lost_latest_accepts_exactly_the_latest_record_per_key() -> None:
    history = Compacted()
    updates(history)
    history.final_read(9, (2, "k", "c"), (3, "j", "x"), hw=4, point=4)
    assert history.check(lost_latest) == []


def test_lost_latest_counts_an_info_send_once_it_was_read() -> None:
    history = Compacted()
    updates(history)
    history.send(1, "k", "d", outcome="info")  # landed at 4, as a poll showed
    history.poll(8, (4, "k", "d"))
    history.final_read(9, (2, "k", "c"), (3, "j", "x"), hw=5, point=5)
    [example] = history.check(lost_latest)
    assert (example["value"], example["offset"], example["read_of_key"]) == ("d", 4, [[2, "c"]])


def test_lost_latest_ignores_an_info_send_nobody_read() -> None:
    history = Compacted()
    updates(history)
    history.send(1, "k", "d", outcome="info")
    history.final_read(9, (2, "k", "c"), (3, "j", "x"), hw=4, point=4)
    assert history.check(lost_latest) == []


def test_lost_latest_accepts_a_latest_tombstone_gone_once_it_may_have_expired() -> None:
    history = Compacted()
    updates(history)
    history.send(0, "k", "t", 4, tombstone=True, timestamp_ms=OLD_MS)
    history.final_read(9, (3, "j", "x"), hw=5, point=5)
    assert history.check(lost_latest) == []


def test_lost_latest_flags_a_latest_tombstone_gone_before_it_could_expire() -> None:
    history = Compacted()
    updates(history)
    history.send(0, "k", "t", 4, tombstone=True, timestamp_ms=RECENT_MS)
    history.final_read(9, (3, "j", "x"), hw=5, point=5)
    [example] = history.check(lost_latest)
    assert (example["value"], example["tombstone"], example["timestamp_ms"]) == ("t", True, RECENT_MS)


def test_lost_latest_excuses_a_missing_latest_an_unread_expired_info_tombstone_may_have_deleted() -> None:
    history = Compacted()
    updates(history)
    history.send(1, "k", "t", outcome="info", tombstone=True, timestamp_ms=OLD_MS)
    history.final_read(9, (3, "j", "x"), hw=5, point=5)
    assert history.check(lost_latest) == []


def test_lost_latest_does_not_excuse_it_when_no_unexplained_offset_is_left_for_the_tombstone() -> None:
    history = Compacted()
    updates(history)
    history.send(1, "k", "t", outcome="info", tombstone=True, timestamp_ms=OLD_MS)
    history.final_read(9, (3, "j", "x"), hw=4, point=4)  # offsets 0-3 are all acked: t never landed
    assert [example["value"] for example in history.check(lost_latest)] == ["c"]


def test_lost_latest_does_not_excuse_it_by_an_info_tombstone_too_recent_to_have_expired() -> None:
    history = Compacted()
    updates(history)
    history.send(1, "k", "t", outcome="info", tombstone=True, timestamp_ms=RECENT_MS)
    history.final_read(9, (3, "j", "x"), hw=5, point=5)
    assert [example["value"] for example in history.check(lost_latest)] == ["c"]


def test_lost_latest_names_a_final_read_that_stopped_below_the_latest_offset() -> None:
    history = Compacted()
    updates(history)
    history.final_read(9, (1, "k", "b"), hw=2, point=None)
    assert [(e["key"], e["reason"]) for e in history.check(lost_latest)] == [
        ("j", "beyond the final read's high watermark"), ("k", "beyond the final read's high watermark")]


def test_lost_latest_skips_partitions_without_a_caught_up_final_read() -> None:
    history = Compacted()
    updates(history)
    history.final_read(9, hw=4, point=None, caught_up=False)
    assert history.check(lost_latest) == []


# ---------------------------------------------------------------------- compaction-stale-survivor
def test_stale_survivor_flags_a_superseded_record_below_the_compaction_point() -> None:
    history = Compacted()
    acks = updates(history)
    read = history.final_read(9, (0, "k", "a"), (2, "k", "c"), (3, "j", "x"), hw=4, point=4)
    assert history.check(stale_survivors) == [{
        "partition": 0, "offset": 0, "key": "k", "value": "a", "compaction_point": 4, "final_read": read,
        "superseded_by": {"offset": 2, "value": "c", "tombstone": False, "in_final_read": True,
                          "known_by": acks[2]},
        "reason": "superseded below the compaction point",
    }]


def test_stale_survivor_accepts_records_superseded_only_at_or_above_the_compaction_point() -> None:
    history = Compacted()
    updates(history)
    # The completed pass covered [0, 2): b and c are not below it, a was superseded there by b.
    history.final_read(9, (1, "k", "b"), (2, "k", "c"), (3, "j", "x"), hw=4, point=2)
    assert history.check(stale_survivors) == []


def test_stale_survivor_flags_a_value_that_outlived_its_keys_expired_tombstone() -> None:
    history = Compacted()
    updates(history)
    history.send(0, "k", "t", 4, tombstone=True, timestamp_ms=OLD_MS)
    history.final_read(9, (2, "k", "c"), (3, "j", "x"), hw=5, point=5)
    [example] = history.check(stale_survivors)
    assert example["reason"] == "resurrected: its key's later tombstone is gone"
    assert (example["value"], example["superseded_by"]["value"]) == ("c", "t")
    assert example["superseded_by"]["in_final_read"] is False


def test_stale_survivor_flags_an_expired_tombstone_the_completed_pass_kept() -> None:
    history = Compacted()
    updates(history)
    history.send(0, "k", "t", 4, tombstone=True, timestamp_ms=OLD_MS)
    history.final_read(9, (3, "j", "x"), (4, "k", "t"), hw=5, point=5)
    [example] = history.check(stale_survivors)
    assert example["reason"] == "expired tombstone kept by a pass that ran after it expired"
    assert (example["offset"], example["tombstone_timestamp_ms"], example["pass_after_ms"]) == \
        (4, OLD_MS, PASS_AFTER_MS)


def test_stale_survivor_accepts_a_tombstone_that_had_not_expired_when_the_pass_began() -> None:
    history = Compacted()
    updates(history)
    not_yet = PASS_AFTER_MS - RETENTION_MS - 1_000  # the margin: the pass's clock may lag a little
    history.send(0, "k", "t", 4, tombstone=True, timestamp_ms=not_yet)
    history.final_read(9, (3, "j", "x"), (4, "k", "t"), hw=5, point=5)
    assert history.check(stale_survivors) == []


def test_stale_survivor_is_not_judged_without_a_compaction_point() -> None:
    history = Compacted()
    updates(history)
    history.final_read(9, (0, "k", "a"), (1, "k", "b"), (2, "k", "c"), (3, "j", "x"), hw=4, point=None)
    assert history.check(stale_survivors) == []


def test_stale_survivor_judges_the_last_caught_up_final_read() -> None:
    history = Compacted()
    updates(history)
    history.final_read(9, (0, "k", "a"), (2, "k", "c"), (3, "j", "x"), hw=4, point=4)
    history.final_read(10, (2, "k", "c"), (3, "j", "x"), hw=4, point=4)
    assert history.check(stale_survivors) == []


# ----------------------------------------------------------------------- compaction-not-caught-up
def test_not_caught_up_flags_a_partition_read_without_a_compaction_point() -> None:
    history = Compacted()
    updates(history)
    read = history.final_read(9, (2, "k", "c"), (3, "j", "x"), hw=4, point=None)
    assert history.check(not_caught_up) == [{
        "partition": 0, "final_reads": [{"op": read, "caught_up": True, "compaction_point": None}],
        "reason": "no compaction pass was seen to complete over the whole log before the final read",
    }]


def test_not_caught_up_flags_a_partition_without_a_caught_up_final_read() -> None:
    history = Compacted()
    updates(history)
    history.final_read(9, (2, "k", "c"), hw=4, point=4, caught_up=False)
    assert [example["reason"] for example in history.check(not_caught_up)] == ["no caught-up final read"]


def test_not_caught_up_accepts_a_final_read_with_a_compaction_point() -> None:
    history = Compacted()
    updates(history)
    history.final_read(9, (2, "k", "c"), (3, "j", "x"), hw=4, point=4)
    assert history.check(not_caught_up) == []


# ---------------------------------------------------------- unexpected: payload-kind mismatches
def test_payload_mismatch_flags_a_tombstone_read_with_a_value_and_a_value_read_as_a_tombstone() -> None:
    history = Compacted()
    acks = updates(history)
    tombstone = history.send(0, "j", "t", 4, tombstone=True, timestamp_ms=RECENT_MS)
    poll = history.poll(8, (2, "k", "c"), (4, "j", "t"), nulls={2})
    assert history.check(payload_mismatches) == [
        {"partition": 0, "offset": 2, "key": "k", "value": "c", "reader": poll,
         "reason": "sent with a value, read as a tombstone", "writer": [acks[2] - 1, acks[2]]},
        {"partition": 0, "offset": 4, "key": "j", "value": "t", "reader": poll,
         "reason": "sent as a tombstone, read with a value", "writer": [tombstone - 1, tombstone]},
    ]


def test_payload_mismatch_accepts_tombstones_read_as_tombstones() -> None:
    history = Compacted()
    updates(history)
    history.send(0, "j", "t", 4, tombstone=True, timestamp_ms=RECENT_MS)
    history.poll(8, (2, "k", "c"), (4, "j", "t"))
    history.final_read(9, (2, "k", "c"), (4, "j", "t"), hw=5, point=5)
    assert history.check(payload_mismatches) == []


# ------------------------------------------------------------------------------ the vocabulary
def test_the_model_rejects_a_send_without_its_timestamp() -> None:
    history = Compacted()
    invoke = history.recorder.invoke(0, "send", {"key": "k", "value": "a", "partition": 0})
    history.recorder.complete(invoke, "fail", invoke.value)
    with pytest.raises(HistoryError, match="op 0: send timestamp_ms"):
        history.model()


def test_the_model_rejects_tombstones_that_are_not_among_the_records() -> None:
    history = Compacted()
    updates(history)
    history.poll(8, (2, "k", "c"), nulls={5})
    with pytest.raises(HistoryError, match=r"lists tombstones \[\(0, 5\)\]"):
        history.model()


def test_the_model_rejects_a_final_read_without_its_compaction_facts() -> None:
    history = Compacted()
    invoke = history.recorder.invoke(9, "final-read", {"partition": 0})
    history.recorder.complete(invoke, "ok", {"partition": 0, "high_watermark": 0, "records": [],
                                             "caught_up": True})
    with pytest.raises(HistoryError, match="needs a compaction object"):
        history.model()


# ------------------------------------------------------------------------ registry and verdict
def test_the_compaction_workload_uses_the_log_checkers_that_survive_compaction() -> None:
    types = error_types("compaction")
    assert {"compaction-lost-latest", "compaction-stale-survivor", "compaction-not-caught-up",
            "unexpected", "G1a", "inconsistent-offsets", "replica-divergence",
            "final-read-incomplete", "no-progress"} <= set(types)
    assert not {"lost-write", "unseen", "poll-skip"} & set(types)


def test_a_clean_compacted_history_is_valid_and_a_stale_survivor_is_a_safety_violation() -> None:
    replicas = {"chaos-compact/0": {"1": {"commit_index": 4, "upto": 4, "checksum": "s"},
                                    "2": {"commit_index": 4, "upto": 4, "checksum": "s"}}}
    good = Compacted()
    updates(good)
    good.final_read(9, (2, "k", "c"), (3, "j", "x"), hw=4, point=4)
    result = check(good.ops, [], replicas, config=CheckConfig(workload="compaction"))
    assert (result.valid, result.liveness.valid) == (True, True), result.summary()

    bad = Compacted()
    updates(bad)
    bad.final_read(9, (1, "k", "b"), (2, "k", "c"), (3, "j", "x"), hw=4, point=4)
    result = check(bad.ops, [], replicas, config=CheckConfig(workload="compaction"))
    assert result.valid is False
    assert set(result.errors) == {"compaction-stale-survivor"}
