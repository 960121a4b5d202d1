"""What a ``log`` workload history says, indexed once: sends by value, reads, offset facts.

The vocabulary is the contract in :mod:`millpond.chaos.history`'s docstring. Building a
:class:`LogModel` walks the history once (plus sorting offsets per partition), so every checker
afterwards is a linear scan or a dictionary lookup: 200k ops take well under a second or two.

Facts are associations of a record ``value`` with a position ``(partition, offset)``, from two
sources: an ``ok`` send's acknowledgement, and any record an ``ok`` poll or final-read returned.
Values are unique per run, so a value names a record.

Ops with an ``f`` outside the vocabulary are ignored (other workloads may share a history).
A malformed op of the vocabulary raises :class:`~millpond.chaos.history.HistoryError` naming
its index: a workload bug must not pass for a clean run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from millpond.chaos.history import HistoryError, Op, OpPair, OpType, pair_ops

from .base import CheckInput

__all__ = [
    "Acked",
    "ConsumerRecords",
    "ConsumerSeek",
    "FinalRead",
    "LogModel",
    "Position",
    "Record",
    "Send",
    "log_model",
    "op_pairs",
]

Position = tuple[int, int]
"""(partition, offset)."""


class Record(NamedTuple):
    """A record as a read returned it."""

    partition: int
    offset: int
    key: str | None
    value: str


class Acked(NamedTuple):
    """An ``ok`` send's acknowledgement: where it landed and which op said so."""

    offset: int
    value: str
    op: int


@dataclass(slots=True)
class Send:
    """One ``send`` op, invoke and completion together.

    ``outcome`` is ``info`` for a send never completed. ``acked_before`` is the highest offset any
    ``ok`` send to this partition had been acknowledged at when this send was invoked (index
    order), for the stale-offset checker.
    """

    value: str
    key: str | None
    partition: int
    process: int
    invoke: int
    invoke_time: float
    outcome: OpType = "info"
    completion: int | None = None
    completion_time: float | None = None
    offset: int | None = None
    error: str | None = None
    acked_before: Acked | None = None

    def ops(self) -> list[int]:
        """Op indices of the invoke and, if any, the completion."""
        return [self.invoke] if self.completion is None else [self.invoke, self.completion]


@dataclass(frozen=True, slots=True)
class FinalRead:
    """One ``final-read`` op: ``outcome`` info/fail leave the other fields None/0."""

    partition: int
    process: int
    invoke: int
    completion: int | None
    outcome: OpType
    high_watermark: int | None
    caught_up: bool
    records: int


@dataclass(frozen=True, slots=True)
class ConsumerSeek:
    """A process (re)starts tracking ``partitions``: an ``assign`` or ``final-read`` invoke.

    ``positions`` maps some of them to the offset the next read starts at.
    """

    process: int
    op: int
    partitions: tuple[int, ...]
    positions: dict[int, int]


@dataclass(frozen=True, slots=True)
class ConsumerRecords:
    """Records one ``ok`` poll or final-read of ``process`` delivered, in delivery order."""

    process: int
    op: int
    records: list[Record]


@dataclass
class LogModel:
    """The indexed facts of one ``log`` history. Build with :meth:`build` or :func:`log_model`."""

    sends: list[Send] = field(default_factory=list)
    """Every send, in invoke order."""
    send_by_value: dict[str, Send] = field(default_factory=dict)
    """The first send of each value."""
    resent_values: list[tuple[str, int, int]] = field(default_factory=list)
    """(value, first invoke, later invoke) for a value sent twice: a workload bug, not an anomaly."""
    offset_value: dict[Position, tuple[str, int]] = field(default_factory=dict)
    """(partition, offset) -> (first value associated with it, first op associating them)."""
    offset_conflicts: dict[Position, dict[str, int]] = field(default_factory=dict)
    """Only positions with more than one value: (partition, offset) -> value -> first op."""
    value_position: dict[str, tuple[Position, int]] = field(default_factory=dict)
    """value -> (first position associated with it, first op associating them)."""
    value_conflicts: dict[str, dict[Position, int]] = field(default_factory=dict)
    """Only values at more than one position: value -> (partition, offset) -> first op."""
    read_records: dict[Record, int] = field(default_factory=dict)
    """Each distinct record any ok poll or final-read returned -> the first op that returned it."""
    first_read: dict[str, int] = field(default_factory=dict)
    """value -> first op that read it."""
    max_read: dict[int, tuple[int, int]] = field(default_factory=dict)
    """partition -> (highest offset read, first op that read it)."""
    known_offsets: dict[int, list[int]] = field(default_factory=dict)
    """partition -> sorted offsets known (acked or read) to hold a record."""
    consumer_events: list[ConsumerSeek | ConsumerRecords] = field(default_factory=list)
    """Seeks and deliveries of all processes, in history order."""
    final_reads: dict[int, list[FinalRead]] = field(default_factory=dict)
    """partition -> its final-read ops, in invoke order."""
    partitions: set[int] = field(default_factory=set)
    """Every partition any send, assign, read or final-read names."""
    ok_send_times: list[float] = field(default_factory=list)
    """Completion times of ok sends, ascending."""

    @classmethod
    def build(cls, history: Sequence[Op], process_rules_checked: bool = False) -> LogModel:
        """Index ``history`` (ops with ``history[i].index == i``).

        The process rules are checked with :func:`~millpond.chaos.history.pair_ops` unless
        ``process_rules_checked`` says the caller already did. Raises :class:`HistoryError` for
        a misnumbered history, broken process rules, or a malformed op of the ``log`` vocabulary.
        """
        for position, op in enumerate(history):
            if op.index != position:
                raise HistoryError(f"op at position {position} has index {op.index}")
        if not process_rules_checked:
            pair_ops(history)
        builder = _Builder(cls())
        for op in history:
            builder.add(op)
        return builder.finish()

    def value_at(self, partition: int, offset: int) -> str | None:
        """The first value associated with (partition, offset), or None if none is known."""
        first = self.offset_value.get((partition, offset))
        return None if first is None else first[0]


class _Builder:
    """One pass over the history, feeding a :class:`LogModel`."""

    def __init__(self, model: LogModel) -> None:
        self.model = model
        self.open_sends: dict[int, Send] = {}  # process -> send invoked, not completed
        self.open_final_reads: dict[int, tuple[int, int]] = {}  # process -> (partition, invoke)
        self.max_acked: dict[int, Acked] = {}

    def add(self, op: Op) -> None:
        if op.f == "send":
            self._send(op)
        elif op.f == "assign":
            if op.type == "invoke":
                self._assign(op)
        elif op.f == "poll":
            if op.type == "ok":
                records = _records(_field(op, "records", list), op)
                self._deliver(op, records)
        elif op.f == "final-read":
            self._final_read(op)

    def finish(self) -> LogModel:
        model = self.model
        for send in self.open_sends.values():  # never completed: info
            model.partitions.add(send.partition)
        known: dict[int, list[int]] = {}
        for partition, offset in model.offset_value:
            offsets = known.get(partition)
            if offsets is None:
                known[partition] = [offset]
            else:
                offsets.append(offset)
        model.known_offsets = {partition: sorted(offsets) for partition, offsets in known.items()}
        for process, (partition, invoke) in self.open_final_reads.items():  # never completed: info
            model.final_reads.setdefault(partition, []).append(
                FinalRead(partition, process, invoke, None, "info", None, False, 0)
            )
        for reads in model.final_reads.values():
            reads.sort(key=lambda read: read.invoke)
        model.ok_send_times.sort()
        return model

    # ------------------------------------------------------------------------------- sends
    def _send(self, op: Op) -> None:
        model = self.model
        if op.type == "invoke":
            value: str = _field(op, "value", str)
            key = _optional_string(op, "key")
            partition = _field(op, "partition", int)
            send = Send(value, key, partition, op.process, op.index, op.time)
            send.acked_before = self.max_acked.get(partition)
            model.sends.append(send)
            earlier = model.send_by_value.get(value)
            if earlier is None:
                model.send_by_value[value] = send
            else:
                model.resent_values.append((value, earlier.invoke, op.index))
            model.partitions.add(partition)
            self.open_sends[op.process] = send
            return
        send = self.open_sends.pop(op.process)  # pair_ops guarantees it exists
        send.outcome = op.type
        send.completion = op.index
        send.completion_time = op.time
        send.error = op.error
        if op.type != "ok":
            return
        offset = _field(op, "offset", int)
        if isinstance(op.value, dict) and op.value.get("partition", send.partition) != send.partition:
            raise HistoryError(
                f"op {op.index}: send acknowledged in partition {op.value['partition']}, "
                f"invoked for partition {send.partition}"
            )
        send.offset = offset
        self._associate(send.partition, offset, send.value, op.index)
        model.ok_send_times.append(op.time)
        best = self.max_acked.get(send.partition)
        if best is None or offset > best.offset:
            self.max_acked[send.partition] = Acked(offset, send.value, op.index)

    # ------------------------------------------------------------------------------- consumers
    def _assign(self, op: Op) -> None:
        partitions = _field(op, "partitions", list)
        if not all(_is_int(partition) for partition in partitions):
            raise HistoryError(f"op {op.index}: assign partitions must be integers, got {partitions!r}")
        raw_positions = op.value.get("positions") or {}
        if not isinstance(raw_positions, dict):
            raise HistoryError(f"op {op.index}: assign positions must be an object, got {raw_positions!r}")
        positions: dict[int, int] = {}
        for name, offset in raw_positions.items():
            try:
                partition = int(name)
            except ValueError:
                raise HistoryError(
                    f"op {op.index}: assign position key {name!r} is not a partition"
                ) from None
            if not _is_int(offset):
                raise HistoryError(
                    f"op {op.index}: assign position of {name} must be an integer, got {offset!r}"
                )
            positions[partition] = offset
        self.model.partitions.update(partitions)
        self.model.consumer_events.append(ConsumerSeek(op.process, op.index, tuple(partitions), positions))

    def _final_read(self, op: Op) -> None:
        model = self.model
        if op.type == "invoke":
            partition = _field(op, "partition", int)
            model.partitions.add(partition)
            self.open_final_reads[op.process] = (partition, op.index)
            model.consumer_events.append(ConsumerSeek(op.process, op.index, (partition,), {}))
            return
        partition, invoke = self.open_final_reads.pop(op.process)
        if op.type != "ok":
            read = FinalRead(partition, op.process, invoke, op.index, op.type, None, False, 0)
        else:
            high_watermark = _field(op, "high_watermark", int)
            caught_up = _field(op, "caught_up", bool)
            records = _records(_field(op, "records", list), op)
            self._deliver(op, records)
            read = FinalRead(
                partition, op.process, invoke, op.index, "ok", high_watermark, caught_up, len(records)
            )
        model.final_reads.setdefault(partition, []).append(read)

    def _deliver(self, op: Op, records: list[Record]) -> None:
        model = self.model
        read_records = model.read_records
        first_read = model.first_read
        max_read = model.max_read
        for record in records:
            if record not in read_records:
                read_records[record] = op.index
                partition, offset, _key, value = record
                self._associate(partition, offset, value, op.index)
                if value not in first_read:
                    first_read[value] = op.index
                best = max_read.get(partition)
                if best is None or offset > best[0]:
                    max_read[partition] = (offset, op.index)
                    model.partitions.add(partition)
        model.consumer_events.append(ConsumerRecords(op.process, op.index, records))

    def _associate(self, partition: int, offset: int, value: str, op: int) -> None:
        """Record that ``value`` was seen at (partition, offset) by ``op``.

        Nearly every position holds one value and every value one position, so the first
        association goes in a flat dict and only a second, different one opens a conflict entry.
        """
        model = self.model
        position = (partition, offset)
        first = model.offset_value.get(position)
        if first is None:
            model.offset_value[position] = (value, op)
        elif first[0] != value:
            conflict = model.offset_conflicts.setdefault(position, {first[0]: first[1]})
            conflict.setdefault(value, op)
        placed = model.value_position.get(value)
        if placed is None:
            model.value_position[value] = (position, op)
        elif placed[0] != position:
            conflict_positions = model.value_conflicts.setdefault(value, {placed[0]: placed[1]})
            conflict_positions.setdefault(position, op)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field(op: Op, name: str, kind: type[Any]) -> Any:
    """``op.value[name]``, checked to be of ``kind``; raises HistoryError naming the op."""
    if not isinstance(op.value, dict) or name not in op.value:
        raise HistoryError(f"op {op.index}: {op.type} {op.f} value needs {name!r}, got {op.value!r}")
    item = op.value[name]
    if (kind is int and not _is_int(item)) or not isinstance(item, kind):
        raise HistoryError(f"op {op.index}: {op.f} {name} must be {kind.__name__}, got {item!r}")
    return item


def _optional_string(op: Op, name: str) -> str | None:
    item = op.value.get(name) if isinstance(op.value, dict) else None
    if item is not None and not isinstance(item, str):
        raise HistoryError(f"op {op.index}: {op.f} {name} must be a string or null, got {item!r}")
    return item


def _records(raw: list[Any], op: Op) -> list[Record]:
    """Validate ``[[partition, offset, key, value], ...]`` into :class:`Record` s."""
    records: list[Record] = []
    for item in raw:
        if (  # exact types: a bool is not an offset
            type(item) is not list
            or len(item) != 4
            or type(item[0]) is not int
            or type(item[1]) is not int
            or (item[2] is not None and type(item[2]) is not str)
            or type(item[3]) is not str
        ):
            raise HistoryError(
                f"op {op.index}: {op.f} record must be [partition, offset, key, value], got {item!r}"
            )
        records.append(Record(item[0], item[1], item[2], item[3]))
    return records


def op_pairs(check: CheckInput) -> list[OpPair]:
    """The history's invoke/completion pairs (cache through ``check.derived(op_pairs)``)."""
    return pair_ops(check.history)


def log_model(check: CheckInput) -> LogModel:
    """The history's :class:`LogModel` (cache through ``check.derived(log_model)``).

    Notes values sent more than once on ``check``: checkers identify records by value, so a
    resent value may show up as a duplicate that the system did not make.
    """
    check.derived(op_pairs)  # pairs once, for the stats too; raises if the process rules break
    model = LogModel.build(check.history, process_rules_checked=True)
    for value, first, later in model.resent_values[:8]:
        check.notes.append(f"value {value!r} sent twice (ops {first} and {later}): a workload bug")
    if len(model.resent_values) > 8:
        check.notes.append(f"{len(model.resent_values)} values sent more than once in all")
    return model
