"""Consumer-group plumbing shared by the consumer and the admin client: calls to the group
coordinator, and one member's view of its membership (pure).

**Calls.** Every ConsumerGroups RPC is decided by the cluster's active
controller. :func:`call_coordinator` sends it to the controller the metadata
names (no forwarding hop) or, if none is known, to any node, which forwards it.
``NOT_CONTROLLER`` redirects once to the controller it names; ``UNAVAILABLE``,
``RESOURCE_EXHAUSTED`` and redirects are retried with backoff until the
deadline; a timed-out call is retried only if the caller says the request is
idempotent.

**Membership** (:class:`Membership`) is the client half of KIP-848's
protocol, without I/O: what the next heartbeat says (epoch, subscription when
it changed, the partitions owned) and, from each answer, which partitions the
consumer must release and which it may start. The consumer does the I/O and
tells it when partitions are started or released.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from millpond.client._backoff import Backoff
from millpond.client._connection import Connections, call
from millpond.client._metadata import MetadataCache
from millpond.client._types import TopicPartition
from millpond.errors import (
    BY_REASON,
    InternalError,
    MillpondError,
    NotController,
    RequestTimeout,
    ResourceExhausted,
    Unavailable,
)
from millpond.v1 import groups_pb2

__all__ = ["JOIN_EPOCH", "LEAVE_EPOCH", "STATIC_LEAVE_EPOCH", "Membership", "Reconciliation",
           "call_coordinator", "error_from_reason", "partitions_from_proto", "partitions_to_proto"]

#: Member epoch of a heartbeat that joins (or rejoins after being fenced or forgotten).
JOIN_EPOCH = 0
#: Member epoch of a heartbeat that leaves for good.
LEAVE_EPOCH = -1
#: Member epoch of a static member's heartbeat that leaves temporarily.
STATIC_LEAVE_EPOCH = -2


def partitions_to_proto(partitions: Iterable[TopicPartition]) -> list[groups_pb2.TopicPartitions]:
    """``TopicPartitions`` messages (sorted) for a set of partitions."""
    by_topic: dict[str, set[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, set()).add(partition)
    return [groups_pb2.TopicPartitions(topic=topic, partitions=sorted(numbers))
            for topic, numbers in sorted(by_topic.items())]


def partitions_from_proto(items: Iterable[groups_pb2.TopicPartitions]) -> frozenset[TopicPartition]:
    """The partitions ``TopicPartitions`` messages name."""
    return frozenset(TopicPartition(item.topic, p) for item in items for p in item.partitions)


async def call_coordinator(metadata: MetadataCache, connections: Connections, method: str, request: Any, *,
                           timeout_s: float, backoff: Backoff, rng: random.Random, idempotent: bool) -> Any:
    """Run ConsumerGroups RPC ``method`` on the active controller (see the module doc) within ``timeout_s``.

    Raises the error the coordinator answered with (the group errors of
    :mod:`millpond.errors`, :class:`~millpond.errors.InvalidRequest`, ...);
    :class:`~millpond.errors.Unavailable` / :class:`~millpond.errors.NotController` /
    :class:`~millpond.errors.ResourceExhausted` if still failing at the deadline;
    :class:`~millpond.errors.RequestTimeout` if the deadline passed (a request
    that is not idempotent may or may not have taken effect; it is not retried).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    skip: tuple[type[MillpondError], ...] = (Unavailable, RequestTimeout) if idempotent else (Unavailable,)
    redirect = metadata.controller_address()
    attempt = 0

    def remaining_s() -> float:
        return max(0.001, deadline - loop.time())

    async def attempt_on(address: str) -> Any:
        return await call(getattr(connections.groups(address), method), request, remaining_s())

    while True:
        error: MillpondError
        try:
            if redirect is not None:
                address, redirect = redirect, None
                try:
                    return await attempt_on(address)
                except Unavailable:
                    metadata.note_controller(0, "")  # that node is gone: ask any node next
                    raise
            return await metadata.call_any(attempt_on, skip)
        except NotController as exc:
            metadata.note_controller(exc.leader_id, exc.leader_address)
            if exc.leader_address and attempt == 0:
                redirect = exc.leader_address
                attempt += 1
                continue
            error = exc
        except (Unavailable, ResourceExhausted) as exc:
            error = exc
        except RequestTimeout as exc:
            if not idempotent:
                raise
            error = exc
        if loop.time() >= deadline:
            raise error
        await asyncio.sleep(min(backoff.delay_ms(attempt, rng, error) / 1000, remaining_s()))
        redirect = metadata.controller_address()
        attempt += 1


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """What an answer asks of the consumer: partitions to release and partitions to start."""

    revoke: frozenset[TopicPartition]
    """Owned partitions the answer no longer includes: stop, commit, then release them."""
    assign: frozenset[TopicPartition]
    """Partitions the answer gives that the consumer neither owns nor is already starting."""


@dataclass
class Membership:
    """One consumer's membership of one group (no I/O; one event loop).

    ``member_id`` is chosen by the client (a random UUID by the caller) so a
    retried join finds the member it created. Partitions pass through three
    sets: *starting* (given by the coordinator, committed offsets being
    fetched: not owned yet), *owned* (consumed, or being released), and the
    subset *revoking* (the coordinator asked for them back).
    """

    group_id: str
    member_id: str
    instance_id: str | None = None
    session_timeout_ms: int = 45_000
    rebalance_timeout_ms: int | None = None
    server_assignor: str | None = None
    topics: tuple[str, ...] | None = None
    pattern: str | None = None
    epoch: int = JOIN_EPOCH
    heartbeat_interval_ms: int = 1_000
    owned: set[TopicPartition] = field(default_factory=set)
    revoking: set[TopicPartition] = field(default_factory=set)
    starting: set[TopicPartition] = field(default_factory=set)
    subscription_changed: bool = True
    heartbeats: int = 0

    def subscribe(self, topics: Iterable[str] | None, pattern: str | None) -> None:
        """Replace the subscription; the next heartbeat sends it."""
        self.topics = tuple(sorted(set(topics))) if topics is not None else None
        self.pattern = pattern
        self.subscription_changed = True

    def heartbeat_request(self, leave: bool = False) -> groups_pb2.ConsumerGroupHeartbeatRequest:
        """The next heartbeat: a join (epoch 0) carries everything; later ones the owned partitions and
        any subscription change; ``leave`` says goodbye (-1, or -2 for a static member)."""
        request = groups_pb2.ConsumerGroupHeartbeatRequest(group_id=self.group_id, member_id=self.member_id)
        if leave:
            request.member_epoch = STATIC_LEAVE_EPOCH if self.instance_id else LEAVE_EPOCH
            if self.instance_id:
                request.instance_id = self.instance_id
            return request
        request.member_epoch = self.epoch
        if self.epoch == JOIN_EPOCH or self.subscription_changed:
            request.subscribed_topic_names.names.extend(self.topics or ())
            request.subscribed_topic_regex = self.pattern or ""
            request.session_timeout_ms = self.session_timeout_ms
            if self.instance_id is not None:
                request.instance_id = self.instance_id
            if self.rebalance_timeout_ms is not None:
                request.rebalance_timeout_ms = self.rebalance_timeout_ms
            if self.server_assignor is not None:
                request.server_assignor = self.server_assignor
        request.owned.topics.extend(partitions_to_proto(self.owned))
        return request

    def on_answer(self, response: groups_pb2.ConsumerGroupHeartbeatResponse,
                  sent: groups_pb2.ConsumerGroupHeartbeatRequest) -> Reconciliation:
        """Adopt an answer to ``sent``; return what the consumer must release and start."""
        self.heartbeats += 1
        self.member_id = response.member_id or self.member_id
        self.epoch = response.member_epoch
        self.heartbeat_interval_ms = max(1, response.heartbeat_interval_ms)
        if sent.HasField("subscribed_topic_names"):
            self.subscription_changed = False
        assignment = partitions_from_proto(response.assignment)
        revoke = frozenset(self.owned - assignment - self.revoking)
        self.revoking |= revoke
        assign = frozenset(assignment - self.owned - self.starting)
        self.starting |= assign
        self.starting &= assignment  # given and taken back before they started: forget them
        return Reconciliation(revoke, assign)

    def started(self, partitions: Iterable[TopicPartition]) -> frozenset[TopicPartition]:
        """The consumer fetched offsets for and started ``partitions``; returns those still wanted
        (the others were taken back meanwhile and must not be started)."""
        wanted = frozenset(p for p in partitions if p in self.starting)
        self.starting -= wanted
        self.owned |= wanted
        return wanted

    def released(self, partitions: Iterable[TopicPartition]) -> None:
        """The consumer stopped ``partitions`` and committed what it consumed: report them released."""
        gone = set(partitions)
        self.owned -= gone
        self.revoking -= gone

    def lose_all(self) -> frozenset[TopicPartition]:
        """The group fenced or forgot the member: it owns nothing and rejoins (epoch 0); returns what
        it held (to stop at once, without committing: others may own them already)."""
        lost = frozenset(self.owned)
        self.owned.clear()
        self.revoking.clear()
        self.starting.clear()
        self.epoch = JOIN_EPOCH
        self.subscription_changed = True
        return lost


def error_from_reason(reason: str, message: str) -> MillpondError:
    """The :mod:`millpond.errors` class of a per-partition ``error_reason`` (``InternalError`` if unknown)."""
    cls = BY_REASON.get(reason, InternalError)
    return cls(message)
