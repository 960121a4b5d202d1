"""Checkers of the ``compaction`` workload: after compaction, a full read gives every key's latest value.

The workload (:mod:`millpond.chaos.workloads.compaction`) writes the ``log`` vocabulary plus the
compaction fields documented in :mod:`millpond.chaos.history` (``tombstone``/``timestamp_ms`` on
sends, ``tombstones`` on reads, ``compaction`` on the final read). Compaction legitimately
removes superseded records, so ``lost-write``, ``unseen`` and ``poll-skip`` cannot judge it;
what replaces them:

Definitions (per partition p and key k; the *known* records of (p, k) are the ok sends of k to
p at their acknowledged offsets and every record of k any read returned -- an ``info`` send
counts only if it was read; R is p's last ``ok``, caught-up final read; C its compaction point:
a compaction pass with point C completed on the node that served R before R began;
``dr`` = ``delete_retention_ms``; timestamps are the producers' wall clock, on the same host as
the nodes, compared with :data:`CLOCK_MARGIN_MS` of slack):

``compaction-lost-latest`` (safety)
    The latest known record of (p, k) (highest offset) is not in R, and it cannot have been
    removed legitimately: it is not a tombstone that may have expired by the end of R
    (timestamp < R's ``read_end_ms`` + margin - dr), and no unread ``info`` tombstone of k may
    have landed after it and expired, taking it along -- which needs such a tombstone old enough
    to have expired *and* an offset above it, below R's high watermark, that no ack or read
    accounts for (a record that landed there holds that offset for good; had it been read, it
    would be known). Compaction keeps the latest record of every key until it is a tombstone
    older than ``dr``.
``compaction-stale-survivor`` (safety)
    R holds a record of k at offset o < C although a known record of k exists at o' with
    o < o' < C: the completed pass should have removed it (when the record at o' is a tombstone
    that R no longer holds, the key came back from the dead: ``resurrected``). Or R holds a
    tombstone below C that is the latest known record of its key below C and older than the
    completed pass's clock minus dr (``pass_after_ms`` - dr - margin): it had expired when the
    pass ran, so the pass should have dropped it.
``compaction-not-caught-up`` (liveness)
    A partition with no ok, caught-up final read that carries a compaction point: compaction did
    not finish a pass over the whole log within the run's recovery deadline.

The ``unexpected`` checker of this workload is the ``log`` one plus *payload-kind mismatches*:
a read record whose send was a tombstone but that came back with a value, or the reverse.

Offsets never change under compaction: a record read at an offset must be the one acknowledged
there, which ``inconsistent-offsets`` checks (reused from the ``log`` checkers, with
``duplicate``, ``nonmonotonic-send``, ``stale-offset``, ``nonmonotonic-poll``, ``G1a``,
``replica-divergence`` and the log liveness checkers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from millpond.chaos.history import HistoryError, Op

from .base import Checker, CheckInput, Example
from .liveness import LOG_LIVENESS
from .log import LOG_SAFETY, unexpected_reads
from .model import LogModel, Record, log_model
from .replicas import REPLICA_SAFETY

__all__ = [
    "CLOCK_MARGIN_MS",
    "COMPACTION_CHECKERS",
    "COMPACTION_LIVENESS",
    "COMPACTION_SAFETY",
    "CompactionModel",
    "CompactionRead",
    "SendKind",
    "compaction_model",
    "lost_latest",
    "not_caught_up",
    "payload_mismatches",
    "stale_survivors",
]

CLOCK_MARGIN_MS = 1000
"""Slack between the producers' clock (record timestamps) and a leader's (a pass's clock T):
the workload and the nodes share one host, so they differ by scheduling delays only."""


@dataclass(frozen=True, slots=True)
class SendKind:
    """What the compaction vocabulary adds to a send: is it a tombstone, and its record timestamp."""

    tombstone: bool
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class CompactionRead:
    """One ``ok`` final read with its compaction facts (see :mod:`millpond.chaos.history`)."""

    partition: int
    op: int
    caught_up: bool
    high_watermark: int
    records: tuple[Record, ...]
    point: int | None
    """C: a pass with this compaction point had completed before the read began (None: unknown)."""
    pass_after_ms: int | None
    """A wall-clock time before that pass began: its clock T is at least this."""
    delete_retention_ms: int
    read_end_ms: int
    """Wall clock when the read ended: every drop it saw was decided by a pass with T at most this."""


@dataclass
class CompactionModel:
    """The ``log`` model plus the compaction facts of a history. Build with :meth:`build`."""

    log: LogModel
    sends: dict[str, SendKind] = field(default_factory=dict)
    """value -> the tombstone flag and timestamp of its (first) send."""
    final_reads: dict[int, list[CompactionRead]] = field(default_factory=dict)
    """partition -> its ok final reads, in history order."""
    null_reads: dict[int, set[tuple[int, int]]] = field(default_factory=dict)
    """op index -> (partition, offset) of the records that read returned with a null payload."""
    read_ops: dict[int, tuple[Record, ...]] = field(default_factory=dict)
    """op index -> records of every ok poll and final read (for payload-kind mismatches)."""

    @classmethod
    def build(cls, history: Sequence[Op], log: LogModel) -> CompactionModel:
        """Index the compaction fields of ``history``; ``log`` is its :class:`LogModel`.

        Raises :class:`HistoryError` naming the op for a malformed field of the compaction
        vocabulary (a workload bug must not pass for a clean run).
        """
        model = cls(log)
        for op in history:
            if op.f == "send" and op.type == "invoke":
                value = op.value["value"]  # the log model checked the shape
                if value not in model.sends:
                    model.sends[value] = SendKind(_flag(op, "tombstone"), _timestamp(op))
            elif op.f in ("poll", "final-read") and op.type == "ok":
                model._read(op)
        return model

    def _read(self, op: Op) -> None:
        records = tuple(Record(*item) for item in op.value["records"])  # checked by the log model
        self.read_ops[op.index] = records
        raw = op.value.get("tombstones", [])
        if not isinstance(raw, list) or not all(
            type(item) is list and len(item) == 2 and all(type(x) is int for x in item) for item in raw
        ):
            raise HistoryError(f"op {op.index}: {op.f} tombstones must be [[partition, offset], ...], "
                               f"got {raw!r}")
        nulls = {(item[0], item[1]) for item in raw}
        present = {(record.partition, record.offset) for record in records}
        if not nulls <= present:
            raise HistoryError(f"op {op.index}: {op.f} lists tombstones {sorted(nulls - present)} "
                               f"that are not among its records")
        if nulls:
            self.null_reads[op.index] = nulls
        if op.f == "final-read":
            self.final_reads.setdefault(op.value["partition"], []).append(_final_read(op, records))

    def is_tombstone(self, value: str) -> bool:
        """Whether the send of ``value`` was a tombstone (False for a value nobody sent)."""
        kind = self.sends.get(value)
        return kind is not None and kind.tombstone

    def chosen_read(self, partition: int) -> CompactionRead | None:
        """The final read the checks judge: the last ok, caught-up one of ``partition``."""
        reads = [read for read in self.final_reads.get(partition, []) if read.caught_up]
        return reads[-1] if reads else None


def _flag(op: Op, name: str) -> bool:
    item = op.value.get(name, False)
    if not isinstance(item, bool):
        raise HistoryError(f"op {op.index}: send {name} must be true or false, got {item!r}")
    return item


def _timestamp(op: Op) -> int:
    item = op.value.get("timestamp_ms")
    if type(item) is not int or item < 0:
        raise HistoryError(f"op {op.index}: send timestamp_ms must be an integer >= 0, got {item!r}")
    return item


def _optional_int(op: Op, facts: dict[str, Any], name: str) -> int | None:
    item = facts.get(name)
    if item is not None and (type(item) is not int or item < 0):
        raise HistoryError(f"op {op.index}: final-read compaction {name} must be an integer >= 0 or "
                           f"null, got {item!r}")
    return item


def _final_read(op: Op, records: tuple[Record, ...]) -> CompactionRead:
    facts = op.value.get("compaction")
    if not isinstance(facts, dict):
        raise HistoryError(f"op {op.index}: ok final-read needs a compaction object, got {facts!r}")
    point = _optional_int(op, facts, "point")
    pass_after_ms = _optional_int(op, facts, "pass_after_ms")
    retention = _optional_int(op, facts, "delete_retention_ms")
    read_end_ms = _optional_int(op, facts, "read_end_ms")
    if retention is None or read_end_ms is None or (point is None) != (pass_after_ms is None):
        raise HistoryError(f"op {op.index}: final-read compaction needs delete_retention_ms and "
                           f"read_end_ms, and point and pass_after_ms together, got {facts!r}")
    return CompactionRead(op.value["partition"], op.index, op.value["caught_up"],
                          op.value["high_watermark"], records, point, pass_after_ms, retention, read_end_ms)


def compaction_model(check: CheckInput) -> CompactionModel:
    """The history's :class:`CompactionModel` (cache through ``check.derived(compaction_model)``)."""
    return CompactionModel.build(check.history, check.derived(log_model))


# --------------------------------------------------------------------------------- known records
Known = dict[tuple[int, str], dict[int, tuple[str, int]]]
"""(partition, key) -> offset -> (value, first op that made it known)."""


def _known_records(model: CompactionModel) -> Known:
    """Every record known to be committed, by (partition, key): ok acks and reads."""
    known: Known = {}
    for send in model.log.sends:
        if send.offset is not None and send.key is not None:
            known.setdefault((send.partition, send.key), {}).setdefault(
                send.offset, (send.value, send.completion or send.invoke))
    for record, op in model.log.read_records.items():
        if record.key is not None:
            known.setdefault((record.partition, record.key), {}).setdefault(record.offset, (record.value, op))
    return known


def _may_have_expired(timestamp_ms: int, read: CompactionRead) -> bool:
    """Whether a tombstone with this timestamp may have been dropped as expired before ``read`` ended."""
    return timestamp_ms < read.read_end_ms + CLOCK_MARGIN_MS - read.delete_retention_ms


def _last_unknown_offset(known: list[int], high_watermark: int) -> int:
    """The highest offset below ``high_watermark`` missing from the sorted ``known`` offsets (-1 if
    none): the last place an unread record can have landed."""
    position = len(known)
    for offset in range(high_watermark - 1, -1, -1):
        while position and known[position - 1] > offset:
            position -= 1
        if not position or known[position - 1] != offset:
            return offset
    return -1


def _timestamp_of(model: CompactionModel, value: str) -> int | None:
    kind = model.sends.get(value)
    return None if kind is None else kind.timestamp_ms


# --------------------------------------------------------------------------------- the checkers
def lost_latest(model: CompactionModel) -> list[Example]:
    """``compaction-lost-latest``: a key's latest known record missing from the final read."""
    found: list[Example] = []
    known = _known_records(model)
    unread_info_tombstones: dict[tuple[int, str], list[str]] = {}
    for send in model.log.sends:
        if (send.outcome == "info" and send.key is not None and model.is_tombstone(send.value)
                and send.value not in model.log.first_read):
            unread_info_tombstones.setdefault((send.partition, send.key), []).append(send.value)
    by_key: dict[int, dict[str | None, list[Record]]] = {}
    last_unknown: dict[int, int] = {}  # partition -> highest offset below R's hw no ack or read explains
    for (partition, key), offsets in sorted(known.items()):
        read = model.chosen_read(partition)
        if read is None:
            continue  # final-read-incomplete says so
        if partition not in by_key:
            by_key[partition] = {}
            for record in read.records:
                by_key[partition].setdefault(record.key, []).append(record)
            last_unknown[partition] = _last_unknown_offset(model.log.known_offsets.get(partition, []),
                                                           read.high_watermark)
        latest = max(offsets)
        value, op = offsets[latest]
        in_read = by_key[partition].get(key, [])
        if any(record.offset == latest for record in in_read):
            continue
        tombstone = model.is_tombstone(value)
        timestamp = _timestamp_of(model, value)
        if tombstone and timestamp is not None and _may_have_expired(timestamp, read):
            continue
        excuses = [other for other in unread_info_tombstones.get((partition, key), [])
                   if _may_have_expired(model.sends[other].timestamp_ms, read)]
        if excuses and last_unknown[partition] > latest:
            continue
        found.append({
            "partition": partition, "key": key, "offset": latest, "value": value, "tombstone": tombstone,
            "timestamp_ms": timestamp, "known_by": op, "final_read": read.op,
            "high_watermark": read.high_watermark,
            "read_of_key": [[record.offset, record.value] for record in in_read][-4:],
            "reason": "beyond the final read's high watermark" if latest >= read.high_watermark
            else "missing from the final read",
        })
    return found


def stale_survivors(model: CompactionModel) -> list[Example]:
    """``compaction-stale-survivor``: records a completed pass should have removed, still read."""
    found: list[Example] = []
    known = _known_records(model)
    for partition in sorted(model.final_reads):
        read = model.chosen_read(partition)
        if read is None or read.point is None or read.pass_after_ms is None:
            continue  # compaction-not-caught-up / final-read-incomplete say so
        point = read.point
        present = {record.offset for record in read.records}
        newest_below: dict[str, int] = {}  # key -> highest known offset below C
        for record in read.records:
            if record.offset >= point or record.key is None:
                continue
            if record.key not in newest_below:
                newest_below[record.key] = max(
                    (offset for offset in known.get((partition, record.key), {}) if offset < point),
                    default=-1)
            newest = max(newest_below[record.key], record.offset)
            example: Example = {
                "partition": partition, "offset": record.offset, "key": record.key, "value": record.value,
                "compaction_point": point, "final_read": read.op,
            }
            if newest > record.offset:
                value, op = known[(partition, record.key)][newest]
                tombstone = model.is_tombstone(value)
                gone = newest not in present
                found.append({
                    **example,
                    "superseded_by": {"offset": newest, "value": value, "tombstone": tombstone,
                                      "in_final_read": not gone, "known_by": op},
                    "reason": "resurrected: its key's later tombstone is gone" if tombstone and gone
                    else "superseded below the compaction point",
                })
                continue
            timestamp = _timestamp_of(model, record.value)
            if (model.is_tombstone(record.value) and timestamp is not None
                    and timestamp < read.pass_after_ms - read.delete_retention_ms - CLOCK_MARGIN_MS):
                found.append({
                    **example, "tombstone_timestamp_ms": timestamp, "pass_after_ms": read.pass_after_ms,
                    "delete_retention_ms": read.delete_retention_ms,
                    "reason": "expired tombstone kept by a pass that ran after it expired",
                })
    return found


def not_caught_up(model: CompactionModel) -> list[Example]:
    """``compaction-not-caught-up``: partitions whose final read has no compaction point."""
    found: list[Example] = []
    for partition in sorted(model.log.partitions):
        read = model.chosen_read(partition)
        if read is not None and read.point is not None:
            continue
        found.append({
            "partition": partition,
            "final_reads": [{"op": r.op, "caught_up": r.caught_up, "compaction_point": r.point}
                            for r in model.final_reads.get(partition, [])],
            "reason": "no caught-up final read" if read is None
            else "no compaction pass was seen to complete over the whole log before the final read",
        })
    return found


def payload_mismatches(model: CompactionModel) -> list[Example]:
    """Read records whose payload kind (null or not) differs from their send's (part of ``unexpected``)."""
    found: list[Example] = []
    seen: set[tuple[Record, bool]] = set()
    for op, records in model.read_ops.items():
        nulls = model.null_reads.get(op, set())
        for record in records:
            if record.value not in model.sends:
                continue  # no such send: the log's unexpected check reports it
            read_null = (record.partition, record.offset) in nulls
            sent_null = model.is_tombstone(record.value)
            if read_null == sent_null or (record, read_null) in seen:
                continue
            seen.add((record, read_null))
            found.append({
                "partition": record.partition, "offset": record.offset, "key": record.key,
                "value": record.value, "reader": op,
                "reason": "sent as a tombstone, read with a value" if sent_null
                else "sent with a value, read as a tombstone",
                "writer": model.log.send_by_value[record.value].ops(),
            })
    return found


def _unexpected(inputs: CheckInput) -> list[Example]:
    model = inputs.derived(compaction_model)
    return unexpected_reads(model.log) + payload_mismatches(model)


def _log_checker(error_type: str) -> Checker:
    return next(checker for checker in (*LOG_SAFETY, *REPLICA_SAFETY) if checker.error_type == error_type)


COMPACTION_SAFETY: tuple[Checker, ...] = (
    Checker("compaction-lost-latest", "safety", lambda inputs: lost_latest(inputs.derived(compaction_model)),
            "a key's latest record is missing after compaction"),
    Checker("compaction-stale-survivor", "safety",
            lambda inputs: stale_survivors(inputs.derived(compaction_model)),
            "a record a completed compaction pass should have removed is still read"),
)
"""The compaction-specific safety checkers."""

COMPACTION_LIVENESS: tuple[Checker, ...] = (
    Checker("compaction-not-caught-up", "liveness",
            lambda inputs: not_caught_up(inputs.derived(compaction_model)),
            "no compaction pass over the whole log completed after healing"),
)
"""The compaction-specific liveness checker."""

COMPACTION_CHECKERS: tuple[Checker, ...] = (
    *(_log_checker(name) for name in ("duplicate", "inconsistent-offsets", "nonmonotonic-send",
                                      "stale-offset", "nonmonotonic-poll")),
    Checker("unexpected", "safety", _unexpected,
            "a record read that nobody sent (or with the wrong payload kind: tombstone or value)"),
    _log_checker("G1a"),
    *COMPACTION_SAFETY,
    _log_checker("replica-divergence"),
    *LOG_LIVENESS,
    *COMPACTION_LIVENESS,
)
"""The ``compaction`` workload's checkers, in report order: the ``log`` ones that still hold when
superseded records go (not ``lost-write``, ``unseen``, ``poll-skip``), then these."""
