"""Safety checkers of the ``log`` workload, named after Jepsen's Kafka test (jepsen.tests.kafka).

Each function takes a :class:`~millpond.chaos.checkers.model.LogModel` and returns a list of
examples (empty = no anomaly of that type), ordered by the op that exposes them. The examples
name op indices (``op``, ``ops``) so a report can print the lines of the history that prove them.

Definitions (p = partition, o = offset; "ok send" = a send whose completion is ``ok``):

``lost-write``
    An ok send acknowledged at (p, o) whose value no read ever returned, although some read
    returned an offset > o in p: readers went past it, so it is gone, not late.
``unseen``
    An ok send whose value no read (polls and final-reads) returned by the end of the history.
    Every lost write is also unseen; unseen alone may be a write the final reads did not reach.
``duplicate``
    One value associated (by an ack or a read) with more than one (p, o).
``inconsistent-offsets``
    One (p, o) associated (by acks or reads) with more than one value.
``nonmonotonic-send``
    Within one process, ok sends to one partition, in invoke order, acknowledged at offsets
    that do not increase.
``stale-offset``
    A send invoked after an ok send to the same partition was acknowledged at o (that ok comes
    earlier in the history, from any process) is itself acknowledged at an offset <= o.
``poll-skip``
    Within one process, two consecutively delivered records of one partition (in one poll or in
    successive polls, with no ``assign`` of that partition in between) at offsets a < b, while
    some offset a < x < b is known (acked or read) to hold a record. After an ``assign`` with a
    position s for p, the first record must not skip a known offset s <= x < b. A final-read
    counts as a fresh assign of its partition.
``nonmonotonic-poll``
    Within one process, a record of p delivered at an offset <= the offset of the previous record
    of p it delivered (no ``assign`` of p in between), or below the position an ``assign`` set.
``unexpected``
    A read record that no send invoked: no send of that value, or the send named another
    partition or key.
``G1a``
    Aborted read: a read record whose send completed ``fail`` (the broker said it was not
    written). Jepsen's name for a failed write that is visible.

An ``info`` send is committed only if its value was read: it is never lost or unseen, and a read
of it is not unexpected.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

from .base import Checker, CheckInput, Example
from .model import ConsumerSeek, FinalRead, LogModel, Send, log_model

__all__ = [
    "LOG_SAFETY",
    "aborted_reads",
    "duplicates",
    "inconsistent_offsets",
    "lost_writes",
    "nonmonotonic_polls",
    "nonmonotonic_sends",
    "poll_skips",
    "stale_offsets",
    "unexpected_reads",
    "unseen",
]

SKIPPED_LISTED_MAX = 8
"""How many skipped offsets a poll-skip example lists (``skipped_count`` has them all)."""


def _send_fields(send: Send) -> Example:
    return {
        "partition": send.partition,
        "offset": send.offset,
        "key": send.key,
        "value": send.value,
        "process": send.process,
    }


def lost_writes(model: LogModel) -> list[Example]:
    """``lost-write``: ok sends at (p, o), never read, although a read returned an offset > o in p."""
    found: list[Example] = []
    for send in model.sends:
        if send.offset is None or send.value in model.first_read:  # only ok sends have an offset
            continue
        highest = model.max_read.get(send.partition)
        if highest is not None and highest[0] > send.offset:
            found.append(
                {
                    **_send_fields(send),
                    "writer": send.ops(),
                    "max_read_offset": highest[0],
                    "max_read_op": highest[1],
                }
            )
    return found


def _final_read_summary(reads: list[FinalRead] | None) -> Example | None:
    """The most telling final-read of a partition: caught up if any, else the last one."""
    if not reads:
        return None
    best = next((read for read in reads if read.caught_up), reads[-1])
    return {
        "op": best.completion if best.completion is not None else best.invoke,
        "outcome": best.outcome,
        "high_watermark": best.high_watermark,
        "caught_up": best.caught_up,
        "records": best.records,
    }


def unseen(model: LogModel) -> list[Example]:
    """``unseen``: ok sends whose value no read returned, with the partition's final-read."""
    found: list[Example] = []
    for send in model.sends:
        if send.outcome == "ok" and send.value not in model.first_read:
            found.append(
                {
                    **_send_fields(send),
                    "writer": send.ops(),
                    "final_read": _final_read_summary(model.final_reads.get(send.partition)),
                }
            )
    return found


def duplicates(model: LogModel) -> list[Example]:
    """``duplicate``: a value associated with more than one (partition, offset)."""
    found: list[Example] = []
    for value, positions in model.value_conflicts.items():  # only values with 2+ positions
        listed = sorted(positions.items(), key=lambda item: item[1])
        found.append(
            {
                "value": value,
                "count": len(positions),
                "positions": [
                    {"partition": partition, "offset": offset, "op": op} for (partition, offset), op in listed
                ],
            }
        )
    found.sort(key=lambda example: example["positions"][1]["op"])
    return found


def inconsistent_offsets(model: LogModel) -> list[Example]:
    """``inconsistent-offsets``: a (partition, offset) associated with more than one value."""
    found: list[Example] = []
    for (partition, offset), values in model.offset_conflicts.items():  # only positions with 2+ values
        listed = sorted(values.items(), key=lambda item: item[1])
        found.append(
            {
                "partition": partition,
                "offset": offset,
                "values": [{"value": value, "op": op} for value, op in listed],
            }
        )
    found.sort(key=lambda example: example["values"][1]["op"])
    return found


def nonmonotonic_sends(model: LogModel) -> list[Example]:
    """``nonmonotonic-send``: one process's ok sends to a partition not at increasing offsets."""
    found: list[Example] = []
    last: dict[tuple[int, int], Send] = {}  # (process, partition) -> its previous ok send
    for send in model.sends:
        if send.offset is None:  # not ok
            continue
        slot = (send.process, send.partition)
        previous = last.get(slot)
        if previous is not None and previous.offset is not None:
            if send.offset <= previous.offset:
                found.append(
                    {
                        "process": send.process,
                        "partition": send.partition,
                        "offsets": [previous.offset, send.offset],
                        "values": [previous.value, send.value],
                        "delta": send.offset - previous.offset,
                        "ops": [previous.completion, send.completion],
                    }
                )
        last[slot] = send
    return found


def stale_offsets(model: LogModel) -> list[Example]:
    """``stale-offset``: a send acked at or below an offset acked before it was invoked."""
    found: list[Example] = []
    for send in model.sends:
        earlier = send.acked_before
        if send.offset is not None and earlier is not None and send.offset <= earlier.offset:
            found.append(
                {
                    **_send_fields(send),
                    "writer": send.ops(),
                    "acked_before": {"offset": earlier.offset, "value": earlier.value, "op": earlier.op},
                }
            )
    return found


def _consumer_analysis(model: LogModel) -> tuple[list[Example], list[Example]]:
    """(poll-skip examples, nonmonotonic-poll examples) from one pass over consumer events."""
    skips: list[Example] = []
    backwards: list[Example] = []
    # process -> partition -> (lowest offset allowed next, op that set it, last offset or None
    # after a seek, last value or None)
    tracking: dict[int, dict[int, tuple[int, int, int | None, str | None]]] = {}
    known_offsets = model.known_offsets
    for event in model.consumer_events:
        state = tracking.setdefault(event.process, {})
        if isinstance(event, ConsumerSeek):
            for partition in event.partitions:
                position = event.positions.get(partition)
                if position is None:
                    state.pop(partition, None)
                else:
                    state[partition] = (position, event.op, None, None)
            continue
        for partition, offset, _key, value in event.records:
            previous = state.get(partition)
            state[partition] = (offset + 1, event.op, offset, value)
            if previous is None:
                continue
            floor, previous_op, previous_offset, previous_value = previous
            if offset < floor:
                backwards.append(
                    {
                        "process": event.process,
                        "partition": partition,
                        "previous_offset": previous_offset,
                        "seek_position": floor if previous_offset is None else None,
                        "offset": offset,
                        "delta": offset - (floor - 1 if previous_offset is None else previous_offset),
                        "values": [previous_value, value],
                        "ops": [previous_op, event.op],
                    }
                )
            elif offset > floor:
                known = known_offsets[partition]
                low = bisect_left(known, floor)
                high = bisect_left(known, offset)
                if high > low:
                    skipped = known[low : min(high, low + SKIPPED_LISTED_MAX)]
                    skips.append(
                        {
                            "process": event.process,
                            "partition": partition,
                            "previous_offset": previous_offset,
                            "seek_position": floor if previous_offset is None else None,
                            "offset": offset,
                            "skipped": [
                                {"offset": skipped_offset, "value": model.value_at(partition, skipped_offset)}
                                for skipped_offset in skipped
                            ],
                            "skipped_count": high - low,
                            "ops": [previous_op, event.op],
                        }
                    )
    return skips, backwards


def poll_skips(model: LogModel) -> list[Example]:
    """``poll-skip``: a consumer jumped over offsets known to hold records (see module doc)."""
    return _consumer_analysis(model)[0]


def nonmonotonic_polls(model: LogModel) -> list[Example]:
    """``nonmonotonic-poll``: a consumer went back to or below an offset it had delivered."""
    return _consumer_analysis(model)[1]


def _read_anomalies(model: LogModel) -> tuple[list[Example], list[Example]]:
    """(unexpected examples, G1a examples) over every distinct record read."""
    unexpected: list[Example] = []
    aborted: list[Example] = []
    for record, op in model.read_records.items():
        send = model.send_by_value.get(record.value)
        fields: Example = {
            "partition": record.partition,
            "offset": record.offset,
            "key": record.key,
            "value": record.value,
            "reader": op,
        }
        if send is None:
            unexpected.append({**fields, "reason": "no send of this value", "writer": None})
        elif send.outcome == "fail":
            aborted.append({**fields, "writer": send.ops(), "error": send.error})
        elif send.partition != record.partition:
            unexpected.append(
                {**fields, "reason": f"sent to partition {send.partition}", "writer": send.ops()}
            )
        elif send.key != record.key:
            unexpected.append({**fields, "reason": f"sent with key {send.key!r}", "writer": send.ops()})
    return unexpected, aborted


def unexpected_reads(model: LogModel) -> list[Example]:
    """``unexpected``: records read that no send invoked (value, partition and key)."""
    return _read_anomalies(model)[0]


def aborted_reads(model: LogModel) -> list[Example]:
    """``G1a``: records read whose send failed."""
    return _read_anomalies(model)[1]


def _on_model(check: Callable[[LogModel], list[Example]]) -> Callable[[CheckInput], list[Example]]:
    return lambda inputs: check(inputs.derived(log_model))


def _consumer_of_input(inputs: CheckInput) -> tuple[list[Example], list[Example]]:
    return _consumer_analysis(inputs.derived(log_model))


def _reads_of_input(inputs: CheckInput) -> tuple[list[Example], list[Example]]:
    return _read_anomalies(inputs.derived(log_model))


LOG_SAFETY: tuple[Checker, ...] = (
    Checker("lost-write", "safety", _on_model(lost_writes), "acked, never read, though reads went past it"),
    Checker("unseen", "safety", _on_model(unseen), "acked, never read by the end of the history"),
    Checker("duplicate", "safety", _on_model(duplicates), "one value at more than one (partition, offset)"),
    Checker(
        "inconsistent-offsets",
        "safety",
        _on_model(inconsistent_offsets),
        "one (partition, offset), two values",
    ),
    Checker(
        "nonmonotonic-send",
        "safety",
        _on_model(nonmonotonic_sends),
        "one producer's acks to a partition do not increase",
    ),
    Checker(
        "stale-offset", "safety", _on_model(stale_offsets), "acked at or below an offset acked before it"
    ),
    # The next four come from two shared passes, computed once per check.
    Checker(
        "poll-skip",
        "safety",
        lambda inputs: inputs.derived(_consumer_of_input)[0],
        "a consumer jumped over known records",
    ),
    Checker(
        "nonmonotonic-poll",
        "safety",
        lambda inputs: inputs.derived(_consumer_of_input)[1],
        "a consumer went backwards",
    ),
    Checker(
        "unexpected",
        "safety",
        lambda inputs: inputs.derived(_reads_of_input)[0],
        "a record read that nobody sent",
    ),
    Checker(
        "G1a", "safety", lambda inputs: inputs.derived(_reads_of_input)[1], "a record read whose send failed"
    ),
)
"""The ``log`` workload's safety checkers, in report order."""
