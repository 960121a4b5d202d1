"""Metadata records: what the metadata log (Raft group 0) carries, and their codec.

Every ``CONTROL`` entry of group 0 holds exactly one encoded record. Every
node applies the records in log order to its :class:`~millpond.controller.state.MetadataImage`;
the active controller is the only writer. The set of record types is open:
consumer groups, committed offsets, producer ids and transactions will add
their own types to this same log.

Codec, format 1
---------------
::

    byte 0       format: 0x01 = JSON
    bytes 1..    ASCII JSON object, keys sorted, no whitespace:
                 {"type": "<type name>", "v": <type version>, "<field>": <value>, ...}

Field values are JSON integers, strings, booleans, lists of integers, lists of
lists of integers, or objects of string to string (see :data:`FIELD_KINDS`);
record types declared in other modules add their own kinds with
:func:`register_field_kind` (the consumer-group records' partition sets, see
:mod:`millpond.controller.groups.records`).

Why JSON: the metadata log is low volume (node registrations, topic changes,
leader and ISR changes: tens of records per second in a busy cluster, against
the broker's hundreds of thousands of records per second in ``DATA`` entries),
so the codec's speed does not matter, while readability does: a dump of the
metadata log or of a snapshot is legible without tools, and named fields make
schema evolution explicit. Sorted keys and fixed separators make the encoding
canonical, so equal records encode to equal bytes. The leading format byte
leaves room for a compact binary codec for a future high-volume type
(committed offsets) without rewriting old logs.

Versioning
----------
Each type has a name (stable forever) and a version. A change to a type's
fields bumps its version and gives the class an :meth:`MetadataRecord.upgrade`
from older versions, so old logs and snapshots stay readable. Decoding an
unknown type, a version newer than this code knows, an unknown or missing
field, or a value of the wrong kind raises :class:`RecordDecodeError`. The
log is trusted (only the active controller writes it), so the applier treats
that as fail-stop: this node cannot follow the metadata log and must stop
(upgrade it). Rolling upgrades will need the controller to write a new type or
version only once every registered node supports it (a feature level); not yet
needed.

Adding a type: declare a frozen dataclass deriving from :class:`MetadataRecord`
with fields of the kinds above, decorate it with ``@register("name", 1)``, and
handle it in ``MetadataImage.apply``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final, TypeVar, get_type_hints

__all__ = [
    "FIELD_KINDS",
    "FORMAT_JSON",
    "AddPartitions",
    "ChangeReplicas",
    "CreateTopic",
    "DeleteTopic",
    "FenceNode",
    "MetadataRecord",
    "ReassignReplicas",
    "RecordDecodeError",
    "RegisterNode",
    "SetPartitionLeader",
    "UnfenceNode",
    "decode",
    "encode",
    "record_types",
    "register",
    "register_field_kind",
]

#: Format byte of the JSON codec.
FORMAT_JSON: Final = 1
_ENVELOPE_KEYS: Final = frozenset({"type", "v"})


class RecordDecodeError(ValueError):
    """Bytes that are not a metadata record this code can read (unknown type, newer version, bad field)."""


class MetadataRecord:
    """Base of every metadata record type (frozen dataclasses registered with :func:`register`)."""

    __slots__ = ()
    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 0

    @classmethod
    def upgrade(cls, body: dict[str, Any], version: int) -> dict[str, Any]:
        """Turn the fields of an older ``version`` of this type into the current ones.

        The default knows no older version. Override when bumping ``VERSION``.
        """
        raise RecordDecodeError(f"metadata record {cls.TYPE!r} version {version} cannot be upgraded "
                                f"to version {cls.VERSION}")

    def __post_init__(self) -> None:
        # Normalize containers (lists to tuples, mappings to sorted pairs) so equal
        # records compare equal, hash, and encode to equal bytes.
        for name, kind in _SPECS[type(self)]:
            try:
                value = kind.normalize(getattr(self, name))
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{type(self).__name__}.{name}: {exc}") from None
            object.__setattr__(self, name, value)


# --- field kinds ---------------------------------------------------------------


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {type(value).__name__}")
    return value


def _ints(value: object) -> tuple[int, ...]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise TypeError(f"expected a list of integers, got {type(value).__name__}")
    return tuple(_int(item) for item in value)


def _int_lists(value: object) -> tuple[tuple[int, ...], ...]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise TypeError(f"expected a list of lists of integers, got {type(value).__name__}")
    return tuple(_ints(item) for item in value)


def _str_map(value: object) -> tuple[tuple[str, str], ...]:
    if isinstance(value, Mapping):
        pairs: Iterable[Any] = value.items()
    elif isinstance(value, Iterable) and not isinstance(value, str | bytes):
        pairs = value
    else:
        raise TypeError(f"expected a mapping of strings, got {type(value).__name__}")
    out: dict[str, str] = {}
    for pair in pairs:
        key, item = pair
        if _str(key) in out:
            raise ValueError(f"repeated key {key!r}")
        out[key] = _str(item)
    return tuple(sorted(out.items()))


@dataclass(frozen=True, slots=True)
class _Kind:
    name: str
    normalize: Callable[[object], Any]
    to_json: Callable[[Any], object]


_IDENTITY: Final = lambda value: value  # noqa: E731
FIELD_KINDS: Final[dict[object, _Kind]] = {
    int: _Kind("an integer", _int, _IDENTITY),
    str: _Kind("a string", _str, _IDENTITY),
    bool: _Kind("a boolean", _bool, _IDENTITY),
    tuple[int, ...]: _Kind("a list of integers", _ints, list),
    tuple[tuple[int, ...], ...]: _Kind("a list of lists of integers", _int_lists,
                                       lambda value: [list(item) for item in value]),
    tuple[tuple[str, str], ...]: _Kind("an object of strings", _str_map, dict),
}
"""Python annotation of a record field -> how it is checked and written as JSON."""


def register_field_kind(annotation: object, name: str, normalize: Callable[[object], Any],
                        to_json: Callable[[Any], object]) -> None:
    """Teach the codec a field kind: fields annotated ``annotation`` are checked (and normalized) by
    ``normalize`` and written by ``to_json``; ``name`` says what is expected in decode errors.

    For record types declared outside this module (consumer groups). Registering the same
    annotation again with another kind raises ``ValueError``; again with the same name is a no-op.
    """
    known = FIELD_KINDS.get(annotation)
    if known is not None:
        if known.name != name:
            raise ValueError(f"field kind {annotation} is already registered as {known.name!r}")
        return
    FIELD_KINDS[annotation] = _Kind(name, normalize, to_json)

_REGISTRY: dict[str, type[MetadataRecord]] = {}
_SPECS: dict[type[MetadataRecord], tuple[tuple[str, _Kind], ...]] = {}

_R = TypeVar("_R", bound=type[MetadataRecord])


def register(name: str, version: int) -> Callable[[_R], _R]:
    """Class decorator: make a frozen dataclass a metadata record type called ``name``."""

    def decorate(cls: _R) -> _R:
        if name in _REGISTRY:
            raise ValueError(f"metadata record type {name!r} is registered twice")
        if version < 1:
            raise ValueError(f"metadata record versions start at 1, got {version}")
        hints = get_type_hints(cls)
        spec: list[tuple[str, _Kind]] = []
        for field in fields(cls):  # type: ignore[arg-type]
            if field.name in _ENVELOPE_KEYS:
                raise ValueError(f"{cls.__name__}: field name {field.name!r} is reserved")
            kind = FIELD_KINDS.get(hints[field.name])
            if kind is None:
                raise ValueError(f"{cls.__name__}.{field.name}: unsupported annotation {hints[field.name]}")
            spec.append((field.name, kind))
        cls.TYPE, cls.VERSION = name, version
        _REGISTRY[name] = cls
        _SPECS[cls] = tuple(spec)
        return cls

    return decorate


def record_types() -> dict[str, type[MetadataRecord]]:
    """Every registered type by name (a copy)."""
    return dict(_REGISTRY)


def encode(record: MetadataRecord) -> bytes:
    """The canonical bytes of ``record`` (format 1); ``TypeError`` for an unregistered class."""
    spec = _SPECS.get(type(record))
    if spec is None:
        raise TypeError(f"{type(record).__name__} is not a registered metadata record type")
    body: dict[str, object] = {"type": record.TYPE, "v": record.VERSION}
    for name, kind in spec:
        body[name] = kind.to_json(getattr(record, name))
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return bytes((FORMAT_JSON,)) + text.encode("ascii")


def decode(data: bytes) -> MetadataRecord:
    """The record encoded in ``data``; :class:`RecordDecodeError` if it cannot be read (see module doc)."""
    if not data:
        raise RecordDecodeError("empty metadata record")
    if data[0] != FORMAT_JSON:
        raise RecordDecodeError(f"metadata record format {data[0]} is unknown (this node reads format "
                                f"{FORMAT_JSON})")
    try:
        body = json.loads(data[1:].decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordDecodeError(f"metadata record is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RecordDecodeError("metadata record is not a JSON object")
    name, version = body.pop("type", None), body.pop("v", None)
    if not isinstance(name, str) or not isinstance(version, int) or isinstance(version, bool):
        raise RecordDecodeError("metadata record lacks its 'type' (string) or 'v' (integer)")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise RecordDecodeError(f"metadata record type {name!r} (version {version}) is unknown to this node: "
                                f"it was written by a newer millpond; upgrade this node")
    if version > cls.VERSION or version < 1:
        raise RecordDecodeError(f"metadata record {name!r} version {version} is not readable by this node "
                                f"(it reads versions 1..{cls.VERSION})")
    if version < cls.VERSION:
        body = cls.upgrade(body, version)
    spec = _SPECS[cls]
    expected = {field for field, _ in spec}
    if missing := sorted(expected - body.keys()):
        raise RecordDecodeError(f"metadata record {name!r} lacks field(s) {', '.join(missing)}")
    if unknown := sorted(body.keys() - expected):
        raise RecordDecodeError(f"metadata record {name!r} has unknown field(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for field, kind in spec:
        try:
            values[field] = kind.normalize(body[field])
        except (TypeError, ValueError) as exc:
            raise RecordDecodeError(f"metadata record {name!r} field {field!r} must be {kind.name}: "
                                    f"{exc}") from None
    return cls(**values)


# --- the record types ------------------------------------------------------------
# Field order is documentation only: the encoding sorts keys.


@register("register_node", 1)
@dataclass(frozen=True, slots=True)
class RegisterNode(MetadataRecord):
    """A node process announced itself.

    Applied: a new ``incarnation`` (or address) gives the node epoch = previous
    epoch + 1 (1 for a new node), fences it until it heartbeats having applied
    the metadata log up to this record, and ends its partition leaderships (a
    restarted process leads nothing). The same incarnation and address again
    (a retried registration) changes nothing and reports the current epoch.
    """

    node_id: int
    address: str
    incarnation: int


@register("fence_node", 1)
@dataclass(frozen=True, slots=True)
class FenceNode(MetadataRecord):
    """The active controller declared the node dead (no heartbeat within the session timeout).

    Applied: rejected if ``epoch`` is not the node's current epoch (it
    re-registered since); otherwise the node is fenced as of this record's index,
    loses its partition leaderships and leaves every ISR.
    """

    node_id: int
    epoch: int


@register("unfence_node", 1)
@dataclass(frozen=True, slots=True)
class UnfenceNode(MetadataRecord):
    """The fenced node heartbeats again and has applied the metadata log past its fencing.

    Applied: rejected if ``epoch`` is stale; otherwise the node is alive.
    """

    node_id: int
    epoch: int


@register("create_topic", 1)
@dataclass(frozen=True, slots=True)
class CreateTopic(MetadataRecord):
    """A new topic; ``replicas[p]`` are partition ``p``'s nodes, preferred leader first.

    Applied: rejected with ``TopicExists`` if the name is taken at apply time;
    otherwise the topic gets the next topic id (ids are never reused).
    ``config`` holds only the keys the user set, normalized (defaults are not
    written into the log, so they can improve without rewriting it).
    """

    name: str
    replicas: tuple[tuple[int, ...], ...]
    config: tuple[tuple[str, str], ...]


@register("delete_topic", 1)
@dataclass(frozen=True, slots=True)
class DeleteTopic(MetadataRecord):
    """Delete a topic and its partitions. Applied: rejected with ``UnknownTopic`` if it is gone."""

    topic_id: int


@register("add_partitions", 1)
@dataclass(frozen=True, slots=True)
class AddPartitions(MetadataRecord):
    """Partitions ``first_partition, first_partition + 1, ...`` with ``replicas``, appended to a topic.

    ``first_partition`` is the count the controller saw: applied, the record is
    rejected unless the topic still has exactly that many partitions (two
    concurrent increases cannot both apply).
    """

    topic_id: int
    first_partition: int
    replicas: tuple[tuple[int, ...], ...]


@register("set_partition_leader", 1)
@dataclass(frozen=True, slots=True)
class SetPartitionLeader(MetadataRecord):
    """A partition leader's report showed a new leader, leader epoch (Raft term) or ISR.

    ``leader`` 0 means no known leader. Applied: rejected if the partition is
    gone, ``leader_epoch`` is older than the recorded one, or the leader is fenced.
    """

    group: int
    leader: int
    leader_epoch: int
    isr: tuple[int, ...]


@register("reassign_replicas", 1)
@dataclass(frozen=True, slots=True)
class ReassignReplicas(MetadataRecord):
    """Start moving a partition to ``target`` (re-placement of a dead node's replica).

    While a target is set, its nodes host the group too (a node in the target
    but not in the replicas joins it as a learner). A target equal to the
    replicas cancels a reassignment.
    """

    group: int
    target: tuple[int, ...]


@register("change_replicas", 1)
@dataclass(frozen=True, slots=True)
class ChangeReplicas(MetadataRecord):
    """A reassignment completed: the partition's Raft voters are now ``replicas``.

    Applied: rejected if a different target is pending (the reassignment was
    re-planned meanwhile); clears the target and drops removed nodes from the ISR.
    """

    group: int
    replicas: tuple[int, ...]
