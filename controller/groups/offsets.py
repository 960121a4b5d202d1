"""Committed offsets: commit, fetch and reset decisions (pure, on the active controller).

A group's committed offset of a partition is the next offset the group will
consume there. Members commit what they consumed from the partitions they
own; administrators (and simple consumers outside any group protocol) may
commit only while the group has no member, which is how offsets are reset.

Who may commit, and why:

* a member, at exactly its current member epoch (an older epoch is
  ``STALE_MEMBER_EPOCH``: the member heartbeats to learn its epoch, then
  retries; a zombie whose epoch moved on cannot overwrite its successor's
  progress), for partitions it owns — assigned, or pending revocation: the
  cooperative protocol has a member commit before it releases a partition;
* nobody else while the group has members (``GROUP_NOT_EMPTY``): an offset
  reset under running consumers would be overwritten by their next commit,
  or worse, silently not.

The same checks run again when the records apply
(:meth:`~millpond.controller.groups.state.GroupState.check_commit`), so a
commit decided before a concurrent change cannot land after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from millpond import limits
from millpond.controller.groups.coordinator import DEFAULT_SETTINGS, GroupSettings, validate_group_id
from millpond.controller.groups.errors import GroupError, GroupErrorReason
from millpond.controller.groups.records import OffsetCommit
from millpond.controller.groups.state import (
    LEAVE_EPOCH,
    CommittedOffset,
    GroupsImage,
    GroupState,
    TopicPartition,
)

__all__ = [
    "OffsetChange",
    "OffsetCommitDecision",
    "OffsetCommitEntry",
    "OffsetCommitRequest",
    "PartitionBounds",
    "PartitionResult",
    "ResetMode",
    "ResetPlan",
    "ResetSpec",
    "commit_offsets",
    "fetch_offsets",
    "plan_reset_offsets",
]


@dataclass(frozen=True, slots=True)
class OffsetCommitEntry:
    """One partition's offset to commit."""

    topic: str
    partition: int
    offset: int
    leader_epoch: int = -1
    """Leader epoch of the last consumed record; -1 if unknown."""
    metadata: str = ""


@dataclass(frozen=True, slots=True)
class OffsetCommitRequest:
    """An OffsetCommit request: a member's (or, with ``member_id`` ``""`` and epoch -1, an admin's)."""

    group_id: str
    member_id: str
    member_epoch: int
    entries: tuple[OffsetCommitEntry, ...]


@dataclass(frozen=True, slots=True)
class PartitionResult:
    """The outcome for one partition of a request: ``error`` ``None`` means done."""

    topic: str
    partition: int
    error: GroupError | None = None


@dataclass(frozen=True, slots=True)
class OffsetCommitDecision:
    """Records to propose (one per accepted partition) and every partition's outcome, in request order."""

    records: tuple[OffsetCommit, ...]
    results: tuple[PartitionResult, ...]


def commit_offsets(image: GroupsImage, request: OffsetCommitRequest, topics: Mapping[str, int], now_ms: int,
                   settings: GroupSettings = DEFAULT_SETTINGS) -> OffsetCommitDecision:
    """Decide on an offset commit; ``now_ms`` (wall clock) becomes each record's commit timestamp.

    Request-level refusals give every partition the same error:
    ``INVALID_REQUEST`` (bad group id, more than
    ``group_offset_request_partitions_max`` entries, ``member_id`` ``""``
    with an epoch other than -1), ``UNKNOWN_MEMBER_ID``,
    ``STALE_MEMBER_EPOCH``, ``FENCED_MEMBER_EPOCH``, ``GROUP_NOT_EMPTY`` (an
    admin commit to a group with members), ``GROUPS_MAX_REACHED`` (an admin
    commit would create one group too many). Then per partition:
    ``UNKNOWN_TOPIC_OR_PARTITION``, ``INVALID_REQUEST`` (offset < 0, leader
    epoch < -1, the partition twice in the request),
    ``OFFSET_METADATA_TOO_LARGE``, ``PARTITION_NOT_ASSIGNED`` (the member does
    not own it). Accepted partitions are committed even if others fail.
    A commit of the same offsets again is harmless (idempotent).
    """
    try:
        group = _commit_group(image, request, settings)
    except GroupError as error:
        return OffsetCommitDecision((), tuple(PartitionResult(e.topic, e.partition, error)
                                              for e in request.entries))
    records: list[OffsetCommit] = []
    results: list[PartitionResult] = []
    seen: set[TopicPartition] = set()
    for entry in request.entries:
        try:
            _check_entry(entry, topics, seen)
            group.check_commit(request.member_id, request.member_epoch, (entry.topic, entry.partition))
        except GroupError as error:
            results.append(PartitionResult(entry.topic, entry.partition, error))
            continue
        records.append(OffsetCommit(request.group_id, entry.topic, entry.partition, entry.offset,
                                    entry.leader_epoch, entry.metadata, now_ms, request.member_id,
                                    request.member_epoch))
        results.append(PartitionResult(entry.topic, entry.partition))
    return OffsetCommitDecision(tuple(records), tuple(results))


def _commit_group(image: GroupsImage, request: OffsetCommitRequest, settings: GroupSettings) -> GroupState:
    validate_group_id(request.group_id)
    if len(request.entries) > limits.group_offset_request_partitions_max:
        raise GroupError(GroupErrorReason.INVALID_REQUEST,
                         f"{len(request.entries)} partitions in one commit; at most "
                         f"{limits.group_offset_request_partitions_max}")
    if not request.member_id and request.member_epoch != LEAVE_EPOCH:
        raise GroupError(GroupErrorReason.INVALID_REQUEST,
                         "a commit without member id (administrative) must carry member epoch -1")
    group = image.group(request.group_id)
    if group is None:
        if request.member_id:
            raise GroupError(GroupErrorReason.UNKNOWN_MEMBER_ID,
                             f"group {request.group_id!r} does not exist, so has no member "
                             f"{request.member_id!r}")
        if image.group_count() >= settings.groups_max:
            raise GroupError(GroupErrorReason.GROUPS_MAX_REACHED,
                             f"the cluster has {settings.groups_max} consumer groups, the most it may have")
        return GroupState(request.group_id)
    if request.member_id:
        group.check_member(request.member_id, request.member_epoch)
    elif group.members:
        raise GroupError(GroupErrorReason.GROUP_NOT_EMPTY,
                         f"group {request.group_id!r} has {len(group.members)} member(s): only its members "
                         f"may commit offsets")
    return group


def _check_entry(entry: OffsetCommitEntry, topics: Mapping[str, int], seen: set[TopicPartition]) -> None:
    tp = (entry.topic, entry.partition)
    if not 0 <= entry.partition < topics.get(entry.topic, 0):
        raise GroupError(GroupErrorReason.UNKNOWN_TOPIC_OR_PARTITION,
                         f"partition {entry.topic}/{entry.partition} does not exist")
    if tp in seen:
        raise GroupError(GroupErrorReason.INVALID_REQUEST,
                         f"partition {entry.topic}/{entry.partition} appears twice in the commit")
    seen.add(tp)
    if entry.offset < 0:
        raise GroupError(GroupErrorReason.INVALID_REQUEST, f"offset {entry.offset} is negative")
    if entry.leader_epoch < -1:
        raise GroupError(GroupErrorReason.INVALID_REQUEST, f"leader epoch {entry.leader_epoch} is below -1")
    if len(entry.metadata.encode()) > limits.group_offset_metadata_bytes_max:
        raise GroupError(GroupErrorReason.OFFSET_METADATA_TOO_LARGE,
                         f"offset metadata is longer than {limits.group_offset_metadata_bytes_max} bytes")


def fetch_offsets(
    image: GroupsImage, group_id: str, partitions: Iterable[TopicPartition] | None = None, *,
    member_id: str = "", member_epoch: int = LEAVE_EPOCH,
) -> dict[TopicPartition, CommittedOffset | None]:
    """The group's committed offsets: of ``partitions`` (``None`` where none is committed), or all of them.

    An unknown group has no committed offsets (not an error: a new group
    starts from its reset policy). With ``member_id`` (KIP-848's OffsetFetch
    from a member), the member must exist at ``member_epoch``:
    ``UNKNOWN_MEMBER_ID`` / ``STALE_MEMBER_EPOCH`` / ``FENCED_MEMBER_EPOCH``
    (:class:`GroupError`), so a member never starts from offsets fetched under
    an assignment it no longer has. ``INVALID_REQUEST`` for a bad group id or
    more than ``group_offset_request_partitions_max`` partitions.
    """
    validate_group_id(group_id)
    wanted = None if partitions is None else sorted(set(partitions))
    if wanted is not None and len(wanted) > limits.group_offset_request_partitions_max:
        raise GroupError(GroupErrorReason.INVALID_REQUEST,
                         f"{len(wanted)} partitions in one fetch; at most "
                         f"{limits.group_offset_request_partitions_max}")
    if member_id:
        group = image.group(group_id)
        if group is None:
            raise GroupError(GroupErrorReason.UNKNOWN_MEMBER_ID, f"group {group_id!r} does not exist")
        group.check_member(member_id, member_epoch)
    if wanted is None:
        return dict(image.committed_offsets(group_id))
    return {tp: image.committed_offset(group_id, tp) for tp in wanted}


# --- offset reset --------------------------------------------------------------------------------------


class ResetMode(StrEnum):
    """Where ``reset offsets`` moves each partition."""

    TO_EARLIEST = "to_earliest"
    """The log start offset."""
    TO_LATEST = "to_latest"
    """The high watermark (only new records will be consumed)."""
    TO_OFFSET = "to_offset"
    """``value``, clamped into the partition's bounds."""
    SHIFT_BY = "shift_by"
    """The committed offset (the log start offset if none) plus ``value`` (negative: back), clamped."""
    TO_DATETIME = "to_datetime"
    """The first offset whose record timestamp is >= ``value`` (ms since the epoch); the high
    watermark if no record is that late."""


@dataclass(frozen=True, slots=True)
class ResetSpec:
    """How to reset: a mode and its argument (unused by TO_EARLIEST and TO_LATEST)."""

    mode: ResetMode
    value: int = 0


@dataclass(frozen=True, slots=True)
class PartitionBounds:
    """A partition's readable range as its leader reported it."""

    log_start_offset: int
    high_watermark: int


@dataclass(frozen=True, slots=True)
class OffsetChange:
    """One partition's planned move (``previous`` ``None``: nothing was committed)."""

    topic: str
    partition: int
    previous: int | None
    offset: int


@dataclass(frozen=True, slots=True)
class ResetPlan:
    """The records committing the reset (administrative commits) and the moves, for a dry run."""

    records: tuple[OffsetCommit, ...]
    changes: tuple[OffsetChange, ...]


def plan_reset_offsets(image: GroupsImage, group_id: str, spec: ResetSpec,
                       bounds: Mapping[TopicPartition, PartitionBounds],
                       by_timestamp: Mapping[TopicPartition, int | None] | None, now_ms: int,
                       settings: GroupSettings = DEFAULT_SETTINGS) -> ResetPlan:
    """Plan moving the committed offsets of the partitions in ``bounds`` as ``spec`` says.

    ``bounds`` are the partitions to reset with their current bounds (the
    caller asks their leaders); ``by_timestamp`` is, for TO_DATETIME, each
    partition's offset-for-timestamp lookup (``None``: no record that late).
    Showing :attr:`ResetPlan.changes` without proposing is a dry run.

    Raises :class:`GroupError`: ``GROUP_NOT_EMPTY`` while the group has
    members (stop the consumers first; the records are rejected the same way
    if one joins before they apply); ``GROUPS_MAX_REACHED`` if the group does
    not exist and the cluster is full; ``INVALID_REQUEST`` for a bad group id,
    too many partitions, bounds with log start above the high watermark or
    below 0, or a TO_DATETIME partition missing from ``by_timestamp``.
    """
    validate_group_id(group_id)
    if len(bounds) > limits.group_offset_request_partitions_max:
        raise GroupError(GroupErrorReason.INVALID_REQUEST,
                         f"{len(bounds)} partitions in one reset; at most "
                         f"{limits.group_offset_request_partitions_max}")
    group = image.group(group_id)
    if group is not None and group.members:
        raise GroupError(GroupErrorReason.GROUP_NOT_EMPTY,
                         f"group {group_id!r} has {len(group.members)} member(s); stop its consumers (and "
                         f"wait for static members' sessions to end) before resetting offsets")
    if group is None and image.group_count() >= settings.groups_max:
        raise GroupError(GroupErrorReason.GROUPS_MAX_REACHED,
                         f"the cluster has {settings.groups_max} consumer groups, the most it may have")
    records: list[OffsetCommit] = []
    changes: list[OffsetChange] = []
    for tp in sorted(bounds):
        limit = bounds[tp]
        if not 0 <= limit.log_start_offset <= limit.high_watermark:
            raise GroupError(GroupErrorReason.INVALID_REQUEST,
                             f"partition {tp[0]}/{tp[1]}: bounds [{limit.log_start_offset}, "
                             f"{limit.high_watermark}] are not a range")
        committed = image.committed_offset(group_id, tp)
        previous = committed.offset if committed is not None else None
        offset = _reset_target(tp, spec, limit, previous, by_timestamp)
        offset = min(max(offset, limit.log_start_offset), limit.high_watermark)
        records.append(OffsetCommit(group_id, tp[0], tp[1], offset, -1, "", now_ms, "", LEAVE_EPOCH))
        changes.append(OffsetChange(tp[0], tp[1], previous, offset))
    return ResetPlan(tuple(records), tuple(changes))


def _reset_target(tp: TopicPartition, spec: ResetSpec, bounds: PartitionBounds, previous: int | None,
                  by_timestamp: Mapping[TopicPartition, int | None] | None) -> int:
    match spec.mode:
        case ResetMode.TO_EARLIEST:
            return bounds.log_start_offset
        case ResetMode.TO_LATEST:
            return bounds.high_watermark
        case ResetMode.TO_OFFSET:
            return spec.value
        case ResetMode.SHIFT_BY:
            return (bounds.log_start_offset if previous is None else previous) + spec.value
        case ResetMode.TO_DATETIME:
            if by_timestamp is None or tp not in by_timestamp:
                raise GroupError(GroupErrorReason.INVALID_REQUEST,
                                 f"partition {tp[0]}/{tp[1]}: no offset-for-timestamp lookup was given")
            found = by_timestamp[tp]
            return bounds.high_watermark if found is None else found
