"""The consumer-group part of the metadata image: groups, members, assignments, committed offsets.

Every node applies the group records (:mod:`~millpond.controller.groups.records`)
in metadata-log order to its :class:`GroupsImage`. Like the rest of the
metadata image it is a pure function of the records applied: no clock, no
randomness, no decision taken by dict or set iteration order.

Each group is a :class:`GroupState`, an immutable value: :meth:`GroupState.apply`
returns the next value and never changes the old one, so the coordinator can
try its own records on a group before proposing them (and be sure that nodes
applying them reach the same state). Committed offsets live beside the group
states in the image (they change far more often than membership, and copying
them with every membership change would cost O(partitions)).

Three epochs, as in KIP-848:

* **group epoch** — grows when membership or subscriptions change (derived at
  apply time) or when the subscribed topics' metadata changes (``GroupEpochBump``);
* **assignment epoch** — the group epoch the current target assignment was computed for;
* **member epoch** — the assignment epoch a member has reconciled to; it never
  exceeds the group epoch. -2 marks a static member away temporarily.

A partition is *owned* by a member while it is in the member's assigned set
or its pending-revocation set; the apply rules keep ownership exclusive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from millpond.controller.groups.errors import GroupError, GroupErrorReason
from millpond.controller.groups.records import (
    GroupDelete,
    GroupEpochBump,
    GroupMemberRemove,
    GroupMemberUpsert,
    GroupRecord,
    MemberCurrentAssignment,
    OffsetCommit,
    TargetAssignment,
    pack_partitions,
    unpack_partitions,
)
from millpond.invariant import InvariantViolation, invariant, unreachable

__all__ = [
    "JOIN_EPOCH",
    "LEAVE_EPOCH",
    "STATIC_LEAVE_EPOCH",
    "CommittedOffset",
    "GroupApplyResult",
    "GroupDescription",
    "GroupListing",
    "GroupState",
    "GroupStateName",
    "GroupsImage",
    "GroupsStatistics",
    "MemberState",
    "TopicPartition",
]

TopicPartition = tuple[str, int]

#: Member epoch of a heartbeat that joins (or rejoins after being fenced).
JOIN_EPOCH: Final = 0
#: Member epoch of a heartbeat that leaves the group for good.
LEAVE_EPOCH: Final = -1
#: Member epoch of a static member's heartbeat that leaves temporarily (and of such a member's state).
STATIC_LEAVE_EPOCH: Final = -2

_NO_PARTITIONS: frozenset[TopicPartition] = frozenset()


def _frozen(mapping: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(mapping))


class GroupStateName(StrEnum):
    """What a group is doing (KIP-848's group states)."""

    EMPTY = "empty"
    """No members (the group may still hold committed offsets)."""
    ASSIGNING = "assigning"
    """The group epoch moved past the target assignment: a new target is to be computed."""
    RECONCILING = "reconciling"
    """Some member has not reached its target yet (or is away temporarily)."""
    STABLE = "stable"
    """Every member owns exactly its target at the assignment epoch."""
    DEAD = "dead"
    """The group does not exist."""


@dataclass(frozen=True, slots=True)
class MemberState:
    """One member of a group, as the metadata log recorded it."""

    member_id: str
    instance_id: str
    """Static membership (``group.instance.id``); ``""`` for a dynamic member."""
    subscribed_topic_names: tuple[str, ...]
    subscribed_topic_regex: str
    """``""``: none."""
    server_assignor: str
    """The assignor the member asked for; ``""``: no preference."""
    rebalance_timeout_ms: int
    session_timeout_ms: int
    member_epoch: int = JOIN_EPOCH
    previous_member_epoch: int = JOIN_EPOCH
    """The member epoch before the last change (a member that missed that answer may use it)."""
    assigned: frozenset[TopicPartition] = _NO_PARTITIONS
    """Partitions the member may consume now."""
    pending_revocation: frozenset[TopicPartition] = _NO_PARTITIONS
    """Partitions the member was told to release and has not reported released yet."""

    @property
    def owned(self) -> frozenset[TopicPartition]:
        """Partitions nobody else may be given: assigned or pending revocation."""
        return self.assigned | self.pending_revocation

    @property
    def away(self) -> bool:
        """A static member that left temporarily (member epoch -2)."""
        return self.member_epoch == STATIC_LEAVE_EPOCH

    @property
    def subscription(self) -> tuple[tuple[str, ...], str, str]:
        """What decides the member's share of the target: topic names, regex, assignor."""
        return self.subscribed_topic_names, self.subscribed_topic_regex, self.server_assignor


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    """A group's committed offset of one partition."""

    offset: int
    """The next offset the group will consume there."""
    leader_epoch: int
    """Leader epoch of the last consumed record, -1 if unknown."""
    metadata: str
    commit_timestamp_ms: int


@dataclass(frozen=True, slots=True)
class GroupState:
    """One consumer group: epochs, members, target assignment and the inputs it came from.

    Immutable: :meth:`apply` returns a new value. The mappings are read-only views.
    """

    group_id: str
    group_epoch: int = 0
    members: Mapping[str, MemberState] = field(default_factory=lambda: _frozen({}))
    assignment_epoch: int = 0
    target: Mapping[str, frozenset[TopicPartition]] = field(default_factory=lambda: _frozen({}))
    """Member id -> its target partitions (every member of the last target assignment)."""
    assignor: str = ""
    """The assignor that computed the target."""
    partition_counts: Mapping[str, int] = field(default_factory=lambda: _frozen({}))
    """Subscribed topics (that existed) and their partition counts when the target was computed."""
    regex_topics: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _frozen({}))
    """Each subscription regex and the topics it matched when the target was computed."""

    # --- queries ---------------------------------------------------------------------------

    @property
    def state(self) -> GroupStateName:
        """EMPTY, ASSIGNING, RECONCILING or STABLE (see :class:`GroupStateName`)."""
        if not self.members:
            return GroupStateName.EMPTY
        if self.group_epoch > self.assignment_epoch:
            return GroupStateName.ASSIGNING
        for member in self.members.values():
            if (member.member_epoch != self.assignment_epoch or member.pending_revocation
                    or member.assigned != self.target.get(member.member_id, _NO_PARTITIONS)):
                return GroupStateName.RECONCILING
        return GroupStateName.STABLE

    def member_by_instance(self, instance_id: str) -> MemberState | None:
        """The member with static ``instance_id`` (non-empty), if any."""
        for member_id in sorted(self.members):
            if instance_id and self.members[member_id].instance_id == instance_id:
                return self.members[member_id]
        return None

    def owners(self) -> dict[TopicPartition, str]:
        """Every owned partition -> its owner (assigned or pending revocation)."""
        found: dict[TopicPartition, str] = {}
        for member_id in sorted(self.members):
            for tp in self.members[member_id].owned:
                found[tp] = member_id
        return found

    def target_of(self, member_id: str) -> frozenset[TopicPartition]:
        """The member's target partitions (empty if the target does not list it yet)."""
        return self.target.get(member_id, _NO_PARTITIONS)

    def check_member(self, member_id: str, member_epoch: int) -> MemberState:
        """The member ``member_id`` if it is at exactly ``member_epoch``; else :class:`GroupError`
        ``UNKNOWN_MEMBER_ID``, ``STALE_MEMBER_EPOCH`` (older epoch) or ``FENCED_MEMBER_EPOCH`` (newer)."""
        member = self.members.get(member_id)
        if member is None:
            raise GroupError(GroupErrorReason.UNKNOWN_MEMBER_ID,
                             f"member {member_id!r} is not in group {self.group_id!r}")
        if member_epoch < member.member_epoch:
            raise GroupError(GroupErrorReason.STALE_MEMBER_EPOCH,
                             f"member {member_id!r} is at epoch {member.member_epoch}, not {member_epoch}")
        if member_epoch > member.member_epoch:
            raise GroupError(GroupErrorReason.FENCED_MEMBER_EPOCH,
                             f"member {member_id!r} is at epoch {member.member_epoch}, not {member_epoch}")
        return member

    def check_commit(self, member_id: str, member_epoch: int, tp: TopicPartition) -> None:
        """Raise :class:`GroupError` unless ``member_id`` at ``member_epoch`` may commit ``tp`` now.

        A member may commit partitions it owns (assigned, or pending revocation:
        a member commits what it consumed before releasing a partition) at
        exactly its current member epoch: ``UNKNOWN_MEMBER_ID``,
        ``STALE_MEMBER_EPOCH`` (an older epoch: heartbeat, then retry),
        ``FENCED_MEMBER_EPOCH`` (a newer one: not this member's),
        ``PARTITION_NOT_ASSIGNED``. An administrative commit (``member_id``
        ``""``) is allowed only while the group has no member: ``GROUP_NOT_EMPTY``.
        """
        if not member_id:
            if self.members:
                raise GroupError(GroupErrorReason.GROUP_NOT_EMPTY,
                                 f"group {self.group_id!r} has {len(self.members)} member(s): only its "
                                 f"members may commit offsets")
            return
        member = self.check_member(member_id, member_epoch)
        if tp not in member.assigned and tp not in member.pending_revocation:
            raise GroupError(GroupErrorReason.PARTITION_NOT_ASSIGNED,
                             f"partition {tp[0]}/{tp[1]} is not owned by member {member_id!r}")

    # --- applying ---------------------------------------------------------------------------

    def apply(self, record: GroupRecord) -> GroupState:
        """The group after ``record`` (a membership or assignment record of this group).

        Raises :class:`GroupError` if the record is rejected (see each record
        type's apply rule) and :class:`InvariantViolation` if it breaks a
        structural rule. Offset commits and group deletion are applied by
        :class:`GroupsImage`, not here.
        """
        invariant(record.group_id == self.group_id, "group record applied to another group",
                  group_id=self.group_id, record=record)
        rule = _GROUP_RULES.get(type(record))
        if rule is None:
            unreachable("no group-state rule for record type", type=record.TYPE)
        return rule(self, record)

    def _upsert(self, record: GroupMemberUpsert) -> GroupState:
        members, target = dict(self.members), dict(self.target)
        fresh = MemberState(record.member_id, record.instance_id, record.subscribed_topic_names,
                            record.subscribed_topic_regex, record.server_assignor,
                            record.rebalance_timeout_ms, record.session_timeout_ms)
        invariant(bool(record.member_id), "a member needs an id", record=record)
        if record.replaces_member_id:
            old = members.get(record.replaces_member_id)
            if old is None:
                raise GroupError(GroupErrorReason.UNKNOWN_MEMBER_ID,
                                 f"static member {record.replaces_member_id!r} is gone")
            if not record.instance_id or old.instance_id != record.instance_id or not old.away:
                raise GroupError(GroupErrorReason.UNRELEASED_INSTANCE_ID,
                                 f"member {old.member_id!r} holds instance id {old.instance_id!r} and has "
                                 f"not left")
            if record.member_id in members:
                raise GroupError(GroupErrorReason.INVALID_REQUEST,
                                 f"member id {record.member_id!r} is taken")
            new = replace(fresh, member_epoch=old.previous_member_epoch,
                          previous_member_epoch=old.previous_member_epoch, assigned=old.assigned)
            del members[old.member_id]
            if old.member_id in target:
                target[new.member_id] = target.pop(old.member_id)
            bump = old.subscription != new.subscription
        else:
            old = members.get(record.member_id)
            if old is None:
                holder = self.member_by_instance(record.instance_id)
                if holder is not None:
                    raise GroupError(GroupErrorReason.UNRELEASED_INSTANCE_ID,
                                     f"member {holder.member_id!r} holds instance id {record.instance_id!r}")
                new, bump = fresh, True
            else:
                if old.instance_id != record.instance_id:
                    raise GroupError(GroupErrorReason.INVALID_REQUEST,
                                     f"member {old.member_id!r} has instance id {old.instance_id!r}, not "
                                     f"{record.instance_id!r}")
                new = replace(old, subscribed_topic_names=fresh.subscribed_topic_names,
                              subscribed_topic_regex=fresh.subscribed_topic_regex,
                              server_assignor=fresh.server_assignor,
                              rebalance_timeout_ms=fresh.rebalance_timeout_ms,
                              session_timeout_ms=fresh.session_timeout_ms)
                bump = old.subscription != new.subscription
        members[new.member_id] = new
        return replace(self, group_epoch=self.group_epoch + (1 if bump else 0),
                       members=_frozen(members), target=_frozen(target))

    def _remove(self, record: GroupMemberRemove) -> GroupState:
        if record.member_id not in self.members:
            raise GroupError(GroupErrorReason.UNKNOWN_MEMBER_ID,
                             f"member {record.member_id!r} is not in group {self.group_id!r}")
        members = {k: v for k, v in self.members.items() if k != record.member_id}
        target = {k: v for k, v in self.target.items() if k != record.member_id}
        return replace(self, group_epoch=self.group_epoch + 1, members=_frozen(members),
                       target=_frozen(target))

    def _epoch_bump(self, record: GroupEpochBump) -> GroupState:
        if record.epoch != self.group_epoch + 1:
            raise GroupError(GroupErrorReason.INVALID_REQUEST,
                             f"group {self.group_id!r} is at epoch {self.group_epoch}; a bump to "
                             f"{record.epoch} is stale (the group changed concurrently)")
        return replace(self, group_epoch=record.epoch)

    def _target(self, record: TargetAssignment) -> GroupState:
        if record.epoch != self.group_epoch:
            raise GroupError(GroupErrorReason.INVALID_REQUEST,
                             f"group {self.group_id!r} is at epoch {self.group_epoch}; a target for epoch "
                             f"{record.epoch} is stale")
        target = {member_id: unpack_partitions(tps) for member_id, tps in record.members}
        if target.keys() != self.members.keys():
            raise GroupError(GroupErrorReason.INVALID_REQUEST,
                             f"group {self.group_id!r}: the target assignment's members are not the group's "
                             f"(the group changed concurrently)")
        total = sum(len(partitions) for partitions in target.values())
        invariant(len(frozenset().union(*target.values())) == total,
                  "a target assignment gives a partition to two members", group_id=self.group_id)
        return replace(self, assignment_epoch=record.epoch, target=_frozen(target), assignor=record.assignor,
                       partition_counts=_frozen(dict(record.partition_counts)),
                       regex_topics=_frozen(dict(record.regex_topics)))

    def _member_assignment(self, record: MemberCurrentAssignment) -> GroupState:
        member = self.members.get(record.member_id)
        if member is None:
            raise GroupError(GroupErrorReason.UNKNOWN_MEMBER_ID,
                             f"member {record.member_id!r} is not in group {self.group_id!r}")
        assigned, pending = unpack_partitions(record.assigned), unpack_partitions(record.pending_revocation)
        invariant(STATIC_LEAVE_EPOCH <= record.member_epoch <= self.group_epoch,
                  "member epoch out of range", record=record, group_epoch=self.group_epoch)
        invariant(not assigned & pending, "a partition is both assigned and pending revocation",
                  record=record)
        owners = self.owners()
        for tp in sorted(assigned | pending):
            owner = owners.get(tp, record.member_id)
            if owner != record.member_id:
                raise GroupError(GroupErrorReason.INVALID_REQUEST,
                                 f"partition {tp[0]}/{tp[1]} is owned by member {owner!r}, not "
                                 f"{record.member_id!r} (the group changed concurrently)")
        updated = replace(member, member_epoch=record.member_epoch,
                          previous_member_epoch=record.previous_member_epoch,
                          assigned=assigned, pending_revocation=pending)
        return replace(self, members=_frozen({**self.members, member.member_id: updated}))


_GROUP_RULES: Final[dict[type[GroupRecord], Callable[[GroupState, Any], GroupState]]] = {
    GroupMemberUpsert: GroupState._upsert,
    GroupMemberRemove: GroupState._remove,
    GroupEpochBump: GroupState._epoch_bump,
    TargetAssignment: GroupState._target,
    MemberCurrentAssignment: GroupState._member_assignment,
}


@dataclass(frozen=True, slots=True)
class GroupApplyResult:
    """The outcome of applying one group record."""

    record: GroupRecord
    error: GroupError | None = None
    """Why the record was rejected; the image did not change."""

    @property
    def ok(self) -> bool:
        """Applied (not rejected)."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class GroupListing:
    """One line of ``list groups``."""

    group_id: str
    state: GroupStateName
    group_epoch: int
    members: int


@dataclass(frozen=True, slots=True)
class GroupDescription:
    """Everything known about a group (``describe group``); only state DEAD if it does not exist."""

    group_id: str
    state: GroupStateName
    group_epoch: int = 0
    assignment_epoch: int = 0
    assignor: str = ""
    members: tuple[MemberState, ...] = ()
    """By member id; each with its current assignment (assigned and pending revocation)."""
    target: Mapping[str, frozenset[TopicPartition]] = field(default_factory=lambda: _frozen({}))
    offsets: Mapping[TopicPartition, CommittedOffset] = field(default_factory=lambda: _frozen({}))


@dataclass(frozen=True, slots=True)
class GroupsStatistics:
    """An immutable summary for metrics."""

    groups: int
    members: int
    committed_offsets: int
    groups_by_state: tuple[tuple[str, int], ...]


class GroupsImage:
    """Every consumer group and its committed offsets, as of the group records applied.

    Not thread-safe; one owner applies and reads (the node's metadata applier).
    Queries return immutable values.
    """

    def __init__(self) -> None:
        self._groups: dict[str, GroupState] = {}
        self._offsets: dict[str, dict[TopicPartition, CommittedOffset]] = {}

    # --- applying ----------------------------------------------------------------------------

    def apply(self, record: GroupRecord) -> GroupApplyResult:
        """Apply one group record; a rejection leaves the image unchanged and is in the result.

        Raises :class:`InvariantViolation` (stop the node) for a record that
        breaks a structural rule (see the record types).
        """
        try:
            if isinstance(record, OffsetCommit):
                self._commit(record)
            elif isinstance(record, GroupDelete):
                self._delete(record)
            else:
                group = self._groups.get(record.group_id)
                if group is None:
                    if not isinstance(record, GroupMemberUpsert):
                        raise GroupError(GroupErrorReason.GROUP_ID_NOT_FOUND,
                                         f"group {record.group_id!r} does not exist")
                    group = GroupState(record.group_id)
                self._groups[group.group_id] = group.apply(record)
        except GroupError as error:
            return GroupApplyResult(record, error)
        return GroupApplyResult(record)

    def _commit(self, record: OffsetCommit) -> None:
        invariant(record.offset >= 0 and record.partition >= 0 and record.leader_epoch >= -1,
                  "malformed offset commit", record=record)
        group = self._groups.get(record.group_id) or GroupState(record.group_id)
        group.check_commit(record.member_id, record.member_epoch, (record.topic, record.partition))
        self._groups.setdefault(record.group_id, group)
        self._offsets.setdefault(record.group_id, {})[(record.topic, record.partition)] = CommittedOffset(
            record.offset, record.leader_epoch, record.metadata, record.commit_timestamp_ms)

    def _delete(self, record: GroupDelete) -> None:
        group = self._groups.get(record.group_id)
        if group is None:
            raise GroupError(GroupErrorReason.GROUP_ID_NOT_FOUND, f"group {record.group_id!r} does not exist")
        if group.members:
            raise GroupError(GroupErrorReason.GROUP_NOT_EMPTY,
                             f"group {record.group_id!r} has {len(group.members)} member(s)")
        del self._groups[record.group_id]
        self._offsets.pop(record.group_id, None)

    # --- queries ---------------------------------------------------------------------------------

    def group(self, group_id: str) -> GroupState | None:
        """The group called ``group_id``, if it exists."""
        return self._groups.get(group_id)

    def group_ids(self) -> tuple[str, ...]:
        """The ids of every group, sorted."""
        return tuple(sorted(self._groups))

    def group_count(self) -> int:
        """How many groups exist."""
        return len(self._groups)

    def list_groups(self) -> tuple[GroupListing, ...]:
        """Every group, by id."""
        return tuple(GroupListing(g.group_id, g.state, g.group_epoch, len(g.members))
                     for g in (self._groups[group_id] for group_id in sorted(self._groups)))

    def describe(self, group_id: str) -> GroupDescription:
        """Group ``group_id`` in full; state DEAD if it does not exist."""
        group = self._groups.get(group_id)
        if group is None:
            return GroupDescription(group_id, GroupStateName.DEAD)
        return GroupDescription(
            group_id=group_id, state=group.state, group_epoch=group.group_epoch,
            assignment_epoch=group.assignment_epoch, assignor=group.assignor,
            members=tuple(group.members[m] for m in sorted(group.members)),
            target=group.target, offsets=self.committed_offsets(group_id))

    def committed_offsets(self, group_id: str) -> Mapping[TopicPartition, CommittedOffset]:
        """The group's committed offsets by partition (a read-only copy; empty for an unknown group)."""
        return _frozen(dict(sorted(self._offsets.get(group_id, {}).items())))

    def committed_offset(self, group_id: str, tp: TopicPartition) -> CommittedOffset | None:
        """The group's committed offset of ``tp``, if any."""
        return self._offsets.get(group_id, {}).get(tp)

    def statistics(self) -> GroupsStatistics:
        """Counts of groups, members and committed offsets (walks every group)."""
        by_state: dict[str, int] = {}
        for group in self._groups.values():
            by_state[group.state.value] = by_state.get(group.state.value, 0) + 1
        return GroupsStatistics(
            groups=len(self._groups),
            members=sum(len(g.members) for g in self._groups.values()),
            committed_offsets=sum(len(o) for o in self._offsets.values()),
            groups_by_state=tuple(sorted(by_state.items())),
        )

    # --- snapshots ----------------------------------------------------------------------------------

    def snapshot_body(self) -> dict[str, Any]:
        """The image as a JSON-ready object with canonical content (for the metadata snapshot).

        Two images that applied the same records give equal bodies; write it
        with sorted keys to get equal bytes.
        """
        return {"groups": [self._group_body(self._groups[group_id]) for group_id in sorted(self._groups)]}

    def _group_body(self, group: GroupState) -> dict[str, Any]:
        offsets = self._offsets.get(group.group_id, {})
        return {
            "group_id": group.group_id,
            "group_epoch": group.group_epoch,
            "assignment_epoch": group.assignment_epoch,
            "assignor": group.assignor,
            "partition_counts": dict(sorted(group.partition_counts.items())),
            "regex_topics": {regex: list(topics) for regex, topics in sorted(group.regex_topics.items())},
            "target": {m: _tps_body(group.target[m]) for m in sorted(group.target)},
            "members": [
                {"member_id": m.member_id, "instance_id": m.instance_id,
                 "subscribed_topic_names": list(m.subscribed_topic_names),
                 "subscribed_topic_regex": m.subscribed_topic_regex, "server_assignor": m.server_assignor,
                 "rebalance_timeout_ms": m.rebalance_timeout_ms, "session_timeout_ms": m.session_timeout_ms,
                 "member_epoch": m.member_epoch, "previous_member_epoch": m.previous_member_epoch,
                 "assigned": _tps_body(m.assigned), "pending_revocation": _tps_body(m.pending_revocation)}
                for m in (group.members[member_id] for member_id in sorted(group.members))
            ],
            "offsets": [[topic, partition, c.offset, c.leader_epoch, c.metadata, c.commit_timestamp_ms]
                        for (topic, partition), c in sorted(offsets.items())],
        }

    @classmethod
    def from_snapshot_body(cls, body: Mapping[str, Any]) -> GroupsImage:
        """The image :meth:`snapshot_body` described; :class:`InvariantViolation` if ``body`` is not one."""
        try:
            image = cls()
            for g in body["groups"]:
                members = {}
                for m in g["members"]:
                    member = MemberState(
                        str(m["member_id"]), str(m["instance_id"]),
                        tuple(str(t) for t in m["subscribed_topic_names"]), str(m["subscribed_topic_regex"]),
                        str(m["server_assignor"]), int(m["rebalance_timeout_ms"]),
                        int(m["session_timeout_ms"]), int(m["member_epoch"]), int(m["previous_member_epoch"]),
                        _tps_from_body(m["assigned"]), _tps_from_body(m["pending_revocation"]))
                    members[member.member_id] = member
                group = GroupState(
                    group_id=str(g["group_id"]), group_epoch=int(g["group_epoch"]), members=_frozen(members),
                    assignment_epoch=int(g["assignment_epoch"]),
                    target=_frozen({str(k): _tps_from_body(v) for k, v in g["target"].items()}),
                    assignor=str(g["assignor"]),
                    partition_counts=_frozen({str(k): int(v) for k, v in g["partition_counts"].items()}),
                    regex_topics=_frozen({str(k): tuple(str(t) for t in v)
                                          for k, v in g["regex_topics"].items()}))
                invariant(group.group_id not in image._groups, "snapshot repeats a group",
                          group_id=group.group_id)
                invariant(len(group.owners()) == sum(len(m.owned) for m in members.values()),
                          "snapshot gives a partition to two members", group_id=group.group_id)
                image._groups[group.group_id] = group
                offsets = {(str(t), int(p)): CommittedOffset(int(o), int(e), str(md), int(ts))
                           for t, p, o, e, md, ts in g["offsets"]}
                if offsets:
                    image._offsets[group.group_id] = offsets
            return image
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvariantViolation("the consumer-group snapshot cannot be read",
                                     {"error": f"{type(exc).__name__}: {exc}"}) from exc


def _tps_body(partitions: frozenset[TopicPartition]) -> dict[str, list[int]]:
    return {topic: list(numbers) for topic, numbers in pack_partitions(partitions)}


def _tps_from_body(body: Mapping[str, Any]) -> frozenset[TopicPartition]:
    return frozenset((str(topic), int(p)) for topic, numbers in body.items() for p in numbers)
