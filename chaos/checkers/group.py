"""Checkers of the ``group`` workload: a consumer group that processes a topic at least once.

The vocabulary is the ``group`` section of :mod:`millpond.chaos.history`'s docstring. A
:class:`GroupModel` indexes the history's group ops in one pass; the log facts (sends, reads,
final-reads) come from :class:`~millpond.chaos.checkers.model.LogModel`, shared with the log
checkers. Definitions (p = partition, o = offset; "ok commit" = a commit whose completion is
``ok``; a committed offset is the next offset the group will consume):

``group-skip``
    A record the group claimed to have processed but no member ever delivered: an ``ok`` send
    acknowledged at (p, o) -- or an ``info`` send whose value some read returned at (p, o) --
    whose value no member poll returned, although an ok commit or the final committed offset of p
    is above o. (A record at or above the final committed offset was not claimed: if it is below
    the high watermark, that is ``final-commit-incomplete``, a liveness failure.)
``committed-offset-regression``
    An ok commit of p at an offset below the highest offset of p that an ok commit had already
    completed at (the earlier commit's completion precedes this one's invoke), or a final
    committed offset of p below it (or none at all). Commits that overlap in time are not
    compared: the coordinator may have applied them in either order.
``overlapping-ownership``
    Two different members whose ownership intervals of p intersect, an interval being the member
    epochs ``[epoch at own, epoch at release]`` (the release, loss or crash that ended it;
    unbounded if nothing ended it). The coordinator hands a partition to its next owner only at a
    newer epoch than any its previous owner held it at, so the intervals of a correct group are
    disjoint even when a fenced zombie still acts at its old epoch in real time.
``final-commit-incomplete`` (liveness)
    After healing and the members' final catch-up: no ``final-committed`` op completed ok, or
    some partition's final committed offset is below its high watermark (or is not reported).

The log checkers that assume one reader following offsets in order with explicit assigns
(``poll-skip``, ``nonmonotonic-poll``) do not apply: a member starts a partition wherever the
group's committed offset is, and re-reads records after a rebalance (at least once). The rest of
the log checkers do (:data:`LOG_SAFETY_FOR_GROUPS`): re-delivery of a record at the same
position is not a ``duplicate``, which needs one value at two positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from millpond.chaos.history import HistoryError, Op, OpType

from .base import Checker, CheckInput, Example
from .log import LOG_SAFETY
from .model import LogModel, log_model, op_pairs

__all__ = [
    "GROUP_LIVENESS",
    "GROUP_SAFETY",
    "LOG_SAFETY_FOR_GROUPS",
    "Commit",
    "FinalCommitted",
    "GroupModel",
    "Ownership",
    "committed_offset_regressions",
    "final_commit_incomplete",
    "group_model",
    "group_skips",
    "overlapping_ownership",
]

Committed = tuple[int, int]
"""(offset, op index of the ok completion that committed it)."""


@dataclass(frozen=True, slots=True)
class Ownership:
    """Member ``member`` owned ``partition`` from member epoch ``start`` to ``end`` (None: never
    ended in the history). ``ended`` says how: ``revoked``, ``lost``, ``crashed`` or ``open``."""

    member: str
    partition: int
    start: int
    own_op: int
    end: int | None
    end_op: int | None
    ended: str

    def ops(self) -> list[int]:
        return [self.own_op] if self.end_op is None else [self.own_op, self.end_op]


@dataclass(slots=True)
class Commit:
    """One ``commit`` op. ``before`` maps each of its partitions to the highest offset an ok commit
    had completed at when this one was invoked (index order), if any."""

    member: str | None
    process: int
    epoch: int | None
    offsets: dict[int, int]
    invoke: int
    outcome: OpType = "info"
    completion: int | None = None
    before: dict[int, Committed] = field(default_factory=dict)

    def ops(self) -> list[int]:
        return [self.invoke] if self.completion is None else [self.invoke, self.completion]


@dataclass(frozen=True, slots=True)
class FinalCommitted:
    """The last ok ``final-committed`` op; ``before`` as in :class:`Commit`, for every partition."""

    invoke: int
    completion: int
    committed: dict[int, int | None]
    high_watermarks: dict[int, int]
    before: dict[int, Committed]


@dataclass
class GroupModel:
    """The indexed group facts of one history. Build with :meth:`build` or :func:`group_model`."""

    ownerships: dict[int, list[Ownership]] = field(default_factory=dict)
    """partition -> every ownership interval of it, in order of the op that began it."""
    commits: list[Commit] = field(default_factory=list)
    """Every commit, in invoke order."""
    final_committed: FinalCommitted | None = None
    final_committed_ops: list[int] = field(default_factory=list)
    """Op indices of every final-committed invoke (the attempts)."""
    delivered: dict[str, int] = field(default_factory=dict)
    """value -> the first ok member poll that returned it."""
    frontier: dict[int, Committed] = field(default_factory=dict)
    """partition -> the highest offset any ok commit or the final committed offsets reached."""
    notes: list[str] = field(default_factory=list)
    """Oddities of the history that are not anomalies of the system (a workload's slips)."""

    @classmethod
    def build(cls, history: Sequence[Op]) -> GroupModel:
        """Index ``history`` (process rules already checked by the caller, e.g. :func:`group_model`).

        Raises :class:`HistoryError` naming the op for a malformed op of the group vocabulary.
        """
        builder = _Builder(cls())
        for op in history:
            builder.add(op)
        return builder.finish()


class _Builder:
    """One pass over the history, feeding a :class:`GroupModel`."""

    def __init__(self, model: GroupModel) -> None:
        self.model = model
        self.open: dict[tuple[str, int], tuple[int, int]] = {}  # (member, p) -> (start epoch, own op)
        self.open_commits: dict[int, Commit] = {}  # process -> commit invoked, not completed
        self.open_final: dict[int, tuple[int, dict[int, Committed]]] = {}  # process -> (invoke, before)
        self.best: dict[int, Committed] = {}  # p -> highest ok commit so far

    def add(self, op: Op) -> None:
        if op.f == "poll":
            if op.type == "ok":
                for record in _list(op, "records"):
                    if isinstance(record, list) and len(record) == 4 and isinstance(record[3], str):
                        self.model.delivered.setdefault(record[3], op.index)
        elif op.f == "commit":
            self._commit(op)
        elif op.f == "final-committed":
            self._final_committed(op)
        elif op.type == "ok" and op.f in ("own", "release", "crash"):
            self._membership(op)

    def finish(self) -> GroupModel:
        model = self.model
        for (member, partition), (start, own_op) in self.open.items():
            model.ownerships.setdefault(partition, []).append(
                Ownership(member, partition, start, own_op, None, None, "open"))
        for intervals in model.ownerships.values():
            intervals.sort(key=lambda interval: interval.own_op)
        frontier = dict(self.best)
        final = model.final_committed
        if final is not None:
            for partition, offset in final.committed.items():
                if offset is not None and offset > frontier.get(partition, (-1, 0))[0]:
                    frontier[partition] = (offset, final.completion)
        model.frontier = frontier
        return model

    # ------------------------------------------------------------------------------- membership
    def _membership(self, op: Op) -> None:
        member = _string(op, "member")
        epoch = _int(op, "epoch")
        partitions = _partitions(op)
        if op.f == "own":
            for partition in partitions:
                key = (member, partition)
                if key in self.open:
                    self.model.notes.append(
                        f"op {op.index}: member {member} owns partition {partition} again without "
                        f"releasing it (owned since op {self.open[key][1]})")
                    continue
                self.open[key] = (epoch, op.index)
            return
        if op.f == "release":
            ended = "lost" if _bool(op, "lost") else "revoked"
            ending = partitions
        else:  # crash: everything the member still owned
            ended = "crashed"
            ending = [partition for owner, partition in self.open if owner == member]
        for partition in ending:
            began = self.open.pop((member, partition), None)
            if began is None:
                if op.f == "release":
                    self.model.notes.append(
                        f"op {op.index}: member {member} releases partition {partition} it did not own")
                continue
            self.model.ownerships.setdefault(partition, []).append(
                Ownership(member, partition, began[0], began[1], epoch, op.index, ended))

    # ------------------------------------------------------------------------------- offsets
    def _commit(self, op: Op) -> None:
        if op.type == "invoke":
            offsets = _offsets(op, "offsets")
            member = op.value.get("member")
            epoch = op.value.get("epoch")
            commit = Commit(
                member if isinstance(member, str) else None,
                op.process,
                epoch if _is_int(epoch) else None,
                offsets,
                op.index,
                before={p: self.best[p] for p in offsets if p in self.best},
            )
            self.model.commits.append(commit)
            self.open_commits[op.process] = commit
            return
        commit = self.open_commits.pop(op.process)  # pair_ops guarantees it exists
        commit.outcome = op.type
        commit.completion = op.index
        if op.type != "ok":
            return
        for partition, offset in commit.offsets.items():
            if offset > self.best.get(partition, (-1, 0))[0]:
                self.best[partition] = (offset, op.index)

    def _final_committed(self, op: Op) -> None:
        if op.type == "invoke":
            self.model.final_committed_ops.append(op.index)
            self.open_final[op.process] = (op.index, dict(self.best))
            return
        invoke, before = self.open_final.pop(op.process)
        if op.type != "ok":
            return
        committed = _offsets(op, "committed", nullable=True)
        marks = _offsets(op, "high_watermarks")
        self.model.final_committed = FinalCommitted(invoke, op.index, committed, marks, before)


# ------------------------------------------------------------------------------- value checks
def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _get(op: Op, name: str) -> Any:
    if not isinstance(op.value, dict) or name not in op.value:
        raise HistoryError(f"op {op.index}: {op.type} {op.f} value needs {name!r}, got {op.value!r}")
    return op.value[name]


def _string(op: Op, name: str) -> str:
    item = _get(op, name)
    if not isinstance(item, str):
        raise HistoryError(f"op {op.index}: {op.f} {name} must be a string, got {item!r}")
    return item


def _int(op: Op, name: str) -> int:
    item = _get(op, name)
    if not _is_int(item):
        raise HistoryError(f"op {op.index}: {op.f} {name} must be an integer, got {item!r}")
    return int(item)


def _bool(op: Op, name: str) -> bool:
    item = _get(op, name)
    if not isinstance(item, bool):
        raise HistoryError(f"op {op.index}: {op.f} {name} must be true or false, got {item!r}")
    return item


def _list(op: Op, name: str) -> list[Any]:
    item = _get(op, name)
    if not isinstance(item, list):
        raise HistoryError(f"op {op.index}: {op.f} {name} must be a list, got {item!r}")
    return item


def _partitions(op: Op) -> list[int]:
    partitions = _list(op, "partitions")
    if not all(_is_int(partition) for partition in partitions):
        raise HistoryError(f"op {op.index}: {op.f} partitions must be integers, got {partitions!r}")
    return partitions


def _offsets(op: Op, name: str, nullable: bool = False) -> dict[int, Any]:
    """``{"<p>": offset}`` of ``op.value[name]`` as ``{p: offset}`` (offsets may be null if ``nullable``)."""
    raw = _get(op, name)
    if not isinstance(raw, dict):
        raise HistoryError(f"op {op.index}: {op.f} {name} must be an object, got {raw!r}")
    offsets: dict[int, Any] = {}
    for key, offset in raw.items():
        try:
            partition = int(key)
        except ValueError:
            raise HistoryError(f"op {op.index}: {op.f} {name} key {key!r} is not a partition") from None
        if not (_is_int(offset) or (nullable and offset is None)):
            raise HistoryError(f"op {op.index}: {op.f} {name} of {key} must be an integer, got {offset!r}")
        offsets[partition] = offset
    return offsets


def group_model(check: CheckInput) -> GroupModel:
    """The history's :class:`GroupModel` (cache through ``check.derived(group_model)``); its notes go
    to ``check.notes``."""
    check.derived(op_pairs)  # raises if the process rules break
    model = GroupModel.build(check.history)
    check.notes.extend(model.notes[:8])
    if len(model.notes) > 8:
        check.notes.append(f"{len(model.notes)} group history notes in all")
    return model


# ------------------------------------------------------------------------------- checkers
def group_skips(log: LogModel, group: GroupModel) -> list[Example]:
    """``group-skip``: records committed past that no member poll delivered (see the module doc)."""
    found: list[Example] = []
    for send in log.sends:
        if send.value in group.delivered:
            continue
        if send.offset is not None:  # ok
            partition, offset, evidence = send.partition, send.offset, send.completion
        elif send.outcome == "info" and send.value in log.first_read:
            (partition, offset), evidence = log.value_position[send.value]
        else:
            continue
        reached = group.frontier.get(partition)
        if reached is None or reached[0] <= offset:
            continue
        found.append({
            "partition": partition, "offset": offset, "key": send.key, "value": send.value,
            "send": send.outcome, "writer": send.ops(), "evidence": evidence,
            "committed": reached[0], "committed_op": reached[1],
        })
    return found


def committed_offset_regressions(group: GroupModel) -> list[Example]:
    """``committed-offset-regression``: an ok commit (or the final committed offset) below an ok commit
    that completed before it was invoked."""
    found: list[Example] = []
    for commit in group.commits:
        if commit.outcome != "ok":
            continue
        for partition, offset in sorted(commit.offsets.items()):
            earlier = commit.before.get(partition)
            if earlier is not None and offset < earlier[0]:
                found.append({
                    "partition": partition, "offset": offset, "member": commit.member,
                    "epoch": commit.epoch, "ops": commit.ops(),
                    "earlier": {"offset": earlier[0], "op": earlier[1]},
                })
    final = group.final_committed
    if final is not None:
        for partition, earlier in sorted(final.before.items()):
            last = final.committed.get(partition)
            if last is None or last < earlier[0]:
                found.append({
                    "partition": partition, "offset": last, "final": True,
                    "ops": [final.invoke, final.completion],
                    "earlier": {"offset": earlier[0], "op": earlier[1]},
                })
    return found


def overlapping_ownership(group: GroupModel) -> list[Example]:
    """``overlapping-ownership``: two members' epoch intervals of one partition intersect."""
    found: list[Example] = []
    for partition, intervals in sorted(group.ownerships.items()):
        ordered = sorted(intervals, key=lambda interval: (interval.start, interval.own_op))
        for position, first in enumerate(ordered):
            for second in ordered[position + 1:]:
                if first.end is not None and second.start > first.end:
                    break  # ordered by start: no later interval reaches back into this one
                if second.member == first.member:
                    continue
                found.append({
                    "partition": partition,
                    "members": [first.member, second.member],
                    "epochs": [[first.start, first.end], [second.start, second.end]],
                    "ended": [first.ended, second.ended],
                    "ops": first.ops() + second.ops(),
                })
    found.sort(key=lambda example: max(example["ops"]))
    return found


def final_commit_incomplete(log: LogModel, group: GroupModel) -> list[Example]:
    """``final-commit-incomplete``: no ok final-committed, or a partition committed below its high
    watermark at the end."""
    final = group.final_committed
    if final is None:
        return [{"reason": "no final-committed completed ok", "ops": group.final_committed_ops}]
    found: list[Example] = []
    for partition in sorted(set(final.high_watermarks) | log.partitions):
        mark = final.high_watermarks.get(partition)
        committed = final.committed.get(partition)
        if mark is None:
            reason = "partition not reported"
        elif (committed or 0) < mark:
            reason = "committed offset below the high watermark"
        else:
            continue
        found.append({"partition": partition, "reason": reason, "committed": committed,
                      "high_watermark": mark, "ops": [final.invoke, final.completion]})
    return found


def _both(inputs: CheckInput) -> tuple[LogModel, GroupModel]:
    return inputs.derived(log_model), inputs.derived(group_model)


LOG_SAFETY_FOR_GROUPS: tuple[Checker, ...] = tuple(
    checker for checker in LOG_SAFETY if checker.error_type not in ("poll-skip", "nonmonotonic-poll"))
"""The log workload's safety checkers that hold for a group's readers too (see the module doc)."""

GROUP_SAFETY: tuple[Checker, ...] = (
    Checker("group-skip", "safety", lambda inputs: group_skips(*_both(inputs)),
            "committed past a record no member delivered"),
    Checker("committed-offset-regression", "safety",
            lambda inputs: committed_offset_regressions(inputs.derived(group_model)),
            "a committed offset went backwards"),
    Checker("overlapping-ownership", "safety",
            lambda inputs: overlapping_ownership(inputs.derived(group_model)),
            "two members owned a partition at overlapping member epochs"),
)
"""The ``group`` workload's own safety checkers, in report order."""

GROUP_LIVENESS: tuple[Checker, ...] = (
    Checker("final-commit-incomplete", "liveness", lambda inputs: final_commit_incomplete(*_both(inputs)),
            "after healing, the group did not commit up to the high watermark"),
)
"""The ``group`` workload's own liveness checkers."""
