"""Server-side partition assignors: who in a consumer group should own which partition.

The group coordinator computes a group's *target assignment* with one of these
whenever the group epoch moves (a member joined, left or changed its
subscription, or a subscribed topic's partitions changed). An assignor is a
pure function of its inputs: same members, topics and current target, same
output, whatever the iteration order of the mappings passed in (everything is
sorted first). That matters because the coordinator runs on the active
controller only and writes the result into the metadata log; a new controller
recomputing from the same inputs must agree.

Two assignors, chosen by name (:data:`ASSIGNORS`; ``"uniform"`` is the default):

* :class:`UniformAssignor` — balance first, then stickiness (KIP-848's
  ``uniform``): members subscribed to the same topics own counts that differ
  by at most one; among the balanced outcomes it keeps as many current
  ownerships as it can, so a join moves only what the newcomer gets and a
  leave moves only what the leaver had.
* :class:`RangeAssignor` — Kafka's range semantics, topic by topic: the
  members subscribed to a topic, sorted by member id, get contiguous ranges of
  its partitions, the first ``partitions % members`` one partition more.
  Members with the same subscriptions get co-partitioned ranges (partition
  ``p`` of two equally sized topics goes to the same member), which is what
  joins on the consumer side rely on.

Members that cannot get anything (more members than partitions) get empty sets.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Final, Protocol

from millpond.controller.groups.errors import GroupError, GroupErrorReason

__all__ = [
    "ASSIGNORS",
    "DEFAULT_ASSIGNOR",
    "Assignor",
    "MemberSubscriptionSpec",
    "RangeAssignor",
    "TopicPartition",
    "UniformAssignor",
    "assignor_named",
]

TopicPartition = tuple[str, int]
"""A partition of a topic, by topic name and partition number."""


@dataclass(frozen=True, slots=True)
class MemberSubscriptionSpec:
    """What an assignor knows of a member: the topics it subscribes to, already resolved to names.

    Regular expressions have been matched against the existing topics and
    names of topics that do not exist have been dropped by the caller.
    ``rack`` is reserved for rack-aware assignment (unused: always ``None``).
    """

    topics: frozenset[str]
    rack: str | None = None


class Assignor(Protocol):
    """A server-side assignor (see the module doc for the contract every implementation keeps)."""

    name: str

    def assign(
        self,
        members: Mapping[str, MemberSubscriptionSpec],
        topics: Mapping[str, int],
        current: Mapping[str, Set[TopicPartition]],
    ) -> dict[str, frozenset[TopicPartition]]:
        """The target assignment: member id -> partitions, for every member of ``members``.

        ``topics`` maps each subscribed topic to its partition count;
        ``current`` is the previous target assignment (members absent from it
        own nothing). Every partition of a topic in ``topics`` that some member
        subscribes to is assigned to exactly one subscribed member; nothing
        else is assigned. Never raises for well-formed input.
        """
        ...


class UniformAssignor:
    """Balanced and sticky: see the module doc.

    Algorithm (deterministic; all ties broken by sorted member id, topic, partition):

    1. Keep every current ownership that is still valid (the member is
       subscribed to the topic, the partition exists, no member listed
       earlier claims it already).
    2. Give each partition nobody keeps to the subscribed member owning the
       fewest partitions.
    3. While some member ``x`` owns a partition of a topic that a member
       ``y`` subscribes to and ``count(x) - count(y) >= 2``, move one such
       partition from the most loaded such ``x`` to the least loaded such
       ``y``. Each move lowers the sum of squared counts, so this ends; when it
       does, members with the same subscriptions differ by at most one.

    Step 3 only moves partitions off members above their share, so a member
    joining a balanced group takes partitions only from the most loaded
    members and nobody else's partitions move.
    """

    name = "uniform"

    def assign(
        self,
        members: Mapping[str, MemberSubscriptionSpec],
        topics: Mapping[str, int],
        current: Mapping[str, Set[TopicPartition]],
    ) -> dict[str, frozenset[TopicPartition]]:
        """See :meth:`Assignor.assign`."""
        member_ids = sorted(members)
        subscribers: dict[str, list[str]] = {topic: [] for topic in sorted(topics)}
        for member_id in member_ids:
            for topic in sorted(members[member_id].topics):
                if topic in subscribers:
                    subscribers[topic].append(member_id)
        owned: dict[str, set[TopicPartition]] = {member_id: set() for member_id in member_ids}
        owner: dict[TopicPartition, str] = {}
        for member_id in member_ids:
            wanted = members[member_id].topics
            for tp in sorted(current.get(member_id, ())):
                topic, partition = tp
                if topic in wanted and topic in subscribers and 0 <= partition < topics[topic] \
                        and tp not in owner:
                    owner[tp] = member_id
                    owned[member_id].add(tp)
        for topic, subscribed in subscribers.items():
            if not subscribed:
                continue
            # Least loaded first; a heap of (count, member id) per topic keeps this O(P log M).
            heap = [(len(owned[m]), m) for m in subscribed]
            heapq.heapify(heap)
            for partition in range(topics[topic]):
                tp = (topic, partition)
                if tp in owner:
                    continue
                count, member_id = heapq.heappop(heap)
                owner[tp] = member_id
                owned[member_id].add(tp)
                heapq.heappush(heap, (count + 1, member_id))
        _balance(owned, members, subscribers)
        return {member_id: frozenset(owned[member_id]) for member_id in member_ids}


def _balance(owned: dict[str, set[TopicPartition]], members: Mapping[str, MemberSubscriptionSpec],
             subscribers: Mapping[str, list[str]]) -> None:
    """Step 3 of :class:`UniformAssignor`: move partitions from heavy to light members in place."""
    homogeneous = len({frozenset(members[m].topics & subscribers.keys()) for m in owned}) <= 1
    while True:
        move = _homogeneous_move(owned) if homogeneous else _heterogeneous_move(owned, subscribers)
        if move is None:
            return
        tp, source, destination = move
        owned[source].discard(tp)
        owned[destination].add(tp)


def _homogeneous_move(owned: Mapping[str, set[TopicPartition]]) -> tuple[TopicPartition, str, str] | None:
    # Everyone may own everything: the most loaded gives its greatest partition to the least loaded.
    source = min(owned, key=lambda m: (-len(owned[m]), m))
    destination = min(owned, key=lambda m: (len(owned[m]), m))
    if len(owned[source]) - len(owned[destination]) < 2:
        return None
    return max(owned[source]), source, destination


def _heterogeneous_move(owned: Mapping[str, set[TopicPartition]],
                        subscribers: Mapping[str, list[str]]) -> tuple[TopicPartition, str, str] | None:
    for source in sorted(owned, key=lambda m: (-len(owned[m]), m)):
        load = len(owned[source])
        best: tuple[int, str, TopicPartition] | None = None
        by_topic: dict[str, list[int]] = {}
        for topic, partition in owned[source]:
            by_topic.setdefault(topic, []).append(partition)
        for topic in sorted(by_topic):
            for candidate in subscribers[topic]:
                if load - len(owned[candidate]) >= 2:
                    key = (len(owned[candidate]), candidate, (topic, max(by_topic[topic])))
                    if best is None or key < best:
                        best = key
        if best is not None:
            return best[2], source, best[1]
    return None


class RangeAssignor:
    """Kafka's range assignment, topic by topic; ignores the current assignment (see the module doc)."""

    name = "range"

    def assign(
        self,
        members: Mapping[str, MemberSubscriptionSpec],
        topics: Mapping[str, int],
        current: Mapping[str, Set[TopicPartition]],
    ) -> dict[str, frozenset[TopicPartition]]:
        """See :meth:`Assignor.assign`."""
        result: dict[str, set[TopicPartition]] = {member_id: set() for member_id in sorted(members)}
        for topic in sorted(topics):
            subscribed = [m for m in result if topic in members[m].topics]
            if not subscribed:
                continue
            quota, extra = divmod(topics[topic], len(subscribed))
            start = 0
            for index, member_id in enumerate(subscribed):
                size = quota + (1 if index < extra else 0)
                result[member_id].update((topic, p) for p in range(start, start + size))
                start += size
        return {member_id: frozenset(partitions) for member_id, partitions in result.items()}


#: Assignors by name.
ASSIGNORS: Final[Mapping[str, Assignor]] = {
    UniformAssignor.name: UniformAssignor(),
    RangeAssignor.name: RangeAssignor(),
}
#: The assignor of a group whose members name none.
DEFAULT_ASSIGNOR: Final = UniformAssignor.name


def assignor_named(name: str) -> Assignor:
    """The assignor called ``name``; :class:`GroupError` ``UNSUPPORTED_ASSIGNOR`` if there is none."""
    found = ASSIGNORS.get(name)
    if found is None:
        raise GroupError(GroupErrorReason.UNSUPPORTED_ASSIGNOR,
                         f"no server-side assignor is called {name!r}; known: {', '.join(sorted(ASSIGNORS))}")
    return found
