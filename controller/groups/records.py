"""Consumer-group metadata records: what the metadata log carries about groups, and their JSON form.

The active controller's group coordinator (:mod:`~millpond.controller.groups.coordinator`)
decides; these records carry its decisions; every node applies them in log
order to its :class:`~millpond.controller.groups.state.GroupsImage`. The
image is a deterministic function of the records: epochs that follow from a
record (a membership change bumps the group epoch) are derived at apply time,
like a node's epoch from ``RegisterNode``; everything that depends on time or
on topic metadata (who expired, which topics a regex matched, the target
assignment) is decided by the coordinator and written into a record.

One heartbeat may produce several records (a member upsert, an epoch bump, a
target assignment, the member's current assignment). Raft commits a prefix of
them if the controller fails over in between, so every record leaves a valid
image on its own and the next decision continues from whatever prefix applied
(a group whose epoch is ahead of its target assignment is "assigning"; the
next heartbeat computes the target). Records that no longer fit the image
when they apply (a concurrent decision changed the group) are rejected
deterministically and change nothing; the apply rules are documented on each type.

The records
-----------
=============================  ==================================================================
``group_member_upsert``        a member joined, or changed its subscription, assignor or timeouts;
                               or a static member rejoined under a new member id
``group_member_remove``        a member left (epoch -1), expired, or missed its rebalance timeout
``group_epoch_bump``           the subscribed topics' metadata changed: a new target is needed
``group_target_assignment``    the target assignment of a group epoch, and the inputs it came from
``group_member_assignment``    a member's epochs and the partitions it owns or must release
``group_offset_commit``        one committed offset
``group_delete``               delete an empty group and its committed offsets
=============================  ==================================================================

Encoding
--------
Each record is a frozen dataclass; :func:`to_json` gives the JSON object the
metadata codec writes (``{"type": ..., "v": ..., <fields>}``, keys sorted by
the codec) and :func:`from_json` reads it back, raising
:class:`~millpond.controller.records.RecordDecodeError` for anything it cannot
read. Field kinds beyond the metadata codec's own are in
:data:`GROUP_FIELD_KINDS` (partition sets are ``{"topic": [partitions]}``
objects, a target assignment is ``{"member id": {"topic": [partitions]}}``).
These types are registered with the metadata codec
(:mod:`millpond.controller.records`): :class:`GroupRecord` derives from its
``MetadataRecord``, ``_group_record`` applies its ``register`` decorator, and
these kinds are added to its field kinds, so ``records.encode`` writes exactly
the JSON of :func:`to_json` behind the codec's format byte. Containers are
normalized (sorted, deduplicated) at construction, so equal records compare
equal and encode to equal bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final, TypeVar, get_type_hints

from millpond.controller.records import MetadataRecord, RecordDecodeError, register, register_field_kind

__all__ = [
    "GROUP_FIELD_KINDS",
    "GroupDelete",
    "GroupEpochBump",
    "GroupMemberRemove",
    "GroupMemberUpsert",
    "GroupRecord",
    "MemberCurrentAssignment",
    "MemberPartitions",
    "OffsetCommit",
    "RegexTopics",
    "TargetAssignment",
    "TopicCounts",
    "TopicNames",
    "TopicPartitions",
    "from_json",
    "group_record_types",
    "pack_partitions",
    "to_json",
    "unpack_partitions",
]

TopicNames = tuple[str, ...]
"""Sorted, distinct topic names. JSON: a list of strings."""
TopicPartitions = tuple[tuple[str, tuple[int, ...]], ...]
"""A set of partitions: (topic, sorted distinct partitions) sorted by topic, no empty topic.
JSON: ``{"topic": [partition, ...]}``."""
MemberPartitions = tuple[tuple[str, TopicPartitions], ...]
"""Member id -> its partitions, sorted by member id (members with no partitions included).
JSON: ``{"member id": {"topic": [partition, ...]}}``."""
TopicCounts = tuple[tuple[str, int], ...]
"""Topic -> partition count, sorted by topic. JSON: ``{"topic": count}``."""
RegexTopics = tuple[tuple[str, TopicNames], ...]
"""Subscription regex -> the topics it matched, sorted by regex. JSON: ``{"regex": ["topic", ...]}``."""


class GroupRecord(MetadataRecord):
    """Base of every consumer-group record type (frozen dataclasses declared with ``_group_record``)."""

    __slots__ = ()
    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 0
    group_id: str
    """Every group record names its consumer group (declared as a field by each type)."""

    def __post_init__(self) -> None:
        for name, kind in _SPECS[type(self)]:
            try:
                value = kind.normalize(getattr(self, name))
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{type(self).__name__}.{name}: {exc}") from None
            object.__setattr__(self, name, value)


# --- field kinds --------------------------------------------------------------------------------


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _iterable(value: object, what: str) -> Iterable[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"expected {what}, got {type(value).__name__}")
    return value


def _pairs(value: object, what: str) -> dict[str, Any]:
    """A mapping, or an iterable of (string key, value) pairs, as a dict; repeated keys are refused."""
    items: Iterable[Any] = value.items() if isinstance(value, Mapping) else _iterable(value, what)
    out: dict[str, Any] = {}
    for pair in items:
        if isinstance(pair, str | bytes) or not isinstance(pair, tuple | list) or len(pair) != 2:
            raise TypeError(f"expected {what}")
        key = _str(pair[0])
        if key in out:
            raise ValueError(f"repeated key {key!r}")
        out[key] = pair[1]
    return out


def _names(value: object) -> TopicNames:
    return tuple(sorted({_str(item) for item in _iterable(value, "a list of strings")}))


def _partition_numbers(value: object) -> tuple[int, ...]:
    numbers = {_int(item) for item in _iterable(value, "a list of partitions")}
    if any(number < 0 for number in numbers):
        raise ValueError("partitions must be >= 0")
    return tuple(sorted(numbers))


def _topic_partitions(value: object) -> TopicPartitions:
    by_topic = _pairs(value, "an object of topic to partitions")
    out = ((topic, _partition_numbers(partitions)) for topic, partitions in sorted(by_topic.items()))
    return tuple((topic, numbers) for topic, numbers in out if numbers)


def _member_partitions(value: object) -> MemberPartitions:
    by_member = _pairs(value, "an object of member id to partitions")
    return tuple((member_id, _topic_partitions(tps)) for member_id, tps in sorted(by_member.items()))


def _topic_counts(value: object) -> TopicCounts:
    counts = _pairs(value, "an object of topic to partition count")
    out = tuple((topic, _int(count)) for topic, count in sorted(counts.items()))
    if any(count < 0 for _, count in out):
        raise ValueError("partition counts must be >= 0")
    return out


def _regex_topics(value: object) -> RegexTopics:
    by_regex = _pairs(value, "an object of regex to topic names")
    return tuple((regex, _names(topics)) for regex, topics in sorted(by_regex.items()))


def _tps_json(value: TopicPartitions) -> dict[str, list[int]]:
    return {topic: list(numbers) for topic, numbers in value}


_IDENTITY: Final = lambda value: value  # noqa: E731


@dataclass(frozen=True, slots=True)
class _Kind:
    name: str
    normalize: Callable[[object], Any]
    to_json: Callable[[Any], object]


GROUP_FIELD_KINDS: Final[dict[object, _Kind]] = {
    int: _Kind("an integer", _int, _IDENTITY),
    str: _Kind("a string", _str, _IDENTITY),
    TopicNames: _Kind("a list of topic names", _names, list),
    TopicPartitions: _Kind("an object of topic to partitions", _topic_partitions, _tps_json),
    MemberPartitions: _Kind("an object of member id to partitions", _member_partitions,
                            lambda value: {member_id: _tps_json(tps) for member_id, tps in value}),
    TopicCounts: _Kind("an object of topic to partition count", _topic_counts, dict),
    RegexTopics: _Kind("an object of regex to topic names", _regex_topics,
                       lambda value: {regex: list(topics) for regex, topics in value}),
}
"""Python annotation of a group record field -> how it is checked (normalized) and written as JSON.
``int`` and ``str`` are the metadata codec's own kinds; the others are added to it here."""

for _annotation, _kind in GROUP_FIELD_KINDS.items():
    register_field_kind(_annotation, _kind.name, _kind.normalize, _kind.to_json)

_REGISTRY: dict[str, type[GroupRecord]] = {}
_SPECS: dict[type[GroupRecord], tuple[tuple[str, _Kind], ...]] = {}
_R = TypeVar("_R", bound=type[GroupRecord])


def _group_record(name: str, version: int) -> Callable[[_R], _R]:
    """Class decorator: make a frozen dataclass a group record type called ``name``."""

    def decorate(cls: _R) -> _R:
        if name in _REGISTRY:
            raise ValueError(f"group record type {name!r} is declared twice")
        hints = get_type_hints(cls)
        spec: list[tuple[str, _Kind]] = []
        for field in fields(cls):  # type: ignore[arg-type]
            if field.name in ("type", "v"):
                raise ValueError(f"{cls.__name__}: field name {field.name!r} is reserved")
            kind = GROUP_FIELD_KINDS.get(hints[field.name])
            if kind is None:
                raise ValueError(f"{cls.__name__}.{field.name}: unsupported annotation {hints[field.name]}")
            spec.append((field.name, kind))
        cls.TYPE, cls.VERSION = name, version
        _REGISTRY[name] = cls
        _SPECS[cls] = tuple(spec)
        return register(name, version)(cls)  # the metadata codec reads and writes it too

    return decorate


def group_record_types() -> dict[str, type[GroupRecord]]:
    """Every group record type by name (a copy)."""
    return dict(_REGISTRY)


def to_json(record: GroupRecord) -> dict[str, object]:
    """The JSON object of ``record``: ``{"type": name, "v": version, <field>: <value>, ...}``."""
    spec = _SPECS.get(type(record))
    if spec is None:
        raise TypeError(f"{type(record).__name__} is not a group record type")
    body: dict[str, object] = {"type": record.TYPE, "v": record.VERSION}
    for name, kind in spec:
        body[name] = kind.to_json(getattr(record, name))
    return body


def from_json(body: Mapping[str, object]) -> GroupRecord:
    """The record that :func:`to_json` wrote; :class:`RecordDecodeError` for an unknown type, a
    version other than the current one, a missing or unknown field, or a value of the wrong kind."""
    fields_in = dict(body)
    name, version = fields_in.pop("type", None), fields_in.pop("v", None)
    if not isinstance(name, str) or not isinstance(version, int) or isinstance(version, bool):
        raise RecordDecodeError("group record lacks its 'type' (string) or 'v' (integer)")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise RecordDecodeError(f"group record type {name!r} is unknown to this node")
    if version != cls.VERSION:
        raise RecordDecodeError(f"group record {name!r} version {version} is not readable by this node "
                                f"(it reads version {cls.VERSION})")
    spec = _SPECS[cls]
    expected = {field for field, _ in spec}
    if missing := sorted(expected - fields_in.keys()):
        raise RecordDecodeError(f"group record {name!r} lacks field(s) {', '.join(missing)}")
    if unknown := sorted(fields_in.keys() - expected):
        raise RecordDecodeError(f"group record {name!r} has unknown field(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for field, kind in spec:
        try:
            values[field] = kind.normalize(fields_in[field])
        except (TypeError, ValueError) as exc:
            raise RecordDecodeError(f"group record {name!r} field {field!r} must be {kind.name}: "
                                    f"{exc}") from None
    return cls(**values)


def pack_partitions(partitions: Iterable[tuple[str, int]]) -> TopicPartitions:
    """A set of ``(topic, partition)`` as the record form :data:`TopicPartitions`."""
    by_topic: dict[str, set[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, set()).add(partition)
    return _topic_partitions(by_topic)


def unpack_partitions(packed: TopicPartitions) -> frozenset[tuple[str, int]]:
    """The set of ``(topic, partition)`` that :data:`TopicPartitions` ``packed`` holds."""
    return frozenset((topic, partition) for topic, numbers in packed for partition in numbers)


# --- the record types ------------------------------------------------------------------------------
# Field order is documentation only: the encoding sorts keys. ``group_id`` is a consumer group's
# name (not a Raft group).


@_group_record("group_member_upsert", 1)
@dataclass(frozen=True, slots=True)
class GroupMemberUpsert(GroupRecord):
    """A member joined the group, or changed what it subscribes to, its assignor or its timeouts.

    Applied: creates the group if it does not exist. A new member starts at
    member epoch 0 owning nothing. The group epoch grows by one when the
    member is new or its subscribed topic names, regex or assignor changed
    (timeouts alone do not rebalance).

    ``replaces_member_id`` non-empty: a static member (``instance_id``) that
    left temporarily (member epoch -2) rejoins under the new ``member_id``; the
    new member takes over the old one's partitions, target and epoch (the one
    it had before leaving), and the old id is gone. Rejected with
    ``UNKNOWN_MEMBER_ID`` if the old member is gone, ``UNRELEASED_INSTANCE_ID``
    if it has another instance id or has not left, ``INVALID_REQUEST`` if
    ``member_id`` is taken. A new member whose non-empty ``instance_id`` is
    another member's is rejected with ``UNRELEASED_INSTANCE_ID``.

    ``subscribed_topic_regex`` ``""`` means none; ``server_assignor`` ``""``
    means no preference.
    """

    group_id: str
    member_id: str
    instance_id: str
    subscribed_topic_names: TopicNames
    subscribed_topic_regex: str
    server_assignor: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    replaces_member_id: str = ""


@_group_record("group_member_remove", 1)
@dataclass(frozen=True, slots=True)
class GroupMemberRemove(GroupRecord):
    """A member left (epoch -1), its session expired, or it did not release partitions in time.

    Applied: the member, its current and target assignments are gone (its
    partitions are free for their next owners) and the group epoch grows by
    one. The group stays, with its committed offsets, even when it is now
    empty. Rejected with ``UNKNOWN_MEMBER_ID`` if the member is not in the group.
    """

    group_id: str
    member_id: str


@_group_record("group_epoch_bump", 1)
@dataclass(frozen=True, slots=True)
class GroupEpochBump(GroupRecord):
    """The metadata of the subscribed topics changed (partitions added, a topic matching a regex
    created, a subscribed topic deleted): the group needs a new target assignment.

    Applied: the group epoch becomes ``epoch``. Rejected (``INVALID_REQUEST``)
    unless ``epoch`` is the group epoch + 1 (the group changed concurrently).
    """

    group_id: str
    epoch: int


@_group_record("group_target_assignment", 1)
@dataclass(frozen=True, slots=True)
class TargetAssignment(GroupRecord):
    """The target assignment of group epoch ``epoch``: where every member should end up.

    ``members`` lists every member, each with the partitions the assignor gave
    it (possibly none). ``assignor``, ``partition_counts`` (the subscribed
    topics that exist, with their partition counts) and ``regex_topics`` (what
    each subscription regex matched) are the inputs it was computed from: the
    coordinator compares them with the current topic metadata to know when a
    new target is needed.

    Applied: the group's assignment epoch becomes ``epoch``. Rejected
    (``INVALID_REQUEST``) if ``epoch`` is not the group epoch or the members
    are not exactly the group's (the group changed concurrently). Two members
    targeted with the same partition is a broken log (fail-stop).
    """

    group_id: str
    epoch: int
    assignor: str
    partition_counts: TopicCounts
    regex_topics: RegexTopics
    members: MemberPartitions


@_group_record("group_member_assignment", 1)
@dataclass(frozen=True, slots=True)
class MemberCurrentAssignment(GroupRecord):
    """A member's reconciliation step: its epochs, what it may own now, what it must still release.

    ``assigned`` are the partitions the member may consume now;
    ``pending_revocation`` those it was told to give up and has not yet
    reported released. A partition is *owned* by a member while it is in
    either set. ``member_epoch`` -2 marks a static member that left
    temporarily (it keeps ``assigned`` for its return).

    Applied: replaces the member's epochs and sets. Rejected with
    ``UNKNOWN_MEMBER_ID`` if the member is gone, ``INVALID_REQUEST`` if a
    partition in either set is owned by another member (the safety net that
    keeps ownership exclusive even if two decisions raced). An epoch above the
    group epoch, or a partition in both sets, is a broken log (fail-stop).
    """

    group_id: str
    member_id: str
    member_epoch: int
    previous_member_epoch: int
    assigned: TopicPartitions
    pending_revocation: TopicPartitions


@_group_record("group_offset_commit", 1)
@dataclass(frozen=True, slots=True)
class OffsetCommit(GroupRecord):
    """The group's committed offset of one partition: the next offset to consume there.

    ``leader_epoch`` -1 means unknown; ``commit_timestamp_ms`` is the
    controller's wall clock at decision time (passed in, for retention and
    display). ``member_id``/``member_epoch`` are the committing member's; an
    administrative commit (offset reset, simple consumer) has ``member_id``
    ``""`` and ``member_epoch`` -1.

    Applied: creates the group if it does not exist and overwrites the
    partition's committed offset (it may move backwards: a reset does).
    Rejected if the commit is no longer valid when it applies: the member is
    gone (``UNKNOWN_MEMBER_ID``), its epoch moved (``STALE_MEMBER_EPOCH``), it
    no longer owns the partition (``PARTITION_NOT_ASSIGNED``), or, for an
    administrative commit, the group has members (``GROUP_NOT_EMPTY``).
    """

    group_id: str
    topic: str
    partition: int
    offset: int
    leader_epoch: int
    metadata: str
    commit_timestamp_ms: int
    member_id: str
    member_epoch: int


@_group_record("group_delete", 1)
@dataclass(frozen=True, slots=True)
class GroupDelete(GroupRecord):
    """Delete a group and its committed offsets.

    Applied: rejected with ``GROUP_ID_NOT_FOUND`` if the group does not exist
    and ``GROUP_NOT_EMPTY`` if it has members.
    """

    group_id: str
